"""The download stage for a dataset: demo archive over loopback HTTP, per-entry structures."""

from __future__ import annotations

import copy

import pytest

from bihmf.data import preprocess_dataset
from bihmf.data.fetch import fetch_dataset, fetch_structures
from bihmf.download import ChecksumError, DownloadError

from conftest import DEMO_ARCHIVE




def _archive_spec(demo_spec, url, checksum):
    spec = copy.deepcopy(demo_spec)
    spec["download"] = {"archive": {"url": url, "checksum": checksum, "name": None}, "files": []}
    return spec


def test_demo_archive_over_http_then_preprocess(http_root, demo_spec, tmp_path):
    root, base = http_root
    (root / "ppbs_demo.tar.gz").write_bytes(DEMO_ARCHIVE.read_bytes())
    raw = tmp_path / "raw"
    fetch_dataset(_archive_spec(demo_spec, f"{base}/ppbs_demo.tar.gz", demo_spec["download"]["archive"]["checksum"]), raw, tmp_path / "dl", tmp_path)
    assert (raw / "ppbs_demo" / "labels_train.txt").exists()
    summary = preprocess_dataset(raw, demo_spec, tmp_path / "p.parquet", tmp_path / "r.tsv")
    assert summary["kept"] == 18


def test_checksum_mismatch_fails_cleanly(http_root, demo_spec, tmp_path):
    root, base = http_root
    (root / "ppbs_demo.tar.gz").write_bytes(DEMO_ARCHIVE.read_bytes())
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError, match="ppbs_demo.tar.gz"):
        fetch_dataset(_archive_spec(demo_spec, f"{base}/ppbs_demo.tar.gz", "sha256:" + "0" * 64), raw, tmp_path / "dl", tmp_path)
    assert not raw.exists()
    assert list((tmp_path / "dl").iterdir()) == []  # no partial or unverified file left


def test_relative_file_url_resolves_against_the_workflow(demo_spec, tmp_path):
    raw = tmp_path / "raw"
    fetch_dataset(demo_spec, raw, tmp_path / "dl", DEMO_ARCHIVE.parents[1])
    assert (raw / "ppbs_demo" / "table.csv").exists()


def test_structures_fetched_with_fallback_and_missing_entries_listed(http_root, demo_structures, tmp_path):
    root, base = http_root
    (root / "pdb").mkdir()
    (root / "pdb" / "1HVR.pdb1.gz").write_bytes((demo_structures / "1hvr.pdb1.gz").read_bytes())
    (root / "pdb" / "3PWP-assembly1.cif.gz").write_bytes((demo_structures / "3pwp-assembly1.cif.gz").read_bytes())
    spec = {
        "url_templates": [f"{base}/pdb/{{ID}}.pdb1.gz", f"{base}/pdb/{{ID}}-assembly1.cif.gz"],
        "max_workers": 2,
        "max_missing_fraction": 0.5,
    }
    out = tmp_path / "structures"
    rows = fetch_structures(["1hvr", "3pwp", "9zzz"], spec, tmp_path / "cache", out)
    status = {row["id"]: (row["status"], row["file"]) for row in rows}
    assert status == {"1hvr": ("ok", "1HVR.pdb1.gz"), "3pwp": ("ok", "3PWP-assembly1.cif.gz"), "9zzz": ("missing", "")}
    assert (out / "1HVR.pdb1.gz").read_bytes() == (demo_structures / "1hvr.pdb1.gz").read_bytes()
    manifest = (out / "structures_manifest.tsv").read_text()
    assert "9zzz\tmissing" in manifest and "404" in manifest
    with pytest.raises(DownloadError, match=r"1 of 3 structures could not be fetched .* see .*structures_manifest.tsv"):
        fetch_structures(["1hvr", "3pwp", "9zzz"], {**spec, "max_missing_fraction": 0.2}, tmp_path / "cache", tmp_path / "s2")
    assert "9zzz\tmissing" in (tmp_path / "s2" / "structures_manifest.tsv").read_text()
