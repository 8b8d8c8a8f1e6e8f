"""The README's two quick-start commands exist, CI runs the second one, and the facts it
states about the bundled model are the code's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quick_start_has_exactly_two_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands), "each is a single command line"
    run, test = commands
    assert run.endswith("modelplane up") and "pip install" in run
    assert test == "./scripts/check"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./scripts/check\s*$", ci, re.M)
    assert "MODELPLANE_REQUIRE_SERVICES=1" in ci


def test_check_script_lints_types_and_tests() -> None:
    script = (ROOT / "scripts" / "check").read_text()
    for tool in (
        'ruff" check',
        'ruff" format --check',
        'mypy" modelplane',
        "lint-imports",
        "-m pytest",
    ):
        assert tool in script, tool


def test_the_bundled_models_defaults_are_the_ones_the_code_uses() -> None:
    """The endpoint options table states the bundled model's sampling defaults; they
    are the values ``engines/bundled.py`` sends for requests that set none."""
    from modelplane.engines.bundled import SMOLLM2

    readme = (ROOT / "README.md").read_text()
    stated: dict[str, float] = {}
    for names, values in re.findall(r"^\| (`[^|]+`) \| bundled(?: model)?: ([^;|]+)", readme, re.M):
        keys = re.findall(r"`(\w+)`", names)
        numbers = [v.strip() for v in values.split(",")]
        if len(keys) == len(numbers) and all(re.fullmatch(r"[\d.]+", n) for n in numbers):
            stated.update(zip(keys, map(float, numbers), strict=True))
    for key in ("temperature", "top_p", "repeat_penalty", "frequency_penalty"):
        assert stated[key] == SMOLLM2.defaults[key], key
