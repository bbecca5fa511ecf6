"""Preprocessing throughput: entries/s and residues/s of every dataset parser on its demo
archive, and how throughput scales with the number of processes parsing at once.

The preprocess job has no parallel path inside it: it is one process per dataset, and
Snakemake runs the datasets' jobs side by side. Scaling is measured the same way: a pool of W
worker processes takes parse tasks (every dataset once, ``--repeat`` times over) from one
queue. Workers start and import the parsers before the clock starts; the wall time runs from
the first task's start to the last task's end (CLOCK_MONOTONIC, one clock for all processes).
Per-dataset rates come from the one-worker run.

Run: ``.venv/bin/python -m bench.preprocess_throughput`` (about 1 minute on 2 cores).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    Target,
    base_parser,
    cores,
    demo_specs,
    machine,
    ordered,
    parse,
    save,
    table,
    unpack,
)
from bench.parse_worker import Task, parse_task, ready

NAME = "preprocess_throughput"


def run_pool(tasks: list[Task], workers: int) -> dict[str, Any]:
    """All tasks on ``workers`` fresh processes (spawned: nothing inherited from this one)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=ready, initargs=(context.Barrier(workers),)) as pool:
        done = pool.map(parse_task, tasks, chunksize=1)
    wall = max(d["end"] for d in done) - min(d["start"] for d in done)
    entries, residues = sum(d["entries"] for d in done), sum(d["residues"] for d in done)
    per_dataset: dict[str, dict[str, float]] = {}
    for d in done:
        row = per_dataset.setdefault(d["dataset"], {"entries": d["entries"], "residues": d["residues"], "seconds": 0.0, "parses": 0})
        row["seconds"] += d["end"] - d["start"]
        row["parses"] += 1
    return {"workers": workers, "seconds": wall, "entries_per_s": entries / wall, "residues_per_s": residues / wall, "per_dataset": per_dataset}


def worker_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``, and ``limit`` itself."""
    counts = [1]
    while counts[-1] * 2 < limit:
        counts.append(counts[-1] * 2)
    return sorted({*counts, limit})


def render(result: dict[str, Any]) -> str:
    r = result["results"]
    single = next(run for run in r["runs"] if run["workers"] == 1)
    dataset_rows = [
        [name, str(d["entries"]), f"{d['residues']:,}", f"{d['parses'] * d['entries'] / d['seconds']:.1f}", f"{d['parses'] * d['residues'] / d['seconds']:,.0f}"]
        for name, d in ordered(single["per_dataset"], result["setup"]["datasets"])
    ]
    scaling_rows = [
        [
            str(run["workers"]), f"{run['seconds']:.2f}", f"{run['entries_per_s']:.1f}", f"{run['residues_per_s']:,.0f}",
            f"{run['entries_per_s'] / single['entries_per_s']:.2f}x", f"{100 * run['entries_per_s'] / single['entries_per_s'] / run['workers']:.0f} %",
        ]
        for run in r["runs"]
    ]
    setup = f"Each dataset parsed {result['setup']['repeat']} times per run; pools of {', '.join(map(str, result['setup']['workers']))} processes."
    return "\n\n".join([
        setup,
        table(["dataset (demo archive)", "entries", "residues", "entries/s", "residues/s"], dataset_rows),
        table(["worker processes", "wall seconds", "entries/s", "residues/s", "speed-up", "efficiency"], scaling_rows),
    ])


def targets(result: dict[str, Any]) -> list[Target]:
    """The issue asks for throughput on the machine's cores and its scaling, without a target."""
    runs = result["results"]["runs"]
    single, widest = runs[0], runs[-1]
    return [
        Target(
            "Preprocessing throughput", "none set",
            f"{widest['entries_per_s']:.1f} entries/s with {widest['workers']} processes on {result['machine']['cores']} cores, "
            f"{widest['entries_per_s'] / single['entries_per_s']:.2f}x the single process",
            None,
            "the preprocess job is one process per dataset; Snakemake runs datasets side by side, which is where cores help",
        )
    ]


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0], devices=False)
    parser.add_argument("--repeat", type=int, default=4, help="parses of each dataset per run")
    parser.add_argument("--workers", default=None, help="comma-separated pool sizes (default: 1, 2, 4, ... up to the cores)")
    args = parse(parser, argv)
    specs = demo_specs()
    if args.quick:
        args.repeat, args.workers, specs = 1, "1,2", {name: specs[name] for name in ("react_demo", "psr_demo")}
    workers = [int(w) for w in args.workers.split(",")] if args.workers else worker_counts(cores())
    started = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        raws = {}
        for name, spec in specs.items():
            raws[name] = Path(tmp) / name
            unpack(spec["download"]["archive"]["url"], raws[name])
        tasks = [(name, str(raws[name]), specs[name]) for _ in range(args.repeat) for name in specs]
        runs = [run_pool(tasks, count) for count in workers]
    setup = {"datasets": list(specs), "repeat": args.repeat, "workers": workers}
    print(save(args.out, NAME, argv, started, setup, {"runs": runs}))


if __name__ == "__main__":
    main(sys.argv[1:])
