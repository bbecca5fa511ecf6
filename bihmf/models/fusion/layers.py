"""Which cached ESM layers a fusion reads: one value, ``LayerChoice``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LAYER_PAIRINGS = ("evenly", "last")  # model.layer_pairing (the schema's enum)


def paired_layers(num_gnn_layers: int, esm_depth: int, explicit: Sequence[int] | None = None,
                  pairing: str = "evenly") -> list[int]:
    """ESM layer k_l read at GNN depth l (docs/paper.md choice 2). An explicit list wins; else
    ``evenly`` spreads the L depths over the D ESM layers, round(l * D / L), and ``last`` reads
    the last L layers D-L+1..D (the ablation of whether early ESM layers help at all)."""
    if explicit is not None:
        if len(explicit) != num_gnn_layers or max(explicit) > esm_depth:
            raise ValueError(
                f"model.esm_layers={list(explicit)} must list {num_gnn_layers} layers, each <= the ESM depth {esm_depth}"
            )
        return list(explicit)
    if pairing == "evenly":
        return [int(l * esm_depth / num_gnn_layers + 0.5) for l in range(1, num_gnn_layers + 1)]
    if pairing == "last":
        if num_gnn_layers > esm_depth:
            raise ValueError(f"model.layer_pairing=last: {num_gnn_layers} GNN layers need at least as many ESM layers, "
                             f"the ESM has {esm_depth}")
        return list(range(esm_depth - num_gnn_layers + 1, esm_depth + 1))
    raise ValueError(f"model.layer_pairing={pairing!r}: expected one of {list(LAYER_PAIRINGS)}")


@dataclass(frozen=True)
class LayerChoice:
    """The ESM layers a run's fusions may read: a model section's answer at one ESM depth.

    Why one value: which layers a fusion reads depends on four settings (the GNN depth
    ``model.num_layers``, the ESM depth, ``model.esm_layers`` and ``model.layer_pairing``) and on
    the fusion's own rule (``Fusion.esm_layers``: the paired k_1..k_L, the last layer, or none).
    The embed plan (what a cache must hold), training (what a job loads), the fusion (which
    slot it reads at each depth), predict, plan, the cost report and bench all need the same
    answer; when each passed its own subset of the settings to its own helper they could, and
    did, disagree (the cost report ignored the pairing). Built by ``of`` from the model section
    and handed to the fusion inside its ``FusionContext``, it is the only thing they ask.
    """

    num_gnn_layers: int
    esm_depth: int
    explicit: tuple[int, ...] | None = None  # model.esm_layers
    pairing: str = "evenly"  # model.layer_pairing, used where explicit is None

    @classmethod
    def of(cls, model_cfg: Mapping[str, Any], esm_depth: int) -> LayerChoice:
        """The choice of a model section (validated config or a saved run's) at an ESM depth."""
        explicit = model_cfg["esm_layers"]
        # a run saved before model.layer_pairing existed paired evenly
        return cls(model_cfg["num_layers"], esm_depth, None if explicit is None else tuple(explicit),
                   model_cfg.get("layer_pairing", "evenly"))

    def paired(self) -> list[int]:
        """ESM layer k_l read at each GNN depth l = 1..L (the hierarchical fusions)."""
        return paired_layers(self.num_gnn_layers, self.esm_depth, self.explicit, self.pairing)
