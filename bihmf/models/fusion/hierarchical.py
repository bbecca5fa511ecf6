"""The shared base of the hierarchical fusions (``bihmf_local``, ``bihmf_global``, ``token``).

All three pair GNN depth l with cached ESM layer k_l (docs/paper.md choices 1-3) and run the
same loop; they differ only in how the two streams exchange at each depth:

    s_l = LN(P_l(e_{k_l}) + s_{l-1})        sequence stream (``SequenceStream``), s_0 = 0
    h_l = GNN_l(h~_{l-1})                   structure stream, h~_0 = encoder(one-hot residue types)
    (r^h, r^s, c_l) = exchange_l(s_l, h_l, c_{l-1})   what each stream receives; c: carried state
    h~_l = h_l + r^h ;  s_l <- s_l + r^s    each switched off by ``model.fusion_direction``

and the residue readout is built from s_L, h~_L and c_L.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from bihmf.models.fusion.base import (
    BOTH_DIRECTIONS,
    NUM_RESIDUE_TYPES,
    BidirectionalFusion,
    EncoderFactory,
    FusionContext,
    StreamStates,
    residue_one_hot,
)
from bihmf.models.fusion.layers import LayerChoice


class SequenceStream(nn.Module):
    """The light sequence stream of the hierarchical fusions (docs/paper.md choices 1-3).

    At GNN depth l it reads its own cached ESM layer k_l: s_l = LN(P_l(e_{k_l}) + s_{l-1}),
    with s_0 = 0. The layers k_l are the run's ``LayerChoice``, paired with the encoder's depths.
    """

    def __init__(self, context: FusionContext, num_gnn_layers: int, width: int):
        super().__init__()
        if context.layers.num_gnn_layers != num_gnn_layers:
            raise ValueError(f"the layer choice pairs {context.layers.num_gnn_layers} GNN depths, "
                             f"the encoder has {num_gnn_layers}")
        layers = context.layers.paired()
        self.slots = [context.slot(layer) for layer in layers]
        self.project = nn.ModuleList([nn.Linear(context.esm_dim, width) for _ in layers])
        self.norm = nn.ModuleList([nn.LayerNorm(width) for _ in layers])

    def step(self, depth: int, graph: Any, previous: Tensor) -> Tensor:
        return self.norm[depth](self.project[depth](graph.esm[:, self.slots[depth]]) + previous)


class Exchange(NamedTuple):
    """One depth's exchange: what each stream receives, and the state carried to the next depth.

    The fields are in the order each fusion computes them (structure first): that order fixes
    the order in which gradients accumulate, so swapping it changes results in the last bits."""

    to_struct: Tensor
    to_seq: Tensor
    carried: Tensor


class HierarchicalFusion(BidirectionalFusion):
    """The loop over paired depths; a subclass adds its per-depth modules after this
    constructor (so parameters are created, and seeded, in the same order as before the base
    existed) and implements ``exchange``; ``start`` and ``readout`` have defaults."""

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext, direction: str = BOTH_DIRECTIONS):
        super().__init__(direction)
        self.encoder = encoder_factory(NUM_RESIDUE_TYPES)
        self.width = self.encoder.width
        self.stream = SequenceStream(context, self.encoder.num_layers, self.width)

    @property
    def depths(self) -> range:
        return range(len(self.stream.slots))

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return choice.paired()

    def start(self, graph: Any, struct: Tensor) -> Tensor:
        """The carried state before the first depth (default: the structure stream's embedding)."""
        return struct

    def exchange(self, depth: int, graph: Any, seq: Tensor, struct: Tensor, carried: Tensor) -> Exchange:
        raise NotImplementedError

    def readout(self, seq: Tensor, struct: Tensor, carried: Tensor) -> Tensor:
        """Residue states the head reads (default: the mean of the two streams)."""
        return (struct + seq) / 2

    def streams(self, graph: Any) -> StreamStates:
        state = self.encoder.prepare(graph, residue_one_hot(graph))
        seq = torch.zeros_like(state.s)
        carried = self.start(graph, state.s)
        for depth in self.depths:
            seq = self.stream.step(depth, graph, seq)
            state = self.encoder.layer(depth, state)
            received = self.exchange(depth, graph, seq, state.s, carried)
            carried = received.carried
            state = state.with_scalar(self.to_struct(state.s, received.to_struct))
            seq = self.to_seq(seq, received.to_seq)
        return StreamStates(seq, state.s, self.readout(seq, state.s, carried))
