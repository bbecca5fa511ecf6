"""Real-world inputs the readers must classify right: nucleic-acid chains, lone modified
residues, duplicate ScanNet entries and splits emptied by dropped entries (issue 16)."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bihmf.data import preprocess_dataset
from bihmf.data.ppbs import parse
from bihmf.data.schema import read_proteins
from bihmf.data.structure import chains_from_atoms, read_chains


@pytest.fixture(scope="module")
def mda_data() -> Path:
    """MDAnalysisTests' data folder (real PDB entries, CC0), found without importing MDAnalysis."""
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or spec.origin is None:
        pytest.skip("MDAnalysisTests (the source structures) not installed")
    return Path(spec.origin).parent / "data"


def _mmtf_as(source: Path, out: Path):
    """A real MMTF entry re-written as PDB or mmCIF (by suffix) with Biopython; returns the structure."""
    from Bio.PDB import MMCIFIO, PDBIO
    from Bio.PDB.mmtf import MMTFParser

    if source.suffix == ".gz":
        plain = out.with_suffix(".mmtf")
        plain.write_bytes(gzip.decompress(source.read_bytes()))
        source = plain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = MMTFParser.get_structure(str(source))
    writer = MMCIFIO() if out.suffix == ".cif" else PDBIO()
    writer.set_structure(structure)
    writer.save(str(out))
    return structure


def _atom_table_chains(model):
    """The same model through the atom-table reader (as ATOM3D / IEConv arrays reach it)."""
    atoms = [a for a in model.get_atoms() if a.element not in ("H", "D")]
    residues = [a.get_parent() for a in atoms]
    return chains_from_atoms(
        [r.get_parent().id for r in residues],
        [r.id[1] for r in residues],
        [r.id[2] for r in residues],
        [r.get_resname() for r in residues],
        [a.get_id() for a in atoms],
        np.array([a.coord for a in atoms]),
    )


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_dna_chains_of_a_real_complex_are_nucleic_acid_in_both_readers(mda_data, tmp_path, suffix):
    """173D: a d(GAAGCTTC) duplex (chains A, B) with two actinomycin D peptides (C, D)."""
    path = tmp_path / f"173d{suffix}"
    structure = _mmtf_as(mda_data / "173D.mmtf", path)
    from_file = read_chains(path)
    from_table = _atom_table_chains(structure[0])
    for chains in (from_file, from_table):
        assert list(chains) == ["A", "B", "C", "D"]
        for dna in ("A", "B"):
            chain = chains[dna]
            assert (len(chain), chain.residues_without_ca, chain.nucleotides) == (0, 0, 8)
            assert chain.protein_problem() == f"chain {dna}: nucleic acid (8 nucleotides), not a protein chain"
        for peptide in ("C", "D"):
            assert chains[peptide].protein_problem() is None and chains[peptide].nucleotides == 0
    # D-valine (DVA) is X in ATOM records; atom tables carry no record type, so it is skipped there
    assert [from_file[c].sequence for c in "CD"] == ["TXPGV"] * 2 and [from_table[c].sequence for c in "CD"] == ["TPGV"] * 2


def test_rna_residue_in_dna_is_a_nucleotide(mda_data, tmp_path):
    """5KIH: DNA duplexes with one ribonucleotide (G); no chain is a protein chain."""
    path = tmp_path / "5kih.pdb"
    _mmtf_as(mda_data / "5KIH.mmtf.gz", path)
    chains = read_chains(path)
    assert chains and all(len(c) == 0 and c.residues_without_ca == 0 and c.nucleotides > 0 for c in chains.values())
    assert all("nucleic acid" in c.protein_problem() for c in chains.values())


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)


def test_a_lone_modified_residue_is_not_a_protein_chain(demo_structures, tmp_path):
    """1HVR's S-hydroxycysteine (HETATM CSO A 67) alone in a file: one residue, no polypeptide."""
    cso = [line for line in _lines(demo_structures / "1hvr.pdb1.gz") if line.startswith("HETATM") and line[17:26] == "CSO A  67"]
    assert cso, "1HVR has CSO A 67; the demo changed"
    path = tmp_path / "cso.pdb"
    path.write_text("".join(cso) + "END\n")
    chain = read_chains(path)["A"]
    assert (chain.sequence, chain.peptide_bonds) == ("C", 0)
    assert "no peptide bond" in chain.protein_problem()


def test_ca_only_and_real_chains_stay_protein_chains(demo_structures, tmp_path):
    lines = _lines(demo_structures / "1hvr.pdb1.gz")
    path = tmp_path / "ca_only.pdb"
    path.write_text("".join(line for line in lines if line.startswith("ATOM") and line[12:16] == " CA ") + "END\n")
    ca_only = read_chains(path)["A"]
    # 98 ATOM residues; the HETATM CSO 67 left out makes the one gap (CA 66 to CA 68)
    assert len(ca_only) == 98 and ca_only.peptide_bonds == 96 and ca_only.protein_problem() is None
    full = read_chains(demo_structures / "1hvr.pdb1.gz")["A"]
    assert full.peptide_bonds == len(full) - 1  # the CSO is bonded into the chain like any residue
    for structure in sorted(demo_structures.iterdir()):
        for chain in read_chains(structure).values():
            assert chain.protein_problem() is None, (structure.name, chain.chain)


# --------------------------------------------------------------------------- ScanNet label files


def _raw_copy(demo_raw: Path, tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    shutil.copytree(demo_raw, root)
    return root


def test_duplicate_entry_ids_stay_distinct_proteins(demo_raw, demo_spec, tmp_path):
    """An NMR-style repeat: the validation file lists 1hvr_0-A twice, with different labels."""
    root = _raw_copy(demo_raw, tmp_path)
    labels = root / demo_spec["label_files"][1]["file"]
    text = labels.read_text()
    first = text[: text.index(">1hvr_0-B")]
    flipped = "".join(
        f"{f[0]} {f[1]} {f[2]} {1 - int(f[3])}\n" if len(f := line.split()) == 4 else line for line in first.splitlines(keepends=True)
    )
    labels.write_text(text + flipped)
    table = root / demo_spec["table"]
    rows = table.read_text().splitlines(keepends=True)
    table.write_text("".join(rows) + next(r for r in rows if ",1hvr_0-A," in r))
    records, reports = parse(root, demo_spec)
    ids = [r.protein_id for r in records]
    assert len(ids) == len(set(ids)) == 19
    first_record, second = (next(r for r in records if r.protein_id == pid) for pid in ("1hvr_0-A", "1hvr_0-A#2"))
    assert second.split == "val" and second.sequence == first_record.sequence
    labelled = first_record.labels >= 0
    assert (second.labels[labelled] == 1 - first_record.labels[labelled]).all()
    repaired = next(r for r in reports if r.protein_id == "1hvr_0-A#2")
    assert repaired.status == "kept" and "duplicate entry id 1hvr_0-A (first at ppbs_demo/labels_validation_70.txt:1)" in repaired.repairs
    preprocess_dataset(root, demo_spec, tmp_path / "p.parquet", tmp_path / "report.json")
    assert sorted(r.protein_id for r in read_proteins(tmp_path / "p.parquet")) == sorted(ids)
    noteworthy = json.loads((tmp_path / "report.json").read_text())["noteworthy_entries"]
    assert "1hvr_0-A#2" in [e["protein_id"] for e in noteworthy]


def test_a_split_emptied_by_drops_fails_preprocess_naming_split_and_entries(demo_raw, demo_spec, tmp_path):
    root = _raw_copy(demo_raw, tmp_path)
    (root / "ppbs_demo" / "structures" / "1hvr.pdb1.gz").unlink()  # the only validation structure
    with pytest.raises(ValueError, match=r"split\(s\) \['val'\] have no protein.*1hvr_0-A \(no structure file for 1hvr"):
        preprocess_dataset(root, demo_spec, tmp_path / "p.parquet", tmp_path / "report.json")
    assert not (tmp_path / "p.parquet").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["empty_splits"] == {"val": ["1hvr_0-A", "1hvr_0-B"], "val_70": ["1hvr_0-A", "1hvr_0-B"]}


def test_an_emptied_test_subset_is_a_loud_warning(demo_raw, demo_spec, tmp_path, caplog):
    root = _raw_copy(demo_raw, tmp_path)
    (root / "ppbs_demo" / "structures" / "4e43.pdb1.gz").unlink()  # all of Test (Homology)
    spec = copy.deepcopy(demo_spec)
    with caplog.at_level(logging.WARNING, logger="bihmf"):
        report = preprocess_dataset(root, spec, tmp_path / "p.parquet", tmp_path / "report.json")
    assert report["empty_splits"] == {"test_homology": ["4e43_0-A", "4e43_0-B"]}
    assert any("SPLIT test_homology IS EMPTY" in r.getMessage() and "4e43_0-A" in r.getMessage() for r in caplog.records)
    assert {r.split for r in read_proteins(tmp_path / "p.parquet")} == {"train", "val", "test"}
