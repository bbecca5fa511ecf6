"""The config schema: one validator (defaults filled in), the error lines, and merging.

A leaf: it knows the schema file and nothing of what the config means. The checks across keys
and the expansion into runs are :mod:`bihmf.benchmark`'s (its ``check_config`` / ``load_config``
call :func:`schema_errors` here), so the workflow and the library see identical defaults. The
schema's choice lists of dataset kinds, tasks, encoders and fusions are not written in the file:
each such list is marked ``x-registry: <name>`` and filled from that registry when the schema is
loaded (the caller gives the names: :func:`bihmf.benchmark.registries`), so a new encoder,
fusion, task or dataset kind is one module plus one registry line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


def _fill_registries(node: Any, names: dict[str, list[str]]) -> Any:
    """Give every ``x-registry`` subschema the ``enum`` of its registry's names, in place."""
    if isinstance(node, dict):
        if "x-registry" in node:
            node["enum"] = names[node["x-registry"]]
        for value in node.values():
            _fill_registries(value, names)
    elif isinstance(node, list):
        for value in node:
            _fill_registries(value, names)
    return node


def load_schema(names: dict[str, list[str]]) -> dict[str, Any]:
    """The config schema with its registry-backed choice lists filled in from ``names``
    (registry -> its names: :func:`bihmf.benchmark.registries`)."""
    return _fill_registries(yaml.safe_load(SCHEMA_PATH.read_text()), names)


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


class ConfigError(ValueError):
    """An invalid config; the message's first line names the key and the reason."""


def schema_errors(config: dict[str, Any], names: dict[str, list[str]]) -> list[jsonschema.ValidationError]:
    """Schema violations of ``config`` (defaults are written into it), in key order; ``names``
    fill the registry-backed choice lists."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema(names))
    return sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])


def error_line(error: jsonschema.ValidationError, limit: int = 200) -> str:
    """``<key path>: <reason>`` on one line (long reasons, e.g. enum lists, are cut at ``limit``)."""
    reason = " ".join(error.message.split())
    reason = reason if len(reason) <= limit else reason[: limit - 3] + "..."
    return f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {reason}"


def config_error(errors: list[jsonschema.ValidationError], details: Path | None = None) -> ConfigError:
    """One line per error, the first one first; with ``details``, the full jsonschema reports
    (schema excerpts, 10-170 lines each) go to that file instead of the console."""
    lines = [error_line(e) for e in errors]
    if details is not None:
        details.parent.mkdir(parents=True, exist_ok=True)
        details.write_text("\n\n".join(str(e) for e in errors) + "\n")
        lines.append(f"(schema details: {details})")
    return ConfigError("invalid bihmf config: " + "\n  ".join(lines))


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
