"""The config schema, the one place where a config key's type, range and default live.

``config.schema.yaml`` ships inside the package (the workflow's
``workflow/schemas/config.schema.yaml`` is a link to it), so a command run on its own (by
a test, by a user) gets the same defaults as one the Snakefile starts. :func:`complete`
fills in and checks a whole config, as the Snakefile does before any job; :func:`fill`
does the same for one section. Settings dataclasses hold no defaults of their own:
:func:`from_mapping` builds one from a section that :func:`fill` completed. An unknown or
ill-typed key is an error that names it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def node(key: str) -> dict:
    """The schema of a config key, e.g. ``training``, ``attack.pgd.steps``, ``models.in_channels``
    (a list's key stands for its items); ``$ref`` resolved."""
    found = schema()
    for part in key.split("."):
        found = _resolved(found)
        found = _resolved(found.get("items", {})) if found.get("type") == "array" else found
        if part not in found.get("properties", {}):
            raise KeyError(f"{key}: not a key of {SCHEMA_PATH.name}")
        found = found["properties"][part]
    return _resolved(found)


def default(key: str) -> Any:
    """The schema's default of a config key; an object's default with its own keys' defaults filled in."""
    found = node(key)
    if "default" not in found:
        raise KeyError(f"{key}: {SCHEMA_PATH.name} gives it no default")
    return _fill_defaults(found, copy.deepcopy(found["default"]))


def fill(section: str, values: Mapping[str, Any] | str | None = None) -> dict:
    """``values`` (a mapping, or its JSON text) on top of the schema's defaults of ``section``, checked.

    Raises ValueError naming ``section.key`` of the first value the schema refuses.
    """
    values = json.loads(values) if isinstance(values, str) else copy.deepcopy(dict(values or {}))
    found = node(section)
    _fill_defaults(found, values)
    _check(found, values, section)
    return values


def complete(config: dict) -> dict:
    """Fill in every default of a whole config (in place) and check it against the schema."""
    _fill_defaults(schema(), config)
    _check(schema(), config, "")
    return config


def from_mapping(cls: type[T], values: Mapping[str, Any] | str | None, section: str, **outside: Any) -> T:
    """``cls`` from config section ``section`` (see :func:`fill`); ``outside`` gives the fields
    the section does not hold (e.g. training's seed, one of the config's ``seeds``)."""
    values = fill(section, values)
    numbers = {key for key, spec in node(section).get("properties", {}).items()
               if _resolved(spec).get("type") == "number"}
    values = {key: float(value) if key in numbers else value for key, value in values.items()}
    return cls(**values, **outside)


def as_dict(settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def _resolved(found: dict) -> dict:
    """``found`` with a local ``$ref`` replaced by its target (its own keys, e.g. a default, win)."""
    while "$ref" in found:
        target = schema()
        for part in found["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        found = {**target, **{key: value for key, value in found.items() if key != "$ref"}}
    return found


def _fill_defaults(found: dict, instance: Any) -> Any:
    """Every absent key that has a default gets it, at every depth (list items included)."""
    found = _resolved(found)
    if isinstance(instance, dict):
        for key, spec in found.get("properties", {}).items():
            spec = _resolved(spec)
            if key not in instance and "default" in spec:
                instance[key] = copy.deepcopy(spec["default"])
            if key in instance:
                _fill_defaults(spec, instance[key])
    elif isinstance(instance, list) and isinstance(found.get("items"), dict):
        for item in instance:
            _fill_defaults(found["items"], item)
    return instance


def _check(found: dict, instance: Any, section: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator({**found, "$defs": schema()["$defs"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise ValueError(_describe(error, section))
    _check_finite(instance, section)


def _check_finite(instance: Any, key: str) -> None:
    """NaN and infinity pass every bound of a JSON schema (YAML writes them .nan and .inf)."""
    if isinstance(instance, float) and not math.isfinite(instance):
        raise ValueError(f"{key or 'config'}: {instance} is not a finite number")
    items = instance.items() if isinstance(instance, dict) else enumerate(instance) \
        if isinstance(instance, list) else ()
    for part, value in items:
        _check_finite(value, f"{key}[{part}]" if isinstance(part, int) else f"{key}.{part}".lstrip("."))


def _describe(error, section: str) -> str:
    """'key.path: message', the key first (jsonschema's own message buries it)."""
    key = section + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    message = error.message
    if error.validator == "additionalProperties":
        message += f"; known: {', '.join(error.schema.get('properties', {}))}"
    return f"{key.lstrip('.') or 'config'}: {message}"
