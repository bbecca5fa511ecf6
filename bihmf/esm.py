"""ESM-2 per-layer residue embeddings: the forward pass and the embed stage.

The language model is frozen (docs/paper.md, choice 1): it runs once in the embed stage and
training reads only the cache (storage and reader: ``bihmf.esm_cache``, format and numbers:
``docs/esm_cache.md``; checkpoints: ``bihmf.esm_checkpoint``).

Long sequences (settings: ``bihmf.esm_cache.EmbedSettings``): windows of at most ``window``
residues; each window after the first starts ``window_overlap`` residues before the previous
one ends, and a residue takes its embedding from the first window that contains it. So no
residue is truncated, every residue after the first window sees at least ``window_overlap``
residues of left context, and the first ``window`` residues are exactly what a truncating
extractor (fair-esm's ``scripts/extract.py``) returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from esm.multihead_attention import MultiheadAttention

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

__all__ = [
    "ShardWriteError",
    "embed_proteins",
    "embed_sequences",
    "embed_shard",
    "layer_representations",
    "window_spans",
]

log = logging.getLogger(__name__)

# Resume granularity of one shard job: a killed job loses at most this many residues of work.
PART_RESIDUES = 2**16
# Chunk of a part embedded per call, in token budgets: the writer thread encodes one chunk while
# the next runs. Each chunk is sorted into batches on its own, so a larger one pads less but
# leaves less to overlap.
CHUNK_BATCHES = 8
# Chunks embedded but not yet written, at most: bounds the memory finished embeddings hold.
WRITE_DEPTH = 2

def window_spans(length: int, window: int, window_overlap: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, keep start, keep end) covering ``range(length)`` exactly once.

    Each window after the first starts ``window_overlap`` residues before the previous one ends
    and keeps what that one did not cover (see the module docstring for why).
    """
    if window_overlap >= window:
        raise ValueError(f"window overlap {window_overlap} must be smaller than the window {window}")
    spans, start, covered = [], 0, 0
    while True:
        end = min(start + window, length)
        spans.append((start, end, covered, end))
        if end == length:
            return spans
        start, covered = end - window_overlap, end


def _attention(attn: MultiheadAttention, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
    """fair-esm's rotary self-attention block on [B, T, D] through fused SDPA."""
    batch, length, dim = x.shape
    q, k, v = (
        proj(x).view(batch, length, attn.num_heads, attn.head_dim).transpose(1, 2)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    # the rotary tables are float32; under autocast q/k must go back to v's reduced precision
    q, k = (t.to(v.dtype) for t in attn.rot_emb(q, k))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


def layer_representations(model: ESM2, tokens: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """What ``model(tokens, repr_layers=layers)["representations"]`` returns, computed faster.

    Same modules, weights and arithmetic as fair-esm's ``ESM2.forward``, except that attention
    goes through ``scaled_dot_product_attention`` instead of materialising the [B, H, T, T]
    weights and their head average (which the forward computes even when nobody asks), GELU is
    the fused exact one, and the LM head is skipped. That is most of the embed stage's speed-up
    over fair-esm's extractor (BENCHMARKS.md); the results differ by float32 rounding only
    (tests/test_esm.py compares the two).
    """
    padding = tokens.eq(model.padding_idx)
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:
        # ESM-2 rescales embeddings by the masked fraction it saw in training (15 % x 80 %)
        masked = tokens.eq(model.mask_idx)
        x = x.masked_fill(masked.unsqueeze(-1), 0.0)
        observed = masked.sum(-1).to(x.dtype) / (~padding).sum(-1)
        x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
    x = x * (~padding).unsqueeze(-1).to(x.dtype)
    wanted = set(layers)
    out = {0: x} if 0 in wanted else {}
    attend = (~padding)[:, None, None, :] if padding.any() else None
    for depth, layer in enumerate(model.layers, start=1):
        x = x + _attention(layer.self_attn, layer.self_attn_layer_norm(x), attend)
        x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        if depth in wanted and depth < model.num_layers:
            out[depth] = x
    if model.num_layers in wanted:
        out[model.num_layers] = model.emb_layer_norm_after(x)
    return out


def forward_precision(precision: str, device: torch.device) -> AbstractContextManager:
    """The arithmetic of the forward pass (config ``esm.precision``), the same on every device.

    float32 is plain float32, what fair-esm's extract.py computes; float16 and bfloat16 are torch
    autocast: projections, attention and the feed-forward layers in the reduced type, the
    residual stream (hence the LayerNorms on it) in float32. torch's CPU autocast takes both
    reduced types (slower than float32 there); docs/esm_cache.md has the deviation each costs.
    """
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def _batches(pieces: list[tuple[str, int, str]], token_budget: int) -> Iterator[list[tuple[str, int, str]]]:
    """Group pieces (sorted longest first) so that padded tokens per batch stay within budget."""
    batch: list[tuple[str, int, str]] = []
    for piece in sorted(pieces, key=lambda p: -len(p[2])):
        longest = len(batch[0][2]) if batch else len(piece[2])
        if batch and (len(batch) + 1) * (longest + 2) > token_budget:
            yield batch
            batch = []
        batch.append(piece)
    if batch:
        yield batch


@torch.inference_mode()
def embed_sequences(
    model: ESM2,
    alphabet: Alphabet,
    sequences: dict[str, str],
    layers: list[int],
    settings: EmbedSettings,
    *,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Per-residue float16 embeddings [L, len(layers), D] for every sequence, keyed like ``sequences``,
    computed at ``settings.precision`` (:func:`forward_precision`)."""
    converter = alphabet.get_batch_converter()
    model = model.to(device)
    pieces, spans = [], {}
    for key, seq in sequences.items():
        spans[key] = window_spans(len(seq), settings.window, settings.window_overlap)
        pieces.extend((key, i, seq[start:end]) for i, (start, end, _, _) in enumerate(spans[key]))
    outputs: dict[tuple[str, int], np.ndarray] = {}
    for batch in _batches(pieces, settings.token_budget):
        _, _, tokens = converter([(f"{key}:{i}", seq) for key, i, seq in batch])
        with forward_precision(settings.precision, device):
            reps = layer_representations(model, tokens.to(device), layers)
        stacked = torch.stack([reps[layer] for layer in layers], dim=2).to(torch.float16).cpu().numpy()
        for row, (key, i, seq) in enumerate(batch):
            outputs[(key, i)] = stacked[row, 1 : len(seq) + 1]
    result = {}
    for key, key_spans in spans.items():
        parts = [
            outputs[(key, i)][keep_start - start : keep_end - start]
            for i, (start, _, keep_start, keep_end) in enumerate(key_spans)
        ]
        result[key] = np.concatenate(parts)
        if not np.isfinite(result[key]).all():
            raise ValueError(f"sequence {key}: embedding has non-finite values (float16 overflow?)")
    return result


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
        """Encode one row group per (keys, arrays): the Arrow building and zstd run in this thread too."""
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

    Encoding float16 with zstd costs about as much as a small model's forward pass on a GPU;
    on this thread it overlaps the next chunk's forward. At most ``depth`` writes wait, which
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
    encoding (the slow part of writing: float16 is a fixed-length byte array per value) runs on
    background threads while the next chunk's forward does (:class:`_ShardWriter`): one for the
    shard, one for the parts, so resumability costs no extra time on the shard's path.
    """
    model, alphabet = load_esm(checkpoint)
    bad = [layer for layer in layers if not 0 <= layer <= model.num_layers]
    if bad:
        raise ValueError(f"{checkpoint}: layers {bad} requested, model has {model.num_layers} layers")
    metadata = {
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
    schema = cache_schema(layers, model.embed_dim, metadata)
    fingerprint = json.dumps({**metadata, "token_budget": settings.token_budget, "device": device.type}, sort_keys=True)
    keys = list(chains)
    lengths = [len(chains[key]) for key in keys]
    groups = plan_row_groups(lengths, residues_per_row_group(len(layers), model.embed_dim, row_group_bytes))
    parts = plan_parts(groups, lengths, part_residues)
    chunk_residues = CHUNK_BATCHES * settings.token_budget
    resumable = len(parts) > 1
    parts_dir = out.with_name(out.stem + ".parts")
    embedded = 0
    with _ShardWriter(out, WRITE_DEPTH) as writer, _ShardWriter(out, WRITE_DEPTH) as part_writer:
        assembled = writer.open(out, schema)
        for number, part in enumerate(parts):
            part_keys = [keys[row] for group in part for row in group]
            digest = hashlib.sha256("\n".join([fingerprint, *part_keys]).encode()).hexdigest()[:16]
            path = parts_dir / f"part-{number:05d}-{digest}.parquet"
            if resumable and path.exists():
                log.info("part %d: reusing %s", number, path.name)
                writer.submit(partial(assembled.append_file, path))
                continue
            part_file = part_writer.open(path, schema) if resumable else None
            started = time.perf_counter()
            for chunk in plan_parts(part, lengths, chunk_residues):
                embeddings = embed_sequences(model, alphabet, {keys[r]: chains[keys[r]] for group in chunk for r in group}, layers, settings, device=device)
                rows = [([keys[r] for r in group], [embeddings[keys[r]] for r in group]) for group in chunk]
                writer.submit(partial(assembled.append, rows))
                if part_file is not None:
                    part_writer.submit(partial(part_file.append, rows))
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
