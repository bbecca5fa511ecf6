"""Sequence-only control: the final cached ESM layer through a residue MLP, no structure.

    out_i = MLP(LN(e_{D,i}))          e_D: final ESM layer (docs/paper.md choice 5)

No structure encoder is kept or called, so the output does not depend on the coordinates
(nor on ligand atoms). The encoder factory is called once, only to learn the configured
model width (the pipeline passes a width-only factory, encoder ``none``), so the head has the
same width as every other fusion.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bihmf.models.fusion.base import NUM_RESIDUE_TYPES, EncoderFactory, Fusion, FusionContext, esm_mlp
from bihmf.models.fusion.layers import LayerChoice


class SeqOnly(Fusion):
    uses_structure = False

    def __init__(self, encoder_factory: EncoderFactory, context: FusionContext):
        super().__init__()
        self.width = encoder_factory(NUM_RESIDUE_TYPES).width
        self.slot = context.slot(context.layers.esm_depth)
        self.mlp = esm_mlp(context.esm_dim, self.width)

    @staticmethod
    def esm_layers(choice: LayerChoice) -> list[int]:
        return [choice.esm_depth]

    def forward(self, graph: Any) -> Tensor:
        return self.mlp(graph.esm[:, self.slot])
