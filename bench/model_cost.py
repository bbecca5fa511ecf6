"""Parameter count and forward time of every encoder x fusion in the registries.

Model sizes are the config schema's defaults (``model.hidden_dim`` etc.); the ESM width and
depth are esm2_t33_650M's (1280, 33), the model the full benchmark caches, so the counts
include the fusions' projections of real-size embeddings. The batch is the first
``--proteins`` chains of the PPBS demo (real structures) with seeded random embeddings in
every cached layer slot; weights are seeded, so every row sees the same batch and a fixed
initialisation. Timed: ``model(batch)`` under ``torch.no_grad`` in eval mode, including the
encoder's graph construction, after one untimed warm-up call.

Run: ``.venv/bin/python -m bench.model_cost`` (about 30 s on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import numpy as np
import torch

from bench.common import (
    ESM_SHAPES,
    Target,
    base_parser,
    demo_records,
    machine,
    ordered,
    parse,
    save,
    schema_defaults,
    table,
    timed,
)
from bench.steps import batch_of
from bihmf.models.encoders import ENCODERS, StructureEncoder
from bihmf.models.fusion import FUSIONS, FusionContext, LayerChoice, cached_layers
from bihmf.models.model import build_model, run_combinations

NAME = "model_cost"
TASK = "residue_binary"


def forward_ms(model: torch.nn.Module, batch: Any, repeats: int, device: torch.device) -> list[float]:
    with torch.no_grad():
        model(batch)
        return [1000 * timed(lambda: model(batch), device) for _ in range(repeats)]


def measure(pairs: list[tuple[str, str]], proteins: int, repeats: int, device: torch.device) -> dict[str, Any]:
    model_cfg = schema_defaults()["model"]
    depth, width = ESM_SHAPES["t33"]["num_layers"], ESM_SHAPES["t33"]["embed_dim"]
    layers = tuple(cached_layers(list(FUSIONS), LayerChoice.of(model_cfg, depth)))
    context = FusionContext.of(model_cfg, width, depth, layers)
    records = demo_records("ppbs_demo")[:proteins]
    rng = np.random.default_rng(0)
    batch = batch_of(records, [rng.standard_normal((len(r.sequence), len(layers), width), dtype=np.float32) for r in records], device)
    rows = {}
    for encoder, fusion in pairs:
        torch.manual_seed(0)
        model = build_model(encoder, fusion, TASK, model_cfg, context).to(device).eval()
        times = forward_ms(model, batch, repeats, device)
        rows[f"{encoder}/{fusion}"] = {
            "encoder": encoder, "fusion": fusion,
            "parameters": sum(p.numel() for p in model.parameters()),
            "encoder_parameters": sum(p.numel() for m in model.modules() if isinstance(m, StructureEncoder) for p in m.parameters()),
            "forward_ms_mean": statistics.mean(times), "forward_ms_sd": statistics.stdev(times) if len(times) > 1 else 0.0,
        }
    return {"proteins": batch.num_graphs, "residues": batch.num_nodes, "cached_layers": list(layers), "models": rows}


def render(result: dict[str, Any]) -> str:
    r = result["results"]
    order = [f"{e}/{f}" for e, f in run_combinations(list(ENCODERS), list(FUSIONS))]
    rows = [
        [m["encoder"], m["fusion"], f"{m['parameters']:,}", f"{m['encoder_parameters']:,}", f"{m['forward_ms_mean']:.1f} ± {m['forward_ms_sd']:.1f}"]
        for _, m in ordered(r["models"], order)
    ]
    return "\n\n".join([
        f"Batch: {r['proteins']} PPBS demo chains, {r['residues']:,} residues; ESM slots {r['cached_layers']}.",
        table(["encoder", "fusion", "parameters", "encoder parameters", "forward ms (mean ± sd)"], rows),
    ])


def targets(result: dict[str, Any]) -> list[Target]:
    """Context for the other sections; the issue sets no target here."""
    return []


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--proteins", type=int, default=8, help="demo chains in the batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per model")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--fusions", default=",".join(FUSIONS))
    args = parse(parser, argv)
    if args.quick:
        args.proteins, args.repeats, args.encoders, args.fusions = 2, 1, "gvp", "seq_only,bihmf_global"
    device = torch.device(args.device)
    started = machine(device)
    results = measure(run_combinations(args.encoders.split(","), args.fusions.split(",")), args.proteins, args.repeats, device)
    setup = {"proteins": args.proteins, "repeats": args.repeats, "model": schema_defaults()["model"], "esm": "t33", "task": TASK}
    print(save(args.out, NAME, argv, started, setup, results))


if __name__ == "__main__":
    main(sys.argv[1:])
