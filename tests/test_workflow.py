"""The Snakemake workflow itself: full-config DAG (dry run) and a real demo run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import yaml

from bihmf.benchmark import Benchmark, load_config
from bihmf.models.model import run_combinations
from bihmf.report.stats import evaluate_rows, split_rows
from bihmf.run import read_record, read_test_predictions
from bihmf.tasks.metrics import is_metric
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def _snakemake(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, env=env, timeout=900)


def _job_counts(stdout: str) -> dict[str, int]:
    return {parts[0]: int(parts[1]) for parts in map(str.split, stdout.splitlines()) if len(parts) == 2 and parts[1].isdigit()}


def _main_jobs(config: dict) -> dict[str, int]:
    """Jobs of target all on a config without ablations: every stage with its count."""
    datasets = len(config["datasets"])
    runs = len(run_combinations(config["model"]["encoders"], config["model"]["fusions"])) * len(config["train"]["seeds"])
    return {
        "all": 1,
        "download_dataset": datasets,
        "esm_checkpoint": 1,
        "preprocess": datasets,
        "embed": datasets,  # esm.shards (default 1) jobs per dataset
        "embed_index": datasets,  # ties a dataset's shards together
        "train": datasets * runs,  # (encoder, fusion) pairs x seeds per dataset
        "report": datasets,
        "report_summary": 1,  # all benchmarks in the paper's layout, beside the published numbers
        "total": 3 + 5 * datasets + datasets * runs,
    }


def test_full_config_dag_dry_run(tmp_path):
    """The documented workstation command, on config.yaml: every stage appears with its job count."""
    result = _snakemake(["all", "--cores", "8", "--resources", "gpu=2", "--dry-run", "--quiet", "rules"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_config(ROOT / "config.yaml")
    assert len(config["datasets"]) == 6  # react, psr, lba30, lba60, ppbs, bce
    pairs = run_combinations(config["model"]["encoders"], config["model"]["fusions"])
    assert len(pairs) == 6 * 7 + 1  # seq_only needs no encoder: trained once
    assert _job_counts(result.stdout) == _main_jobs(config)


def test_ablation_config_adds_exactly_the_variant_jobs(tmp_path):
    """config/ablation.yaml = config.yaml + ablations: the main DAG plus, per variant, its runs;
    per new ESM model one checkpoint and one cache per dataset it is used on; one report per
    ablation. Nothing else."""
    benchmark = Benchmark.load(ROOT / "config" / "ablation.yaml")
    config = benchmark.config
    result = _snakemake(["all", "--cores", "8", "--dry-run", "--quiet", "rules", "--configfile",
                         str(ROOT / "config" / "ablation.yaml")], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs, reports = len(benchmark.runs) - len(benchmark.main_runs), len(config["ablations"])
    extra_models = len(benchmark.esm_models) - 1
    extra_caches = len(benchmark.caches) - len(config["datasets"])
    assert (runs, reports, extra_models, extra_caches) == (108, 3, 3, 6)  # t6/t12/t30 on react and ppbs
    expected = {**_main_jobs(config), "train_ablation": runs, "ablation_report": reports}
    for rule, extra in (("esm_checkpoint", extra_models), ("embed", extra_caches), ("embed_index", extra_caches),
                        ("total", extra_models + 2 * extra_caches + runs + reports)):
        expected[rule] += extra
    assert _job_counts(result.stdout) == expected


def test_a_bad_ablation_stops_the_workflow_with_its_reason(tmp_path):
    bad = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    bad["ablations"][0]["variants"][0]["esm"]["name"] = "esm2_t6_demo_random"  # the main model's name, other shape
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = _snakemake(["all", "--cores", "1", "--dry-run", "--configfile", str(tmp_path / "bad.yaml")], tmp_path)
    assert result.returncode != 0
    assert "ablations/0/variants/0 (esm_size/t12): esm.name 'esm2_t6_demo_random' has other settings than in the main esm" in (
        result.stdout + result.stderr)


def test_config_override_selects_a_subset(tmp_path):
    result = _snakemake(
        ["all", "--cores", "1", "--dry-run", "--quiet", "rules", "--config", "train={'seeds': [0]}"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    config = load_config(ROOT / "config.yaml")
    expected = len(config["datasets"]) * len(run_combinations(config["model"]["encoders"], config["model"]["fusions"]))
    assert any(line.split() == ["train", str(expected)] for line in result.stdout.splitlines())


def test_partial_report_trains_nothing(tmp_path):
    """report.partial builds the reports from finished runs only: no training job in the DAG,
    neither of the main runs nor of the ablation variants (config/ablation.yaml has both)."""
    result = _snakemake(["all", "--cores", "1", "--dry-run", "--quiet", "rules", "--configfile",
                         str(ROOT / "config" / "ablation.yaml"), "--config", "report={'partial': True}"], tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = _job_counts(result.stdout)
    assert "train" not in jobs and "train_ablation" not in jobs
    assert jobs["report"] == 6 and jobs["report_summary"] == 1 and jobs["ablation_report"] == 3


def test_invalid_config_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config" / "demo.yaml").read_text().replace("hidden_dim: 32", "hiden_dim: 32"))
    result = _snakemake(["all", "--cores", "1", "--dry-run", "--configfile", str(bad)], tmp_path)
    assert result.returncode != 0
    assert "hiden_dim" in result.stdout + result.stderr


# `make demo` trains all eight fusions; the end-to-end test trains four of them (every fusion is
# built, differentiated and overfitted in test_combinations.py) to keep CI well under 15 minutes.
DEMO_FUSIONS = ["struct_only", "seq_only", "bihmf_local", "token"]
DEMO = ["--configfile", str(ROOT / "config" / "demo.yaml"), "--config", f"model={{'fusions': {DEMO_FUSIONS}}}"]


@pytest.mark.slow
def test_demo_workflow_runs_end_to_end(tmp_path):
    result = _snakemake(["all", "--cores", "2", *DEMO], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    demo = load_config(ROOT / "config" / "demo.yaml")
    table = (tmp_path / "results/report/ppbs_demo_table.md").read_text()
    for fusion in DEMO_FUSIONS:
        assert fusion in table
    bounded = {"auprc", "roc_auc", "accuracy"}
    for dataset in ("ppbs_demo", "bce_demo", "react_demo", "psr_demo", "lba_demo"):
        frame = pd.read_csv(tmp_path / f"results/report/{dataset}_table.csv")
        ok = frame[frame["status"] == "ok"]
        assert len(ok) > 0 and np.isfinite(ok["mean"]).all()
        assert ok.loc[ok["metric"].isin(bounded), "mean"].between(0, 1).all()
        assert set(frame["status"]) <= {"ok", "undefined"}  # every run finished: nothing missing
        # the demo has one seed, so Bi-HMF is compared with the best baseline by a protein bootstrap
        assert set(pd.read_csv(tmp_path / f"results/report/{dataset}_stats.csv")["test"]) <= {"bootstrap", "none"}
        runs = list((tmp_path / "results/runs" / dataset).glob("*/*/seed*/metrics.json"))
        assert len(runs) == len(DEMO_FUSIONS)  # one encoder
        for metrics_path in runs:
            run = json.loads(metrics_path.read_text())
            metrics = run["metrics"]
            values = {name: v for split in metrics.values() for name, v in split.items()}
            correlations = ("pearson", "spearman", "kendall")
            # undefined correlations (constant predictions, e.g. seq_only within one PSR target) are null
            assert all(v is not None or name.endswith(correlations) for name, v in values.items())
            values = {name: v for name, v in values.items() if v is not None}
            assert values and all(math.isfinite(v) for v in values.values())
            assert all(0 <= v <= 1 for name, v in values.items() if name in bounded)
            assert all(-1 <= v <= 1 for name, v in values.items() if name.endswith(("pearson", "spearman", "kendall")))
            # the per-protein test predictions the bootstrap resamples reproduce the run's test metrics
            predictions = read_test_predictions(metrics_path.parent / "test_predictions.parquet")
            for split in (s for s in metrics if s.startswith("test")):
                again = evaluate_rows(run["task"], split_rows(predictions, split))
                for name, value in metrics[split].items():
                    if is_metric(name) and value is not None:
                        assert again[name] == pytest.approx(value, abs=1e-4), (metrics_path, split, name)
    report = tmp_path / "results/report"
    for dataset in demo["datasets"]:
        for name in ("metrics", "heatmap", "curves", "cost"):
            assert (report / f"{dataset}_{name}.png").read_bytes().startswith(b"\x89PNG")
            assert (report / f"{dataset}_{name}.pdf").read_bytes().startswith(b"%PDF")
        assert "\\toprule" in (report / f"{dataset}_table.tex").read_text()
    summary = (report / "summary.md").read_text()
    assert "published: GVP-GNN" in summary and "Columns filled: React ← react_demo" in summary
    assert "Not configured in this run (every cell of ours missing): LBA 60%." in summary
    assert (tmp_path / "benchmarks/train/ppbs_demo/gvp/bihmf_local/seed0.tsv").exists()
    # the demo's two ablations: their variant runs, tables and plots
    for ablation, variant in (("esm_size", "t12"), ("direction", "one_way")):
        run = read_record(tmp_path / f"results/ablations/{ablation}/{variant}/ppbs_demo/gvp/bihmf_local/seed0/metrics.json")
        assert run.provenance["ablation"]["variant"] == variant
        table = (report / "ablations" / f"{ablation}.md").read_text()
        assert "default" in table and variant in table
        assert (report / "ablations" / f"{ablation}.png").read_bytes().startswith(b"\x89PNG")
    # a second invocation has nothing left to do
    again = _snakemake(["all", "--cores", "2", *DEMO, "--dry-run"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    # the self-contained HTML report: every report() output with its caption and provenance
    html = _snakemake([*DEMO, "--report", "report.html"], tmp_path)
    assert html.returncode == 0, html.stdout[-4000:] + html.stderr[-4000:]
    page = (tmp_path / "report.html").read_text()
    for text in ("0. Summary", "4. Ablations", "esm_size.html", "summary.html", "ppbs_demo_table.html", "lba_demo_heatmap.png", "psr_demo_runs.csv",
                 "Test metrics of ppbs_demo", "Bi-HMF benchmark"):
        assert text in page, text

    # partial results: a run that has not finished is named, not trained, in a report=partial build
    (tmp_path / "results/runs/bce_demo/gvp/token/seed0/metrics.json").unlink()
    partial = _snakemake(["results/report/bce_demo_table.md", "--cores", "2", *DEMO, "report={'partial': True}"], tmp_path)
    assert partial.returncode == 0, partial.stdout[-4000:] + partial.stderr[-4000:]
    assert "Rule: train" not in partial.stdout + partial.stderr
    bce = (tmp_path / "results/report/bce_demo_table.md").read_text()
    assert '**Missing runs** (1; their cells read "missing"): gvp/token seed 0.' in bce
    assert "| gvp | token | 0/1 | missing |" in bce
