"""Dataset registry and the preprocess stage driver.

A dataset kind is a module with ``parse(raw_dir, spec) -> (records, entry_reports)`` and
``structure_ids(raw_dir, spec) -> list[str]`` (PDB ids to fetch one by one; empty when the
structures ship with the dataset); adding one is one module plus one line here.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from bihmf.data.schema import EntryReport, ProteinRecord, write_proteins
from bihmf.io import write_json_atomic

log = logging.getLogger(__name__)

KINDS = ("ppbs", "bce", "react", "psr", "lba", "known_answer")


@functools.cache
def _registry() -> dict[str, ModuleType]:
    return {kind: importlib.import_module(f"bihmf.data.{kind}") for kind in KINDS}


def __getattr__(name: str) -> Any:
    """``DATASETS`` (kind -> parser module) on first use: the parsers import pandas and more,
    which a job that only reads the protein table (embed, index) should not pay for."""
    if name == "DATASETS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def split_counts(records: list[ProteinRecord]) -> dict[str, int]:
    """Proteins per split and per split_subset (e.g. ``test`` and ``test_70``)."""
    counts: Counter[str] = Counter()
    for record in records:
        counts[record.split] += 1
        if record.subset:
            counts[f"{record.split}_{record.subset}"] += 1
    return dict(sorted(counts.items()))


def size_differences(counts: dict[str, int], published: dict[str, int]) -> dict[str, dict[str, int]]:
    """Splits whose kept count differs from the published size: {split: {published, kept, difference}}."""
    return {
        split: {"published": size, "kept": counts.get(split, 0), "difference": counts.get(split, 0) - size}
        for split, size in published.items()
        if counts.get(split, 0) != size
    }


def duplicate_ids(records: list[ProteinRecord]) -> list[str]:
    """protein_ids held by more than one record: each must name one protein (the bootstrap groups by it)."""
    counts = Counter(record.protein_id for record in records)
    return sorted(pid for pid, n in counts.items() if n > 1)


REQUIRED_SPLITS = ("train", "val", "test")  # what training needs (bihmf.training)


def empty_splits(records: list[ProteinRecord], reports: list[EntryReport]) -> dict[str, list[EntryReport]]:
    """Splits with no kept protein: each required split, and every split or test/val subset that
    had entries before the drops; value: the split's dropped entries (empty: none were listed)."""
    def key(split: str, subset: str) -> str:
        return f"{split}_{subset}" if subset else split

    kept = set(split_counts(records))
    listed = {r.split for r in reports} | {key(r.split, r.subset) for r in reports}
    return {
        name: [r for r in reports if r.status != "kept" and name in (r.split, key(r.split, r.subset))]
        for name in sorted(set(REQUIRED_SPLITS) | listed)
        if name not in kept
    }


def _entry_list(entries: list[EntryReport], limit: int = 5) -> str:
    shown = "; ".join(f"{r.protein_id} ({r.reason})" for r in entries[:limit])
    more = f"; ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return shown + more if entries else "no entry was listed for it"


def build_report(records: list[ProteinRecord], reports: list[EntryReport], published: dict[str, int]) -> dict[str, Any]:
    """The preprocess report: totals, split sizes against the published ones, and every
    dropped, repaired or label-mismatched entry with its reason."""
    noteworthy = [
        asdict(r)
        for r in reports
        if r.status != "kept" or r.repairs or r.aa_mismatches or r.label_rows_without_residue or r.unlabelled_residues
    ]
    counts = split_counts(records)
    return {
        "entries": len(reports),
        "kept": len(records),
        "dropped": sum(r.status != "kept" for r in reports),
        "repaired": sum(bool(r.repairs) for r in reports if r.status == "kept"),
        "aa_mismatches": sum(r.aa_mismatches for r in reports),
        "label_rows_without_residue": sum(r.label_rows_without_residue for r in reports),
        "unlabelled_residues": sum(r.unlabelled_residues for r in reports),
        "split_counts": counts,
        "published_sizes": published,
        "size_differences": size_differences(counts, published),
        "noteworthy_entries": noteworthy,
    }


def preprocess_dataset(raw_dir: Path, spec: dict[str, Any], proteins_out: Path, report_out: Path) -> dict[str, Any]:
    """Parse a downloaded dataset into the protein table and ``preprocess_report.json``.

    Dropped entries are listed with reasons and counted; a split whose size differs from the
    published one is a logged warning with the difference, an emptied test/val subset a loud
    one. The stage fails when nothing could be parsed or when train, val or test is empty (so no
    embedding or training is spent on a dataset that cannot be evaluated); the report, with
    ``empty_splits``, is written first, so the reasons are on disk.
    """
    records, reports = _registry()[spec["kind"]].parse(raw_dir, spec)
    duplicates = duplicate_ids(records)
    if duplicates:
        raise ValueError(f"{raw_dir}: protein_id(s) {duplicates[:10]} name more than one protein; the parser must keep ids unique")
    report = build_report(records, reports, spec["published_sizes"])
    emptied = empty_splits(records, reports)
    report["empty_splits"] = {name: [r.protein_id for r in entries] for name, entries in emptied.items()}
    write_json_atomic(report_out, report)
    for entry in report["noteworthy_entries"]:
        if entry["status"] != "kept":
            log.warning("dropped %s (%s): %s", entry["protein_id"], entry["split"], entry["reason"])
    for split, diff in report["size_differences"].items():
        log.warning("split %s: %d kept vs %d published (difference %+d)", split, diff["kept"], diff["published"], diff["difference"])
    log.info("split counts: %s", report["split_counts"])
    if not records:
        raise ValueError(f"{raw_dir}: no protein could be parsed ({report['dropped']} dropped; see {report_out})")
    for name, entries in emptied.items():
        if name not in REQUIRED_SPLITS:
            log.warning("SPLIT %s IS EMPTY: its metrics will be missing; dropped: %s", name, _entry_list(entries))
    required = {name: entries for name, entries in emptied.items() if name in REQUIRED_SPLITS}
    if required:
        raise ValueError(
            f"{raw_dir}: split(s) {sorted(required)} have no protein, training needs train, val and test; "
            + " | ".join(f"{name}: {_entry_list(entries)}" for name, entries in required.items())
            + f" (all reasons: {report_out})"
        )
    write_proteins(records, proteins_out)
    log.info("kept %d of %d entries (%d dropped, %d repaired)", report["kept"], report["entries"], report["dropped"], report["repaired"])
    return report
