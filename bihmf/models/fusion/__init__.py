"""Fusion registry: name -> class taking (encoder_factory, FusionContext); which ESM layers a run reads."""

from __future__ import annotations

from typing import Any

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


def layer_choice(model: dict[str, Any], esm_depth: int) -> list[int] | None:
    """The explicit layer list the fusions' ``esm_layers`` read: model.esm_layers, or a pairing
    other than the default spelled out (None = evenly, their own rule)."""
    if model["esm_layers"] is not None or model["layer_pairing"] == "evenly":
        return model["esm_layers"]
    return paired_layers(model["num_layers"], esm_depth, None, model["layer_pairing"])


def run_esm_layers(model: dict[str, Any], fusion: str, esm_depth: int) -> list[int]:
    """ESM layers one run needs cached: those its fusion reads at its depth and pairing, and the last."""
    return cached_layers([fusion], model["num_layers"], esm_depth, layer_choice(model, esm_depth))


__all__ = ["FUSIONS", "Fusion", "FusionContext", "bihmf_fusions", "cached_layers", "layer_choice", "paired_layers", "reference_fusion", "run_esm_layers"]
