"""The config schema lists registry names a second time (as enums, so a typo in a config is
an error before any job runs). These tests keep the two lists equal: adding an encoder,
fusion, task or dataset kind without its schema entry, or the reverse, fails here.

Every enum in the schema must be classified below, either as a mirror of a named list or as
a closed vocabulary of its own; an enum added later without that decision fails too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from bihmf.config import SCHEMA_PATH
from bihmf.data import DATASETS
from bihmf.models.encoders import ENCODERS
from bihmf.models.fusion import FUSIONS
from bihmf.tasks import TASKS

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())

DATASET = ("properties", "datasets", "additionalProperties", "properties")
MODEL = ("properties", "model", "properties")

# schema path of an enum -> (what it mirrors, the names it must equal)
MIRRORS: dict[tuple[str, ...], tuple[str, set[str]]] = {
    (*DATASET, "kind"): ("bihmf.data.DATASETS", set(DATASETS)),
    (*DATASET, "task"): ("bihmf.tasks.TASKS", set(TASKS)),
    (*MODEL, "encoders", "items"): ("bihmf.models.encoders.ENCODERS", set(ENCODERS)),
    (*MODEL, "fusions", "items"): ("bihmf.models.fusion.FUSIONS", set(FUSIONS)),
    (*DATASET, "train", "propertyNames"): ("the schema's global train keys", set(SCHEMA["properties"]["train"]["properties"])),
}

# enums that are their own vocabulary: no registry holds these names
OWN_VOCABULARY: set[tuple[str, ...]] = {
    ("definitions", "label_file", "properties", "split"),
    (*DATASET, "graph_residues"),
    ("properties", "recipe"),
}


def enums(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Any]]]:
    """Every ``enum`` in a schema tree, with the path of the subschema that declares it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "enum":
                yield path, value
            else:
                yield from enums(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from enums(value, (*path, str(i)))


SCHEMA_ENUMS = dict(enums(SCHEMA))


def test_every_schema_enum_is_classified():
    unclassified = set(SCHEMA_ENUMS) - set(MIRRORS) - OWN_VOCABULARY
    assert not unclassified, f"enums neither in MIRRORS nor OWN_VOCABULARY: {sorted(unclassified)}"
    vanished = (set(MIRRORS) | OWN_VOCABULARY) - set(SCHEMA_ENUMS)
    assert not vanished, f"classified enums no longer in the schema: {sorted(vanished)}"


@pytest.mark.parametrize("path", sorted(MIRRORS), ids="/".join)
def test_schema_enum_equals_its_registry(path):
    source, names = MIRRORS[path]
    listed = SCHEMA_ENUMS[path]
    assert len(listed) == len(set(listed)), f"{'/'.join(path)}: repeated names in {listed}"
    assert set(listed) == names, (
        f"{'/'.join(path)} vs {source}: only in the schema {sorted(set(listed) - names)}, "
        f"only in {source} {sorted(names - set(listed))}"
    )


@pytest.mark.parametrize(("section", "registry"), [("encoders", ENCODERS), ("fusions", FUSIONS)], ids=["encoders", "fusions"])
def test_model_defaults_are_registered(section, registry):
    """jsonschema does not check defaults against their own enum."""
    default = SCHEMA["properties"]["model"]["properties"][section]["default"]
    assert set(default) <= set(registry), f"model.{section} default names unregistered {sorted(set(default) - set(registry))}"
