"""Config loading with the same schema and default-filling semantics as Snakemake's validate().

The workflow validates with ``snakemake.utils.validate``; tests and library users call
:func:`load_config`, so both see identical defaults from one schema file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that ``default`` values are written into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001 (jsonschema hook)
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with schema defaults filled in."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    filled = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError("invalid bihmf config:\n" + "\n".join(lines))
    return filled


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Load YAML files, later ones overriding earlier ones key by key, then validate."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = deep_merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(merged)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge dicts recursively the way Snakemake merges --configfile layers."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _coerce(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    schema = _resolve(schema, root)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce(item, sub, root)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(item, schema["items"], root) for item in value]
    if isinstance(value, str):
        converters = {"integer": int, "number": float, "boolean": lambda s: {"true": True, "false": False}[s.lower()]}
        for name in ("integer", "number", "boolean"):
            if name in types:
                try:
                    return converters[name](value)
                except (ValueError, KeyError):
                    continue
    return value


def coerce_cli_strings(config: dict[str, Any]) -> dict[str, Any]:
    """Turn strings into the schema's number/boolean types, in place.

    Snakemake parses nested ``--config key={...}`` values with YAML's BaseLoader, which makes
    every scalar a string (``train={seeds: [0]}`` gives ``['0']``); without this, selecting a
    config subset on the command line would fail validation.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return _coerce(config, schema, schema)
