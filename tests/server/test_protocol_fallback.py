"""``modelplane serve`` on a uvicorn whose internals are not the ones ``server/protocol.py``
builds on: it says so in its log and serves every request through uvicorn's own protocol,
with the same answers. The other uvicorn is a copy of the installed one, changed the way
a release could change it, put ahead of it on the server's import path."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from modelplane.server.protocol import GatewayProtocol, http_protocol, problem
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server

IMPL = Path("protocols") / "http" / "httptools_impl.py"

CHANGES = {
    # A name the protocol imports is gone.
    "renamed STATUS_LINE": (r"\bSTATUS_LINE\b", "_STATUS_LINES"),
    # A name is still there, but what it means moved: the request's cycle is kept under
    # another attribute, so uvicorn's callbacks no longer see the protocol's exchange.
    "moved the cycle": (r"\bself\.cycle\b", "self.current_cycle"),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("a")
    yield up
    up.close()


def changed_uvicorn(root: Path, pattern: str, replacement: str) -> Path:
    """A copy of the installed uvicorn with one change to its httptools protocol."""
    copy = root / "uvicorn"
    shutil.copytree(Path(uvicorn.__file__).parent, copy)
    impl = copy / IMPL
    code, n = re.subn(pattern, replacement, impl.read_text())
    assert n, f"{pattern} no longer occurs in uvicorn's {IMPL}"
    impl.write_text(code)
    return root


def test_the_installed_uvicorn_is_one_the_protocol_runs_on() -> None:
    assert problem() is None
    assert http_protocol() is GatewayProtocol


@pytest.mark.parametrize("change", CHANGES)
def test_a_uvicorn_without_the_internals_falls_back_with_a_warning(
    change: str, tmp_path: Path, fake: FakeUpstream
) -> None:
    overlay = changed_uvicorn(tmp_path / "site", *CHANGES[change])
    path = os.pathsep.join(p for p in (str(overlay), os.environ.get("PYTHONPATH")) if p)
    home = tmp_path / "home"
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}", PYTHONPATH=path).start()
    try:
        srv.add_external("a", fake.base_url, "upstream-a")
        client = srv.openai()
        answer = client.chat.completions.create(
            model="a", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "hello from a"
        stream = client.chat.completions.create(
            model="a", messages=[{"role": "user", "content": "tokens=3"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "t0 t1 t2 "
        )
    finally:
        srv.close()
    lines = [json.loads(line) for line in (home / "server.log").read_text().splitlines() if line]
    warnings = [
        line["msg"]
        for line in lines
        if line.get("logger") == "modelplane.server.protocol" and line.get("level") == "warning"
    ]
    assert len(warnings) == 1, lines
    assert "through uvicorn's own protocol" in warnings[0]
    assert f"uvicorn {uvicorn.__version__} lacks" in warnings[0]
