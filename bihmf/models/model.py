"""A benchmark model = fusion strategy (which owns its structure encoder) + task head."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

from torch import Tensor, nn

from bihmf.models.encoders import ENCODERS
from bihmf.models.fusion import FUSIONS, Fusion, FusionContext, layers_read
from bihmf.models.fusion.base import BOTH_DIRECTIONS, EncoderFactory
from bihmf.tasks import TASKS
from bihmf.tasks.heads import DEFAULT_READOUT, READOUT_OPTION


NO_ENCODER = "none"


def run_combinations(encoders: list[str], fusions: list[str]) -> list[tuple[str, str]]:
    """(encoder, fusion) pairs the benchmark trains: a fusion without a structure encoder
    (seq_only) is one run under encoder ``none``, not a copy per encoder."""
    pairs: list[tuple[str, str]] = []
    for fusion in fusions:
        if fusion in FUSIONS and not FUSIONS[fusion].uses_structure:
            pairs.append((NO_ENCODER, fusion))
        else:
            pairs.extend((encoder, fusion) for encoder in encoders)
    return pairs


def _width_only(input_dim: int, width: int, **_: Any) -> SimpleNamespace:
    """Encoder factory for encoder ``none``: answers the model width, builds nothing."""
    return SimpleNamespace(width=width)


class ProteinModel(nn.Module):
    def __init__(self, fusion: nn.Module, head: nn.Module):
        super().__init__()
        self.fusion = fusion
        self.head = head

    def forward(self, graph: Any) -> Tensor:
        return self.head(self.fusion(graph), graph)


def build_model(
    encoder: str,
    fusion: str,
    task: str,
    model_cfg: dict[str, Any],
    context: FusionContext,
    task_options: dict[str, Any] | None = None,
) -> ProteinModel:
    """Assemble registry entries into one model; unknown names fail with the known ones listed."""
    encoders = {**ENCODERS, NO_ENCODER: _width_only}
    for kind, name, registry in (("encoder", encoder, encoders), ("fusion", fusion, FUSIONS), ("task", task, TASKS)):
        if name not in registry:
            raise KeyError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    if encoder == NO_ENCODER and FUSIONS[fusion].uses_structure:
        raise ValueError(f"fusion {fusion!r} needs a structure encoder; {NO_ENCODER!r} is only for {_structure_free()}")
    encoder_factory = partial(
        encoders[encoder],
        width=model_cfg["hidden_dim"],
        vector_dim=model_cfg["vector_dim"],
        num_layers=model_cfg["num_layers"],
        knn=model_cfg["knn"],
        dropout=model_cfg["dropout"],
    )
    # a run saved before model.fusion_direction existed was two-way
    fusion_module = _build_fusion(fusion, encoder_factory, context, model_cfg.get("fusion_direction", BOTH_DIRECTIONS))
    readout = model_cfg.get("readout", DEFAULT_READOUT)  # a run saved before model.readout existed used the default
    if readout != DEFAULT_READOUT and TASKS[task].PER_RESIDUE:
        raise ValueError(f"model.readout {readout!r} pools proteins, but task {task!r} predicts per residue")
    options = {**(task_options or {}), READOUT_OPTION: readout}
    return ProteinModel(fusion_module, TASKS[task].Head(fusion_module.width, model_cfg["dropout"], options))


def _build_fusion(name: str, encoder_factory: EncoderFactory, context: FusionContext, direction: str) -> Fusion:
    """A fusion without two streams that update each other has nothing to switch off: a one-way
    run of it would train the two-way model under a one-way name, so it refuses."""
    if FUSIONS[name].directional:
        return FUSIONS[name](encoder_factory, context, direction)
    if direction != BOTH_DIRECTIONS:
        raise ValueError(
            f"fusion {name!r} is not bidirectional, so model.fusion_direction must be {BOTH_DIRECTIONS!r}, "
            f"not {direction!r}; the directional fusions are {_directional()}"
        )
    return FUSIONS[name](encoder_factory, context)


def _directional() -> list[str]:
    return sorted(name for name, cls in FUSIONS.items() if cls.directional)


def _structure_free() -> list[str]:
    return sorted(name for name, cls in FUSIONS.items() if not cls.uses_structure)


def reads_esm(fusion: str, context: FusionContext) -> bool:
    """Whether the fusion reads any cached ESM layer (structure-only runs skip loading the cache)."""
    return bool(layers_read(fusion, context.layers))
