"""The no-JavaScript status page at /status: counts, running tasks, GPUs, recent failures.

Server-rendered HTML that refreshes itself every few seconds, for old phones and for a quick
look; the full page with uploads, queue and transcripts is service/static/ (see web.py).
"""

from __future__ import annotations

import html
from typing import Any

from . import i18n, status
from .i18n import duration, normalize, state_name, t

REFRESH_SECONDS = 5


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
            f'<div class="err">{_e(i18n.reason(f.get("kind"), f.get("error"), lang))}</div>'
            f'<div class="muted">{_e(when)}</div></div>')
    add("</section>")

    if data.get("minutes"):  # summary: on — the minutes' own queue
        counts = t("status.list_sep", lang).join(
            t("status.count", lang, state=t(f"minutes.{k}", lang), n=n)
            for k, n in sorted(data["minutes"].items()))
        add(f"<section><h2>{_e(t('page.minutes', lang))}</h2><p>{_e(counts)}</p>")
        for f in data.get("minutes_failures", []):
            add(f'<div class="task"><div class="file">#{int(f["id"])} {_e(f["source"])}</div>'
                f'<div class="err">{_e(f.get("error"))}</div></div>')
        add("</section>")

    at = (data.get("generated_at") or "").replace("T", " ")
    add(f"<footer>{_e(t('page.updated', lang, at=at))}<br>{_e(t('page.links', lang))}</footer>")
    add("</main></body></html>")
    return "\n".join(out)


