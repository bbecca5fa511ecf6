"""The per-protein table every dataset parser writes and every later stage reads.

One row per protein (a chain, or a set of chains scored together). Per-residue columns
are lists aligned with ``sequence``:

============  ==============================  ===========================================
column        type                            meaning
============  ==============================  ===========================================
protein_id    string                          dataset's own id (ScanNet header origin)
pdb_id        string                          lowercase PDB id of the structure file
split         string                          train / val / test
subset        string                          test or validation subset ("" if none)
sequence      string                          one letter per residue (X = unknown)
seq_hash      string                          sha256 of ``sequence``: the ESM cache key
chain_ids     list<string>                    author chain of each residue
resnums       list<int32>                     author residue number
icodes        list<string>                    insertion code ("" when none)
coords        list<fixed_size_list<f32,15>>   N, CA, C, O, CB xyz (Å), NaN when missing
labels        list<int8>                      per-residue label, -1 = unlabelled
weight        float32                         sample weight of the protein
target        float64                         protein-level label (class index or value),
                                              NaN for residue-level tasks
group         string                          grouping for per-group metrics (PSR target
                                              id), "" when none
ligand_elems  list<string>                    ligand heavy-atom elements (LBA), else empty
ligand_xyz    list<fixed_size_list<f32,3>>    ligand heavy-atom coordinates (Å)
============  ==============================  ===========================================

All datasets write every column, so one reader serves all of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bihmf.data.structure import ATOM_NAMES
from bihmf.integrity import WRITE_OPTIONS, check_record, read_table
from bihmf.io import atomic_output, nested_list_array

COORD_WIDTH = len(ATOM_NAMES) * 3

PROTEIN_SCHEMA = pa.schema(
    [
        ("protein_id", pa.string()),
        ("pdb_id", pa.string()),
        ("split", pa.string()),
        ("subset", pa.string()),
        ("sequence", pa.string()),
        ("seq_hash", pa.string()),
        ("chain_ids", pa.list_(pa.string())),
        ("resnums", pa.list_(pa.int32())),
        ("icodes", pa.list_(pa.string())),
        ("coords", pa.list_(pa.list_(pa.float32(), COORD_WIDTH))),
        ("labels", pa.list_(pa.int8())),
        ("weight", pa.float32()),
        ("target", pa.float64()),
        ("group", pa.string()),
        ("ligand_elems", pa.list_(pa.string())),
        ("ligand_xyz", pa.list_(pa.list_(pa.float32(), 3))),
    ]
)


def sequence_hash(sequence: str) -> str:
    """Content key of a sequence: identical sequences share one cached embedding."""
    return hashlib.sha256(sequence.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ProteinRecord:
    """One protein as the model sees it (see the module docstring for the fields)."""

    protein_id: str
    pdb_id: str
    split: str
    subset: str
    sequence: str
    chain_ids: tuple[str, ...]
    resnums: np.ndarray  # int32 [N]
    icodes: tuple[str, ...]
    coords: np.ndarray  # float32 [N, 5, 3]
    labels: np.ndarray  # int8 [N]
    weight: float
    target: float = math.nan
    group: str = ""
    ligand_elems: tuple[str, ...] = ()
    ligand_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    @property
    def seq_hash(self) -> str:
        return sequence_hash(self.sequence)

    def __post_init__(self) -> None:
        n = len(self.sequence)
        sizes = {
            "chain_ids": len(self.chain_ids),
            "resnums": len(self.resnums),
            "icodes": len(self.icodes),
            "coords": len(self.coords),
            "labels": len(self.labels),
        }
        wrong = {k: v for k, v in sizes.items() if v != n}
        if wrong:
            raise ValueError(f"{self.protein_id}: per-residue columns differ from sequence length {n}: {wrong}")
        if len(self.ligand_elems) != len(self.ligand_xyz):
            raise ValueError(f"{self.protein_id}: {len(self.ligand_elems)} ligand elements but {len(self.ligand_xyz)} coordinates")


def write_proteins(records: list[ProteinRecord], path: Path) -> None:
    """Write records as a zstd Parquet file, atomically."""
    columns = {
        "protein_id": [r.protein_id for r in records],
        "pdb_id": [r.pdb_id for r in records],
        "split": [r.split for r in records],
        "subset": [r.subset for r in records],
        "sequence": [r.sequence for r in records],
        "seq_hash": [r.seq_hash for r in records],
        "chain_ids": [list(r.chain_ids) for r in records],
        "resnums": [r.resnums.astype(np.int32) for r in records],
        "icodes": [list(r.icodes) for r in records],
        "coords": nested_list_array([r.coords.reshape(len(r.sequence), COORD_WIDTH) for r in records], pa.float32()),
        "labels": [r.labels.astype(np.int8) for r in records],
        "weight": [r.weight for r in records],
        "target": [r.target for r in records],
        "group": [r.group for r in records],
        "ligand_elems": [list(r.ligand_elems) for r in records],
        "ligand_xyz": nested_list_array([r.ligand_xyz.reshape(-1, 3) for r in records], pa.float32()),
    }
    table = pa.Table.from_pydict(columns, schema=PROTEIN_SCHEMA)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", **WRITE_OPTIONS)


def _list_array(column: pa.ChunkedArray, row: int) -> np.ndarray:
    return column[row].values.to_numpy(zero_copy_only=False)


def read_proteins(path: Path) -> list[ProteinRecord]:
    """Read a protein table back into records (inverse of :func:`write_proteins`)."""
    table = read_table(path, schema=PROTEIN_SCHEMA)
    records = []
    for i in range(table.num_rows):
        sequence = table["sequence"][i].as_py()
        coords = table["coords"][i].values.flatten().to_numpy(zero_copy_only=False)
        records.append(
            ProteinRecord(
                protein_id=table["protein_id"][i].as_py(),
                pdb_id=table["pdb_id"][i].as_py(),
                split=table["split"][i].as_py(),
                subset=table["subset"][i].as_py(),
                sequence=sequence,
                chain_ids=tuple(table["chain_ids"][i].as_py()),
                resnums=_list_array(table["resnums"], i).astype(np.int32),
                icodes=tuple(table["icodes"][i].as_py()),
                coords=coords.astype(np.float32).reshape(len(sequence), len(ATOM_NAMES), 3),
                labels=_list_array(table["labels"], i).astype(np.int8),
                weight=float(table["weight"][i].as_py()),
                target=float(table["target"][i].as_py()),
                group=table["group"][i].as_py(),
                ligand_elems=tuple(table["ligand_elems"][i].as_py()),
                ligand_xyz=table["ligand_xyz"][i].values.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 3),
            )
        )
        check_record(records[-1], path)
    return records


@dataclass
class EntryReport:
    """What happened to one source entry during preprocessing (one row of the drop report).

    ``status`` is "kept" or "dropped" (with ``reason``); ``repairs`` lists what was fixed on a
    kept entry (e.g. "CA-less residues skipped: 2"). Label/structure disagreements of
    residue-level datasets are counted in the integer fields.
    """

    protein_id: str
    split: str
    subset: str = ""
    status: str = "kept"
    reason: str = ""
    repairs: str = ""
    structure_residues: int = 0
    label_rows: int = 0
    matched: int = 0
    unlabelled_residues: int = 0
    label_rows_without_residue: int = 0
    aa_mismatches: int = 0

    def drop(self, reason: str) -> None:
        self.status, self.reason = "dropped", reason

