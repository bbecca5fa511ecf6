"""PPBS parsing on the demo archive (real structures, ScanNet-format labels) and on
hand-made label files that disagree with the structure."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from bihmf.data import preprocess_dataset
from bihmf.data.ppbs import parse
from bihmf.data.scannet import LabelFormatError, parse_origin, read_label_file
from bihmf.data.schema import read_proteins


@pytest.fixture(scope="module")
def parsed(demo_raw, demo_spec):
    return parse(demo_raw, demo_spec)


def test_every_demo_entry_is_kept_with_labels_matching_the_label_files(parsed, demo_raw, demo_spec):
    records, reports = parsed
    assert [r.status for r in reports] == ["kept"] * len(reports)
    by_id = {r.protein_id: r for r in records}
    for label_file in demo_spec["label_files"]:
        for entry in read_label_file(demo_raw / label_file["file"]):
            record = by_id[entry.origin]
            assert record.split == label_file["split"]
            labelled = record.labels >= 0
            # the labelled residues, in order, spell exactly the label file's sequence and labels
            assert "".join(np.array(list(record.sequence))[labelled]) == "".join(row.aa for row in entry.rows)
            assert record.labels[labelled].tolist() == [row.label for row in entry.rows]
            assert record.resnums[labelled].tolist() == [row.resnum for row in entry.rows]


def test_demo_reconciliation_counts_the_unlabelled_modified_residue(parsed):
    """1HVR's CSO 67 is a residue for the parser but has no label line: counted, label -1."""
    records, reports = parsed
    report = next(r for r in reports if r.protein_id == "1hvr_0-A")
    assert report.unlabelled_residues == 1 and report.aa_mismatches == 0 and report.label_rows_without_residue == 0
    record = next(r for r in records if r.protein_id == "1hvr_0-A")
    assert record.labels[record.resnums.tolist().index(67)] == -1


def test_weights_come_from_the_table_by_position(parsed):
    records, _ = parsed
    weights = {r.protein_id: r.weight for r in records}
    assert weights["1hvr_0-A"] == pytest.approx(0.5)  # two identical chains in the set


def _rewrite(raw, spec, tmp_path, edit):
    """Copy the demo raw folder with one label file edited by ``edit(lines) -> lines``."""
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    path = root / spec["label_files"][1]["file"]
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))
    return root


def test_mismatches_are_counted_never_shifted(demo_raw, demo_spec, tmp_path):
    def edit(lines):
        out = []
        for line in lines:
            fields = line.split()
            if len(fields) == 4 and fields[0] == "A" and fields[1] == "10":
                continue  # a residue missing from the label file
            if len(fields) == 4 and fields[0] == "A" and fields[1] == "20":
                line = f"A 20 {'W' if fields[2] != 'W' else 'A'} {fields[3]}\n"  # wrong amino acid
            out.append(line)
        out.insert(2, "A 999 G 1\n")  # a label row with no structure residue
        return out

    root = _rewrite(demo_raw, demo_spec, tmp_path, edit)
    records, reports = parse(root, demo_spec)
    report = next(r for r in reports if r.protein_id == "1hvr_0-A")
    assert (report.unlabelled_residues, report.aa_mismatches, report.label_rows_without_residue) == (2, 1, 1)
    record = next(r for r in records if r.protein_id == "1hvr_0-A")
    resnums = record.resnums.tolist()
    assert record.labels[resnums.index(10)] == -1 and record.labels[resnums.index(20)] == -1
    original = next(r for r in parse(demo_raw, demo_spec)[0] if r.protein_id == "1hvr_0-A")
    untouched = [i for i, n in enumerate(resnums) if n not in (10, 20)]
    assert record.labels[untouched].tolist() == original.labels[untouched].tolist()


def test_missing_chain_and_structure_are_dropped_and_listed(demo_raw, demo_spec, tmp_path):
    def edit(lines):
        return lines + [">1hvr_0-Z\n", "Z 1 P 0\n", ">9xyz_0-A\n", "A 1 M 0\n"]

    root = _rewrite(demo_raw, demo_spec, tmp_path, edit)
    spec = copy.deepcopy(demo_spec)
    spec["table"] = None
    records, reports = parse(root, spec)
    dropped = {r.protein_id: r.reason for r in reports if r.status == "dropped"}
    assert set(dropped) == {"1hvr_0-Z", "9xyz_0-A"}
    assert "chain Z not in structure" in dropped["1hvr_0-Z"]
    assert "no structure file for 9xyz" in dropped["9xyz_0-A"]
    assert len(records) == len(reports) - 2


def test_table_rows_must_match_label_entries(demo_raw, demo_spec, tmp_path):
    root = _rewrite(demo_raw, demo_spec, tmp_path, lambda lines: lines + [">1hvr_0-A\n", "A 1 P 0\n"])
    with pytest.raises(LabelFormatError, match="matched by position"):
        parse(root, demo_spec)


def test_malformed_label_line_names_file_and_line(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(">1abc_0-A\nA 1 M 0\nA 2 K\n")
    with pytest.raises(LabelFormatError, match=r"labels.txt:3: expected 4 fields"):
        read_label_file(path)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("1a4f_0-A", ("1a4f", 0, ("A",))),
        ("1ABC_2-B", ("1abc", 2, ("B",))),
        ("1a2n_0-A+0-B", ("1a2n", 0, ("A", "B"))),
        ("7d3m_13", ("7d3m", 0, ("1", "3"))),
    ],
)
def test_parse_origin(origin, expected):
    assert parse_origin(origin) == expected


def test_preprocess_writes_table_and_report(demo_raw, demo_spec, tmp_path):
    spec = {**demo_spec, "published_sizes": {"train": 10, "val": 2, "test_70": 5}}
    summary = preprocess_dataset(demo_raw, spec, tmp_path / "p.parquet", tmp_path / "report.json")
    records = read_proteins(tmp_path / "p.parquet")
    assert summary["kept"] == len(records) == 18 and summary["dropped"] == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["split_counts"] == {"test": 6, "test_70": 4, "test_homology": 2, "train": 10, "val": 2, "val_70": 2}
    assert saved["size_differences"] == {"test_70": {"published": 5, "kept": 4, "difference": -1}}
    assert [e["protein_id"] for e in saved["noteworthy_entries"]] == ["1hvr_0-A", "1hvr_0-B"]  # the CSO residue
    assert {r.split for r in records} == {"train", "val", "test"}
    for record in records:
        assert record.coords.shape == (len(record.sequence), 5, 3)
        assert np.isfinite(record.coords[:, 1]).all()
