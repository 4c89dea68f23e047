"""Filesystem rules (fsops): Windows naming rules on every platform, the one free-name
allocator (case-insensitive), the one atomic write, the path length limits of Windows and
Linux, checked on every platform."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from service import fsops, outcome, outputs
from service.tables import Task


@pytest.mark.parametrize("name", [
    "CON", "con.txt", "Nul.tar.gz", "COM1.mp3", "lpt9", "AUX .wav", "talk.", "talk ", "a:b",
    'say "hi"', "why?", "a|b", "a*b", "<x>", "tab\there", "bell\x07", "back\\slash",
])
def test_names_windows_refuses_are_recognised_and_made_safe(name: str) -> None:
    assert fsops.windows_name_problem(name)
    safe = fsops.windows_safe_name(name)
    assert not fsops.windows_name_problem(safe) and safe


@pytest.mark.parametrize("name", ["会议 记录 1.mp3", "console.txt", "com10.wav", "nullish",
                                  "talk (2).wav", ".hidden", "a.b.c"])
def test_ordinary_names_are_left_alone(name: str) -> None:
    assert not fsops.windows_name_problem(name)
    assert fsops.windows_safe_name(name) == name


def test_safe_names_change_as_little_as_possible() -> None:
    assert fsops.windows_safe_name("CON") == "CON_"
    assert fsops.windows_safe_name("nul.tar") == "nul_.tar"
    assert fsops.windows_safe_name("notes. . ") == "notes"
    assert fsops.windows_safe_name("10:30 会议") == "10_30 会议"
    assert fsops.windows_safe_name("...") == "_"


def test_transcripts_of_a_reserved_or_odd_name_get_a_name_windows_accepts(tmp_path: Path) -> None:
    for stem, want in [("CON", "CON_"), ("talk.", "talk"), ("a:b?", "a_b_"), ("com3", "com3_")]:
        got = outputs.transcript_stem(tmp_path, stem)
        assert got == want
        outputs.write_transcripts({"text": "x", "segments": []}, tmp_path, got, ["txt"], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "CON_.txt", "a_b_.txt", "com3_.txt", "talk.txt"]


def test_output_folders_follow_the_windows_rules_too(tmp_path: Path) -> None:
    assert fsops.output_dir_for(tmp_path, "aux/notes./会议.mp3") == tmp_path / "aux_" / "notes"
    assert fsops.output_dir_for(tmp_path, "team/talk.mp3") == tmp_path / "team"


def test_folders_differing_only_in_case_stay_apart(tmp_path: Path) -> None:
    """Inbox folders `Team/` and `team/` (Linux, or a share) would be one folder on Windows and
    overwrite each other's transcripts: each gets its own, found again for its next file."""
    out = tmp_path / "outbox"
    team = fsops.output_dir_for(out, "Team/a.mp3")
    assert team == out / "Team" and team.is_dir()  # taken at once, not when written
    other = fsops.output_dir_for(out, "team/a.mp3")
    assert other == out / "team (2)" and other.is_dir()
    assert fsops.output_dir_for(out, "team/b.mp3") == other  # the same folder next time
    assert fsops.output_dir_for(out, "Team/b.mp3") == team
    assert fsops.output_dir_for(out, "TEAM/a.mp3") == out / "TEAM (3)"  # "team (2)" is taken
    assert fsops.output_dir_for(out, "team/Sub/x.mp3") == other / "Sub"  # deeper too
    assert fsops.output_dir_for(out, "Team/sub/x.mp3") == team / "sub"
    assert fsops.output_dir_for(out, "AUX/x.mp3") == out / "AUX_"  # Windows names first …
    assert fsops.output_dir_for(out, "aux/x.mp3") == out / "aux_ (2)"  # … then letter case
    names = [p.name.casefold() for p in out.iterdir()]
    assert len(names) == len(set(names)) == 5  # nothing Windows would merge
    for folder, text in ((team, "Team"), (other, "team")):
        stem = outputs.transcript_stem(folder, "a")
        result = {"text": text, "segments": [{"start": 0.0, "end": 1.0, "text": text}]}
        outputs.write_transcripts(result, folder, stem, ["txt"], {})
    assert (team / "a.txt").read_text(encoding="utf-8").strip() == "Team"
    assert (other / "a.txt").read_text(encoding="utf-8").strip() == "team"


def test_a_lookup_in_a_mirrored_tree_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "Team").mkdir()
    assert fsops.mirror_join(tmp_path, "team/x.wav", create=False) == tmp_path / "team (2)/x.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Team"]
    assert fsops.mirror_join(tmp_path, "Team/x.wav") == tmp_path / "Team/x.wav"
    with pytest.raises(fsops.UnsafePathError):
        fsops.mirror_join(tmp_path, "../x.wav")


def test_error_reports_follow_the_windows_rules() -> None:
    task = Task(source="team/CON.mp3")
    assert outcome.report_name(task) == "CON_.mp3.error.txt"


def test_names_differing_only_in_case_collide(tmp_path: Path) -> None:
    """`Talk` and `talk` are one file on NTFS and macOS: never give both the same name."""
    (tmp_path / "Talk.txt").write_text("x", encoding="utf-8")
    assert fsops.free_stem(tmp_path, "talk", [".txt", ".srt"]) == "talk (2)"
    assert outputs.transcript_stem(tmp_path, "TALK") == "TALK (2)"
    # two running tasks: one was given "Talk", not written yet
    assert outputs.transcript_stem(tmp_path / "empty", "talk", taken={"Talk"}) == "talk (2)"
    assert fsops.free_name(tmp_path / "TALK.TXT") == tmp_path / "TALK (2).TXT"
    assert fsops.free_name(tmp_path / "other.txt") == tmp_path / "other.txt"


def test_the_one_allocator_numbers_on_and_keeps_names_short(tmp_path: Path) -> None:
    (tmp_path / "a.mp3").write_bytes(b"")
    (tmp_path / "a (2).mp3").write_bytes(b"")
    os.symlink(tmp_path / "nowhere", tmp_path / "a (3).mp3")  # a dangling link takes a name
    assert fsops.free_name(tmp_path / "a.mp3") == tmp_path / "a (4).mp3"
    long = "长" * 83 + ".mp3"  # 249 + 4 bytes: no room for " (2)"
    (tmp_path / long).write_bytes(b"")
    nxt = fsops.free_name(tmp_path / long)
    assert nxt.name.endswith(" (2).mp3") and len(nxt.name.encode()) <= fsops.NAME_MAX_BYTES
    assert nxt.name.startswith("长" * 80)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    fsops.atomic_write(target, b"old")
    fsops.atomic_write(target, "新".encode())
    assert target.read_bytes() == "新".encode()

    def broken(fh) -> None:  # noqa: ANN001
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        fsops.atomic_write(target, broken)
    assert target.read_bytes() == "新".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temp left


def test_paths_windows_cannot_open_are_a_clear_error(tmp_path: Path) -> None:
    long = "C:\\DropScribe\\outbox\\" + "会议记录" * 60 + ".txt"
    with pytest.raises(fsops.PathTooLongError) as err:
        fsops.check_path_length(long, windows=True, long_paths_enabled=lambda: False)
    assert "259" in str(err.value) and "LongPathsEnabled" in str(err.value)
    fsops.check_path_length(long, windows=True, long_paths_enabled=lambda: True)  # switched on
    fsops.check_path_length("C:\\DropScribe\\outbox\\a.txt", windows=True,
                            long_paths_enabled=lambda: False)
    assert isinstance(err.value, fsops.UnsafePathError)


def test_paths_linux_cannot_open_are_the_same_clear_error() -> None:
    """255 bytes a name part, 4095 bytes a path (PATH_MAX 4096 with its NUL) — checked on every
    platform with windows=False, like the Windows rule with windows=True."""
    fsops.check_path_length("/srv/outbox/" + "x" * 200 + "/" + "y" * 200, windows=False)
    fsops.check_path_length("/srv/outbox/" + "会" * 85, windows=False)  # 255 bytes: fits
    with pytest.raises(fsops.PathTooLongError) as err:
        fsops.check_path_length("/srv/outbox/" + "会" * 86, windows=False)  # 258 bytes
    assert "258 bytes" in str(err.value) and "255" in str(err.value)
    deep = "/srv/outbox/" + "/".join(["目录" * 40] * 17)  # 17 parts of 240 bytes: ~4.1 KB
    with pytest.raises(fsops.PathTooLongError) as err:
        fsops.check_path_length(deep + "/a.txt", windows=False)
    assert "4095" in str(err.value) and isinstance(err.value, fsops.UnsafePathError)
    # fits as a final name, but not the hidden temp name written beside it first
    near = "/" + "/".join(["d" * 250] * 16)  # 4016 bytes
    fits = near + "/" + "n" * (4095 - len(near) - 1)
    assert len(fits) == 4095
    with pytest.raises(fsops.PathTooLongError):
        fsops.check_path_length(fits, windows=False)
    fsops.check_path_length(near + "/" + "n" * 40, windows=False)
    # the Windows rule is not the Linux one: 300 characters are fine on Linux
    fsops.check_path_length("/srv/" + "/".join(["会议"] * 150), windows=False)


def test_split_relative_still_refuses_escapes() -> None:
    for rel in ("../x.mp3", "/etc/passwd", "a/../../b"):
        with pytest.raises(fsops.UnsafePathError):
            fsops.split_relative(PurePosixPath(rel))


def sharing_violation(path: str) -> PermissionError:
    """What Windows raises while an antivirus scan or a player holds the file."""
    err = PermissionError(13, "The process cannot access the file because it is being used "
                          "by another process", path)
    err.winerror = 32  # set by Windows itself; Linux never raises it
    return err


def test_moves_and_replaces_retry_a_passing_sharing_violation(tmp_path: Path, monkeypatch) -> None:
    real_replace, real_rename = os.replace, os.rename
    failures = {"replace": 2, "rename": 3}

    def flaky(name, real):  # noqa: ANN001, ANN202
        def op(src, dst):  # noqa: ANN001, ANN202
            if failures[name] > 0:
                failures[name] -= 1
                raise sharing_violation(str(src))
            return real(src, dst)
        return op

    monkeypatch.setattr(os, "replace", flaky("replace", real_replace))
    monkeypatch.setattr(os, "rename", flaky("rename", real_rename))
    target = tmp_path / "status.json"
    fsops.atomic_write(target, b"{}")  # the status file, a transcript, a model: all replaced so
    assert target.read_bytes() == b"{}" and failures["replace"] == 0
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "talk.wav"
    src.write_bytes(b"audio")
    dest = fsops.move_no_overwrite(src, tmp_path / "archive" / "talk.wav")
    assert dest.read_bytes() == b"audio" and not src.exists() and failures["rename"] == 0


def test_retries_are_short_and_bounded_and_only_for_sharing_violations() -> None:
    slept: list[float] = []
    calls = []

    def always_held(path: str) -> None:
        calls.append(path)
        raise sharing_violation(path)

    with pytest.raises(PermissionError):
        fsops.retried(always_held, "x", sleep=slept.append)
    assert slept == list(fsops.RETRY_DELAYS) and sum(slept) < 5 and len(calls) == 7

    def refused(path: str) -> None:
        calls.append(path)
        raise PermissionError(13, "Permission denied", path)  # a real refusal: no retry

    calls.clear()
    with pytest.raises(PermissionError):
        fsops.retried(refused, "y", sleep=slept.append)
    assert calls == ["y"]


# --- claims: a file under a hidden name while it is moved -----------------------------------


def test_a_claim_name_keeps_the_files_name_and_when_it_was_claimed(tmp_path: Path) -> None:
    import time

    before = int(time.time())
    for name in ("会议 记录.wav", "x.tar.gz", ".hidden.mp3", "a" * 240 + ".wav"):
        claim = fsops._claim_name(tmp_path, name)
        assert claim.name.startswith(".") and claim.name.endswith(".moving")
        assert len(claim.name.encode()) <= 255
        original, at = fsops.read_claim(claim.name)
        assert original == fsops.fit_name(name, 30) and before <= at <= time.time()
    assert fsops.read_claim(".x.wav.0123456789ab.moving") == ("x.wav", None)  # older claims
    for other in ("x.wav", ".x.wav.0123456789ab.tmp", ".x.wav.moving", "x.wav.0123456789ab.moving"):
        assert fsops.read_claim(other) is None


def test_undoing_a_claim_gives_the_file_its_name_and_never_overwrites(tmp_path: Path) -> None:
    claim = fsops._claim_name(tmp_path, "talk.wav")
    claim.write_bytes(b"mine")
    assert fsops.undo_claim(claim) == tmp_path / "talk.wav" and not claim.exists()
    claim = fsops._claim_name(tmp_path, "talk.wav")
    claim.write_bytes(b"another recording")
    assert fsops.undo_claim(claim) == tmp_path / "talk (2).wav"
    assert (tmp_path / "talk.wav").read_bytes() == b"mine"
    assert (tmp_path / "talk (2).wav").read_bytes() == b"another recording"


def test_a_claim_that_already_has_its_final_name_only_loses_the_claim_name(tmp_path: Path) -> None:
    (tmp_path / "talk.wav").write_bytes(b"other")
    final = tmp_path / "Talk (2).wav"
    final.write_bytes(b"mine")
    claim = fsops._claim_name(tmp_path, "talk.wav")
    os.link(final, claim)  # the move had linked its final name, then stopped
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    os.link(final, elsewhere / "the user's own link.wav")
    assert fsops.undo_claim(claim) == final
    assert not claim.exists() and final.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Talk (2).wav", "sub", "talk.wav"]


def test_numbered_names_are_those_free_name_gives(tmp_path: Path) -> None:
    assert fsops.is_numbered_name("talk.wav", "talk.wav")
    assert fsops.is_numbered_name("TALK (12).WAV", "talk.wav")
    assert not fsops.is_numbered_name("talk (x).wav", "talk.wav")
    assert not fsops.is_numbered_name("talk.wav.json", "talk.wav")
    long = "长" * 83 + ".wav"  # 253 bytes: free_name shortens the stem of a numbered name
    (tmp_path / long).write_bytes(b"")
    numbered = fsops.free_name(tmp_path / long)
    assert numbered.name.startswith("长" * 80) and numbered.name.endswith(" (2).wav")
    assert fsops.is_numbered_name(numbered.name, long)
