"""Fusion registry: name -> class taking (encoder_factory, FusionContext)."""

from bihmf.models.fusion.base import Fusion, FusionContext, paired_layers
from bihmf.models.fusion.bihmf_global import BiHMFGlobal
from bihmf.models.fusion.bihmf_local import BiHMFLocal
from bihmf.models.fusion.cross import Cross
from bihmf.models.fusion.parallel import Parallel
from bihmf.models.fusion.seq_only import SeqOnly
from bihmf.models.fusion.serial import Serial
from bihmf.models.fusion.struct_only import StructOnly
from bihmf.models.fusion.structure_token import StructureToken

FUSIONS: dict[str, type[Fusion]] = {
    "struct_only": StructOnly,
    "seq_only": SeqOnly,
    "serial": Serial,
    "parallel": Parallel,
    "cross": Cross,
    "bihmf_local": BiHMFLocal,
    "bihmf_global": BiHMFGlobal,
    "token": StructureToken,
}


def bihmf_fusions() -> tuple[str, ...]:
    """The Bi-HMF fusions, in registry order."""
    return tuple(name for name, cls in FUSIONS.items() if cls.is_bihmf)


def reference_fusion() -> str:
    """The one fusion the others' gains are measured against."""
    (name,) = (name for name, cls in FUSIONS.items() if cls.is_reference)
    return name


def cached_layers(fusions: list[str], num_gnn_layers: int, esm_depth: int, explicit: list[int] | None) -> list[int]:
    """ESM layers the embed stage must cache: every layer the configured fusions read, plus the final one."""
    layers = {esm_depth}
    for name in fusions:
        layers.update(FUSIONS[name].esm_layers(num_gnn_layers, esm_depth, explicit))
    return sorted(layers)


__all__ = ["FUSIONS", "Fusion", "FusionContext", "bihmf_fusions", "cached_layers", "paired_layers", "reference_fusion"]
