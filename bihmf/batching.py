"""Proteins as graphs and graphs as batches: the one featurisation training, evaluation,
``bihmf predict`` and the benchmarks share, so a model always sees what it was trained on.

Batches are packed by residue count (``residue_budget``), not protein count, so memory
scales with residues; a single protein larger than the budget is an error naming it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from bihmf.data.schema import ProteinRecord
from bihmf.data.structure import STANDARD_AA
from bihmf.models.graph import element_index

RESIDUE_INDEX = {aa: i for i, aa in enumerate(STANDARD_AA)}  # anything else -> 20 (X)
CHAIN_STRIDE = 1 << 16  # chain_index = protein-in-batch * CHAIN_STRIDE + chain-in-protein


def residue_mask(record: ProteinRecord, residues: str) -> np.ndarray:
    """Which residues enter the graph: all, or the marked pocket (LBA marks it in ``labels``)."""
    if residues == "all":
        return np.ones(len(record.sequence), dtype=bool)
    mask = record.labels == 1
    if not mask.any():
        raise ValueError(f"{record.protein_id}: graph_residues=pocket but no residue is marked as pocket")
    return mask


def protein_graph(record: ProteinRecord, esm: np.ndarray | None, residues: str = "all") -> Data:
    """One protein as a PyG graph (edges are built on the device, inside the encoder).

    With ``residues="pocket"`` only pocket residues become nodes; their ESM rows come from the
    full-chain embedding, so they keep the context of their chain positions.
    """
    keep = residue_mask(record, residues)
    chain_ids = [c for c, k in zip(record.chain_ids, keep) if k]
    chain_names = {name: i for i, name in enumerate(dict.fromkeys(chain_ids))}
    sequence = [aa for aa, k in zip(record.sequence, keep) if k]
    n = len(sequence)
    data = Data(
        residue_type=torch.tensor([RESIDUE_INDEX.get(aa, 20) for aa in sequence], dtype=torch.long),
        coords=torch.from_numpy(record.coords[keep].copy()),
        chain=torch.tensor([chain_names[c] for c in chain_ids], dtype=torch.long),
        y=torch.from_numpy(record.labels[keep].astype(np.int64)),
        residue_weight=torch.full((n,), record.weight, dtype=torch.float32),
        target=torch.tensor([record.target], dtype=torch.float32),
        group=record.group,
        ligand_pos=torch.from_numpy(record.ligand_xyz.astype(np.float32).reshape(-1, 3).copy()),
        ligand_type=torch.tensor(element_index(record.ligand_elems), dtype=torch.long),
        num_nodes=n,
    )
    if esm is not None:
        data.esm = torch.from_numpy(esm if keep.all() else esm[keep])  # shares ``esm`` when every residue is kept
    return data


def assemble(graphs: list[Data]) -> Batch:
    """The batch on the CPU, ESM rows still in their stored dtype (half the bytes of float32)."""
    batch = Batch.from_data_list(graphs, follow_batch=["ligand_pos"])
    batch.chain_index = batch.batch * CHAIN_STRIDE + batch.chain
    return batch


def to_device(batch: Batch, device: torch.device, non_blocking: bool = False) -> Batch:
    """Move an assembled batch; ESM rows become float32 only there. ``non_blocking`` lets the
    host go on while a pinned batch is copied."""
    batch = batch.to(device, non_blocking=non_blocking)
    if "esm" in batch:
        batch.esm = batch.esm.float()
    return batch


def collate(graphs: list[Data], device: torch.device) -> Batch:
    return to_device(assemble(graphs), device)


def residue_budget_batches(sizes: list[int], names: list[str], budget: int, order: np.ndarray) -> list[list[int]]:
    """Pack proteins, visited in ``order``, into batches of at most ``budget`` residues."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order.tolist():
        if sizes[i] > budget:
            raise ValueError(
                f"protein {names[i]} has {sizes[i]} residues, more than train.residue_budget={budget}; "
                "raise the budget (or crop the protein in preprocessing)"
            )
        if current and used + sizes[i] > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        batches.append(current)
    return batches


def in_order_batches(graphs: list[Data], budget: int) -> list[list[int]]:
    """Batches of graphs in their given order (evaluation and prediction: no shuffling)."""
    sizes = [g.num_nodes for g in graphs]
    return residue_budget_batches(sizes, [str(i) for i in range(len(graphs))], budget, np.arange(len(graphs)))
