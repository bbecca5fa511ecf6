"""The structure download's manifest: one row per PDB entry with its status, file, URL and sha256.

Its own module because two layers read it: the download writes it (``bihmf.data.fetch``) and the
ScanNet parser reads why an entry is absent, and a parser must not import the downloader (which
looks parsers up in the registry).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bihmf.io import write_text_atomic

MANIFEST = "structures_manifest.tsv"
MANIFEST_FIELDS = ["id", "status", "file", "url", "sha256", "successor", "error"]


def write_manifest(rows: list[dict[str, str]], manifest: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(manifest, buffer.getvalue())
    return manifest


def structure_drop_reasons(structure_dir: Path) -> dict[str, str]:
    """Upper-case PDB id -> why its structure is absent, from the download's manifest (if any)."""
    manifest = structure_dir / MANIFEST
    if not manifest.exists():
        return {}
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {
        row["id"].upper(): f"{row['status']} PDB entry {row['id'].upper()}: {row['error']}"
        for row in rows
        if row.get("status") in ("obsolete", "missing")
    }
