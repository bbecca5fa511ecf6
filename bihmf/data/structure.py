"""Read per-residue backbone geometry from PDB / mmCIF files (plain or gzip).

Every dataset parser goes through :func:`read_chains`, so altloc, insertion-code,
HETATM and missing-atom handling is decided once:

* altlocs: Biopython keeps, per atom, the alternative location with the highest occupancy;
* insertion codes: kept per residue (``icodes``), never merged into the residue number;
* HETATM: modified amino acids with a known parent (MSE -> M, ...) are kept as residues;
  waters, ligands and ions are not residues; ATOM-record residues of unknown type (UNK) are X;
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
from Bio.Data.PDBData import protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.Structure import Structure

ATOM_NAMES: tuple[str, ...] = ("N", "CA", "C", "O", "CB")
STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"


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

    def __len__(self) -> int:
        return len(self.sequence)


def one_letter(resname: str) -> str | None:
    """One-letter code of an amino-acid residue name; None for non-amino-acid groups."""
    code = protein_letters_3to1_extended.get(resname.strip().upper())
    if code is None:
        return None
    return code if code in STANDARD_AA else "X"


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
    resnums: list[int] = []
    icodes: list[str] = []
    letters: list[str] = []
    coords: list[np.ndarray] = []
    without_ca = 0
    for residue in chain:
        hetflag, resnum, icode = residue.get_id()
        if hetflag == "W":
            continue
        letter = one_letter(residue.get_resname())
        if letter is None and hetflag == " ":
            letter = "X"  # an ATOM-record polymer residue of unknown type (UNK, ...)
        if letter is None:
            continue
        if "CA" not in residue:
            without_ca += 1
            continue
        xyz = np.full((len(ATOM_NAMES), 3), np.nan, dtype=np.float32)
        for i, name in enumerate(ATOM_NAMES):
            if name in residue:
                xyz[i] = residue[name].get_coord()
        resnums.append(resnum)
        icodes.append(icode.strip())
        letters.append(letter)
        coords.append(xyz)
    return ChainResidues(
        chain=chain.id,
        resnums=np.asarray(resnums, dtype=np.int32),
        icodes=tuple(icodes),
        sequence="".join(letters),
        coords=np.stack(coords) if coords else np.zeros((0, len(ATOM_NAMES), 3), np.float32),
        residues_without_ca=without_ca,
    )


def read_chains(path: Path, model_index: int = 0) -> dict[str, ChainResidues]:
    """Residues of every chain of model ``model_index`` (0-based, file order)."""
    structure = load_structure(path)
    models = list(structure)
    if not models:
        raise StructureError(f"{path}: no atoms found; not a PDB/mmCIF structure")
    if not 0 <= model_index < len(models):
        raise StructureError(f"{path}: model {model_index} requested, file has {len(models)} model(s)")
    chains = {chain.id: _chain_residues(chain) for chain in models[model_index]}
    return {cid: res for cid, res in chains.items() if len(res) or res.residues_without_ca}


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
    Waters and non-amino-acid groups are skipped; residues without CA are counted.
    """
    per_chain: dict[str, dict[str, list]] = {}
    current_key = None
    residue: dict[str, np.ndarray] = {}
    resname = ""

    def flush() -> None:
        if current_key is None:
            return
        chain, number, code = current_key
        letter = one_letter(resname)
        if letter is None or resname.strip().upper() in {"HOH", "WAT", "DOD"}:
            return
        bucket = per_chain.setdefault(chain, {"resnums": [], "icodes": [], "letters": [], "coords": [], "no_ca": 0})
        if "CA" not in residue:
            bucket["no_ca"] += 1
            return
        xyz = np.full((len(ATOM_NAMES), 3), np.nan, dtype=np.float32)
        for i, name in enumerate(ATOM_NAMES):
            if name in residue:
                xyz[i] = residue[name]
        bucket["resnums"].append(number)
        bucket["icodes"].append(code)
        bucket["letters"].append(letter)
        bucket["coords"].append(xyz)

    for chain, number, code, name3, atom, xyz in zip(chain_ids, resnums, icodes, resnames, atom_names, coords):
        key = (str(chain), int(number), str(code).strip())
        if key != current_key:
            flush()
            current_key, residue, resname = key, {}, str(name3)
        residue.setdefault(str(atom).strip(), np.asarray(xyz, dtype=np.float32))
    flush()
    return {
        chain: ChainResidues(
            chain=chain,
            resnums=np.asarray(b["resnums"], dtype=np.int32),
            icodes=tuple(b["icodes"]),
            sequence="".join(b["letters"]),
            coords=np.stack(b["coords"]) if b["coords"] else np.zeros((0, len(ATOM_NAMES), 3), np.float32),
            residues_without_ca=b["no_ca"],
        )
        for chain, b in per_chain.items()
    }
