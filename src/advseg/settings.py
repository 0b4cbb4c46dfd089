"""Typed settings built from a validated config section.

The workflow passes each rule its config section as JSON; a dataclass per section
gives the code names, types and defaults in one visible place, and an unknown or
ill-typed key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any] | str, section: str) -> T:
    """Build ``cls`` from a mapping (or its JSON text); keys are checked against its fields."""
    if isinstance(values, str):
        values = json.loads(values)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    converted = {}
    for name, value in values.items():
        kind = type(fields[name].default) if fields[name].default is not dataclasses.MISSING else None
        if kind is not None and not _fits(kind, value):
            raise ValueError(f"{section}.{name}: expected {kind.__name__}, got {value!r}")
        converted[name] = float(value) if kind is float else value
    return cls(**converted)


def _fits(kind: type, value: Any) -> bool:
    """Whether ``value`` is a ``kind``; ints count as floats, bools count as neither."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def as_dict(settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
