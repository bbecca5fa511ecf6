"""Ligand heavy atoms from a user's SDF, MOL2 or PDB/mmCIF file (plain or gzip).

The LBA parser takes ligands from ATOM3D atom tables; ``bihmf predict`` takes them from the
files a user has. Both must hand the graph the same thing: heavy-atom elements stripped and in
upper case (what :func:`bihmf.models.graph.element_index` looks up) with float32 coordinates,
hydrogens and deuterium dropped (``bihmf.data.atom3d.HYDROGENS``), as GVP builds LBA graphs.

Formats, by file name (a trailing ``.gz`` is ignored):

* ``.sdf`` / ``.mol``: the first molecule's V2000 atom block (fixed columns; V3000 is refused);
* ``.mol2``: the first molecule's ``@<TRIPOS>ATOM`` section; the element is the SYBYL atom
  type before its dot (``C.ar`` -> C); lone pairs and dummy atoms (``LP``, ``Du``) are not atoms;
* ``.pdb`` / ``.ent`` / ``.cif`` / ``.mmcif``: every atom of the first model except waters, read
  by :mod:`bihmf.data.structure`. A file holding amino-acid ATOM records is refused: that is a
  complex, not a ligand, and its protein would become ligand nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bihmf.data.atom3d import HYDROGENS
from bihmf.data.structure import StructureError, load_structure, one_letter, open_text

SDF_SUFFIXES = frozenset({".sdf", ".mol"})
MOL2_SUFFIXES = frozenset({".mol2"})
STRUCTURE_SUFFIXES = frozenset({".pdb", ".ent", ".cif", ".mmcif"})
MOL2_NON_ATOMS = frozenset({"LP", "DU"})

Atom = tuple[str, float, float, float]  # element, x, y, z


class LigandError(ValueError):
    """A ligand file that gives no usable heavy atom; the message names the file."""


@dataclass(frozen=True)
class Ligand:
    """Heavy atoms of one ligand, in file order."""

    elements: tuple[str, ...]
    xyz: np.ndarray  # float32 [n, 3]
    hydrogens: int  # hydrogen/deuterium atoms dropped


def ligand_format(path: Path) -> str:
    """'sdf', 'mol2' or 'structure' from the file name; anything else is an error naming the file."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    for name, known in (("sdf", SDF_SUFFIXES), ("mol2", MOL2_SUFFIXES), ("structure", STRUCTURE_SUFFIXES)):
        if suffix in known:
            return name
    allowed = sorted(SDF_SUFFIXES | MOL2_SUFFIXES | STRUCTURE_SUFFIXES)
    raise LigandError(f"{path}: unknown ligand format {suffix or '(no extension)'!r}; expected one of {allowed} (optionally .gz)")


def sdf_atoms(lines: list[str], name: str) -> list[Atom]:
    """Atoms of the first molecule of an SDF/MOL file (header is 3 lines, then the counts line)."""
    if len(lines) < 4:
        raise LigandError(f"{name}: too short for an SDF/MOL file (no counts line)")
    counts = lines[3]
    if "V3000" in counts:
        raise LigandError(f"{name}: V3000 molfile; write it as V2000 (e.g. obabel or RDKit) for this reader")
    try:
        n_atoms = int(counts[0:3])
    except ValueError as exc:
        raise LigandError(f"{name}: line 4 is not a V2000 counts line: {counts.rstrip()!r}") from exc
    block = lines[4 : 4 + n_atoms]
    if len(block) < n_atoms:
        raise LigandError(f"{name}: counts line announces {n_atoms} atoms, the file ends after {len(block)}")
    atoms = []
    for number, line in enumerate(block, start=5):
        try:
            atoms.append((line[31:34].strip(), float(line[0:10]), float(line[10:20]), float(line[20:30])))
        except ValueError as exc:
            raise LigandError(f"{name}: line {number} is not a V2000 atom line: {line.rstrip()!r}") from exc
    return atoms


def mol2_atoms(lines: list[str], name: str) -> list[Atom]:
    """Atoms of the first molecule's ``@<TRIPOS>ATOM`` section (id name x y z type ...)."""
    starts = [i for i, line in enumerate(lines) if line.strip().upper() == "@<TRIPOS>ATOM"]
    if not starts:
        raise LigandError(f"{name}: no @<TRIPOS>ATOM section; not a MOL2 file")
    atoms = []
    for number in range(starts[0] + 1, len(lines)):
        line = lines[number]
        if line.startswith("@<TRIPOS>"):
            break
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        try:
            element = fields[5].split(".")[0]
            atom = (element, float(fields[2]), float(fields[3]), float(fields[4]))
        except (IndexError, ValueError) as exc:
            raise LigandError(f"{name}: line {number + 1} is not a MOL2 atom line: {line.rstrip()!r}") from exc
        if element.upper() not in MOL2_NON_ATOMS:
            atoms.append(atom)
    return atoms


def structure_atoms(path: Path) -> list[Atom]:
    """Atoms of a PDB/mmCIF ligand file's first model, waters skipped."""
    models = list(load_structure(path))
    if not models:
        raise LigandError(f"{path}: no atoms (no model in the file)")
    atoms = []
    for residue in models[0].get_residues():
        hetflag = residue.id[0]
        if hetflag == "W":
            continue
        if hetflag == " " and one_letter(residue.get_resname()) not in (None, "X"):
            raise LigandError(
                f"{path}: holds amino-acid residue {residue.get_resname()} {residue.id[1]}; "
                "give the ligand alone (the protein goes in the structure file)"
            )
        atoms.extend((atom.element, *map(float, atom.coord)) for atom in residue.get_unpacked_list())
    return atoms


def read_ligand(path: Path) -> Ligand:
    """Heavy atoms of the ligand in ``path`` (see the module docstring for formats and rules)."""
    kind = ligand_format(path)
    try:
        if kind == "structure":
            atoms = structure_atoms(path)
        else:
            lines = open_text(path).read().splitlines()
            atoms = sdf_atoms(lines, str(path)) if kind == "sdf" else mol2_atoms(lines, str(path))
    except (OSError, StructureError) as exc:
        raise LigandError(f"{path}: cannot read ligand: {exc}") from exc
    elements = [element.strip().upper() for element, *_ in atoms]
    heavy = [i for i, element in enumerate(elements) if element not in HYDROGENS]
    if not heavy:
        raise LigandError(f"{path}: no heavy atom ({len(atoms)} atoms, all hydrogen)" if atoms else f"{path}: no atom found")
    xyz = np.array([atoms[i][1:] for i in heavy], dtype=np.float32)
    if not np.isfinite(xyz).all():
        raise LigandError(f"{path}: non-finite ligand coordinates")
    return Ligand(tuple(elements[i] for i in heavy), xyz, len(atoms) - len(heavy))
