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

from bihmf.config import load_config
from bihmf.models.model import run_combinations
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def _snakemake(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, env=env, timeout=900)


def test_full_config_dag_dry_run(tmp_path):
    """The documented workstation command, on config.yaml: every stage appears with its job count."""
    result = _snakemake(["all", "--cores", "8", "--resources", "gpu=2", "--dry-run", "--quiet", "rules"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    config = load_config(ROOT / "config.yaml")
    datasets = len(config["datasets"])
    assert datasets == 6  # react, psr, lba30, lba60, ppbs, bce
    pairs = run_combinations(config["model"]["encoders"], config["model"]["fusions"])
    assert len(pairs) == 4 * 7 + 1  # seq_only needs no encoder: trained once
    runs = len(pairs) * len(config["train"]["seeds"])
    assert counts == {
        "all": 1,
        "download_dataset": datasets,
        "esm_checkpoint": 1,
        "preprocess": datasets,
        "embed": datasets,  # esm.shards (default 1) jobs per dataset
        "embed_index": datasets,  # ties a dataset's shards together
        "train": datasets * runs,  # (encoder, fusion) pairs x seeds per dataset
        "report": datasets,
        "total": 2 + 5 * datasets + datasets * runs,
    }


def test_config_override_selects_a_subset(tmp_path):
    result = _snakemake(
        ["all", "--cores", "1", "--dry-run", "--quiet", "rules", "--config", "train={'seeds': [0]}"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    config = load_config(ROOT / "config.yaml")
    expected = len(config["datasets"]) * len(run_combinations(config["model"]["encoders"], config["model"]["fusions"]))
    assert any(line.split() == ["train", str(expected)] for line in result.stdout.splitlines())


def test_invalid_config_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config" / "demo.yaml").read_text().replace("hidden_dim: 32", "hiden_dim: 32"))
    result = _snakemake(["all", "--cores", "1", "--dry-run", "--configfile", str(bad)], tmp_path)
    assert result.returncode != 0
    assert "hiden_dim" in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_workflow_runs_end_to_end(tmp_path):
    result = _snakemake(["all", "--cores", "2", "--configfile", str(ROOT / "config" / "demo.yaml")], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    demo = load_config(ROOT / "config" / "demo.yaml")
    table = (tmp_path / "results/report/ppbs_demo_table.md").read_text()
    for fusion in demo["model"]["fusions"]:
        assert fusion in table
    bounded = {"auprc", "roc_auc", "accuracy"}
    for dataset in ("ppbs_demo", "bce_demo", "react_demo", "psr_demo", "lba_demo"):
        frame = pd.read_csv(tmp_path / f"results/report/{dataset}_table.csv")
        assert len(frame) > 0 and np.isfinite(frame["mean"]).all()
        assert frame.loc[frame["metric"].isin(bounded), "mean"].between(0, 1).all()
        runs = list((tmp_path / "results/runs" / dataset).glob("*/*/seed*/metrics.json"))
        assert len(runs) == len(demo["model"]["fusions"]) == 8  # every fusion, one encoder
        for metrics_path in runs:
            metrics = json.loads(metrics_path.read_text())["metrics"]
            values = {name: v for split in metrics.values() for name, v in split.items()}
            correlations = ("pearson", "spearman", "kendall")
            # undefined correlations (constant predictions, e.g. seq_only within one PSR target) are null
            assert all(v is not None or name.endswith(correlations) for name, v in values.items())
            values = {name: v for name, v in values.items() if v is not None}
            assert values and all(math.isfinite(v) for v in values.values())
            assert all(0 <= v <= 1 for name, v in values.items() if name in bounded)
            assert all(-1 <= v <= 1 for name, v in values.items() if name.endswith(("pearson", "spearman", "kendall")))
    png = (tmp_path / "results/report/ppbs_demo_metrics.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "benchmarks/train/ppbs_demo/gvp/bihmf_local/seed0.tsv").exists()
    # a second invocation has nothing left to do
    again = _snakemake(["all", "--cores", "2", "--configfile", str(ROOT / "config" / "demo.yaml"), "--dry-run"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
