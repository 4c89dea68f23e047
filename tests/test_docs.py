"""The README stays true: its test command is what CI runs, its module table matches service/,
its SQL queries run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from service import db
from service.tasks import NewTask, TaskQueue
from tests.conftest import BOTH_BACKENDS, write_settings
from tests.svc import app

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    run_cmd, test_cmd = _readme_commands()
    assert run_cmd.endswith("python app.py")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci.splitlines()[ci.splitlines().index(
        "# --- README.md test command (keep identical; tests/test_docs.py checks it) ---") + 1]


def test_how_it_works_lists_every_module() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`service/(\w+)\.py`", text))
    actual = {p.stem for p in (REPO / "service").glob("*.py") if p.stem != "__init__"}
    assert listed == actual


def test_chinese_readme_sits_beside_the_english_one() -> None:
    zh = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "收件箱" in zh or "inbox" in zh
    for cmd in _readme_commands():
        assert cmd in zh


# What the README says to write on PostgreSQL instead
POSTGRES_SPELLING = {"date('now')": "current_date", "date(finished_at)": "finished_at::date",
                     "group_concat(source)": "string_agg(source, ', ')"}


@BOTH_BACKENDS
def test_readme_sql_queries_run(tmp_path: Path, db_url: str) -> None:
    """Every `python app.py sql "…"` in the README works on a real history: as printed on
    SQLite, with the README's stated replacements on PostgreSQL."""
    path = write_settings(tmp_path / "cfg", {"database": {"url": db_url}})
    q = TaskQueue(db.make_engine(db_url))
    digest = "ab" * 32
    for i, name in enumerate(["talk.mp3", "副本/talk.mp3"]):
        tid = q.enqueue(NewTask(source=name, size=1, mtime_ns=1, model="tiny.en",
                                sha256=digest)).id
        q.claim(tid, "h:1", 60)
        q.start_processing(tid, "h:1", 0.5)
        if i == 0:
            q.complete(tid, "h:1", transcribe_seconds=2.0, audio_seconds=10.0)
        else:
            q.fail(tid, "h:1", "not_audio", "Not audio.", retryable=False, backoff_seconds=0)
    q.engine.dispose()
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Task history in SQL", 1)[1].split("\n## ", 1)[0]
    queries = [shlex.split(line)[3] for line in section.splitlines()
               if line.startswith('python app.py sql "')]
    assert len(queries) >= 6
    if db_url.startswith("postgresql"):
        assert all(f"`{old}`" in section and f"`{new}`" in section
                   for old, new in POSTGRES_SPELLING.items())
        assert "`round((…)::numeric, 2)`" in section
        for old, new in POSTGRES_SPELLING.items():
            queries = [query.replace(old, new) for query in queries]
        queries = [re.sub(r"round\((.+?), (\d)\)", r"round((\1)::numeric, \2)", query)
                   for query in queries]
    outputs = []
    for query in queries:
        out = app(path, "sql", query)
        assert out.returncode == 0, (query, out.stderr)
        outputs.append(out.stdout)
    assert any(digest in o and "副本/talk.mp3" in o for o in outputs)  # the duplicates query
    assert any("Not audio." in o for o in outputs)  # failures today


def test_design_page_names_every_module() -> None:
    """docs/design.md is the design the code follows: each module of service/ is in it."""
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(\w+)\.py`", text))
    actual = {p.stem for p in (REPO / "service").glob("*.py") if p.stem != "__init__"}
    assert actual <= named, sorted(actual - named)


# README.md's sections and their names in README.zh-CN.md, in order
SECTIONS = {
    "Two commands": "两条命令", "Where files go": "文件去向", "Chinese recordings": "中文录音",
    "Meetings: who said what, and minutes": "会议：谁说了什么，以及会议纪要",
    "Settings": "设置", "Long recordings and memory": "长录音与内存",
    "Models, also offline": "模型（也可离线使用）",
    "Two engines: openai-whisper and faster-whisper": "两个引擎：openai-whisper 和 faster-whisper",
    "Commands": "命令",
    "Run as a service": "作为服务运行", "Watching it run": "查看运行状态",
    "Several machines": "多台机器", "Task history in SQL": "SQL 中的任务历史",
    "How it works": "工作原理", "Benchmarks": "基准测试", "Tests": "测试",
}
SETTING = re.compile(r"`((?:paths|database|models|transcribe|watcher|scheduler|gpu|cpu|memory|ui"
                     r"|http|summary)"
                     r"\.[\w.*]+)")


def _sections(name: str) -> list[tuple[str, str]]:
    text = (REPO / name).read_text(encoding="utf-8")
    return [(part.split("\n", 1)[0], part) for part in re.split(r"^## ", text, flags=re.M)[1:]]


def test_both_readmes_have_the_same_sections_in_step() -> None:
    """Same sections in the same order, and in each the same code blocks, the same number of
    list items and the same settings keys: a paragraph added to one README alone fails here
    (the conda/Windows advice once lived only in the Chinese one)."""
    en, zh = _sections("README.md"), _sections("README.zh-CN.md")
    assert [h for h, _ in en] == list(SECTIONS)
    assert [h for h, _ in zh] == list(SECTIONS.values())
    for (head, a), (_, b) in zip(en, zh, strict=True):
        assert a.count("```") == b.count("```"), head
        assert len(re.findall(r"^\s*- ", a, re.M)) == len(re.findall(r"^\s*- ", b, re.M)), head
        assert set(SETTING.findall(a)) == set(SETTING.findall(b)), head


def test_install_advice_never_replaces_an_installed_torch() -> None:
    """`pip install torch==2.13.0` in a shared conda environment would swap the LLM server's
    CUDA build for a CPU one: both READMEs say to skip it where torch is installed."""
    en = (REPO / "README.md").read_text(encoding="utf-8")
    zh = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "the same commands work" not in en
    assert "Where PyTorch is already installed, skip the first step" in en
    assert "`pip install -e .` keeps the torch you have" in en
    assert "已经装有 PyTorch 的环境，请跳过第一步" in zh
    assert "`pip install -e .` 会保留你已有的 torch" in zh
