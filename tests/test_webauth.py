"""Login, CSRF, the Host check and the security headers, against a real running web server
(real sockets on 127.0.0.1, a real SQLite file, a real `python app.py` for refusing to start)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from service import db
from service.config import SettingsError, load_settings
from service.tasks import NewTask, TaskQueue
from service.webauth import CSP, LOGIN_FAILURES, LOGIN_WINDOW_SECONDS, LoginLimiter, host_of
from tests.conftest import write_settings
from tests.svc import app
from tests.web import Client, bare_server

PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-prometheus-0123456789"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A server that needs a login (bound to all interfaces, password and token set)."""
    web = bare_server(tmp_path_factory.mktemp("auth"), host="0.0.0.0", password=PASSWORD,
                      token=TOKEN)
    q = TaskQueue(db.make_engine(web.settings.database_url))
    failed = q.enqueue(NewTask(source="x.mp3", size=1, mtime_ns=1, model="tiny.en"),
                       failed=("not_audio", "not audio"))
    pending = q.enqueue(NewTask(source="y.mp3", size=1, mtime_ns=1, model="tiny.en"))
    yield web, f"http://127.0.0.1:{web.port}", failed.id, pending.id, q
    web.stop()
    q.engine.dispose()


def test_a_network_bind_without_a_login_refuses_to_start(tmp_path: Path) -> None:
    bad = write_settings(tmp_path / "bad", {"http": {"host": "0.0.0.0"}})
    with pytest.raises(SettingsError) as err:
        load_settings(bad)
    assert "http.password" in str(err.value) and "http.token" in str(err.value)
    result = app(bad, timeout=60)  # `python app.py` as a user starts it
    assert result.returncode == 2 and "http.password nor http.token" in result.stderr
    short = write_settings(tmp_path / "short", {"http": {"host": "0.0.0.0", "password": "s3cr"}})
    with pytest.raises(SettingsError) as err:
        load_settings(short)
    assert "http.password" in str(err.value) and "s3cr" not in str(err.value)  # never echoed
    ok = load_settings(write_settings(tmp_path / "ok", {"http": {"host": "0.0.0.0",
                                                                  "password": PASSWORD}}))
    assert PASSWORD not in repr(ok)  # a SecretStr: not in a log line by accident
    assert load_settings(write_settings(tmp_path / "lo", {"http": {"host": "::1"}})).http.host


def test_login_wrong_right_and_rate_limited(guarded) -> None:
    web, url, _, _, _ = guarded
    c = Client(url)
    assert c.session() == {"auth_required": True, "lang": "en", "logged_in": False}
    assert c.json("GET", "/api/overview")[0] == 401
    code, data = c.login("wrong password")
    assert code == 401 and data["key"] == "http.login_wrong" and c.cookie is None
    code, data = c.login(PASSWORD)
    assert code == 200 and data["logged_in"] and c.cookie and c.csrf
    assert c.json("GET", "/api/overview")[0] == 200
    assert Client(url).login(TOKEN)[0] == 200  # the token logs in too

    # a forged or foreign cookie is no session
    forged = Client(url)
    forged.cookie = "dropscribe_session=" + c.cookie.split("=", 1)[1][:-3] + "abc"
    assert forged.json("GET", "/api/overview")[0] == 401

    now = [1000.0]
    web.auth.limiter = LoginLimiter(clock=lambda: now[0])
    attacker = Client(url)
    for _ in range(LOGIN_FAILURES):
        assert attacker.login("guess")[0] == 401
    code, headers, body = attacker.request("POST", "/api/login", b'{"secret": "%s"}' %
                                           PASSWORD.encode())
    assert code == 429 and int(headers["retry-after"]) > 0  # even the right one, for now
    now[0] += LOGIN_WINDOW_SECONDS + 1
    assert attacker.login(PASSWORD)[0] == 200


def test_state_changes_need_the_session_and_its_csrf_token(guarded) -> None:
    web, url, failed_id, pending_id, q = guarded
    c = Client(url)
    c.login(PASSWORD)
    good = c.csrf
    inbox = web.settings.inbox
    before = sorted(inbox.rglob("*")) if inbox.exists() else []
    for csrf in ("", "wrong-token", Client(url).login(PASSWORD)[1]["csrf"]):  # another session's
        c.csrf = csrf
        assert c.upload("a.wav", b"RIFF....")[0] == 403
        assert c.json("POST", f"/api/tasks/{pending_id}/cancel")[0] == 403
        assert c.json("POST", f"/api/tasks/{failed_id}/retry")[0] == 403
    assert (sorted(inbox.rglob("*")) if inbox.exists() else []) == before
    assert q.get(pending_id).status == "pending" and q.get(failed_id).status == "failed"
    anon = Client(url)  # no session at all: 401 before any CSRF question
    assert anon.upload("a.wav", b"RIFF")[0] == 401
    c.csrf = good
    code, data = c.json("POST", f"/api/tasks/{pending_id}/cancel")
    assert code == 200 and q.get(pending_id).status == "cancelled"
    code, data = c.json("POST", f"/api/tasks/{pending_id}/cancel")
    assert code == 409 and "cancelled" in data["error"]


def test_health_and_metrics_need_the_password_off_loopback(guarded, tmp_path: Path) -> None:
    _, url, _, _, _ = guarded
    c = Client(url)
    for path in ("/health", "/metrics", "/status"):
        code, headers, _ = c.request("GET", path)
        assert code == 401, path
    code, headers, _ = c.request("GET", "/metrics")
    assert headers["www-authenticate"] == 'Basic realm="DropScribe"'
    basic = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    assert c.request("GET", "/metrics", headers={"Authorization": f"Basic {basic}"})[0] == 200
    assert c.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 503
    wrong = base64.b64encode(b"prometheus:nope").decode()
    assert c.request("GET", "/metrics", headers={"Authorization": f"Basic {wrong}"})[0] == 401
    c.login(PASSWORD)
    assert c.request("GET", "/metrics")[0] == 200  # the page's own session works too

    local = bare_server(tmp_path / "local", password=PASSWORD)  # loopback: open as before
    try:
        anon = Client(f"http://127.0.0.1:{local.port}")
        assert anon.request("GET", "/metrics")[0] == 200
        assert anon.request("GET", "/health")[0] == 503  # nothing started: degraded, but open
        assert anon.json("GET", "/api/overview")[0] == 401  # the page still needs the login
    finally:
        local.stop()


def test_host_header_must_name_this_computer(guarded, tmp_path: Path) -> None:
    """DNS rebinding (issue 15): a hostile site whose name resolves to this machine must not
    read the page through the visitor's browser. Only this computer's names are served."""
    web, url, _, _, _ = guarded
    port = web.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 f"localhost.evil.example:{port}"):
        code, headers, body = Client(url, host=host).request("GET", "/api/session")
        assert code == 421, host
        assert b"http.allowed_hosts" in body and headers["x-content-type-options"] == "nosniff"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:  # no Host at all
        raw.sendall(b"GET /api/session HTTP/1.0\r\n\r\n")
        assert raw.makefile("rb").readline().split()[1] == b"421"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert Client(url, host=host).request("GET", "/api/session")[0] == 200, host

    extra = bare_server(tmp_path / "alias", allowed_hosts=["dropscribe.office.lan"])
    try:
        base = f"http://127.0.0.1:{extra.port}"
        assert Client(base, host="dropscribe.office.lan").request("GET", "/")[0] == 200
        assert Client(base, host="other.office.lan").request("GET", "/")[0] == 421
    finally:
        extra.stop()
    assert host_of("[::1]:8765") == "::1" and host_of("Example.COM.:80") == "example.com"


def test_security_headers_on_every_answer(guarded) -> None:
    _, url, _, _, _ = guarded
    c = Client(url)
    for path in ("/", "/static/app.js", "/api/session", "/nope", "/health"):
        _, headers, _ = c.request("GET", path)
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in CSP and "script-src 'self';" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    page = c.request("GET", "/")[2].decode()
    assert '<script src="/static/app.js" defer></script>' in page
    assert page.count("<script") == 1 and "style=" not in page  # nothing inline
    code, headers, _ = c.request("POST", "/api/login", b"{}")
    assert "dropscribe_session" not in headers.get("set-cookie", "")
    Client(url).login(PASSWORD)
    cl = Client(url)
    _, headers, _ = cl.request("POST", "/api/login", f'{{"secret": "{PASSWORD}"}}'.encode())
    cookie = headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
