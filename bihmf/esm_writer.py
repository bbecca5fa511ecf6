"""The embed stage's jobs and writer: one shard of ESM layer rows per job, written while the
next chunk goes through the model, resumable part by part.

The forward pass is ``bihmf.esm``; the on-disk encoding, the index and the reader are
``bihmf.esm_cache`` (format and measurements: ``docs/esm_cache.md``, BENCHMARKS.md "Cache writer").
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from esm.model.esm2 import ESM2

from bihmf.esm import embed_sequences
from bihmf.esm_cache import (
    FORMAT,
    ROW_GROUP_BYTES,
    EmbedSettings,
    cache_schema,
    embedding_table,
    plan_row_groups,
    read_chains,
    read_row_groups,
    residues_per_row_group,
    shard_name,
    shard_of,
    shard_writer,
    write_index,
    write_row_group,
)
from bihmf.esm_checkpoint import load_esm
from bihmf.io import atomic_output, recorded_sha256
from bihmf.runlock import holding, shard_lock

__all__ = ["ShardWriteError", "embed_proteins", "embed_shard", "write_shard"]

log = logging.getLogger(__name__)

# Resume granularity of one shard job: a killed job loses at most this many residues of work.
PART_RESIDUES = 2**16
# Chunk of a part embedded per call, in token budgets: the writer thread encodes one chunk while
# the next runs. Each chunk is sorted into batches on its own, so a larger one pads less but
# leaves less to overlap.
CHUNK_BATCHES = 8
# Chunks embedded but not yet written, at most: bounds the memory finished embeddings hold.
WRITE_DEPTH = 2


def plan_parts(groups: list[range], lengths: Sequence[int], part_residues: int) -> list[list[range]]:
    """Consecutive row groups per part (or chunk), closing one once it holds ``part_residues``."""
    parts: list[list[range]] = []
    residues = part_residues  # the first group opens the first part
    for group in groups:
        if residues >= part_residues:
            parts.append([])
            residues = 0
        parts[-1].append(group)
        residues += sum(lengths[row] for row in group)
    return parts


class ShardWriteError(RuntimeError):
    """Writing a shard (or one of its parts) failed in the writer thread; the message names the shard."""


class _RowGroupFile:
    """One Parquet file written row group by row group, put in place atomically by :meth:`commit`.

    Opened in the job's thread, appended to and committed in the writer thread, discarded (its
    temporary removed) by the job's thread when the job fails.
    """

    def __init__(self, path: Path, schema: pa.Schema):
        self._schema = schema
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_output(path))
        self._writer = self._stack.enter_context(shard_writer(tmp, schema))

    def append(self, rows: list[tuple[list[str], list[np.ndarray]]]) -> None:
        """Encode one row group per (keys, arrays): the Arrow building runs in this thread too."""
        for keys, arrays in rows:
            write_row_group(self._writer, embedding_table(self._schema, keys, arrays))

    def append_file(self, path: Path) -> None:
        """Append a reused part's row groups, decoded and re-encoded (pyarrow cannot splice encoded
        ones); the same values encode to the same bytes, so the shard does not show the resume."""
        for table in read_row_groups(path):
            write_row_group(self._writer, table)

    def commit(self) -> None:
        self._stack.close()

    def discard(self, exc: BaseException) -> None:
        """Remove the temporary (a no-op once committed)."""
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


class _ShardWriter:
    """Every Parquet write of one shard job, in submission order, on one background thread.

    Encoding a row group (``bihmf.esm_cache.embedding_table``, one uncompressed Parquet value
    per residue and layer) runs here, overlapping the next chunk's forward; pyarrow releases
    the GIL while it encodes, so the shard's writer and the parts' writer use two cores. At most ``depth`` writes wait, which
    bounds the finished embeddings held in memory. A failed write surfaces at the next
    submission or at the end, as :class:`ShardWriteError` naming the shard.
    """

    def __init__(self, shard: Path, depth: int):
        self._shard, self._depth = shard, depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"write-{shard.name}")
        self._pending: deque[Future] = deque()
        self._files: list[_RowGroupFile] = []
        self._failed = False

    def open(self, path: Path, schema: pa.Schema) -> _RowGroupFile:
        self._files.append(_RowGroupFile(path, schema))
        return self._files[-1]

    def submit(self, job: Callable[[], None]) -> None:
        while len(self._pending) >= self._depth:
            self._wait(self._pending.popleft())
        self._pending.append(self._pool.submit(self._run, job))

    def _run(self, job: Callable[[], None]) -> None:
        """On the writer thread: after one failed write none runs, so a part missing row groups is never committed."""
        if self._failed:
            raise ShardWriteError("an earlier write failed")
        try:
            job()
        except BaseException:
            self._failed = True
            raise

    def _wait(self, future: Future) -> None:
        try:
            future.result()
        except Exception as exc:
            raise ShardWriteError(f"{self._shard}: writing the shard failed: {exc}") from exc

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """On success wait for every write; on failure let the submitted ones finish (a part
        computed before the failure is kept for the rerun), then remove every uncommitted temporary."""
        try:
            while exc is None and self._pending:
                self._wait(self._pending.popleft())
        except ShardWriteError as failed:
            exc = failed
            raise
        finally:
            self._pool.shutdown(wait=True)
            if exc is not None:
                for file in self._files:
                    file.discard(exc)


def shard_metadata(checkpoint: Path, model: ESM2, layers: list[int], settings: EmbedSettings, shard: int, n_shards: int) -> dict[str, str]:
    """What a shard records of how its numbers were made (``CacheInfo`` reads it back)."""
    return {
        "format": FORMAT,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": recorded_sha256(checkpoint),
        "embed_dim": str(model.embed_dim),
        "esm_depth": str(model.num_layers),
        "layers": json.dumps(layers),
        "dtype": "float16",
        **settings.cache_metadata(),
        "shard": str(shard),
        "n_shards": str(n_shards),
    }


def part_path(parts_dir: Path, number: int, fingerprint: str, keys: list[str]) -> Path:
    """A part's file, named by its chains and every setting that changes its numbers, so a rerun
    reuses only a part that it would write the same."""
    digest = hashlib.sha256("\n".join([fingerprint, *keys]).encode()).hexdigest()[:16]
    return parts_dir / f"part-{number:05d}-{digest}.parquet"


@holding(shard_lock, "out")  # one writer per shard (bihmf/runlock.py)
def write_shard(
    checkpoint: Path,
    chains: dict[str, str],
    layers: list[int],
    shard: int,
    n_shards: int,
    out: Path,
    settings: EmbedSettings,
    *,
    device: torch.device,
    row_group_bytes: int = ROW_GROUP_BYTES,
    part_residues: int = PART_RESIDUES,
) -> int:
    """Embed ``chains`` (hash -> sequence, in storage order) into one shard; returns how many were embedded now.

    Resumable: a shard of more than ``part_residues`` residues is also written as parts of
    about that many, each atomically to ``<shard>.parts/`` under a name that fingerprints its
    chains and every setting that changes the numbers. A rerun reuses the parts it finds
    (read back into the shard), so a killed job loses at most one part; a row group encodes to
    the same bytes read back or fresh, so a resumed run writes the same shard as an
    uninterrupted one (tested). The parts folder goes once the shard exists; a shard of one
    part has nothing to resume from and gets none.

    Speed: each part is embedded in chunks of ``CHUNK_BATCHES`` token budgets, and Parquet
    encoding runs on background threads while the next chunk's forward does
    (:class:`_ShardWriter`): one for the shard, one for the parts, so resumability costs no
    extra time on the shard's path (BENCHMARKS.md, "Cache writer": throughput and scaling).
    """
    model, alphabet = load_esm(checkpoint)
    bad = [layer for layer in layers if not 0 <= layer <= model.num_layers]
    if bad:
        raise ValueError(f"{checkpoint}: layers {bad} requested, model has {model.num_layers} layers")
    metadata = shard_metadata(checkpoint, model, layers, settings, shard, n_shards)
    schema = cache_schema(layers, model.embed_dim, metadata)
    fingerprint = json.dumps({**metadata, "token_budget": settings.token_budget, "device": device.type}, sort_keys=True)
    keys = list(chains)
    lengths = [len(chains[key]) for key in keys]
    groups = plan_row_groups(lengths, residues_per_row_group(len(layers), model.embed_dim, row_group_bytes))
    parts = plan_parts(groups, lengths, part_residues)
    resumable = len(parts) > 1
    parts_dir = out.with_name(out.stem + ".parts")
    embedded = 0
    with _ShardWriter(out, WRITE_DEPTH) as writer, _ShardWriter(out, WRITE_DEPTH) as part_writer:
        assembled = writer.open(out, schema)
        for number, part in enumerate(parts):
            part_keys = [keys[row] for group in part for row in group]
            path = part_path(parts_dir, number, fingerprint, part_keys)
            if resumable and path.exists():
                log.info("part %d: reusing %s", number, path.name)
                writer.submit(partial(assembled.append_file, path))
                continue
            started = time.perf_counter()
            part_file = part_writer.open(path, schema) if resumable else None
            targets = [(writer, assembled)] + ([(part_writer, part_file)] if part_file is not None else [])
            for chunk in plan_parts(part, lengths, CHUNK_BATCHES * settings.token_budget):
                embeddings = embed_sequences(model, alphabet, {keys[r]: chains[keys[r]] for group in chunk for r in group}, layers, settings, device=device)
                rows = [([keys[r] for r in group], [embeddings[keys[r]] for r in group]) for group in chunk]
                for thread, file in targets:
                    thread.submit(partial(file.append, rows))
            if part_file is not None:
                part_writer.submit(part_file.commit)
            embedded += len(part_keys)
            residues = sum(len(chains[key]) for key in part_keys)
            log.info("part %d: %d chains, %d residues, %.0f residues/s", number, len(part_keys), residues, residues / (time.perf_counter() - started))
        writer.submit(assembled.commit)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return embedded


def embed_shard(
    checkpoint: Path,
    proteins: Path,
    layers: list[int],
    shard: int,
    n_shards: int,
    out: Path,
    settings: EmbedSettings,
    *,
    device: torch.device,
    row_group_bytes: int = ROW_GROUP_BYTES,
    part_residues: int = PART_RESIDUES,
) -> int:
    """The embed job: this shard's distinct chains of a protein table (see :func:`write_shard`)."""
    chains = {key: seq for key, seq in read_chains(proteins).items() if shard_of(key, n_shards) == shard}
    log.info("shard %d of %d: %d distinct chains, layers %s", shard, n_shards, len(chains), layers)
    return write_shard(
        checkpoint, chains, layers, shard, n_shards, out, settings,
        device=device, row_group_bytes=row_group_bytes, part_residues=part_residues,
    )


def embed_proteins(
    checkpoint: Path,
    sequences: Iterable[tuple[str, str]],
    layers: list[int],
    out: Path,
    settings: EmbedSettings,
    *,
    device: torch.device,
) -> int:
    """A complete one-shard cache whose index is ``out`` from (hash, sequence) pairs; returns how many are distinct.

    For callers that hold sequences rather than a protein table (tests, notebooks); the
    workflow runs :func:`embed_shard` per shard and :func:`write_index` once.
    """
    chains = dict(sequences)
    shard = out.with_name(shard_name(0, 1))
    write_shard(checkpoint, chains, layers, 0, 1, shard, settings, device=device)
    write_index(out, [shard], chains)
    return len(chains)
