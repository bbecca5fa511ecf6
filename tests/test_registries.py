"""The registries are the one list of dataset kinds, tasks, encoders and fusions. The config
schema does not repeat them: each such choice list is marked ``x-registry`` and filled from the
registry when the schema is loaded (``bihmf.config.load_schema`` with ``bihmf.benchmark.registries``), so a typo in a config is an
error before any job runs, and a new encoder (fusion, task, dataset kind) is one module plus
one registry line.

Every enum written in the schema file must be a closed vocabulary of its own; an enum that
repeats registry names, or one added later without that decision, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from bihmf.benchmark import load_config, registries
from bihmf.config import SCHEMA_PATH, ConfigError, load_schema
from bihmf.data import DATASETS
from bihmf.models import encoders
from bihmf.models.encoders import ENCODERS
from bihmf.models.fusion import FUSIONS
from bihmf.tasks import TASKS
from bihmf.tasks.heads import READOUTS
from tests.conftest import ROOT

RAW_SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())

DATASET = ("properties", "datasets", "additionalProperties", "properties")
MODEL = ("properties", "model", "properties")
ABLATION = ("properties", "ablations", "items", "properties")

# schema path of a registry-backed choice list -> the registry it must equal
REGISTRY_LISTS: dict[tuple[str, ...], list[str]] = {
    (*DATASET, "kind"): list(DATASETS),
    (*DATASET, "task"): list(TASKS),
    (*MODEL, "encoders", "items"): list(ENCODERS),
    (*MODEL, "fusions", "items"): list(FUSIONS),
    (*MODEL, "readout"): list(READOUTS),
    (*ABLATION, "encoders", "items"): list(ENCODERS),
    (*ABLATION, "fusions", "items"): list(FUSIONS),
}

# enums written in the file: their own vocabulary, no registry holds these names
OWN_VOCABULARY: set[tuple[str, ...]] = {
    ("definitions", "label_file", "properties", "split"),
    (*MODEL, "layer_pairing"),
    (*DATASET, "graph_residues"),
    ("properties", "recipe"),
    (*DATASET, "train", "propertyNames"),
    (*MODEL, "fusion_direction"),
    ("properties", "esm", "properties", "precomputed", "properties", "format"),
    ("properties", "esm", "properties", "precision"),
}


def keyed(node: Any, key: str, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every value of ``key`` in a schema tree, with the path of the subschema that holds it."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield path, value
            else:
                yield from keyed(value, key, (*path, str(name)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from keyed(value, key, (*path, str(i)))


def test_every_enum_written_in_the_schema_is_its_own_vocabulary():
    written = dict(keyed(RAW_SCHEMA, "enum"))
    assert set(written) == OWN_VOCABULARY
    every_registered = {name for names in registries().values() for name in names}
    for path, names in written.items():
        assert not set(names) & every_registered, f"{'/'.join(path)} repeats registry names"


def test_registry_lists_are_filled_from_the_registries():
    assert dict(keyed(RAW_SCHEMA, "x-registry")).keys() == REGISTRY_LISTS.keys()
    filled = dict(keyed(load_schema(registries()), "enum"))
    for path, names in REGISTRY_LISTS.items():
        assert filled[path] == names, "/".join(path)


def test_per_dataset_train_keys_are_the_global_train_keys():
    listed = dict(keyed(RAW_SCHEMA, "enum"))[(*DATASET, "train", "propertyNames")]
    assert set(listed) == set(RAW_SCHEMA["properties"]["train"]["properties"])


@pytest.mark.parametrize(("section", "registry"), [("encoders", ENCODERS), ("fusions", FUSIONS)], ids=["encoders", "fusions"])
def test_model_defaults_are_registered(section, registry):
    """jsonschema does not check defaults against their own enum."""
    default = RAW_SCHEMA["properties"]["model"]["properties"][section]["default"]
    assert set(default) <= set(registry), f"model.{section} default names unregistered {sorted(set(default) - set(registry))}"


def test_one_registry_line_makes_an_encoder_configurable(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config" / "demo.yaml").read_text() + "\n")
    override = tmp_path / "override.yaml"
    override.write_text("model: {encoders: [my_encoder]}\nablations: []\n")  # the demo's ablations train gvp
    with pytest.raises(ConfigError, match=r"^invalid bihmf config: model/encoders/0: 'my_encoder' is not one of"):
        load_config(config, override)
    monkeypatch.setitem(encoders.ENCODERS, "my_encoder", ENCODERS["gvp"])
    assert load_config(config, override)["model"]["encoders"] == ["my_encoder"]
