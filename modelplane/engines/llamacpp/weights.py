"""Locating a GGUF file and, when asked, converting its weights once at load.

``weights: f16`` (or ``f32``/``q8_0``) rewrites a quantized GGUF at that precision with
llama.cpp's own quantizer, caching the result next to modelplane's data; the file is
keyed by the source's size and mtime so a changed source is converted again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from modelplane.engines.bundled import BUNDLED

_FTYPES = {"f32": 0, "f16": 1, "q8_0": 7}
WEIGHT_CHOICES = ("native", *_FTYPES)


def resolve_source(model: str) -> Path:
    """A bundled model name (``smollm2``) or a path to a local ``.gguf`` file."""
    if model in BUNDLED:
        return BUNDLED[model].path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model '{model}' is neither a bundled model ({', '.join(BUNDLED)}) "
            "nor an existing GGUF file"
        )
    return path


def converted(source: Path, weights: str, cache_dir: Path) -> Path:
    """Return a GGUF with ``weights`` precision, converting ``source`` on first use."""
    if weights == "native":
        return source
    if weights not in _FTYPES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, not '{weights}'")
    import llama_cpp

    st = source.stat()
    target = cache_dir / f"{source.stem}.{st.st_size}-{int(st.st_mtime)}.{weights}.gguf"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary name and rename, so concurrent replicas starting
    # together never load a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".partial")
    os.close(fd)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[weights]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(source).encode(), tmp.encode(), params)
    if rc != 0:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not convert {source.name} to {weights} (rc={rc})")
    os.replace(tmp, target)
    return target
