"""Moving sources out of the inbox: never overwrite, never leave a truncated copy."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from service import fsops
from service.files import find_moved, move_source, recover_claims

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


def _cut_short(src: Path, target_folder: Path) -> Path:
    """The state a node leaves when it stops right after claiming `src` for a move to
    `target_folder` (fsops.move_no_overwrite's first step): the file under its claim name."""
    target_folder.mkdir(parents=True, exist_ok=True)
    claim = fsops._claim_name(target_folder, src.name)
    os.rename(src, claim)
    return claim


def test_files_left_half_moved_get_their_names_back(tmp_path: Path) -> None:
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    (inbox / "团队").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        (inbox / "团队" / name).write_bytes(name.encode())
    _cut_short(inbox / "团队" / "a.wav", failed / "团队")  # same disk: claimed in failed/
    _cut_short(inbox / "团队" / "b.wav", inbox / "团队")  # another disk: claimed in the inbox
    restored = recover_claims([inbox, tmp_path / "archive", failed], claimed_before=None)
    assert sorted(restored) == [failed / "团队" / "a.wav", inbox / "团队" / "b.wav"]
    assert (failed / "团队" / "a.wav").read_bytes() == b"a.wav"
    assert sorted(p.name for p in (inbox / "团队").iterdir()) == ["b.wav", "c.wav"]


def test_only_old_claims_are_touched_while_other_nodes_may_be_moving(tmp_path: Path) -> None:
    import time

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.wav").write_bytes(b"x")
    claim = _cut_short(inbox / "x.wav", tmp_path / "archive")
    assert recover_claims([tmp_path / "archive"], claimed_before=time.time() - 3600) == []
    assert claim.exists()  # perhaps another node's move in progress: left alone
    assert recover_claims([tmp_path / "archive"], claimed_before=time.time() + 2) == [
        tmp_path / "archive" / "x.wav"]


def test_find_moved_finds_this_very_file_under_a_numbered_name(tmp_path: Path) -> None:
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    (inbox / "t").mkdir(parents=True)
    (archive / "t").mkdir(parents=True)
    (archive / "t" / "talk.wav").write_bytes(b"an older recording")
    src = inbox / "t" / "talk.wav"
    src.write_bytes(b"this one")
    st = src.stat()
    assert find_moved(archive, "t/talk.wav", st.st_size, st.st_mtime_ns) is None
    moved = move_source(inbox, "t/talk.wav", archive)
    assert moved == archive / "t" / "talk (2).wav"
    assert find_moved(archive, "t/talk.wav", st.st_size, st.st_mtime_ns) == moved
    assert find_moved(archive, "t/talk.wav", st.st_size, st.st_mtime_ns + 1) is None
    assert find_moved(archive, "t/talk.wav", None, None) is None
    assert find_moved(archive, "gone/talk.wav", st.st_size, st.st_mtime_ns) is None
