"""The package's layering and its declarations: who may import the training loop, and what the
registries answer for the DAG, the report and `bihmf predict`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bihmf.models.fusion import FUSIONS, bihmf_fusions, reference_fusion
from bihmf.tasks import TASKS, task_options

ROOT = Path(__file__).resolve().parents[1]
TRAINING_IMPORTERS = {"workflow_scripts/train.py", "bihmf/plan_timing.py"}  # besides bench/ and the tests; plan times the real loop


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_only_the_train_glue_and_bench_import_the_training_loop():
    sources = [p for folder in ("bihmf", "workflow_scripts") for p in (ROOT / folder).rglob("*.py")]
    importers = {str(p.relative_to(ROOT)) for p in sources if "bihmf.training" in _imported_modules(p)}
    assert importers == TRAINING_IMPORTERS


def _training_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "bihmf.training"
            for alias in node.names}


def test_training_importers_use_only_its_public_names():
    names = {path: _training_names(ROOT / path) for path in TRAINING_IMPORTERS}
    assert all(names.values()), names  # each importer is seen by the check
    assert {path: sorted(n for n in found if n.startswith("_")) for path, found in names.items()} == {p: [] for p in names}


def test_fusions_declare_their_report_roles():
    assert bihmf_fusions() == ("bihmf_local", "bihmf_global")
    assert reference_fusion() == "struct_only"
    assert not any(cls.is_bihmf and cls.is_reference for cls in FUSIONS.values())


@pytest.mark.parametrize(("task", "expected"), [
    ("graph_classification", {"num_classes": 10}), ("residue_binary", {}), ("graph_regression", {}),
])
def test_tasks_declare_the_dataset_options_they_read(task, expected):
    assert task_options({"task": task, "num_classes": 10, "graph_residues": "all"}) == expected


def test_every_task_declares_the_prediction_protocol():
    for name, task in TASKS.items():
        assert isinstance(task.PER_RESIDUE, bool), name
        assert callable(task.outputs) and callable(task.output_columns), name
