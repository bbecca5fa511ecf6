"""ATOM3D LMDB format, PSR and LBA parsers, on the fixture releases (see fixtures/README_atom3d.md)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib.util
import io
import json
import math
import tarfile
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd
import pytest
from Bio.PDB import PDBParser

import bihmf.data
from bihmf.data import lba, preprocess_dataset, psr
from bihmf.data.atom3d import Atom3dFormatError, read_lmdb, split_dirs
from bihmf.data.fetch import fetch_dataset
from bihmf.data.schema import read_proteins
from bihmf.data.structure import one_letter
from tests.fixtures.atom3d_writer import write_lmdb

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PSR_TARBALL = FIXTURES / "psr_fixture.tar.gz"
LBA_TARBALL = FIXTURES / "lba_fixture.tar.gz"
PSR_SHA256 = "1b224fbb2dfd70bf5ff111143c9964e858754d5171891a5eacbf9a2672f92f9d"
LBA_SHA256 = "9cadd010fff46b0552b5f0f641e333a56b00cf17b8c2e69a97ee12218f0fe560"
PSR_TRAIN = "split-by-year/data/train"
LBA_TRAIN = "split-by-sequence-identity-30/data/train"

ATOM3D_COLUMNS = [
    "ensemble", "subunit", "structure", "model", "chain", "hetero", "insertion_code", "residue", "segid", "resname",
    "altloc", "occupancy", "bfactor", "x", "y", "z", "element", "name", "fullname", "serial_number",
]  # fmt: skip
DATAFRAME = "<class 'pandas.core.frame.DataFrame'>"
PSR_DECOYS = {
    "train": ["1ake/4ake_open", "1ake/4ake_open_noise1.0", "1ake/1ake_noise0.5", "1ake/1ake_noise1.5"],
    "val": ["1a28/1a28_chainB", "1a28/1a28_chainA_noise1.0", "1a28/1a28_chainB_noise2.0"],
    "test": ["2juy/2juy_model02", "2juy/2juy_model12", "2juy/2juy_model24", "2juy/2juy_models03-04"],
}
# Real (not noised) decoys: protein_id -> (source file, chain or None, 0-based model index)
PSR_SOURCES = {
    "1ake/4ake_open": ("adk_open.pdb", None, 0),
    "1a28/1a28_chainB": ("1a28.pdb.gz", "B", 0),
    "2juy/2juy_model02": ("nmr_neopetrosiamide.pdb", None, 1),
    "2juy/2juy_model12": ("nmr_neopetrosiamide.pdb", None, 11),
    "2juy/2juy_models03-04": ("nmr_neopetrosiamide.pdb", None, 2),  # first of the two models
}
LBA_COMPLEXES = {  # id -> split, source, protein chain (None = all), ligand chain, ligand number, name, neglog_aff
    "1hvr": ("train", "1hvr.pdb", None, "A", 263, "XK2", 9.5),
    "6msm_ATP1503": ("train", "6msm.pdb.bz2", None, "A", 1503, "ATP", 3.5),
    "6msm_ATP1504": ("train", "6msm.pdb.bz2", None, "A", 1504, "ATP", 4.0),
    "19hc_A": ("val", "19hc.pdb.gz", "A", "A", 301, "HEM", 6.0),
    "19hc_B": ("val", "19hc.pdb.gz", "B", "B", 301, "HEM", 5.5),
    "1a28_A": ("test", "1a28.pdb.gz", "A", "A", 1, "STR", 9.0),
    "1a28_B": ("test", "1a28.pdb.gz", "B", "B", 2, "STR", 8.5),
}
LBA_SIZES = {"train": 3, "val": 2, "test": 2}


# --------------------------------------------------------------------------- helpers


def raw_records(path: Path) -> tuple[dict[bytes, bytes], list[dict]]:
    """All key/value pairs of an LMDB and its records decoded by hand (lmdb + gzip + json only)."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        pairs = dict(txn.cursor())
    env.close()
    count = int(pairs[b"num_examples"])
    return pairs, [json.loads(gzip.decompress(pairs[str(i).encode()])) for i in range(count)]


def extract(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def psr_raw(tmp_path_factory) -> Path:
    return extract(PSR_TARBALL, tmp_path_factory.mktemp("psr_raw"))


@pytest.fixture(scope="module")
def lba_raw(tmp_path_factory) -> Path:
    return extract(LBA_TARBALL, tmp_path_factory.mktemp("lba_raw"))


@pytest.fixture(scope="module")
def pdb_dir() -> Path:
    """MDAnalysisTests' data folder (the fixtures' source structures); tests needing it skip without it."""
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("MDAnalysisTests not installed: source PDB files unreachable")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def biopython_model(path: Path, model_index: int = 0):
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    elif path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    return list(PDBParser(QUIET=True).get_structure(path.name, io.StringIO(raw.decode())))[model_index]


def residue_letter(residue) -> str | None:
    """One letter of an amino-acid residue with CA (CHARMM HSD read as HIS, as in the fixture)."""
    name = {"HSD": "HIS"}.get(residue.get_resname(), residue.get_resname())
    if residue.id[0] == "W" or "CA" not in residue:
        return None
    return one_letter(name)


def biopython_residues(model, chain: str | None = None) -> list:
    return [r for c in model if chain is None or c.id == chain for r in c if residue_letter(r)]




def dataset_spec(kind: str, url: str, checksum: str, sizes: dict[str, int]) -> dict:
    return {
        "kind": kind,
        "task": "graph_regression",
        "download": {"archive": {"url": url, "checksum": checksum, "name": None}, "files": []},
        "paths": {},
        "published_sizes": sizes,
        "min_residues": 10,
    }


# --------------------------------------------------------------------------- byte format


def test_fixture_tarballs_are_pinned_and_reproducible_in_form():
    assert hashlib.sha256(PSR_TARBALL.read_bytes()).hexdigest() == PSR_SHA256
    assert hashlib.sha256(LBA_TARBALL.read_bytes()).hexdigest() == LBA_SHA256
    for tarball, top in ((PSR_TARBALL, "split-by-year"), (LBA_TARBALL, "split-by-sequence-identity-30")):
        assert tarball.stat().st_size <= 1_500_000
        assert tarball.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0
        with tarfile.open(tarball) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0} and {m.gid for m in members} == {0}
        assert [n for n in names if n.endswith(".mdb")] == [f"{top}/data/{s}/data.mdb" for s in ("test", "train", "val")]


def test_psr_lmdb_decoded_by_hand(psr_raw):
    pairs, records = raw_records(psr_raw / PSR_TRAIN)
    assert sorted(pairs) == [b"0", b"1", b"2", b"3", b"id_to_idx", b"num_examples", b"serialization_format"]
    assert pairs[b"num_examples"] == b"4" and pairs[b"serialization_format"] == b"json"
    ids = ["('1ake', '4ake_open')", "('1ake', '4ake_open_noise1.0')", "('1ake', '1ake_noise0.5')", "('1ake', '1ake_noise1.5')"]
    assert json.loads(pairs[b"id_to_idx"]) == {i: n for n, i in enumerate(ids)}  # stored uncompressed
    for index, record in enumerate(records):
        assert pairs[str(index).encode()][:8] == bytes.fromhex("1f8b080000000000")  # gzip, no name, mtime 0
        assert list(record) == ["atoms", "id", "file_path", "scores", "types"]
        assert record["id"] == ids[index]
        assert record["types"] == {
            "atoms": DATAFRAME, "id": "<class 'str'>", "file_path": "<class 'str'>", "scores": "<class 'dict'>", "types": "<class 'dict'>",
        }  # fmt: skip
        atoms = record["atoms"]
        assert list(atoms) == ["columns", "index", "data"]  # orient='split'
        assert atoms["columns"] == ATOM3D_COLUMNS
        assert atoms["index"] == list(range(len(atoms["data"]))) and {len(row) for row in atoms["data"]} == {20}
        assert set(record["scores"]) == {"rmsd", "gdt_ts", "gdt_ha", "tm"} and 0 <= record["scores"]["gdt_ts"] <= 1
    first = records[0]["atoms"]["data"][0]
    assert first[:5] == ["1ake", "4ake_open", "4ake_open.pdb", 0, " "]  # ensemble = target, subunit = decoy
    assert first[5:8] == [" ", " ", 1] and first[17] == "N" and first[18] == "N   "  # fullname: the file's 4 columns
    assert all(len(str(v).split(".")[-1]) <= 6 for v in first[13:16])  # double_precision=6


def test_lba_lmdb_decoded_by_hand(lba_raw):
    pairs, records = raw_records(lba_raw / LBA_TRAIN)
    assert sorted(pairs) == [b"0", b"1", b"2", b"id_to_idx", b"num_examples", b"serialization_format"]
    assert json.loads(pairs[b"id_to_idx"]) == {"1hvr": 0, "6msm_ATP1503": 1, "6msm_ATP1504": 2}
    record = records[0]
    assert list(record) == ["atoms_protein", "atoms_pocket", "atoms_ligand", "bonds", "id", "seq", "smiles", "scores", "types"]
    assert {k: v for k, v in record["types"].items() if v == DATAFRAME}.keys() == {"atoms_protein", "atoms_pocket", "atoms_ligand", "bonds"}
    for key in ("atoms_protein", "atoms_pocket", "atoms_ligand"):
        assert record[key]["columns"] == ATOM3D_COLUMNS
    assert record["bonds"] == {"columns": ["atom1", "atom2", "type"], "index": [], "data": []}
    assert record["scores"] == {"neglog_aff": 9.5} and record["smiles"] == ""
    assert [entry[0] for entry in record["seq"]] == [["1hvr_protein.pdb", 0, "1hvr_protein.pdb", 0, c] for c in ("A", "B")]
    assert "file_path" not in record


# --------------------------------------------------------------------------- reader / writer


def test_reader_matches_hand_decoding_and_writer_is_deterministic(lba_raw, tmp_path):
    records = list(read_lmdb(lba_raw / LBA_TRAIN))
    _, by_hand = raw_records(lba_raw / LBA_TRAIN)
    assert len(records) == 3
    for record, raw in zip(records, by_hand):
        assert isinstance(record["atoms_pocket"], pd.DataFrame) and list(record["atoms_pocket"]) == ATOM3D_COLUMNS
        assert record["atoms_pocket"].values.tolist() == raw["atoms_pocket"]["data"]
        assert record["file_path"] == str((lba_raw / LBA_TRAIN).absolute())  # filled in, as atom3d does
    for name in ("a", "b"):
        write_lmdb([{k: v for k, v in r.items() if k != "file_path"} for r in records], tmp_path / name)
    assert (tmp_path / "a" / "data.mdb").read_bytes() == (tmp_path / "b" / "data.mdb").read_bytes()
    assert (tmp_path / "a" / "data.mdb").read_bytes() == (lba_raw / LBA_TRAIN / "data.mdb").read_bytes()


def hand_written_lmdb(path: Path, values: list[bytes], fmt: bytes = b"json") -> Path:
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for index, value in enumerate(values):
            txn.put(str(index).encode(), value)
        txn.put(b"num_examples", str(len(values)).encode())
        txn.put(b"serialization_format", fmt)
        txn.put(b"id_to_idx", b"{}")
    env.close()
    return path


def test_reader_type_rules_and_defaults(tmp_path, caplog):
    table = {"columns": ["x"], "index": [0], "data": [[1.5]]}
    pandas3 = json.dumps({"atoms": table, "id": "a", "types": {"atoms": "<class 'pandas.DataFrame'>", "id": "<class 'str'>"}})
    untyped = json.dumps({"atoms": table})
    path = hand_written_lmdb(tmp_path / "db", [gzip.compress(pandas3.encode()), gzip.compress(untyped.encode())])
    first, second = read_lmdb(path)
    assert isinstance(first["atoms"], pd.DataFrame) and first["atoms"]["x"].tolist() == [1.5]
    assert second["atoms"] == table and second["id"] == "1" and second["file_path"] == str(path.absolute())
    assert "no 'types'" in caplog.text


def test_reader_errors_name_path_and_index(tmp_path):
    good = gzip.compress(json.dumps({"id": "a"}).encode())
    path = hand_written_lmdb(tmp_path / "bad", [good, b"not gzip"])
    with pytest.raises(Atom3dFormatError, match=rf"{path}: record 1: not gzip-compressed JSON"):
        list(read_lmdb(path))
    pickled = hand_written_lmdb(tmp_path / "pkl", [good], fmt=b"pkl")
    with pytest.raises(Atom3dFormatError, match=rf"{pickled}: serialization_format b'pkl'"):
        list(read_lmdb(pickled))
    with pytest.raises(FileNotFoundError, match="no ATOM3D LMDB"):
        list(read_lmdb(tmp_path / "missing"))


def test_writer_refuses_duplicates_non_json_and_existing(tmp_path):
    with pytest.raises(ValueError, match=r"record 1: duplicate id 'a'"):
        write_lmdb([{"id": "a"}, {"id": "a"}], tmp_path / "dup")
    with pytest.raises(ValueError, match=r"record 0 \('a'\): ndarray is not JSON serialisable"):
        write_lmdb([{"id": "a", "x": np.zeros(2)}], tmp_path / "np")
    write_lmdb([{"id": "a"}], tmp_path / "ok")
    with pytest.raises(FileExistsError):
        write_lmdb([{"id": "b"}], tmp_path / "ok")


def test_split_dirs_reject_unknown_roles_and_missing_splits(psr_raw, tmp_path):
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['trian'\]"):
        split_dirs(psr_raw, {"paths": {"trian": "x"}}, psr.DEFAULT_PATHS, "psr")
    with pytest.raises(FileNotFoundError, match="no LMDB for split 'train'"):
        split_dirs(tmp_path, {}, psr.DEFAULT_PATHS, "psr")


# --------------------------------------------------------------------------- download + parse


def test_psr_download_and_parse(http_root, tmp_path, monkeypatch, pdb_dir):
    monkeypatch.setitem(bihmf.data.DATASETS, "psr", psr)
    root, base = http_root
    (root / "PSR-split-by-year.tar.gz").write_bytes(PSR_TARBALL.read_bytes())
    spec = dataset_spec("psr", f"{base}/PSR-split-by-year.tar.gz?download=1", f"sha256:{PSR_SHA256}", {"train": 4, "val": 3, "test": 4})
    raw = tmp_path / "raw"
    fetch_dataset(spec, raw, tmp_path / "dl", tmp_path)
    assert psr.structure_ids(raw, spec) == []
    report = preprocess_dataset(raw, spec, tmp_path / "proteins.parquet", tmp_path / "report.json")
    assert report["kept"] == 11 and report["dropped"] == 0 and report["size_differences"] == {}
    records = read_proteins(tmp_path / "proteins.parquet")
    assert {s: [r.protein_id for r in records if r.split == s] for s in PSR_DECOYS} == PSR_DECOYS
    _, by_hand = raw_records(raw / PSR_TRAIN)
    train = [r for r in records if r.split == "train"]
    assert [r.target for r in train] == [rec["scores"]["gdt_ts"] for rec in by_hand]
    assert max(train, key=lambda r: r.target).protein_id == "1ake/1ake_noise0.5"  # least perturbed ranks first
    for record in records:
        assert record.group == record.protein_id.split("/")[0] and record.pdb_id == ""
        assert (record.labels == -1).all() and record.weight == 1.0 and record.ligand_elems == ()
    by_id = {r.protein_id: r for r in records}
    for protein_id, (source, chain, model_index) in PSR_SOURCES.items():
        residues = biopython_residues(biopython_model(pdb_dir / source, model_index), chain)
        record = by_id[protein_id]
        assert record.sequence == "".join(residue_letter(r) for r in residues), protein_id
        np.testing.assert_allclose(record.coords[:, 1], [r["CA"].coord for r in residues], atol=1e-4)
    assert by_id["1ake/1ake_noise0.5"].sequence == by_id["1ake/4ake_open"].sequence  # noise keeps residues


def test_lba_download_and_parse(http_root, tmp_path, monkeypatch, pdb_dir):
    monkeypatch.setitem(bihmf.data.DATASETS, "lba", lba)
    root, base = http_root
    name = "LBA-split-by-sequence-identity-30.tar.gz"
    (root / name).write_bytes(LBA_TARBALL.read_bytes())
    spec = dataset_spec("lba", f"{base}/{name}?download=1", f"sha256:{LBA_SHA256}", LBA_SIZES)
    raw = tmp_path / "raw"
    fetch_dataset(spec, raw, tmp_path / "dl", tmp_path)
    report = preprocess_dataset(raw, spec, tmp_path / "proteins.parquet", tmp_path / "report.json")
    assert report["kept"] == 7 and report["dropped"] == 0 and report["label_rows_without_residue"] == 0
    records = {r.protein_id: r for r in read_proteins(tmp_path / "proteins.parquet")}
    assert {pid: r.split for pid, r in records.items()} == {pid: c[0] for pid, c in LBA_COMPLEXES.items()}
    assert {pid: r.target for pid, r in records.items()} == {pid: c[-1] for pid, c in LBA_COMPLEXES.items()}
    for split, size in LBA_SIZES.items():  # every split can give a correlation: >= 2 complexes, varying targets
        targets = [r.target for r in records.values() if r.split == split]
        assert len(targets) == size >= 2 and len(set(targets)) == len(targets), split
    for pdb, (_, source, protein_chain, chain, number, ligand_name, _) in LBA_COMPLEXES.items():
        record = records[pdb]
        model = biopython_model(pdb_dir / source)
        residues = biopython_residues(model, protein_chain)  # the full protein: all chains, or the one listed
        assert record.sequence == "".join(residue_letter(r) for r in residues) and record.pdb_id == pdb.split("_")[0].lower()
        assert list(record.chain_ids) == [r.get_parent().id for r in residues]
        ligand = next(r for r in model[chain] if r.id[1] == number and r.get_resname() == ligand_name)
        heavy = [a for a in ligand if a.element not in ("H", "D")]
        assert record.ligand_elems == tuple(a.element for a in heavy)
        np.testing.assert_allclose(record.ligand_xyz, [a.coord for a in heavy], atol=1e-4)
        lig_xyz = np.array([a.coord for a in heavy])
        expected = [
            int(min(np.linalg.norm(lig_xyz - a.coord, axis=1).min() for a in r if a.element not in ("H", "D")) <= 6.0)
            for r in residues
        ]
        assert record.labels.tolist() == expected, pdb  # pocket = residues within 6 Å of the ligand
        assert 0 < record.labels.sum() < len(record.labels)


# --------------------------------------------------------------------------- drop paths


def write_splits(raw: Path, top: str, splits: dict[str, list[dict]]) -> Path:
    for split, records in splits.items():
        write_lmdb([{k: v for k, v in r.items() if k not in ("types", "file_path")} for r in records], raw / top / "data" / split)
    return raw


def test_psr_drop_paths(psr_raw, tmp_path):
    good, *_ = read_lmdb(psr_raw / PSR_TRAIN)
    atoms = good["atoms"]
    no_scores = {k: v for k, v in good.items() if k != "scores"} | {"id": "('1ake', 'no_scores')"}
    nan_label = good | {"id": "('1ake', 'nan')", "scores": good["scores"] | {"gdt_ts": math.nan}}
    no_protein = good | {"id": "('1ake', 'empty')", "atoms": atoms.iloc[:0]}
    waters_only = good | {"id": "('1ake', 'water')", "atoms": atoms.assign(resname="HOH")}
    first_ca = atoms.index[atoms["name"] == "CA"][0]
    ca_less = good | {"id": "('1ake', 'ca_less')", "atoms": atoms.drop(index=first_ca).reset_index(drop=True)}
    bad_ids = [good | {"id": raw} for raw in ("('1ake', 'x'", "__import__('os').getcwd()", "('1ake',)", "1ake/x")]
    raw = write_splits(
        tmp_path / "raw", "split-by-year", {"train": [good, no_scores, nan_label, no_protein, waters_only, ca_less, *bad_ids], "val": [], "test": []}
    )
    records, reports = psr.parse(raw, {"min_residues": 10})
    assert [r.protein_id for r in records] == ["1ake/4ake_open", "1ake/ca_less"]
    assert records[1].resnums[0] == records[0].resnums[1] and len(records[1].sequence) == 213
    reasons = {r.protein_id: r.reason for r in reports if r.status == "dropped"}
    assert reasons["1ake/no_scores"].startswith("no 'scores' dict")
    assert reasons["1ake/nan"] == "scores['gdt_ts'] is nan, not a finite number"
    assert reasons["1ake/empty"].startswith("no amino-acid residue") and reasons["1ake/water"].startswith("no amino-acid residue")
    malformed = [reason for pid, reason in reasons.items() if "(record" in pid]
    assert len(malformed) == 4 and all(reason.startswith("malformed id") for reason in malformed)
    assert next(r.repairs for r in reports if r.protein_id == "1ake/ca_less") == "1 residues without CA skipped"


def test_lba_drop_paths(lba_raw, tmp_path):
    good, *_ = read_lmdb(lba_raw / LBA_TRAIN)
    ligand = good["atoms_ligand"]
    hydrogens = ligand.iloc[:2].assign(element="H", name="H1")
    with_h = good | {"id": "h001", "atoms_ligand": pd.concat([ligand, hydrogens], ignore_index=True)}
    no_scores = {k: v for k, v in good.items() if k != "scores"} | {"id": "s001"}
    no_protein = good | {"id": "p001", "atoms_protein": good["atoms_protein"].iloc[:0]}
    no_ligand = {k: v for k, v in good.items() if k != "atoms_ligand"} | {"id": "l001"}
    pocket = good["atoms_pocket"]
    no_pocket = good | {"id": "k001", "atoms_pocket": pocket.assign(residue=pocket["residue"] + 1000)}
    raw = write_splits(
        tmp_path / "raw", "split-by-sequence-identity-30", {"train": [good, with_h, no_scores, no_protein, no_ligand, no_pocket], "val": [], "test": []}
    )
    records, reports = lba.parse(raw, {"min_residues": 10})
    assert [r.protein_id for r in records] == ["1hvr", "h001"]
    assert records[1].ligand_elems == records[0].ligand_elems  # hydrogens dropped
    assert next(r.repairs for r in reports if r.protein_id == "h001") == "2 ligand hydrogens dropped"
    reasons = {r.protein_id: r.reason for r in reports if r.status == "dropped"}
    assert reasons == {
        "s001": "no 'scores' dict (got NoneType)",
        "p001": "no amino-acid residue with a CA atom (0 without)",
        "l001": "no 'atoms_ligand' entry",
        "k001": "no pocket residue found in the protein (40 pocket residues, none matched)",
    }
