"""The cost of every attempt at a run, kept in its run folder so that resumed runs count in full.

Snakemake's ``benchmark:`` file of a job is rewritten by each attempt, so a run killed twice
and resumed shows only its last attempt's time. Training therefore records its own process in
``<run folder>/attempts.json``: one entry per attempt (a process; its PID and start time tell
attempts apart), rewritten when training starts, after every epoch and at the end. A killed
attempt keeps what it recorded at its last finished epoch, which is what the resume reuses.
The report sums the entries (:func:`attempt_costs`).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bihmf.io import read_json, write_json_atomic

ATTEMPTS_FILE = "attempts.json"


def process_start() -> float:
    """When this process started (Linux: from /proc, so interpreter start-up and imports count);
    elsewhere when this module was imported, early in a training job."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
    return boot + ticks / os.sysconf("SC_CLK_TCK")


STARTED = process_start()


def _peak_gpu_mb() -> float | None:
    """Peak GPU memory of this process, when it used CUDA (torch is never imported for this)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def this_attempt() -> dict[str, Any]:
    """Time and peak memory of this process so far."""
    times = os.times()
    return {
        "pid": os.getpid(), "host": socket.gethostname(), "started": STARTED,
        "wall_s": time.time() - STARTED,
        "cpu_s": times.user + times.system + times.children_user + times.children_system,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": _peak_gpu_mb(),
    }


def read_attempts(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / ATTEMPTS_FILE
    if not path.exists():
        return []
    return read_json(path, list, "a list of attempts")


def record_attempt(folder: Path) -> None:
    """Write this attempt's cost so far into the run folder, beside the earlier attempts'."""
    now = this_attempt()
    earlier = [a for a in read_attempts(folder) if (a.get("pid"), a.get("host"), a.get("started")) != (now["pid"], now["host"], now["started"])]
    write_json_atomic(Path(folder) / ATTEMPTS_FILE, [*earlier, now])


def start_attempt(folder: Path, resumed: bool) -> None:
    """Record this attempt; a run that starts afresh (nothing to resume) drops the attempts of
    whatever run the folder held before, so only this run's attempts are summed."""
    if not resumed:
        (Path(folder) / ATTEMPTS_FILE).unlink(missing_ok=True)
    record_attempt(folder)


@dataclass(frozen=True)
class AttemptCosts:
    """What every attempt at a run took together."""

    attempts: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None


def attempt_costs(folder: Path) -> AttemptCosts | None:
    """Sum of the attempts' time, the highest peak memory; None for a run that recorded none."""
    attempts = read_attempts(folder)
    if not attempts:
        return None
    gpu = [a["peak_gpu_mb"] for a in attempts if a.get("peak_gpu_mb") is not None]
    return AttemptCosts(
        len(attempts), sum(a["wall_s"] for a in attempts), sum(a["cpu_s"] for a in attempts),
        max(a["peak_rss_mb"] for a in attempts), max(gpu) if gpu else None,
    )
