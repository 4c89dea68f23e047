"""Who may use the web page: login, signed session cookies, CSRF tokens, Host check, headers.

Why each piece:

* Off loopback the page can upload files and cancel work, so it needs a login (settings refuse a
  non-loopback ``http.host`` without ``http.password`` or ``http.token``). On loopback with
  neither set, every visitor gets a session at once: this machine's user is trusted, as before.
* The session is a cookie signed with a key made at start-up (itsdangerous, the library
  Starlette's own sessions use): nothing to store, and a restart logs everyone out.
* Every state-changing request must also carry the session's CSRF token in ``X-CSRF-Token``:
  another site can make the browser send the cookie, but it cannot read the token.
* The Host header must name this machine (DNS rebinding: a hostile site whose name resolves to
  127.0.0.1 would otherwise read the page with the browser's help).
* Failed logins are limited per client address, so a password cannot be guessed quickly.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable

import psutil
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .config import HttpSettings, is_loopback

COOKIE = "dropscribe_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
LOGIN_FAILURES = 5  # per client address …
LOGIN_WINDOW_SECONDS = 300.0  # … in this many seconds, then 429 until the oldest one ages out

# Security headers of every response. No inline script or style anywhere on the page.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def host_names(settings: HttpSettings) -> set[str]:
    """Host header values (without port, lower case) that name this machine.

    Loopback names, this computer's names and the addresses of its network interfaces (an IP
    literal cannot be rebound), the bound host, plus ``http.allowed_hosts`` (e.g. a DNS alias).
    """
    names = {"localhost", "127.0.0.1", "::1"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    try:
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(a.address.split("%", 1)[0].lower())
    except OSError:
        pass
    if settings.host not in ("", "0.0.0.0", "::"):
        names.add(settings.host.strip("[]").lower())
    names.update(h.strip().strip("[]").lower() for h in settings.allowed_hosts if h.strip())
    return names


def host_of(header: str) -> str:
    """'example.com:8765' → 'example.com', '[::1]:8765' → '::1'; lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") > 1:  # a bare IPv6 address
        return header
    return header.split(":", 1)[0].rstrip(".")


class LoginLimiter:
    """At most LOGIN_FAILURES failed logins per client address in LOGIN_WINDOW_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        q = self._failures.setdefault(client, deque())
        cutoff = self.clock() - LOGIN_WINDOW_SECONDS
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    def retry_after(self, client: str) -> float:
        """Seconds until this client may try again; 0 when it may now."""
        q = self._recent(client)
        if len(q) < LOGIN_FAILURES:
            return 0.0
        return max(1.0, q[0] + LOGIN_WINDOW_SECONDS - self.clock())

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > 10_000:  # bounded memory under a flood of addresses
            self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


class Auth:
    """The login rules of one running web server (its key lives as long as the process)."""

    def __init__(self, settings: HttpSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._secrets = [s.get_secret_value() for s in (settings.password, settings.token) if s]
        self.required = bool(self._secrets)
        self.loopback = is_loopback(settings.host)
        self._signer = URLSafeTimedSerializer(secrets.token_bytes(32), salt="dropscribe-session")
        self.limiter = LoginLimiter(clock)
        self.hosts = host_names(settings)

    # ---- secrets ---------------------------------------------------------------------------
    def check_secret(self, given: str) -> bool:
        """The password or the token, compared in constant time."""
        ok = False
        for secret in self._secrets:
            ok |= hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))
        return ok

    def check_authorization(self, header: str | None) -> bool:
        """'Basic <user:password>' (any user name: Prometheus basic_auth) or 'Bearer <token>'."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.check_secret(value.strip())
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.check_secret(decoded.partition(":")[2])
        return False

    # ---- sessions --------------------------------------------------------------------------
    def new_session(self) -> tuple[str, str]:
        """(cookie value, CSRF token) of a fresh session."""
        csrf = secrets.token_urlsafe(24)
        return self._signer.dumps({"csrf": csrf}), csrf

    def session(self, cookie: str | None) -> dict | None:
        """The session a cookie holds, or None (missing, forged, expired)."""
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None

    @staticmethod
    def csrf_ok(session: dict | None, header: str | None) -> bool:
        return bool(session and header and hmac.compare_digest(session["csrf"], header))

    # ---- hosts -----------------------------------------------------------------------------
    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False  # HTTP/1.1 requires it; a browser always sends one
        host = host_of(header)
        if host in self.hosts:
            return True
        try:  # another spelling of an allowed address (e.g. 0:0:0:0:0:0:0:1)
            return str(ipaddress.ip_address(host)) in self.hosts
        except ValueError:
            return False

    def open_metrics(self) -> bool:
        """/health and /metrics need no login on loopback (as before), a login otherwise."""
        return self.loopback or not self.required

