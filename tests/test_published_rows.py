"""Published numbers: a re-run of a method by a later paper (or a public reproduction) is a
reference row of its own kind, never the authors' number and never matched to a row of ours;
every LBA 30 % / PSR number names the table it was read in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bihmf.report.build import SUMMARY_OUTPUTS, write_summary_report
from bihmf.report.paper import PUBLISHED_PATH, RERUN, load_published


def _lba30(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "lba30_table.csv"
    pd.DataFrame([{"dataset": "lba30", "encoder": e, "fusion": f, "split": "test", "metric": "rmse", "mean": 1.5,
                   "std": 0.01, "n": 3, "n_runs": 3, "n_expected": 3, "status": "ok", "best": False}
                  for e, f in rows]).to_csv(path, index=False)
    return path


def _summary_rows(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.split("# Summary", 1)[1].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_gvp_lba30_is_the_authors_number_and_sshg_is_a_rerun() -> None:
    methods = {m.name: m for m in load_published().methods}
    authors = methods["GVP-GNN"].values
    assert authors[("lba30", "test", "rmse")].value == 1.594
    assert authors[("lba30", "test", "pearson")].value is None  # not found, never filled in
    rerun = methods["GVP-GNN, re-run by SSHG"]
    assert rerun.kind == RERUN and not rerun.matched
    assert rerun.values[("lba30", "test", "rmse")].value == 1.529
    assert "SSHG" in load_published().sources[rerun.values[("lba30", "test", "rmse")].source]
    backbone = methods["ProNet, backbone level"]
    assert ("lba30", "test", "rmse") not in backbone.values  # SSHG re-ran it: under the re-run row instead
    assert methods["ProNet, backbone level, re-run by SSHG"].kind == RERUN


def test_every_lba30_number_names_where_it_was_read() -> None:
    published = load_published()
    for method in published.methods:
        for (benchmark, _, _), value in method.values.items():
            if benchmark == "lba30":
                text = published.sources[value.source].lower()
                assert "table" in text or "section" in text, (method.name, value.source)
    assert "Table 3 of SSHG" in published.sources["lba30_table"]


def test_atom3d_psr_baselines() -> None:
    methods = {m.name: m for m in load_published().methods}
    for name, spearman, mean in (("ATOM3D 3DCNN", 0.789, 0.431), ("ATOM3D GNN", 0.750, 0.411)):
        values = methods[name].values
        assert (values[("psr", "test", "spearman")].value, values[("psr", "test", "mean_spearman")].value) == (spearman, mean)
        assert not methods[name].matched


def test_reruns_print_as_their_own_reference_rows(tmp_path: Path) -> None:
    rows = [("gvp", "struct_only"), ("pronet_backbone", "struct_only")]
    summary = {k: tmp_path / f"summary.{k.split('_')[1]}" for k in SUMMARY_OUTPUTS}
    write_summary_report({"lba30": _lba30(tmp_path, rows)}, {"lba30": None}, rows, summary, PUBLISHED_PATH)
    cells = _summary_rows(summary["summary_md"].read_text())
    labels = [c["row"] for c in cells]
    gvp = labels.index("published: GVP-GNN [1] [2] [3]")
    assert cells[gvp]["LBA 30% rmse ↓"] == "1.594" and cells[gvp]["LBA 30% pearson ↑"] == "not given"
    assert cells[gvp + 1]["LBA 30% rmse ↓"] == "-0.094"  # Δ against the authors' number only
    reruns = [i for i, label in enumerate(labels) if label.startswith("re-run: ")]
    assert [labels[i].split(" [")[0] for i in reruns] == [
        "re-run: GVP-GNN, re-run by SSHG", "re-run: GVP-GNN, reproduction (DL02)", "re-run: ProNet, backbone level, re-run by SSHG"]
    assert min(reruns) > max(i for i, label in enumerate(labels) if label.startswith(("ours", "published", "Δ")))
    assert cells[reruns[0]]["LBA 30% rmse ↓"] == "1.529"
    tidy = pd.read_csv(summary["summary_csv"])
    sshg = tidy[(tidy["method"] == "GVP-GNN, re-run by SSHG") & (tidy["metric"] == "rmse") & (tidy["benchmark"] == "lba30")]
    assert sshg["row"].tolist() == ["rerun"] and sshg["encoder"].isna().all() and sshg["delta"].isna().all()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("  - name: GVP-GNN, re-run by SSHG\n    kind: rerun\n",
                             "  - name: GVP-GNN, re-run by SSHG\n    kind: rerun\n    match: {encoder: gvp, fusion: struct_only}\n"),
         "a re-run is a reference row, never matched"),
        (lambda t: t.replace("    kind: rerun\n", "    kind: rerurn\n", 1), "kind 'rerurn' is not one of"),
    ],
)
def test_bad_rerun_rows_name_the_entry(tmp_path: Path, edit, match: str) -> None:
    bad = tmp_path / "published.yaml"
    bad.write_text(edit(PUBLISHED_PATH.read_text()))
    with pytest.raises(ValueError, match=match) as err:
        load_published(bad)
    assert str(bad) in str(err.value) and "GVP-GNN, re-run by SSHG" in str(err.value)
