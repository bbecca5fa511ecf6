"""Structure-token fusion in the style of FusionProt: one learnable token per protein.

At every GNN depth l, with b(i) the protein of residue i and mean_p the mean over the
residues of protein p:

    s_l = LN(P_l(e_{k_l}) + s_{l-1})                          sequence stream, ESM layer k_l
    h_l = GNN_l(h~_{l-1})                                     structure stream
    t_l = LN(t_{l-1} + MLP_l([t_{l-1} ; mean_p(h_l) ; mean_p(s_l)]))   token reads both streams
    h~_l = h_l + W^h_l t_{l,b(i)} ;  s_l <- s_l + W^s_l t_{l,b(i)}    token writes to both

s_0 = 0, h~_0 the encoder's embedding of one-hot residue types, t_0 a learned vector shared by
all proteins. The residue readout is (h~_L + s_L) / 2, as in ``bihmf_global``.

One-way variants (``model.fusion_direction``): the token still reads both streams, but
seq_to_struct drops its write to the sequence stream (s_l <- s_l + W^s_l t) and struct_to_seq its
write to the structure stream (h~_l = h_l + W^h_l t), so the switched-off stream runs alone.

Equivalence: the token is a virtual node joined by an edge to every residue of its protein
(the structure side) plus one extra token of the sequence stream. A message-passing layer
over those edges with mean aggregation updates the virtual node from the mean of the residue
states and sends each residue a linear message of the token's state; our encoders cannot add
nodes, so that exchange runs between encoder layers, on the scalar channels (the token has no
vector channels, which keeps the model rotation invariant). The difference from a true graph
node: its message joins residue i's state after GNN layer l rather than inside that layer's
neighbour aggregation. Choices: mean pooling for both reads (size independent, like the
GVP's mean aggregation), one token update per depth, separate write maps per stream.

Differences from FusionProt (docs/paper.md): FusionProt fine-tunes the pLM, its token is a real
pLM token that attends to the sequence through the pLM's own self-attention, and one GNN
layer runs every 5 pLM layers, the token's state passing pLM -> GNN -> pLM through linear
maps. Here the pLM is frozen and cached (choice 1), the sequence side is our light stream
(read by a mean), the exchange happens at every paired depth (choice 2), and the token keeps
one state of its own that both streams read from and write to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from bihmf.models.fusion.base import BOTH_DIRECTIONS, EncoderFactory, FusionContext
from bihmf.models.fusion.hierarchical import Exchange, HierarchicalFusion


class StructureToken(HierarchicalFusion):
    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext, direction: str = BOTH_DIRECTIONS):
        super().__init__(encoder_factory, context, direction)
        width, depths = self.width, self.depths
        self.token_init = nn.Parameter(torch.randn(width) * 0.02)
        self.token_update = nn.ModuleList(
            [nn.Sequential(nn.Linear(3 * width, width), nn.ReLU(), nn.Linear(width, width)) for _ in depths]
        )
        self.token_norm = nn.ModuleList([nn.LayerNorm(width) for _ in depths])
        self.write_struct = nn.ModuleList([nn.Linear(width, width) for _ in depths])
        self.write_seq = nn.ModuleList([nn.Linear(width, width) for _ in depths])

    def start(self, graph: Any, struct: Tensor) -> Tensor:
        return self.token_init.expand(graph.num_graphs, -1)  # t_0, one per protein

    def exchange(self, depth: int, graph: Any, seq: Tensor, struct: Tensor, carried: Tensor) -> Exchange:
        batch, proteins = graph.batch, graph.num_graphs
        pooled_struct = scatter(struct, batch, dim=0, dim_size=proteins, reduce="mean")
        pooled_seq = scatter(seq, batch, dim=0, dim_size=proteins, reduce="mean")
        update = self.token_update[depth](torch.cat([carried, pooled_struct, pooled_seq], dim=-1))
        token = self.token_norm[depth](carried + update)
        return Exchange(self.write_struct[depth](token)[batch], self.write_seq[depth](token)[batch], token)
