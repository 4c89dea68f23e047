"""Pytest plugin: a real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions wire
format (`POST /v1/chat/completions`), standing in for the user's LLM server (no real LLM can
run here). Fixture `chat_server`; its `mode` makes it fail in each way a server can."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class ChatServer:
    """Records every request; answers by `mode`: ok | malformed (JSON without choices) |
    not_json | empty | error (HTTP 500) | slow (waits `delay` seconds, then ok). `down`
    closes the port (connection refused) and opens it again on the same port."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True, name="chat-server").start()
        self._server = server

    @property
    def down(self) -> bool:
        return self._server is None

    @down.setter
    def down(self, value: bool) -> None:
        if value and self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        elif not value and self._server is None:
            self._start()

    def close(self) -> None:
        self.down = True

    def reply(self, body: dict[str, Any]) -> str:
        """What the fake model says: notes for a part, else minutes in the three sections,
        both naming how many transcript lines they were given."""
        system = body["messages"][0]["content"]
        user = body["messages"][-1]["content"]
        lines = len(user.splitlines())
        if not system.startswith(("You write meeting minutes", "你是会议记录员")):
            return f"- notes on {lines} line(s), starting {user.splitlines()[0][:30]!r}"
        return (f"## Summary\nA meeting ({lines} lines given).\n\n## Decisions\n- keep the "
                "budget\n\n## Action items\n- Speaker 3: send the server plan by Friday")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                chat.requests.append(body)
                chat.headers.append(dict(self.headers))
                chat.paths.append(self.path)
                mode = chat.mode
                if mode == "slow":
                    time.sleep(chat.delay)
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if mode == "error":
                    return self._send(500, b'{"error": {"message": "model not loaded"}}')
                if mode == "not_json":
                    return self._send(200, b"<html>proxy login</html>")
                if mode == "malformed":
                    return self._send(200, b'{"id": "x", "object": "chat.completion"}')
                content = "" if mode == "empty" else chat.reply(body)
                reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                         "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
                self._send(200, json.dumps(reply, ensure_ascii=False).encode("utf-8"))

            def _send(self, code: int, data: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

        return Handler


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.close()
