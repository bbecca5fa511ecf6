"""Synthetic RCSB structure files (PDB and mmCIF text, gzipped) generated from an entry's residues.

A structure is described by the residues its label files name (chain -> [(residue number, amino
acid)]), so the aligner of ``bihmf.data.scannet`` finds every labelled residue. Coordinates are a
seeded random walk of 3.8 Å CA steps with N, C, O and CB placed so that C(i)-N(i+1) is a
peptide bond (1.33 Å): every chain reads as a polypeptide, none as a fold. The same entry always
gives the same bytes (gzip header mtime 0), so a test can compare ``raw/`` with what was served.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

import numpy as np
from Bio.Data.IUPACData import protein_letters_1to3

CA_STEP = 3.8
ATOMS = ("N", "CA", "C", "O", "CB")
Residues = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Entry:
    """What one PDB id holds: chains in file order, models (assembly copies), and extra copies of
    every chain under new ids (the few huge assemblies: only the labelled chains carry labels)."""

    pdb_id: str
    chains: tuple[tuple[str, Residues], ...]
    models: int = 1
    copies: int = 0

    @property
    def residues(self) -> int:
        return self.models * (1 + self.copies) * sum(len(r) for _, r in self.chains)


def seed_of(text: str) -> int:
    """A stable seed from a name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def backbone(rng: np.random.Generator, length: int) -> np.ndarray:
    """[length, 5, 3] N, CA, C, O, CB: a CA walk; C and the next N on the step between two CAs."""
    steps = rng.normal(size=(length + 1, 3))
    steps *= CA_STEP / np.linalg.norm(steps, axis=1, keepdims=True)
    ca = np.cumsum(steps[:-1], axis=0)
    ahead, behind = steps[1:], steps[:-1]
    side = np.cross(ahead, rng.normal(size=(length, 3)))
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    n = ca - 0.25 * behind
    c = ca + 0.4 * ahead
    o = c + 1.23 * side
    cb = ca - 1.53 * side
    return np.stack([n, ca, c, o, cb], axis=1)


def _chain_copies(entry: Entry) -> list[tuple[str, Residues]]:
    """Every chain of one model: the labelled chains, then their copies as ``<chain><k>`` (mmCIF)."""
    out = list(entry.chains)
    for k in range(entry.copies):
        out += [(f"{name}{k + 2}", residues) for name, residues in entry.chains]
    return out


def _atoms(entry: Entry):  # noqa: ANN202 (generator of tuples)
    """(model, chain, resnum, three-letter name, atom name, xyz) for every atom, file order."""
    rng = np.random.default_rng(seed_of(entry.pdb_id))
    for model in range(entry.models):
        for chain, residues in _chain_copies(entry):
            xyz = backbone(rng, len(residues)) + 30.0 * model
            for (resnum, aa), coords in zip(residues, xyz):
                name = protein_letters_1to3[aa].upper()
                for atom, point in zip(ATOMS, coords):
                    if not (aa == "G" and atom == "CB"):
                        yield model, chain, resnum, name, atom, point


def has_pdb_format(entry: Entry) -> bool:
    """Whether RCSB offers the entry in PDB format: not for chain ids longer than one character
    (ribosomes such as 4v5b, and the copies of a huge assembly), which only mmCIF can hold."""
    return all(len(chain) == 1 for chain, _ in _chain_copies(entry))


def pdb_text(entry: Entry) -> str:
    """PDB format, one MODEL block per assembly copy (as RCSB's ``.pdb1`` files)."""
    if not has_pdb_format(entry):
        raise ValueError(f"{entry.pdb_id}: chain ids longer than one character need mmCIF")
    lines = [f"HEADER    SYNTHETIC ENTRY                         01-JAN-00   {entry.pdb_id.upper()}\n"]
    model_open = None
    for serial, (model, chain, resnum, name, atom, (x, y, z)) in enumerate(_atoms(entry), start=1):
        if model != model_open:
            if model_open is not None:
                lines.append("ENDMDL\n")
            lines.append(f"MODEL     {model + 1:4d}\n")
            model_open = model
        lines.append(
            f"ATOM  {serial % 100000:5d}  {atom:<3s} {name} {chain}{resnum:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {atom[0]:>2s}\n"
        )
    lines.append("ENDMDL\nEND\n")
    return "".join(lines)


_CIF_COLUMNS = (
    "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
    "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
    "B_iso_or_equiv", "auth_seq_id", "auth_comp_id", "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num",
)  # fmt: skip


def mmcif_text(entry: Entry) -> str:
    """mmCIF with one ``_atom_site`` loop (the part every reader uses)."""
    head = [f"data_{entry.pdb_id.upper()}\n#\nloop_\n"] + [f"_atom_site.{column}\n" for column in _CIF_COLUMNS]
    rows = [
        f"ATOM {serial} {atom[0]} {atom} . {name} {chain} 1 {resnum} ? {x:.3f} {y:.3f} {z:.3f} 1.00 0.00 "
        f"{resnum} {name} {chain} {atom} {model + 1}\n"
        for serial, (model, chain, resnum, name, atom, (x, y, z)) in enumerate(_atoms(entry), start=1)
    ]
    return "".join(head + rows) + "#\n"


def gzipped(text: str) -> bytes:
    """gzip with mtime 0 and no name: the same text always gives the same bytes."""
    return gzip.compress(text.encode("ascii"), compresslevel=6, mtime=0)
