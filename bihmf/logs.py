"""Logging for workflow jobs: everything to the rule's ``log:`` file, warnings also to stderr.

Snakemake deletes a job's log file before every attempt, so a rerun (after a kill, a failure
or a SLURM retry) would erase what went wrong before. Each attempt is therefore also appended
to a hidden sidecar beside the log (``.<log name>.attempts``), which Snakemake does not know
about, and the log starts with the earlier attempts copied back: the log shows every attempt,
each under its own header.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

ATTEMPT_HEADER = "===== bihmf job attempt"


def _log_uncaught(kind: type[BaseException], error: BaseException, trace) -> None:  # noqa: ANN001
    """A job's fatal error must be in its own log file, not only in Snakemake's console."""
    logging.getLogger("bihmf").critical("job failed", exc_info=(kind, error, trace))


def attempts_path(log: Path) -> Path:
    """The sidecar that keeps every attempt of the job logging to ``log``."""
    return log.with_name(f".{log.name}.attempts")


def start_attempt(log: Path) -> None:
    """Copy earlier attempts back into ``log`` and open a new attempt under a header in both files."""
    history = attempts_path(log)
    earlier = history.read_text() if history.exists() else ""
    number = sum(line.startswith(ATTEMPT_HEADER) for line in earlier.splitlines()) + 1
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    header = f"{ATTEMPT_HEADER} {number} started {started} on {socket.gethostname()} (pid {os.getpid()}) =====\n"
    log.write_text(earlier + header)
    with history.open("a") as handle:
        handle.write(header)


def log_to(path: str | Path) -> None:
    """Send INFO+ to ``path`` (and its attempts sidecar) and WARNING+ to stderr (Snakemake shows
    stderr of failed jobs)."""
    log = Path(path)
    log.parent.mkdir(parents=True, exist_ok=True)
    start_attempt(log)
    files = [logging.FileHandler(target, mode="a") for target in (log, attempts_path(log))]
    for handler in files:
        handler.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[*files, console],
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
