"""config/reviewer.yaml: the full benchmark's datasets, ESM model and recipes, cut to one encoder
and the fusions the paper's headline claim compares, over three seeds."""

from __future__ import annotations

from pathlib import Path

import yaml

from bihmf import plan
from bihmf.benchmark import Benchmark
from bihmf.models.fusion import bihmf_fusions, reference_fusion

ROOT = Path(__file__).resolve().parents[1]


def test_reviewer_tier_is_the_full_benchmark_cut_to_the_claim():
    full, reviewer = (yaml.safe_load(path.read_text()) for path in (ROOT / "config.yaml", ROOT / "config" / "reviewer.yaml"))
    assert {k: v for k, v in reviewer.items() if k != "model"} == {k: v for k, v in full.items() if k != "model"}
    assert reviewer["model"]["encoders"] == ["gvp"] and len(reviewer["train"]["seeds"]) == 3
    compared = {reference_fusion(), "seq_only", "serial", *bihmf_fusions()}
    assert set(reviewer["model"]["fusions"]) == compared <= set(full["model"]["fusions"])


def test_reviewer_tier_jobs():
    """Validated by the schema (Benchmark.load), and the jobs `snakemake -n all` counts
    (test_plan checks stage_jobs against a dry run)."""
    benchmark = Benchmark.load(ROOT / "config" / "reviewer.yaml")
    datasets = len(benchmark.config["datasets"])
    assert plan.stage_jobs(benchmark) == {
        "download_dataset": datasets, "esm_checkpoint": 1, "preprocess": datasets, "embed": datasets, "embed_index": datasets,
        "train": datasets * 5 * 3, "report": datasets, "report_summary": 1,
    }
