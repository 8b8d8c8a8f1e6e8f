"""Run ``tests/server`` again with the newest uvicorn release over the installed one.

``modelplane serve``'s HTTP protocol (``modelplane/server/protocol.py``) builds on
uvicorn internals that a release may change. At start-up it checks them and falls back
to uvicorn's own protocol if they changed, so users are never broken, but then the fast
path is silently gone; this makes CI say so first. ``scripts/check`` runs it after the
main test run.

    python scripts/newest_uvicorn.py            # the newest release on the package index
    python scripts/newest_uvicorn.py 0.54.0     # a given release

The release is installed with ``pip install --target`` into a folder outside the clone,
one per uvicorn version and Python version (``$MODELPLANE_CACHE_DIR``, default
``~/.cache/modelplane``), with those of its requirements this environment does not meet,
and put ahead of the environment on ``PYTHONPATH``; a later run with the same newest
release reuses it. Nothing is run when the newest release is the one installed (the main
run covered it). It needs the package index; without one it fails and says so
(``MODELPLANE_SKIP_NEWEST_UVICORN=1`` skips it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/server"]

CHECK = """
import sys, uvicorn
from modelplane.server.protocol import problem
if uvicorn.__version__ != sys.argv[1] or not uvicorn.__file__.startswith(sys.argv[2]):
    sys.exit(f"the overlay was not used: uvicorn {uvicorn.__version__} from {uvicorn.__file__}")
why = problem()
if why is not None:
    sys.exit(f"modelplane serve would fall back to uvicorn's own protocol on it: {why}")
"""


def fail(message: str) -> NoReturn:
    print(f"newest uvicorn: {message}", file=sys.stderr)
    sys.exit(1)


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def newest() -> str:
    done = pip("index", "versions", "uvicorn")
    found = re.search(r"^uvicorn \(([^)\s]+)\)", done.stdout, re.M)
    if done.returncode or found is None:
        fail(
            "`pip index versions uvicorn` could not tell the newest release (is the package "
            "index reachable? MODELPLANE_SKIP_NEWEST_UVICORN=1 skips this check):\n"
            + (done.stderr or done.stdout).strip()
        )
    return found.group(1)


def install(target: Path, requirements: list[str]) -> None:
    done = pip("install", "--quiet", "--no-deps", "--target", str(target), *requirements)
    if done.returncode:
        fail(f"pip could not install {' '.join(requirements)}:\n{done.stderr.strip()}")


def unmet(requirement: Requirement) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": "standard"}):
        return False  # another extra's, or another platform's
    try:
        have = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return True
    return not requirement.specifier.contains(have, prereleases=True)


def overlay(version: str) -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelplane"
    cache = Path(os.environ.get("MODELPLANE_CACHE_DIR") or default)
    name = f"uvicorn-{version}-py{sys.version_info.major}.{sys.version_info.minor}"
    folder = cache / name
    if (folder / ".complete").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed there whole: an interrupted install is
    # never taken for a finished one.
    building = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=cache))
    try:
        install(building, [f"uvicorn=={version}"])
        (dist,) = metadata.distributions(path=[str(building)])
        needs = [str(r) for r in map(Requirement, dist.requires or []) if unmet(r)]
        if needs:
            install(building, needs)
        (building / ".complete").touch()
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def main() -> int:
    if os.environ.get("MODELPLANE_SKIP_NEWEST_UVICORN") == "1":
        print("newest uvicorn: skipped (MODELPLANE_SKIP_NEWEST_UVICORN=1)")
        return 0
    installed = metadata.version("uvicorn")
    version = sys.argv[1] if len(sys.argv) > 1 else newest()
    if version == installed:
        print(f"newest uvicorn: {version} is the one installed, which the main run tested")
        return 0
    folder = overlay(version)
    path = [str(folder), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    print(f"newest uvicorn: {version} (installed: {installed}), from {folder}", flush=True)
    check = [sys.executable, "-c", CHECK, version, str(folder)]
    if subprocess.run(check, env=env, cwd=ROOT, check=False).returncode:
        fail(f"uvicorn {version} breaks what modelplane/server/protocol.py builds on")
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    return subprocess.run(tests, env=env, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
