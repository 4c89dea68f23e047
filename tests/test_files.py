"""Moving sources out of the inbox: never overwrite, never leave a truncated copy."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from service.files import move_source

SHM = Path("/dev/shm")

# A full disk, for real: the child may write at most 64 KiB per file (RLIMIT_FSIZE).
_FULL_DISK_MOVE = """
import resource, signal, sys
from pathlib import Path
from service.files import move_source
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    move_source(Path(sys.argv[1]), "team/talk.wav", Path(sys.argv[2]))
except OSError as err:
    print("refused:", err)
    sys.exit(3)
"""


@pytest.mark.skipif(
    os.name == "nt" or not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tempfile.gettempdir())
    .st_dev, reason="needs a second file system (/dev/shm) and POSIX resource limits",
)
def test_a_full_archive_disk_leaves_no_truncated_copy(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "team").mkdir(parents=True)
    data = os.urandom(300_000)
    (inbox / "team" / "talk.wav").write_bytes(data)
    with tempfile.TemporaryDirectory(dir=SHM) as other_disk:
        archive = Path(other_disk) / "archive"
        for _ in range(2):  # and again (a restart): no "(2)" copies either
            out = subprocess.run(
                [sys.executable, "-c", _FULL_DISK_MOVE, str(inbox), str(archive)],
                capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                timeout=60,
            )
            assert out.returncode == 3, out.stderr
        left = [p.name for p in archive.rglob("*") if p.is_file()]
        assert left == []  # no truncated talk.wav, no temp file, no "talk (2).wav"
        assert (inbox / "team" / "talk.wav").read_bytes() == data  # the source is intact
        # with room on the disk the same move completes
        assert move_source(inbox, "team/talk.wav", archive).read_bytes() == data
        assert not (inbox / "team" / "talk.wav").exists()


def test_inbox_folders_differing_only_in_case_stay_apart_in_archive_and_failed(
    tmp_path: Path,
) -> None:
    """`Team/talk.wav` and `team/talk.wav`: two recordings, two folders in archive/ (one on
    Windows would hold both under "talk (2)" names nobody can tell apart), and a retry brings
    each back from failed/ to its own inbox folder."""
    inbox, archive, failed = tmp_path / "inbox", tmp_path / "archive", tmp_path / "failed"
    for folder in ("Team", "team"):
        (inbox / folder).mkdir(parents=True)
        (inbox / folder / "talk.wav").write_bytes(folder.encode())
    assert move_source(inbox, "Team/talk.wav", archive) == archive / "Team" / "talk.wav"
    assert move_source(inbox, "team/talk.wav", archive) == archive / "team (2)" / "talk.wav"
    assert (archive / "team (2)" / "talk.wav").read_bytes() == b"team"
    for folder in ("Team", "team"):
        (inbox / folder / "talk.wav").write_bytes(folder.encode() + b" again")
        (inbox / folder / "talk.wav.json").write_text("{}", encoding="utf-8")
    assert move_source(inbox, "team/talk.wav", failed) == failed / "team" / "talk.wav"
    assert move_source(inbox, "Team/talk.wav", failed) == failed / "Team (2)" / "talk.wav"
    assert (failed / "Team (2)" / "talk.wav.json").is_file()  # the sidecar travels along
    assert move_source(failed, "Team/talk.wav", inbox, back=True) == inbox / "Team" / "talk.wav"
    assert (inbox / "Team" / "talk.wav").read_bytes() == b"Team again"
    assert (inbox / "Team" / "talk.wav.json").is_file()
    assert move_source(failed, "team/talk.wav", inbox, back=True) == inbox / "team" / "talk.wav"
    assert (inbox / "team" / "talk.wav").read_bytes() == b"team again"
