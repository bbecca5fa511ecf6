"""The fusion interface: how the cached ESM layers and the structure encoder are combined.

A fusion owns its encoder (built by the factory it is given, with the node-input width it
needs) and maps a batch to per-residue states [N, width]. It also declares which ESM layers
it reads, so the embed stage caches exactly what the configured fusions need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bihmf.models.encoders import StructureEncoder
from bihmf.models.fusion.layers import LayerChoice

NUM_RESIDUE_TYPES = 21  # 20 standard amino acids + X

EncoderFactory = Callable[[int], StructureEncoder]  # node-input width -> encoder

# Heads of the attention fusions (cross, bihmf_global): a fixed constant, not configuration;
# the model width must be divisible by it (checked when the fusion is built).
ATTENTION_HEADS = 4


@dataclass(frozen=True)
class FusionContext:
    """What a fusion needs to know about the ESM rows it will read: their width, the layer in
    each slot of ``graph.esm`` [N, slots, D], and the run's layer choice. Built by ``of``."""

    esm_dim: int
    cache_layers: tuple[int, ...]  # layer number of each slot of graph.esm [N, slots, D]
    layers: LayerChoice

    @classmethod
    def of(cls, model_cfg: Mapping[str, Any], esm_dim: int, esm_depth: int, slots: Sequence[int]) -> FusionContext:
        """The one constructor training, predict, plan and bench use: the model section's layer
        choice at the cache's ESM depth, over rows holding the layers ``slots``."""
        return cls(esm_dim, tuple(slots), LayerChoice.of(model_cfg, esm_depth))

    def slot(self, layer: int) -> int:
        if layer not in self.cache_layers:
            raise ValueError(f"ESM layer {layer} is not in the embedding cache (cached: {list(self.cache_layers)})")
        return self.cache_layers.index(layer)


def residue_one_hot(graph: Any) -> Tensor:
    return F.one_hot(graph.residue_type, NUM_RESIDUE_TYPES).float()


# model.fusion_direction (the schema's enum lists the same names): which stream of a
# bidirectional fusion receives from the other. seq_to_struct: only the structure stream
# receives; struct_to_seq: only the sequence stream does.
BOTH_DIRECTIONS = "both"
FUSION_DIRECTIONS = (BOTH_DIRECTIONS, "seq_to_struct", "struct_to_seq")


class Fusion(nn.Module):
    """Base class; subclasses implement ``forward(graph) -> [N, width]`` and ``esm_layers``.

    ``uses_structure = False`` marks a fusion that builds no structure encoder: the benchmark
    trains it once per dataset (encoder ``none``), not once per encoder. ``is_bihmf`` marks the
    method under test (the report compares each such row with the best other row);
    ``is_reference`` the structure-only model whose scores the report's gains are measured from.
    ``directional`` marks a fusion whose streams update each other (``BidirectionalFusion``): only
    such a fusion accepts a ``model.fusion_direction`` other than ``both``.
    """

    width: int
    uses_structure: bool = True
    is_bihmf: bool = False
    directional: bool = False
    is_reference: bool = False

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        """The ESM layers this fusion reads under the run's choice, in the order it reads them."""
        raise NotImplementedError


class StreamStates(NamedTuple):
    """Both streams after the last depth and the readout built from them; the direction tests
    read the streams, the model only the readout."""

    seq: Tensor
    struct: Tensor
    readout: Tensor


class BidirectionalFusion(Fusion):
    """A fusion whose sequence and structure streams receive from each other at every depth
    (docs/paper.md, choice 6).

    Every update one stream receives from the other goes through ``to_seq`` / ``to_struct``, so
    the one-way ablations are this same code with one stream's update switched off: with
    ``seq_to_struct`` the sequence stream never adds anything and runs exactly as it would
    without a structure (and the reverse for ``struct_to_seq``). The fusion keeps every module of
    the two-way model, so one seed gives the same initial weights in all three directions and a
    one-way run differs from its two-way run only in the switched-off update.
    """

    directional = True

    def __init__(self, direction: str = BOTH_DIRECTIONS):
        super().__init__()
        if direction not in FUSION_DIRECTIONS:
            raise ValueError(f"unknown fusion direction {direction!r}; known: {list(FUSION_DIRECTIONS)}")
        self.direction = direction
        self.seq_receives = direction != "seq_to_struct"
        self.struct_receives = direction != "struct_to_seq"

    def streams(self, graph: Any) -> StreamStates:
        raise NotImplementedError

    def forward(self, graph: Any) -> Tensor:
        return self.streams(graph).readout

    def to_seq(self, seq: Tensor, received: Tensor) -> Tensor:
        return seq + received if self.seq_receives else seq

    def to_struct(self, struct: Tensor, received: Tensor) -> Tensor:
        return struct + received if self.struct_receives else struct

    def extra_repr(self) -> str:
        return f"direction={self.direction}"


def esm_mlp(esm_dim: int, width: int) -> nn.Sequential:
    """Residue MLP on one cached ESM layer: LN(e) -> Linear -> ReLU -> Linear, [N, D] -> [N, width].

    The LayerNorm puts ESM layers of any scale on a common footing (as ``serial`` does).
    """
    return nn.Sequential(nn.LayerNorm(esm_dim), nn.Linear(esm_dim, width), nn.ReLU(), nn.Linear(width, width))


class JointSelfAttention(nn.Module):
    """Multi-head self-attention over each protein's 2N tokens [sequence ; structure].

    For protein p with residues i = 1..N_p, the tokens are x_i = s_i + m_seq and
    x_{N_p+i} = h_i + m_struct (m: a learned modality embedding; there is no positional
    encoding, residue position reaches the tokens through the stream features themselves).
    Standard multi-head attention with ``heads`` heads of width C / heads:

        q, k, v = x W_q, x W_k, x W_v ;  a = softmax(q k^T / sqrt(C / heads)) v ;  out = a W_o

    ``forward`` returns ``out`` split back into its sequence and structure halves, [N, C] each
    (no residual, no norm: the caller decides how the halves rejoin its streams).

    Proteins never attend across each other: the tokens are scattered into a padded batch
    [B, 2 * N_max, C] and a key-padding mask gives padded keys exactly zero weight, so each
    protein's output equals the output of running it alone. Attention time grows as
    B * heads * (2 N_max)^2, memory only linearly: ``scaled_dot_product_attention`` takes the
    [B, 1, 1, 2 N_max] mask in its fused kernels, which never build the score matrix (measured in
    BENCHMARKS.md, section 3; tests/test_bench.py checks the CPU kernel). No attention dropout:
    the fusion layers add none of their own.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"joint self-attention needs a width divisible by its {heads} heads; got width {width}")
        self.heads = heads
        self.modality = nn.Parameter(torch.randn(2, width) * 0.02)  # [m_seq, m_struct]
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, seq: Tensor, struct: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        sizes = torch.bincount(batch, minlength=num_graphs)
        start = torch.cumsum(sizes, 0) - sizes
        local = torch.arange(batch.shape[0], device=batch.device) - start[batch]  # residue index within its protein
        struct_pos = sizes[batch] + local  # structure tokens follow the protein's sequence tokens
        length = 2 * int(sizes.max())
        width = seq.shape[-1]
        tokens = seq.new_zeros(num_graphs, length, width)
        tokens = tokens.index_put((batch, local), seq + self.modality[0])
        tokens = tokens.index_put((batch, struct_pos), struct + self.modality[1])
        valid = torch.arange(length, device=batch.device) < 2 * sizes.unsqueeze(-1)  # [B, L] real tokens
        q, k, v = (
            t.reshape(num_graphs, length, self.heads, width // self.heads).transpose(1, 2)
            for t in self.qkv(tokens).chunk(3, dim=-1)
        )
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        attended = self.out(attended.transpose(1, 2).reshape(num_graphs, length, width))
        return attended[batch, local], attended[batch, struct_pos]
