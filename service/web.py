"""The HTTP endpoint: the web page (upload, queue, history, transcripts), /health, /metrics.

Starlette served by uvicorn in a daemon thread: one asyncio loop holds every connection, so slow
clients and long uploads cost a socket, not a thread; database reads run in Starlette's thread
pool through a read-only engine of their own (a page view never takes the write lock from the
dispatcher). Bound to settings.http.host (127.0.0.1 by default) and http.port (0 = a free port).
Login, CSRF, Host check and security headers: webauth.py. Uploads: uploads.py.

It must never take the service down: a failing request answers 500 and is logged; a port that is
already in use is logged once, naming the setting, and the service runs on without the endpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import actions, catalog, db, engines, i18n, outputs, queueview, reasons, status
from .config import Settings
from .files import stored_path
from .i18n import normalize, t
from .sidecar import Sidecar
from .statuspage import render_page
from .tables import ALL_STATES, COMPLETED
from .tasks import TaskQueue
from .uploads import UploadError, Uploads
from .webauth import COOKIE, CSRF_HEADER, SECURITY_HEADERS, SESSION_SECONDS, Auth

log = logging.getLogger(__name__)

MIB = 1024 * 1024
STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_IDLE_SECONDS = 60.0  # an upload that sends nothing this long is dropped
PLAIN = "text/plain; charset=utf-8"


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


# ---- the ASGI layer ------------------------------------------------------------------------------
class _Guard:
    """ASGI middleware: refuse foreign Host headers, add the security headers to every answer."""

    def __init__(self, app: Any, web: WebServer) -> None:
        self.app, self.web = app, web

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if not self.web.auth.host_allowed(host):
            log.warning("HTTP request refused: Host %r is not one of this computer's names "
                        "(http.allowed_hosts)", host[:100])
            body = (t("http.host", self.web.lang) + "\n").encode()
            await send({"type": "http.response.start", "status": 421, "headers": [
                (b"content-type", PLAIN.encode()), (b"content-length", str(len(body)).encode()),
                *extra]})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)


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
        self.auth = Auth(settings.http)
        self.uploads = Uploads(settings)
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._writer: TaskQueue | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> bool:
        """Listen and serve in a daemon thread; False (logged, naming the setting) if it can't."""
        host, port = self.settings.http.host, self.settings.http.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if os.name != "nt":  # on Windows SO_REUSEADDR lets a second program bind the same port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
            sock.listen(512)
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE or getattr(err, "winerror", None) == 10048:
                why = (f"port {port} is already in use; choose another http.port in "
                       f"{self.settings.source or 'settings.yaml'} (0 picks a free one) or set "
                       "http.enabled: false")
            else:
                why = (f"cannot listen on {host}:{port} ({err}); check http.host and http.port "
                       f"in {self.settings.source or 'settings.yaml'}")
            self.error = why
            log.error("HTTP endpoint not started: %s. The service keeps running without "
                      "/health, /metrics and the web page.", why)
            return False
        config = uvicorn.Config(
            _Guard(self.app, self), http="h11", ws="none", lifespan="off", loop="asyncio",
            log_config=None, access_log=False, timeout_keep_alive=5,
            timeout_graceful_shutdown=3, server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="dropscribe-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        log.info("web page http://%s:%s/ (also /health and /metrics)", shown, self.port)
        return True

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.engine.dispose()
        if self._writer is not None and self._writer is not getattr(self.service, "queue", None):
            self._writer.engine.dispose()

    @property
    def address(self) -> tuple | None:
        """The listening socket's address, e.g. ('127.0.0.1', 8765); None when not serving."""
        return self._socket.getsockname() if self._socket is not None else None

    # ---- data ------------------------------------------------------------------------------
    def model_stats(self) -> list[tuple]:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT model, device, avg_real_time_factor, avg_load_seconds FROM model_stats"
            )).all()
        return [tuple(r) for r in rows]

    def gpu_snapshot(self) -> list[dict]:
        vram = getattr(getattr(self.service, "dispatcher", None), "vram", None)
        return vram.snapshot() if vram is not None else []

    def running_summary(self) -> list[dict]:
        return status.running_summary(getattr(self.service, "dispatcher", None))

    def heartbeat(self) -> dict:
        data = status.live(self.service)
        data["http_port"] = self.port
        return data

    def status_data(self) -> dict:
        return status.collect(self.settings, self.queue, self.heartbeat())

    def writer(self) -> TaskQueue:
        """The service's own (writable) queue for retry and cancel."""
        if self._writer is None:
            self._writer = getattr(self.service, "queue", None) or TaskQueue(
                db.make_engine(self.settings.database_url), lang=self.lang)
        return self._writer

    def slots(self) -> int:
        """How many files run at once, for the expected start times of waiting ones."""
        gpus = self.gpu_snapshot()
        if gpus:
            return max(1, len(gpus))
        return self.settings.cpu.max_concurrent_tasks

    # ---- helpers ---------------------------------------------------------------------------
    def lang_of(self, request: Request) -> str:
        """?lang=, else ui.language, else the browser's language."""
        if request.query_params.get("lang"):
            return normalize(request.query_params["lang"])
        if self.settings.ui.language:
            return self.settings.ui.language
        return normalize(request.headers.get("accept-language", "").split(",")[0])

    def fail(self, request: Request, status_code: int, key: str, **kw: Any) -> JSONResponse:
        lang = self.lang_of(request)
        return JSONResponse({"error": t(key, lang, **kw), "key": key}, status_code=status_code)

    def denied(self, request: Request, *, write: bool = False) -> Response | None:
        """None when the request may go on; else the 401/403 answer."""
        session = self.auth.session(request.cookies.get(COOKIE))
        if self.auth.required and session is None:
            return self.fail(request, 401, "http.login_needed")
        if write and not self.auth.csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return self.fail(request, 403, "http.csrf")
        return None

    def _task_file(self, task_id: int, fmt: str) -> Path | None:
        """A completed task's output of format `fmt`, only if it lies inside the outbox."""
        task = self.queue.get(task_id)
        if task is None or task.status != COMPLETED:
            return None
        for p in task.outputs or []:
            path = Path(p)
            if path.suffix == f".{fmt}" and path.is_file() and _in_outbox(self.settings, path):
                return path
        return None

    # ---- routes ----------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        r = Route
        routes = [
            r("/", self.index), r("/index.html", self.index),
            r("/status", self.status_page),
            r("/health", self.health), r("/metrics", self.metrics),
            r("/api/session", self.session), r("/api/login", self.login, methods=["POST"]),
            r("/api/logout", self.logout, methods=["POST"]),
            r("/api/i18n", self.messages), r("/api/models", self.models),
            r("/api/overview", self.overview), r("/api/history", self.history),
            r("/api/tasks/{id:int}/transcript", self.transcript),
            r("/api/tasks/{id:int}/download/{fmt}", self.download),
            r("/api/tasks/{id:int}/audio", self.audio),
            r("/api/tasks/{id:int}/retry", self.retry, methods=["POST"]),
            r("/api/tasks/{id:int}/cancel", self.cancel, methods=["POST"]),
            r("/api/upload", self.upload, methods=["PUT"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_error, Exception: self._crash})

    def _http_error(self, request: Request, exc: HTTPException) -> Response:
        key = {404: "http.not_found", 405: "http.method"}.get(exc.status_code)
        body = t(key, self.lang_of(request)) if key else str(exc.detail)
        return Response(body + "\n", exc.status_code, headers=exc.headers, media_type=PLAIN)

    def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
        return Response(t("http.error", self.lang_of(request)) + "\n", 500, media_type=PLAIN)

    def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    def status_page(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        page = render_page(self.status_data(), self.lang_of(request),
                           check_health(self.service, self.engine))
        # no scripts at all; the old page's inline styles need 'unsafe-inline'
        csp = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp})

    def _metrics_denied(self, request: Request) -> Response | None:
        if self.auth.open_metrics():
            return None
        if self.auth.session(request.cookies.get(COOKIE)) is not None or \
                self.auth.check_authorization(request.headers.get("authorization")):
            return None
        return Response(t("http.login_needed", self.lang_of(request)) + "\n", 401,
                        media_type=PLAIN, headers={"WWW-Authenticate": 'Basic realm="DropScribe"'})

    def health(self, request: Request) -> Response:
        if (denied := self._metrics_denied(request)) is not None:
            return denied
        ok, reasons, checks = check_health(self.service, self.engine)
        body = {"status": "ok" if ok else "degraded", "reasons": reasons, "checks": checks}
        return Response(json.dumps(body, ensure_ascii=False), 200 if ok else 503,
                        media_type="application/json; charset=utf-8")

    def metrics(self, request: Request) -> Response:
        if (denied := self._metrics_denied(request)) is not None:
            return denied
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- session ---------------------------------------------------------------------------
    def _with_session(self, body: dict) -> JSONResponse:
        cookie, csrf = self.auth.new_session()
        resp = JSONResponse({**body, "logged_in": True, "csrf": csrf})
        resp.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True,
                        samesite="strict", path="/")
        return resp

    def session(self, request: Request) -> Response:
        """Who am I: a page load asks first. Without a login to check, a session at once."""
        lang = self.lang_of(request)
        body = {"auth_required": self.auth.required, "lang": lang}
        current = self.auth.session(request.cookies.get(COOKIE))
        if current is not None:
            return JSONResponse({**body, "logged_in": True, "csrf": current["csrf"]})
        if not self.auth.required:
            return self._with_session(body)
        return JSONResponse({**body, "logged_in": False})

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = self.auth.limiter.retry_after(client)
        if wait:
            resp = self.fail(request, 429, "http.login_limited", s=int(wait))
            resp.headers["Retry-After"] = str(int(wait))
            return resp
        try:
            data = json.loads(await request.body() or b"{}")
            given = str(data.get("secret", "")) if isinstance(data, dict) else ""
        except (ValueError, UnicodeDecodeError):
            given = ""
        if not self.auth.required or not given or not self.auth.check_secret(given):
            self.auth.limiter.failed(client)
            log.warning("web login failed from %s", client)
            return self.fail(request, 401, "http.login_wrong")
        self.auth.limiter.succeeded(client)
        log.info("web login from %s", client)
        return self._with_session({"auth_required": True, "lang": self.lang_of(request)})

    def logout(self, request: Request) -> Response:
        if (denied := self.denied(request, write=True)) is not None:
            return denied
        resp = JSONResponse({"logged_in": False})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    def messages(self, request: Request) -> Response:
        """Every text of the page in one language (i18n.py holds them all)."""
        lang = self.lang_of(request)
        return JSONResponse({"lang": lang, "messages": i18n.catalog(lang)},
                            headers={"Cache-Control": "no-cache"})

    # ---- reading ---------------------------------------------------------------------------
    def models(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        known = sorted(catalog.known_models(self.settings.models_dir))
        return JSONResponse({"models": known, "default": self.settings.models.default,
                             "engines": catalog.local_engines(self.settings.models_dir),
                             "engine": self.settings.transcribe.engine,
                             "max_upload_mb": self.settings.http.max_upload_mb})

    def overview(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        data = queueview.overview(self.settings, self.queue, self.lang_of(request), self.slots())
        ok, reasons, _ = check_health(self.service, self.engine)
        lang = self.lang_of(request)
        problems = [t(f"health.{r.split(':', 1)[0]}", lang) + (
            f" ({r.split('(', 1)[1]}" if "(" in r else "") for r in reasons]
        data.update(healthy=ok, problems=problems)
        return JSONResponse(data)

    def history(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        q = request.query_params
        try:
            page = int(q.get("page", "1"))
        except ValueError:
            page = 1
        return JSONResponse(queueview.history(
            self.queue, self.lang_of(request), state=q.get("state") or None,
            search=q.get("q", "")[:200], page=page))

    def transcript(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        task_id = request.path_params["id"]
        path = self._task_file(task_id, "json")
        if path is None:
            return self.fail(request, 404, "action.no_transcript", id=task_id)
        doc = json.loads(path.read_text(encoding="utf-8"))
        segments = [{"start": s.get("start"), "end": s.get("end"), "text": s.get("text", ""),
                     **({"speaker": s["speaker"]} if "speaker" in s else {})}
                    for s in doc.get("segments") or []]
        task = self.queue.get(task_id)
        return JSONResponse({"id": task_id, "source": task.source if task else None,
                             "language": doc.get("language"), "text": doc.get("text", ""),
                             "segments": segments})

    def download(self, request: Request) -> Response:
        if (denied := self.denied(request)) is not None:
            return denied
        task_id, fmt = request.path_params["id"], request.path_params["fmt"]
        path = self._task_file(task_id, fmt) if fmt in outputs.OUTPUT_FORMATS else None
        if path is None:
            return self.fail(request, 404, "action.no_transcript", id=task_id)
        media = {"json": "application/json", "srt": "application/x-subrip", "vtt": "text/vtt",
                 "tsv": "text/tab-separated-values"}.get(fmt, "text/plain")
        return FileResponse(path, media_type=f"{media}; charset=utf-8", filename=path.name)

    def audio(self, request: Request) -> Response:
        """The archived source (with HTTP ranges, so the player can seek to a segment)."""
        if (denied := self.denied(request)) is not None:
            return denied
        task_id = request.path_params["id"]
        task = self.queue.get(task_id)
        path = None
        if task is not None and task.source_state == "archived":
            try:  # where settling put it (" (2)" if the name was taken); older rows: its name
                path = stored_path(self.settings.archive, task.source, task.moved_to)
            except ValueError:
                path = None
        if path is None or not path.is_file() or path.is_symlink() or \
                path.stat().st_size != task.size:  # replaced by hand since
            return self.fail(request, 404, "action.no_audio", id=task_id)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media)

    # ---- changing --------------------------------------------------------------------------
    def _act(self, request: Request, do: Any) -> Response:
        if (denied := self.denied(request, write=True)) is not None:
            return denied
        task_id = request.path_params["id"]
        try:
            do(task_id)
        except actions.ActionError as err:
            return self.fail(request, err.status, err.key, **err.fields(self.lang_of(request)))
        log.info("web: task %s %s", task_id, request.url.path.rsplit("/", 1)[-1])
        return JSONResponse({"ok": True, "id": task_id})

    def retry(self, request: Request) -> Response:
        return self._act(request, lambda i: actions.retry(self.settings, self.writer(), i))

    def cancel(self, request: Request) -> Response:
        return self._act(request, lambda i: actions.cancel(self.writer(), i))

    def upload_sidecar(self, query: Any) -> dict:
        """The page's per-upload choices as the sidecar the inbox uses (ValueError if bad).

        Keys the sidecar knows today are checked with its own model; chinese_script and
        glossary are passed through for the sidecar validator to judge."""
        data: dict[str, Any] = {}
        for key in ("model", "language", "initial_prompt"):
            if query.get(key):
                data[key] = query[key]
        if query.get("priority"):
            try:
                data["priority"] = int(query["priority"])
            except ValueError:
                raise ValueError("priority: must be a whole number") from None
        try:
            Sidecar.model_validate(data)
        except ValidationError as err:
            raise ValueError("; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
            ) from None
        if data.get("model") and data["model"] not in catalog.known_models(
                self.settings.models_dir):
            raise ValueError(f"model: {data['model']!r} is not installed")
        if engine := query.get("engine", ""):
            data["engine"] = self._engine_for(engine, data.get("model"))
        script = query.get("chinese_script", "")
        if script:
            if script not in ("simplified", "traditional"):
                raise ValueError("chinese_script: simplified or traditional")
            data["chinese_script"] = script
        glossary = [w.strip() for w in query.get("glossary", "").replace("，", ",")
                    .replace("\n", ",").split(",") if w.strip()]
        if glossary:
            if len(glossary) > 200 or any(len(w) > 100 for w in glossary):
                raise ValueError("glossary: at most 200 terms of 100 characters")
            data["glossary"] = glossary
        return data

    def _engine_for(self, engine: str, model: str | None) -> str:
        """An engine chosen on the page, refused at once (nothing uploaded) when it cannot run
        the file's model here: no copy for that engine on disk, and none to download."""
        if engine not in catalog.ENGINES:
            raise ValueError(f"engine: {engines.OPENAI} or {engines.FASTER}")
        model = model or self.settings.models.default
        on_disk = catalog.local_engines(self.settings.models_dir).get(model, [])
        downloadable = self.settings.models.allow_download and model in catalog.OFFICIAL
        if engine not in on_disk and not downloadable:
            if on_disk:
                raise ValueError(f"engine: the model {model!r} is installed only for "
                                 f"{', '.join(on_disk)}, not {engine}")
            raise ValueError(f"engine: the model {model!r} is not installed for {engine}")
        return engine

    async def upload(self, request: Request) -> Response:
        """PUT /api/upload?name=<relative path>&model=…: the body is the file itself."""
        if (denied := self.denied(request, write=True)) is not None:
            return denied
        q = request.query_params
        try:
            rel = self.uploads.clean(q.get("name", ""))
            sidecar = self.upload_sidecar(q)
        except UploadError as err:
            return self.fail(request, err.status, err.key, **err.kw)
        except ValueError as err:
            return self.fail(request, 400, "upload.bad_option",
                             problem=reasons.detail(str(err), self.lang_of(request)))
        length = request.headers.get("content-length")
        declared = int(length) if length and length.isdigit() else None

        async def chunks():  # noqa: ANN202 - an async generator of body chunks
            stream = request.stream().__aiter__()
            while True:
                try:
                    with anyio.fail_after(UPLOAD_IDLE_SECONDS):
                        chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
                if chunk:
                    yield chunk

        try:
            placed = await self.uploads.receive(rel, chunks(), sidecar, declared)
        except UploadError as err:
            return self.fail(request, err.status, err.key, **err.kw)
        except (ClientDisconnect, TimeoutError):
            log.info("web upload of %s interrupted; nothing was kept", rel)
            return self.fail(request, 400, "upload.incomplete")
        return JSONResponse({"ok": True, "source": placed.source, "size": placed.size})


def _in_outbox(settings: Settings, path: Path) -> bool:
    """A recorded output path is served only if the outputs' own rules place it in the outbox
    (no '..', no symlinked folder leading out)."""
    try:
        rel = path.relative_to(settings.outbox)
        return outputs.safe_join(settings.outbox, rel.as_posix()) == path and \
            not path.is_symlink()
    except ValueError:  # not under the outbox at all, or UnsafePathError
        return False
