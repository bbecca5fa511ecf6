"""Structure parsing on real PDB/mmCIF content: altlocs, insertion codes, HETATM,
missing atoms, multiple models, gzip, PDB vs mmCIF agreement."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from Bio.PDB import PDBParser

from bihmf.data.structure import StructureError, read_chains


def test_insertion_codes_are_kept_not_merged(demo_structures):
    chains = read_chains(demo_structures / "3pwp-assembly1.cif.gz")
    chain = chains["E"]
    keys = list(zip(chain.resnums.tolist(), chain.icodes))
    assert (116, "") in keys and (116, "A") in keys
    assert len(set(keys)) == len(keys)


def test_pdb_and_mmcif_of_one_entry_agree(demo_structures, tmp_path):
    """3PWP as mmCIF (demo) and the same residues re-read from a PDB written by Biopython."""
    from Bio.PDB import MMCIFParser, PDBIO

    with gzip.open(demo_structures / "3pwp-assembly1.cif.gz", "rt") as handle:
        structure = MMCIFParser(QUIET=True).get_structure("3pwp", handle)
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(str(tmp_path / "3pwp.pdb"))
    from_cif = read_chains(demo_structures / "3pwp-assembly1.cif.gz")
    from_pdb = read_chains(tmp_path / "3pwp.pdb")
    assert from_cif.keys() == from_pdb.keys()
    for chain_id in from_cif:
        assert from_cif[chain_id].sequence == from_pdb[chain_id].sequence
        np.testing.assert_allclose(from_cif[chain_id].coords, from_pdb[chain_id].coords, atol=1e-3)


def test_altloc_takes_highest_occupancy_and_hetero_groups_are_not_residues(demo_structures):
    path = demo_structures / "19hc.pdb1.gz"
    chains = read_chains(path)
    raw = gzip.decompress(path.read_bytes()).decode().splitlines()
    altloc_ca = [line for line in raw if line.startswith("ATOM") and line[12:16] == " CA " and line[16] != " "]
    assert altloc_ca, "19HC has CA altlocs; the fixture changed"
    line = max(
        (l for l in altloc_ca if l[21] == altloc_ca[0][21] and l[22:27] == altloc_ca[0][22:27]),
        key=lambda l: float(l[54:60]),
    )
    chain = chains[line[21]]
    index = chain.resnums.tolist().index(int(line[22:26]))
    expected = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
    np.testing.assert_allclose(chain.coords[index, 1], expected, atol=1e-3)
    hem_lines = {l[17:20] for l in raw if l.startswith("HETATM")}
    assert "HEM" in hem_lines
    assert "X" not in chain.sequence and len(chain.sequence) == len(chain.resnums)


def test_modified_residue_kept_with_parent_letter(demo_structures):
    chain = read_chains(demo_structures / "1hvr.pdb1.gz")["A"]
    assert chain.sequence[chain.resnums.tolist().index(67)] == "C"  # CSO (oxidised Cys) HETATM


PDB_TWO_MODELS = """\
MODEL        1
ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00  0.00           N
ATOM      2  CA  GLY A   1       1.458   0.000   0.000  1.00  0.00           C
ATOM      3  C   GLY A   1       2.009   1.420   0.000  1.00  0.00           C
ATOM      4  N   ALA A   2       3.332   1.536   0.000  1.00  0.00           N
ATOM      5  CA  ALA A   2       3.970   2.846   0.000  1.00  0.00           C
ATOM      6  C   ALA A   2       5.480   2.700   0.000  1.00  0.00           C
ATOM      7  O   ALA A   2       6.000   1.600   0.000  1.00  0.00           O
ATOM      8  CB  ALA A   2       3.500   3.600   1.200  1.00  0.00           C
ATOM      9  N   SER A   3       6.100   3.800   0.000  1.00  0.00           N
ATOM     10  C   SER A   3       7.900   3.900   0.000  1.00  0.00           C
ATOM     11  N   UNK A   4       9.100   3.800   0.000  1.00  0.00           N
ATOM     12  CA  UNK A   4      10.400   4.300   0.000  1.00  0.00           C
HETATM   13  O   HOH A 101      10.000  10.000  10.000  1.00  0.00           O
HETATM   14  C1  LIG A 102      11.000  10.000  10.000  1.00  0.00           C
ENDMDL
MODEL        2
ATOM      1  N   GLY A   1       0.000   0.000   5.000  1.00  0.00           N
ATOM      2  CA  GLY A   1       1.458   0.000   5.000  1.00  0.00           C
ATOM      3  C   GLY A   1       2.009   1.420   5.000  1.00  0.00           C
ENDMDL
END
"""


def test_missing_atoms_models_and_waters(tmp_path):
    path = tmp_path / "two_models.pdb"
    path.write_text(PDB_TWO_MODELS)
    first = read_chains(path, 0)["A"]
    assert first.sequence == "GAX"  # SER 3 has no CA: dropped and counted; UNK 4 is X; ligand and water are not residues
    assert first.residues_without_ca == 1
    assert np.isnan(first.coords[0, 3]).all()  # GLY 1 has no O
    assert np.isnan(first.coords[0, 4]).all()  # ... and no CB
    assert np.isfinite(first.coords[1]).all()
    second = read_chains(path, 1)["A"]
    assert second.sequence == "G"
    assert second.coords[0, 1, 2] == pytest.approx(5.0)
    with pytest.raises(StructureError, match="model 2 requested, file has 2"):
        read_chains(path, 2)


def test_not_a_structure_names_the_file(tmp_path):
    path = tmp_path / "broken.cif"
    path.write_text("data_x\n_atom_site.id 1\nloop_\n_atom_site.Cartn_x\n")
    with pytest.raises(StructureError, match="broken.cif"):
        read_chains(path)


def test_parser_matches_biopython_residue_count(demo_structures):
    path = demo_structures / "1bd2.pdb1.gz"
    with gzip.open(path, "rt") as handle:
        structure = PDBParser(QUIET=True).get_structure("x", handle)
    expected = sum(1 for r in structure[0]["A"] if "CA" in r and r.id[0] != "W")
    assert len(read_chains(path)["A"]) == expected
