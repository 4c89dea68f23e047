"""Database engine, SQLite pragmas and migrations.

SQLite facts this relies on (DESIGN.md §4): every transaction starts with BEGIN IMMEDIATE, so a
compare-and-set UPDATE can never race another writer; WAL lets readers (the CLI) run beside the
service; busy_timeout makes a writer wait for a lock (e.g. a person holding a read transaction in
the sqlite3 shell) instead of failing at once.

PostgreSQL (several machines, one queue) needs none of that: row locks and FOR UPDATE SKIP LOCKED
(tasks.py) make the same compare-and-set claims safe at READ COMMITTED. What it does need: nodes
that start together migrate one at a time (an advisory lock), and the read-only engine (`sql`)
runs every transaction read-only, one statement per call.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
BUSY_TIMEOUT_MS = 30_000
# pg_advisory_lock key held while migrating: two nodes starting at once must not both create the
# tables (the loser fails with "relation alembic_version already exists").
PG_MIGRATION_LOCK = 0x44524F50  # "DROP"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _deny_attach(action: int, *_args: object) -> int:
    """SQLite authorizer of the read-only engine: ATTACH would create an empty database file
    anywhere (`sql "ATTACH DATABASE '/any/path/x.db' AS x"`); mode=ro refuses every write."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _readonly_connection(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.set_authorizer(_deny_attach)
    return conn


def integrity_problem(url: str) -> str | None:
    """None when the SQLite database file is there and passes `PRAGMA quick_check`; else what
    is wrong, in plain words (checked at start and by /health: a corrupt or deleted database
    would otherwise fail every new file while the service looks healthy)."""
    if not is_sqlite(url):
        return None
    path = url.split("///", 1)[1].partition("?")[0] if "///" in url else ""
    if not path or path == ":memory:":
        return None
    if not Path(path).is_file():
        return f"the database file {path} is missing (it was deleted or moved)"
    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return f"the database file {path} is damaged ({err})"
    if rows != ["ok"]:
        return f"the database file {path} is damaged ({'; '.join(map(str, rows))})"
    return None


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine whose transactions are safe for compare-and-set claims."""
    if not is_sqlite(url):
        if not readonly:
            return create_engine(url, pool_pre_ping=True)
        # Every transaction read-only, also after a "COMMIT;" inside the query, and (psycopg)
        # every statement prepared, so one call cannot smuggle in "COMMIT; SET …; DELETE …".
        args: dict = {"options": "-c default_transaction_read_only=on"}
        if make_url(url).get_driver_name() == "psycopg":
            args["prepare_threshold"] = 0
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    path = url.split("///", 1)[1].partition("?")[0] if "///" in url else ""
    if readonly and path and path != ":memory:":
        # A URI connection in read-only mode: `sql` can never write, whatever the query.
        # QueuePool, not the SingletonThreadPool SQLAlchemy picks for "sqlite://": that one
        # closes a connection another HTTP request thread is still using (segfault with two
        # concurrent clients). A queue pool hands each connection to one thread at a time.
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        engine = create_engine(
            "sqlite://",
            creator=lambda: _readonly_connection(uri),
            poolclass=QueuePool,
            pool_size=4,
            max_overflow=12,
        )
    else:
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DB-API objects
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


def alembic_config(url: str):  # noqa: ANN201 - alembic type imported lazily
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # '%' must be escaped for ConfigParser (passwords in URLs).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False  # the service owns logging
    return cfg


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, one migrating node at a time (BEGIN IMMEDIATE does this on SQLite)."""
    if is_sqlite(url):
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic); safe to call at every start, on every node."""
    from alembic import command

    with _migration_lock(url):
        command.upgrade(alembic_config(url), revision)
    log.debug("database at %s migrated to %s", url, revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    with _migration_lock(url):
        command.downgrade(alembic_config(url), revision)
