"""Structure encoder registry: name -> class taking
(input_dim, width, vector_dim, num_layers, knn, dropout)."""

from bihmf.models.encoders.base import EncoderState, StructureEncoder
from bihmf.models.encoders.gvp import GVPEncoder

ENCODERS: dict[str, type[StructureEncoder]] = {
    "gvp": GVPEncoder,
}

__all__ = ["ENCODERS", "EncoderState", "StructureEncoder"]
