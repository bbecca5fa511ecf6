"""What every benchmark of the suite shares: machine description, result files, timing,
child processes, benchmark inputs and Markdown tables.

Each benchmark is a module ``bench/<name>.py`` with ``main(argv)`` (runnable alone as
``python -m bench.<name>``), ``render(result) -> str`` (its Markdown tables) and
``targets(result) -> list[Target]`` (the issue's targets, met or not, with the reason).
Results go to ``bench/results/<name>.json`` (CPU) or ``<name>-cuda.json`` (GPU), so a CPU run
never overwrites GPU numbers and the report can show both.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bihmf.benchmark import load_config, validate_config
from bihmf.data import DATASETS
from bihmf.data.schema import ProteinRecord
from bihmf.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = ".venv/bin/python"  # how BENCHMARKS.md spells the interpreter in commands
AMINO = "ACDEFGHIKLMNPQRSTVWY"

# Shapes of the released ESM-2 models (layers x width, heads); the suite writes random
# weights of these shapes, so timings and sizes are those of the real models.
ESM_SHAPES: dict[str, dict[str, int]] = {
    "t6": {"num_layers": 6, "embed_dim": 320, "attention_heads": 20},
    "t12": {"num_layers": 12, "embed_dim": 480, "attention_heads": 20},
    "t30": {"num_layers": 30, "embed_dim": 640, "attention_heads": 20},
    "t33": {"num_layers": 33, "embed_dim": 1280, "attention_heads": 20},
}


@dataclass(frozen=True)
class Target:
    """One figure the benchmarks issue asks for: the target (if it sets one), what was
    measured, whether it is met (None: a figure without a target) and why."""

    name: str
    goal: str
    measured: str
    met: bool | None
    note: str

    @property
    def status(self) -> str:
        return {True: "met", False: "not met", None: "reported"}[self.met]


# ---------------------------------------------------------------- machine and result files


def cores() -> int:
    """CPU cores this process may run on (what a job on a shared node actually gets)."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to compare a result with their own machine.

    The 1-minute load average is recorded because the suite often runs on shared machines,
    where it explains slow absolute numbers (the ratios are measured side by side).
    """
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": cores(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def result_path(out: Path, name: str, device_type: str) -> Path:
    return out / (f"{name}.json" if device_type == "cpu" else f"{name}-{device_type}.json")


def command(name: str, argv: list[str]) -> str:
    """The command line that reproduces a result, as BENCHMARKS.md shows it."""
    return " ".join([PYTHON, "-m", f"bench.{name}", *map(shlex.quote, argv)])


def save(out: Path, name: str, argv: list[str], machine_info: dict[str, Any], setup: dict, results: dict) -> Path:
    """Write one benchmark's result file: command, machine (read when it started), how long it
    took, setup and measurements."""
    path = result_path(out, name, machine_info["device"])
    wall = (datetime.now(UTC) - datetime.fromisoformat(machine_info["date"])).total_seconds()
    payload = {"bench": name, "command": command(name, argv), "machine": machine_info, "wall_seconds": round(wall), "setup": setup, "results": results}
    write_json_atomic(path, payload)
    return path


def base_parser(description: str, *, devices: bool = True) -> argparse.ArgumentParser:
    """Options every benchmark takes: output folder, threads, quick mode (and device)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the result JSON")
    parser.add_argument("--threads", type=int, default=cores(), help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benchmark runs, measures nothing")
    if devices:
        parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a benchmark's arguments and set torch's thread count.

    Quick runs use one thread: tiny sizes gain nothing from more, and on a busy machine
    threads that wait for each other at every parallel region cost more than the work.
    """
    args = parser.parse_args(argv)
    if args.quick:
        args.threads = 1
    torch.set_num_threads(args.threads)
    return args


# ---------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall clock measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(sides: dict[str, Callable[[int], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Run every side ``repeats`` times, alternating sides, and keep every measurement.

    Alternating makes a change in machine load (other jobs on a shared node) hit all sides
    alike; callers keep the fastest run of each side as the least disturbed one.
    """
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for attempt in range(repeats):
        for side, run in sides.items():
            runs[side].append(run(attempt))
    return runs


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda run: run["seconds"])


def timed(work: Callable[[], Any], device: torch.device) -> float:
    """Seconds of ``work()``, GPU work included."""
    sync(device)
    started = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - started


def _status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` (kB there) in MiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} line: the suite measures memory on Linux only")
    return int(match.group(1)) / 1024


def memory_mb(device: torch.device) -> float:
    """Memory in use now: the resident set on CPU, allocated tensors on GPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _status_mb("VmRSS")


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window at the memory in use now.

    On CPU, writing 5 to ``/proc/self/clear_refs`` resets the kernel's high-water mark of the
    resident set (Linux >= 4.0), so a measurement is not hidden behind an earlier, larger peak
    (parsing inputs, loading a model twice).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb(device: torch.device) -> float:
    """Peak memory since the last :func:`reset_peak`: resident set on CPU, allocated tensors on GPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_mb("VmHWM")


def run_child(name: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -m bench.<name> <args>`` in a fresh process; return the JSON line it prints last.

    A fresh process per measurement keeps one side's allocator state (memory freed but kept
    by malloc, warm caches) from flattering or penalising the next.
    """
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench.{name} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def emit(result: dict[str, Any]) -> None:
    """A child's answer to :func:`run_child`: one JSON line on stdout."""
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- inputs


def random_sequence(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(AMINO) for _ in range(length))


def sequence_record(protein_id: str, sequence: str, group: str = "") -> ProteinRecord:
    """A single-chain protein with only a sequence (the embed stage reads nothing else)."""
    n = len(sequence)
    return ProteinRecord(
        protein_id=protein_id, pdb_id="none", split="test", subset="", sequence=sequence, chain_ids=("A",) * n,
        resnums=np.arange(n, dtype=np.int32), icodes=("",) * n, coords=np.zeros((n, 5, 3), np.float32),
        labels=np.zeros(n, np.int8), weight=1.0, group=group,
    )


def unpack(url: str, out: Path) -> None:
    """Unpack a demo/fixture archive named by its config URL (``file:<path in the repo>``)."""
    archive = ROOT / url.removeprefix("file:")
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(out)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(out, filter="data")


def demo_specs() -> dict[str, dict]:
    """The offline demo's datasets (real structures, in each dataset's raw format)."""
    return load_config(ROOT / "config" / "demo.yaml")["datasets"]


def demo_records(dataset: str = "ppbs_demo") -> list[ProteinRecord]:
    """Every protein of one demo dataset, parsed by its real parser."""
    spec = demo_specs()[dataset]
    with tempfile.TemporaryDirectory() as raw:
        unpack(spec["download"]["archive"]["url"], Path(raw))
        return DATASETS[spec["kind"]].parse(Path(raw), spec)[0]


@functools.cache
def schema_defaults() -> dict[str, Any]:
    """The config schema's defaults (model, train, esm), as a config without those sections gets
    them; shared and cached, so callers read it and never change it."""
    minimal = {"datasets": {"x": {"kind": "ppbs", "task": "residue_binary", "download": {}, "label_files": [{"file": "f", "split": "train"}]}}}
    return validate_config(minimal)


# ---------------------------------------------------------------- Markdown


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; every column but the first is right-aligned (they hold numbers)."""
    lines = ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ordered(results: dict[str, Any], order: Any) -> list[tuple[str, Any]]:
    """Items of ``results`` in the order of ``order``'s keys (result files store keys sorted)."""
    return [(key, results[key]) for key in order if key in results]


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def machine_line(machine_info: dict[str, Any]) -> str:
    """One line naming the machine a result came from."""
    device = f"GPU {machine_info['gpu']} (CUDA {machine_info['cuda']}), " if machine_info["device"] == "cuda" else ""
    return (
        f"{machine_info['date'][:10]}, {device}{machine_info['cpu']}, {machine_info['cores']} cores "
        f"({machine_info['torch_threads']} torch threads), {machine_info['memory_gib']} GiB, Python {machine_info['python']}, "
        f"torch {machine_info['torch']}; 1-min load average {machine_info['load_average_1min']} at the start"
    )
