"""The report is where seeds are combined and compared with the paper: its numbers, bold marks,
missing cells and published columns must be exact.

Unit tests build small results trees in the true on-disk formats (metrics.json as training
writes it, curve.csv, test_predictions.parquet, Snakemake benchmark TSVs, an ESM cache index
footer); the HTML report is built on the real demo run in tests/test_workflow.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from bihmf.benchmark import load_config
from bihmf.report.aggregate import load_runs, split_order, summarise
from bihmf.report.build import (
    DATASET_OUTPUTS, SUMMARY_OUTPUTS, DatasetReport, run_predictions, write_dataset_report, write_summary_report,
)
from bihmf.report.format import Cell, Table, page_html, to_latex, to_markdown
from bihmf.report.paper import PUBLISHED_PATH, benchmark_of_datasets, load_published
from bihmf.report.plots import relative_gain
from bihmf.report.stats import StatsSettings, _resample, bootstrap_metrics, compare
from bihmf.run import read_record
from bihmf.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = StatsSettings(bootstrap_samples=200, confidence=0.95, seed=0)
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
REGRESSION = ("rmse", "pearson", "spearman", "kendall", "mean_pearson", "mean_spearman", "mean_kendall")

# lba30-like regression benchmark: two encoders, two seeds, one run never finished.
ROWS = [("gvp", "struct_only"), ("pronet", "struct_only"), ("none", "seq_only"), ("gvp", "parallel"),
        ("pronet", "parallel"), ("gvp", "bihmf_local"), ("pronet", "bihmf_local")]
SEEDS = (0, 1)
NOT_FINISHED = ("pronet", "bihmf_local", 1)
# test rmse per (encoder, fusion) and seed; the other metrics are derived from it below
RMSE = {
    ("gvp", "struct_only"): (1.60, 1.64), ("pronet", "struct_only"): (1.50, 1.56), ("none", "seq_only"): (1.55, 1.53),
    ("gvp", "parallel"): (1.48, 1.50), ("pronet", "parallel"): (1.46, 1.49), ("gvp", "bihmf_local"): (1.41, 1.44),
    ("pronet", "bihmf_local"): (1.43, 1.45),
}


def _regression_metrics(rmse: float) -> dict[str, float | None]:
    """A deterministic, metric-consistent set: lower RMSE goes with higher correlations."""
    r = round(2.0 - rmse, 4)
    return {"kendall": r / 2, "mean_kendall": r / 3, "mean_pearson": r / 2.5, "mean_spearman": r / 2.2,
            "n_groups": 3, "pearson": r, "rmse": rmse, "spearman": r - 0.01}


def write_run(root: Path, dataset: str, encoder: str, fusion: str, seed: int, task: str, metrics: dict,
              parameters: int = 1000, cpu_seconds: float = 36.0, predictions: pa.Table | None = None) -> Path:
    """One run folder as training and Snakemake leave it (key-sorted JSON, like write_json_atomic)."""
    folder = root / "results/runs" / dataset / encoder / fusion / f"seed{seed}"
    folder.mkdir(parents=True)
    run = {
        "dataset": dataset, "encoder": encoder, "fusion": fusion, "seed": seed, "task": task,
        "metrics": metrics, "best_epoch": 3, "epochs_run": 5,
        "provenance": {
            "git_commit": "abc123", "config_hash": "f" * 64, "dataset_sha256": "d" * 64,
            "esm_checkpoint_sha256": "e" * 64, "esm_layers_cached": [2, 4, 6], "device": "cpu",
            "model_config": {"num_layers": 3, "esm_layers": None, "hidden_dim": 32},
            "packages": {"torch": "2.13.0+cpu"}, "wall_seconds": 12.5, "train_seconds": 10.0, "resumed": False,
            "peak_rss_mb": 500.0, "peak_gpu_mb": None, "parameters": parameters,
        },
    }
    (folder / "metrics.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    val_metric = "val_spearman" if task == "graph_regression" else "val_auprc"
    (folder / "curve.csv").write_text(
        f"epoch,train_loss,{val_metric},seconds\n" + "".join(f"{e},{1.0 / e:.4f},{0.1 * e:.4f},0.5\n" for e in range(1, 6))
    )
    if predictions is not None:
        pq.write_table(predictions, folder / "test_predictions.parquet")
    bench = root / "benchmarks/train" / dataset / encoder / fusion / f"seed{seed}.tsv"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(BENCH_HEADER + f"12.5\t0:00:12\t480.1\t900.0\t400.0\t410.0\t0.1\t0.2\t80.0\t{cpu_seconds}\n")
    return folder / "metrics.json"


def write_cache_index(root: Path, dataset: str) -> Path:
    """An ESM cache folder: a shard and the index whose footer names the cached layers."""
    folder = root / "results/embeddings" / dataset / "esm2_t6_demo_random"
    folder.mkdir(parents=True)
    meta = {"format": "bihmf-esm-cache/1", "checkpoint": "esm2_t6_demo_random.pt", "checkpoint_sha256": "e" * 64, "embed_dim": "8",
            "esm_depth": "6", "layers": "[2, 4, 6]", "dtype": "float16", "window": "1022", "window_overlap": "256", "n_shards": "1"}
    pq.write_table(pa.table({"x": np.zeros(1000, np.float32)}), folder / "shard-0-of-1.parquet")
    pq.write_table(pa.table({"seq_hash": ["a"]}).replace_schema_metadata(meta), folder / "index.parquet")
    return folder / "index.parquet"


def outputs(root: Path, dataset: str) -> dict[str, Path]:
    names = {"bars": "metrics"}
    out = {}
    for key in DATASET_OUTPUTS:
        stem, ext = key.rsplit("_", 1)
        name = f"{stem}.{ext}" if stem in {"table", "stats", "runs"} else f"{names.get(stem, stem)}.{ext}"
        out[key] = root / "results/report" / f"{dataset}_{name}"
    return out


def build_lba_tree(root: Path) -> DatasetReport:
    metrics, benchmarks = [], []
    for (encoder, fusion) in ROWS:
        for seed in SEEDS:
            if (encoder, fusion, seed) == NOT_FINISHED:
                continue
            test = _regression_metrics(RMSE[(encoder, fusion)][seed])
            if (encoder, fusion) == ("none", "seq_only"):
                test["mean_kendall"] = None  # constant predictions within a target: undefined
            val = _regression_metrics(RMSE[(encoder, fusion)][seed] + 0.1)
            params = {"struct_only": 1000, "seq_only": 800, "parallel": 3000, "bihmf_local": 5000}[fusion]
            metrics.append(write_run(root, "lba30", encoder, fusion, seed, "graph_regression",
                                     {"test": test, "val": val}, parameters=params))
            benchmarks.append(root / f"benchmarks/train/lba30/{encoder}/{fusion}/seed{seed}.tsv")
    return DatasetReport(
        dataset="lba30", task="graph_regression", metrics=metrics, benchmarks=benchmarks,
        cache_index=write_cache_index(root, "lba30"),
        expected=[(e, f, s) for e, f in ROWS for s in SEEDS], splits=["val", "test"], settings=SETTINGS,
    )


@pytest.fixture()
def lba_tree(tmp_path: Path) -> DatasetReport:
    """A fresh tree per test, for tests that edit files or change the inputs."""
    return build_lba_tree(tmp_path)


@pytest.fixture(scope="module")
def lba_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetReport, dict[str, Path]]:
    """The lba30 tree and its report, written once for the tests that only read the outputs."""
    root = tmp_path_factory.mktemp("lba_report")
    spec = build_lba_tree(root)
    out = outputs(root, "lba30")
    write_dataset_report(spec, out)
    return spec, out


def table_cells(markdown: str, heading: str = "## Test metrics") -> tuple[list[str], list[dict[str, str]]]:
    """The first Markdown table after ``heading``: header and one {column: cell} per row."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    header = [c.strip() for c in block[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in block[2:]]
    return header, rows


def test_dataset_table_shape_order_bold_and_missing(lba_report) -> None:
    _, out = lba_report
    markdown = out["table_md"].read_text()
    header, rows = table_cells(markdown)
    # the task's natural order, not alphabetical; n_groups is a count, not a column
    assert header == ["encoder", "fusion", "n", "test rmse ↓", "test pearson ↑", "test spearman ↑", "test kendall ↑",
                      "test mean_pearson ↑", "test mean_spearman ↑", "test mean_kendall ↑"]
    assert [(r["encoder"], r["fusion"]) for r in rows] == ROWS
    by_row = {(r["encoder"], r["fusion"]): r for r in rows}
    # the best mean RMSE (lowest) is bold, and only it
    means = {row: np.mean([RMSE[row][s] for s in SEEDS if (*row, s) != NOT_FINISHED]) for row in ROWS}
    best = min(means, key=means.get)
    assert best == ("gvp", "bihmf_local")
    assert [row for row, cells in by_row.items() if cells["test rmse ↓"].startswith("**")] == [best]
    assert by_row[best]["test rmse ↓"] == f"**{means[best]:.3f} ± {np.std(RMSE[best], ddof=1):.3f}**"
    # a row with a missing seed says so in n and shows the one value without a std
    assert by_row[("pronet", "bihmf_local")]["n"] == "1/2"
    assert by_row[("pronet", "bihmf_local")]["test rmse ↓"] == "1.430"
    assert by_row[("gvp", "parallel")]["n"] == "2"
    # an undefined metric is "undefined", never a number or "missing"
    assert by_row[("none", "seq_only")]["test mean_kendall ↑"] == "undefined"
    assert "**Missing runs** (1; their cells read \"missing\"): pronet/bihmf_local seed 1." in markdown
    assert "none/seq_only test mean_kendall (0 of 2 runs)" in markdown
    assert "`test n_groups`: 3" in markdown


def test_summary_statistics_match_numpy(lba_tree: DatasetReport) -> None:
    runs = load_runs(lba_tree.metrics)
    summary = summarise(runs, lba_tree.expected, lba_tree.splits)
    cell = summary.query("encoder == 'gvp' and fusion == 'parallel' and split == 'test' and metric == 'rmse'").iloc[0]
    assert cell["mean"] == pytest.approx(np.mean(RMSE[("gvp", "parallel")]), abs=1e-15)
    assert cell["std"] == pytest.approx(np.std(RMSE[("gvp", "parallel")], ddof=1), abs=1e-15)
    assert (cell["n"], cell["n_runs"], cell["n_expected"], cell["status"]) == (2, 2, 2, "ok")
    # validation comes first (configured split order) and stays in the CSV
    assert list(dict.fromkeys(summary["split"])) == ["val", "test"]
    assert list(dict.fromkeys(summary["metric"])) == list(REGRESSION)


def test_whole_row_missing_and_csv(lba_tree: DatasetReport, tmp_path: Path) -> None:
    """A configured combination with no finished run is a row of "missing" cells with n 0/2."""
    spec = DatasetReport(**{**lba_tree.__dict__, "expected": [*lba_tree.expected, ("gvp", "cross", 0), ("gvp", "cross", 1)]})
    out = outputs(tmp_path, "lba30")
    write_dataset_report(spec, out)
    _, rows = table_cells(out["table_md"].read_text())
    cross = next(r for r in rows if r["fusion"] == "cross")
    assert cross["n"] == "0/2"
    assert all(cross[c] == "missing" for c in cross if c.startswith("test"))
    csv = pd.read_csv(out["table_csv"])
    assert set(csv.loc[csv["fusion"] == "cross", "status"]) == {"missing"}
    assert set(csv["split"]) == {"val", "test"}
    assert csv.loc[csv["best"], ["split", "metric"]].drop_duplicates().shape[0] == csv[["split", "metric"]].drop_duplicates().shape[0]


def test_paired_t_test_against_best_baseline(lba_report) -> None:
    _, out = lba_report
    stats_csv = pd.read_csv(out["stats_csv"])
    row = stats_csv.query("encoder == 'gvp' and fusion == 'bihmf_local' and metric == 'rmse'").iloc[0]
    # best non-Bi-HMF row of gvp or none by RMSE: gvp/parallel (1.49) beats seq_only (1.54) and struct_only
    assert (row["baseline_encoder"], row["baseline_fusion"]) == ("gvp", "parallel")
    expected = stats.ttest_rel(RMSE[("gvp", "bihmf_local")], RMSE[("gvp", "parallel")])
    assert row["test"] == "paired t-test" and row["n"] == 2
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert row["delta"] == pytest.approx(np.mean(np.subtract(RMSE[("gvp", "bihmf_local")], RMSE[("gvp", "parallel")])))
    assert bool(row["better"]) and row["ci_low"] < row["delta"] < row["ci_high"]
    # pronet/bihmf_local has one finished seed: no t-test possible, no predictions saved here
    single = stats_csv.query("encoder == 'pronet' and fusion == 'bihmf_local' and metric == 'rmse'").iloc[0]
    assert single["test"] == "none" and single["note"] == "no test predictions saved"
    _, rows = table_cells(out["table_md"].read_text(), "## Bi-HMF vs the best baseline")
    # significant and better: bold
    assert rows[0]["test rmse"].startswith("**-0.065 [")
    assert rows[0]["test rmse"].endswith(f"], p={expected.pvalue:.3g} vs gvp/parallel (t-test, 2 seeds)**")


def _ppbs_predictions(seed: int, quality: float) -> pa.Table:
    """Per-residue rows of 12 test proteins in two subsets; higher ``quality`` ranks positives higher."""
    rng = np.random.default_rng(seed)
    ids, subsets, labels, scores = [], [], [], []
    for p in range(12):
        n = 20 + p
        label = (rng.random(n) < 0.3).astype(np.int64)
        label[:2] = [0, 1]
        ids += [f"prot{p:02d}"] * n
        subsets += ["70" if p < 7 else "homology"] * n
        labels.append(label)
        scores.append(np.clip(quality * label + rng.random(n), 0, None).astype(np.float32))
    return pa.table({"protein_id": ids, "subset": subsets, "score": np.concatenate(scores),
                     "label": np.concatenate(labels), "weight": np.ones(len(ids), np.float32)})


@pytest.fixture()
def ppbs_tree(tmp_path: Path) -> DatasetReport:
    """Single-seed residue-level runs with saved predictions: the bootstrap path the demo takes."""
    metrics, benchmarks = [], []
    for encoder, fusion, quality in [("gvp", "struct_only", 0.1), ("gvp", "parallel", 0.3), ("gvp", "bihmf_local", 0.6)]:
        table = _ppbs_predictions(0, quality)
        split_metrics = {}
        for split in ("test", "test_70", "test_homology"):
            frame = table.to_pandas()
            if split != "test":
                frame = frame[frame["subset"] == split.removeprefix("test_")]
            part = {c: frame[c].to_numpy() for c in ("score", "label", "weight")}
            split_metrics[split] = TASKS["residue_binary"].evaluate([part])
        split_metrics["val"] = split_metrics["test"]
        metrics.append(write_run(tmp_path, "ppbs", encoder, fusion, 0, "residue_binary", split_metrics, predictions=table))
        benchmarks.append(tmp_path / f"benchmarks/train/ppbs/{encoder}/{fusion}/seed0.tsv")
    ppbs = load_config(ROOT / "config.yaml")["datasets"]["ppbs"]
    return DatasetReport(
        dataset="ppbs", task="residue_binary", metrics=metrics,
        benchmarks=benchmarks,
        cache_index=write_cache_index(tmp_path, "ppbs"),
        expected=[("gvp", f, 0) for f in ("struct_only", "parallel", "bihmf_local")],
        splits=split_order(ppbs), settings=SETTINGS,
    )


def test_single_seed_bootstrap_over_test_proteins(ppbs_tree: DatasetReport, tmp_path: Path) -> None:
    out = outputs(tmp_path, "ppbs")
    write_dataset_report(ppbs_tree, out)
    header, _ = table_cells(out["table_md"].read_text())
    assert header[3:] == ["test auprc ↑", "test roc_auc ↑", "test_70 auprc ↑", "test_70 roc_auc ↑",
                          "test_homology auprc ↑", "test_homology roc_auc ↑"]
    comparisons = pd.read_csv(out["stats_csv"])
    assert set(comparisons["test"]) == {"bootstrap"}
    assert dict(zip(comparisons["split"], comparisons["n"])) == {"test": 12, "test_70": 7, "test_homology": 5}
    runs = {r.fusion: r for r in load_runs(ppbs_tree.metrics)}
    for entry in comparisons.itertuples():
        baseline = runs[entry.baseline_fusion].metrics[entry.split][entry.metric]
        assert entry.delta == pytest.approx(runs["bihmf_local"].metrics[entry.split][entry.metric] - baseline, abs=1e-6)
        assert entry.ci_low <= entry.delta <= entry.ci_high
    # deterministic: the same seed gives the same intervals
    runs = load_runs(ppbs_tree.metrics)
    summary = summarise(runs, ppbs_tree.expected, ppbs_tree.splits)
    first, second = (compare(runs, summary, run_predictions, SETTINGS) for _ in range(2))
    assert first.equals(second)
    assert np.allclose(first["ci_low"], comparisons["ci_low"], rtol=0, atol=1e-12)


def test_resampling_is_paired_and_per_protein() -> None:
    order, starts, counts = np.array([2, 0, 1, 3, 4]), np.array([0, 2, 3]), np.array([2, 1, 2])
    assert _resample(order, starts, counts, np.array([2, 0, 2])).tolist() == [3, 4, 2, 0, 3, 4]
    rows = {k: v.to_numpy(zero_copy_only=False) for k, v in zip(_ppbs_predictions(1, 0.5).column_names,
                                                                  _ppbs_predictions(1, 0.5).columns)}
    proteins = np.unique(rows["protein_id"])
    first = bootstrap_metrics("residue_binary", rows, proteins, SETTINGS)
    assert first["auprc"].shape == (SETTINGS.bootstrap_samples,)
    # two different runs on the same proteins get the same draws: a run against itself differs by 0
    assert np.array_equal(first["auprc"], bootstrap_metrics("residue_binary", rows, proteins, SETTINGS)["auprc"])


def test_figures_are_written(lba_report) -> None:
    lba_tree, out = lba_report
    for key, path in out.items():
        if key.endswith("_png"):
            assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 5000, key
        if key.endswith("_pdf"):
            assert path.read_bytes().startswith(b"%PDF"), key
    assert not list(out["table_md"].parent.glob(".*.tmp"))
    runs = pd.read_csv(out["runs_csv"])
    assert len(runs) == len(lba_tree.metrics)
    assert set(runs["compute_unit"]) == {"CPU-hours"} and runs["compute_hours"].eq(36.0 / 3600).all()
    struct = runs[runs["fusion"] == "struct_only"]["esm_cache_mib_read"]
    assert struct.eq(0).all() and runs[runs["fusion"] == "bihmf_local"]["esm_cache_mib_read"].gt(0).all()


def test_relative_gain_is_signed_by_direction(lba_tree: DatasetReport) -> None:
    summary = summarise(load_runs(lba_tree.metrics), lba_tree.expected, lba_tree.splits)
    gain = relative_gain(summary, "rmse")
    base, fused = np.mean(RMSE[("gvp", "struct_only")]), np.mean(RMSE[("gvp", "bihmf_local")])
    assert gain.loc["gvp", "bihmf_local"] == pytest.approx((base - fused) / base * 100)  # lower RMSE = gain
    seq = np.mean(RMSE[("none", "seq_only")])
    assert gain.loc["pronet", "seq_only"] == pytest.approx((np.mean(RMSE[("pronet", "struct_only")]) - seq)
                                                           / np.mean(RMSE[("pronet", "struct_only")]) * 100)
    assert "none" not in gain.index and "struct_only" not in gain.columns


def test_partial_report_without_any_finished_run(lba_tree: DatasetReport, tmp_path: Path) -> None:
    spec = DatasetReport(**{**lba_tree.__dict__, "metrics": [], "benchmarks": []})
    out = outputs(tmp_path, "lba30")
    write_dataset_report(spec, out)
    markdown = out["table_md"].read_text()
    assert f"0 of {len(lba_tree.expected)} expected runs finished" in markdown
    assert f"**Missing runs** ({len(lba_tree.expected)};" in markdown
    _, rows = table_cells(markdown)
    assert [r["n"] for r in rows] == ["0/2"] * len(ROWS)
    assert all(path.exists() for path in out.values())


def test_latex_and_html_rendering() -> None:
    table = Table(["encoder", "fusion", "test rmse ↓"])
    table.add_row(["gvp", "bihmf_local", Cell("1.425 ± 0.021", bold=True)])
    table.add_row(["none", "seq_only", "missing"], rule_before=True)
    tex = to_latex(table, "lba30 & more: 50% split", "tab:lba30")
    assert tex.splitlines()[4] == r"\begin{tabular}{llr}"
    assert r"\toprule" in tex and r"\bottomrule" in tex and tex.count(r"\midrule") == 2
    assert r"gvp & bihmf\_local & \textbf{1.425 $\pm$ 0.021} \\" in tex
    assert r"\caption{lba30 \& more: 50\% split}" in tex and r"test rmse $\downarrow$" in tex
    assert to_markdown(table).splitlines()[2] == "| gvp | bihmf_local | **1.425 ± 0.021** |"
    page = page_html([("h1", "t <x>"), ("p", "**a** `b`"), ("table", table)])
    assert "<b>a</b> <code>b</code>" in page and "t &lt;x&gt;" in page and '<tr class="rule">' in page
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        table.add_row(["a", "b"])


def test_split_order_follows_the_config() -> None:
    config = load_config(ROOT / "config.yaml")
    assert split_order(config["datasets"]["ppbs"]) == ["val", "test", "test_70", "test_homology", "test_topology", "test_none"]
    assert split_order(config["datasets"]["lba30"]) == ["val", "test"]


def test_published_numbers_are_sourced() -> None:
    published = load_published()
    by_name = {m.name: m for m in published.methods}
    gvp = by_name["GVP-GNN"]
    assert (gvp.encoder, gvp.fusion) == ("gvp", "struct_only")
    assert gvp.values[("react", "test", "accuracy")].value == pytest.approx(0.655)  # 65.5 % on our scale
    assert gvp.values[("react", "test", "accuracy")].printed == "65.5%"
    assert gvp.values[("lba30", "test", "rmse")].value == 1.594  # the authors' number, not SSHG's re-run
    assert by_name["ProNet, all-atom level"].values[("lba30", "test", "spearman")].value is None  # not given
    assert by_name["ProNet, amino-acid level"].encoder == "pronet"
    assert (by_name["GearNet-Edge"].encoder, by_name["GearNet-Edge"].fusion) == ("gearnet_edge", "struct_only")
    assert by_name["ProNet, backbone level"].encoder == "pronet_backbone"
    assert not by_name["ProNet, all-atom level"].matched  # a variant we do not train: reference row only
    assert by_name["Bi-HMF (paper), local gating"].values == {}  # nothing available, nothing made up
    for method in published.methods:
        assert all(v.source in published.sources for v in method.values.values())
    assert [c[0] for c in published.columns] == ["react", "psr", "psr", "lba30", "lba30", "lba30", "lba60", "lba60",
                                                 "lba60", "ppbs", "ppbs", "ppbs", "ppbs", "bce"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("source: lba30_table}", "source: nowhere}", 1), "source 'nowhere' is not one of"),
        (lambda t: t.replace("      lba30:\n        rmse: {value: 1.594", "      lba31:\n        rmse: {value: 1.594"),
         "unknown benchmark 'lba31'"),
        (lambda t: t.replace("rmse: {value: 1.594", "rmse: {value: fast"), "value must be a finite number or null"),
        (lambda t: t.replace("unit: percent, source: react_table}", "unit: permille, source: react_table}", 1),
         "unit 'permille'"),
        (lambda t: t.replace("columns: [[test, auprc]]", "columns: [[test, auroc]]"), "unregistered metric"),
    ],
)
def test_bad_published_file_names_the_entry(tmp_path: Path, edit, match: str) -> None:
    bad = tmp_path / "published.yaml"
    bad.write_text(edit(PUBLISHED_PATH.read_text()))
    with pytest.raises(ValueError, match=match) as err:
        load_published(bad)
    assert str(bad) in str(err.value)


def test_ambiguous_published_key_needs_the_split(tmp_path: Path) -> None:
    text = PUBLISHED_PATH.read_text().replace(
        "  - name: CDConv\n    values:\n", "  - name: CDConv\n    values:\n      ppbs:\n        auprc: {value: 0.5, source: react_table}\n")
    bad = tmp_path / "published.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="'auprc' must name exactly one column of ppbs"):
        load_published(bad)
    bad.write_text(text.replace("        auprc: {value: 0.5", "        test_70/auprc: {value: 0.5"))
    cdconv = next(m for m in load_published(bad).methods if m.name == "CDConv")
    assert cdconv.values[("ppbs", "test_70", "auprc")].value == 0.5


def test_summary_table_has_paper_columns_published_rows_and_missing_cells(lba_report, tmp_path: Path) -> None:
    _, out = lba_report
    react = tmp_path / "react_demo_table.csv"
    pd.DataFrame([{"dataset": "react_demo", "encoder": "gvp", "fusion": "struct_only", "split": "test", "metric": "accuracy",
                   "mean": 0.6, "std": 0.02, "n": 2, "n_runs": 2, "n_expected": 2, "status": "ok", "best": True}]).to_csv(react, index=False)
    summary = {k: tmp_path / f"summary.{k.split('_')[1]}" for k in SUMMARY_OUTPUTS}
    write_summary_report({"lba30": out["table_csv"], "react_demo": react}, {"lba30": None, "react_demo": "react"},
                         ROWS, summary, PUBLISHED_PATH)
    header, rows = table_cells(summary["summary_md"].read_text(), "# Summary")
    assert header == ["row", "encoder", "fusion", "React accuracy ↑", "MQA (PSR) spearman ↑", "MQA (PSR) mean_spearman ↑",
                      "LBA 30% rmse ↓", "LBA 30% pearson ↑", "LBA 30% spearman ↑", "LBA 60% rmse ↓", "LBA 60% pearson ↑",
                      "LBA 60% spearman ↑", "PPBS 70 auprc ↑", "PPBS homology auprc ↑", "PPBS topology auprc ↑",
                      "PPBS none auprc ↑", "BCE auprc ↑"]
    labels = [r["row"] for r in rows]
    i = labels.index("ours")
    assert (rows[i]["encoder"], rows[i]["fusion"]) == ("gvp", "struct_only")
    assert rows[i]["React accuracy ↑"] == "**0.600 ± 0.020 (n=2)**"
    assert rows[i]["LBA 60% rmse ↓"] == "missing" and rows[i]["BCE auprc ↑"] == "missing"
    assert rows[i + 1]["row"] == "published: GVP-GNN [1] [2] [3]"
    assert (rows[i + 1]["React accuracy ↑"], rows[i + 1]["LBA 30% rmse ↓"]) == ("0.655", "1.594")
    assert (rows[i + 1]["MQA (PSR) spearman ↑"], rows[i + 1]["MQA (PSR) mean_spearman ↑"]) == ("0.845", "0.511")
    assert rows[i + 1]["LBA 60% rmse ↓"] == "not available"
    assert rows[i + 2]["row"] == "Δ ours − GVP-GNN"
    assert rows[i + 2]["React accuracy ↑"] == "-0.055"
    assert rows[i + 2]["LBA 30% rmse ↓"] == f"{np.mean(RMSE[('gvp', 'struct_only')]) - 1.594:+.3f}"
    assert rows[i + 2]["BCE auprc ↑"] == "—"
    bihmf = labels.index("published: Bi-HMF (paper), local gating [4]")
    assert all(rows[bihmf][c] == "not available" for c in header[3:])
    assert labels.count("published: Bi-HMF (paper), local gating [4]") == 2  # under gvp and pronet bihmf_local
    assert "published only: CDConv [1]" in labels
    assert not any("GearNet-Edge" in label for label in labels)  # matched to gearnet_edge, a row not in this run
    all_atom = rows[labels.index("published only: ProNet, all-atom level [1] [5]")]
    assert all_atom["LBA 30% spearman ↑"] == "not given"
    text = summary["summary_md"].read_text()
    assert "Columns filled: React ← react_demo, LBA 30% ← lba30." in text
    assert "Not configured in this run (every cell of ours missing): MQA (PSR), LBA 60%, PPBS, BCE." in text
    assert "- [2] ATOM3D LBA 30% test RMSE of GVP-GNN (1.594 ± 0.073)" in text
    assert "GVP-GNN, React accuracy: 68.5 with a 10 Å cutoff instead of 4.5 Å." in text
    tidy = pd.read_csv(summary["summary_csv"])
    assert {"ours", "published", "rerun"} == set(tidy["row"])
    assert r"\toprule" in summary["summary_tex"].read_text()


def test_summary_puts_published_variants_under_our_trained_variants(tmp_path: Path) -> None:
    """GearNet-Edge and ProNet's backbone level are encoders we train: their published numbers
    sit under our rows, with the difference, instead of in the reference block."""
    rows = [("gearnet_edge", "struct_only"), ("pronet_backbone", "struct_only"), ("gearnet", "struct_only")]
    react = tmp_path / "react_table.csv"
    pd.DataFrame([{"dataset": "react", "encoder": e, "fusion": f, "split": "test", "metric": "accuracy", "mean": 0.8,
                   "std": 0.01, "n": 3, "n_runs": 3, "n_expected": 3, "status": "ok", "best": False}
                  for e, f in rows]).to_csv(react, index=False)
    summary = {k: tmp_path / f"summary.{k.split('_')[1]}" for k in SUMMARY_OUTPUTS}
    write_summary_report({"react": react}, {"react": None}, rows, summary, PUBLISHED_PATH)
    _, cells = table_cells(summary["summary_md"].read_text(), "# Summary")
    labels = [r["row"] for r in cells]
    edge = labels.index("published: GearNet-Edge [1]")
    assert (cells[edge - 1]["row"], cells[edge - 1]["encoder"]) == ("ours", "gearnet_edge")
    assert cells[edge]["React accuracy ↑"] == "0.866"
    assert cells[edge + 1]["React accuracy ↑"] == "-0.066"  # 0.8 - 0.866
    backbone = labels.index("published: ProNet, backbone level [1]")
    assert (cells[backbone - 1]["row"], cells[backbone - 1]["encoder"]) == ("ours", "pronet_backbone")
    # its LBA 30% numbers are SSHG's re-run, a reference row of their own, never under ours
    assert cells[backbone]["React accuracy ↑"] == "0.864" and cells[backbone]["LBA 30% rmse ↓"] == "not available"
    ours_gearnet = labels.index("ours", backbone + 1)
    assert cells[ours_gearnet]["encoder"] == "gearnet" and cells[ours_gearnet + 1]["row"].startswith("published only:")
    tidy = pd.read_csv(summary["summary_csv"])
    matched = tidy[(tidy["row"] == "published") & (tidy["encoder"] == "gearnet_edge") & (tidy["metric"] == "accuracy")]
    assert matched["published"].tolist() == [pytest.approx(0.866)] and matched["delta"].tolist() == [pytest.approx(-0.066)]


def test_two_datasets_cannot_fill_one_benchmark() -> None:
    with pytest.raises(ValueError, match="'lba30' and 'lba_demo' both fill benchmark 'lba30'"):
        benchmark_of_datasets({"lba30": None, "lba_demo": "lba30"}, load_published())
    with pytest.raises(ValueError, match="paper_benchmark 'lba99'"):
        benchmark_of_datasets({"x": "lba99"}, load_published())


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.pop("fusion"), "missing required key 'fusion'"),
        (lambda r: r.pop("metrics"), "missing required key 'metrics'"),
        (lambda r: r.update(seed="0"), "key 'seed' must be a non-empty int"),
        (lambda r: r["metrics"]["test"].update(rmse=float("nan")), r"metrics\.test\.rmse"),
        (lambda r: r["metrics"]["val"].update(pearson=float("inf")), r"metrics\.val\.pearson"),
        (lambda r: r["metrics"].update(test={}), r"metrics\.test must be a non-empty mapping"),
        (lambda r: r.update(metrics={}), "key 'metrics' must be a non-empty mapping"),
    ],
)
def test_bad_metrics_file_names_file_and_key(lba_tree: DatasetReport, mutate, match: str) -> None:
    bad = lba_tree.metrics[1]
    run = json.loads(bad.read_text())
    mutate(run)
    bad.write_text(json.dumps(run))
    with pytest.raises(ValueError, match=match) as err:
        read_record(bad)
    assert str(bad) in str(err.value)


def test_duplicate_wrong_dataset_and_wrong_task_are_errors(lba_tree: DatasetReport, tmp_path: Path) -> None:
    copy = tmp_path / "copy.json"
    copy.write_text(lba_tree.metrics[0].read_text())
    with pytest.raises(ValueError, match=f"copy.json: duplicates run gvp/struct_only seed 0 from {re.escape(str(lba_tree.metrics[0]))}"):
        load_runs([*lba_tree.metrics, copy])
    with pytest.raises(ValueError, match="run of dataset 'lba30' given to the report of 'psr'"):
        load_runs(lba_tree.metrics, "psr")
    with pytest.raises(ValueError, match="task 'graph_regression', but dataset 'lba30' is configured as 'residue_binary'"):
        write_dataset_report(DatasetReport(**{**lba_tree.__dict__, "task": "residue_binary"}), outputs(tmp_path, "lba30"))
    with pytest.raises(ValueError, match="13 metrics files but 12 benchmark files"):
        write_dataset_report(DatasetReport(**{**lba_tree.__dict__, "benchmarks": lba_tree.benchmarks[1:]}),
                             outputs(tmp_path, "lba30"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_record(broken)


def test_bootstrap_refuses_runs_tested_on_different_proteins(ppbs_tree: DatasetReport, tmp_path: Path) -> None:
    """Pairing resamples needs the same test proteins in both runs (a stale run would break it)."""
    stale = ppbs_tree.metrics[2].parent / "test_predictions.parquet"
    table = pq.read_table(stale).to_pandas()
    table["protein_id"] = table["protein_id"].replace({"prot00": "prot99"})
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), stale)
    with pytest.raises(ValueError, match=f"{re.escape(str(stale.parent))} and .* saved test predictions for different proteins"):
        write_dataset_report(ppbs_tree, outputs(tmp_path, "ppbs"))
