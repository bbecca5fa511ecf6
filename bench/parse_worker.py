"""The preprocessing benchmark's worker side: parse one dataset's raw folder once.

A module of its own so that the spawned workers import the parsers and nothing else (not
torch, not the rest of the suite): their start-up stays short, and it happens before the
clock starts anyway.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bihmf.data import DATASETS

Task = tuple[str, str, dict]  # dataset name, raw folder, dataset spec


def ready(barrier: Any) -> None:
    """Pool initializer: the parsers are imported (with this module); wait for every worker."""
    barrier.wait()


def parse_task(task: Task) -> dict[str, Any]:
    """Parse one dataset's raw folder once; stamps on the clock every process shares."""
    name, raw, spec = task
    started = time.clock_gettime(time.CLOCK_MONOTONIC)
    records, _ = DATASETS[spec["kind"]].parse(Path(raw), spec)
    return {
        "dataset": name, "entries": len(records), "residues": sum(len(r.sequence) for r in records),
        "start": started, "end": time.clock_gettime(time.CLOCK_MONOTONIC),
    }
