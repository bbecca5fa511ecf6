"""BCE (ScanNet B-cell epitopes): asymmetric-unit structures, multi-chain headers.

``>7d3m_13`` means chains 1 and 3 of the asymmetric unit (model 0); each chain's residues keep
their own chain id. Parsing and label alignment: :mod:`bihmf.data.scannet`. Which fold feeds
train / val / test is set by ``label_files`` in the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bihmf.data.scannet import parse_dataset
from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.scannet import structure_ids as structure_ids

STRUCTURE_PATTERNS = ("{id}.cif.gz", "{id}.cif", "pdb{id}.ent.gz", "{id}.pdb.gz", "{id}.pdb")


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    return parse_dataset(raw_dir, spec, STRUCTURE_PATTERNS)
