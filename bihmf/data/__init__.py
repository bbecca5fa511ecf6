"""Dataset registry and the preprocess stage driver.

A dataset kind is a module with ``parse(raw_dir, spec) -> (records, reconciliations)`` and
``structure_ids(raw_dir, spec) -> list[str]``; adding one is one module plus one line here.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from bihmf.data import ppbs
from bihmf.data.schema import write_proteins
from bihmf.io import write_text_atomic

log = logging.getLogger(__name__)

DATASETS: dict[str, ModuleType] = {
    "ppbs": ppbs,
}


def _tsv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def preprocess_dataset(raw_dir: Path, spec: dict[str, Any], proteins_out: Path, reconcile_out: Path) -> dict[str, int]:
    """Parse a downloaded dataset into the protein table and the reconciliation TSV.

    Dropped entries are listed (with reasons) in the TSV and counted in the log; the stage
    fails only when nothing at all could be parsed.
    """
    module = DATASETS[spec["kind"]]
    records, reports = module.parse(raw_dir, spec)
    rows = module.reconciliation_rows(reports)
    dropped = [r for r in rows if r["status"] != "kept"]
    for row in dropped:
        log.warning("dropped %s (%s): %s", row["protein_id"], row["split"], row["reason"])
    write_text_atomic(reconcile_out, _tsv(rows))
    if not records:
        raise ValueError(f"{raw_dir}: no protein could be parsed ({len(dropped)} dropped; see {reconcile_out})")
    write_proteins(records, proteins_out)
    summary = {
        "entries": len(rows),
        "kept": len(records),
        "dropped": len(dropped),
        "aa_mismatches": sum(r["aa_mismatches"] for r in rows),
        "label_rows_without_residue": sum(r["label_rows_without_residue"] for r in rows),
        "unlabelled_residues": sum(r["unlabelled_residues"] for r in rows),
    }
    log.info("preprocess summary: %s", summary)
    return summary
