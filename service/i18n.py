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
        "admit.held": "Another program kept the file open for more than {waited} (a "
        "copy that stalled, a sync client, a player or an antivirus scan), so it never became "
        "readable: {error}. Close that program and copy the file into the inbox again.",
        "reason.held": "The file stayed open in another program.",
        "hint.held": "Wait until the copy or sync has finished, close programs that use the "
        "file, then copy it into the inbox again.",
        "source.changed": "The file was replaced while it was being transcribed; the new "
                          "version stays in the inbox and is transcribed as a new task.",
        # HTTP
        "http.not_found": "Not found",
        "http.error": "Internal error; see the service log",
        "http.method": "Only GET and HEAD are supported",
        # failure reasons by error kind (the web page; details follow in the original words)
        "reason.not_audio": "Not an audio or video file that can be decoded.",
        "reason.bad_sidecar": "The settings file (.json) next to the audio is invalid.",
        "reason.model_missing": "The Whisper model is not available.",
        "reason.too_long": "The recording is longer than the allowed maximum.",
        "reason.out_of_memory": "The GPU ran out of memory.",
        "reason.io_error": "A file could not be read or written.",
        "reason.timeout": "The transcription took too long and was stopped.",
        "reason.worker_crashed": "The worker process stopped unexpectedly.",
        "reason.worker_start": "The worker process could not start (PyTorch or Whisper is not "
        "installed correctly).",
        "reason.interrupted": "The transcription was interrupted (the service stopped).",
        "reason.unsafe_path": "Refused: the file's path would write outside the outbox.",
        "reason.path_too_long": "The transcript's path is longer than the file system allows.",
        "reason.error": "Unexpected error.",
        "reason.gpu_library": "The GPU libraries faster-whisper needs are missing.",
        "reason.engine_stuck": "Whisper stopped making progress, so the task was stopped.",
        "reason.bad_options": "The transcription options are invalid.",
        "reason.link": "The file is a link (shortcut), not the recording itself.",
        "reason.bad_name": "The file name is not valid text.",
        "reason.unreadable": "The file could not be recorded.",
        "engine.cuda_library": "faster-whisper cannot load the NVIDIA cuBLAS/cuDNN libraries "
                               "({error}); install them into the service's Python with: pip "
                               "install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.* (then restart "
                               "the service), or set transcribe.engine: openai-whisper.",
        "reason.with_detail": "{reason} ({detail})",
        "report.title": "DropScribe could not transcribe \"{file}\".",
        "report.what": "What went wrong: {reason}",
        "report.tries": "Gave up after {tries}, last at {when}.",
        "report.one_try": "1 attempt",
        "report.n_tries": "{n} attempts",
        "report.next": "What to do next: the file was moved {where}. Fix the problem and copy it "
        "into the inbox again.",
        "report.moved_to": "to {path}",
        "report.to_failed": "to the failed folder",
        "report.next_kept": "What to do next: the file could not be moved out of the inbox and is "
        "still at {path} (moving it is tried again every minute). Fix the problem, then retry "
        "the task on the web page or with: python app.py retry {id}",
        "report.next_gone": "What to do next: the file was no longer in the inbox when the task "
        "ended (moved or deleted by someone else), so nothing was moved. Fix the problem and copy "
        "it into the inbox again.",
        "report.hint": "Hint: {hint}",
        "hint.not_audio": "Check that the file plays in a media player; copy a working file into "
        "the inbox.",
        "hint.bad_sidecar": "Fix the .json settings file next to the audio, then copy both into "
        "the inbox.",
        "hint.model_missing": "Put the model file where the message says, then copy the audio "
        "into the inbox again.",
        "hint.too_long": "Split the recording into shorter parts, or raise "
        "transcribe.max_audio_seconds.",
        "hint.path_too_long": "Use shorter folder or file names (or, on Windows, turn on long "
        "paths: LongPathsEnabled = 1), then copy the file into the inbox again.",
        "hint.link": "Copy the recording itself into the inbox, not a link or shortcut to it.",
        "hint.bad_name": "Rename the file (in failed/) to a name without unusual bytes and copy it "
        "into the inbox again.",
        "hint.gpu_library": "Install the libraries the message names, restart the service, then "
        "copy the audio into the inbox again.",
        # web uploads and commands (JSON errors of the web page)
        "upload.bad_name": "The name {name!r} is not allowed (no '..', absolute paths, control "
                           "characters, Windows device names like CON, or trailing dots).",
        "upload.too_long_name": "The name {name!r} is too long.",
        "upload.ignored_name": "The name {name!r} is hidden or matches watcher.ignore, so it "
                               "would never be transcribed.",
        "upload.not_media": "{name!r} is not an audio or video file the service picks up.",
        "upload.too_large": "The file is larger than the upload limit of {mb:g} MB "
                            "(http.max_upload_mb).",
        "upload.incomplete": "The upload did not arrive complete; nothing was kept.",
        "upload.no_free_name": "No free name for {name!r} in the inbox.",
        "upload.bad_option": "Invalid choice: {problem}",
        "action.no_task": "There is no task {id}.",
        "action.not_retryable": "Task {id} is {state}; only failed or cancelled files can be "
                                "retried.",
        "action.not_cancellable": "Task {id} is {state}; only waiting or running files can be "
                                  "cancelled.",
        "action.source_gone": "The file {file} is no longer in failed/; copy it into the inbox "
                              "again instead.",
        "action.name_taken": "Task {id} cannot run again yet: another file named {file} is in "
                             "the inbox or being transcribed now; retry once it has finished, "
                             "or copy this file in under another name.",
        "action.no_transcript": "No transcript to show for task {id}.",
        "action.no_audio": "The archived audio of task {id} is not available.",
        "http.host": "Host not allowed: open the page by this computer's name or address, or "
                     "add the name to http.allowed_hosts.",
        "http.login_needed": "Please log in.",
        "http.login_wrong": "Wrong password or token.",
        "http.login_limited": "Too many failed logins; try again in {s} s.",
        "http.csrf": "The page's security token is missing or wrong; reload the page.",
        "health.watcher": "The folder watcher is not running.",
        "health.scheduler": "The dispatcher's scheduler is not running.",
        "health.database": "The database does not answer.",
        "health.gpu": "The GPUs cannot be used.",
        # the web page (service/static/app.js asks /api/i18n for these)
        "ui.title": "DropScribe",
        "ui.logout": "Log out",
        "ui.login_title": "Log in",
        "ui.password": "Password or token",
        "ui.login": "Log in",
        "ui.upload_title": "Add recordings",
        "ui.drop_here": "Drop audio or video files, or a folder, here",
        "ui.choose_files": "Choose files",
        "ui.choose_folder": "Choose a folder",
        "ui.options": "Options for the next uploads",
        "ui.model": "Model",
        "ui.language": "Language",
        "ui.detect": "Detect",
        "ui.chinese_script": "Chinese script",
        "ui.script_default": "As spoken (default)",
        "ui.script_simplified": "Simplified",
        "ui.script_traditional": "Traditional",
        "ui.priority": "Priority (higher starts first)",
        "ui.glossary": "Glossary: names and terms, one per line or comma-separated",
        "ui.model_default": "Default ({model})",
        "ui.engine": "Engine",
        "ui.engine_default": "Default ({engine})",
        "ui.engine_faster": "faster-whisper (faster, less memory)",
        "ui.upload_waiting": "waiting to upload",
        "ui.uploading": "uploading…",
        "ui.uploaded": "uploaded as {name}",
        "ui.upload_failed": "upload failed (connection lost)",
        "ui.queue_title": "Queue",
        "ui.running": "Running now",
        "ui.waiting": "Waiting",
        "ui.summary": "{n} waiting, about {t} left",
        "ui.summary_unknown": "{n} waiting (time left is known onc"
                              "e a file of this model has finished)",
        "ui.queue_empty": "Nothing waiting or running.",
        "ui.start_next": "starts next",
        "ui.start_at": "expected start {at} (in {d})",
        "ui.start_unknown": "start time not known yet",
        "ui.none_waiting": "No files waiting.",
        "ui.cancel": "Cancel",
        "ui.retry": "Retry",
        "ui.open": "Open transcript",
        "ui.healthy": "Service running",
        "ui.unhealthy": "Service needs attention",
        "ui.history_title": "Finished",
        "ui.search": "Search by file name",
        "ui.all": "All",
        "ui.prev": "Previous",
        "ui.next": "Next",
        "ui.page": "page {page} of {pages} ({total} files)",
        "ui.no_history": "No finished files.",
        "ui.details": "Details",
        "ui.close": "Close",
        "ui.download": "Download",
        "ui.click_time": "Click a time to play the recording from there.",
        "ui.updated": "Updated {at} (your local time)",
        "ui.simple_page": "Simple status page",
        # speaker labels and minutes
        "speaker.label": "Speaker {n}",
        "speaker.unavailable": "Speaker labels were skipped: {error}. Install the speaker "
                               "encoder with: python -m pip install --no-deps resemblyzer==0.1.4",
        "llm.http_error": "the LLM server {url} answered HTTP {code}: {detail}",
        "llm.timeout": "the LLM server {url} did not answer within {seconds} s "
                       "(summary.timeout_seconds)",
        "llm.unreachable": "could not reach the LLM server {url} ({error}); is it running? "
                           "(summary.url)",
        "llm.malformed": "the LLM server {url} sent a reply that is not a chat completion: "
                         "{problem}",
        "minutes.title": "Minutes: {file}",
        "minutes.empty": "_Nothing was said in this recording, so there are no minutes._",
        "minutes.local_error": "the minutes could not be made: {error}",
        "minutes.no_transcript": "the transcript to summarise is not there ({files} in "
                                 "{folder}); minutes need the txt or json output",
        "minutes.gave_up": "minutes given up after {attempts} attempt(s): {error}",
        "minutes.report_head": "DropScribe transcribed \"{file}\", but could not write its "
                               "minutes.",
        "minutes.report_reason": "What went wrong: {error}",
        "minutes.report_tries": "Gave up after {attempts} attempt(s). The transcript is "
                                "complete and unaffected.",
        "minutes.report_next": "What to do next: check that the LLM server of settings.yaml "
                               "(summary.url, summary.model) runs, then run "
                               "`python app.py minutes {id}` to try again.",
        "minutes.retried": "Minutes of task {id} will be made again.",
        "minutes.not_found": "No completed task {id}.",
        "status.minutes": "minutes: {counts}",
        "page.minutes": "Meeting minutes",
        "status.minutes_failure": "  #{id} {file}: minutes failed: {error}",
        "minutes.pending": "waiting",
        "minutes.running": "being written",
        "minutes.done": "written",
        "minutes.failed": "failed",
        "minutes.prompt": (
            "You write meeting minutes from a transcript. Answer in {language}, in Markdown, "
            "with exactly three sections: '## Summary' (a few sentences on what was discussed), "
            "'## Decisions' (a bullet list) and '## Action items' (a bullet list; each item "
            "names its owner and due date when the transcript says them, e.g. "
            "'- Speaker 2: send the plan by Friday'; 'owner not named' otherwise). Labels such "
            "as [Speaker 1] say who is talking. Use only what the transcript says; never "
            "invent names, numbers or dates."),
        "minutes.prompt_part": (
            "This is part {i} of {n} of one meeting's transcript. Write short notes on this "
            "part in {language}: the points discussed, the decisions, and the action items "
            "with their owners and dates. Keep names, numbers and dates exactly as said."),
        "minutes.prompt_merge": (
            "The text below is notes on consecutive parts of one meeting, in order. Merge them "
            "into one set: keep every decision and action item, remove repetition."),
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
        "admit.held": "另一个程序占用该文件超过 {waited}（复制中断、同步客户端、播放器或杀毒"
        "软件扫描），文件一直无法读取：{error}。请关闭那个程序，再把文件复制到收件箱。",
        "reason.held": "文件一直被另一个程序占用。",
        "hint.held": "等复制或同步完成，关闭正在使用该文件的程序，再把它复制到收件箱。",
        "source.changed": "文件在转写过程中被替换；新版本留在收件箱，将作为新任务转写。",
        "http.not_found": "未找到",
        "http.error": "内部错误，请查看服务日志",
        "http.method": "只支持 GET 和 HEAD",
        "reason.not_audio": "不是可解码的音频或视频文件。",
        "reason.bad_sidecar": "音频旁的设置文件（.json）无效。",
        "reason.model_missing": "Whisper 模型不可用。",
        "reason.too_long": "录音超过允许的最长时长。",
        "reason.out_of_memory": "GPU 显存不足。",
        "reason.io_error": "无法读取或写入文件。",
        "reason.timeout": "转写用时过长，已停止。",
        "reason.worker_crashed": "转写进程意外退出。",
        "reason.worker_start": "转写进程无法启动（PyTorch 或 Whisper 安装有问题）。",
        "reason.interrupted": "转写被中断（服务停止）。",
        "reason.unsafe_path": "已拒绝：文件路径会写到输出文件夹之外。",
        "reason.path_too_long": "转写结果的路径超过了文件系统允许的长度。",
        "reason.error": "意外错误。",
        "reason.gpu_library": "缺少 faster-whisper 需要的 GPU 库。",
        "reason.engine_stuck": "Whisper 停滞不前，任务已停止。",
        "reason.bad_options": "转写选项无效。",
        "reason.link": "这是链接（快捷方式），不是录音文件本身。",
        "reason.bad_name": "文件名不是有效的文本。",
        "reason.unreadable": "无法记录此文件。",
        "engine.cuda_library": "faster-whisper 无法加载 NVIDIA cuBLAS/cuDNN 库（{error}）；请在服务"
                               "使用的 Python 中安装：pip install nvidia-cublas-cu12 "
                               "nvidia-cudnn-cu12==9.*（然后重启服务），或设置 "
                               "transcribe.engine: openai-whisper。",
        "reason.with_detail": "{reason}（{detail}）",
        "report.title": "DropScribe 无法转写“{file}”。",
        "report.what": "出了什么问题：{reason}",
        "report.tries": "共尝试 {tries}，最后一次在 {when}。",
        "report.one_try": "1 次",
        "report.n_tries": "{n} 次",
        "report.next": "下一步：文件已移到{where}。解决问题后，把它重新复制到收件箱。",
        "report.moved_to": " {path}",
        "report.to_failed": "失败文件夹（failed）",
        "report.next_kept": "下一步：文件无法移出收件箱，仍在 {path}（每分钟会再试一次移动）。"
        "解决问题后，在网页上重试该任务，或运行：python app.py retry {id}",
        "report.next_gone": "下一步：任务结束时文件已不在收件箱中（被别人移走或删除），"
        "因此没有移动任何文件。解决问题后，把它重新复制到收件箱。",
        "report.hint": "提示：{hint}",
        "hint.not_audio": "请确认该文件能在播放器中播放；把能正常播放的文件复制到收件箱。",
        "hint.bad_sidecar": "修正音频旁边的 .json 设置文件，然后把两者一起复制到收件箱。",
        "hint.model_missing": "把模型文件放到错误信息所说的位置，然后把音频重新复制到收件箱。",
        "hint.too_long": "把录音拆分成较短的几段，或调大 transcribe.max_audio_seconds。",
        "hint.path_too_long": "使用更短的文件夹名或文件名（在 Windows 上也可以开启长路径："
        "LongPathsEnabled = 1），然后把文件重新复制到收件箱。",
        "hint.link": "请把录音文件本身复制到收件箱，而不是它的链接或快捷方式。",
        "hint.bad_name": "把文件（在 failed/ 中）改成不含异常字节的名字，再复制到收件箱。",
        "hint.gpu_library": "安装错误信息中提到的库并重启服务，然后把音频重新复制到收件箱。",
        "upload.bad_name": "文件名 {name!r} 不允许（不能含“..”、绝对路径、控制字符、CON 等 Windows "
                           "设备名或结尾的点）。",
        "upload.too_long_name": "文件名 {name!r} 太长。",
        "upload.ignored_name": "文件名 {name!r} 是隐藏文件或符合 watcher.ignore，永远不会被转写。",
        "upload.not_media": "{name!r} 不是本服务处理的音频或视频文件。",
        "upload.too_large": "文件超过上传上限 {mb:g} MB（http.max_upload_mb）。",
        "upload.incomplete": "上传未完整到达，未保留任何内容。",
        "upload.no_free_name": "收件箱中没有可用于 {name!r} 的空闲文件名。",
        "upload.bad_option": "选项无效：{problem}",
        "action.no_task": "没有任务 {id}。",
        "action.not_retryable": "任务 {id} 的状态是{state}；只有失败或已取消的文件可以重试。",
        "action.not_cancellable": "任务 {id} 的状态是{state}；只有等待或正在转写的文件可以取消。",
        "action.source_gone": "文件 {file} 已不在 failed/ 中；请重新复制到收件箱。",
        "action.name_taken": "任务 {id} 暂时不能重试：收件箱中另有一个名为 {file} 的文件，或它正在"
                             "转写；请等它完成后再重试，或把这个文件改名后复制进收件箱。",
        "action.no_transcript": "任务 {id} 没有可显示的转写稿。",
        "action.no_audio": "任务 {id} 的归档音频不可用。",
        "http.host": "不允许的主机名：请用本机的名称或地址打开页面，"
                     "或把该名称加入 http.allowed_hosts。",
        "http.login_needed": "请先登录。",
        "http.login_wrong": "密码或令牌错误。",
        "http.login_limited": "登录失败次数过多，请 {s} 秒后再试。",
        "http.csrf": "页面的安全令牌缺失或错误，请刷新页面。",
        "health.watcher": "文件夹监视器未运行。",
        "health.scheduler": "调度器未运行。",
        "health.database": "数据库没有响应。",
        "health.gpu": "GPU 无法使用。",
        "ui.title": "DropScribe 转写",
        "ui.logout": "退出登录",
        "ui.login_title": "登录",
        "ui.password": "密码或令牌",
        "ui.login": "登录",
        "ui.upload_title": "添加录音",
        "ui.drop_here": "把音频、视频文件或整个文件夹拖到这里",
        "ui.choose_files": "选择文件",
        "ui.choose_folder": "选择文件夹",
        "ui.options": "接下来上传的文件的选项",
        "ui.model": "模型",
        "ui.language": "语言",
        "ui.detect": "自动识别",
        "ui.chinese_script": "中文字形",
        "ui.script_default": "按原样（默认）",
        "ui.script_simplified": "简体",
        "ui.script_traditional": "繁体",
        "ui.priority": "优先级（越高越先开始）",
        "ui.glossary": "术语表：人名和专有名词，每行一个或用逗号分隔",
        "ui.model_default": "默认（{model}）",
        "ui.engine": "引擎",
        "ui.engine_default": "默认（{engine}）",
        "ui.engine_faster": "faster-whisper（更快，占用内存更少）",
        "ui.upload_waiting": "等待上传",
        "ui.uploading": "正在上传…",
        "ui.uploaded": "已上传为 {name}",
        "ui.upload_failed": "上传失败（连接中断）",
        "ui.queue_title": "队列",
        "ui.running": "正在转写",
        "ui.waiting": "等待中",
        "ui.summary": "{n} 个等待，约剩 {t}",
        "ui.summary_unknown": "{n} 个等待（该模型完成一个文件后即可估计剩余时间）",
        "ui.queue_empty": "没有等待或正在转写的文件。",
        "ui.start_next": "下一个开始",
        "ui.start_at": "预计 {at} 开始（{d} 后）",
        "ui.start_unknown": "开始时间尚不可知",
        "ui.none_waiting": "没有等待的文件。",
        "ui.cancel": "取消",
        "ui.retry": "重试",
        "ui.open": "打开转写稿",
        "ui.healthy": "服务正在运行",
        "ui.unhealthy": "服务需要注意",
        "ui.history_title": "已结束",
        "ui.search": "按文件名搜索",
        "ui.all": "全部",
        "ui.prev": "上一页",
        "ui.next": "下一页",
        "ui.page": "第 {page}/{pages} 页（共 {total} 个文件）",
        "ui.no_history": "没有已结束的文件。",
        "ui.details": "详情",
        "ui.close": "关闭",
        "ui.download": "下载",
        "ui.click_time": "点击时间即可从该处播放录音。",
        "ui.updated": "更新于 {at}（本地时间）",
        "ui.simple_page": "简易状态页面",
        # speaker labels and minutes
        "speaker.label": "说话人{n}",
        "speaker.unavailable": "未标注说话人：{error}。请安装说话人编码器："
                               "python -m pip install --no-deps resemblyzer==0.1.4",
        "llm.http_error": "大模型服务 {url} 返回 HTTP {code}：{detail}",
        "llm.timeout": "大模型服务 {url} 在 {seconds} 秒内没有回答（summary.timeout_seconds）",
        "llm.unreachable": "无法连接大模型服务 {url}（{error}）；服务是否在运行？（summary.url）",
        "llm.malformed": "大模型服务 {url} 的回复不是有效的对话补全结果：{problem}",
        "minutes.title": "会议纪要：{file}",
        "minutes.empty": "_这段录音里没有人说话，因此没有会议纪要。_",
        "minutes.local_error": "无法生成会议纪要：{error}",
        "minutes.no_transcript": "找不到转写稿（{folder} 中的 {files}）；会议纪要需要 txt 或 "
                                 "json 输出",
        "minutes.gave_up": "尝试 {attempts} 次后放弃生成会议纪要：{error}",
        "minutes.report_head": "DropScribe 已转写“{file}”，但未能生成会议纪要。",
        "minutes.report_reason": "出了什么问题：{error}",
        "minutes.report_tries": "已尝试 {attempts} 次后放弃。转写稿完整，不受影响。",
        "minutes.report_next": "下一步：检查 settings.yaml 中的大模型服务（summary.url、"
                               "summary.model）是否在运行，然后运行 "
                               "`python app.py minutes {id}` 重试。",
        "minutes.retried": "任务 {id} 的会议纪要将重新生成。",
        "minutes.not_found": "没有已完成的任务 {id}。",
        "status.minutes": "会议纪要：{counts}",
        "page.minutes": "会议纪要",
        "status.minutes_failure": "  #{id} {file}：会议纪要失败：{error}",
        "minutes.pending": "等待中",
        "minutes.running": "生成中",
        "minutes.done": "已生成",
        "minutes.failed": "失败",
        "minutes.prompt": (
            "你是会议记录员，根据会议转写稿撰写会议纪要。用{language}、Markdown 格式回答，"
            "恰好包含三节：“## 摘要”（用几句话概括讨论内容）、“## 决定”（列表）和"
            "“## 待办事项”（列表；转写稿提到负责人和期限时写明，例如"
            "“- 说话人2：周五前发送计划”，否则写“未指定负责人”）。[说话人1] 等标记表示"
            "谁在说话。只依据转写稿的内容，不要编造人名、数字或日期。"),
        "minutes.prompt_part": (
            "这是一次会议转写稿的第 {i} 部分（共 {n} 部分）。请用{language}为这一部分写简短"
            "笔记：讨论要点、做出的决定、待办事项及其负责人和期限。人名、数字和日期保持原样。"),
        "minutes.prompt_merge": (
            "下面是同一次会议各个连续部分的笔记，按顺序排列。请把它们合并为一份："
            "保留每个决定和待办事项，去掉重复内容。"),
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


def reason(kind: str | None, message: str | None, lang: str | None = None) -> str:
    """A failure as the user reads it (`.error.txt`, `status`, the status page): in English the
    detailed message; in Chinese the reason for its kind, then the detail said in Chinese too
    (service/reasons.py: file names, limits and paths unchanged; only an error nobody foresaw
    keeps its own words, labelled "详细信息：")."""
    from . import reasons  # it reads this catalog

    return reasons.reason(kind, message, lang)


def catalog(lang: str | None) -> dict[str, str]:
    """Every message in `lang` (English where a translation is missing), for the web page."""
    return {**MESSAGES[DEFAULT], **MESSAGES[normalize(lang)]}


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


# --- failure details (service/reasons.py) ---------------------------------------------------
# English: the exact words the worker, dispatcher, watcher, audio, engine and fsops modules write
# into a task row (reasons.py reads each as a pattern: {field} matches any text); Chinese: the
# same said in Chinese. A detail that repeats its reason (reason.<kind>) keeps only what it adds.
MESSAGES["en"].update({
    "detail.raw": "Details: {text}",
    "detail.not_moved": "{message} (the source file could not be moved: {error})",
    "detail.unexpected": "Unexpected error: {error}",
    "detail.io": "Could not read or write a file: {error}",
    "detail.refused": "Refused: {error}",
    "detail.cannot_write": "Cannot write the transcripts: {error}",
    "detail.bad_options": "Invalid transcription options: {error}",
    "detail.oom": "The GPU ran out of memory; the task will wait and retry.",
    "detail.crashed": "The worker process stopped unexpectedly (exit code {code}).",
    "detail.timeout": "The transcription took longer than {limit} seconds and was stopped "
                      "(scheduler.timeout_factor / timeout_min_seconds in settings.yaml).",
    "detail.interrupted": "The transcription was interrupted (the service or its worker "
                          "stopped unexpectedly).",
    "detail.worker_start": "The worker process could not start: {error}. PyTorch or Whisper "
    "is not installed correctly in this Python environment (on Windows a missing DLL such as "
    "c10.dll usually means a broken torch install or a missing Visual C++ runtime); reinstall "
    "it, then restart the service.",
    "detail.stuck": "Whisper stopped advancing through the audio (it decoded the same window "
                    "50 times); the task was stopped instead of running forever.",
    "detail.cuda_missing": "Library {library} is not found or cannot be loaded",
    "detail.cuda_locate": "Could not locate {library}. Please make sure it is in your library "
                          "path!",
    "detail.cuda_any": "Unable to load any of {library}",
    "detail.too_long": "The audio is {hours} hours long; the limit is {limit} hours "
                       "(transcribe.max_audio_seconds in settings.yaml).",
    # audio.py (MSG_*)
    "detail.empty": "The file is empty (0 bytes). If it was still being copied, copy it again.",
    "detail.directory": "This is a folder, not an audio file.",
    "detail.not_file": "This is not a regular file (it may be a device or a pipe).",
    "detail.missing": "The file is no longer there (it was moved or deleted before it could be "
                      "read).",
    "detail.permission": "The file cannot be read: permission denied. Check the file's "
    "permissions; on Windows, close any program that still has it open.",
    "detail.not_media": "This is not an audio or video file (DropScribe cannot read its "
                        "contents).",
    "detail.no_audio_video": "This file has no audio stream (it looks like a video-only file).",
    "detail.no_audio": "This file has no audio stream.",
    "detail.no_audio_data": "The file contains no audio data (0 seconds).",
    "detail.damaged_like": "The file is damaged or truncated: it starts like {format}, but "
                           "cannot be read.",
    "detail.damaged": "The file is damaged or truncated: {error}",
    "detail.unreadable": "The file could not be read: {error}.",
    # models (engine.py, fasterwhisper.py)
    "detail.model_not_in": "Model '{name}' is not in {folder}{why}. Put {name}.pt there, or "
    "import a faster-whisper/CTranslate2 model with: python app.py models import <folder> "
    "--name {name}",
    "detail.not_a_model": "'{name}' is not a model name: use a plain name such as 'small' or "
                          "'large-v3', whose file NAME.pt lives in {folder}.",
    "detail.model_file_bad": "Model file {path} could not be loaded ({error}). It may be "
    "incomplete or not an openai-whisper checkpoint; replace it, or import the model again "
    "with: python app.py models import <folder> --name {name}",
    "detail.fw_not_a_model": "'{name}' is not a model name: use a plain name such as 'small', "
                             "whose faster-whisper folder lives in {folder}.",
    "detail.fw_lacks": "The faster-whisper model folder {folder} lacks {files}; copy the whole "
    "CTranslate2 folder (model.bin, config.json, tokenizer.json, vocabulary) there.",
    "detail.fw_bad": "The faster-whisper model in {folder} could not be loaded ({error}). It "
    "may be incomplete or not a CTranslate2 Whisper model; copy the folder again.",
    "detail.fw_not_in": "Model '{name}' is not in {folder}{why}. For transcribe.engine "
    "faster-whisper, put the CTranslate2 folder there as {path} (model.bin or model.bin.part1, "
    "part2 …, config.json, tokenizer.json, vocabulary), or use openai-whisper with {name}.pt.",
    "detail.fw_download": "Model '{name}' is not in {folder} (downloading it failed: {error}). "
                          "Put the CTranslate2 folder there as {path}.",
    "detail.download_off": "downloading is switched off",
    "detail.download_failed": "downloading it failed: {error}",
    # paths (fsops.py, outputs.py)
    "detail.outside_link": "{path} resolves outside {root} (a folder was replaced by a link)",
    "detail.outside": "{path} resolves outside {root}",
    "detail.absolute": "absolute path or drive not allowed: {path}",
    "detail.dotdot": "'..' or an unsafe component is not allowed: {path}",
    "detail.unsafe_name": "unsafe output name: {name}",
    "detail.windows_path": "the path is {n} characters long and Windows allows {limit} (shorten "
    "the folder or file name, or turn on long paths: registry "
    "HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem, LongPathsEnabled = 1, then "
    "restart): {path}",
    "detail.name_bytes": "the name {name} is {n} bytes long and the file system allows {limit} "
                         "(shorten the folder or file name): {path}",
    "detail.path_bytes": "the path is {n} bytes long and the file system allows {limit} "
    "(shorten the folder or file names, or use an outbox closer to the root): {path}",
    # settings files beside the audio (sidecar.py)
    "detail.sidecar_link": "the settings file {file} is not a plain file ({error}); copy the "
                           "file itself, not a link or a pipe",
    "detail.sidecar_large": "the settings file {file} is larger than 64 KB",
    "detail.engine_choice": "engine: {a} or {b}",
    "detail.engine_only": "engine: the model {model} is installed only for {others}, not {engine}",
    "detail.engine_missing": "engine: the model {model} is not installed for {engine}",
    "detail.sidecar_utf8": "cannot read {file}: it is not UTF-8 text (byte {n}); save it as "
                           "UTF-8",
    "detail.sidecar_read": "cannot read {file}: {error}",
    "detail.sidecar_json": "{file} is not valid JSON (line {line}, column {column}: {error})",
    "detail.sidecar_deep": "{file} is nested too deeply to be a settings file",
    "detail.sidecar_object": "{file} must hold a JSON object like {{\"model\": \"small\"}}",
    "detail.sidecar_model": "{file} names the model {model}, which is not known; use one of: "
                            "{models}",
    "detail.sidecar_invalid": "{file} is invalid: {error}",
    # what an operating system error is about (reasons.os_error), and FFmpeg's and JSON's words
    "oserr.not_found": "no such file or folder",
    "oserr.permission": "permission denied",
    "oserr.in_use": "the file is in use by another program",
    "oserr.disk_full": "the disk is full",
    "oserr.too_big": "the file is larger than the file system allows",
    "oserr.name_too_long": "the file name or path is too long",
    "oserr.read_only": "the file system is read-only",
    "oserr.io": "a read or write error (a failing disk or network share)",
    "oserr.exists": "the file already exists",
    "oserr.is_dir": "it is a folder",
    "oserr.not_dir": "a part of the path is not a folder",
    "oserr.link": "it is a link, not a file",
    "oserr.not_regular": "it is not a regular file",
    "oserr.replaced_by_link": "the file was replaced by a link",
    "oserr.folder_link": "its folder was replaced by a link",
    "oserr.incomplete": "the copy is incomplete",
    "oserr.no_memory": "out of memory",
    "oserr.stale": "the file on the network share is no longer valid",
    "oserr.with_path": "{what}: {path}",
    "ffmpeg.invalid_data": "the data is not valid audio or video",
    "ffmpeg.eof": "the file ends too early",
    "ffmpeg.decoder": "no decoder for this format",
    "ffmpeg.demuxer": "the container format is not supported",
    "ffmpeg.invalid_argument": "the file has invalid settings",
    "ffmpeg.not_permitted": "the operation is not possible on this file",
    "json.value": "a value is missing",
    "json.name": "a key must be in double quotes",
    "json.comma": "a comma is missing",
    "json.colon": "a colon is missing",
    "json.extra": "there is more text after the JSON object",
    "json.string": "a text value is not closed",
    "format.audio": "{name} audio",
    "format.video": "{name} video",
    "format.file": "a file of type {name}",
})
MESSAGES["zh-CN"].update({
    "detail.raw": "详细信息：{text}",
    "detail.not_moved": "{message}（源文件无法移动：{error}）",
    "detail.unexpected": "{error}",
    "detail.io": "{error}",
    "detail.refused": "{error}",
    "detail.cannot_write": "{error}",
    "detail.bad_options": "转写选项无效：{error}",
    "detail.oom": "任务将等待显存空出后重试。",
    "detail.crashed": "退出码 {code}",
    "detail.timeout": "用时超过 {limit} 秒；可在 settings.yaml 中调整 scheduler.timeout_factor "
                      "和 timeout_min_seconds",
    "detail.interrupted": "服务或其转写进程意外停止",
    "detail.worker_start": "{error}。此 Python 环境中的 PyTorch 或 Whisper 安装有问题（在 "
    "Windows 上，缺少 c10.dll 之类的 DLL 通常说明 torch 安装损坏或缺少 Visual C++ 运行库）；"
    "请重新安装，然后重启服务。",
    "detail.stuck": "Whisper 在音频中不再前进（同一段解码了 50 次）；任务已停止，以免一直运行。",
    "detail.cuda_missing": "找不到或无法加载库 {library}",
    "detail.cuda_locate": "找不到库 {library}，请确认它在库的搜索路径中",
    "detail.cuda_any": "以下的库一个也无法加载：{library}",
    "detail.too_long": "录音长 {hours} 小时，上限是 {limit} 小时（settings.yaml 中的 "
                       "transcribe.max_audio_seconds）。",
    "detail.empty": "文件是空的（0 字节）。如果它当时还在复制，请重新复制。",
    "detail.directory": "这是文件夹，不是音频文件。",
    "detail.not_file": "这不是普通文件（可能是设备或管道）。",
    "detail.missing": "文件已不在原处（在读取之前被移动或删除了）。",
    "detail.permission": "无法读取文件：没有权限。请检查文件的权限；在 Windows 上，请关闭仍打开"
                         "该文件的程序。",
    "detail.not_media": "这不是音频或视频文件（DropScribe 无法读取其内容）。",
    "detail.no_audio_video": "此文件没有音轨（看起来是只有画面的视频）。",
    "detail.no_audio": "此文件没有音轨。",
    "detail.no_audio_data": "文件中没有音频数据（0 秒）。",
    "detail.damaged_like": "文件已损坏或不完整：开头看起来是{format}，但无法读取。",
    "detail.damaged": "文件已损坏或不完整：{error}",
    "detail.unreadable": "无法读取文件：{error}。",
    "detail.model_not_in": "模型“{name}”不在 {folder} 中{why}。请把 {name}.pt 放到那里，或用"
    "命令 `python app.py models import <folder> --name {name}` 导入 faster-whisper/CTranslate2 "
    "模型。",
    "detail.not_a_model": "“{name}”不是模型名：请使用“small”或“large-v3”这样的简单名称，"
                          "其文件 NAME.pt 放在 {folder} 中。",
    "detail.model_file_bad": "无法加载模型文件 {path}（{error}）。它可能不完整，或不是 "
    "openai-whisper 的模型文件；请替换它，或用命令 "
    "`python app.py models import <folder> --name {name}` 重新导入模型。",
    "detail.fw_not_a_model": "“{name}”不是模型名：请使用“small”这样的简单名称，其 "
                             "faster-whisper 文件夹放在 {folder} 中。",
    "detail.fw_lacks": "faster-whisper 模型文件夹 {folder} 缺少 {files}；请把完整的 CTranslate2 "
    "文件夹（model.bin、config.json、tokenizer.json、vocabulary）复制到那里。",
    "detail.fw_bad": "无法加载 {folder} 中的 faster-whisper 模型（{error}）。它可能不完整，或"
    "不是 CTranslate2 格式的 Whisper 模型；请重新复制该文件夹。",
    "detail.fw_not_in": "模型“{name}”不在 {folder} 中{why}。使用 transcribe.engine "
    "faster-whisper 时，请把 CTranslate2 文件夹放到 {path}（model.bin 或 model.bin.part1、"
    "part2 …、config.json、tokenizer.json、vocabulary），或改用 openai-whisper 和 {name}.pt。",
    "detail.fw_download": "模型“{name}”不在 {folder} 中（下载失败：{error}）。请把 CTranslate2 "
                          "文件夹放到 {path}。",
    "detail.download_off": "已关闭下载",
    "detail.download_failed": "下载失败：{error}",
    "detail.outside_link": "{path} 指向 {root} 之外（某个文件夹被换成了链接）",
    "detail.outside": "{path} 指向 {root} 之外",
    "detail.absolute": "不允许绝对路径或盘符：{path}",
    "detail.dotdot": "不允许“..”或不安全的路径部分：{path}",
    "detail.unsafe_name": "不安全的输出文件名：{name}",
    "detail.windows_path": "路径长 {n} 个字符，Windows 最多允许 {limit} 个（请缩短文件夹名或"
    "文件名，或开启长路径：注册表 HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem 中设 "
    "LongPathsEnabled = 1，然后重启）：{path}",
    "detail.name_bytes": "名称 {name} 长 {n} 字节，文件系统最多允许 {limit} 字节（请缩短文件夹名或"
                         "文件名）：{path}",
    "detail.path_bytes": "路径长 {n} 字节，文件系统最多允许 {limit} 字节（请缩短文件夹名或文件名，"
                         "或使用离根目录更近的输出文件夹）：{path}",
    "detail.sidecar_link": "设置文件 {file} 不是普通文件（{error}）；请复制文件本身，而不是链接或"
                           "管道",
    "detail.sidecar_large": "设置文件 {file} 超过 64 KB",
    "detail.engine_choice": "引擎只能是 {a} 或 {b}",
    "detail.engine_only": "引擎：模型 {model} 在本机只有 {others} 可用的版本，没有 {engine} 的",
    "detail.engine_missing": "引擎：本机没有为 {engine} 安装模型 {model}",
    "detail.sidecar_utf8": "无法读取 {file}：它不是 UTF-8 文本（第 {n} 字节）；请另存为 UTF-8",
    "detail.sidecar_read": "无法读取 {file}：{error}",
    "detail.sidecar_json": "{file} 不是有效的 JSON（第 {line} 行第 {column} 列：{error}）",
    "detail.sidecar_deep": "{file} 嵌套太深，不像设置文件",
    "detail.sidecar_object": "{file} 必须是一个 JSON 对象，例如 {{\"model\": \"small\"}}",
    "detail.sidecar_model": "{file} 指定的模型 {model} 不存在；可用的模型：{models}",
    "detail.sidecar_invalid": "{file} 无效：{error}",
    "oserr.not_found": "找不到文件或文件夹",
    "oserr.permission": "没有权限，拒绝访问",
    "oserr.in_use": "文件正被另一个程序使用",
    "oserr.disk_full": "磁盘已满",
    "oserr.too_big": "文件超过了文件系统允许的大小",
    "oserr.name_too_long": "文件名或路径太长",
    "oserr.read_only": "文件系统是只读的",
    "oserr.io": "读写出错（磁盘或网络共享故障）",
    "oserr.exists": "文件已存在",
    "oserr.is_dir": "这是一个文件夹",
    "oserr.not_dir": "路径中的某一部分不是文件夹",
    "oserr.link": "这是链接，不是文件本身",
    "oserr.not_regular": "这不是普通文件",
    "oserr.replaced_by_link": "文件被换成了链接",
    "oserr.folder_link": "它所在的文件夹被换成了链接",
    "oserr.incomplete": "复制不完整",
    "oserr.no_memory": "内存不足",
    "oserr.stale": "网络共享上的文件已失效",
    "oserr.with_path": "{what}：{path}",
    "ffmpeg.invalid_data": "数据不是有效的音频或视频",
    "ffmpeg.eof": "文件提前结束",
    "ffmpeg.decoder": "没有这种格式的解码器",
    "ffmpeg.demuxer": "不支持这种容器格式",
    "ffmpeg.invalid_argument": "文件的参数无效",
    "ffmpeg.not_permitted": "无法对此文件执行该操作",
    "json.value": "缺少值",
    "json.name": "键名必须用双引号括起来",
    "json.comma": "缺少逗号",
    "json.colon": "缺少冒号",
    "json.extra": "JSON 对象后面还有多余的内容",
    "json.string": "文本值没有结束",
    "format.audio": "{name} 音频",
    "format.video": "{name} 视频",
    "format.file": "{name} 文件",
})
