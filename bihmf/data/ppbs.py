"""PPBS (ScanNet protein-protein binding sites): biological assembly 1 per PDB entry.

The headers' model index points into the assembly file, where symmetry copies are extra
models. Parsing and label alignment: :mod:`bihmf.data.scannet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bihmf.data.scannet import parse_dataset
from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.scannet import structure_ids as structure_ids

STRUCTURE_PATTERNS = ("{id}.pdb1.gz", "{id}.pdb1", "{id}-assembly1.cif.gz", "{id}-assembly1.cif")


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    return parse_dataset(raw_dir, spec, STRUCTURE_PATTERNS)
