"""The gateway benchmark runs end to end (so that ``bench/gateway.py`` cannot rot): one
short rep of each side, through a real ``modelplane serve`` in front of the mock, and
through the Python relay that serves as a reference."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_gateway_benchmark_prints_its_table_and_targets(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    other = tmp_path / "other"  # another source tree, as --against takes one
    shutil.copytree(ROOT / "modelplane", other / "modelplane")
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "gateway.py"),
        "--duration=1",
        "--warmup=1",
        "--reps=1",
        "--concurrency=16",
        "--no-stream",
        "--python-load",
        "--observability=ungoverned,metrics",
        "--baseline=ungoverned",
        "--reference=relay",
        f"--against={other}",
        f"--python={sys.executable}",  # another interpreter's side (here, the same one)
        f"--json={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith(("| ungoverned |", "| metrics |"))]
    # One row per variant, the comparison row, and each variant against the relay.
    assert len(rows) == 5
    assert sum(line.startswith("| relay | non-stream | 16 |") for line in lines) == 1
    for variant in ("ungoverned", "metrics"):
        (targets,) = [line for line in lines if line.startswith(f"{variant}: targets, non-")]
        for target in (r"p50 \S+ <= 0.5 ms", r"p99 \S+ <= 2 ms"):
            verdict = target + r" \((met|MISSED); [01] of 1 reps met it, range \S+ to \S+\)"
            assert re.search(verdict, targets), targets
        assert any(line.startswith(f"| {variant} | non-stream | 16 | relay |") for line in lines)
    assert not any(line.startswith("relay: targets") for line in lines)
    assert '"gateway_rps"' in out.read_text() and '"vs_reference"' in out.read_text()
    assert '"added_p50_ms_reps"' in out.read_text()
    # --against: the other tree's gateway measured too, and compared with this one's.
    for variant in ("ungoverned", "metrics"):
        mine = [line for line in lines if line.startswith(f"| {variant}@other | non-stream | 16 |")]
        assert len(mine) == 3, mine  # its row, against this checkout's, against the relay
        headers = [i for i, line in enumerate(lines) if f"rps ({variant} → this)" in line]
        row = f"| {variant}@other | non-stream | 16 | "
        assert any(lines[i + 2].startswith(row) for i in headers), lines
    # --python: this checkout served by that interpreter too, named by version and venv.
    venv = Path(sys.executable).parent.parent.name
    side = f"py{sys.version.split()[0]}-{venv}"
    for variant in ("ungoverned", "metrics"):
        mine = [line for line in lines if line.startswith(f"| {variant}@{side} | non-stream |")]
        assert len(mine) == 3, mine
    (interpreters,) = [line for line in lines if "runs `modelplane serve`" in line]
    assert interpreters.count("(libpython ") == 2 and f"runs {side}" in interpreters


def test_the_governance_benchmark_prints_a_row_per_stage() -> None:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "governance.py"),
        "--requests=300",
        "--reps=1",
        "--pause-ms=0.1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split(" | ")[0].removeprefix("| "): line
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "---" not in line and "stage" not in line
    }
    assert list(rows) == ["baseline", "admit", "settle", "write"]
    for stage in ("admit", "settle", "write"):
        assert re.search(r"\| [+-]\d+\.\d µs \|$", rows[stage]), rows[stage]
    assert re.search(r"governance in all: \d+\.\d µs of CPU a request", done.stdout)


def test_the_instruction_count_benchmark_compares_checkouts(tmp_path: Path) -> None:
    """Counted under callgrind: this checkout beside a copy of its package that does
    more work per request, which must count more (so the copy is what ran)."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    shutil.copytree(ROOT / "modelplane", tmp_path / "modelplane")
    fastpath = tmp_path / "modelplane" / "server" / "fastpath.py"
    code = fastpath.read_text()
    anchor = "    headers: dict[str, str] = {}\n"
    assert anchor in code
    fastpath.write_text(code.replace(anchor, anchor + "    sum(range(20_000))\n"))
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "instructions.py"),
        "--variants=ungoverned",
        f"--against={tmp_path}",
        "--requests=60",
        "--warmup=20",
        "--concurrency=4",
        "--reps=1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ungoverned |")]
    assert [row.split(" | ")[1] for row in rows] == ["this", tmp_path.name], rows
    assert 50 < float(rows[0].split(" | ")[2]) < 5000, rows  # k instructions a request
    change = float(rows[1].split(" | ")[4].removesuffix("% |"))
    assert change > 30, rows  # 20,000 more loop steps a request
