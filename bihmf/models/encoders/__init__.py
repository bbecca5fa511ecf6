"""Structure encoder registry: name -> class taking
(input_dim, width, vector_dim, num_layers, knn, dropout)."""

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.encoders.egnn import EGNNEncoder
from bihmf.models.encoders.gearnet import GearNetEncoder
from bihmf.models.encoders.gearnet_edge import GearNetEdgeEncoder
from bihmf.models.encoders.gvp import GVPEncoder
from bihmf.models.encoders.pronet import ProNetEncoder
from bihmf.models.encoders.pronet_backbone import ProNetBackboneEncoder

ENCODERS: dict[str, type[StructureEncoder]] = {
    "gvp": GVPEncoder,
    "egnn": EGNNEncoder,
    "gearnet": GearNetEncoder,
    "gearnet_edge": GearNetEdgeEncoder,
    "pronet": ProNetEncoder,
    "pronet_backbone": ProNetBackboneEncoder,
}

__all__ = ["ENCODERS", "EncoderState", "StructureEncoder"]
