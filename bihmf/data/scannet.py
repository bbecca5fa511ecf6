"""Datasets in ScanNet's format (PPBS, BCE): label files + table + PDB structures.

Label file format (ScanNet ``utilities/dataset_utils.read_labels``)::

    >1a2n_0-A          header: '>' + origin
    A 1 M 0            "<chain> <resnumber> <aa1> <label>", single spaces

The reader is strict: a malformed line is an error naming file and line number,
because a silently skipped line would shift labels against residues.

Labels are aligned to structure residues on (chain, residue number), as ScanNet does. ScanNet
files carry no insertion codes, so residues 52, 52A and 52B all appear as "52": they are
matched in file order within that number, and the amino acid must agree. Every disagreement
is counted per protein in the preprocess report:

* structure residue with no label row -> label -1 (ignored by loss and metrics);
* label row with no structure residue -> dropped from the protein, counted;
* amino-acid mismatch -> label -1, counted (never shifted onto a neighbour).

An origin can head several entries (NMR entries appear more than once, with different
labels). Each entry stays a protein of its own, as in ScanNet, where table rows (weights) match
entries by position; the second and later ones get ``#2``, ``#3``... appended to their
``protein_id`` (never two rows with one id: the bootstrap groups by it), listed in the report.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bihmf.data.manifest import structure_drop_reasons
from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.structure import ChainResidues, StructureError, read_chains

log = logging.getLogger(__name__)


class LabelFormatError(ValueError):
    """A label file or table that does not follow ScanNet's format."""


@dataclass(frozen=True)
class LabelRow:
    chain: str
    resnum: int
    aa: str
    label: int


@dataclass(frozen=True)
class LabelEntry:
    """One header block of a label file."""

    origin: str
    rows: tuple[LabelRow, ...]
    line: int  # 1-based line number of the header, for error messages


def _parse_row(fields: list[str], where: str) -> LabelRow:
    if len(fields) != 4:
        raise LabelFormatError(f"{where}: expected 4 fields '<chain> <resnum> <aa> <label>', got {len(fields)}")
    chain, resnum, aa, label = fields
    try:
        return LabelRow(chain=chain, resnum=int(resnum), aa=aa, label=int(label))
    except ValueError as exc:
        raise LabelFormatError(f"{where}: non-integer residue number or label: {' '.join(fields)}") from exc


def read_label_file(path: Path) -> list[LabelEntry]:
    """Parse every entry of a ScanNet label file, keeping file order."""
    entries: list[LabelEntry] = []
    origin: str | None = None
    header_line = 0
    rows: list[LabelRow] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if text.startswith(">"):
                if origin is not None:
                    entries.append(LabelEntry(origin, tuple(rows), header_line))
                origin, header_line, rows = text[1:], number, []
            elif text:
                if origin is None:
                    raise LabelFormatError(f"{path}:{number}: data line before the first '>' header")
                rows.append(_parse_row(text.split(" "), f"{path}:{number}"))
    if origin is not None:
        entries.append(LabelEntry(origin, tuple(rows), header_line))
    return entries


def parse_origin(origin: str) -> tuple[str, int, tuple[str, ...]]:
    """Split a ScanNet origin into (pdb id, model index, chains).

    ``1a2n_0-A`` -> model 0, chain A; ``1a2n_0-A+0-B`` -> chains A and B of model 0;
    ``7d3m_13`` (BCE) -> chains "1" and "3" of model 0.
    """
    pdb_id, sep, rest = origin.partition("_")
    if not sep or not pdb_id or not rest:
        raise LabelFormatError(f"origin {origin!r}: expected '<pdbid>_<model>-<chain>' or '<pdbid>_<chains>'")
    if "-" not in rest:
        return pdb_id.lower(), 0, tuple(rest)
    models, chains = set(), []
    for part in rest.split("+"):
        model, dash, chain = part.partition("-")
        if not dash or not model.isdigit() or not chain:
            raise LabelFormatError(f"origin {origin!r}: bad model-chain part {part!r}")
        models.add(int(model))
        chains.append(chain)
    if len(models) != 1:
        raise LabelFormatError(f"origin {origin!r}: chains from several models are not supported")
    return pdb_id.lower(), models.pop(), tuple(chains)


def read_sample_weights(table: Path, set_name: str) -> list[float]:
    """Sample weights of one ``Set`` of a ScanNet table, in row order (= label-file order)."""
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"Set", "Sample weight"} - set(reader.fieldnames or [])
        if missing:
            raise LabelFormatError(f"{table}: missing column(s) {sorted(missing)}")
        weights = []
        for number, row in enumerate(reader, start=2):
            if row["Set"] == set_name:
                try:
                    weights.append(float(row["Sample weight"]))
                except ValueError as exc:
                    raise LabelFormatError(f"{table}:{number}: bad sample weight {row['Sample weight']!r}") from exc
    return weights


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    """PDB ids referenced by the label files, in first-seen order (drives structure downloads).

    An entry whose header cannot be read is skipped here with a warning; preprocessing drops it
    with the same reason, so one bad header costs one entry, not the dataset's download.
    """
    seen: dict[str, None] = {}
    for label_file in spec["label_files"]:
        for entry in read_label_file(raw_dir / label_file["file"]):
            try:
                seen[parse_origin(entry.origin)[0]] = None
            except LabelFormatError as exc:
                log.warning("%s:%d: entry skipped, no structure fetched for it: %s", label_file["file"], entry.line, exc)
    return list(seen)


def find_structure(structure_dir: Path, pdb_id: str, patterns: tuple[str, ...]) -> Path | None:
    """First existing structure file for ``pdb_id``, trying ``patterns`` in order."""
    for pattern in patterns:
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
        problem = chains[name].protein_problem()
        if problem:
            raise StructureError(problem)
        rows = [row for row in entry.rows if row.chain == name]
        parts.append((chains[name], align_chain(chains[name], rows, report)))
    report.label_rows = len(entry.rows)
    report.label_rows_without_residue += sum(1 for row in entry.rows if row.chain not in chain_names)
    report.structure_residues = sum(len(chain) for chain, _ in parts)
    return ProteinRecord(
        protein_id=report.protein_id,
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


def parse_dataset(
    raw_dir: Path, spec: dict[str, Any], patterns: tuple[str, ...]
) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """All proteins of a ScanNet-format dataset plus one report per label-file entry."""
    structure_dir = raw_dir / spec["structure_dir"]
    absent = structure_drop_reasons(structure_dir)  # obsolete (with successor) or missing, from the download
    records, reports = [], []
    chains_cache: dict[tuple[Path, int], dict[str, ChainResidues]] = {}
    seen: dict[str, list[str]] = {}  # origin -> "file:line" of each of its entries
    for label_file in spec["label_files"]:
        entries = read_label_file(raw_dir / label_file["file"])
        weights = _weights(raw_dir, spec, label_file, len(entries))
        for entry, weight in zip(entries, weights):
            places = seen.setdefault(entry.origin, [])
            places.append(f"{label_file['file']}:{entry.line}")
            protein_id = entry.origin if len(places) == 1 else f"{entry.origin}#{len(places)}"
            report = EntryReport(protein_id, label_file["split"], label_file["subset"])
            if len(places) > 1:
                report.repairs = f"duplicate entry id {entry.origin} (first at {places[0]}); kept as {protein_id}"
            reports.append(report)
            try:
                pdb_id, model, _ = parse_origin(entry.origin)
                path = find_structure(structure_dir, pdb_id, patterns)
                if path is None:
                    raise StructureError(absent.get(pdb_id.upper(), f"no structure file for {pdb_id} in {structure_dir}"))
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
