"""Batches for the training loop: ESM rows in memory or streamed from the cache, and a
background producer that prepares the next batches while the current step runs.

A job keeps each graph's ESM rows in memory (float16, only the layers its fusion reads) when
the split's rows fit a share of the job's declared memory (``train.mem_mb``); otherwise the
graphs carry no rows and each batch reads its proteins' rows from the cache, whose reader
keeps a bounded store of decoded row groups. The data order and the batches are the same
either way, so the choice never changes the numbers a run produces.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from bihmf.batching import assemble, residue_mask, to_device
from bihmf.data.schema import ProteinRecord
from bihmf.esm_cache import EmbeddingCache, chain_sequences

log = logging.getLogger(__name__)

# Share of train.mem_mb the in-memory ESM rows may take; the rest holds the model, optimiser
# state, batches in flight, decoded row groups and the Python process itself.
ESM_MEMORY_SHARE = 0.5
PREFETCH_DEPTH = 2  # batches prepared ahead: one in the step's shadow, one spare for jitter
T = TypeVar("T")
_END = ("end",)  # the producer's last entry: every item was handed over


class BatchError(RuntimeError):
    """Preparing a batch failed; the message names its proteins."""


@dataclass(frozen=True)
class EsmRows:
    """Where a job's ESM rows come from: the cache, the layers its model reads, and which
    residues enter the graphs (the rows of the others are dropped)."""

    cache: EmbeddingCache
    layers: tuple[int, ...]
    residues: str

    def of(self, record: ProteinRecord) -> np.ndarray:
        """float16 [graph nodes, layers, D] of one protein."""
        return self.cache.rows(record, self.layers)[residue_mask(record, self.residues)]

    def bytes(self, records: Sequence[ProteinRecord]) -> int:
        """What holding every record's rows in memory takes (float16, as :meth:`held` holds them)."""
        if self.residues == "all":
            nodes = sum(len(r.sequence) for r in {chain_key(r): r for r in records}.values())
        else:
            nodes = sum(int(residue_mask(r, self.residues).sum()) for r in records)
        return nodes * len(self.layers) * self.cache.info.embed_dim * 2

    def held(self, records: Sequence[ProteinRecord]) -> Iterator[np.ndarray]:
        """Each record's whole-chain rows to build its graph from (``protein_graph`` keeps its
        nodes'), one at a time. When every residue enters the graph, proteins of the same chains
        share one array, which the graphs keep: PSR's decoys of a target (hundreds per sequence)
        then cost one target's rows, not one per decoy. Pocket rows are cut, and so held, per protein."""
        shared: dict[tuple[str, ...], np.ndarray] = {}
        for record in records:
            if self.residues != "all":
                yield self.cache.rows(record, self.layers)
                continue
            key = chain_key(record)
            if key not in shared:
                shared[key] = self.cache.rows(record, self.layers)
            yield shared[key]


def chain_key(record: ProteinRecord) -> tuple[str, ...]:
    """The hashes of a protein's chains: proteins with equal keys have equal ESM rows."""
    return tuple(key for key, _ in chain_sequences(record.sequence, record.chain_ids))


@dataclass(frozen=True)
class RowsPlacement:
    """Where a job keeps its ESM rows and why: ``rows`` is "in memory", "streamed" or "none
    read" (a fusion that reads no ESM layer); the run's provenance records it."""

    rows: str
    read_layers: int
    rows_mb: float
    budget_mb: float

    @property
    def in_memory(self) -> bool:
        return self.rows == "in memory"


def place_rows(rows: EsmRows | None, records: Sequence[ProteinRecord], mem_mb: float) -> RowsPlacement:
    """Whether the rows of ``records`` fit the job's memory share; the decision is logged."""
    budget = ESM_MEMORY_SHARE * mem_mb * 2**20
    if rows is None:
        return RowsPlacement("none read", 0, 0.0, budget / 2**20)
    need = rows.bytes(records)
    fits = need <= budget
    log.info(
        "ESM rows of %d proteins (%d layers): %.0f MiB, budget %.0f MiB (%.0f %% of train.mem_mb=%d): %s",
        len(records), len(rows.layers), need / 2**20, budget / 2**20, 100 * ESM_MEMORY_SHARE, mem_mb,
        "kept in memory" if fits else "streamed from the cache per batch",
    )
    return RowsPlacement("in memory" if fits else "streamed", len(rows.layers), need / 2**20, budget / 2**20)


def with_rows(graph: Data, esm: np.ndarray) -> Data:
    """A shallow copy of ``graph`` carrying ``esm`` (the stored graph stays without rows)."""
    out = copy.copy(graph)
    out.esm = torch.from_numpy(esm)
    return out


def host_batch(graphs: list[Data], device: torch.device) -> Batch:
    """What the producer thread hands over: for a GPU the assembled batch in pinned memory
    (so its copy can overlap), for the CPU the finished batch (there is no copy to overlap)."""
    batch = assemble(graphs)
    return batch.pin_memory() if device.type == "cuda" else to_device(batch, device)


def device_batches(
    batches: Iterable[list[int]], graphs: Callable[[list[int]], list[Data]], names: Callable[[list[int]], list[str]],
    device: torch.device, depth: int = PREFETCH_DEPTH,
) -> Iterator[tuple[list[int], Batch]]:
    """Each batch of ``batches`` on ``device``, assembled by a background thread ``depth``
    batches ahead of the consumer; copies to a GPU are issued without waiting. ``batches`` may
    be lazy and span epochs, so the next epoch's first batches are ready when it starts."""
    with closing(prefetched(batches, lambda ids: host_batch(graphs(ids), device), names, depth)) as ready:
        for ids, batch in ready:
            yield ids, (to_device(batch, device, non_blocking=True) if device.type == "cuda" else batch)


def prefetched(
    items: Iterable[list[int]], prepare: Callable[[list[int]], T], names: Callable[[list[int]], list[str]], depth: int,
) -> Iterator[tuple[list[int], T]]:
    """``prepare(ids)`` for each item, computed by one background thread into a queue of
    ``depth``; in order. A failure to prepare is raised here as :class:`BatchError` naming the
    proteins, one to list the items as itself; a consumer that stops early stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for ids in items:
                try:
                    entry = (ids, prepare(ids), None)
                except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
                    put((ids, None, error))
                    return
                if not put(entry):
                    return
        except Exception as error:  # noqa: BLE001 - the item list itself failed: the consumer raises it as is
            put((None, None, error))
            return
        put(_END)

    worker = threading.Thread(target=produce, name="batch-producer", daemon=True)
    worker.start()
    try:
        while (entry := ready.get()) is not _END:
            ids, value, error = entry
            if error is not None and ids is None:
                raise error
            if error is not None:
                raise BatchError(f"preparing the batch of proteins {names(ids)} failed: {error}") from error
            yield ids, value
    finally:
        stop.set()
        worker.join()
