"""Logging for workflow jobs: everything to the rule's ``log:`` file, warnings also to stderr."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path


def _log_uncaught(kind: type[BaseException], error: BaseException, trace) -> None:  # noqa: ANN001
    """A job's fatal error must be in its own log file, not only in Snakemake's console."""
    logging.getLogger("bihmf").critical("job failed", exc_info=(kind, error, trace))


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
    sys.excepthook = _log_uncaught
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
