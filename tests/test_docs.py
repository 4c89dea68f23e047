"""The README stays true: its test command is what CI runs, its module table matches service/."""

from __future__ import annotations

import re
from pathlib import Path

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
