"""ESM-2 per-layer residue embeddings: checkpoint handling, embedding, Parquet cache.

The language model is frozen (paper.md, choice 1): it runs once in the embed stage and
training reads only the cache.

Checkpoints use fair-esm's own local format and loader (``load_model_and_alphabet_local``),
so the offline random-init demo model and a downloaded ``esm2_t33_650M_UR50D.pt`` take the
same path. Loading stays ``weights_only``: only ``argparse.Namespace`` (the type fair-esm
stores its config in) is allow-listed.

Long sequences: windows of ``window`` residues overlapping by ``overlap``; each residue takes
its embedding from the window in which it lies farthest from a cut (the cut between two
windows is the middle of their overlap), so no residue is truncated and every residue sees
at least ``overlap / 2`` residues of context on each side that exists.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from esm.pretrained import load_model_and_alphabet_local

from bihmf.download import fetch, file_digest, resolve_url
from bihmf.io import atomic_output, nested_list_array

if TYPE_CHECKING:
    from bihmf.data.schema import ProteinRecord

log = logging.getLogger(__name__)

SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace]


def regression_path(checkpoint: Path) -> Path:
    """fair-esm requires the contact-regression weights beside the checkpoint under this name."""
    return checkpoint.with_name(checkpoint.stem + "-contact-regression.pt")


def write_random_checkpoint(path: Path, num_layers: int, embed_dim: int, attention_heads: int, seed: int) -> None:
    """Write an untrained ESM-2 in fair-esm's checkpoint format (model + contact regression)."""
    if not path.stem.startswith("esm2"):
        raise ValueError(f"{path}: fair-esm only loads ESM-2 checkpoints whose file name starts with 'esm2'")
    torch.manual_seed(seed)
    model = ESM2(num_layers, embed_dim, attention_heads, Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    state = model.state_dict()
    regression_keys = {k for k in state if k.startswith("contact_head.regression.")}
    cfg = argparse.Namespace(
        encoder_layers=num_layers,
        encoder_embed_dim=embed_dim,
        encoder_attention_heads=attention_heads,
        token_dropout=True,
    )
    body = {f"encoder.sentence_encoder.{k}": v for k, v in state.items() if k not in regression_keys}
    with atomic_output(regression_path(path)) as tmp:
        torch.save({"model": {k: state[k] for k in regression_keys}}, tmp)
    with atomic_output(path) as tmp:
        torch.save({"cfg": {"model": cfg}, "model": body}, tmp)


def load_esm(path: Path) -> tuple[ESM2, Alphabet]:
    """Load a local fair-esm checkpoint with weights-only unpickling."""
    if not path.exists() or not regression_path(path).exists():
        raise FileNotFoundError(f"ESM checkpoint needs both {path} and {regression_path(path)}")
    torch.serialization.add_safe_globals(SAFE_CHECKPOINT_GLOBALS)
    try:
        model, alphabet = load_model_and_alphabet_local(path)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        offending = found.group(1) if found else "an unsupported type"
        allowed = ", ".join(f"{t.__module__}.{t.__qualname__}" for t in SAFE_CHECKPOINT_GLOBALS)
        raise ValueError(
            f"{path}: checkpoint stores {offending}, which is outside the weights-only allow-list ({allowed}); "
            "refusing to unpickle it. Add the type to bihmf.esm.SAFE_CHECKPOINT_GLOBALS only if you trust the file."
        ) from exc
    return model.eval(), alphabet


def window_spans(length: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, keep start, keep end) covering ``range(length)`` exactly once."""
    if overlap >= window:
        raise ValueError(f"window overlap {overlap} must be smaller than the window {window}")
    if length <= window:
        return [(0, length, 0, length)]
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    spans = []
    for i, start in enumerate(starts):
        end = start + window
        keep_start = 0 if i == 0 else (start + starts[i - 1] + window) // 2
        keep_end = length if i == len(starts) - 1 else (starts[i + 1] + end) // 2
        spans.append((start, end, keep_start, keep_end))
    return spans


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
    *,
    token_budget: int,
    window: int,
    overlap: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Per-residue float16 embeddings [L, len(layers), D] for every sequence, keyed like ``sequences``."""
    converter = alphabet.get_batch_converter()
    model = model.to(device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
    pieces, spans = [], {}
    for key, seq in sequences.items():
        spans[key] = window_spans(len(seq), window, overlap)
        pieces.extend((key, i, seq[start:end]) for i, (start, end, _, _) in enumerate(spans[key]))
    outputs: dict[tuple[str, int], np.ndarray] = {}
    for batch in _batches(pieces, token_budget):
        _, _, tokens = converter([(f"{key}:{i}", seq) for key, i, seq in batch])
        with autocast:
            reps = model(tokens.to(device), repr_layers=layers)["representations"]
        stacked = torch.stack([reps[layer] for layer in layers], dim=2).float().cpu().numpy()
        for row, (key, i, seq) in enumerate(batch):
            outputs[(key, i)] = stacked[row, 1 : len(seq) + 1]
    result = {}
    for key, key_spans in spans.items():
        parts = [
            outputs[(key, i)][keep_start - start : keep_end - start]
            for i, (start, _, keep_start, keep_end) in enumerate(key_spans)
        ]
        result[key] = np.concatenate(parts).astype(np.float16)
    return result


def write_cache(path: Path, embeddings: dict[str, np.ndarray], layers: list[int], metadata: dict[str, str]) -> None:
    """One row per distinct sequence hash, one float16 column per cached layer, zstd."""
    keys = sorted(embeddings)
    arrays = [embeddings[k] for k in keys]
    columns = {"seq_hash": pa.array(keys), "length": pa.array([len(a) for a in arrays], pa.int32())}
    for pos, layer in enumerate(layers):
        columns[f"layer_{layer}"] = nested_list_array([a[:, pos, :].astype(np.float16) for a in arrays], pa.float16())
    meta = {**metadata, "layers": json.dumps(layers)}
    table = pa.table(columns).replace_schema_metadata({k: str(v) for k, v in meta.items()})
    layer_columns = [f"layer_{layer}.list.element.list.element" for layer in layers]
    with atomic_output(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=["seq_hash"],
            use_byte_stream_split=layer_columns,
            row_group_size=256,
        )


class EmbeddingCache:
    """Read access to a cache file: ``cache[seq_hash]`` -> float32 [L, n_layers, D]."""

    def __init__(self, path: Path):
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        self.path = path
        self.metadata = meta
        self.layers: list[int] = json.loads(meta["layers"])
        self._rows = {key: i for i, key in enumerate(table["seq_hash"].to_pylist())}
        self._table = table

    def __contains__(self, seq_hash: str) -> bool:
        return seq_hash in self._rows

    def protein(self, record: "ProteinRecord") -> np.ndarray:
        """Embedding of one protein record, float32 [N, n_layers, D] aligned with its residues."""
        return self[record.seq_hash]

    def __getitem__(self, seq_hash: str) -> np.ndarray:
        if seq_hash not in self._rows:
            raise KeyError(f"{self.path}: no embedding for sequence hash {seq_hash}")
        row = self._rows[seq_hash]
        per_layer = []
        for layer in self.layers:
            cell = self._table[f"layer_{layer}"][row].values
            dim = cell.type.list_size
            per_layer.append(cell.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
        return np.stack(per_layer, axis=1).astype(np.float32)


def embed_proteins(
    checkpoint: Path,
    sequences: Iterable[tuple[str, str]],
    layers: list[int],
    out: Path,
    *,
    token_budget: int,
    window: int,
    overlap: int,
    device: torch.device,
) -> int:
    """Embed distinct sequences (hash, sequence) and write the cache; returns how many were embedded."""
    model, alphabet = load_esm(checkpoint)
    depth = model.num_layers
    bad = [layer for layer in layers if not 0 <= layer <= depth]
    if bad:
        raise ValueError(f"{checkpoint}: layers {bad} requested, model has {depth} layers")
    unique = dict(sequences)
    log.info("embedding %d distinct sequences, layers %s, on %s", len(unique), layers, device)
    embeddings = embed_sequences(
        model, alphabet, unique, layers, token_budget=token_budget, window=window, overlap=overlap, device=device
    )
    meta = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": file_digest(checkpoint, "sha256"),
        "embed_dim": str(model.embed_dim),
        "esm_depth": str(depth),
    }
    write_cache(out, embeddings, layers, meta)
    return len(unique)


def esm_depth(esm_cfg: dict) -> int:
    """Number of transformer layers, known before any download (cached layers depend on it)."""
    if "random_init" in esm_cfg:
        return esm_cfg["random_init"]["num_layers"]
    match = re.match(r"esm2_t(\d+)_", esm_cfg["name"])
    if match is None:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: cannot read the layer count (expected esm2_t<layers>_...)")
    return int(match.group(1))


def provide_checkpoint(esm_cfg: dict, model_out: Path, downloads: Path, base_dir: Path) -> None:
    """Download the configured checkpoint pair, or write the random-init one, at ``model_out``."""
    if "checkpoint" in esm_cfg and "random_init" in esm_cfg:
        raise ValueError("esm: give either checkpoint (real weights) or random_init, not both")
    if "random_init" in esm_cfg:
        shape = esm_cfg["random_init"]
        write_random_checkpoint(model_out, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], shape["seed"])
        return
    if "checkpoint" not in esm_cfg:
        raise ValueError("esm: neither checkpoint nor random_init is configured")
    for key, dest in (("model", model_out), ("regression", regression_path(model_out))):
        remote = esm_cfg["checkpoint"][key]
        cached = fetch(resolve_url(remote["url"], base_dir), downloads / Path(dest).name, remote["checksum"])
        with atomic_output(dest) as tmp:
            shutil.copyfile(cached, tmp)
