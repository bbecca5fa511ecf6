"""LBA (ATOM3D ligand binding affinity, PDBbind 2019 refined set): one entry per complex.

Raw folder roles (``spec["paths"]``, relative to the raw folder) and their defaults, which match
the Zenodo tarball ``LBA-split-by-sequence-identity-30.tar.gz`` unpacked into the raw folder:

=====  ==============================================  ==========================
role   default                                         content
=====  ==============================================  ==========================
train  ``split-by-sequence-identity-30/data/train``    ATOM3D LMDB (``data.mdb``)
val    ``split-by-sequence-identity-30/data/val``      idem
test   ``split-by-sequence-identity-30/data/test``     idem
=====  ==============================================  ==========================

The 60% split is the same format: use this kind with the three paths under
``split-by-sequence-identity-60/``.

Each record (format: :mod:`bihmf.data.atom3d`) becomes a :class:`ProteinRecord` with

* ``protein_id`` the record ``id`` (a PDB code), ``pdb_id`` its lower case (the part before any
  ``_`` suffix, which fixtures use to tell several complexes of one entry apart);
* residues from the **full protein** (``atoms_protein``: first model, hydrogens dropped, all
  chains in table order), so the language model sees whole chains, not pocket fragments;
* ``labels`` = 1 for residues in ``atoms_pocket`` and 0 elsewhere. For LBA ``labels`` is not a
  prediction target: it marks the ATOM3D pocket so that a model can restrict its graph to it
  (as ATOM3D's and GVP's LBA models do). Residues are matched on (chain, number, insertion code);
  pocket residues missing from the protein are counted in ``label_rows_without_residue``;
* ``target`` = ``scores['neglog_aff']`` (pK);
* ``ligand_elems`` / ``ligand_xyz``: heavy atoms of ``atoms_ligand`` (hydrogens dropped and
  counted in ``repairs``; elements upper case as in ATOM3D tables).

A record that cannot give an entry (missing key, malformed id, missing or non-finite score, no
protein residue, fewer than ``min_residues``, no pocket residue in the protein, no ligand heavy
atom, duplicate id) is dropped with the reason in its :class:`EntryReport`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bihmf.data.atom3d import (
    BadRecord,
    Residues,
    atom_table,
    finite_score,
    heavy_atoms_first_model,
    protein_residues,
    read_lmdb,
    split_dirs,
    table_chains,
)
from bihmf.data.schema import EntryReport, ProteinRecord

DEFAULT_PATHS: dict[str, str] = {
    "train": "split-by-sequence-identity-30/data/train",
    "val": "split-by-sequence-identity-30/data/val",
    "test": "split-by-sequence-identity-30/data/test",
}
LABEL = "neglog_aff"


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    """Nothing to fetch per entry: the complexes are inside the LMDBs."""
    return []


def complex_id(raw: Any) -> str:
    """The record id (a PDB code) as the entry name; the reader fills a missing one with the index."""
    if not isinstance(raw, str) or not raw.strip():
        raise BadRecord(f"malformed id {raw!r}: expected a PDB code string")
    return raw


def pocket_labels(protein: Residues, pocket: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """1 for protein residues that are pocket residues, else 0; plus (pocket residues, unmatched)."""
    pocket_keys = set(Residues.concatenate(table_chains(pocket)).keys())
    labels = np.array([key in pocket_keys for key in protein.keys()], dtype=np.int8)
    unmatched = len(pocket_keys - set(protein.keys()))
    if not labels.any():
        raise BadRecord(f"no pocket residue found in the protein ({len(pocket_keys)} pocket residues, none matched)")
    return labels, len(pocket_keys), unmatched


def ligand_heavy_atoms(ligand: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray, int]:
    """(elements, xyz [n, 3] float32, hydrogens dropped) of the ligand's first model."""
    heavy, hydrogens = heavy_atoms_first_model(ligand)
    if heavy.empty:
        raise BadRecord(f"ligand has no heavy atom ({hydrogens} hydrogens)")
    elements = tuple(heavy["element"].astype(str).str.strip().str.upper())
    return elements, heavy[["x", "y", "z"]].to_numpy(dtype=np.float32), hydrogens


def build_record(item: dict[str, Any], split: str, min_residues: int) -> tuple[ProteinRecord, EntryReport]:
    """One complex -> its record and its (kept) report with counts and repairs."""
    entry = complex_id(item.get("id"))
    label = finite_score(item, LABEL)
    protein = protein_residues(atom_table(item, "atoms_protein"), min_residues)
    labels, pocket_rows, unmatched = pocket_labels(protein, atom_table(item, "atoms_pocket"))
    elements, xyz, hydrogens = ligand_heavy_atoms(atom_table(item, "atoms_ligand"))
    record = ProteinRecord(
        protein_id=entry,
        pdb_id=entry.split("_")[0].lower(),
        split=split,
        subset="",
        sequence=protein.sequence,
        chain_ids=protein.chain_ids,
        resnums=protein.resnums,
        icodes=protein.icodes,
        coords=protein.coords,
        labels=labels,
        weight=1.0,
        target=label,
        ligand_elems=elements,
        ligand_xyz=xyz,
    )
    repairs = [f"{protein.residues_without_ca} residues without CA skipped"] if protein.residues_without_ca else []
    repairs += [f"{hydrogens} ligand hydrogens dropped"] if hydrogens else []
    report = EntryReport(
        entry,
        split,
        repairs="; ".join(repairs),
        structure_residues=len(protein),
        label_rows=pocket_rows,
        matched=pocket_rows - unmatched,
        label_rows_without_residue=unmatched,
    )
    return record, report


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """Every complex of the three split LMDBs, plus one report per LMDB record."""
    records: list[ProteinRecord] = []
    reports: list[EntryReport] = []
    first_seen: dict[str, str] = {}
    for split, path in split_dirs(raw_dir, spec, DEFAULT_PATHS, "lba").items():
        for index, item in enumerate(read_lmdb(path)):
            raw_id = item.get("id")
            try:
                record, report = build_record(item, split, spec["min_residues"])
            except BadRecord as exc:
                name = raw_id if isinstance(raw_id, str) and raw_id.strip() else f"{raw_id!r} (record {index})"
                reports.append(EntryReport(name, split, status="dropped", reason=str(exc)))
                continue
            reports.append(report)
            if record.protein_id in first_seen:
                report.drop(f"duplicate complex id (first in {first_seen[record.protein_id]})")
                continue
            first_seen[record.protein_id] = f"{split} record {index}"
            records.append(record)
    return records, reports
