"""ScanNet label files and tables (shared by the PPBS and BCE parsers).

Label file format (ScanNet ``utilities/dataset_utils.read_labels``)::

    >1a2n_0-A          header: '>' + origin
    A 1 M 0            "<chain> <resnumber> <aa1> <label>", single spaces

The reader is strict: a malformed line is an error naming file and line number,
because a silently skipped line would shift labels against residues.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


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
