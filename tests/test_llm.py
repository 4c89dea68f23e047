"""One chat call against a real HTTP server on 127.0.0.1 (tests/chat_server.py): the reply's
text, a wrong address, and a proxy setting that must not catch a server on this machine."""

from __future__ import annotations

import pytest

from service import llm
from tests.chat_server import ChatServer

MESSAGES = [{"role": "system", "content": "You write meeting minutes from a transcript."},
            {"role": "user", "content": "[Speaker 1] Hello."}]


def test_the_reply_text_comes_back(chat_server: ChatServer) -> None:
    text = llm.chat(chat_server.url + "/", "m", MESSAGES, api_key=None, timeout=5,
                    max_tokens=100)
    assert text.startswith("## Summary")
    assert "Authorization" not in chat_server.headers[0]  # no key, no header


def test_a_wrong_address_says_what_the_server_answered(chat_server: ChatServer) -> None:
    with pytest.raises(llm.ChatError) as err:
        llm.chat(chat_server.url.removesuffix("/v1"), "m", MESSAGES, api_key=None, timeout=5,
                 max_tokens=100)
    assert "answered HTTP 404" in str(err.value)
    assert "返回 HTTP 404" in err.value.message("zh-CN")


def test_a_local_server_is_never_reached_through_the_proxy(
        chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert llm.chat(chat_server.url, "m", MESSAGES, api_key="k", timeout=5, max_tokens=100)
    assert chat_server.headers[0]["Authorization"] == "Bearer k"
