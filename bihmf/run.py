"""The run folder: where one training run's files lie, what they hold, reading and writing them.

``results/runs/<dataset>/<encoder>/<fusion>/seed<k>/`` holds

* ``metrics.json``: a :class:`RunRecord`: identity, metrics per split and test subset, best
  epoch, provenance (hashes, versions, the ESM cache layout, cost);
* ``model.pt``: a :class:`SavedModel`: best-epoch weights, the :class:`RunSpec`, the model config;
* ``curve.csv``: per epoch the training loss, the validation metrics and the seconds it took;
* ``test_predictions.parquet``: per test protein the task's evaluation rows (the report's bootstrap);
* ``last.pt``: the resume state of a run in progress (training's own format).

Training writes them, the rules declare them, the report and ``bihmf predict`` read them; all
take the layout, the names and the parsing from here, so the writer and the readers cannot drift.
The run's identity (:func:`run_hash`, which decides whether ``last.pt`` may be resumed) and
the parts of the provenance that do not depend on training (versions, commit, the cache as
`bihmf predict` finds it again) are assembled here too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch import Tensor

from bihmf.esm_cache import CacheInfo
from bihmf.integrity import WRITE_OPTIONS, load_checkpoint, read_table
from bihmf.io import atomic_output, read_json, write_json_atomic, write_text_atomic, write_torch_atomic
from bihmf.models.fusion import FusionContext
from bihmf.models.model import reads_esm
from bihmf.tasks.metrics import is_metric

RUNS_DIR = ("results", "runs")  # relative to the workflow folder
RUN_DIR = "results/runs/{dataset}/{encoder}/{fusion}/seed{seed}"
# a run of an ablation variant (bihmf/benchmark.py): same files, one folder per ablation and variant
ABLATION_RUN_DIR = "results/ablations/{ablation}/{variant}/{dataset}/{encoder}/{fusion}/seed{seed}"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
CURVE_FILE = "curve.csv"
TEST_PREDICTIONS_FILE = "test_predictions.parquet"
LAST_CHECKPOINT = "last.pt"
PREDICTION_KEYS = ("protein_id", "subset")  # columns of test_predictions.parquet that are not task outputs
# provenance that `bihmf predict` rebuilds the model's inputs from
REQUIRED_PROVENANCE = ("esm_cache", "ligand_atoms", "esm_checkpoint_sha256", "packages", "train_config")
IDENTITY = ("dataset", "encoder", "fusion", "seed", "task")

RunKey = tuple[str, str, int]  # encoder, fusion, seed
Predictions = dict[str, np.ndarray]  # one run's test rows: protein_id, subset and the task's outputs


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    encoder: str
    fusion: str
    seed: int
    task: str
    task_options: dict[str, Any] = field(default_factory=dict)  # what the task declares, e.g. num_classes
    graph_residues: str = "all"  # "pocket": only residues marked in labels (LBA)


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def curve(self) -> Path:
        return self.path / CURVE_FILE

    @property
    def test_predictions(self) -> Path:
        return self.path / TEST_PREDICTIONS_FILE

    @property
    def last(self) -> Path:
        return self.path / LAST_CHECKPOINT

    def workflow_root(self) -> Path | None:
        """The workflow folder above a run at results/runs/<dataset>/<encoder>/<fusion>/seed<k>, if it is one."""
        parts = self.path.resolve().parts
        if len(parts) > 6 and parts[-6:-4] == RUNS_DIR and parts[-1].startswith("seed"):
            return Path(*parts[:-6])
        return None


@dataclass(frozen=True)
class RunRecord:
    """``metrics.json``: ``metrics`` maps split -> name -> value as written, registered metrics
    (None where undefined) and the counts beside them (e.g. PSR's ``n_groups``)."""

    path: Path
    dataset: str
    encoder: str
    fusion: str
    seed: int
    task: str
    metrics: dict[str, dict[str, float | None]]
    best_epoch: int | None
    epochs_run: int | None
    provenance: dict[str, Any]

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path.parent)

    @property
    def key(self) -> RunKey:
        return (self.encoder, self.fusion, self.seed)

    @property
    def label(self) -> str:
        return f"{self.encoder}/{self.fusion} seed {self.seed}"

    @property
    def scores(self) -> dict[str, dict[str, float | None]]:
        """Split -> registered metric -> value (None: undefined)."""
        return {split: {k: v for k, v in values.items() if is_metric(k)} for split, values in self.metrics.items()}

    @property
    def auxiliary(self) -> dict[str, float]:
        """"<split> <key>" -> the numbers beside the metrics."""
        return {f"{split} {k}": v for split, values in self.metrics.items() for k, v in values.items() if not is_metric(k)}

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "path"}


def write_record(record: RunRecord) -> None:
    write_json_atomic(record.path, record.as_json())


def _finite(value: Any, where: str, path: Path) -> float:
    """A diverged run must fail its readers (naming file and key), not average into a table."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: value at {where} is not a finite number: {value!r}")
    return float(value)


def _required(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in raw:
        raise ValueError(f"{path}: missing required key {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        raise ValueError(f"{path}: key {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _split_values(split: str, values: Any, path: Path) -> dict[str, float | None]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{path}: key metrics.{split} must be a non-empty mapping of metric -> value")
    return {
        name: None if value is None and is_metric(name) else _finite(value, f"metrics.{split}.{name}", path)
        for name, value in values.items()
    }


def read_record(path: Path) -> RunRecord:
    """Parse and validate one ``metrics.json``; every error names the file and the key."""
    path = Path(path)
    raw = read_json(path, dict, "a JSON object")
    ident = {key: _required(raw, key, str, path) for key in ("dataset", "encoder", "fusion", "task")}
    seed = _required(raw, "seed", int, path)
    splits = _required(raw, "metrics", dict, path)
    if not splits:
        raise ValueError(f"{path}: key 'metrics' must be a non-empty mapping of split -> metrics")
    metrics = {split: _split_values(split, values, path) for split, values in splits.items()}
    return RunRecord(path=path, seed=seed, metrics=metrics, best_epoch=raw.get("best_epoch"),
                     epochs_run=raw.get("epochs_run"), provenance=raw.get("provenance", {}), **ident)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("bihmf", "torch", "torch-geometric", "fair-esm", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def run_hash(spec: RunSpec, model_cfg: dict[str, Any], train_cfg: dict[str, Any], data_sha: str, cache_sha: str) -> str:
    """Identity of a run for resuming (``last.pt``) and its ``config_hash``; the job's threads,
    memory and time limit are excluded (they do not change the recipe)."""
    recipe = {k: v for k, v in train_cfg.items() if k not in {"threads", "mem_mb", "runtime_min"}}
    return config_hash({"spec": asdict(spec), "model": model_cfg, "train": recipe, "data": data_sha, "cache": cache_sha})


def cache_provenance(folder: RunFolder, metadata: dict[str, str], layers: list[int], index: Path) -> dict[str, Any]:
    """The ESM cache a run read, as its provenance records it: what `bihmf predict` needs to
    embed new sequences exactly like the cache, and the cache's index relative to the run
    folder (:attr:`TrainedRun.esm` reads it back)."""
    return {
        "esm_checkpoint_sha256": metadata["checkpoint_sha256"],
        "esm_layers_cached": layers,
        "esm_cache": {**metadata, "index": os.path.relpath(index, folder.path)},
    }


@dataclass(frozen=True)
class SavedModel:
    """``model.pt``: the best epoch's weights and what builds the model they fit."""

    spec: RunSpec
    model_config: dict[str, Any]
    state_dict: dict[str, Tensor]
    epoch: int


def write_model(path: Path, saved: SavedModel) -> None:
    write_torch_atomic(path, {"state_dict": saved.state_dict, "spec": asdict(saved.spec), "model_config": saved.model_config,
                              "epoch": saved.epoch})


def read_model(path: Path) -> SavedModel:
    saved = load_checkpoint(path)
    return SavedModel(RunSpec(**saved["spec"]), saved["model_config"], saved["state_dict"], saved["epoch"])


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def write_test_predictions(path: Path, table: pa.Table) -> None:
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, **WRITE_OPTIONS)


def read_test_predictions(path: Path) -> Predictions:
    """A run's test predictions as column arrays; a missing column is an error naming the file."""
    table = read_table(path)
    absent = [c for c in PREDICTION_KEYS if c not in table.column_names]
    if absent:
        raise ValueError(f"{path}: test predictions lack column(s) {absent}")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


@dataclass(frozen=True)
class TrainedRun:
    """A finished run as a model user needs it: its record and its saved model."""

    folder: RunFolder
    record: RunRecord
    saved: SavedModel

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def spec(self) -> RunSpec:
        return self.saved.spec

    @property
    def model_cfg(self) -> dict[str, Any]:
        return self.saved.model_config

    @property
    def provenance(self) -> dict[str, Any]:
        return self.record.provenance

    @property
    def esm(self) -> dict[str, str]:
        """The metadata of the embedding cache the model read in training, and where that cache lies."""
        return self.provenance["esm_cache"]

    @property
    def cache(self) -> CacheInfo:
        """The typed metadata of that cache (a run's copy, named by its metrics file)."""
        return CacheInfo.parse(self.esm, self.folder.metrics)

    @property
    def esm_layers(self) -> list[int]:
        return list(self.cache.layers)

    @property
    def context(self) -> FusionContext:
        return FusionContext.of(self.model_cfg, self.cache.embed_dim, self.cache.esm_depth, self.cache.layers)

    @property
    def reads_esm(self) -> bool:
        return reads_esm(self.spec.fusion, self.context)

    @property
    def uses_ligand(self) -> bool:
        return bool(self.provenance["ligand_atoms"])


def load_trained(path: Path) -> TrainedRun:
    """Read a finished run folder; a missing file, an old format or files of two runs is a ValueError."""
    folder = RunFolder(Path(path))
    for name, file in ((MODEL_FILE, folder.model), (METRICS_FILE, folder.metrics)):
        if not file.is_file():
            raise ValueError(f"{folder.path}: no {name}; give a finished run folder {RUN_DIR.replace('{', '<').replace('}', '>')}")
    record = read_record(folder.metrics)
    missing = [key for key in REQUIRED_PROVENANCE if key not in record.provenance]
    if missing:
        raise ValueError(f"{folder.metrics}: provenance lacks {missing} (written by an older bihmf); retrain the run")
    saved = read_model(folder.model)
    differing = [key for key in IDENTITY if getattr(record, key) != getattr(saved.spec, key)]
    if differing:
        raise ValueError(f"{folder.path}: {MODEL_FILE} and {METRICS_FILE} disagree on {differing}; they belong to different runs")
    return TrainedRun(folder, record, saved)
