"""The llama.cpp engine's options, validated where they are given (endpoint create or
update) and again where they are used (the replica)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelplane.engines.bundled import BUNDLED


class LlamaCppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_threads: int | None = Field(default=None, ge=1, le=512)
    """Decode threads; default: every core."""
    n_ctx: int = Field(default=4096, ge=64, le=1_048_576)
    """Context length in tokens."""
    weights: Literal["native", "f16", "f32", "q8_0"] = "native"
    """Precision at load; anything but ``native`` is converted once and cached."""
    default_system_prompt: str | None = None
    """Sent as the system message when a chat request has none (``None``: the chat
    template's own behaviour)."""
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    """Sampling defaults for requests that do not set their own."""
    repeat_penalty: float = Field(default=1.0, ge=0.5, le=2.0)
    """llama.cpp's penalty on tokens seen in the last 64 (1.0: off); OpenAI's
    presence/frequency penalties of a request apply on top."""
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    """OpenAI's frequency penalty for requests that do not set their own: each time a
    token has appeared lowers it further, which breaks loops a flat repeat penalty
    cannot."""
    max_batch: int = Field(default=4, ge=1, le=64)
    """Sequences decoded together (1: one at a time, with prefix reuse across requests;
    more: higher throughput under concurrency, a KV cache of ``n_ctx`` per sequence)."""
    max_queue: int = Field(default=64, ge=0)
    """Requests waiting beyond this many are refused with 503 and ``retry-after``."""
    stall_timeout_s: float = Field(default=120.0, gt=0)
    """The model thread holding requests without finishing a step or generating a
    token for this long makes ``/health`` fail, so the runtime replaces the replica.
    It must exceed the longest prompt evaluation (one at a time, a whole prompt is one
    step; batched, at most 512 of its tokens are)."""
    nice: int = Field(default=5, ge=0, le=19)
    """How much lower the decode threads' CPU priority is than the request path's."""
    extra_buffers: bool = False
    """llama.cpp's extra weight buffers: AMX tiles on recent Intel Xeons and repacked
    weights. Off by default: ggml's AMX kernels crash the replica (SIGSEGV on the first
    prompt of more than a few tokens) on virtualised Sapphire Rapids hosts
    (ggml-org/llama.cpp#20824), and the bundled Q4_1 model gains nothing from repacking."""
    cache_dir: str | None = None
    """Where converted weights are kept; default ``~/.modelplane/weights``."""

    @classmethod
    def for_model(cls, model: str, options: dict[str, Any]) -> LlamaCppOptions:
        """The endpoint's options over the bundled model's tuned defaults, if any."""
        bundled = BUNDLED.get(model)
        merged = dict(bundled.defaults) if bundled else {}
        merged.update(options)
        return cls.model_validate(merged)
