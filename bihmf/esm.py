"""ESM-2 per-layer residue embeddings: checkpoint handling and the forward pass.

The language model is frozen (docs/paper.md, choice 1): it runs once in the embed stage
(jobs and writer: ``bihmf.esm_writer``) and training reads only the cache (storage and
reader: ``bihmf.esm_cache``, format and numbers: ``docs/esm_cache.md``).

Checkpoints use fair-esm's own local format and loader (``load_model_and_alphabet_local``),
so the offline random-init demo model and a downloaded ``esm2_t33_650M_UR50D.pt`` take the
same path. Loading stays ``weights_only``: only ``argparse.Namespace`` (the type fair-esm
stores its config in) is allow-listed.

Long sequences (settings: ``bihmf.esm_cache.EmbedSettings``): windows of at most ``window``
residues; each window after the first starts ``window_overlap`` residues before the previous
one ends, and a residue takes its embedding from the first window that contains it. So no
residue is truncated, every residue after the first window sees at least ``window_overlap``
residues of left context, and the first ``window`` residues are exactly what a truncating
extractor (fair-esm's ``scripts/extract.py``) returns.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from esm.multihead_attention import MultiheadAttention
from esm.pretrained import load_model_and_alphabet_local

from bihmf.download import download_file, resolve_url
from bihmf.embeddings_import import source_depth
from bihmf.esm_cache import EmbedSettings
from bihmf.io import atomic_output, record_sha256

__all__ = [
    "embed_sequences",
    "esm_depth",
    "layer_representations",
    "load_esm",
    "provide_checkpoint",
    "regression_path",
    "window_spans",
    "write_random_checkpoint",
]

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
    # sorted: a set's order, and so the pickled dict's, changes with each process's hash seed
    _save_reproducibly({"model": {k: state[k] for k in sorted(regression_keys)}}, regression_path(path))
    _save_reproducibly({"cfg": {"model": cfg}, "model": body}, path)


def _save_reproducibly(obj: object, path: Path) -> None:
    """``torch.save`` with the same bytes for the same tensors wherever it is written.

    Saved to a file, torch names the zip's top folder after the file, here atomic_output's random
    temporary name, so each write hashed differently and the checkpoint sha256 in every run's
    provenance changed from clone to clone. Saved to a buffer, the folder is always "archive".
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


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
    # the rotary tables are float32; under CUDA autocast q/k must go back to v's half precision
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
    """Per-residue float16 embeddings [L, len(layers), D] for every sequence, keyed like ``sequences``."""
    converter = alphabet.get_batch_converter()
    model = model.to(device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
    pieces, spans = [], {}
    for key, seq in sequences.items():
        spans[key] = window_spans(len(seq), settings.window, settings.window_overlap)
        pieces.extend((key, i, seq[start:end]) for i, (start, end, _, _) in enumerate(spans[key]))
    outputs: dict[tuple[str, int], np.ndarray] = {}
    for batch in _batches(pieces, settings.token_budget):
        _, _, tokens = converter([(f"{key}:{i}", seq) for key, i, seq in batch])
        with autocast:
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


def esm_depth(esm_cfg: dict) -> int:
    """Number of transformer layers, known before any download (cached layers depend on it)."""
    if "precomputed" in esm_cfg:  # read from the source's data (bihmf.embeddings_import)
        return source_depth(esm_cfg["precomputed"])
    if "random_init" in esm_cfg:
        return esm_cfg["random_init"]["num_layers"]
    match = re.match(r"esm2_t(\d+)_", esm_cfg["name"])
    if match is None:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: cannot read the layer count (expected esm2_t<layers>_...)")
    return int(match.group(1))


@dataclass(frozen=True)
class ReleasedEsm2:
    """What is known of a released ESM-2 before any download."""

    width: int  # embedding width
    parameters: float  # the nominal count in its name (the plan scales embed time by it)


# fair-esm's released ESM-2 models (the depth is in the name: esm_depth)
RELEASED_ESM2 = {
    "esm2_t6_8M_UR50D": ReleasedEsm2(320, 8e6),
    "esm2_t12_35M_UR50D": ReleasedEsm2(480, 35e6),
    "esm2_t30_150M_UR50D": ReleasedEsm2(640, 150e6),
    "esm2_t33_650M_UR50D": ReleasedEsm2(1280, 650e6),
    "esm2_t36_3B_UR50D": ReleasedEsm2(2560, 3e9),
    "esm2_t48_15B_UR50D": ReleasedEsm2(5120, 15e9),
}
RELEASE_URL = "https://dl.fbaipublicfiles.com/fair-esm"


def released_checkpoint(name: str) -> dict:
    """fair-esm's published URLs for a released ESM-2 (it publishes no checksums for them)."""
    if name not in RELEASED_ESM2:
        raise ValueError(
            f"esm.name {name!r} is not a released ESM-2 ({', '.join(RELEASED_ESM2)}); "
            "give esm.checkpoint (URLs or file: paths) or esm.random_init"
        )
    return {
        "model": {"url": f"{RELEASE_URL}/models/{name}.pt", "checksum": None},
        "regression": {"url": f"{RELEASE_URL}/regression/{name}-contact-regression.pt", "checksum": None},
    }


def provide_checkpoint(esm_cfg: dict, model_out: Path, downloads: Path, base_dir: Path) -> None:
    """Put the checkpoint pair at ``model_out``: random-init, configured URLs/paths, or a
    released model by name (in that order of precedence; random_init with checkpoint is an error).

    Its sha256 is recorded beside it (``bihmf.io.record_sha256``), so the embed jobs
    read it instead of each hashing the checkpoint again."""
    if "checkpoint" in esm_cfg and "random_init" in esm_cfg:
        raise ValueError("esm: give either checkpoint (real weights) or random_init, not both")
    if "random_init" in esm_cfg:
        shape = esm_cfg["random_init"]
        write_random_checkpoint(model_out, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], shape["seed"])
    else:
        checkpoint = esm_cfg.get("checkpoint") or released_checkpoint(esm_cfg["name"])
        for key, dest in (("model", model_out), ("regression", regression_path(model_out))):
            remote = checkpoint[key]
            cached = download_file(resolve_url(remote["url"], base_dir), downloads / Path(dest).name, remote["checksum"])
            with atomic_output(dest) as tmp:
                shutil.copyfile(cached, tmp)
    record_sha256(model_out)
