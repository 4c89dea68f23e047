"""A tiny message catalog: English and Simplified Chinese for `status`, the status page and the
per-state log lines. One dict per language; a key missing in one language falls back to English,
and an unknown key to itself, so a missing translation never breaks a page.

    t("task.state_log", "zh-CN", id=7, state=state_name("failed", "zh-CN"), file="a.mp3")
"""

from __future__ import annotations

LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        # task states
        "state.pending": "pending",
        "state.loading": "loading",
        "state.processing": "processing",
        "state.completed": "completed",
        "state.failed": "failed",
        "state.cancelled": "cancelled",
        # the per-state log line
        "task.state_log": "task {id} {state}: {file}",
        # status text (`python app.py status`)
        "status.running": "DropScribe: service running ({mode}, pid {pid})",
        "status.not_running": "DropScribe: service not running",
        "status.tasks": "tasks: {counts}",
        "status.count": "{state} {n}",
        "status.list_sep": ", ",
        "status.gpu": "GPU {index} {name}: budget {budget} MiB, ours {ours} MiB, "
                      "used {used}/{total} MiB, {tasks} task(s)",
        "status.estimate": "  {model} on {gpu}: estimate {estimate} MiB (default {default}), "
                           "{measured}",
        "status.measured": "{mean} MiB measured ({n} runs)",
        "status.not_measured": "not measured yet",
        "status.running_task": "  #{id} {state} {percent}% {model} on {device}: {file}",
        "status.eta": " (elapsed {elapsed}, about {eta} left)",
        "status.elapsed": " (elapsed {elapsed})",
        "status.failures": "recent failures:",
        "status.failure": "  #{id} {file}: {error}",
        "status.http": "status page: {url}",
        # modes
        "mode.cpu": "CPU",
        "mode.gpu": "GPU",
        "mode.simulated-gpu": "simulated GPU",
        # durations
        "dur.s": "{s} s",
        "dur.ms": "{m} min {s} s",
        "dur.hm": "{h} h {m} min",
        # status page
        "page.title": "DropScribe status",
        "page.running": "Service running",
        "page.not_running": "Service not running",
        "page.degraded": "Something needs attention:",
        "page.mode": "mode {mode}, pid {pid}",
        "page.queue": "Queue",
        "page.now": "Running now",
        "page.none_running": "Nothing is being transcribed right now.",
        "page.gpus": "GPUs",
        "page.cpu_mode": "No GPU in use: transcribing on the CPU.",
        "page.estimates": "VRAM estimates vs measured",
        "page.failures": "Recent failures",
        "page.no_failures": "No failures.",
        "page.elapsed": "elapsed {d}",
        "page.eta": "about {d} left",
        "page.gpu_line": "used {used} / {total} MiB (all programs) · ours {ours} MiB · "
                         "budget {budget} MiB (red mark) · {tasks} task(s)",
        "page.estimate_line": "estimate {estimate} MiB (default {default}) · {measured}",
        "page.updated": "Updated {at} UTC · refreshes every 5 s",
        "page.links": "Health: /health · Metrics: /metrics",
        # why a file was refused when it was recorded (the task's error message)
        "admit.link": "This is a link (shortcut) to a file, not the file itself; DropScribe "
                      "never reads through links. Copy the recording itself into the inbox.",
        "admit.language": "{file} names the language {language!r}, which Whisper does not "
                          "know; use a code such as \"zh\", \"en\" or \"ja\", or leave it "
                          "out to detect the language.",
        "admit.bad_name": "The file name is not valid text (it holds bytes that are not "
                          "UTF-8), so it could not be recorded as it is. It was moved to the "
                          "failed folder as {moved}; rename it and copy it into the inbox again.",
        "admit.unexpected": "The file could not be recorded: {error}",
        "source.changed": "The file was replaced while it was being transcribed; the new "
                          "version stays in the inbox and is transcribed as a new task.",
        # HTTP
        "http.not_found": "Not found",
        "http.error": "Internal error; see the service log",
        "http.method": "Only GET and HEAD are supported",
    },
    "zh-CN": {
        "state.pending": "等待",
        "state.loading": "加载中",
        "state.processing": "处理中",
        "state.completed": "已完成",
        "state.failed": "失败",
        "state.cancelled": "已取消",
        "task.state_log": "任务 {id} {state}：{file}",
        "status.running": "DropScribe：服务正在运行（{mode}，进程 {pid}）",
        "status.not_running": "DropScribe：服务未运行",
        "status.tasks": "任务：{counts}",
        "status.count": "{state} {n}",
        "status.list_sep": "，",
        "status.gpu": "GPU {index} {name}：预算 {budget} MiB，本服务 {ours} MiB，"
                      "已用 {used}/{total} MiB，{tasks} 个任务",
        "status.estimate": "  {model}（{gpu}）：估计 {estimate} MiB（默认 {default}），{measured}",
        "status.measured": "实测 {mean} MiB（{n} 次）",
        "status.not_measured": "尚未实测",
        "status.running_task": "  #{id} {state} {percent}% {model}（{device}）：{file}",
        "status.eta": "（已用 {elapsed}，约剩 {eta}）",
        "status.elapsed": "（已用 {elapsed}）",
        "status.failures": "最近的失败：",
        "status.failure": "  #{id} {file}：{error}",
        "status.http": "状态页面：{url}",
        "mode.cpu": "CPU",
        "mode.gpu": "GPU",
        "mode.simulated-gpu": "模拟 GPU",
        "dur.s": "{s} 秒",
        "dur.ms": "{m} 分 {s} 秒",
        "dur.hm": "{h} 小时 {m} 分",
        "page.title": "DropScribe 状态",
        "page.running": "服务正在运行",
        "page.not_running": "服务未运行",
        "page.degraded": "需要注意：",
        "page.mode": "模式 {mode}，进程 {pid}",
        "page.queue": "队列",
        "page.now": "正在转写",
        "page.none_running": "当前没有正在转写的文件。",
        "page.gpus": "GPU",
        "page.cpu_mode": "未使用 GPU：在 CPU 上转写。",
        "page.estimates": "显存估计与实测",
        "page.failures": "最近的失败",
        "page.no_failures": "没有失败。",
        "page.elapsed": "已用 {d}",
        "page.eta": "约剩 {d}",
        "page.gpu_line": "已用 {used} / {total} MiB（所有程序）· 本服务 {ours} MiB · "
                         "预算 {budget} MiB（红线）· {tasks} 个任务",
        "page.estimate_line": "估计 {estimate} MiB（默认 {default}）· {measured}",
        "page.updated": "更新于 {at} UTC · 每 5 秒刷新",
        "page.links": "健康检查：/health · 指标：/metrics",
        "admit.link": "这是指向文件的链接（快捷方式），不是文件本身；DropScribe 从不通过链接读取。"
                      "请把录音文件本身复制到收件箱。",
        "admit.language": "{file} 指定的语言 {language!r} 不是 Whisper 支持的语言；请使用"
                          "“zh”“en”“ja”等代码，或不填以自动识别。",
        "admit.bad_name": "文件名不是有效的文本（含有非 UTF-8 字节），无法按原名记录。"
                          "文件已移到失败文件夹：{moved}；请重命名后再复制到收件箱。",
        "admit.unexpected": "无法记录此文件：{error}",
        "source.changed": "文件在转写过程中被替换；新版本留在收件箱，将作为新任务转写。",
        "http.not_found": "未找到",
        "http.error": "内部错误，请查看服务日志",
        "http.method": "只支持 GET 和 HEAD",
    },
}


def normalize(lang: str | None) -> str:
    """'zh', 'zh_CN', 'zh-cn.UTF-8' → 'zh-CN'; anything else (or None) → 'en'."""
    if lang and lang.lower().replace("_", "-").startswith("zh"):
        return "zh-CN"
    return DEFAULT


def t(key: str, lang: str | None = None, **kw: object) -> str:
    """The message `key` in `lang` (English if missing), formatted with `kw`."""
    msg = MESSAGES[normalize(lang)].get(key) or MESSAGES[DEFAULT].get(key) or key
    return msg.format(**kw) if kw else msg


def state_name(state: str, lang: str | None = None) -> str:
    """A task state in words ('failed' → '失败'); unknown states are shown as they are."""
    return MESSAGES[normalize(lang)].get(f"state.{state}") or state


def duration(seconds: float | None, lang: str | None = None) -> str:
    """'42 s', '3 min 5 s', '1 h 20 min' (or the Chinese forms); '' for None."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return t("dur.s", lang, s=s)
    if s < 3600:
        return t("dur.ms", lang, m=s // 60, s=s % 60)
    return t("dur.hm", lang, h=s // 3600, m=s % 3600 // 60)
