"""Failure reasons in Chinese all the way: every detail the service records (its own sentences,
operating-system errors, PyAV's and the models' failures) is said in Chinese with
`ui.language: zh-CN`; only an error nobody foresaw keeps its words, labelled; English stays
exactly as recorded. The details come from the real producers (worker.classify on real
exceptions, audio.probe on real files, engine.load_model on a real empty folder)."""

from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

import pytest

from service import audio, engine, i18n, reasons, worker
from tests.speech import silence_wav

SERVICE = Path(__file__).resolve().parents[1] / "service"
ZH = "zh-CN"

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|“[^”]*”|`[^`]*`")
_SENTENCE = re.compile(r"(?<![A-Za-z0-9_./\\-])[A-Za-z]+(?:[ ,]+[A-Za-z]+){2,}"
                       r"(?![A-Za-z0-9_./\\-])")


def english_sentence(text: str) -> str | None:
    """A run of three or more English words outside quoted names, paths and commands."""
    m = _SENTENCE.search(_QUOTED.sub(" ", text))
    return m.group(0) if m else None


def test_the_sentence_check_finds_english_and_lets_names_pass() -> None:
    assert english_sentence("无法读取文件：No such file or directory")
    assert english_sentence("意外错误。（detail: division by zero）")
    assert not english_sentence("找不到文件或文件夹：'/tmp/my meeting notes.wav'")
    assert not english_sentence("请用命令 `python app.py models import <folder>` 导入")
    assert not english_sentence("settings.yaml 中的 transcribe.max_audio_seconds")


def zh_and_en(kind: str, message: str) -> tuple[str, str]:
    zh, en = i18n.reason(kind, message, ZH), i18n.reason(kind, message, "en")
    assert en == message.strip()  # English: as recorded
    assert not english_sentence(zh), (zh, english_sentence(zh))
    assert "详细信息" not in zh and i18n.t(f"reason.{kind}", ZH) in zh
    return zh, en


@pytest.mark.parametrize(("err", "said"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/收件箱/会议.wav"),
     "找不到文件或文件夹：'/srv/收件箱/会议.wav'"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/outbox/team/a b.txt"),
     "没有权限，拒绝访问：'/srv/outbox/team/a b.txt'"),
    (OSError(errno.ENOSPC, "No space left on device"), "磁盘已满"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/srv/outbox/x.srt"), "磁盘已满"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/share/x.txt"), "只读"),
    (OSError(errno.EIO, "Input/output error"), "读写出错"),
])
def test_file_errors_of_a_worker_are_said_in_chinese(err: OSError, said: str) -> None:
    kind, message, _retry, _resource = worker.classify(err)
    zh, _ = zh_and_en(kind, message)
    assert said in zh


def test_a_name_too_long_for_the_file_system_is_said_in_chinese(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        (tmp_path / ("会议" * 60 + ".txt")).write_text("x")  # 364 bytes: a real ENAMETOOLONG
    kind, message, _r, _s = worker.classify(caught.value)
    zh, _ = zh_and_en(kind, message)
    assert "文件名或路径太长" in zh and "会议会议" in zh


def test_windows_sharing_violations_and_access_denied_are_said_in_chinese() -> None:
    """How Python prints them on Windows (this machine has no sharing violations to cause)."""
    for text, said in [
        ("[WinError 32] The process cannot access the file because it is being used by "
         "another process: 'C:\\\\会议\\\\a.wav'", "文件正被另一个程序使用：'C:\\\\会议\\\\a.wav'"),
        ("[WinError 5] Access is denied: 'D:\\\\outbox\\\\x.txt'", "没有权限"),
        ("[WinError 112] There is not enough space on the disk", "磁盘已满"),
        ("[WinError 206] The filename or extension is too long: 'C:\\\\x'", "太长"),
    ]:
        zh, _ = zh_and_en("io_error", "Could not read or write a file: " + text)
        assert said in zh


@pytest.mark.parametrize(("content", "said"), [
    (b"these are meeting notes, not a recording\n" * 10, "这不是音频或视频文件"),
    (b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 200, "开头看起来是MP3/AAC 音频"),
    (b"", "文件是空的"),
])
def test_decode_failures_from_pyav_are_said_in_chinese(tmp_path: Path, content: bytes,
                                                       said: str) -> None:
    path = tmp_path / "会议.mp3"
    path.write_bytes(content)
    with pytest.raises(audio.NotAudioError) as caught:
        audio.probe(path)
    kind, message, _r, _s = worker.classify(caught.value)
    zh, _ = zh_and_en(kind, message)
    assert said in zh


def test_a_file_gone_before_it_is_read_is_said_in_chinese(tmp_path: Path) -> None:
    path = silence_wav(tmp_path / "会议.wav", 1)
    path.unlink()
    with pytest.raises(audio.NotAudioError) as caught:
        audio.probe(path)
    zh, _ = zh_and_en(*worker.classify(caught.value)[:2])
    assert "文件已不在原处" in zh


def test_a_missing_model_is_said_in_chinese(tmp_path: Path) -> None:
    for name, said in [("large-v3", "模型“large-v3”不在"), ("../x", "“../x”不是模型名")]:
        with pytest.raises(engine.ModelNotAvailable) as caught:
            engine.load_model(name, tmp_path, "cpu", allow_download=False)
        zh, _ = zh_and_en(*worker.classify(caught.value)[:2])
        assert said in zh and str(tmp_path) in zh
    assert "已关闭下载" in zh_and_en(*worker.classify(engine.ModelNotAvailable(
        engine._not_available_message("small", tmp_path, "downloading is switched off")))[:2])[0]


def test_out_of_memory_time_limit_crash_and_interruption_are_said_in_chinese() -> None:
    kind, message, _r, _s = worker.classify(RuntimeError("CUDA out of memory. Tried to "
                                                         "allocate 20.00 MiB"))
    assert "等待显存空出后重试" in zh_and_en(kind, message)[0]
    timeout = ("The transcription took longer than 600 seconds and was stopped "
               "(scheduler.timeout_factor / timeout_min_seconds in settings.yaml).")
    assert "用时超过 600 秒" in zh_and_en("timeout", timeout)[0]
    crashed = "The worker process stopped unexpectedly (exit code -9)."
    assert "退出码 -9" in zh_and_en("worker_crashed", crashed)[0]
    stuck = worker.classify(engine.EngineStuck(engine.STUCK_MESSAGE))
    assert "不再前进" in zh_and_en(*stuck[:2])[0]
    interrupted = ("The transcription was interrupted (the service or its worker stopped "
                   "unexpectedly).")
    assert "意外停止" in zh_and_en("interrupted", interrupted)[0]


def test_path_rules_are_said_in_chinese() -> None:
    from service import fsops

    with pytest.raises(fsops.PathTooLongError) as caught:
        fsops.check_path_length("/srv/outbox/" + "会" * 90, windows=False)
    zh, _ = zh_and_en("path_too_long", f"Cannot write the transcripts: {caught.value}")
    assert "字节" in zh and "255" in zh
    with pytest.raises(fsops.PathTooLongError) as caught:
        fsops.check_path_length("C:\\outbox\\" + "会" * 300, windows=True,
                                long_paths_enabled=lambda: False)
    zh, _ = zh_and_en("path_too_long", f"Cannot write the transcripts: {caught.value}")
    assert "LongPathsEnabled = 1" in zh and "259" in zh
    with pytest.raises(fsops.UnsafePathError) as caught:
        fsops.split_relative("team/../../etc/passwd")
    assert "不允许" in zh_and_en(*worker.classify(caught.value)[:2])[0]
    link = fsops.NotRegularFileError(errno.ELOOP, "it is a link, not a file", "/in/a.wav")
    assert "这是链接" in zh_and_en(*worker.classify(link)[:2])[0]


def test_a_missing_gpu_library_is_said_in_chinese() -> None:
    err = RuntimeError("Library cublas64_12.dll is not found or cannot be loaded")
    zh, _ = zh_and_en(*worker.classify(err)[:2])
    assert "找不到或无法加载库 cublas64_12.dll" in zh


def test_a_source_that_could_not_be_moved_is_said_in_chinese() -> None:
    message = i18n.t("detail.not_moved", "en", message=audio.MSG_NOT_MEDIA,
                     error=PermissionError(errno.EACCES, "Permission denied", "/in/a.wav"))
    zh, _ = zh_and_en("not_audio", message)
    assert "源文件无法移动：没有权限" in zh


def test_an_error_nobody_foresaw_keeps_its_words_clearly_labelled() -> None:
    kind, message, _r, _s = worker.classify(ZeroDivisionError("division by zero"))
    zh = i18n.reason(kind, message, ZH)
    assert zh == "意外错误。（详细信息：ZeroDivisionError: division by zero）"
    assert i18n.reason(kind, message, "en") == message
    weird = i18n.reason("io_error", "Could not read or write a file: [Errno 9999] Strange", ZH)
    assert "详细信息：[Errno 9999] Strange" in weird
    named = i18n.reason("error", "Unexpected error: KeyError: '会议.mp3'", ZH)
    assert named == "意外错误。（详细信息：KeyError: '会议.mp3'）"  # a name is no translation
    assert i18n.reason("held", "另一个程序占用该文件超过 5 秒", ZH).endswith(
        "（另一个程序占用该文件超过 5 秒）")  # recorded in Chinese already: as it is


def _source_strings() -> list[str]:
    """Every string the service's code holds, adjacent literals joined, with \0 for each
    f-string field (so each template's words can be looked up where they are written)."""
    found = []
    for path in SERVICE.glob("*.py"):
        if path.name == "i18n.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                found.append("".join(v.value if isinstance(v, ast.Constant) else "\0"
                                     for v in node.values))
    return found


# words that are not ours (CTranslate2's), or that i18n itself writes (no copy to drift), or
# built from two constants of audio.py (MSG_DAMAGED_PREFIX + its detail)
NOT_COPIED = {"detail.cuda_missing", "detail.cuda_locate", "detail.cuda_any",
              "engine.cuda_library", "detail.not_moved", "detail.damaged_like"}


@pytest.mark.parametrize("key", [k for k in reasons.TEMPLATES if k not in NOT_COPIED])
def test_every_template_is_written_that_way_in_the_code(key: str) -> None:
    """A producer whose English words change would silently fall back to English details:
    each template's words must appear, in order, in one string of the service's code."""
    pieces = [p for p in re.split(r"\{[^{}]*\}", i18n.MESSAGES["en"][key].replace(
        "{{", "{").replace("}}", "}")) if len(p.strip(" .()")) > 2]
    if key == "detail.sidecar_object":  # the one template with literal braces
        pieces = [' must hold a JSON object like {"model": "small"}']

    def holds(text: str) -> bool:
        at = 0
        for piece in pieces:
            at = text.find(piece, at)
            if at < 0:
                return False
            at += len(piece)
        return True

    assert any(holds(s) for s in _source_strings()), (key, pieces)


def test_i18n_itself_writes_the_templates_it_does_not_copy() -> None:
    code = "".join(p.read_text(encoding="utf-8") for p in SERVICE.glob("*.py"))
    assert 'i18n.t("engine.cuda_library", "en"' in code
    assert '"detail.not_moved", "en"' in code


def test_every_detail_has_a_chinese_translation() -> None:
    en, zh = i18n.MESSAGES["en"], i18n.MESSAGES[ZH]
    keys = [k for k in en if k.split(".")[0] in ("detail", "oserr", "ffmpeg", "json", "format")]
    assert keys and not [k for k in keys if k not in zh]
    for key in keys:  # the same fields in both languages
        fields = set(re.findall(r"\{(\w+)", en[key]))
        assert fields == set(re.findall(r"\{(\w+)", zh[key])), key
