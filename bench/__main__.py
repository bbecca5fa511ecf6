"""The benchmark suite in one command: run the benchmarks, then rewrite BENCHMARKS.md.

    .venv/bin/python -m bench                       # every benchmark, then BENCHMARKS.md
    .venv/bin/python -m bench --only train_step     # some of them; the others keep their last results
    .venv/bin/python -m bench --only download_rehearsal   # the download rehearsal (not in the default run: hours)
    .venv/bin/python -m bench --report-only         # BENCHMARKS.md from bench/results/ as they are
    .venv/bin/python -m bench --quick --out /tmp/b --report /tmp/b/BENCHMARKS.md   # tiny sizes: does it run?

Benchmarks that can use a GPU run on the CPU and, when CUDA is visible, again on the GPU
(``--devices`` picks). Each benchmark runs in this process, one after the other; those that
measure memory start their own child processes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, ROOT
from bench.markdown import BENCHES, module, write_report

ON_DEVICE = {"embed_vs_extract", "train_step", "data_path", "model_cost", "precision"}  # the others are CPU work by nature
ON_REQUEST = {"download_rehearsal"}  # hours at the full count: run with --only, its result stays in the report


def plan(names: list[str], devices: list[str]) -> list[tuple[str, str]]:
    """(benchmark, device) runs in suite order; CPU-only benchmarks run when the CPU is asked for."""
    return [
        (name, device)
        for name in BENCHES
        if name in names
        for device in (devices if name in ON_DEVICE else ["cpu"])
        if device in devices
    ]


def bench_argv(device: str, quick: bool, out: Path) -> list[str]:
    """The arguments one benchmark gets: only what differs from its defaults, so the command
    recorded in its result file stays the short one a reader would type."""
    argv = ["--device", device] if device != "cpu" else []
    argv += ["--quick"] if quick else []
    return argv + (["--out", str(out)] if out != RESULTS_DIR else [])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [name for name in BENCHES if name not in ON_REQUEST]
    parser.add_argument("--only", default=",".join(default), help=f"comma-separated, of {', '.join(BENCHES)} (default: all but {', '.join(sorted(ON_REQUEST))})")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every benchmark runs, measures nothing")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the result files")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the result files")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHES)}")
    if not args.report_only:
        for name, device in plan(args.only.split(","), args.devices.split(",")):
            print(f"== bench.{name} on {device}", flush=True)
            module(name).main(bench_argv(device, args.quick, args.out))
    write_report(args.out, args.report)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main(sys.argv[1:])
