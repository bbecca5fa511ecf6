"""What the user of ``bihmf predict`` chooses, and the two ways a prediction fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bihmf.config import SCHEMA_PATH

TABLE_FORMATS = ("csv", "parquet")


class RunError(Exception):
    """The run cannot be used as asked: nothing is predicted (deliberately not a ValueError,
    so that the per-file handler never mistakes it for one file's bad input)."""


class InputError(ValueError):
    """One input file cannot be predicted; the other files go on."""


def esm_default(key: str) -> Any:
    """A default of the config schema's ``esm`` section (one place for defaults: the schema)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema["properties"]["esm"]["properties"][key]["default"]


@dataclass(frozen=True)
class PredictOptions:
    """What the user chooses; everything about the model comes from the run."""

    chains: tuple[str, ...] | None = None  # None: every protein chain
    per_chain: bool = False  # one protein per chain instead of one per file
    model_index: int = 0  # 0-based model of multi-model files
    ligands: tuple[Path, ...] = ()  # one for every file, or one per file in order
    pocket_cutoff: float | None = None  # Å; needed by runs on pocket graphs
    table_format: str = "csv"
    structures: bool = True  # B-factor copies and plots for per-residue tasks
    esm_checkpoint: Path | None = None  # default: the workflow's resources/esm/<name>
    cache: Path | None = None  # default: the cache the run was trained on
    token_budget: int = field(default_factory=lambda: esm_default("token_budget"))
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch; None: torch's default
