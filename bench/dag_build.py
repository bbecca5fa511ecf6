"""How long Snakemake takes to build the full benchmark's DAG (every dataset x encoder x
fusion x seed), as ``snakemake all --dry-run`` on ``config.yaml`` in an empty working folder.

Timed: the whole command (interpreter start, Snakefile parsing, config validation, DAG
building, the job summary), with the seed list set on the command line as a user would.
``snakemake --version`` is timed too: the part of every command that is not the workflow.
Variants alternate over repeats; the fastest counts.

Run: ``.venv/bin/python -m bench.dag_build`` (about 1 minute on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    ROOT,
    Target,
    base_parser,
    fastest,
    interleaved,
    machine,
    parse,
    save,
    table,
)

NAME = "dag_build"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def dry_run_args(configfile: Path, seeds: int) -> list[str]:
    """The documented workstation command as a dry run, with ``seeds`` seeds set by --config."""
    seed_list = ", ".join(str(s) for s in range(seeds))
    return [
        "all", "--cores", "8", "--resources", "gpu=2", "--dry-run", "--quiet", "rules",
        "--configfile", str(configfile), "--config", f"train={{'seeds': [{seed_list}]}}",
    ]


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the dry run's summary (``<rule> <count>`` lines, ``total`` included)."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def timed_command(args: list[str], workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return {"seconds": seconds, "jobs": job_counts(done.stdout)}


def render(result: dict[str, Any]) -> str:
    r = result["results"]
    startup = r["startup"]["seconds"]
    variants = sorted(r["variants"], key=lambda v: v["seeds"])
    rows = [
        [
            f"{v['seeds']} seed(s)", f"{v['jobs'].get('train', 0):,}", f"{v['jobs'].get('total', 0):,}",
            f"{v['seconds']:.2f}", f"{v['seconds'] - startup:.2f}",
        ]
        for v in variants
    ]
    lines = [
        (
            f"Config `{result['setup']['configfile']}`; fastest of {result['setup']['repeats']} alternating runs. "
            f"Start-up alone (`snakemake --version`): {startup:.2f} s."
        )
    ]
    if len(variants) > 1:
        small, large = variants[0], variants[-1]
        added = large["jobs"]["total"] - small["jobs"]["total"]
        lines.append(
            f"Each job beyond the {small['seeds']}-seed DAG adds {1000 * (large['seconds'] - small['seconds']) / added:.1f} ms "
            f"({added:,} more jobs); the rest is Snakefile parsing, config validation and start-up."
        )
    return "\n\n".join([table(["seed list", "train jobs", "all jobs", "seconds", "seconds beyond start-up"], rows), " ".join(lines)])


def targets(result: dict[str, Any]) -> list[Target]:
    """The issue asks for this figure without a target."""
    largest = max(result["results"]["variants"], key=lambda v: v["seeds"])
    return [
        Target(
            "Full benchmark DAG (dry run)", "none set",
            f"{largest['seconds']:.1f} s for {largest['jobs'].get('total', 0):,} jobs ({largest['seeds']} seeds)",
            None,
            "start-up and Snakefile parsing are most of it; each further job adds milliseconds (see the section)",
        )
    ]


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0], devices=False)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--seeds", default="1,5", help="comma-separated seed counts, one dry run each")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the fastest counts")
    args = parse(parser, argv)
    if args.quick:
        args.configfile, args.seeds, args.repeats = ROOT / "config" / "demo.yaml", "1", 1
    started = machine(torch.device("cpu"))
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        commands: dict[str, list[str]] = {"startup": ["--version"], **{str(n): dry_run_args(args.configfile, n) for n in seeds}}

        def variant(command: list[str]) -> Callable[[int], dict[str, Any]]:
            return lambda attempt: timed_command(command, Path(tmp))

        best = {name: fastest(runs) for name, runs in interleaved({name: variant(c) for name, c in commands.items()}, args.repeats).items()}
    results = {"startup": best.pop("startup"), "variants": [{"seeds": int(name), **run} for name, run in best.items()]}
    setup = {"configfile": os.path.relpath(args.configfile, ROOT), "seeds": seeds, "repeats": args.repeats}
    print(save(args.out, NAME, argv, started, setup, results))


if __name__ == "__main__":
    main(sys.argv[1:])
