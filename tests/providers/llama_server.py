"""``python -m llama_cpp.server`` as it is, but with its model loaded without llama.cpp's
extra weight buffers, as modelplane's engine loads it (``extra_buffers``): ggml's AMX
kernels crash the server on the first real prompt on virtualised Sapphire Rapids hosts
(ggml-org/llama.cpp#20824), and ``llama_cpp.server`` has no flag to turn them off."""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp.llama_cpp as low

_default = low.llama_model_default_params


def _params() -> Any:
    params = _default()
    params.use_extra_bufts = False
    return params


low.llama_model_default_params = _params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
