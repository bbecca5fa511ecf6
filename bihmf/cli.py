"""The ``bihmf`` command: one subcommand per task a user runs outside the workflow.

Each subcommand is a function ``add_<name>(subparsers)`` that declares its arguments and sets
``handler``, a function from the parsed arguments to an exit status; :func:`build_parser` lists
them, so a new subcommand is one such function and one line there.

Exit status of ``predict``: 0 every file predicted, 1 some file failed (listed in the summary),
2 nothing predicted because the run or the arguments are unusable. ``plan``: 0 plan written,
2 the config, ``--mean-length`` or the calibration file is unusable. ``lock``: 0 lock written, 2 nothing to lock or the
existing lock is unreadable. ``check``: 0 nothing damaged (or all of it removed), 1 damaged files listed.
``resume``: Snakemake's status, or 1 while a run still works in the folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from bihmf import plan as cost_plan
from bihmf.benchmark import Benchmark
from bihmf.check import run_check
from bihmf.download import DownloadError
from bihmf.lock import LOCK_FILE, write_lock
from bihmf.plan_calibration import CalibrationError
from bihmf.predict import SUMMARY_FILE, TABLE_FORMATS, PredictOptions, RunError, predict
from bihmf.predict.options import esm_default
from bihmf.resume import StillRunning, resume

USAGE_ERROR = 2

log = logging.getLogger(__name__)


def _chain_list(text: str) -> tuple[str, ...]:
    chains = tuple(c.strip() for c in text.split(",") if c.strip())
    if not chains:
        raise argparse.ArgumentTypeError("give chain ids separated by commas, e.g. A or A,B")
    return chains


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    """The choices a prediction takes beyond the run, the files and the output folder
    (also what the workflow's ``predict_args`` may hold)."""
    parser.add_argument("--chains", type=_chain_list, help="chain ids to predict, comma-separated, _ for a blank id (default: every protein chain)")
    parser.add_argument("--per-chain", action="store_true", help="one protein per chain (as ppbs/react were trained) instead of one per file")
    parser.add_argument("--model", dest="model_index", type=int, default=0, help="0-based model of multi-model files (default: 0)")
    parser.add_argument(
        "--ligand", action="append", type=Path, default=[],
        help="ligand file (SDF/MOL2/PDB) for ligand-trained runs (lba): once for every file, or once per file in order",
    )
    parser.add_argument("--pocket-cutoff", type=_positive_float, help="Å from the ligand that defines the pocket (runs on pocket graphs)")
    parser.add_argument("--format", dest="table_format", choices=TABLE_FORMATS, default="csv", help="predictions table format")
    parser.add_argument("--no-structures", dest="structures", action="store_false", help="skip the B-factor copies and plots")
    parser.add_argument("--esm-checkpoint", type=Path, help="ESM checkpoint for chains not in the run's cache (default: the workflow's)")
    parser.add_argument("--cache", type=Path, help="embedding cache index to reuse (default: the one the run was trained on)")
    parser.add_argument("--token-budget", type=int, default=esm_default("token_budget"), help="tokens per ESM batch (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when present")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")


def add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict on your own PDB/mmCIF structures with a trained run",
        description=(
            "Apply a trained run (results/runs/<dataset>/<encoder>/<fusion>/seed<k>) to PDB/mmCIF files "
            "(gzip allowed) or folders of them. The run decides the model, the ESM checkpoint and layers "
            "and the graphs; outputs: predictions table, summary.json and, for per-residue tasks, "
            "B-factor structure copies and plots."
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, help="structure files or folders (searched for .pdb/.ent/.cif/.mmcif[.gz])")
    parser.add_argument("--run", required=True, type=Path, help="trained run folder (holds model.pt and metrics.json)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: %(default)s)")
    add_predict_options(parser)
    parser.set_defaults(handler=run_predict)


def options_of(args: argparse.Namespace) -> PredictOptions:
    return PredictOptions(
        chains=args.chains,
        per_chain=args.per_chain,
        model_index=args.model_index,
        ligands=tuple(args.ligand),
        pocket_cutoff=args.pocket_cutoff,
        table_format=args.table_format,
        structures=args.structures,
        esm_checkpoint=args.esm_checkpoint,
        cache=args.cache,
        token_budget=args.token_budget,
        device=args.device,
        threads=args.threads,
    )


def predict_options(argv: Sequence[str]) -> PredictOptions:
    """Options from command-line words (the workflow's ``predict_args``); a bad word exits with usage."""
    parser = argparse.ArgumentParser(prog="bihmf predict (predict_args)")
    add_predict_options(parser)
    return options_of(parser.parse_args(argv))


def run_predict(args: argparse.Namespace) -> int:
    try:
        summary = predict(args.run, args.files, args.out, options_of(args))
    except RunError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
    for line in summary["files"]:
        print(f"ok      {line['file']}: {line['proteins']} protein(s), {line['residues']} residues" if line["status"] == "ok" else f"FAILED  {line['error']}")
    print(f"{summary['succeeded']} succeeded, {summary['failed']} failed; predictions: {summary['predictions']}; summary: {args.out / SUMMARY_FILE}")
    return 0 if summary["failed"] == 0 else 1


def add_plan(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="cost plan before launch: jobs, residues, ESM cache size and projected training hours",
        description=(
            "Count the jobs per stage, the residues per dataset (protein tables when preprocessed, else published "
            "sizes) and the ESM cache's bytes of a config, and project the training hours of every dataset x "
            "encoder x fusion from a calibration of the real training step: measured now on --device (default: "
            "CUDA when visible), read from --calibration FILE (no timing), or, with neither and no GPU, the "
            "calibration shipped with the package (its device, date and versions are printed)."
        ),
    )
    parser.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="workflow config (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("."), help="workflow folder holding results/data (default: %(default)s)")
    parser.add_argument("--workflow", type=Path, default=Path("."),
                        help="workflow folder whose config/demo.yaml and demo archive calibrate the plan (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="device to calibrate on (default: CUDA when visible, else the shipped calibration)")
    parser.add_argument("--calibration", type=Path, metavar="FILE", help="price the plan from this calibration file; nothing is timed")
    parser.add_argument("--save-calibration", type=Path, metavar="FILE",
                        help="write the calibration measured now to FILE, for --calibration on another machine")
    parser.add_argument("--calibrate-steps", type=_positive_int, default=2, help="timed training steps per combination (default: %(default)s)")
    parser.add_argument("--calibrate-residues", type=_positive_int,
                        help="residues of demo chains per step (default: the config's train.residue_budget, at most all demo chains)")
    parser.add_argument("--width", type=_positive_int, help="hidden width for every model instead of the configured one (quick CPU plans)")
    parser.add_argument("--mean-length", action="append", default=[], metavar="DATASET=RESIDUES",
                        help="mean residues per protein of a dataset without a protein table (overrides the plan's estimate)")
    parser.add_argument("--out", type=Path, default=Path("results/plan"), help="folder for plan.csv (default: %(default)s)")
    parser.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    try:
        benchmark = Benchmark.load(args.configfile)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        log.error("%s: %s", args.configfile, exc)
        return USAGE_ERROR
    try:
        lengths = cost_plan.mean_lengths(args.mean_length, list(benchmark.config["datasets"]))
    except ValueError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
    if args.calibration is not None and (args.device or args.save_calibration):
        log.error("--calibration FILE prices the plan without timing: give it without --device or --save-calibration")
        return USAGE_ERROR
    try:
        calibration = cost_plan.choose_calibration(benchmark, args.calibration, args.device, args.save_calibration,
                                                   args.calibrate_steps, args.calibrate_residues, args.width, args.workflow)
    except CalibrationError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
    cost_plan.plan_run(benchmark, args.root, args.out, calibration, args.width, lengths)
    return 0


def add_lock(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lock",
        help="record the sha256 of every downloaded file and structure in a lock file to share with the config",
        description=(
            "Collect what the download jobs fetched (every URL and the sha256 of its bytes, recorded under "
            "<downloads>/seen/) into the lock file; later download jobs compare what they fetch with it and name "
            "every file that differs. Run it again to accept a change upstream. Writing it reruns no job."
        ),
    )
    parser.add_argument("--downloads", type=Path, default=Path("resources/downloads"), help="download cache (default: %(default)s)")
    parser.add_argument("--lock", type=Path, default=Path(LOCK_FILE), help="lock file, beside the config (default: %(default)s)")
    parser.set_defaults(handler=run_lock)


def run_lock(args: argparse.Namespace) -> int:
    try:
        counts = write_lock(args.downloads, args.lock)
    except DownloadError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
    for names in counts.values():
        for name, files in names.items():
            print(f"{name}: {files} files")
    datasets, checkpoints = counts["datasets"], counts["checkpoints"]
    also = f" and {len(checkpoints)} ESM checkpoints" if checkpoints else ""
    total = sum(datasets.values()) + sum(checkpoints.values())
    print(f"locked {total} files of {len(datasets)} datasets{also} in {args.lock}")
    return 0


def add_check(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="verify every protein table, ESM cache and run file; list or remove the damaged ones",
        description=(
            "Read every intermediate under ROOT/results in full (Parquet page checksums, protein value ranges, "
            "cache shards against their index, run records and checkpoints) and list the damaged files with the "
            "rule that rebuilds each. With --remove they are deleted, and the next `snakemake all` rebuilds exactly "
            "those and what depends on them. Exit status 1 when damage is found and not removed."
        ),
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="workflow folder holding results/ (default: %(default)s)")
    parser.add_argument("--remove", action="store_true", help="delete the damaged files")
    parser.set_defaults(handler=lambda args: run_check(args.root, args.remove))


def add_resume(subparsers: argparse._SubParsersAction) -> None:
    # prefix "+": every argument, options included, is the killed Snakemake command's and passes through
    parser = subparsers.add_parser(
        "resume",
        prefix_chars="+",
        help="continue a local run killed hard (kill -9, OOM killer): refuse while it still runs, else unlock and rerun",
        description="Give the killed command's Snakemake arguments, e.g. `bihmf resume all --cores 8 --resources gpu=2`.",
    )
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="the killed command's arguments")
    parser.set_defaults(handler=run_resume)


def run_resume(args: argparse.Namespace) -> int:
    try:
        return resume(args.snakemake_args)
    except StillRunning as error:
        print(f"bihmf resume: {error}", file=sys.stderr)
        return 1


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_predict, add_plan, add_resume, add_lock, add_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bihmf", description="Bi-HMF benchmark tools (the workflow itself runs with snakemake)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)
