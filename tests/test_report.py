"""The report is where seeds are combined, so its numbers and best-cell marks must be exact."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bihmf.report import format_table, load_runs, plot_metrics, summarise, write_report
from bihmf.tasks.metrics import METRICS, Metric

DATASET = "ppbs_demo"
FUSIONS = ("concat", "bihmf_local")
SEEDS = (0, 1)
# values[fusion][seed][split][metric]; bihmf_local is better on auprc, concat on roc_auc and loss.
VALUES = {
    "concat": {
        0: {"val": {"auprc": 0.40, "roc_auc": 0.71}, "test": {"auprc": 0.30, "roc_auc": 0.69, "loss": 0.50}},
        1: {"val": {"auprc": 0.42, "roc_auc": 0.73}, "test": {"auprc": 0.34, "roc_auc": 0.67, "loss": 0.52}},
    },
    "bihmf_local": {
        0: {"val": {"auprc": 0.45, "roc_auc": 0.70}, "test": {"auprc": 0.38, "roc_auc": 0.64, "loss": 0.61}},
        1: {"val": {"auprc": 0.47, "roc_auc": 0.69}, "test": {"auprc": 0.40, "roc_auc": 0.66, "loss": 0.55}},
    },
}


def _write_run(path: Path, fusion: str, seed: int, metrics: dict) -> Path:
    run = {"dataset": DATASET, "encoder": "gvp", "fusion": fusion, "seed": seed,
           "task": "residue_binary", "metrics": metrics, "provenance": {"git": "abc"}}
    path.write_text(json.dumps(run))
    return path


@pytest.fixture
def run_paths(tmp_path: Path) -> list[Path]:
    return [
        _write_run(tmp_path / f"{fusion}_s{seed}.json", fusion, seed, VALUES[fusion][seed])
        for fusion in FUSIONS
        for seed in SEEDS
    ]


def _table_cells(markdown: str) -> dict[str, dict[str, str]]:
    """Markdown table -> {fusion: {column header: cell}}."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {row[1]: dict(zip(header, row)) for row in rows}


def test_load_runs_long_format_in_first_seen_order(run_paths: list[Path]) -> None:
    runs = load_runs(run_paths)
    assert list(runs.columns) == ["dataset", "encoder", "fusion", "seed", "split", "metric", "value"]
    assert len(runs) == len(FUSIONS) * len(SEEDS) * 5
    assert list(dict.fromkeys(runs["split"])) == ["val", "test"]
    assert list(dict.fromkeys(runs["metric"])) == ["auprc", "roc_auc", "loss"]


def test_summarise_matches_numpy(run_paths: list[Path]) -> None:
    summary = summarise(load_runs(run_paths))
    assert list(summary.index) == [(DATASET, "gvp", f) for f in FUSIONS]
    assert list(dict.fromkeys((s, m) for s, m, _ in summary.columns)) == [
        ("val", "auprc"), ("val", "roc_auc"), ("test", "auprc"), ("test", "roc_auc"), ("test", "loss")
    ]
    for fusion in FUSIONS:
        for split, metrics in VALUES[fusion][0].items():
            for metric in metrics:
                seeds = np.array([VALUES[fusion][s][split][metric] for s in SEEDS])
                row = summary.loc[(DATASET, "gvp", fusion)]
                assert row[(split, metric, "mean")] == pytest.approx(seeds.mean(), abs=1e-15)
                assert row[(split, metric, "std")] == pytest.approx(seeds.std(ddof=1), abs=1e-15)
                assert row[(split, metric, "n")] == len(SEEDS)


def test_single_seed_has_undefined_std_and_no_plus_minus(run_paths: list[Path]) -> None:
    summary = summarise(load_runs(run_paths[:1]))
    assert np.isnan(summary.iloc[0][("test", "auprc", "std")])
    assert summary.iloc[0][("test", "auprc", "n")] == 1
    cells = _table_cells(format_table(summary, DATASET)[0])
    assert cells["concat"]["test auprc"] == "**0.300**"
    assert cells["concat"]["n"] == "1"


def test_bold_marks_best_mean_per_direction(run_paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    summary = summarise(load_runs(run_paths))
    cells = _table_cells(format_table(summary, DATASET)[0])
    assert cells["bihmf_local"]["test auprc"] == "**0.390 ± 0.014**"
    assert cells["concat"]["test auprc"] == "0.320 ± 0.028"
    assert cells["concat"]["test roc_auc"].startswith("**0.680")
    assert not cells["bihmf_local"]["test roc_auc"].startswith("**")
    # A metric without a registered direction is never bolded.
    assert not any(cells[f]["test loss"].startswith("**") for f in FUSIONS)
    assert cells["concat"]["n"] == cells["bihmf_local"]["n"] == "2"

    monkeypatch.setitem(METRICS, "loss", Metric(lambda *a: 0.0, higher_is_better=False))
    cells = _table_cells(format_table(summary, DATASET)[0])
    assert cells["concat"]["test loss"].startswith("**0.510")
    assert not cells["bihmf_local"]["test loss"].startswith("**")


def test_missing_split_is_marked_and_counted(run_paths: list[Path], tmp_path: Path) -> None:
    extra = _write_run(tmp_path / "x.json", "concat", 2, {"test": {"auprc": 0.2, "roc_auc": 0.6}})
    cells = _table_cells(format_table(summarise(load_runs([*run_paths, extra])), DATASET)[0])
    assert cells["concat"]["n"] == "3"
    assert cells["concat"]["val auprc"].endswith("(n=2)")
    assert cells["concat"]["test auprc"] == "0.280 ± 0.072"


def test_csv_parses_back(run_paths: list[Path]) -> None:
    summary = summarise(load_runs(run_paths))
    csv = pd.read_csv(io.StringIO(format_table(summary, DATASET)[1]))
    assert list(csv.columns) == ["dataset", "encoder", "fusion", "split", "metric", "mean", "std", "n"]
    assert len(csv) == len(FUSIONS) * 5
    row = csv.query("fusion == 'concat' and split == 'test' and metric == 'roc_auc'").iloc[0]
    assert row["mean"] == pytest.approx(0.68, abs=1e-15)
    assert row["std"] == pytest.approx(np.std([0.69, 0.67], ddof=1), abs=1e-15)
    assert row["n"] == 2


def test_write_report_outputs(run_paths: list[Path], tmp_path: Path) -> None:
    out = write_report(run_paths, tmp_path / "report", DATASET)
    assert {p.name for p in out.values()} == {
        f"{DATASET}_table.md", f"{DATASET}_table.csv", f"{DATASET}_metrics.png"
    }
    markdown = out["table_md"].read_text()
    assert markdown.startswith(f"# {DATASET}")
    assert "Aggregated 4 runs over 2 seeds" in markdown
    png = out["plot_png"].read_bytes()
    assert len(png) > 1000 and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert not list((tmp_path / "report").glob(".*.tmp"))


def test_plot_requires_test_split(run_paths: list[Path], tmp_path: Path) -> None:
    runs = load_runs(run_paths)
    with pytest.raises(ValueError, match="no test splits"):
        plot_metrics(runs[runs["split"] == "val"], DATASET, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_unknown_dataset(run_paths: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="other"):
        format_table(summarise(load_runs(run_paths)), "other")
    with pytest.raises(ValueError, match="no runs for dataset 'other'"):
        write_report(run_paths, tmp_path, "other")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.pop("fusion"), "'fusion'"),
        (lambda r: r.pop("metrics"), "'metrics'"),
        (lambda r: r.update(seed="0"), "'seed'"),
        (lambda r: r["metrics"]["test"].update(auprc=float("nan")), r"metrics\.test\.auprc"),
        (lambda r: r["metrics"]["val"].update(roc_auc=float("inf")), r"metrics\.val\.roc_auc"),
    ],
)
def test_bad_file_names_file_and_key(run_paths: list[Path], mutate, match: str) -> None:
    bad = run_paths[1]
    run = json.loads(bad.read_text())
    mutate(run)
    bad.write_text(json.dumps(run))
    with pytest.raises(ValueError, match=match) as err:
        load_runs(run_paths)
    assert str(bad) in str(err.value)


def test_invalid_json_and_duplicate_run(run_paths: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_runs([broken])
    copy = tmp_path / "copy.json"
    copy.write_text(run_paths[0].read_text())
    with pytest.raises(ValueError, match=f"copy.json: duplicates .* from {re.escape(str(run_paths[0]))}"):
        load_runs([*run_paths, copy])


def test_null_metric_is_a_missing_cell_not_an_error(tmp_path):
    import json

    from bihmf.report import load_runs

    path = tmp_path / "m.json"
    path.write_text(json.dumps({"dataset": "d", "encoder": "e", "fusion": "f", "seed": 0,
                                "metrics": {"test": {"rmse": 1.5, "spearman": None}}}))
    runs = load_runs([path])
    assert list(runs["metric"]) == ["rmse"]
