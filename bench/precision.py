"""How far the reduced ``esm.precision`` settings (float16, bfloat16 autocast) move the cached
embeddings from float32, the arithmetic of fair-esm's ``extract.py``.

For each random-init ESM-2 of a released shape, every chain of a set with real ScanNet chain
lengths is embedded by the embed stage's forward (``bihmf.esm.embed_sequences``: windows,
batching, float16 storage) once per precision. The reference is the float32 run as the cache
stores it (float16), so each figure is what choosing the precision changes in the cache:
relative error (Frobenius norm of the difference over the reference's, per layer), cosine
similarity of each residue's vector with the reference's (mean, 1st percentile, minimum), and,
in the units of BENCHMARKS.md section 1, the largest difference in float16 steps at the
reference value and the share of values more than one step away. Seconds per precision are
one run each after a warm-up, for orientation only (CPU autocast is slower than float32).

Run: ``.venv/bin/python -m bench.precision`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import ESM_SHAPES, Target, base_parser, machine, parse, random_sequence, save, schema_defaults, sync, table
from bench.embed_vs_extract import float16_tolerance, set_lengths
from bihmf.esm import embed_sequences
from bihmf.esm_cache import PRECISIONS, EmbedSettings
from bihmf.esm_checkpoint import load_esm, write_random_checkpoint
from bihmf.models.fusion import paired_layers

NAME = "precision"
REDUCED = [p for p in PRECISIONS if p != "float32"]


def deviation(reduced: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far one layer's rows [N, D] at a reduced precision lie from the float32 rows."""
    a, b = reduced.astype(np.float64), reference.astype(np.float64)
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    steps = np.abs(a - b) / float16_tolerance(reference.astype(np.float32))
    return {
        "relative_error": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
        "cosine_mean": float(cosine.mean()),
        "cosine_p1": float(np.percentile(cosine, 1)),
        "cosine_min": float(cosine.min()),
        "max_float16_steps": float(steps.max()),
        "share_beyond_one_step": float((steps > 1).mean()),
    }


def run_size(size: str, chains: dict[str, str], folder: Path, device: torch.device) -> dict[str, Any]:
    """Every precision on one model shape: seconds and, per cached layer, the deviation from float32."""
    shape = ESM_SHAPES[size]
    checkpoint = folder / f"esm2_{size}_bench_random.pt"
    write_random_checkpoint(checkpoint, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], seed=0)
    model, alphabet = load_esm(checkpoint)
    defaults = schema_defaults()
    layers = paired_layers(defaults["model"]["num_layers"], shape["num_layers"])  # the default cache's layers
    esm = defaults["esm"]
    out, seconds = {}, {}
    for precision in PRECISIONS:
        settings = EmbedSettings.from_config({**esm, "precision": precision})
        embed_sequences(model, alphabet, {"warm": random_sequence(random.Random(0), 64)}, layers, settings, device=device)
        sync(device)
        started = time.perf_counter()
        out[precision] = embed_sequences(model, alphabet, chains, layers, settings, device=device)
        sync(device)
        seconds[precision] = time.perf_counter() - started
    reference = np.concatenate([out["float32"][key] for key in chains])
    per_layer = {
        precision: {
            str(layer): deviation(np.concatenate([out[precision][key] for key in chains])[:, slot], reference[:, slot])
            for slot, layer in enumerate(layers)
        }
        for precision in REDUCED
    }
    return {"layers": layers, "seconds": seconds, "deviation": per_layer}


def _by_size(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Model shapes smallest first (result files store keys sorted as text)."""
    return sorted(result["results"].items(), key=lambda item: list(ESM_SHAPES).index(item[0]))


def render(result: dict[str, Any]) -> str:
    s = result["setup"]
    rows = []
    for size, r in _by_size(result):
        for precision in REDUCED:
            for layer in r["layers"]:
                d = r["deviation"][precision][str(layer)]
                rows.append([
                    f"{size} layer {layer}", precision, f"{d['relative_error']:.1e}", f"{1 - d['cosine_mean']:.1e}",
                    f"{1 - d['cosine_p1']:.1e}", f"{1 - d['cosine_min']:.1e}", f"{d['max_float16_steps']:.0f}",
                    f"{100 * d['share_beyond_one_step']:.1f} %",
                ])
    speed = "; ".join(
        f"{size}: " + ", ".join(f"{p} {s['residues'] / r['seconds'][p]:,.0f}" for p in PRECISIONS)
        for size, r in _by_size(result)
    )
    cut = f", cut to {s['max_length']}" if s.get("max_length") else ""
    intro = (
        f"{s['chains']} chains, {s['residues']:,} residues (lengths {s['lengths'][0]}-{s['lengths'][1]}, median "
        f"{s['median_length']:g}, drawn from the real ScanNet chains{cut}), windows {s['window']} / overlap {s['overlap']}; "
        "reference: the float32 run as the cache stores it. Cosine is per residue and layer, given as 1 - cosine "
        "(0 = the same direction)."
    )
    headers = ["model, layer", "precision", "relative error", "1 - cos: mean", "99th pct", "max",
               "max diff (float16 steps)", "values > 1 step"]
    return "\n\n".join([intro, table(headers, rows), f"Residues/s, one run each (orientation only): {speed}."])


def targets(result: dict[str, Any]) -> list[Target]:
    """The issue asks for the deviation, without a target: the last layer of the largest model."""
    size, r = _by_size(result)[-1]
    last = str(r["layers"][-1])
    measured = "; ".join(
        f"{p} relative error {r['deviation'][p][last]['relative_error']:.1e}, worst residue 1 - cosine {1 - r['deviation'][p][last]['cosine_min']:.1e}"
        for p in REDUCED
    )
    return [Target(
        f"ESM precision: deviation from float32 ({size}, layer {last})", "none set", measured, None,
        "the same figures stand in docs/esm_cache.md beside the H200 float16 ones, so a user can choose knowingly",
    )]


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="t6,t12", help=f"released ESM-2 shapes, of {', '.join(ESM_SHAPES)}")
    parser.add_argument("--chains", type=int, default=16, help="chains, lengths drawn from the real ScanNet chains")
    parser.add_argument("--max-length", type=int, help="cut every chain to this many residues")
    args = parse(parser, argv)
    if args.quick:
        args.sizes, args.chains, args.max_length = "t6", 2, 40
    device = torch.device(args.device)
    started = machine(device)
    rng = random.Random(1)
    sequences = [random_sequence(rng, min(n, args.max_length or n)) for n in set_lengths(rng, args.chains, "scannet")]
    chains = {f"c{i}": seq for i, seq in enumerate(sequences)}
    lengths = [len(seq) for seq in sequences]
    results = {}
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[size] = run_size(size, chains, Path(tmp), device)
    esm = schema_defaults()["esm"]
    setup = {
        "chains": len(chains), "residues": sum(lengths), "lengths": [min(lengths), max(lengths)],
        "median_length": statistics.median(lengths), "max_length": args.max_length, "window": esm["window"], "overlap": esm["window_overlap"],
    }
    print(save(args.out, NAME, argv, started, setup, results))


if __name__ == "__main__":
    main(sys.argv[1:])
