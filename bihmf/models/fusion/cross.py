"""Cross fusion (ESM-GearNet "cross"): one joint self-attention block after both branches.

    h_i = GNN(one-hot residue types)_i              structure branch, all L layers
    s_i = W_s LN(e_{D,i})                           final ESM layer projected to width C
    (a^s, a^h) = MHSA_p([s ; h] + modality)         per protein, 2N tokens (JointSelfAttention)
    t^s = LN(s + a^s) ;  t^h = LN(h + a^h)          residual + shared LayerNorm (post-norm block)
    out_i = W [t^s_i ; t^h_i] + b                   halves concatenated, projected back to C

Choices: the block is attention + residual + LayerNorm without a feed-forward sublayer (the
task head's MLP follows); ``ATTENTION_HEADS`` heads; the two halves are joined by
concatenation as in ESM-GearNet, then projected to C so every fusion gives the head the same
width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bihmf.models.fusion.base import (
    ATTENTION_HEADS,
    NUM_RESIDUE_TYPES,
    EncoderFactory,
    Fusion,
    FusionContext,
    JointSelfAttention,
    residue_one_hot,
)
from bihmf.models.fusion.layers import LayerChoice


class Cross(Fusion):
    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext):
        super().__init__()
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES)
        self.width = width = self.encoder.width
        self.slot = context.slot(context.layers.esm_depth)
        self.project = nn.Sequential(nn.LayerNorm(context.esm_dim), nn.Linear(context.esm_dim, width))
        self.attention = JointSelfAttention(width, ATTENTION_HEADS)
        self.norm = nn.LayerNorm(width)
        self.combine = nn.Linear(2 * width, width)

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return [choice.esm_depth]

    def forward(self, graph: Any) -> Tensor:
        state = self.encoder.prepare(graph, residue_one_hot(graph))
        for depth in range(self.encoder.num_layers):
            state = self.encoder.layer(depth, state)
        seq, struct = self.project(graph.esm[:, self.slot]), state.s
        att_seq, att_struct = self.attention(seq, struct, graph.batch, graph.num_graphs)
        return self.combine(torch.cat([self.norm(seq + att_seq), self.norm(struct + att_struct)], dim=-1))
