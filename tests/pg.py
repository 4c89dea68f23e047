"""Pytest plugin: a real PostgreSQL server for the test run, from the distribution's packages.

Register with ``pytest_plugins = ["tests.pg"]`` (tests/conftest.py does). Nothing is downloaded:
the server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/<ver>/bin``)
or from ``$DROPSCRIBE_PG_BIN`` / ``pg_ctl`` on PATH. Without them every test that asks for
PostgreSQL is skipped with the reason :data:`PG_MISSING`.

* ``pg_server`` (session): ``initdb`` into a fresh temporary folder, then ``pg_ctl start`` on a
  free 127.0.0.1 port with its unix socket in that folder; ``pg_ctl stop`` and the folder removed
  at the end. Running as root (PostgreSQL refuses root) the server runs as the ``postgres``
  system user the Debian package creates. Every command is an argument list, never a shell.
* ``pg_url`` (function): an empty database of its own, as ``postgresql+psycopg://…``; dropped
  after the test.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_MISSING = "PostgreSQL not installed: apt-get install postgresql"
SUPERUSER = "postgres"
RUN_AS = "postgres"  # the system user Debian's postgresql-common creates

_names = itertools.count(1)


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: $DROPSCRIBE_PG_BIN, PATH, then the newest
    /usr/lib/postgresql/<version>/bin (Debian and Ubuntu keep them off PATH)."""
    candidates: list[Path] = []
    if os.environ.get("DROPSCRIBE_PG_BIN"):
        candidates.append(Path(os.environ["DROPSCRIBE_PG_BIN"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throw-away PostgreSQL cluster (trust authentication, fsync off: tests only)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="dropscribe-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = 0
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam(RUN_AS)
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                pytest.skip(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL "
                            "as (apt-get install postgresql creates it)")
            os.chown(self.base, self._user.pw_uid, self._user.pw_gid)

    # ---- commands ----------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a server tool as the server's user: an argument list, no shell involved."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base),
               "LC_ALL": "C", "LANG": "C"}
        kw: dict = {}
        if self._user is not None:
            kw = dict(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bin_dir / tool), *args], cwd=self.base, env=env, capture_output=True,
            text=True, timeout=timeout, check=False, **kw,
        )

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}\n"
                               f"{result.stderr}\n{log}")

    def start(self) -> None:
        self._check(self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"), "initdb")
        for attempt in range(3):
            self.port = _free_port()
            socket_dir = str(self.base).replace("'", "''")
            conf = (
                "\n# dropscribe tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{socket_dir}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "timezone = 'UTC'\n"
            )
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as f:
                f.write(conf)  # later lines win: a retry's port replaces the previous one
            result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                               "-t", "60", "start", timeout=90)
            if result.returncode == 0:
                return
            if attempt == 2:  # another process took the port between probe and start, thrice?
                self._check(result, "pg_ctl start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # ---- databases ---------------------------------------------------------------------------
    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    def create_database(self, hint: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{re.sub(r'[^a-z0-9]+', '_', hint.lower())[:40]}_{os.getpid()}_{next(_names)}"
        self._admin("CREATE DATABASE {}", name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(PG_MISSING)
    pytest.importorskip("psycopg", reason='needs the driver: pip install "psycopg[binary]"')
    server = PgServer(bin_dir)
    started = time.perf_counter()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    took = time.perf_counter() - started
    print(f"PostgreSQL from {bin_dir} on port {server.port} ({took:.1f} s)")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database for one test (not migrated)."""
    url = pg_server.create_database(request.node.name)
    yield url
    try:
        pg_server.drop_database(url)
    except Exception:  # noqa: BLE001 - a connection left open must not fail the test
        pass
