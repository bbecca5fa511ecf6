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

from bihmf.models.fusion.base import BOTH_DIRECTIONS, EncoderFactory, FusionContext
from bihmf.models.fusion.hierarchical import Exchange, HierarchicalFusion


class LocalGate(nn.Module):
    """g = softmax(f(x_seq) + f(x_struct)); fused = g1 * x_seq + g2 * x_struct."""

    def __init__(self, width: int):
        super().__init__()
        self.votes = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x_seq: Tensor, x_struct: Tensor) -> Tensor:
        gate = torch.softmax(self.votes(x_seq) + self.votes(x_struct), dim=-1)
        return gate[:, :1] * x_seq + gate[:, 1:] * x_struct


class BiHMFLocal(HierarchicalFusion):
    is_bihmf = True

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext, direction: str = BOTH_DIRECTIONS):
        super().__init__(encoder_factory, context, direction)
        self.gates = nn.ModuleList([LocalGate(self.width) for _ in self.depths])

    def exchange(self, depth: int, graph: Any, seq: Tensor, struct: Tensor, carried: Tensor) -> Exchange:
        fused = self.gates[depth](seq, struct)
        return Exchange(fused, fused, fused)

    def readout(self, seq: Tensor, struct: Tensor, carried: Tensor) -> Tensor:
        return carried  # z_L
