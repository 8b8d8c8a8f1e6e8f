"""What an endpoint's replicas need and how many of them there may be: ``resources``,
``autoscaling`` and LoRA ``adapters``. Runtimes read them; the local runtime runs one
process per replica whatever the resources say, a Kubernetes runtime turns them into a
pod's requests, node selector and tolerations."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$")
_UNITS = {
    None: 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}
_LABEL = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def memory_bytes(value: str | int) -> int:
    """``4Gi``, ``512Mi``, ``2G`` or a number of bytes, in bytes (Kubernetes' quantities)."""
    if isinstance(value, int):
        return value
    m = _MEMORY.match(value.strip())
    if m is None:
        raise ValueError(
            f"'{value}' is not an amount of memory; write bytes or a number with a unit "
            "such as 512Mi, 4Gi or 2G"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class Toleration(_Frozen):
    """A Kubernetes toleration of a node taint, as in a pod spec."""

    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """None: every effect."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        return self


class Resources(_Frozen):
    """What one replica needs (``{}``: nothing asked for)."""

    cpu: float | None = Field(default=None, gt=0, le=1024)
    """CPU cores, e.g. ``0.5`` or ``8``."""
    memory: str | int | None = None
    """Bytes, or a quantity such as ``4Gi`` or ``512Mi``."""
    gpus: int = Field(default=0, ge=0, le=64)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=100)
    """e.g. ``nvidia-h100-80gb``: the kind of accelerator, matched by the runtime's node
    labels."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a replica's node must have (Kubernetes' ``nodeSelector``)."""
    tolerations: tuple[Toleration, ...] = ()

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        if v is not None and memory_bytes(v) <= 0:
            raise ValueError("must be more than 0 bytes")
        return v

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if len(key) > 317 or not _LABEL.match(key):
                raise ValueError(f"'{key}' is not a node label key")
            if len(val) > 63:
                raise ValueError(f"the value of '{key}' is longer than 63 characters")
        return v

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> Resources:
        if self.gpu_type is not None and not self.gpus:
            raise ValueError("gpu_type needs gpus (the number of them) too")
        return self

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)


class Autoscaling(_Frozen):
    """Bounds for whoever scales the endpoint's replicas (an autoscaler, HPA or KEDA)."""

    min_replicas: int = Field(default=1, ge=0)
    """0 lets an idle endpoint scale to zero (see ``scale_down_idle_s``)."""
    max_replicas: int = Field(default=1, ge=1)
    """At most the server's ``max_replicas_per_endpoint``."""
    target_in_flight: float = Field(default=4.0, gt=0, le=10_000)
    """Requests in flight per replica that scaling aims for."""
    scale_down_idle_s: float = Field(default=300.0, ge=0)
    """How long a replica has had nothing to do before it may be removed."""

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


_ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SOURCE = re.compile(
    r"^(?:/\S+"  # a path on the replica's machine
    r"|file:[A-Za-z0-9_-]{1,64}"  # an uploaded file, by id
    r"|hf://[A-Za-z0-9][\w.-]*/[\w.-]+(?:/\S+)?(?:@[\w./-]+)?)$"  # a Hugging Face repo
)


class Adapter(_Frozen):
    """A LoRA adapter an endpoint serves beside its base model, asked for by name."""

    name: str = Field(pattern=_ADAPTER_NAME)
    source: str = Field(max_length=1000)
    """An absolute path, ``file:<id>`` or ``hf://owner/repo[/path][@revision]``."""
    scale: float | None = Field(default=None, gt=0, le=10)
    """How strongly it applies (None: the engine's default, usually 1)."""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not _SOURCE.match(v):
            raise ValueError(
                f"'{v}' is not an adapter source; give an absolute path, file:<id> or "
                "hf://owner/repo[/path][@revision]"
            )
        return v


def _unique(adapters: tuple[Adapter, ...]) -> tuple[Adapter, ...]:
    seen: set[str] = set()
    for a in adapters:
        if a.name in seen:
            raise ValueError(f"adapter names must be unique; '{a.name}' is given twice")
        seen.add(a.name)
    return adapters


Adapters = Annotated[tuple[Adapter, ...], AfterValidator(_unique)]
"""An endpoint's adapters: names unique."""
