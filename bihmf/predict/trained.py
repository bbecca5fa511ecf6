"""A run folder as a usable model: read through :mod:`bihmf.run`, checked against this bihmf."""

from __future__ import annotations

import logging
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from bihmf.models.model import ProteinModel, build_model
from bihmf.predict.options import RunError
from bihmf.run import TrainedRun, load_trained

log = logging.getLogger(__name__)


def load_run(run_dir: Path) -> TrainedRun:
    """Read a run folder; a missing file, an old format or a version mismatch is a RunError."""
    try:
        run = load_trained(run_dir)
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    check_version(run.provenance["packages"].get("bihmf", "unknown"), installed_version(), run_dir)
    return run


def installed_version() -> str:
    try:
        return version("bihmf")
    except PackageNotFoundError:
        return "not installed"


def release_series(text: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(trained: str, installed: str, run_dir: Path) -> None:
    """Same major version, and the same minor one while the major is 0 (where minors may break)."""
    old, new = release_series(trained), release_series(installed)
    if old is None or new is None:
        log.warning("%s: cannot compare bihmf versions (run: %s, installed: %s)", run_dir, trained, installed)
        return
    if old[0] != new[0] or (old[0] == 0 and old[1] != new[1]):
        raise RunError(
            f"{run_dir}: trained with bihmf {trained}, installed is {installed}; the model code may differ. "
            f"Install bihmf {old[0]}.{old[1]}.x or retrain the run"
        )


def build_trained_model(run: TrainedRun, device: torch.device) -> ProteinModel:
    """The run's model with its best-epoch weights, in eval mode."""
    model = build_model(run.spec.encoder, run.spec.fusion, run.spec.task, run.model_cfg, run.context, run.spec.task_options)
    try:
        model.load_state_dict(run.saved.state_dict)
    except RuntimeError as exc:
        raise RunError(f"{run.folder.model}: the weights do not fit the model this bihmf builds from the run's config: {exc}") from exc
    return model.to(device).eval()
