"""The known-answer benchmark: does the whole pipeline learn what was planted? (docs/known_answer.md)

``python -m bihmf.known_answer build`` writes the inputs (``bihmf.data.known_answer.build``: the
dataset archive and the planted embeddings); the workflow on ``config/known_answer.yaml``
preprocesses, imports the embeddings (``esm.precomputed``), trains and reports; ``check`` reads
the finished runs and asserts what must hold, printing one row per expectation, and exits 1
when any fails:

- ``g`` (geometry): structure-only learns it, sequence-only stays at chance;
- ``b`` (last embedding layer): sequence-only learns it, structure-only stays at chance;
- ``g XOR b``: both single streams at chance; every fusion learns it and beats both single
  streams in the report's paired test (protein bootstrap on one seed, t-test on several);
- ``b_early`` (layer 2 only): fusions pairing GNN depths with layers evenly (they read 2) learn
  it, their ``layer_pairing: last`` variants (layers 3, 4) and the fusions reading only the last
  layer stay at chance;
- one-way fusion directions keep both streams at the readout (it reads both), so they still
  learn ``g XOR b``; what each direction switches off is tested per stream in
  tests/test_fusion_direction.py;
- the protein-level mix: every fusion's Spearman significantly above 0 (one-sided p < 0.05 for
  its number of test proteins), and the fusions' median above the best single stream's. Ten test
  proteins cannot rank individual fusions against a single stream (one swapped pair moves
  Spearman by about 0.1); that per-fusion comparison is the XOR's, over about 500 residues.

Thresholds are criteria, not measurements: chance is ROC AUC 0.5 and a test split of about
500 residues puts an unlearned model within a few hundredths of it (``CHANCE`` allows 0.1);
"learned" is ``LEARNED``, well above any chance fluctuation and below what a model that found
the planted signal reaches (docs/known_answer.md lists the measured values behind this choice).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bihmf.benchmark import Benchmark, Run, load_config
from bihmf.data.known_answer import Planting, build
from bihmf.extract import safe_extract
from bihmf.models.model import NO_ENCODER
from bihmf.report.stats import (
    Bootstrapper,
    StatsSettings,
    compare_cell,
    is_better,
    is_significant,
)
from bihmf.run import (
    ABLATION_RUN_DIR,
    METRICS_FILE,
    RUN_DIR,
    TEST_PREDICTIONS_FILE,
    RunRecord,
    read_record,
    read_test_predictions,
)

CHANCE = 0.1  # |ROC AUC - 0.5| of a model that cannot see the bit
LEARNED = 0.7  # ROC AUC of a model that found the bit
LEARNED_XOR = 0.65  # the XOR compounds the errors on g and on b; the paired tests are its main criterion
RESIDUE_METRIC = "roc_auc"
PROTEIN_METRIC = "spearman"
SINGLE = ("struct_only", "seq_only")
EVENLY_PAIRED = ("bihmf_local", "bihmf_global", "token")  # fusions whose layer choice follows model.layer_pairing


@dataclass(frozen=True)
class Check:
    """One expectation and what was measured."""

    dataset: str
    run: str
    expectation: str
    value: float
    passed: bool

    def row(self) -> str:
        value = "-" if self.value != self.value else f"{self.value:.3f}"
        return f"| {self.dataset} | {self.run} | {self.expectation} | {value} | {'pass' if self.passed else 'FAIL'} |"


def _runs(root: Path, config: dict[str, Any], dataset: str, ablation: str | None = None, variant: str | None = None) -> dict[str, RunRecord]:
    """Seed 0 (the first seed) of every run of a dataset, by fusion; an ablation variant's when named."""
    seed = config["train"]["seeds"][0]
    out = {}
    for encoder in [*config["model"]["encoders"], "none"]:
        for fusion in config["model"]["fusions"]:
            pattern = RUN_DIR if ablation is None else ABLATION_RUN_DIR
            folder = root / pattern.format(dataset=dataset, encoder=encoder, fusion=fusion, seed=seed, ablation=ablation, variant=variant)
            if (folder / METRICS_FILE).exists():
                out[fusion if encoder == "none" else f"{encoder}/{fusion}"] = read_record(folder / METRICS_FILE)
    return out


def missing_runs(root: Path, config: dict[str, Any]) -> list[ExpectedRun]:
    """Configured runs (main and ablation variants) without a metrics.json: each one a failed check,
    so a partial run can never pass."""
    first_seed = config["train"]["seeds"][0]
    expected = [ExpectedRun(run.dataset, _run_name(run), root / run.folder) for run in Benchmark(config, config).runs if run.seed == first_seed]
    return [run for run in expected if not (run.folder / METRICS_FILE).exists()]


def _run_name(run: Run) -> str:
    """How the checker's table names a run: ``encoder/fusion`` (the fusion alone without an
    encoder), then the ablation variant in brackets."""
    name = run.fusion if run.encoder == NO_ENCODER else f"{run.encoder}/{run.fusion}"
    return name if run.variant is None else f"{name} ({run.variant.name})"


@dataclass(frozen=True)
class ExpectedRun:
    dataset: str
    name: str
    folder: Path


def _test(record: RunRecord, metric: str) -> float:
    value = record.metrics["test"][metric]
    return float("nan") if value is None else float(value)


def _by_fusion(runs: dict[str, RunRecord], fusion: str) -> list[tuple[str, RunRecord]]:
    return [(name, run) for name, run in runs.items() if name.split("/")[-1] == fusion]


def _at_chance(dataset: str, name: str, run: RunRecord, why: str) -> Check:
    value = _test(run, RESIDUE_METRIC)
    return Check(dataset, name, f"chance ({why}): |AUC-0.5| <= {CHANCE}", value, abs(value - 0.5) <= CHANCE)


def _learns(dataset: str, name: str, run: RunRecord, why: str, threshold: float = LEARNED) -> Check:
    value = _test(run, RESIDUE_METRIC)
    return Check(dataset, name, f"learns ({why}): AUC >= {threshold}", value, value >= threshold)


def _paired(dataset: str, name: str, run: RunRecord, baseline_name: str, baseline: RunRecord, metric: str, settings: StatsSettings) -> Check:
    """The report's paired test of ``run`` against ``baseline`` on the test split."""
    boot = Bootstrapper([run, baseline], lambda r: read_test_predictions(r.path.parent / TEST_PREDICTIONS_FILE), settings,
                        key=lambda r: (r.encoder, r.fusion, r.seed))
    result = compare_cell({run.seed: _test(run, metric)}, {baseline.seed: _test(baseline, metric)},
                          ((run.encoder, run.fusion), (baseline.encoder, baseline.fusion)), "test", metric, boot)
    passed = bool(is_better(result.delta, metric)) and bool(is_significant(result, settings.confidence))
    return Check(dataset, name, f"beats {baseline_name} ({result.test}, {metric} delta [{result.ci_low:+.3f}, {result.ci_high:+.3f}])",
                 result.delta, passed)


def check(root: Path, config: dict[str, Any]) -> list[Check]:
    """Every expectation of the known-answer config's runs under ``root`` (module docstring)."""
    settings = StatsSettings.from_config(config["report"])
    checks: list[Check] = []
    g, b, xor, layer, mix = (_runs(root, config, d) for d in ("ka_g", "ka_b", "ka_xor", "ka_layer", "ka_mix"))
    checks += [Check(run.dataset, run.name, "run finished", float("nan"), False) for run in missing_runs(root, config)]
    for name, run in _by_fusion(g, "struct_only"):
        checks.append(_learns("ka_g", name, run, "geometry"))
    for name, run in _by_fusion(g, "seq_only"):
        checks.append(_at_chance("ka_g", name, run, "no structure"))
    for name, run in _by_fusion(b, "seq_only"):
        checks.append(_learns("ka_b", name, run, "last layer"))
    for name, run in _by_fusion(b, "struct_only"):
        checks.append(_at_chance("ka_b", name, run, "no embeddings"))
    singles = {fusion: _by_fusion(xor, fusion) for fusion in SINGLE}
    for fusion, found in singles.items():
        checks += [_at_chance("ka_xor", name, run, "one stream of an XOR") for name, run in found]
    for name, run in xor.items():
        if run.fusion in SINGLE:
            continue
        checks.append(_learns("ka_xor", name, run, "both streams", LEARNED_XOR))
        for fusion in SINGLE:
            baseline = next((r for n, r in singles[fusion] if r.encoder in (run.encoder, "none")), None)
            if baseline is not None:
                checks.append(_paired("ka_xor", name, run, fusion, baseline, RESIDUE_METRIC, settings))
    for name, run in layer.items():
        if run.fusion in EVENLY_PAIRED:
            checks.append(_learns("ka_layer", name, run, "reads layer 2"))
        else:
            checks.append(_at_chance("ka_layer", name, run, "does not read layer 2"))
    for name, run in _runs(root, config, "ka_layer", "layer_pairing", "last").items():
        checks.append(_at_chance("ka_layer", f"{name} (last)", run, "layers 3, 4"))
    for variant in ("seq_to_struct", "struct_to_seq"):
        for name, run in _runs(root, config, "ka_xor", "direction", variant).items():
            checks.append(_learns("ka_xor", f"{name} ({variant})", run, "readout reads both streams", LEARNED_XOR))
    return checks + _mix_checks(mix)


def _mix_checks(mix: dict[str, RunRecord]) -> list[Check]:
    """The protein-level mix (module docstring): each fusion learns it; together they beat both streams."""
    fusions = {name: run for name, run in mix.items() if run.fusion not in SINGLE}
    checks = []
    for name, run in fusions.items():
        threshold = spearman_significant(len(read_test_predictions(run.path.parent / TEST_PREDICTIONS_FILE)["label"]))
        value = _test(run, PROTEIN_METRIC)
        checks.append(Check("ka_mix", name, f"learns the mix: Spearman >= {threshold:.3f} (p < 0.05)", value, value >= threshold))
    singles = [_test(run, PROTEIN_METRIC) for name, run in mix.items() if run.fusion in SINGLE]
    if fusions and singles:
        median = float(np.median([_test(run, PROTEIN_METRIC) for run in fusions.values()]))
        best = max(singles)
        checks.append(Check("ka_mix", "fusions' median", f"Spearman above both single streams ({best:.3f})", median, median > best))
    return checks


def spearman_significant(n: int, alpha: float = 0.05) -> float:
    """Smallest Spearman correlation of ``n`` pairs that is above 0 at one-sided level ``alpha``
    (Student's t approximation, as scipy.stats.spearmanr computes its p-value)."""
    t = stats.t.ppf(1.0 - alpha, n - 2)
    return float(t / np.sqrt(n - 2 + t * t))


def table(checks: list[Check]) -> str:
    lines = ["| dataset | run | expectation | value | result |", "|---|---|---|---:|---|"]
    return "\n".join(lines + [c.row() for c in checks]) + "\n"


def plot(root: Path, config: dict[str, Any], out: Path) -> None:
    """Test ROC AUC (Spearman for the mix) per dataset and fusion, chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = ("ka_g", "ka_b", "ka_xor", "ka_layer", "ka_mix")
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.6), sharey=False)
    for axis, dataset in zip(axes, datasets, strict=True):
        runs = _runs(root, config, dataset)
        metric = PROTEIN_METRIC if dataset == "ka_mix" else RESIDUE_METRIC
        if dataset == "ka_layer":
            runs |= {f"{n} (last)": r for n, r in _runs(root, config, dataset, "layer_pairing", "last").items()}
        names = list(runs)
        axis.barh(names, [_test(runs[n], metric) for n in names], color="tab:blue")
        axis.axvline(0.5 if metric == RESIDUE_METRIC else 0.0, color="grey", linestyle="--")
        axis.set_title(f"{dataset} ({metric})", fontsize=9)
        axis.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _build(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for number, archive in enumerate(args.archives):
            safe_extract(archive, Path(tmp) / str(number))
        structures = [path for path in Path(tmp).glob("*/*/structures/*") if path.is_file()]
        if not structures:
            raise SystemExit(f"{args.archives}: no */structures/* files")
        build(structures, args.out, Planting(seed=args.seed))
    return 0


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.configfile)
    checks = check(args.root, config)
    text = table(checks)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        plot(args.root, config, args.out.with_suffix(".png"))
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} of {len(checks)} expectations hold" + (f"; FAILED: {len(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bihmf.known_answer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write known_answer.tar.gz and embeddings.h5")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--seed", type=int, default=Planting.seed)
    make.add_argument("archives", type=Path, nargs="+", help="archives whose */structures/* are real PDB/mmCIF files (the demo's)")
    make.set_defaults(run=_build)
    test = commands.add_parser("check", help="assert the expectations on finished runs; exit 1 if any fails")
    test.add_argument("--configfile", type=Path, default=Path("config/known_answer.yaml"))
    test.add_argument("--root", type=Path, default=Path("."), help="the workflow's working directory")
    test.add_argument("--out", type=Path, default=None, help="also write <out>.md (the table) and <out>.png (the plot)")
    test.set_defaults(run=_check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
