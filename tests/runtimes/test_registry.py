"""The ``runtime`` setting: names a registered runtime; ``local`` shares its replicas
between worker processes by itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelplane.config import Settings
from modelplane.runtimes import registry as runtimes
from modelplane.runtimes.local import LocalRuntime
from modelplane.runtimes.shared import SharedLocalRuntime


async def test_local_is_shared_with_several_workers(tmp_path: Path) -> None:
    one = runtimes.create("local", settings=Settings(home=tmp_path))
    many = runtimes.create("local", settings=Settings(home=tmp_path, workers=2))
    forced = runtimes.create("local-shared", settings=Settings(home=tmp_path))
    try:
        assert isinstance(one, LocalRuntime)
        assert isinstance(many, SharedLocalRuntime) and isinstance(forced, SharedLocalRuntime)
    finally:
        for rt in (one, many, forced):
            await rt.close()


def test_serve_refuses_an_unknown_runtime(tmp_path: Path) -> None:
    env = {"MODELPLANE_HOME": str(tmp_path), "MODELPLANE_RUNTIME": "nomad", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "modelplane", "serve", "--port", "0"],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "unknown runtime 'nomad'; available: local, local-shared" in out
