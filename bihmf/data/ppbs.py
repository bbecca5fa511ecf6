"""PPBS (ScanNet protein-protein binding sites): label files + biological-assembly structures.

Labels are aligned to structure residues on (chain, residue number), as ScanNet does. ScanNet
files carry no insertion codes, so residues 52, 52A and 52B all appear as "52": they are
matched in file order within that number, and the amino acid must agree. Every disagreement
is counted per protein in the reconciliation table:

* structure residue with no label row -> label -1 (ignored by loss and metrics);
* label row with no structure residue -> dropped from the protein, counted;
* amino-acid mismatch -> label -1, counted (never shifted onto a neighbour).
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.scannet import LabelEntry, LabelFormatError, parse_origin, read_label_file, read_sample_weights
from bihmf.data.structure import ChainResidues, StructureError, read_chains

STRUCTURE_PATTERNS = ("{id}.pdb1.gz", "{id}.pdb1", "{id}-assembly1.cif.gz", "{id}-assembly1.cif")


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    """PDB ids referenced by the label files, in first-seen order (drives structure downloads)."""
    seen: dict[str, None] = {}
    for label_file in spec["label_files"]:
        for entry in read_label_file(raw_dir / label_file["file"]):
            seen[parse_origin(entry.origin)[0]] = None
    return list(seen)


def find_structure(structure_dir: Path, pdb_id: str) -> Path | None:
    """First existing biological-assembly file for ``pdb_id`` (PDB format preferred, as ScanNet)."""
    for pattern in STRUCTURE_PATTERNS:
        for name in (pattern.format(id=pdb_id.lower()), pattern.format(id=pdb_id.upper())):
            if (structure_dir / name).exists():
                return structure_dir / name
    return None


def align_chain(chain: ChainResidues, rows: list, report: EntryReport) -> np.ndarray:
    """Labels for ``chain``'s residues from its label rows (see module docstring)."""
    queues: dict[int, deque] = defaultdict(deque)
    for row in rows:
        queues[row.resnum].append(row)
    labels = np.full(len(chain), -1, dtype=np.int8)
    for i, (resnum, letter) in enumerate(zip(chain.resnums.tolist(), chain.sequence)):
        queue = queues.get(resnum)
        if not queue:
            report.unlabelled_residues += 1
            continue
        row = queue.popleft()
        if row.aa != letter:
            report.aa_mismatches += 1
            continue
        labels[i] = row.label
        report.matched += 1
    report.label_rows_without_residue += sum(len(q) for q in queues.values())
    return labels


def build_record(
    entry: LabelEntry, chains: dict[str, ChainResidues], split: str, subset: str, weight: float, report: EntryReport
) -> ProteinRecord:
    """Concatenate the entry's chains into one protein with aligned labels."""
    pdb_id, _, chain_names = parse_origin(entry.origin)
    parts = []
    for name in chain_names:
        if name not in chains:
            raise StructureError(f"chain {name} not in structure (chains: {','.join(sorted(chains))})")
        rows = [row for row in entry.rows if row.chain == name]
        parts.append((chains[name], align_chain(chains[name], rows, report)))
    report.label_rows = len(entry.rows)
    report.label_rows_without_residue += sum(1 for row in entry.rows if row.chain not in chain_names)
    report.structure_residues = sum(len(chain) for chain, _ in parts)
    return ProteinRecord(
        protein_id=entry.origin,
        pdb_id=pdb_id,
        split=split,
        subset=subset,
        sequence="".join(chain.sequence for chain, _ in parts),
        chain_ids=tuple(chain.chain for chain, _ in parts for _ in range(len(chain))),
        resnums=np.concatenate([chain.resnums for chain, _ in parts]),
        icodes=tuple(code for chain, _ in parts for code in chain.icodes),
        coords=np.concatenate([chain.coords for chain, _ in parts]),
        labels=np.concatenate([labels for _, labels in parts]),
        weight=weight,
    )


def _weights(raw_dir: Path, spec: dict[str, Any], label_file: dict[str, Any], count: int) -> list[float]:
    if spec.get("table") is None:
        return [1.0] * count
    set_name = label_file.get("table_set")
    if set_name is None:
        raise LabelFormatError(f"{label_file['file']}: config gives a table but no table_set for this file")
    weights = read_sample_weights(raw_dir / spec["table"], set_name)
    if len(weights) != count:
        raise LabelFormatError(
            f"{raw_dir / spec['table']}: Set {set_name!r} has {len(weights)} rows but "
            f"{label_file['file']} has {count} entries; weights are matched by position"
        )
    return weights


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """All proteins of the dataset plus one reconciliation line per label-file entry."""
    structure_dir = raw_dir / spec["structure_dir"]
    records, reports = [], []
    chains_cache: dict[tuple[Path, int], dict[str, ChainResidues]] = {}
    for label_file in spec["label_files"]:
        entries = read_label_file(raw_dir / label_file["file"])
        weights = _weights(raw_dir, spec, label_file, len(entries))
        for entry, weight in zip(entries, weights):
            report = EntryReport(entry.origin, label_file["split"], label_file["subset"])
            reports.append(report)
            try:
                pdb_id, model, _ = parse_origin(entry.origin)
                path = find_structure(structure_dir, pdb_id)
                if path is None:
                    raise StructureError(f"no structure file for {pdb_id} in {structure_dir}")
                if (path, model) not in chains_cache:
                    chains_cache[(path, model)] = read_chains(path, model)
                record = build_record(entry, chains_cache[(path, model)], label_file["split"], label_file["subset"], weight, report)
            except (StructureError, LabelFormatError) as exc:
                report.drop(str(exc))
                continue
            if report.matched < spec["min_residues"]:
                report.drop(f"{report.matched} labelled residues < min_residues")
                continue
            records.append(record)
    return records, reports
