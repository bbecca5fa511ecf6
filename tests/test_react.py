"""react (IEConv ProtFunct): the fixture archive over loopback HTTP, the parser, its drop paths."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import re
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from bihmf.data import preprocess_dataset, react, split_counts
from bihmf.data.fetch import fetch_dataset
from bihmf.data.schema import read_proteins
from bihmf.data.structure import read_chains

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_ZIP = FIXTURES / "react_fixture.zip"
FIXTURE_SHA256 = "99c1cae8bcd61df28460c233da73203fb8d176919babdeedc2b49e3236f4c8f7"
TEXT_FILES = ("training.txt", "validation.txt", "testing.txt", "chain_functions.txt", "unique_functions.txt")

IECONV_KEYS = {
    "pos_center", "atom_pos", "atom_types", "atom_names", "cov_bond_list", "cov_bond_list_sindices",
    "atom_amino_id", "atom_residue_id", "atom_chain_ids", "atom_residue_names", "atom_chain_names",
    "cov_bond_list_hb", "cov_bond_list_sindices_hb", "amino_pos", "amino_types", "amino_chains",
    "amino_neighs", "amino_neighs_sindices", "amino_neighs_hb", "amino_neighs_sindices_hb",
}  # fmt: skip

SPEC = {
    "kind": "react",
    "task": "graph_classification",
    "num_classes": 10,
    "paths": {},
    "published_sizes": {"train": 5, "val": 2, "test": 4},
    "min_residues": 10,
    "download": {"files": []},
}


def _builder():
    """The fixture builder module (it lives beside the fixture, not in a package)."""
    sys.path.insert(0, str(FIXTURES))
    try:
        import build_react_fixture
    finally:
        sys.path.remove(str(FIXTURES))
    return build_react_fixture


def _readme_table() -> dict[str, tuple[str, int, str]]:
    """id -> (split, class, sequence) as the builder recorded them in README_react.md."""
    rows = re.findall(r"^\| (\w{4}\.\w) \| (\w+) \| (\d+) \(.*\| `([A-Z]+)` \|$", (FIXTURES / "README_react.md").read_text(), re.M)
    return {entry_id: (split, int(cls), seq) for entry_id, split, cls, seq in rows}


@pytest.fixture()
def raw(tmp_path) -> Path:
    """The fixture unpacked into a private folder (tests may break it)."""
    out = tmp_path / "raw"
    with zipfile.ZipFile(FIXTURE_ZIP) as zf:
        zf.extractall(out)
    return out




def _rewrite_atoms(path: Path, keep: np.ndarray) -> None:
    """Rewrite an HDF5 file keeping only the masked atoms in its per-atom arrays."""
    with h5py.File(path, "r") as h5:
        arrays = {key: h5[key][()] for key in h5}
    n_atoms = len(arrays["atom_names"])
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            if key == "atom_pos":
                value = value[:, keep]
            elif key.startswith("atom_") and value.ndim and len(value) == n_atoms:
                value = value[keep]
            h5.create_dataset(key, data=value)


def _atom_names(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["atom_names"][()]


def test_fixture_sha256_is_pinned_and_rebuild_is_byte_identical():
    assert hashlib.sha256(FIXTURE_ZIP.read_bytes()).hexdigest() == FIXTURE_SHA256
    assert FIXTURE_SHA256 in (FIXTURES / "README_react.md").read_text()
    if importlib.util.find_spec("MDAnalysisTests") is None:
        pytest.skip("MDAnalysisTests (the source PDB files) not installed")
    assert _builder().build()[0] == FIXTURE_ZIP.read_bytes()


def test_fixture_hdf5_follows_ieconv_format():
    with zipfile.ZipFile(FIXTURE_ZIP) as zf:
        names = zf.namelist()
        assert names == sorted(names) and set(TEXT_FILES) <= set(names)
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist())
        assert zf.read("chain_functions.txt").decode().endswith("\n") and b"\r" not in zf.read("training.txt")
        one, nmr = zf.read("data/1hvr.A.hdf5"), zf.read("data/2juy.A.hdf5")
    with h5py.File(io.BytesIO(one), "r") as h5:
        assert set(h5) == IECONV_KEYS
        for key in ("atom_names", "atom_residue_names", "atom_chain_names"):
            assert h5[key].dtype.kind == "S", key
        n_atoms = h5["atom_names"].shape[0]
        assert h5["atom_pos"].ndim == 3 and h5["atom_pos"].shape == (1, n_atoms, 3)
        assert h5["pos_center"].shape == (3,)
        is_ca = h5["atom_names"][()] == b"CA"
        assert h5["amino_types"].dtype.kind == "i" and len(h5["amino_types"]) == is_ca.sum() == 99
        amino_id = h5["atom_amino_id"][()]
        ligand = h5["atom_residue_names"][()] == b"XK2"
        assert ligand.any() and (amino_id[ligand] == -1).all() and (amino_id[~ligand] >= 0).all()
        assert h5["atom_residue_id"][()][is_ca].tolist() == list(range(99))  # dense 0-based index
    with h5py.File(io.BytesIO(nmr), "r") as h5:
        assert h5["atom_pos"].shape[0] == 24  # NMR models: the parser reads model 0 only


def test_parse_fixture_splits_targets_and_sequences(raw):
    records, reports = react.parse(raw, SPEC)
    table = _readme_table()
    assert len(table) == 11 and len(reports) == 11
    assert [r.protein_id for r in records] == [i for i in table if i != "3pwp.C"]
    assert split_counts(records) == {"train": 5, "val": 2, "test": 3}
    labels = dict(line.split(",") for line in (raw / "chain_functions.txt").read_text().splitlines())
    for record in records:
        split, cls, sequence = table[record.protein_id]
        assert (record.split, record.target, record.sequence) == (split, float(cls), sequence)
        assert record.target == float(labels[record.protein_id])
        assert record.pdb_id == record.protein_id[:4] and record.subset == "" and record.weight == 1.0
        assert set(record.chain_ids) == {record.protein_id[-1]} and set(record.icodes) == {""}
        assert record.labels.dtype == np.int8 and (record.labels == -1).all()
    dropped = {r.protein_id: r.reason for r in reports if r.status != "kept"}
    assert dropped == {"3pwp.C": "9 residues < min_residues 10"}
    assert react.structure_ids(raw, SPEC) == []


def test_parse_matches_source_pdb_chains(raw):
    if importlib.util.find_spec("MDAnalysisTests") is None:
        pytest.skip("MDAnalysisTests (the source PDB files) not installed")
    builder = _builder()
    sources = {chain.entry_id: chain for chain in builder.CHAINS}
    records, _ = react.parse(raw, SPEC)
    for record in records:
        source = sources[record.protein_id]
        chain = read_chains(builder.source_dir() / source.source)[source.chain]
        assert record.sequence == chain.sequence
        np.testing.assert_allclose(record.coords, chain.coords, atol=1e-4)  # centring undone
        assert record.resnums.tolist() == np.unique(chain.resnums, return_inverse=True)[1].tolist()


def test_download_then_preprocess_end_to_end(http_root, raw, tmp_path):
    """The real config's shape: the archive from 'Drive' plus the text files from 'GitHub raw'."""
    root, base = http_root
    (root / "ProtFunct.zip").write_bytes(FIXTURE_ZIP.read_bytes())
    text_dir = root / "IEConv_proteins" / "Datasets" / "data" / "ProtFunct"
    text_dir.mkdir(parents=True)
    files = []
    for name in TEXT_FILES:
        (text_dir / name).write_bytes((raw / name).read_bytes())
        digest = hashlib.sha256((raw / name).read_bytes()).hexdigest()
        files.append({"url": f"{base}/IEConv_proteins/Datasets/data/ProtFunct/{name}", "checksum": f"sha256:{digest}", "name": None})
    spec = copy.deepcopy(SPEC)
    spec["download"] = {"archive": {"url": f"{base}/ProtFunct.zip", "checksum": f"sha256:{FIXTURE_SHA256}", "name": None}, "files": files}
    downloaded = tmp_path / "downloaded"
    fetch_dataset(spec, downloaded, tmp_path / "dl", tmp_path)
    assert (downloaded / "data" / "1hvr.A.hdf5").exists() and (downloaded / "training.txt").exists()
    report = preprocess_dataset(downloaded, spec, tmp_path / "proteins.parquet", tmp_path / "report.json")
    assert (report["entries"], report["kept"], report["dropped"]) == (11, 10, 1)
    assert report["size_differences"] == {"test": {"published": 4, "kept": 3, "difference": -1}}
    assert [e["protein_id"] for e in report["noteworthy_entries"]] == ["3pwp.C"]
    proteins = read_proteins(tmp_path / "proteins.parquet")
    assert {p.protein_id: p.target for p in proteins}["2juy.A"] == 0.0
    assert sorted({p.target for p in proteins}) == [0.0, 5.0, 7.0]


def test_broken_entries_are_dropped_with_reasons(raw):
    data = raw / "data"
    (data / "4e43.B.hdf5").unlink()
    (data / "3kpr.G.hdf5").write_bytes(b"not an HDF5 file\n")
    with (raw / "validation.txt").open("a") as handle:
        handle.write("9xyz.A\n")
    ca = np.flatnonzero(_atom_names(data / "1hvr.A.hdf5") == b"CA")
    keep = np.ones(len(_atom_names(data / "1hvr.A.hdf5")), dtype=bool)
    keep[ca[[10, 20, 30]]] = False
    _rewrite_atoms(data / "1hvr.A.hdf5", keep)
    _rewrite_atoms(data / "5a7u.A.hdf5", _atom_names(data / "5a7u.A.hdf5") == b"ZN")  # only the zinc ion left
    records, reports = react.parse(raw, SPEC)
    by_id = {r.protein_id: r for r in reports}
    assert "no HDF5 file" in by_id["4e43.B"].reason and "4e43.B.hdf5" in by_id["4e43.B"].reason
    assert "cannot read HDF5" in by_id["3kpr.G"].reason
    assert by_id["9xyz.A"].reason == "no class in chain_functions.txt" and by_id["9xyz.A"].split == "val"
    assert "no amino-acid residue in chain A" in by_id["5a7u.A"].reason
    assert {r.protein_id for r in reports if r.status != "kept"} == {"4e43.B", "3kpr.G", "9xyz.A", "5a7u.A", "3pwp.C"}
    repaired = by_id["1hvr.A"]
    assert (repaired.status, repaired.repairs, repaired.structure_residues) == ("kept", "3 residues without CA skipped", 96)
    assert len(next(r for r in records if r.protein_id == "1hvr.A").sequence) == 96


def test_chain_with_only_calpha_less_residues_is_dropped(raw):
    path = raw / "data" / "1bd2.B.hdf5"
    _rewrite_atoms(path, _atom_names(path) != b"CA")
    _, reports = react.parse(raw, SPEC)
    assert next(r for r in reports if r.protein_id == "1bd2.B").reason.endswith("chain B has no residue with a CA atom (99 without)")


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("training.txt", "1hvr.A\n4e43.A\n1BD2.B\n", r"training\.txt:3: expected '<pdb>\.<chain>'"),
        ("training.txt", "1hvr.A\n\n", r"training\.txt:2: expected"),
        ("testing.txt", "4e43.B\r\n", r"testing\.txt:1: expected"),
        ("validation.txt", "1hvr.A\n", r"validation\.txt:1: duplicate id 1hvr\.A \(first at .*training\.txt:1\)"),
        ("chain_functions.txt", "1hvr.A 7\n", r"chain_functions\.txt:1: expected '<pdb>\.<chain>,<class index>'"),
        ("chain_functions.txt", "1hvr.A,7\n1hvr.A,7\n", r"chain_functions\.txt:2: duplicate id"),
        ("chain_functions.txt", "1hvr.A,7\n4e43.A,10\n", r"chain_functions\.txt:2: class index 10 outside 0\.\.9"),
        ("unique_functions.txt", "1.1.1.1\n2.7.4 .3\n", r"unique_functions\.txt:2: expected one EC number"),
    ],
)
def test_malformed_text_is_an_error_naming_file_and_line(raw, name, text, error):
    (raw / name).write_text(text, newline="")
    with pytest.raises(ValueError, match=error):
        react.parse(raw, SPEC)


def test_layout_is_configurable_through_path_roles(raw):
    nested = raw / "ProtFunct"
    nested.mkdir()
    (raw / "data").rename(nested / "data")
    (raw / "chain_functions.txt").rename(nested / "labels.csv")
    spec = {**SPEC, "paths": {"hdf5_dir": "ProtFunct/data", "labels": "ProtFunct/labels.csv"}}
    records, _ = react.parse(raw, spec)
    assert len(records) == 10
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['testing'\]"):
        react.parse(raw, {**spec, "paths": {"testing": "testing.txt"}})
