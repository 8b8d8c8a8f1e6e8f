"""Locating GGUF files and converting weight precision once at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.engines.llamacpp.weights import converted, resolve_source


def test_bundled_model_resolves_from_the_installed_package() -> None:
    path = resolve_source("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file() and path.stat().st_size > 50_000_000


def test_local_gguf_path_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_source(str(f)) == f


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(FileNotFoundError, match="smollm2"):
        resolve_source("/nowhere/model.gguf")


def test_f16_conversion_happens_once_and_is_cached(tmp_path: Path) -> None:
    src = resolve_source("smollm2")
    out = converted(src, "f16", tmp_path)
    assert out.parent == tmp_path and out.name.endswith(".f16.gguf")
    # 135M parameters at 16 bits: well over twice the 4-bit source.
    assert out.stat().st_size > 2 * src.stat().st_size
    mtime = out.stat().st_mtime_ns
    assert converted(src, "f16", tmp_path) == out
    assert out.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.partial"))


def test_native_weights_are_used_as_they_are(tmp_path: Path) -> None:
    src = resolve_source("smollm2")
    assert converted(src, "native", tmp_path) == src


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights must be one of"):
        converted(resolve_source("smollm2"), "int3", tmp_path)
