"""Real ScanNet label files (tests/data/scannet, copied unchanged from upstream) parse with the
published counts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from bihmf.data.scannet import parse_origin, read_label_file, read_sample_weights

ROOT = Path(__file__).resolve().parents[1]
SCANNET = ROOT / "tests" / "data" / "scannet"
DATASET_OF_FOLDER = {"PPBS": "ppbs", "BCE": "bce"}


@pytest.mark.parametrize("path", sorted(SCANNET.glob("*/*")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_files_are_the_ones_the_config_downloads(path):
    """The copies are upstream's bytes: each matches the sha256 config.yaml pins for its URL."""
    files = yaml.safe_load((ROOT / "config.yaml").read_text())["datasets"][DATASET_OF_FOLDER[path.parent.name]]["download"]["files"]
    pinned = [f["checksum"] for f in files if f["url"].endswith(f"/datasets/{path.parent.name}/{path.name}")]
    assert pinned == [f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"], f"{path}: config.yaml pins {pinned}"


@pytest.mark.parametrize(
    ("name", "chains", "residues", "positives"),
    [
        ("labels_validation_70.txt", 414, 109_990, 22_313),
        ("labels_validation_homology.txt", 1_458, 344_492, 65_771),
        ("labels_validation_topology.txt", 590, 151_819, 31_718),
        ("labels_validation_none.txt", 754, 209_856, 39_804),
    ],
)
def test_ppbs_validation_files(name, chains, residues, positives):
    entries = read_label_file(SCANNET / "PPBS" / name)
    assert len(entries) == chains
    assert len({e.origin for e in entries}) == chains
    assert sum(len(e.rows) for e in entries) == residues
    assert sum(row.label for e in entries for row in e.rows) == positives
    for entry in entries:
        pdb_id, model, chain_ids = parse_origin(entry.origin)
        assert len(pdb_id) == 4 and len(chain_ids) == 1
        assert {row.chain for row in entry.rows} == set(chain_ids)


def test_bce_fold2_and_its_table_weights():
    entries = read_label_file(SCANNET / "BCE" / "labels_fold2.txt")
    assert len(entries) == 580
    assert sum(len(e.rows) for e in entries) == 144_094
    assert sum(row.label for e in entries for row in e.rows) == 19_729
    multi = [e for e in entries if len(parse_origin(e.origin)[2]) > 1]
    assert multi, "fold 2 has multi-chain headers such as 7d3m_13"
    for entry in multi:
        assert {row.chain for row in entry.rows} <= set(parse_origin(entry.origin)[2])
    weights = read_sample_weights(SCANNET / "BCE" / "table.csv", "Fold 2")
    assert len(weights) == 580 and all(0 < w <= 1 for w in weights)
    all_folds = sum(len(read_sample_weights(SCANNET / "BCE" / "table.csv", f"Fold {k}")) for k in range(1, 6))
    assert all_folds == 3_756
