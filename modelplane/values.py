"""``@value``: a frozen dataclass for the type checker, a plain slotted one at run time.

A ``frozen=True`` dataclass's ``__init__`` sets each field through
``object.__setattr__``, a call of its own per field: about 1,200 instructions each in
CPython 3.11, against a plain slot store for an unfrozen one (``bench/instructions.py``).
The request path makes several such objects per request (the request as the proxy gets
it, the call to the upstream, rate-limit windows, the usage record), which added up to
several percent of the gateway's work. Declared with ``@value``, they keep what
``frozen`` is for, mypy refusing any assignment to a field, without paying for it
at run time. Unlike a frozen dataclass they are not hashable; none of them is used as
a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[T]) -> type[T]:
    return dataclass(slots=True)(cls)
