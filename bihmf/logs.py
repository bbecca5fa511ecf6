"""Logging for workflow jobs: everything to the rule's ``log:`` file, warnings also to stderr."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Send INFO+ to ``path`` and WARNING+ to stderr (Snakemake shows stderr of failed jobs)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path, mode="w")
    file_handler.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[file_handler, console],
        force=True,
    )
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
