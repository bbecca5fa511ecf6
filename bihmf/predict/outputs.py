"""What ``bihmf predict`` writes besides the summary: the predictions table, and for
per-residue tasks a copy of each structure with scores as B-factors and a score plot."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from Bio.PDB import MMCIFIO, PDBIO, Select
from matplotlib.figure import Figure

from bihmf.data.schema import ProteinRecord
from bihmf.data.structure import is_mmcif, load_structure, one_letter
from bihmf.io import atomic_output
from bihmf.predict.structures import ResidueKey, residue_key

# per-residue plot: width grows with the protein, within readable bounds
PLOT_INCHES_PER_RESIDUE = 0.02
PLOT_WIDTH_RANGE = (6.0, 30.0)
PLOT_HEIGHT = 3.2
PLOT_TICKS = 12


def residue_rows(source: str, record: ProteinRecord, keep: np.ndarray, scores: np.ndarray, task: ModuleType) -> list[dict[str, Any]]:
    """One table row per scored residue, the task's columns last."""
    positions = np.flatnonzero(keep)
    return [
        {
            "file": source,
            "protein_id": record.protein_id,
            "chain": record.chain_ids[i],
            "resnum": int(record.resnums[i]),
            "icode": record.icodes[i],
            "residue": record.sequence[i],
            **task.output_columns(score),
        }
        for i, score in zip(positions, scores, strict=True)
    ]


def protein_row(source: str, record: ProteinRecord, keep: np.ndarray, value: Any, ligand: Path | None,
                task: ModuleType) -> dict[str, Any]:
    """One table row per protein: what it was made from, then the task's columns."""
    row: dict[str, Any] = {
        "file": source,
        "protein_id": record.protein_id,
        "chains": ",".join(dict.fromkeys(record.chain_ids)),
        "residues": len(record.sequence),
        "graph_residues": int(keep.sum()),
    }
    if ligand is not None:
        row.update(ligand=str(ligand), ligand_atoms=len(record.ligand_elems))
    return {**row, **task.output_columns(value)}


class _ScoredResidues(Select):
    """Keeps the model's selected model and the residues that got a score (waters never)."""

    def __init__(self, model_id: Any, keys: set[ResidueKey]):
        self.model_id = model_id
        self.keys = keys

    def accept_model(self, model: Any) -> bool:
        return model.id == self.model_id

    def accept_residue(self, residue: Any) -> bool:
        polymer_or_amino_acid = residue.id[0] == " " or one_letter(residue.get_resname()) is not None
        return residue.id[0] != "W" and polymer_or_amino_acid and residue_key(residue) in self.keys


def write_bfactor_copy(path: Path, model_index: int, scores: dict[ResidueKey, float], out: Path) -> None:
    """A copy of the scored residues of ``path`` with each atom's B-factor set to its residue's score.

    mmCIF stays mmCIF (long chain ids of assemblies do not fit PDB columns), PDB stays PDB.
    """
    structure = load_structure(path)
    model = list(structure)[model_index]
    for residue in model.get_residues():
        key = residue_key(residue)
        if key in scores:
            for atom in residue.get_unpacked_list():
                atom.set_bfactor(scores[key])
    writer = MMCIFIO() if is_mmcif(path) else PDBIO()
    writer.set_structure(structure)
    with atomic_output(out) as tmp:
        writer.save(str(tmp), select=_ScoredResidues(model.id, set(scores)))


def plot_scores(title: str, label: str, rows: list[dict[str, Any]], out: Path) -> None:
    """Per-residue score along the sequence, one line per chain, residue numbers on the axis."""
    frame = pd.DataFrame(rows)
    position = np.arange(1, len(frame) + 1)
    low, high = PLOT_WIDTH_RANGE
    fig = Figure(figsize=(min(high, max(low, len(frame) * PLOT_INCHES_PER_RESIDUE)), PLOT_HEIGHT))
    ax = fig.subplots()
    for chain, part in frame.groupby("chain", sort=False):
        ax.plot(position[part.index], part["score"], linewidth=1, label=f"chain {chain}")
    step = max(1, math.ceil(len(frame) / PLOT_TICKS))
    ticks = position[::step]
    ax.set_xticks(ticks, [f"{frame.chain[i - 1]}{frame.resnum[i - 1]}{frame.icode[i - 1]}" for i in ticks], fontsize="small")
    ax.set_xlim(0.5, len(frame) + 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("residue (chain, number) along the sequence")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def write_table(rows: list[dict[str, Any]], out: Path, table_format: str) -> None:
    frame = pd.DataFrame(rows)
    with atomic_output(out) as tmp:
        if table_format == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)

