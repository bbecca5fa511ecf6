"""Read per-residue backbone geometry from PDB / mmCIF files (plain or gzip).

Every dataset parser goes through :func:`read_chains`, so altloc, insertion-code,
HETATM and missing-atom handling is decided once:

* altlocs: Biopython keeps, per atom, the alternative location with the highest occupancy;
* insertion codes: kept per residue (``icodes``), never merged into the residue number;
* HETATM: modified amino acids with a known parent (MSE -> M, ...) are kept as residues;
  waters, ligands and ions are not residues; ATOM-record residues of unknown type (UNK) are X;
* nucleic acids: DNA/RNA residues (DA, U, modified nucleotides, ...) are never amino-acid
  residues; they are only counted (``nucleotides``), so a DNA chain is not a protein chain;
* protein chain: :meth:`ChainResidues.protein_problem` decides, for files and atom tables
  alike: at least two residues with a CA joined by a peptide bond (a lone modified residue
  such as PCA, or scattered amino-acid ligands, are not a polypeptide);
* missing atoms: a residue needs a CA; missing N/C/O/CB coordinates are NaN
  (CB is also NaN for glycine), so downstream features decide how to fill them;
* models: the caller picks a model by 0-based index (biological-assembly files store
  symmetry copies as extra models), models are never merged.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from Bio.Data.PDBData import nucleic_letters_3to1_extended, protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.Structure import Structure

ATOM_NAMES: tuple[str, ...] = ("N", "CA", "C", "O", "CB")
STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
WATERS = frozenset({"HOH", "WAT", "DOD"})
NUCLEOTIDE_NAMES = frozenset(name.strip() for name in nucleic_letters_3to1_extended)
NUCLEOTIDE = "nucleotide"  # residue_kind of a DNA/RNA residue
# A peptide C-N bond is 1.33 Å; without C or N, consecutive CAs are 3.8 Å apart (2.9 Å cis).
PEPTIDE_CN_MAX = 2.0
PEPTIDE_CA_CA_MAX = 4.2


class StructureError(ValueError):
    """A structure file that cannot give the requested residues."""


@dataclass(frozen=True)
class ChainResidues:
    """Residues of one chain with a CA atom, in file order."""

    chain: str
    resnums: np.ndarray  # int32 [N]
    icodes: tuple[str, ...]
    sequence: str  # one letter per residue, X for unknown amino acids
    coords: np.ndarray  # float32 [N, len(ATOM_NAMES), 3], NaN where an atom is missing
    residues_without_ca: int  # amino-acid residues skipped because CA is absent
    nucleotides: int = 0  # DNA/RNA residues: counted, never residues

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def peptide_bonds(self) -> int:
        """Consecutive residue pairs joined by a peptide bond (C-N, or CA-CA without those atoms)."""
        return int(peptide_bonded(self.coords).sum())

    def protein_problem(self) -> str | None:
        """Why this chain is not a protein chain, or None when it is (one rule for every reader)."""
        if not len(self):
            if self.residues_without_ca:
                return f"chain {self.chain}: {self.residues_without_ca} amino-acid residues, none with a CA atom (missing backbone atoms)"
            return f"chain {self.chain}: nucleic acid ({self.nucleotides} nucleotides), not a protein chain"
        if set(self.sequence) == {"X"}:
            return f"chain {self.chain}: only unknown residues (X)"
        if not self.peptide_bonds:
            return (
                f"chain {self.chain}: {len(self)} amino-acid residue(s) with no peptide bond between them "
                "(a lone modified residue or amino-acid ligand, not a polypeptide)"
            )
        return None


def peptide_bonded(coords: np.ndarray) -> np.ndarray:
    """bool [N-1]: residue i and i+1 joined by a peptide bond.

    C(i)-N(i+1) decides when both atoms exist; CA-only residues fall back to the CA-CA distance,
    so coarse (CA-only) models still count as chains.
    """
    if len(coords) < 2:
        return np.zeros(0, dtype=bool)
    n, ca, c = ATOM_NAMES.index("N"), ATOM_NAMES.index("CA"), ATOM_NAMES.index("C")
    with np.errstate(invalid="ignore"):
        cn = np.linalg.norm(coords[:-1, c] - coords[1:, n], axis=1)
        caca = np.linalg.norm(coords[:-1, ca] - coords[1:, ca], axis=1)
    return np.where(np.isfinite(cn), cn <= PEPTIDE_CN_MAX, caca <= PEPTIDE_CA_CA_MAX)


def one_letter(resname: str) -> str | None:
    """One-letter code of an amino-acid residue name; None for non-amino-acid groups."""
    code = protein_letters_3to1_extended.get(resname.strip().upper())
    if code is None:
        return None
    return code if code in STANDARD_AA else "X"


def residue_kind(resname: str, polymer_record: bool) -> str | None:
    """One letter for an amino-acid residue, :data:`NUCLEOTIDE` for DNA/RNA, None for the rest.

    ``polymer_record``: the residue comes from ATOM records, where an unknown name (UNK) is an
    amino acid of unknown type (X); atom tables that do not say pass False.
    """
    name = resname.strip().upper()
    if name in WATERS:
        return None
    if name in NUCLEOTIDE_NAMES:
        return NUCLEOTIDE
    letter = one_letter(name)
    return "X" if letter is None and polymer_record else letter


class _ChainBuilder:
    """Residues of one chain as they are read; both readers (files, atom tables) add to one."""

    def __init__(self, chain: str):
        self.chain = chain
        self.resnums: list[int] = []
        self.icodes: list[str] = []
        self.letters: list[str] = []
        self.coords: list[np.ndarray] = []
        self.without_ca = 0
        self.nucleotides = 0

    def add(self, kind: str, resnum: int, icode: str, atoms: dict[str, np.ndarray]) -> None:
        if kind == NUCLEOTIDE:
            self.nucleotides += 1
            return
        if "CA" not in atoms:
            self.without_ca += 1
            return
        xyz = np.full((len(ATOM_NAMES), 3), np.nan, dtype=np.float32)
        for i, name in enumerate(ATOM_NAMES):
            if name in atoms:
                xyz[i] = atoms[name]
        self.resnums.append(resnum)
        self.icodes.append(icode)
        self.letters.append(kind)
        self.coords.append(xyz)

    def build(self) -> ChainResidues:
        return ChainResidues(
            chain=self.chain,
            resnums=np.asarray(self.resnums, dtype=np.int32),
            icodes=tuple(self.icodes),
            sequence="".join(self.letters),
            coords=np.stack(self.coords) if self.coords else np.zeros((0, len(ATOM_NAMES), 3), np.float32),
            residues_without_ca=self.without_ca,
            nucleotides=self.nucleotides,
        )


def _polymer_chains(chains: list[ChainResidues]) -> dict[str, ChainResidues]:
    """Chains with any amino-acid or nucleic-acid residue; waters- or ligand-only chains go."""
    return {c.chain: c for c in chains if len(c) or c.residues_without_ca or c.nucleotides}


def open_text(path: Path) -> io.StringIO:
    """A text file's content, gunzipped when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8", errors="replace"))


def is_mmcif(path: Path) -> bool:
    """mmCIF by extension (.cif / .mmcif, optionally .gz); everything else is read as PDB."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return bool(suffixes) and suffixes[-1] in {".cif", ".mmcif"}


def load_structure(path: Path) -> Structure:
    """Parse a PDB or mmCIF file; errors name the file."""
    parser = MMCIFParser(QUIET=True) if is_mmcif(path) else PDBParser(QUIET=True)
    try:
        return parser.get_structure(path.name, open_text(path))
    except Exception as exc:  # Biopython raises many types for malformed input
        raise StructureError(f"{path}: cannot parse structure: {exc}") from exc


def _chain_residues(chain) -> ChainResidues:  # noqa: ANN001 (Bio.PDB.Chain)
    builder = _ChainBuilder(chain.id)
    for residue in chain:
        hetflag, resnum, icode = residue.get_id()
        kind = residue_kind(residue.get_resname(), polymer_record=hetflag == " ")
        if kind is not None:
            builder.add(kind, resnum, icode.strip(), {name: residue[name].get_coord() for name in ATOM_NAMES if name in residue})
    return builder.build()


def read_chains(path: Path, model_index: int = 0) -> dict[str, ChainResidues]:
    """Residues of every polymer chain of model ``model_index`` (0-based, file order).

    Nucleic-acid chains are included (no residues, ``nucleotides`` counted) so callers can say
    why a chain is not a protein chain (:meth:`ChainResidues.protein_problem`).
    """
    structure = load_structure(path)
    models = list(structure)
    if not models:
        raise StructureError(f"{path}: no atoms found; not a PDB/mmCIF structure")
    if not 0 <= model_index < len(models):
        raise StructureError(f"{path}: model {model_index} requested, file has {len(models)} model(s)")
    return _polymer_chains([_chain_residues(chain) for chain in models[model_index]])


def chains_from_atoms(
    chain_ids: list[str],
    resnums: list[int],
    icodes: list[str],
    resnames: list[str],
    atom_names: list[str],
    coords: np.ndarray,
) -> dict[str, ChainResidues]:
    """Residues from flat per-atom arrays (ATOM3D atom tables, IEConv HDF5), same rules as files.

    Atoms are grouped into residues by consecutive (chain, resnum, icode) in the given order;
    the first occurrence of an atom name in a residue wins (the arrays carry one altloc).
    Same residue rules as :func:`read_chains` (:func:`residue_kind`): waters and ligands are
    skipped, nucleotides and residues without CA are counted.
    """
    per_chain: dict[str, _ChainBuilder] = {}
    current_key = None
    residue: dict[str, np.ndarray] = {}
    resname = ""

    def flush() -> None:
        if current_key is None:
            return
        kind = residue_kind(resname, polymer_record=False)
        if kind is not None:
            chain, number, code = current_key
            per_chain.setdefault(chain, _ChainBuilder(chain)).add(kind, number, code, residue)

    for chain, number, code, name3, atom, xyz in zip(chain_ids, resnums, icodes, resnames, atom_names, coords):
        key = (str(chain), int(number), str(code).strip())
        if key != current_key:
            flush()
            current_key, residue, resname = key, {}, str(name3)
        residue.setdefault(str(atom).strip(), np.asarray(xyz, dtype=np.float32))
    flush()
    return _polymer_chains([builder.build() for builder in per_chain.values()])
