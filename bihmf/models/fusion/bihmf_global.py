"""Bi-HMF global fusion: joint multi-head self-attention over both streams at every depth.

At every GNN depth l (docs/paper.md choice 3, global variant):

    s_l = LN(P_l(e_{k_l}) + s_{l-1})                 sequence stream, cached ESM layer k_l
    h_l = GNN_l(h~_{l-1})                            structure stream
    (z^s_l ; z^h_l) = MHSA_l([s_l ; h_l] + modality) 2N tokens per protein, split back in halves
    h~_l = h_l + z^h_l ;  s_l <- s_l + z^s_l         each half returns to its own stream

s_0 = 0 and h~_0 is the encoder's embedding of one-hot residue types. MHSA_l is
``JointSelfAttention`` (per-protein padded batch with a key-padding mask, so proteins never
attend across each other; ``ATTENTION_HEADS`` heads; a modality embedding per depth).

Choices the paper leaves open: the fused output z_l of choice 3 is the attention output
split into its two halves, each added to the stream it came from (residual, so a zero
attention output recovers the unfused branches); no feed-forward sublayer (mirrors the
local variant's single gate per depth). The residue readout is the mean of the two streams
after the last exchange, (h~_L + s_L) / 2, since attention outputs alone may drift away from a
residue's own features.

One-way variants (``model.fusion_direction``): seq_to_struct drops s_l <- s_l + z^s_l (the
sequence stream is the plain stream of cached ESM layers; the structure tokens still attend to
both halves), struct_to_seq drops h~_l = h_l + z^h_l (the structure stream is the plain encoder).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from bihmf.models.fusion.base import ATTENTION_HEADS, BOTH_DIRECTIONS, EncoderFactory, FusionContext, JointSelfAttention
from bihmf.models.fusion.hierarchical import Exchange, HierarchicalFusion


class BiHMFGlobal(HierarchicalFusion):
    is_bihmf = True

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext, direction: str = BOTH_DIRECTIONS):
        super().__init__(encoder_factory, context, direction)
        self.attention = nn.ModuleList([JointSelfAttention(self.width, ATTENTION_HEADS) for _ in self.depths])

    def exchange(self, depth: int, graph: Any, seq: Tensor, struct: Tensor, carried: Tensor) -> Exchange:
        fused_seq, fused_struct = self.attention[depth](seq, struct, graph.batch, graph.num_graphs)
        return Exchange(fused_struct, fused_seq, carried)
