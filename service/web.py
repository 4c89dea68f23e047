"""The HTTP endpoint: /health, /metrics (Prometheus) and a small status page at /.

Standard library only for the server (`http.server.ThreadingHTTPServer` in a daemon thread) plus
`prometheus_client` for the metrics text. Bound to settings.http.host (127.0.0.1 by default: this
machine only — there is no login) and settings.http.port (0 = a free port, see `WebServer.port`).

It must never take the service down: a failing request answers 500 and is logged; a port that is
already in use is logged once, naming the setting, and the service runs on without the endpoint.
Reads go through a read-only engine of their own, so a page view never takes the database's write
lock away from the dispatcher.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from . import db, status
from .config import Settings
from .i18n import duration, normalize, state_name, t
from .tables import ALL_STATES
from .tasks import TaskQueue

log = logging.getLogger(__name__)

MIB = 1024 * 1024
REFRESH_SECONDS = 5


# ---- health --------------------------------------------------------------------------------------
def check_health(service: Any, engine: Any) -> tuple[bool, list[str], dict]:
    """(ok, reasons, checks): watcher alive, scheduler running, database answers, GPUs usable."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    watcher = getattr(service, "watcher", None)
    checks["watcher"] = bool(watcher is not None and watcher.alive())
    if not checks["watcher"]:
        reasons.append("watcher: the folder watcher is not running")
    scheduler = getattr(service, "scheduler", None)
    checks["scheduler"] = bool(scheduler is not None and scheduler.running)
    if not checks["scheduler"]:
        reasons.append("scheduler: the dispatcher's scheduler is not running")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        checks["database"] = True
    except Exception as err:  # noqa: BLE001 - any failure is "unreachable"
        checks["database"] = False
        reasons.append(f"database: unreachable ({type(err).__name__}: {err})"[:300])
    storage = getattr(service, "storage_problems", None)
    if callable(storage):  # a deleted inbox, a deleted or damaged database (issue 15.6)
        reasons.extend(storage())
    backend = getattr(service, "backend", None)
    if backend is None:
        checks["gpu"] = "cpu"
    else:
        try:
            n = len(backend.devices())
            checks["gpu"] = f"{n} GPU(s)"
            if n == 0:
                reasons.append("gpu: the GPU backend reports no devices")
        except Exception as err:  # noqa: BLE001 - NVML can fail when a driver goes away
            checks["gpu"] = "error"
            reasons.append(f"gpu: the GPU backend failed ({type(err).__name__}: {err})"[:300])
    return not reasons, reasons, checks


# ---- metrics -------------------------------------------------------------------------------------
class _Collector:
    """Computes every metric at scrape time from the database and the running service."""

    def __init__(self, web: WebServer) -> None:
        self.web = web

    def collect(self):  # noqa: ANN201 - a generator of metric families
        web = self.web
        try:
            counts = web.queue.counts()
        except Exception:  # noqa: BLE001 - a scrape reports what it can
            log.exception("metrics: cannot read task counts")
            counts = None
        if counts is not None:
            depth = GaugeMetricFamily("dropscribe_queue_tasks", "Tasks by state", labels=["state"])
            for state in ALL_STATES:
                depth.add_metric([state], counts.get(state, 0))
            yield depth
            for state, what in (("completed", "completed successfully"),
                                ("failed", "failed for good"), ("cancelled", "cancelled")):
                c = CounterMetricFamily(f"dropscribe_tasks_{state}",
                                        f"Tasks {what} (from the tasks table)")
                c.add_metric([], counts.get(state, 0))
                yield c
        try:
            stats = web.model_stats()
        except Exception:  # noqa: BLE001
            log.exception("metrics: cannot read model_stats")
            stats = []
        rtf = GaugeMetricFamily(
            "dropscribe_real_time_factor",
            "Average transcription seconds per audio second of completed tasks (model_stats)",
            labels=["model", "device"])
        load = GaugeMetricFamily(
            "dropscribe_model_load_seconds_avg", "Average model load time in seconds",
            labels=["model", "device"])
        for model, device, avg_rtf, avg_load in stats:
            if avg_rtf is not None:
                rtf.add_metric([model, device or ""], float(avg_rtf))
            if avg_load is not None:
                load.add_metric([model, device or ""], float(avg_load))
        yield rtf
        yield load
        gpus = web.gpu_snapshot()
        families = {
            key: GaugeMetricFamily(f"dropscribe_gpu_vram_{name}_bytes", doc, labels=["gpu", "name"])
            for key, name, doc in (
                ("budget_mb", "budget", "VRAM this service may use on the card"),
                ("reserved_mb", "reserved", "VRAM reserved by this service's running tasks"),
                ("used_mb", "used", "VRAM in use on the card (all programs)"),
                ("total_mb", "total", "VRAM of the card"),
            )
        }
        tasks = GaugeMetricFamily("dropscribe_gpu_tasks", "This service's tasks on the card",
                                  labels=["gpu", "name"])
        for g in gpus:
            labels = [str(g["index"]), str(g["name"])]
            for key, fam in families.items():
                fam.add_metric(labels, float(g[key]) * MIB)
            tasks.add_metric(labels, g["tasks"])
        yield from families.values()
        yield tasks
        running = GaugeMetricFamily("dropscribe_running_tasks",
                                    "Tasks this service is running now (loading or processing)")
        running.add_metric([], len(web.running_summary()))
        yield running
        ok, _, _ = check_health(web.service, web.engine)
        healthy = GaugeMetricFamily("dropscribe_healthy", "1 when /health says ok, else 0")
        healthy.add_metric([], 1 if ok else 0)
        yield healthy


# ---- the status page -----------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC",
"Microsoft YaHei","PingFang SC",sans-serif;background:#f4f5f7;color:#1d2330}
main{max-width:56rem;margin:0 auto;padding:.75rem}
h1{font-size:1.35rem;margin:.2rem 0}
h2{font-size:1.05rem;margin:0 0 .5rem}
section,header{background:#fff;border-radius:.6rem;padding:.75rem .9rem;margin:.6rem 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.svc{font-weight:600;margin:.1rem 0}.ok{color:#17803d}.bad{color:#b42318}
.muted{color:#5b6475;font-size:.9rem;margin:.1rem 0}
.warn{background:#fff4e5;border:1px solid #f5b35c;border-radius:.6rem;padding:.6rem .9rem}
.warn ul{margin:.3rem 0 0;padding-left:1.2rem}
.counts{display:grid;grid-template-columns:repeat(3,1fr);gap:.45rem}
.count{border-radius:.5rem;padding:.45rem .6rem;background:#eef1f5}
.count b{display:block;font-size:1.4rem;line-height:1.2}
.count span{font-size:.85rem;color:#3b4352}
.s-pending{background:#eef2ff}.s-loading,.s-processing{background:#e6f4ff}
.s-completed{background:#e7f6ec}.s-failed{background:#fdecea}.s-cancelled{background:#f1f1f1}
.task{border-top:1px solid #e4e7ec;padding:.5rem 0}.task:first-of-type{border-top:0}
.file{font-weight:600;overflow-wrap:anywhere}
.bar{height:.55rem;background:#e4e7ec;border-radius:.3rem;overflow:hidden;margin:.3rem 0}
.bar{position:relative}.bar span{display:block;height:100%;background:#2e6be6}
.bar i{position:absolute;top:0;bottom:0;width:2px;background:#b42318}
.err{overflow-wrap:anywhere;color:#5b1a14}
footer{color:#5b6475;font-size:.8rem;text-align:center;padding:.5rem}
"""


def _e(value: Any) -> str:
    """HTML-escape anything (file names and error messages are user data)."""
    return html.escape("" if value is None else str(value), quote=True)


def render_page(data: dict, lang: str, health: tuple[bool, list[str], dict] | None = None) -> str:
    """The status page: the same information as `python app.py status`, for a phone or a PC."""
    lang = normalize(lang)
    out: list[str] = []
    add = out.append
    add("<!doctype html>")
    add(f'<html lang="{_e(lang)}"><head><meta charset="utf-8">')
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    add(f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">')
    add(f"<title>{_e(t('page.title', lang))}</title><style>{CSS}</style></head><body><main>")

    running = data["service"] == "running"
    add("<header><h1>DropScribe</h1>")
    cls, key = ("ok", "page.running") if running else ("bad", "page.not_running")
    add(f'<p class="svc {cls}">● {_e(t(key, lang))}</p>')
    if running:
        mode = status.mode_name(data.get("mode"), lang)
        add(f'<p class="muted">{_e(t("page.mode", lang, mode=mode, pid=data.get("pid")))}</p>')
    add("</header>")
    if health is not None and not health[0]:
        add(f'<div class="warn" role="alert"><b>{_e(t("page.degraded", lang))}</b><ul>')
        for reason in health[1]:
            add(f"<li>{_e(reason)}</li>")
        add("</ul></div>")

    add(f"<section><h2>{_e(t('page.queue', lang))}</h2><div class=\"counts\">")
    for state, n in data["counts"].items():
        add(f'<div class="count s-{_e(state)}"><b>{int(n)}</b>'
            f"<span>{_e(state_name(state, lang))}</span></div>")
    add("</div></section>")

    add(f"<section><h2>{_e(t('page.now', lang))}</h2>")
    if not data["running"]:
        add(f'<p class="muted">{_e(t("page.none_running", lang))}</p>')
    for r in data["running"]:
        pct = max(0.0, min(100.0, float(r.get("progress") or 0) * 100))
        add('<div class="task">')
        add(f'<div class="file">#{int(r["id"])} {_e(r["source"])}</div>')
        add(f'<div class="muted">{_e(state_name(r["status"], lang))} · {_e(r["model"])} · '
            f'{_e(r.get("device") or "")}</div>')
        add(f'<div class="bar" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><span style="width:{pct:.1f}%"></span></div>')
        parts = [f"{pct:.0f}%"]
        if r.get("elapsed_seconds") is not None:
            parts.append(t("page.elapsed", lang, d=duration(r["elapsed_seconds"], lang)))
        if r.get("eta_seconds") is not None:
            parts.append(t("page.eta", lang, d=duration(r["eta_seconds"], lang)))
        add(f'<div class="muted">{_e(" · ".join(parts))}</div></div>')
    add("</section>")

    add(f"<section><h2>{_e(t('page.gpus', lang))}</h2>")
    if not data["gpus"]:
        add(f'<p class="muted">{_e(t("page.cpu_mode", lang))}</p>')
    for g in data["gpus"]:
        total = max(1, int(g["total_mb"]))
        used = max(0.0, min(100.0, int(g["used_mb"]) / total * 100))
        budget = max(0.0, min(100.0, int(g["budget_mb"]) / total * 100))
        add(f'<div class="task"><div class="file">GPU {int(g["index"])} · {_e(g["name"])}</div>')
        add(f'<div class="bar"><span style="width:{used:.1f}%"></span>'
            f'<i style="left:{budget:.1f}%"></i></div>')
        line = t("page.gpu_line", lang, used=int(g["used_mb"]), total=int(g["total_mb"]),
                 ours=int(g["reserved_mb"]), budget=int(g["budget_mb"]), tasks=int(g["tasks"]))
        add(f'<div class="muted">{_e(line)}</div></div>')
    add("</section>")

    if data["vram_estimates"]:
        add(f"<section><h2>{_e(t('page.estimates', lang))}</h2>")
        for e in data["vram_estimates"]:
            measured = (t("status.measured", lang, mean=e["measured_mean_mb"], n=e["samples"])
                        if e["samples"] else t("status.not_measured", lang))
            line = t("page.estimate_line", lang, estimate=e["estimate_mb"],
                     default=e["default_mb"], measured=measured)
            add(f'<div class="task"><div class="file">{_e(e["model"])} · {_e(e["gpu"])}</div>'
                f'<div class="muted">{_e(line)}</div></div>')
        add("</section>")

    add(f"<section><h2>{_e(t('page.failures', lang))}</h2>")
    if not data["recent_failures"]:
        add(f'<p class="muted">{_e(t("page.no_failures", lang))}</p>')
    for f in data["recent_failures"]:
        when = (f.get("at") or "").replace("T", " ")
        add(f'<div class="task"><div class="file">#{int(f["id"])} {_e(f["source"])}</div>'
            f'<div class="err">{_e(f.get("error"))}</div>'
            f'<div class="muted">{_e(when)}</div></div>')
    add("</section>")

    at = (data.get("generated_at") or "").replace("T", " ")
    add(f"<footer>{_e(t('page.updated', lang, at=at))}<br>{_e(t('page.links', lang))}</footer>")
    add("</main></body></html>")
    return "\n".join(out)


# ---- the server ----------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets a second program bind the same port: never ask for it there.
    allow_reuse_address = os.name != "nt"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        log.warning("HTTP connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server_version = "DropScribe"
    protocol_version = "HTTP/1.0"
    timeout = 15  # a client that sends nothing does not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 - the name http.server looks for
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def _not_allowed(self) -> None:
        lang = self.server.web.lang  # type: ignore[attr-defined]
        self._send(405, "text/plain; charset=utf-8", t("http.method", lang).encode() + b"\n",
                   head=self.command == "HEAD", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def _serve(self, head: bool) -> None:
        web: WebServer = self.server.web  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        try:
            code, ctype, body = web.respond(url.path, parse_qs(url.query))
        except Exception:  # noqa: BLE001 - one bad request must not hurt the service
            log.exception("HTTP GET %s failed", url.path)
            code, ctype = 500, "text/plain; charset=utf-8"
            body = (t("http.error", web.lang) + "\n").encode()
        self._send(code, ctype, body, head=head)

    def _send(self, code: int, ctype: str, body: bytes, *, head: bool,
              extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if ctype.startswith("text/html"):
                # Defence in depth on top of escaping: no scripts, no external anything.
                self.send_header("Content-Security-Policy",
                                 "default-src 'none'; style-src 'unsafe-inline'")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        log.debug("HTTP %s %s", self.address_string(), format % args)


class WebServer:
    """The HTTP endpoint of a running Service (its queue, watcher, scheduler, dispatcher)."""

    def __init__(self, settings: Settings, service: Any) -> None:
        self.settings = settings
        self.service = service
        self.lang = normalize(settings.ui_language)
        self.port: int | None = None  # the bound port once started (None: not serving)
        self.error: str | None = None  # why it is not serving, if start() failed
        self.engine = db.make_engine(settings.database_url, readonly=True)
        self.queue = TaskQueue(self.engine)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> bool:
        """Listen and serve in a daemon thread; False (logged, naming the setting) if it can't."""
        host, port = self.settings.http.host, self.settings.http.port
        server_cls = _Server
        if ":" in host:  # an IPv6 address such as ::1
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            httpd = server_cls((host, port), _Handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE or getattr(err, "winerror", None) == 10048:
                why = (f"port {port} is already in use; choose another http.port in "
                       f"{self.settings.source or 'settings.yaml'} (0 picks a free one) or set "
                       "http.enabled: false")
            else:
                why = (f"cannot listen on {host}:{port} ({err}); check http.host and http.port "
                       f"in {self.settings.source or 'settings.yaml'}")
            self.error = why
            log.error("HTTP endpoint not started: %s. The service keeps running without "
                      "/health, /metrics and the status page.", why)
            return False
        httpd.web = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
            name="dropscribe-http", daemon=True,
        )
        self._thread.start()
        log.info("status page http://%s:%s/ (also /health and /metrics)",
                 f"[{host}]" if ":" in host else host, self.port)
        return True

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.engine.dispose()

    @property
    def address(self) -> tuple | None:
        """The listening socket's address, e.g. ('127.0.0.1', 8765); None when not serving."""
        return self._httpd.socket.getsockname() if self._httpd is not None else None

    # ---- data ------------------------------------------------------------------------------
    def model_stats(self) -> list[tuple]:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT model, device, avg_real_time_factor, avg_load_seconds FROM model_stats"
            )).all()
        return [tuple(r) for r in rows]

    def gpu_snapshot(self) -> list[dict]:
        pool = getattr(getattr(self.service, "dispatcher", None), "pool", None)
        return pool.snapshot() if pool is not None else []

    def running_summary(self) -> list[dict]:
        return status.running_summary(getattr(self.service, "dispatcher", None))

    def heartbeat(self) -> dict:
        data = status.live(self.service)
        data["http_port"] = self.port
        return data

    def status_data(self) -> dict:
        return status.collect(self.settings, self.queue, self.heartbeat())

    # ---- routes ----------------------------------------------------------------------------
    def respond(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for a GET of `path`."""
        if path == "/health":
            ok, reasons, checks = check_health(self.service, self.engine)
            body = {"status": "ok" if ok else "degraded", "reasons": reasons, "checks": checks}
            return (200 if ok else 503, "application/json; charset=utf-8",
                    json.dumps(body, ensure_ascii=False).encode())
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/", "/index.html"):
            lang = normalize(query["lang"][0]) if query.get("lang") else self.lang
            page = render_page(self.status_data(), lang,
                               check_health(self.service, self.engine))
            return 200, "text/html; charset=utf-8", page.encode()
        return 404, "text/plain; charset=utf-8", (t("http.not_found", self.lang) + "\n").encode()
