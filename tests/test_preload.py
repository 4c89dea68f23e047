"""service/preload.py: what every worker process has before torch and CTranslate2 load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import preload


def test_openmp_threads_sleep_when_idle_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    preload.quiet_openmp(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}  # a user's own tuning is kept
    preload.quiet_openmp(mine)
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}


CHILD = r"""
import multiprocessing, os, sys
from service import pool

def report(conn):
    conn.send((os.environ.get("OMP_WAIT_POLICY"), "ctranslate2" in sys.modules))

if __name__ == "__main__":
    assert "OMP_WAIT_POLICY" not in os.environ
    ctx = pool.worker_context("forkserver")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=report, args=(child,))
    proc.start()
    print(parent.recv(), os.environ.get("OMP_WAIT_POLICY"))
    proc.join()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no forkserver on Windows")
def test_a_forked_worker_has_the_policy_set_before_its_runtimes_loaded(tmp_path: Path) -> None:
    """The forkserver imports torch and CTranslate2 once (their OpenMP runtimes read the
    variable then) after setting it; a worker forked from it inherits both. The service
    process itself is left as it was."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.strip()
    assert out == "('PASSIVE', True) None"
