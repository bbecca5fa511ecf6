"""The ablation report: a row per variant beside the default (main) run, mean ± std over seeds,
each variant tested against the default, and the headline metric against ESM-2 size.

Run folders are written with bihmf.run's writers, laid out as training leaves them: the default
under results/runs/, each variant under results/ablations/<ablation>/<variant>/ with its
provenance naming ablation and variant.
"""

from __future__ import annotations

import logging
import runpy
import zlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from esm.model.esm2 import ESM2
from scipy import stats

from bihmf.report.ablation import (
    ABLATION_OUTPUTS, esm2_parameters, esm_sizes, load_ablation_runs, report_spec, size_axis, write_ablation_report,
)
from bihmf.report.stats import StatsSettings, bootstrap_metrics, split_rows
from bihmf.run import RunRecord, read_test_predictions, write_record, write_test_predictions
from bihmf.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = StatsSettings(bootstrap_samples=200, confidence=0.95, seed=0)
SETTINGS_CFG = {"bootstrap_samples": 200, "confidence": 0.95, "seed": 0}
FUSIONS = ("struct_only", "bihmf_local")
SEEDS = (0, 1, 2)
ESM_SHAPES = {"default": (6, 320), "t12": (12, 480), "one_way": (6, 320)}  # (depth, width) of each variant's ESM
MIXED = {"name": "mixed", "datasets": ["lba30"], "encoders": ["gvp"], "fusions": list(FUSIONS),
         "variants": [{"name": "t12", "esm": {"name": "esm2_t12_35M_UR50D"}},
                      {"name": "one_way", "model": {"fusion_direction": "seq_to_struct"}}]}


def spearman(variant: str, fusion: str, seed: int) -> float:
    """Test spearman of a run: the variant shifts it, seeds add a little noise that differs per run."""
    base = {"default": 0.50, "t12": 0.56, "one_way": 0.49}[variant] + (0.05 if fusion == "bihmf_local" else 0.0)
    return round(base + 0.002 * (zlib.crc32(f"{variant}/{fusion}/{seed}".encode()) % 11), 4)


def run_folder(root: Path, ablation: str, variant: str, dataset: str, encoder: str, fusion: str, seed: int) -> Path:
    prefix = root / "results/runs" if variant == "default" else root / "results/ablations" / ablation / variant
    return prefix / dataset / encoder / fusion / f"seed{seed}"


def write_run(root: Path, ablation: str, variant: str, dataset: str, encoder: str, fusion: str, seed: int,
              task: str, metrics: dict, predictions: pa.Table | None = None, overrides: dict | None = None) -> Path:
    folder = run_folder(root, ablation, variant, dataset, encoder, fusion, seed)
    depth, width = ESM_SHAPES[variant]
    provenance = {"esm_cache": {"format": "bihmf-esm-cache/1", "checkpoint": f"esm2_t{depth}_{width}.pt", "checkpoint_sha256": "e" * 64,
                                "esm_depth": str(depth), "embed_dim": str(width), "layers": "[2, 4, 6]", "dtype": "float16",
                                "window": "1022", "window_overlap": "256", "n_shards": "1"}}
    if variant != "default":
        provenance["ablation"] = {"name": ablation, "variant": variant, "overrides": overrides or {}}
    record = RunRecord(path=folder / "metrics.json", dataset=dataset, encoder=encoder, fusion=fusion, seed=seed, task=task,
                       metrics=metrics, best_epoch=3, epochs_run=5, provenance=provenance)
    write_record(record)
    if predictions is not None:
        write_test_predictions(folder / "test_predictions.parquet", predictions)
    return record.path


def regression_tree(root: Path, entry: dict, skip: set[tuple[str, str, int]] = frozenset()) -> list[Path]:
    """lba30-like runs: every variant of ``entry`` and the default × FUSIONS × SEEDS, except ``skip``."""
    paths = []
    for variant in ["default", *(v["name"] for v in entry["variants"])]:
        for fusion in FUSIONS:
            for seed in SEEDS:
                if (variant, fusion, seed) in skip:
                    continue
                rho = spearman(variant, fusion, seed)
                metrics = {"test": {"spearman": rho, "rmse": round(2.0 - rho, 4)}, "val": {"spearman": rho - 0.1}}
                paths.append(write_run(root, entry["name"], variant, "lba30", "gvp", fusion, seed, "graph_regression", metrics))
    return paths


def config_of(entry: dict, seeds: tuple[int, ...] = SEEDS, splits: list[str] | None = None) -> dict:
    """A config of lba30 and ppbs (gvp and egnn, struct_only) with ``entry`` as its one ablation."""
    subsets = [split.removeprefix("test_") for split in splits or [] if split.startswith("test_")]
    datasets = {
        "lba30": {"task": "graph_regression", "train": {}},
        "ppbs": {"task": "residue_binary", "train": {},
                 "label_files": [{"file": f"{s}.txt", "split": "test", "subset": s} for s in subsets]},
    }
    return {"datasets": datasets, "model": {"encoders": ["gvp", "egnn"], "fusions": ["struct_only"]},
            "train": {"seeds": list(seeds)}, "ablations": [entry], "report": SETTINGS_CFG}


def spec_of(entry: dict, paths: list[Path], seeds: tuple[int, ...] = SEEDS, splits: list[str] | None = None):
    return report_spec(config_of(entry, seeds, splits), entry["name"], paths, SETTINGS)


def outputs(root: Path, name: str) -> dict[str, Path]:
    return {key: root / "results/report/ablations" / f"{name}.{key}" for key in ABLATION_OUTPUTS}


def table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The Markdown table under ``heading`` as rows of header -> cell."""
    lines = markdown.split(heading, 1)[1].strip().splitlines()
    rows = [line for line in lines if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


@pytest.mark.parametrize("depth,width,heads", [(2, 64, 4), (3, 96, 8)])
def test_esm2_parameter_count_matches_fair_esm(depth: int, width: int, heads: int) -> None:
    torch.manual_seed(0)
    model = ESM2(num_layers=depth, embed_dim=width, attention_heads=heads)
    counted = {name: p.numel() for name, p in model.named_parameters()}
    contact = sum(n for name, n in counted.items() if name.startswith("contact_head."))
    assert contact == depth * heads + 1
    assert esm2_parameters(depth, width) == sum(counted.values()) - contact


def test_table_values_and_paired_t_test_match_numpy_and_scipy(tmp_path: Path) -> None:
    spec = spec_of(MIXED, regression_tree(tmp_path, MIXED))
    out = outputs(tmp_path, "mixed")
    write_ablation_report(spec, out)
    tidy = pd.read_csv(out["csv"])
    test = tidy[(tidy["split"] == "test") & (tidy["metric"] == "spearman")].set_index(["variant", "fusion"])
    for variant in ("default", "t12", "one_way"):
        for fusion in FUSIONS:
            values = np.array([spearman(variant, fusion, s) for s in SEEDS])
            row = test.loc[(variant, fusion)]
            assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert row["n"] == 3 and row["status"] == "ok"
            if variant == "default":
                assert pd.isna(row["test"])
                continue
            default = np.array([spearman("default", fusion, s) for s in SEEDS])
            expected = stats.ttest_rel(values, default)
            assert row["test"] == "paired t-test" and row["test_n"] == 3
            assert row["delta"] == pytest.approx((values - default).mean(), abs=1e-12)
            assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
            assert bool(row["better"]) == (values.mean() > default.mean())
    rows = table(out["md"].read_text(), "## lba30")
    assert [(r["fusion"], r["variant"]) for r in rows] == [(f, v) for f in FUSIONS for v in ("default", "t12", "one_way")]
    assert list(rows[0]) == ["encoder", "fusion", "variant", "n", "test rmse ↓", "test spearman ↑"]
    bold = []
    for row in rows[1:3]:
        entry, cell = test.loc[(row["variant"], "struct_only")], row["test spearman ↑"]
        assert cell.strip("*").startswith(f"{entry['mean']:.3f} ± {entry['std']:.3f}; Δ {entry['delta']:+.3f} [")
        assert cell.strip("*").endswith(f"p={entry['p_value']:.3g} vs default (t-test, 3 seeds)")
        assert cell.startswith("**") == (entry["significant"] and entry["better"])
        bold.append(cell.startswith("**"))
    assert bold == [True, False]  # t12 better at 95 %, one_way not
    assert "All expected runs" not in out["md"].read_text() and "Missing runs" not in out["md"].read_text()
    assert "<table>" in out["html"].read_text() and "`t12`: `esm.name=esm2_t12_35M_UR50D`" in out["md"].read_text()


def test_missing_variant_runs_are_named_and_marked(tmp_path: Path) -> None:
    skip = {("one_way", "bihmf_local", 2), *(("t12", "struct_only", s) for s in SEEDS)}
    spec = spec_of(MIXED, regression_tree(tmp_path, MIXED, skip))
    out = outputs(tmp_path, "mixed")
    write_ablation_report(spec, out)
    page = out["md"].read_text()
    assert "**Missing runs** (4; their cells read \"missing\"): t12 gvp/struct_only seed 0, t12 gvp/struct_only seed 1, " \
           "t12 gvp/struct_only seed 2, one_way gvp/bihmf_local seed 2." in page
    rows = {(r["fusion"], r["variant"]): r for r in table(page, "## lba30")}
    assert rows[("struct_only", "t12")]["n"] == "0/3" and rows[("struct_only", "t12")]["test spearman ↑"] == "missing"
    assert rows[("bihmf_local", "one_way")]["n"] == "2/3"
    tidy = pd.read_csv(out["csv"])
    partial = tidy[(tidy["variant"] == "one_way") & (tidy["fusion"] == "bihmf_local") & (tidy["split"] == "test")
                   & (tidy["metric"] == "spearman")].iloc[0]
    assert partial["test"] == "paired t-test" and partial["test_n"] == 2  # the two seeds both have


def _ppbs_predictions(quality: float) -> pa.Table:
    """Per-residue rows of 10 test proteins in two subsets; higher ``quality`` ranks positives higher."""
    rng = np.random.default_rng(0)
    ids, subsets, labels, scores = [], [], [], []
    for p in range(10):
        n = 15 + p
        label = (rng.random(n) < 0.3).astype(np.int64)
        label[:2] = [0, 1]
        ids += [f"prot{p:02d}"] * n
        subsets += ["70" if p < 6 else "homology"] * n
        labels.append(label)
        scores.append(np.clip(quality * label + rng.random(n), 0, None).astype(np.float32))
    return pa.table({"protein_id": ids, "subset": subsets, "score": np.concatenate(scores),
                     "label": np.concatenate(labels), "weight": np.ones(len(ids), np.float32)})


def test_single_seed_variant_is_a_paired_protein_bootstrap(tmp_path: Path) -> None:
    entry = {"name": "direction", "datasets": ["ppbs"], "fusions": ["bihmf_local"], "seeds": [0],
             "variants": [{"name": "one_way", "model": {"fusion_direction": "seq_to_struct"}}]}
    paths = []
    for variant, quality in (("default", 0.2), ("one_way", 0.6)):
        predictions = _ppbs_predictions(quality)
        frame = predictions.to_pandas()
        metrics = {}
        for split in ("test", "test_70", "test_homology"):
            part = frame if split == "test" else frame[frame["subset"] == split.removeprefix("test_")]
            metrics[split] = TASKS["residue_binary"].evaluate([{c: part[c].to_numpy() for c in ("score", "label", "weight")}])
        metrics["val"] = metrics["test"]
        paths.append(write_run(tmp_path, "direction", variant, "ppbs", "gvp", "bihmf_local", 0, "residue_binary", metrics,
                               predictions=predictions))
    spec = spec_of(entry, paths, splits=["val", "test", "test_70", "test_homology"])
    # encoders default to the configured ones: egnn's runs were never trained and are missing
    assert spec.pairs == (("gvp", "bihmf_local"), ("egnn", "bihmf_local")) and spec.seeds == {"ppbs": (0,)}
    out = outputs(tmp_path, "direction")
    write_ablation_report(spec, out)
    tidy = pd.read_csv(out["csv"])
    compared = tidy[tidy["test"].notna()].set_index(["split", "metric"])
    assert set(compared["test"]) == {"bootstrap"}
    assert set(compared.index.get_level_values("split")) == {"test", "test_70", "test_homology"}
    runs = {variant: read_test_predictions(p.parent / "test_predictions.parquet") for variant, p in zip(("default", "one_way"), paths)}
    for split, n_proteins in (("test", 10), ("test_70", 6), ("test_homology", 4)):
        resampled = {}
        for variant, rows in runs.items():
            rows = split_rows(rows, split)
            resampled[variant] = bootstrap_metrics("residue_binary", rows, np.unique(rows["protein_id"]), SETTINGS)
        for metric in ("auprc", "roc_auc"):
            row = compared.loc[(split, metric)]
            diff = resampled["one_way"][metric] - resampled["default"][metric]
            low, high = np.quantile(diff[np.isfinite(diff)], [0.025, 0.975])
            assert row["test_n"] == n_proteins
            assert row["ci_low"] == pytest.approx(low, abs=1e-12) and row["ci_high"] == pytest.approx(high, abs=1e-12)
            assert row["delta"] == pytest.approx(row["mean"] - tidy[(tidy["variant"] == "default") & (tidy["split"] == split)
                                                                  & (tidy["metric"] == metric)]["mean"].iloc[0], abs=1e-9)
    page = out["md"].read_text()
    assert "(bootstrap, 10 proteins)" in page
    assert "Missing runs** (2; their cells read \"missing\"): default egnn/bihmf_local seed 0, one_way egnn/bihmf_local seed 0." in page


def test_plot_against_esm_size_only_when_variants_differ_by_esm_alone(tmp_path: Path) -> None:
    esm_only = {"name": "esm_size", "datasets": ["lba30"], "encoders": ["gvp"], "fusions": list(FUSIONS),
                "variants": [{"name": "t12", "esm": {"name": "esm2_t12_35M_UR50D"}}]}
    spec = spec_of(esm_only, regression_tree(tmp_path, esm_only))
    sizes = esm_sizes(spec, load_ablation_runs(spec))
    assert size_axis(sizes) == {"default": esm2_parameters(6, 320), "t12": esm2_parameters(12, 480)}
    out = outputs(tmp_path, "esm_size")
    write_ablation_report(spec, out)
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"(ESM-2 {esm2_parameters(12, 480):,} parameters)" in out["md"].read_text()
    mixed = spec_of(MIXED, regression_tree(tmp_path / "mixed", MIXED))
    assert size_axis(esm_sizes(mixed, load_ablation_runs(mixed))) is None  # default and one_way share one ESM


def test_runs_of_another_ablation_or_variant_and_duplicates_are_errors(tmp_path: Path) -> None:
    paths = regression_tree(tmp_path, MIXED)
    with pytest.raises(ValueError, match="run of ablation 'mixed' given to the report of ablation 'other'"):
        load_ablation_runs(spec_of({**MIXED, "name": "other"}, paths))
    with pytest.raises(ValueError, match=r"seed0/metrics.json: duplicates run t12 gvp/struct_only seed 0 of lba30"):
        load_ablation_runs(spec_of(MIXED, [*paths, paths[6]]))  # paths[6]: t12 struct_only seed 0
    with pytest.raises(ValueError, match=r"variant 't12' is not configured in ablation 'mixed' \(\['one_way'\]\)"):
        load_ablation_runs(spec_of({**MIXED, "variants": MIXED["variants"][1:]}, paths))


def test_workflow_script_builds_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule's glue, run as Snakemake runs it (a ``snakemake`` object in its globals)."""
    paths = regression_tree(tmp_path, MIXED, {("t12", "bihmf_local", 1)})
    out = outputs(tmp_path, "mixed")
    job = SimpleNamespace(
        input=SimpleNamespace(metrics=[str(p) for p in paths]),
        output=SimpleNamespace(**{k: str(v) for k, v in out.items()}),
        config={**config_of(MIXED), "model": {"encoders": ["gvp"], "fusions": ["struct_only"]}},
        wildcards=SimpleNamespace(ablation="mixed"),
        log=[str(tmp_path / "logs/ablation_mixed.log")],
    )
    handlers, level = logging.root.handlers[:], logging.root.level
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    try:
        runpy.run_path(str(ROOT / "workflow_scripts/ablation_report.py"), init_globals={"snakemake": job})
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert all(path.exists() for path in out.values())
    assert "t12 gvp/bihmf_local seed 1" in (tmp_path / "logs/ablation_mixed.log").read_text()
