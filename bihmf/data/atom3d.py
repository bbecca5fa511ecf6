"""ATOM3D LMDB datasets (PSR, LBA): the on-disk format, and the atom tables inside the records.

Format (what ``atom3d.datasets.make_lmdb_dataset`` writes and ``LMDBDataset`` reads, atom3d
0.2.6; see docs/datasets.md section 6). One LMDB environment per split directory, default DB:

* ``b"0"`` .. ``b"<N-1>"``: one record each, gzip (level 6) of the JSON-serialised dict;
* ``b"num_examples"``: N as ASCII decimal;
* ``b"serialization_format"``: ``b"json"`` in every release;
* ``b"id_to_idx"``: ``{record id: index}`` serialised but *not* gzip-compressed.

Inside a record, DataFrames are ``df.to_json(orient="split", double_precision=6)`` objects
(``columns`` / ``index`` / ``data``), and ``types`` maps every key (``types`` included) to
``str(type(value))``. The reader rebuilds a DataFrame only where ``types`` names one, and fills
``id`` (the index) and ``file_path`` (the LMDB path) when a record lacks them.

Deliberate differences from atom3d, none visible to its reader:

* only ``json`` is read: the releases use it, ``pkl`` would run code from a download on load,
  and atom3d itself leaves ``msgpack`` DataFrames as plain dicts;
* a record that fails to decode is an error naming the LMDB and the index (atom3d returns None);
* pandas 3 spells ``str(pd.DataFrame)`` ``"<class 'pandas.DataFrame'>"``; the releases carry the
  pandas 1/2 spelling. The reader accepts both; the test fixtures' writer
  (tests/fixtures/atom3d_writer.py) writes the released one so that atom3d under older pandas
  still recognises its DataFrames, and stamps gzip headers with mtime 0 (atom3d stamps the wall
  clock) so that the same records give the same bytes; readers ignore the gzip mtime.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pandas as pd

from bihmf.data.structure import ATOM_NAMES, ChainResidues, chains_from_atoms

log = logging.getLogger(__name__)

DATAFRAME_TYPE = "<class 'pandas.core.frame.DataFrame'>"
"""``str(pd.DataFrame)`` under pandas < 3, as written in every released ATOM3D LMDB."""
DATAFRAME_TYPES = frozenset({DATAFRAME_TYPE, "<class 'pandas.DataFrame'>"})
SERIALIZATION_FORMAT = "json"

ATOM_COLUMNS: tuple[str, ...] = (
    "ensemble", "subunit", "structure", "model", "chain", "hetero", "insertion_code", "residue",
    "segid", "resname", "altloc", "occupancy", "bfactor", "x", "y", "z", "element", "name",
    "fullname", "serial_number",
)  # fmt: skip
"""The standard ATOM3D atom-table columns, in order (atom3d's ``bp_to_df``)."""
HYDROGENS = frozenset({"H", "D"})
SPLITS = ("train", "val", "test")


class Atom3dFormatError(ValueError):
    """An LMDB that does not follow the ATOM3D layout; the message names the path (and index)."""


class BadRecord(ValueError):
    """A well-formed record that cannot give a protein entry: the entry is dropped with this reason."""


# --------------------------------------------------------------------------- reading


def _open_readonly(path: Path) -> lmdb.Environment:
    """Open like ``LMDBDataset``: no lock file needed, so read-only trees and missing ``lock.mdb`` work."""
    if not (path / "data.mdb").is_file():
        raise FileNotFoundError(f"{path}: no ATOM3D LMDB here (expected {path / 'data.mdb'})")
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as exc:
        raise Atom3dFormatError(f"{path}: cannot open LMDB: {exc}") from exc


def _num_examples(txn: lmdb.Transaction, path: Path) -> int:
    """Record count from the metadata, after checking the serialisation format is one we read."""
    raw_format = txn.get(b"serialization_format")
    if raw_format is None:
        raise Atom3dFormatError(f"{path}: no 'serialization_format' key (not an ATOM3D LMDB?)")
    if raw_format != SERIALIZATION_FORMAT.encode():
        raise Atom3dFormatError(f"{path}: serialization_format {raw_format!r}; only 'json' (used by every release) is read")
    raw_count = txn.get(b"num_examples")
    if raw_count is None or not raw_count.isdigit():
        raise Atom3dFormatError(f"{path}: 'num_examples' is {raw_count!r}, expected an ASCII decimal")
    return int(raw_count)


def decode_record(compressed: bytes, path: Path, index: int) -> dict[str, Any]:
    """One stored value -> the dict ``LMDBDataset.__getitem__`` returns (without a transform)."""
    where = f"{path}: record {index}"
    try:
        item = json.loads(gzip.decompress(compressed))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Atom3dFormatError(f"{where}: not gzip-compressed JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise Atom3dFormatError(f"{where}: JSON {type(item).__name__}, expected an object")
    types = item.get("types")
    if isinstance(types, dict):
        for key, value in item.items():
            if types.get(key) in DATAFRAME_TYPES:
                try:
                    item[key] = pd.DataFrame(**value)
                except (TypeError, ValueError) as exc:
                    raise Atom3dFormatError(f"{where}: {key!r} is typed DataFrame but is not a split-orient table: {exc}") from exc
    else:
        log.warning("%s: no 'types' entry, DataFrames stay plain dicts (as in atom3d)", where)
    item.setdefault("file_path", str(path.absolute()))
    item.setdefault("id", str(index))
    return item


def read_lmdb(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of the LMDB at ``path`` (a split directory), in index order."""
    path = Path(path)
    env = _open_readonly(path)
    try:
        with env.begin() as txn:
            for index in range(_num_examples(txn, path)):
                compressed = txn.get(str(index).encode())
                if compressed is None:
                    raise Atom3dFormatError(f"{path}: record {index} is missing (num_examples says there are more)")
                yield decode_record(compressed, path, index)
    finally:
        env.close()


# --------------------------------------------------------------------------- dataset roles


def split_dirs(raw_dir: Path, spec: dict[str, Any], defaults: dict[str, str], kind: str) -> dict[str, Path]:
    """The LMDB directory of each split, config ``paths`` over the module's defaults.

    An unknown role is a typo and a missing directory a wrong layout; both are errors because
    either would silently empty a split.
    """
    given = spec.get("paths") or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"paths: unknown role(s) {unknown} for {kind} (known: {sorted(defaults)})")
    dirs = {split: raw_dir / given.get(split, defaults[split]) for split in SPLITS}
    for split, path in dirs.items():
        if not (path / "data.mdb").is_file():
            raise FileNotFoundError(f"{kind}: no LMDB for split {split!r} at {path} (set paths.{split} in the config)")
    return dirs


# --------------------------------------------------------------------------- atom tables


def atom_table(item: Mapping[str, Any], key: str) -> pd.DataFrame:
    """``item[key]`` as an atom DataFrame with the columns the parsers read."""
    if key not in item:
        raise BadRecord(f"no {key!r} entry")
    frame = item[key]
    if not isinstance(frame, pd.DataFrame):
        raise BadRecord(f"{key!r} is a {type(frame).__name__}, not a DataFrame (record without 'types'?)")
    missing = [c for c in ("model", "chain", "residue", "insertion_code", "resname", "name", "element", "x", "y", "z") if c not in frame]
    if missing:
        raise BadRecord(f"{key!r} lacks column(s) {missing}")
    return frame


def heavy_atoms_first_model(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Atoms of the first model without hydrogens, in table order, and the hydrogens dropped.

    Graphs are built on heavy atoms (as GVP does for ATOM3D); only the first model is one structure.
    """
    if frame.empty:
        return frame, 0
    model = frame[frame["model"] == frame["model"].iloc[0]]
    hydrogen = model["element"].astype(str).str.strip().str.upper().isin(HYDROGENS).to_numpy()
    return model[~hydrogen], int(hydrogen.sum())


def _backbone_and_residue_starts(frame: pd.DataFrame) -> np.ndarray:
    """Mask of the atoms :func:`chains_from_atoms` needs: N/CA/C/O/CB plus each residue's first atom
    (so a residue without CA is still seen and counted). Why: it loops over atoms in Python and
    side chains are most of them."""
    keys = frame[["chain", "residue", "insertion_code"]].astype(str).to_numpy()
    first = np.ones(len(frame), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    return first | frame["name"].astype(str).str.strip().isin(ATOM_NAMES).to_numpy()


def table_chains(frame: pd.DataFrame) -> list[ChainResidues]:
    """Amino-acid residues per chain, chains in order of first appearance, empty chains left out.

    Same residue rules as structure files (:func:`chains_from_atoms`): waters and ligands are not
    residues, a residue needs a CA.
    """
    atoms, _ = heavy_atoms_first_model(frame)
    atoms = atoms[_backbone_and_residue_starts(atoms)] if len(atoms) else atoms
    try:
        chains = chains_from_atoms(
            atoms["chain"].astype(str).tolist(),
            atoms["residue"].tolist(),
            atoms["insertion_code"].astype(str).tolist(),
            atoms["resname"].astype(str).tolist(),
            atoms["name"].astype(str).tolist(),
            atoms[["x", "y", "z"]].to_numpy(dtype=np.float64),
        )
    except (TypeError, ValueError) as exc:
        raise BadRecord(f"unreadable atom table: {exc}") from exc
    return [chain for chain in chains.values() if len(chain) or chain.residues_without_ca]


@dataclass(frozen=True)
class Residues:
    """Several chains' residues concatenated in order: what one ProteinRecord holds."""

    sequence: str
    chain_ids: tuple[str, ...]
    resnums: np.ndarray  # int32 [N]
    icodes: tuple[str, ...]
    coords: np.ndarray  # float32 [N, len(ATOM_NAMES), 3]
    residues_without_ca: int

    @classmethod
    def concatenate(cls, chains: list[ChainResidues]) -> Residues:
        return cls(
            sequence="".join(c.sequence for c in chains),
            chain_ids=tuple(c.chain for c in chains for _ in range(len(c))),
            resnums=np.concatenate([c.resnums for c in chains] or [np.zeros(0, np.int32)]).astype(np.int32),
            icodes=tuple(code for c in chains for code in c.icodes),
            coords=np.concatenate([c.coords for c in chains] or [np.zeros((0, len(ATOM_NAMES), 3), np.float32)]),
            residues_without_ca=sum(c.residues_without_ca for c in chains),
        )

    def keys(self) -> list[tuple[str, int, str]]:
        """(chain, residue number, insertion code) per residue: how atom tables name residues."""
        return list(zip(self.chain_ids, self.resnums.tolist(), self.icodes))

    def __len__(self) -> int:
        return len(self.sequence)


def protein_residues(frame: pd.DataFrame, min_residues: int) -> Residues:
    """All chains of an atom table as one protein; too few residues is a drop reason."""
    residues = Residues.concatenate(table_chains(frame))
    if not len(residues):
        raise BadRecord(f"no amino-acid residue with a CA atom ({residues.residues_without_ca} without)")
    if len(residues) < min_residues:
        raise BadRecord(f"{len(residues)} residues < min_residues {min_residues}")
    return residues


def finite_score(item: Mapping[str, Any], name: str) -> float:
    """``item['scores'][name]`` as a finite float (the entry's label)."""
    scores = item.get("scores")
    if not isinstance(scores, dict):
        raise BadRecord(f"no 'scores' dict (got {type(scores).__name__})")
    if name not in scores:
        raise BadRecord(f"scores has no {name!r} (keys: {sorted(scores)})")
    value = scores[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise BadRecord(f"scores[{name!r}] is {value!r}, not a finite number")
    return float(value)
