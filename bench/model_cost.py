"""Parameter count and CPU forward time of every encoder x fusion in the registries.

Model sizes are the config schema's defaults (``model.hidden_dim`` etc.); the ESM width and
depth default to esm2_t33_650M's (1280, 33), the model the benchmark caches, so the counts
include the fusions' projections of real-size embeddings. The batch is the first
``--proteins`` chains of the PPBS demo archive (real structures) with random embeddings in
every cached layer slot; weights are seeded, so every row sees the same batch and a fixed
initialisation. Timed: ``model(batch)`` under ``torch.no_grad`` in eval mode, including the
encoder's graph construction, after one untimed warm-up call.

Run: ``.venv/bin/python bench/model_cost.py`` (about 30 s on 2 cores); prints a
Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from bihmf.config import load_config, validate_config
from bihmf.data.ppbs import parse
from bihmf.models.encoders import ENCODERS, StructureEncoder
from bihmf.models.fusion import FUSIONS, FusionContext, cached_layers
from bihmf.models.model import build_model
from bihmf.training import collate, protein_graph

ROOT = Path(__file__).resolve().parents[1]


def default_model_cfg() -> dict:
    """The schema's model defaults, as a run without a ``model:`` section would get them."""
    minimal = {"datasets": {"x": {"kind": "ppbs", "task": "residue_binary", "download": {}, "label_files": [{"file": "f", "split": "train"}]}}}
    return validate_config(minimal)["model"]


def demo_batch(proteins: int, esm_dim: int, slots: int) -> Batch:
    """The first ``proteins`` chains of the PPBS demo with seeded random embeddings."""
    spec = load_config(ROOT / "config" / "demo.yaml")["datasets"]["ppbs_demo"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as raw:
        with tarfile.open(ROOT / "demo" / "ppbs_demo.tar.gz") as tar:
            tar.extractall(raw, filter="data")
        records = parse(Path(raw), spec)[0][:proteins]
    graphs = [protein_graph(r, rng.standard_normal((len(r.sequence), slots, esm_dim)).astype(np.float32)) for r in records]
    return collate(graphs, torch.device("cpu"))


def forward_ms(model: torch.nn.Module, batch: Batch, repeats: int) -> list[float]:
    with torch.no_grad():
        model(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proteins", type=int, default=8, help="demo chains in the batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per model")
    parser.add_argument("--esm-dim", type=int, default=1280)
    parser.add_argument("--esm-depth", type=int, default=33)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the table reports a standard deviation)")
    torch.set_num_threads(args.threads)

    model_cfg = default_model_cfg()
    layers = tuple(cached_layers(list(FUSIONS), model_cfg["num_layers"], args.esm_depth, model_cfg["esm_layers"]))
    context = FusionContext(esm_dim=args.esm_dim, cache_layers=layers, esm_depth=args.esm_depth, explicit_layers=model_cfg["esm_layers"])
    batch = demo_batch(args.proteins, args.esm_dim, len(layers))

    print(
        f"CPU ({platform.processor() or platform.machine()}), {args.threads} torch threads, torch {torch.__version__}; "
        f"batch: {batch.num_graphs} PPBS demo chains, {batch.num_nodes} residues; "
        f"hidden_dim={model_cfg['hidden_dim']}, vector_dim={model_cfg['vector_dim']}, num_layers={model_cfg['num_layers']}, "
        f"knn={model_cfg['knn']}; ESM {args.esm_dim} x {args.esm_depth} layers (cached {list(layers)}); "
        f"forward = mean ± sd of {args.repeats} calls after one warm-up, residue_binary head included\n"
    )
    print("| encoder | fusion | parameters | encoder parameters | forward ms |")
    print("|---|---|---:|---:|---:|")
    for encoder in ENCODERS:
        for fusion in FUSIONS:
            torch.manual_seed(0)
            model = build_model(encoder, fusion, "residue_binary", model_cfg, context).eval()
            params = sum(p.numel() for p in model.parameters())
            encoder_params = sum(p.numel() for m in model.modules() if isinstance(m, StructureEncoder) for p in m.parameters())
            times = forward_ms(model, batch, args.repeats)
            print(f"| {encoder} | {fusion} | {params:,} | {encoder_params:,} | {statistics.mean(times):.1f} ± {statistics.stdev(times):.1f} |")


if __name__ == "__main__":
    main()
