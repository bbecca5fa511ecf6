"""Fusion registry: name -> class taking (encoder_factory, FusionContext)."""

from bihmf.models.fusion.base import Fusion, FusionContext, paired_layers
from bihmf.models.fusion.bihmf_local import BiHMFLocal
from bihmf.models.fusion.serial import Serial
from bihmf.models.fusion.struct_only import StructOnly

FUSIONS: dict[str, type[Fusion]] = {
    "struct_only": StructOnly,
    "serial": Serial,
    "bihmf_local": BiHMFLocal,
}


def cached_layers(fusions: list[str], num_gnn_layers: int, esm_depth: int, explicit: list[int] | None) -> list[int]:
    """ESM layers the embed stage must cache: every layer the configured fusions read, plus the final one."""
    layers = {esm_depth}
    for name in fusions:
        layers.update(FUSIONS[name].esm_layers(num_gnn_layers, esm_depth, explicit))
    return sorted(layers)


__all__ = ["FUSIONS", "Fusion", "FusionContext", "cached_layers", "paired_layers"]
