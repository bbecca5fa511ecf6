"""react: IEConv's "ProtFunct" enzyme-reaction dataset (one EC class of 384 per chain).

Raw folder roles (``spec["paths"]``, paths relative to the raw folder) and their defaults:

===========  ========================  ==============================================
role         default                   content
===========  ========================  ==============================================
train        ``training.txt``          one ``<pdb>.<chain>`` id per line
val          ``validation.txt``        idem
test         ``testing.txt``           idem
labels       ``chain_functions.txt``   ``<pdb>.<chain>,<class index>`` per line
classes      ``unique_functions.txt``  line i = EC number of class i (only counted)
hdf5_dir     ``data``                  ``<pdb>.<chain>.hdf5``, one per chain
===========  ========================  ==============================================

The defaults assume ``ProtFunct.zip`` unpacks straight into the raw folder as ``data/`` (and the
text files, which the config also fetches from GitHub raw, sit at the top). That layout is
**unverified**: if the archive has a top-level ``ProtFunct/`` folder, set ``hdf5_dir`` (and the
text roles, if they come from the archive) accordingly.

The text files are read strictly (a malformed line is a ``ValueError`` naming file:line), because
a silently skipped line would change the split or the labels. Problems with one entry's
structure only drop that entry, with the reason in its :class:`EntryReport`.

HDF5 encoding, as IEConv writes it (read in IEProtLib's ``PyProtein.save_hdf5`` and
``PyMolIO.load_protein_pdb``; the ProtFunct files themselves were not available to check):

* ``atom_pos`` is (models, atoms, 3) and centred: PDB coordinates are ``atom_pos[0] + pos_center``,
  which is what the records hold, so react coordinates live in the same frame as the PDB files;
* ``atom_residue_id`` is **not** the author residue number but a 0-based dense index over
  (chain, residue number), in sorted order. Author numbers cannot be recovered from the file,
  so ``resnums`` holds this index;
* insertion codes are not stored (IEConv's PDB reader keeps only the first insertion code seen
  for a residue number and discards the inserted residues), so ``icodes`` are all "";
* names (``atom_names``, ``atom_residue_names``, ``atom_chain_names``) are ``S`` byte strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.structure import ATOM_NAMES, ChainResidues, StructureError, chains_from_atoms

DEFAULT_PATHS: dict[str, str] = {
    "train": "training.txt",
    "val": "validation.txt",
    "test": "testing.txt",
    "labels": "chain_functions.txt",
    "classes": "unique_functions.txt",
    "hdf5_dir": "data",
}
SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("atom_pos", "pos_center", "atom_names", "atom_residue_names", "atom_chain_names", "atom_residue_id")

_ID = re.compile(r"[0-9a-z]{4}\.[^\s,]")
_LABEL = re.compile(r"([0-9a-z]{4}\.[^\s,]),(\d+)")
_CLASS = re.compile(r"[^\s,]+")


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    """Nothing to fetch per entry: the structures ship as HDF5 files in the archive."""
    return []


def role_paths(raw_dir: Path, spec: dict[str, Any]) -> dict[str, Path]:
    """Every role's path, config over defaults; an unknown role is a typo, so an error."""
    given = spec.get("paths") or {}
    unknown = sorted(set(given) - set(DEFAULT_PATHS))
    if unknown:
        raise ValueError(f"paths: unknown role(s) {unknown} for react (known: {sorted(DEFAULT_PATHS)})")
    return {role: raw_dir / given.get(role, default) for role, default in DEFAULT_PATHS.items()}


def _lines(path: Path) -> list[tuple[str, str]]:
    """(``file:line``, text) per line; a trailing newline ends the last line, it does not add one."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [(f"{path}:{number}", line.rstrip("\n")) for number, line in enumerate(handle, start=1)]


def count_classes(path: Path) -> int:
    """Number of classes = lines of ``unique_functions.txt`` (class i's EC number is line i)."""
    lines = _lines(path)
    for where, text in lines:
        if not _CLASS.fullmatch(text):
            raise ValueError(f"{where}: expected one EC number, got {text!r}")
    return len(lines)


def read_labels(path: Path, num_classes: int) -> dict[str, int]:
    """Class index per id; an index outside the class table means mismatched files, an error."""
    labels: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    for where, text in _lines(path):
        match = _LABEL.fullmatch(text)
        if not match:
            raise ValueError(f"{where}: expected '<pdb>.<chain>,<class index>', got {text!r}")
        entry_id, index = match.group(1), int(match.group(2))
        if entry_id in labels:
            raise ValueError(f"{where}: duplicate id {entry_id} (first at {first_seen[entry_id]})")
        if index >= num_classes:
            raise ValueError(f"{where}: class index {index} outside 0..{num_classes - 1} (the class table has {num_classes} lines)")
        labels[entry_id], first_seen[entry_id] = index, where
    return labels


def read_splits(paths: dict[str, Path]) -> list[tuple[str, str]]:
    """(id, split) in split then file order; an id listed twice (anywhere) is an error."""
    entries: list[tuple[str, str]] = []
    first_seen: dict[str, str] = {}
    for split in SPLITS:
        for where, text in _lines(paths[split]):
            if not _ID.fullmatch(text):
                raise ValueError(f"{where}: expected '<pdb>.<chain>' (4 lowercase characters, '.', one chain character), got {text!r}")
            if text in first_seen:
                raise ValueError(f"{where}: duplicate id {text} (first at {first_seen[text]})")
            first_seen[text] = where
            entries.append((text, split))
    return entries


def _decode(values: np.ndarray) -> np.ndarray:
    """Byte strings (numpy ``S``) to stripped str."""
    return np.char.strip(np.char.decode(np.asarray(values, dtype="S"), "utf-8"))


def _kept_atoms(names: np.ndarray, chains: np.ndarray, residue_ids: np.ndarray) -> np.ndarray:
    """Mask of the atoms :func:`chains_from_atoms` needs: backbone/CB atoms, plus each residue's
    first atom so that every residue (also one without CA) is still seen and counted.

    Why: ``chains_from_atoms`` is a per-atom Python loop, and side-chain atoms are most of them.
    """
    first = np.ones(len(names), dtype=bool)
    first[1:] = (chains[1:] != chains[:-1]) | (residue_ids[1:] != residue_ids[:-1])
    return first | np.isin(names, ATOM_NAMES)


def read_hdf5_chains(path: Path) -> dict[str, ChainResidues]:
    """Residues of every chain in one IEConv HDF5 file (first model, PDB coordinates)."""
    with h5py.File(path, "r") as h5:
        missing = [key for key in REQUIRED_KEYS if key not in h5]
        if missing:
            raise StructureError(f"{path}: missing HDF5 key(s) {missing}")
        pos = h5["atom_pos"]
        if pos.ndim != 3 or pos.shape[0] == 0 or pos.shape[2] != 3:
            raise StructureError(f"{path}: atom_pos has shape {pos.shape}, expected (models, atoms, 3)")
        xyz = pos[0] + np.asarray(h5["pos_center"][()], dtype=np.float64).reshape(3)
        names = _decode(h5["atom_names"][()])
        resnames = _decode(h5["atom_residue_names"][()])
        chains = _decode(h5["atom_chain_names"][()])
        residue_ids = np.asarray(h5["atom_residue_id"][()], dtype=np.int64)
    sizes = {len(xyz), len(names), len(resnames), len(chains), len(residue_ids)}
    if len(sizes) != 1:
        raise StructureError(f"{path}: per-atom arrays differ in length {sorted(sizes)}")
    keep = _kept_atoms(names, chains, residue_ids)
    return chains_from_atoms(
        chains[keep].tolist(), residue_ids[keep].tolist(), [""] * int(keep.sum()), resnames[keep].tolist(), names[keep].tolist(), xyz[keep]
    )


def load_chain(hdf5_dir: Path, entry_id: str) -> ChainResidues:
    """The residues of the chain an id names, from its own HDF5 file."""
    path = hdf5_dir / f"{entry_id}.hdf5"
    if not path.is_file():
        raise StructureError(f"no HDF5 file {path}")
    try:
        chains = read_hdf5_chains(path)
    except StructureError:
        raise
    except (OSError, ValueError, TypeError) as exc:  # h5py: OSError for a non-HDF5 file; odd dtypes: the others
        raise StructureError(f"{path}: cannot read HDF5: {exc}") from exc
    chain_id = entry_id.split(".", 1)[1]
    if chain_id not in chains:
        raise StructureError(f"{path}: no amino-acid residue in chain {chain_id} (chains with residues: {','.join(sorted(chains)) or 'none'})")
    chain = chains[chain_id]
    if not len(chain):
        raise StructureError(f"{path}: chain {chain_id} has no residue with a CA atom ({chain.residues_without_ca} without)")
    return chain


def build_record(entry_id: str, split: str, chain: ChainResidues, class_index: int) -> ProteinRecord:
    """One chain, one class: per-residue labels are all -1 (no residue-level task)."""
    n = len(chain)
    return ProteinRecord(
        protein_id=entry_id,
        pdb_id=entry_id.split(".", 1)[0],
        split=split,
        subset="",
        sequence=chain.sequence,
        chain_ids=(chain.chain,) * n,
        resnums=chain.resnums,
        icodes=chain.icodes,
        coords=chain.coords,
        labels=np.full(n, -1, dtype=np.int8),
        weight=1.0,
        target=float(class_index),
    )


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """All chains of the three split files, plus one report per listed id."""
    paths = role_paths(raw_dir, spec)
    labels = read_labels(paths["labels"], count_classes(paths["classes"]))
    records, reports = [], []
    for entry_id, split in read_splits(paths):
        report = EntryReport(entry_id, split)
        reports.append(report)
        if entry_id not in labels:
            report.drop(f"no class in {paths['labels'].name}")
            continue
        try:
            chain = load_chain(paths["hdf5_dir"], entry_id)
        except StructureError as exc:
            report.drop(str(exc))
            continue
        report.structure_residues = len(chain)
        if chain.residues_without_ca:
            report.repairs = f"{chain.residues_without_ca} residues without CA skipped"
        if len(chain) < spec["min_residues"]:
            report.drop(f"{len(chain)} residues < min_residues {spec['min_residues']}")
            continue
        records.append(build_record(entry_id, split, chain, labels[entry_id]))
    return records, reports
