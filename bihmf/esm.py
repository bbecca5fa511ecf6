"""ESM-2 per-layer residue embeddings: the forward pass.

The language model is frozen (docs/paper.md, choice 1): it runs once in the embed stage (jobs and
writer: ``bihmf.esm_writer``) and training reads only the cache (storage and reader:
``bihmf.esm_cache``, format and numbers: ``docs/esm_cache.md``; checkpoints: ``bihmf.esm_checkpoint``).

Long sequences (settings: ``bihmf.esm_cache.EmbedSettings``): windows of at most ``window``
residues; each window after the first starts ``window_overlap`` residues before the previous
one ends, and a residue takes its embedding from the first window that contains it. So no
residue is truncated, every residue after the first window sees at least ``window_overlap``
residues of left context, and the first ``window`` residues are exactly what a truncating
extractor (fair-esm's ``scripts/extract.py``) returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from esm.multihead_attention import MultiheadAttention

from bihmf.esm_cache import EmbedSettings

__all__ = ["embed_sequences", "forward_precision", "layer_representations", "window_spans"]


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
