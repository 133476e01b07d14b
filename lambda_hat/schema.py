"""Give every config value the type the config schema asks for, before validation.

The same setting can reach the workflow spelled in different ways: Snakemake reads the
values of ``--config`` below the top level as strings (YAML's base loader), YAML reads
``1e-4`` as a string and ``1`` as an integer where a float is meant. A rule's settings
are passed as sorted JSON, so ``"gamma": 1`` and ``"gamma": 1.0`` would be two
different params and a needless rerun. :func:`coerce_types` settles each value on one
type, as the schema says, so a value means the same job however it was written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lambda_hat.config import ConfigError

# Strings that stand for null where the schema allows null and not a string.
NULL_WORDS = ("null", "~", "none")
# At most this many schema violations are listed in one error.
MAX_LISTED = 10


def load_schema(path: str | Path) -> dict:
    """The schema at ``path`` (YAML, anchors and ``<<`` merges resolved)."""
    with open(path) as f:
        return yaml.safe_load(f)


def coerce_types(config: dict, schema: Mapping | str | Path) -> dict:
    """Convert, in place, the values of ``config`` to the types its schema gives them.

    Only values whose schema names a type change, and only when the conversion loses
    nothing: a string that reads as a number, an integer, a boolean (``true``/``false``)
    or null where the schema allows that type and not a string; an integer where the
    schema wants a number (it becomes a float); a float with an integral value where the
    schema wants an integer. Anything else is left as it is for the schema to reject,
    naming the key. Conditional parts of the schema (``allOf`` with ``if``/``then``)
    apply when their ``if`` holds, as in validation.

    Args:
        config: the config as Snakemake read it; changed in place.
        schema: the JSON schema (a mapping) or the path of its YAML file.

    Returns:
        ``config``, for convenience.
    """
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    _coerce_children(config, schema, schema)
    return config


def check_schema(config: dict, schema: Mapping | str | Path) -> None:
    """Raise :class:`ConfigError` listing every way ``config`` breaks its schema.

    Each line names the key by its dotted path and says what is wrong, and for an
    unknown key which keys are known there; the schema itself is not printed.
    Snakemake's own validation (which also fills in defaults) runs after this, so it
    only ever sees a config that passes.
    """
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if not errors:
        return
    lines = [f"{_path(e)}: {_describe(e)}" for e in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        lines.append(f"... and {len(errors) - MAX_LISTED} more")
    raise ConfigError(
        "the config breaks its schema (workflow/schemas/config.schema.yaml):\n  "
        + "\n  ".join(lines)
    )


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted((error.schema.get("properties") or {}).keys())
        unknown = sorted(set(error.instance) - set(known))
        if known and unknown:
            return (
                f"unknown key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; known keys here: {', '.join(known)}"
            )
    return error.message


def coerce_per_target(config: dict, schema: Mapping | str | Path) -> dict:
    """Type and check each method's ``per_target`` entries, in place.

    The schema cannot see a method through an entry (a method's settings depend on
    its algo), so each entry is merged into its method, coerced and validated as a
    whole method would be, and stored back with its values converted. Run it after
    the config's own validation, which fills in the method's defaults.

    Raises:
        ConfigError: naming the entry and the key that is wrong.
    """
    from jsonschema import validators

    from lambda_hat.config import PER_TARGET, ConfigError, check_per_target

    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    check_per_target(config)
    method_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/method"}
    validator = validators.validator_for(schema)(method_schema)
    for name, spec in config["methods"].items():
        entries = spec.get(PER_TARGET) or {}
        for target, overrides in entries.items():
            where = f"methods.{name}.{PER_TARGET}.{target}"
            merged = {k: v for k, v in spec.items() if k != PER_TARGET}
            merged.update(overrides)
            merged = _coerce(merged, _resolve(method_schema, schema), schema)
            errors = sorted(validator.iter_errors(merged), key=lambda e: e.path)
            if errors:
                err = errors[0]
                path = ".".join(str(p) for p in err.absolute_path)
                raise ConfigError(f"{where}{'.' + path if path else ''}: {err.message}")
            entries[target] = {k: merged[k] for k in overrides}
    return config


def _resolve(node: Any, root: Mapping) -> Mapping:
    """``node`` with a local ``$ref`` (``#/$defs/name``) followed."""
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        node = target
    return node if isinstance(node, Mapping) else {}


def _applicable(value: Any, node: Mapping, root: Mapping) -> list[Mapping]:
    """``node`` and the parts of it that apply to ``value`` (``allOf``, ``if/then``)."""
    nodes = [node]
    for part in node.get("allOf", []):
        part = _resolve(part, root)
        if "if" in part:
            branch = "then" if _holds(value, part["if"], root) else "else"
            if branch in part:
                nodes.extend(_applicable(value, _resolve(part[branch], root), root))
        else:
            nodes.extend(_applicable(value, part, root))
    return nodes


def _holds(value: Any, condition: Mapping, root: Mapping) -> bool:
    """Whether ``value`` satisfies the schema ``condition`` (the ``if`` of a branch)."""
    from jsonschema import validators

    schema = {**condition, "$defs": root.get("$defs", {})}
    return validators.validator_for(root)(schema).is_valid(value)


def _coerce_children(value: Any, node: Any, root: Mapping) -> None:
    """Coerce, in place, the entries of a dict or list ``value`` under ``node``."""
    nodes = _applicable(value, _resolve(node, root), root)
    if isinstance(value, dict):
        for key in list(value):
            child = _child_schema(key, nodes, root)
            if child is not None:
                value[key] = _coerce(value[key], child, root)
    elif isinstance(value, list):
        for n in nodes:
            items = n.get("items")
            if isinstance(items, Mapping):
                value[:] = [_coerce(v, items, root) for v in value]
                break


def _child_schema(key: str, nodes: list[Mapping], root: Mapping) -> Mapping | None:
    """The schema of entry ``key`` of an object: its property, else the catch-all."""
    for n in nodes:
        props = n.get("properties", {})
        if key in props:
            return _resolve(props[key], root)
    for n in nodes:
        extra = n.get("additionalProperties")
        if isinstance(extra, Mapping):
            return _resolve(extra, root)
    return None


def _coerce(value: Any, node: Mapping, root: Mapping) -> Any:
    """``value`` converted to the type ``node`` asks for, its children too."""
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    value = _convert(value, types)
    if isinstance(value, dict | list):
        _coerce_children(value, node, root)
    return value


def _convert(value: Any, types: list[str]) -> Any:
    """One scalar converted to one of ``types`` when that loses nothing."""
    if isinstance(value, bool) or not types:
        return value
    if isinstance(value, str) and "string" not in types:
        text = value.strip()
        if "null" in types and text.lower() in NULL_WORDS:
            return None
        if "boolean" in types and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if "integer" in types:
            try:
                return int(text)
            except ValueError:
                pass
        if "number" in types or "integer" in types:
            try:
                number = float(text)
            except ValueError:
                return value
            return _convert(number, types) if math.isfinite(number) else value
        return value
    if isinstance(value, float) and "integer" in types and "number" not in types:
        return int(value) if value.is_integer() else value
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    return value
