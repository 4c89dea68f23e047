"""Test helpers for the web endpoint: a tiny HTTP client that keeps the session cookie and the
CSRF token (stdlib http.client, so a test can also send exactly the bytes it wants)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from service import db
from service.config import load_settings
from service.web import WebServer
from tests.conftest import write_settings


class Bare:
    """A service that has started nothing: the web endpoint alone, on a real database."""

    backend = None


def bare_server(folder: Path, models_dir: Path | None = None, **http: object) -> WebServer:
    """A started WebServer on a fresh, migrated database in `folder` (CPU, port 0)."""
    models = {"dir": str(models_dir)} if models_dir is not None else {}
    settings = load_settings(write_settings(folder, {
        "models": {"default": "tiny.en", "allow_download": False, **models},
        "gpu": {"devices": "none"}, "http": {"port": 0, **http}}))
    db.migrate(settings.database_url)
    web = WebServer(settings, Bare())
    assert web.start(), web.error
    return web


class Client:
    """One browser: its cookie and CSRF token, requests to one server."""

    def __init__(self, base: str, host: str | None = None) -> None:
        parts = urlsplit(base)
        self.netloc, self.host = parts.netloc, host
        self.cookie: str | None = None
        self.csrf = ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, **query: object) -> tuple[int, dict, bytes]:
        if query:
            path += ("&" if "?" in path else "?") + urlencode(query)
        conn = http.client.HTTPConnection(self.netloc, timeout=60)
        h = dict(headers or {})
        if self.host:
            h["Host"] = self.host
        if self.cookie:
            h.setdefault("Cookie", self.cookie)
        try:
            conn.request(method, path, body=body, headers=h,
                         encode_chunked="Transfer-Encoding" in h)
            r = conn.getresponse()
            data = r.read()
            got = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        if "set-cookie" in got and "dropscribe_session=" in got["set-cookie"]:
            value = got["set-cookie"].split(";", 1)[0]
            self.cookie = None if value.endswith("=") or '=""' in value else value
        return r.status, got, data

    def json(self, method: str, path: str, payload: object = None, **query: object) -> tuple:
        body = None if payload is None else json.dumps(payload).encode()
        code, headers, data = self.request(method, path, body, self.write_headers(), **query)
        return code, json.loads(data) if data.startswith((b"{", b"[")) else data

    def write_headers(self) -> dict:
        return {"X-CSRF-Token": self.csrf} if self.csrf else {}

    def session(self) -> dict:
        code, data = self.json("GET", "/api/session")
        assert code == 200, data
        self.csrf = data.get("csrf", "")
        return data

    def login(self, secret: str) -> tuple[int, dict]:
        code, data = self.json("POST", "/api/login", {"secret": secret})
        if code == 200:
            self.csrf = data["csrf"]
        return code, data

    def upload(self, name: str, content: bytes, **choices: object) -> tuple[int, dict]:
        code, _, data = self.request("PUT", "/api/upload", content, self.write_headers(),
                                     name=name, **choices)
        return code, json.loads(data)
