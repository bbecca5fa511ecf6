"""PSR (ATOM3D protein structure ranking, the "MQA" task): one entry per decoy, label GDT_TS.

Raw folder roles (``spec["paths"]``, relative to the raw folder) and their defaults, which match
the Zenodo tarball ``PSR-split-by-year.tar.gz`` unpacked into the raw folder:

=====  ==========================  ==================================
role   default                     content
=====  ==========================  ==================================
train  ``split-by-year/data/train``  ATOM3D LMDB (``data.mdb``)
val    ``split-by-year/data/val``    idem
test   ``split-by-year/data/test``   idem
=====  ==========================  ==================================

Each record (format: :mod:`bihmf.data.atom3d`) becomes a :class:`ProteinRecord` with

* ``protein_id`` ``"<target>/<decoy>"`` and ``group`` the target: the record ``id`` is the
  ``str()`` of a Python tuple ``(target, decoy)``, read with :func:`ast.literal_eval` (literals
  only, unlike the ``eval`` other loaders use on downloaded text);
* ``target`` = ``scores['gdt_ts']`` (per-target metrics group by ``group``);
* residues from ``atoms``: first model, hydrogens dropped, every chain in table order;
* ``labels`` all -1 (no residue-level task), ``weight`` 1, ``pdb_id`` "" (decoys are models,
  not PDB entries).

A record that cannot give an entry (malformed id, missing or non-finite score, no residues,
fewer than ``min_residues``, duplicate id) is dropped with the reason in its
:class:`EntryReport`; residues without CA are skipped and counted in ``repairs``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np

from bihmf.data.atom3d import BadRecord, atom_table, finite_score, protein_residues, read_lmdb, split_dirs
from bihmf.data.schema import EntryReport, ProteinRecord

DEFAULT_PATHS: dict[str, str] = {
    "train": "split-by-year/data/train",
    "val": "split-by-year/data/val",
    "test": "split-by-year/data/test",
}
LABEL = "gdt_ts"


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    """Nothing to fetch per entry: the decoy structures are inside the LMDBs."""
    return []


def decoy_id(raw: Any) -> tuple[str, str]:
    """``"('T0759', 'decoy')"`` -> ``("T0759", "decoy")``; anything else is a drop reason."""
    if not isinstance(raw, str):
        raise BadRecord(f"id {raw!r} is not a string")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise BadRecord(f"malformed id {raw!r}: not a Python tuple literal ({type(exc).__name__})") from exc
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
        raise BadRecord(f"malformed id {raw!r}: expected a (target, decoy) tuple of two non-empty strings")
    return value


def build_record(item: dict[str, Any], split: str, min_residues: int) -> tuple[ProteinRecord, int]:
    """One decoy -> its record and the number of residues skipped for lack of a CA."""
    target, decoy = decoy_id(item.get("id"))
    label = finite_score(item, LABEL)
    residues = protein_residues(atom_table(item, "atoms"), min_residues)
    n = len(residues)
    record = ProteinRecord(
        protein_id=f"{target}/{decoy}",
        pdb_id="",
        split=split,
        subset="",
        sequence=residues.sequence,
        chain_ids=residues.chain_ids,
        resnums=residues.resnums,
        icodes=residues.icodes,
        coords=residues.coords,
        labels=np.full(n, -1, dtype=np.int8),
        weight=1.0,
        target=label,
        group=target,
    )
    return record, residues.residues_without_ca


def entry_name(item: dict[str, Any], index: int) -> str:
    """The report name of a record: ``target/decoy`` when the id parses, else the raw id and index."""
    try:
        return "/".join(decoy_id(item.get("id")))
    except BadRecord:
        return f"{item.get('id')!r} (record {index})"


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """Every decoy of the three split LMDBs, plus one report per LMDB record."""
    records: list[ProteinRecord] = []
    reports: list[EntryReport] = []
    first_seen: dict[str, str] = {}
    for split, path in split_dirs(raw_dir, spec, DEFAULT_PATHS, "psr").items():
        for index, item in enumerate(read_lmdb(path)):
            report = EntryReport(entry_name(item, index), split)
            reports.append(report)
            try:
                record, without_ca = build_record(item, split, spec["min_residues"])
            except BadRecord as exc:
                report.drop(str(exc))
                continue
            report.structure_residues = len(record.sequence)
            if without_ca:
                report.repairs = f"{without_ca} residues without CA skipped"
            if record.protein_id in first_seen:
                report.drop(f"duplicate decoy id (first in {first_seen[record.protein_id]})")
                continue
            first_seen[record.protein_id] = f"{split} record {index}"
            records.append(record)
    return records, reports
