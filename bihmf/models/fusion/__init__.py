"""Fusion registry: name -> class taking (encoder_factory, FusionContext); which ESM layers a fusion reads."""

from __future__ import annotations

from collections.abc import Sequence

from bihmf.models.fusion.base import Fusion, FusionContext
from bihmf.models.fusion.bihmf_global import BiHMFGlobal
from bihmf.models.fusion.bihmf_local import BiHMFLocal
from bihmf.models.fusion.cross import Cross
from bihmf.models.fusion.layers import LayerChoice, paired_layers
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


def layers_read(fusion: str, choice: LayerChoice) -> list[int]:
    """The ESM layers the fusion reads under the run's choice (none for structure-only fusions)."""
    return FUSIONS[fusion].esm_layers(choice)


def cached_layers(fusions: Sequence[str], choice: LayerChoice) -> list[int]:
    """ESM layers a cache must hold: every layer the fusions read, plus the final one."""
    layers = {choice.esm_depth}
    for name in fusions:
        layers.update(layers_read(name, choice))
    return sorted(layers)


def loaded_layers(fusion: str, choice: LayerChoice, cache_layers: Sequence[int]) -> tuple[int, ...]:
    """The layers of a cache a job of the fusion loads: those it reads, in cache order."""
    read = set(layers_read(fusion, choice))
    return tuple(layer for layer in cache_layers if layer in read)


__all__ = [
    "FUSIONS", "Fusion", "FusionContext", "LayerChoice", "bihmf_fusions", "cached_layers", "layers_read", "loaded_layers",
    "paired_layers", "reference_fusion",
]
