"""Bi-HMF local fusion: per-residue gating between the sequence and structure streams.

At every GNN depth l (docs/paper.md, choice 3; the gate equation is the paper's):

    s_l = LN(P_l(e_{k_l}) + s_{l-1})          sequence stream, cached ESM layer k_l
    h_l = GNN_l(h~_{l-1})                     structure stream
    g   = softmax(f_l(s_l) + f_l(h_l))        f_l: MLP width -> 2 votes, shared by both inputs
    z_l = g_1 * s_l + g_2 * h_l
    h~_l = h_l + z_l ;  s_l <- s_l + z_l      the fused state feeds both streams

s_0 = 0 and h~_0 is the encoder's embedding of one-hot residue types. The residue readout is
z_L, the fused state of the last depth.

One-way variants (``model.fusion_direction``): seq_to_struct drops s_l <- s_l + z_l (the
sequence stream is the plain stream of cached ESM layers), struct_to_seq drops h~_l = h_l + z_l
(the structure stream is the plain encoder); the gate and the readout z_L are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bihmf.models.fusion.base import (
    BOTH_DIRECTIONS,
    NUM_RESIDUE_TYPES,
    BidirectionalFusion,
    EncoderFactory,
    FusionContext,
    SequenceStream,
    StreamStates,
    paired_layers,
    residue_one_hot,
)


class LocalGate(nn.Module):
    """g = softmax(f(x_seq) + f(x_struct)); fused = g1 * x_seq + g2 * x_struct."""

    def __init__(self, width: int):
        super().__init__()
        self.votes = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x_seq: Tensor, x_struct: Tensor) -> Tensor:
        gate = torch.softmax(self.votes(x_seq) + self.votes(x_struct), dim=-1)
        return gate[:, :1] * x_seq + gate[:, 1:] * x_struct


class BiHMFLocal(BidirectionalFusion):
    is_bihmf = True

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext, direction: str = BOTH_DIRECTIONS):
        super().__init__(direction)
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES)
        self.width = width = self.encoder.width
        self.stream = SequenceStream(context, self.encoder.num_layers, width)
        depths = range(len(self.stream.slots))
        self.gates = nn.ModuleList([LocalGate(width) for _ in depths])

    @staticmethod
    def esm_layers(num_gnn_layers: int, esm_depth: int, explicit: list[int] | None = None) -> list[int]:
        return paired_layers(num_gnn_layers, esm_depth, explicit)

    def streams(self, graph: Any) -> StreamStates:
        state = self.encoder.prepare(graph, residue_one_hot(graph))
        seq = torch.zeros_like(state.s)
        fused = state.s
        for depth in range(len(self.stream.slots)):
            seq = self.stream.step(depth, graph, seq)
            state = self.encoder.layer(depth, state)
            fused = self.gates[depth](seq, state.s)
            state = state.with_scalar(self.to_struct(state.s, fused))
            seq = self.to_seq(seq, fused)
        return StreamStates(seq, state.s, fused)
