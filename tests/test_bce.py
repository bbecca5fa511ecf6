"""BCE parsing on the BCE demo archive: multi-chain headers over asymmetric-unit mmCIF files."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from bihmf.data.bce import parse
from bihmf.data.scannet import read_label_file

from conftest import ROOT


@pytest.fixture(scope="module")
def bce(tmp_path_factory, demo_config):
    out = tmp_path_factory.mktemp("bce_raw")
    with tarfile.open(ROOT / "demo" / "bce_demo.tar.gz") as tar:
        tar.extractall(out, filter="data")
    spec = demo_config["datasets"]["bce_demo"]
    return out, spec, parse(out, spec)


def test_multi_chain_entries_concatenate_their_chains_in_header_order(bce):
    raw, spec, (records, reports) = bce
    assert [r.status for r in reports] == ["kept"] * 5
    record = next(r for r in records if r.protein_id == "3kpr_FH")
    chains = list(dict.fromkeys(record.chain_ids))
    assert chains == ["F", "H"]
    assert record.chain_ids.count("H") == 9  # the 9-residue peptide follows the heavy chain
    assert record.split == "train"


def test_labels_and_sequences_match_the_label_files(bce):
    raw, spec, (records, _) = bce
    by_id = {r.protein_id: r for r in records}
    for label_file in spec["label_files"]:
        for entry in read_label_file(raw / label_file["file"]):
            record = by_id[entry.origin]
            mask = record.labels >= 0
            assert [c for c, m in zip(record.chain_ids, mask) if m] == [row.chain for row in entry.rows]
            assert "".join(np.array(list(record.sequence))[mask]) == "".join(row.aa for row in entry.rows)
            assert record.labels[mask].tolist() == [row.label for row in entry.rows]


def test_folds_map_to_the_configured_splits(bce):
    _, _, (records, _) = bce
    assert {r.protein_id: r.split for r in records} == {
        "1bd2_B": "train",
        "3kpr_AC": "train",
        "3kpr_FH": "train",
        "1bd2_AC": "val",
        "3pwp_AC": "test",
    }
