"""The embed stage against the way users extract ESM embeddings today, side by side in one run.

Baseline: fair-esm's ``scripts/extract.py`` with ``--include per_tok --repr_layers <layers>``.
The PyPI fair-esm 2.0.0 wheel does not ship that script, so :func:`extract_baseline`
re-expresses its documented behaviour with fair-esm's public API (not its code): sequences
sorted by length and packed greedily into batches of ``toks_per_batch=4096`` (FastaBatchedDataset
with one extra token per sequence), truncation at 1022 residues (BatchConverter), ESM2.forward
under ``torch.no_grad``, one ``torch.save``d float32 ``.pt`` per protein holding
``{"label", "representations": {layer: [L', D]}}``.

Ours: the workflow's embed jobs (``embed_shard`` for one shard, then ``write_index``) on a
protein table, with the same checkpoint, layers, token budget and torch thread count.

Each side of each set runs in its own fresh process (so its peak resident memory is its
own), after an untimed warm-up on two short sequences in that process; the clock covers model
loading, embedding and writing. Sides alternate over repeats and the fastest run counts.
Checkpoints are random-init ESM-2s of the released shapes (``--sizes``).

Set (a)'s lengths: evenly spread over 50..1500 (default), or ``--lengths scannet``: drawn with
replacement from the chain lengths of the real ScanNet label files kept in ``tests/data/scannet/``
(PPBS validation sets, BCE fold 2; 3,829 chains, median 216 residues, 15 beyond 1022), the
length spread of a real benchmark. The embed stage's fixed costs are paid once per shard job,
so a set of thousands is what a GPU comparison needs:
``--device cuda --sizes t33 --unique 2000 --lengths scannet --targets 0 --repeats 1``.

Run: ``.venv/bin/python -m bench.embed_vs_extract`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch
from esm.data import FastaBatchedDataset

from bench.common import (
    ESM_SHAPES,
    ROOT,
    Target,
    base_parser,
    emit,
    fastest,
    interleaved,
    machine,
    memory_mb,
    ordered,
    parse,
    peak_mb,
    random_sequence,
    ratio,
    reset_peak,
    run_child,
    save,
    schema_defaults,
    sequence_record,
    table,
    timed,
)
from bihmf.data.scannet import read_label_file
from bihmf.data.schema import ProteinRecord, write_proteins
from bihmf.io import record_sha256
from bihmf.esm import window_spans
from bihmf.esm_checkpoint import load_esm, write_random_checkpoint
from bihmf.esm_cache import EmbedSettings, EmbeddingCache, read_chains, shard_name, write_index
from bihmf.esm_writer import embed_shard

NAME = "embed_vs_extract"
TOKS_PER_BATCH = 4096  # extract.py's default --toks_per_batch; ours gets the same budget
TRUNCATION = 1022  # extract.py's --truncation_seq_length default
UNIQUE_LENGTHS = (50, 1500)
SCANNET_LABELS = ROOT / "tests" / "data" / "scannet"
DECOY_LENGTHS = (80, 400)


# ---------------------------------------------------------------- the two sides


def extract_baseline(checkpoint: Path, fasta: Path, out_dir: Path, layers: list[int], device: torch.device) -> None:
    """fair-esm ``extract.py <model> <fasta> <out> --include per_tok --repr_layers ...``."""
    model, alphabet = load_esm(checkpoint)
    model = model.to(device)
    dataset = FastaBatchedDataset.from_file(fasta)
    batches = dataset.get_batch_indices(TOKS_PER_BATCH, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(TRUNCATION), batch_sampler=batches)
    out_dir.mkdir(parents=True)
    with torch.no_grad():
        for labels, strs, tokens in loader:
            representations = model(tokens.to(device), repr_layers=layers, return_contacts=False)["representations"]
            for row, label in enumerate(labels):
                kept = min(TRUNCATION, len(strs[row]))
                result = {"label": label, "representations": {layer: t[row, 1 : kept + 1].clone().cpu() for layer, t in representations.items()}}
                torch.save(result, out_dir / f"{label}.pt")


def embed_stage(checkpoint: Path, proteins: Path, out_dir: Path, layers: list[int], device: torch.device) -> None:
    """What the Snakemake embed job (one shard) and the embed_index job run."""
    esm = schema_defaults()["esm"]
    shard = out_dir / shard_name(0, 1)
    settings = EmbedSettings.from_config({**esm, "token_budget": TOKS_PER_BATCH})
    embed_shard(checkpoint, proteins, layers, 0, 1, shard, settings, device=device)
    write_index(out_dir / "index.parquet", [shard], read_chains(proteins))


SIDES: dict[str, Callable[[Path, Path, Path, list[int], torch.device], None]] = {"baseline": extract_baseline, "ours": embed_stage}
INPUT = {"baseline": "sequences.fasta", "ours": "proteins.parquet"}


def child(side: str, checkpoint: Path, inputs: Path, warm: Path, out: Path, layers: list[int], device: torch.device) -> dict[str, float]:
    """One timed run of one side in this (fresh) process; peak memory is this process's own."""
    run = SIDES[side]
    scratch = Path(tempfile.mkdtemp())
    run(checkpoint, warm / INPUT[side], scratch / "out", layers, device)  # first-call costs, untimed
    shutil.rmtree(scratch)
    before = memory_mb(device)
    reset_peak(device)
    seconds = timed(lambda: run(checkpoint, inputs / INPUT[side], out, layers, device), device)
    return {"seconds": seconds, "peak_mb": peak_mb(device), "start_mb": before}


# ---------------------------------------------------------------- inputs


def scannet_chain_lengths() -> list[int]:
    """Residues per chain of every entry in the real ScanNet label files of the repository
    (a chain, not an entry, is what the embed stage embeds)."""
    return [
        len(list(rows))
        for path in sorted(SCANNET_LABELS.glob("*/labels_*.txt"))
        for entry in read_label_file(path)
        for _, rows in groupby(entry.rows, key=lambda row: row.chain)
    ]


def set_lengths(rng: random.Random, count: int, spread: str) -> list[int]:
    """``count`` lengths: evenly over 50..1500 in random order ("even", a third beyond 1022), or
    drawn with replacement from the ScanNet chain lengths ("scannet")."""
    if spread == "scannet":
        return rng.choices(scannet_chain_lengths(), k=count)
    lengths = np.linspace(*UNIQUE_LENGTHS, count).round().astype(int).tolist()
    rng.shuffle(lengths)
    return lengths


def unique_set(rng: random.Random, count: int, spread: str) -> list[ProteinRecord]:
    """Distinct sequences with lengths from :func:`set_lengths`."""
    return [sequence_record(f"u{i}", random_sequence(rng, n)) for i, n in enumerate(set_lengths(rng, count, spread))]


def decoy_set(rng: random.Random, targets: int, decoys: int) -> list[ProteinRecord]:
    """PSR-like: every decoy of a target has the target's sequence (random lengths in 80..400)."""
    sequences = [random_sequence(rng, rng.randint(*DECOY_LENGTHS)) for _ in range(targets)]
    return [sequence_record(f"T{t}_d{d}", seq, f"T{t}") for t, seq in enumerate(sequences) for d in range(decoys)]


def write_inputs(folder: Path, records: list[ProteinRecord]) -> Path:
    """The baseline's FASTA and our protein table for the same proteins (not timed)."""
    folder.mkdir(parents=True)
    (folder / INPUT["baseline"]).write_text("".join(f">{r.protein_id}\n{r.sequence}\n" for r in records))
    write_proteins(records, folder / INPUT["ours"])
    return folder


# ---------------------------------------------------------------- checks


def float16_tolerance(reference: np.ndarray) -> np.ndarray:
    """One float16 step at the reference value, plus 1e-5 for float32 noise near zero: storing
    float16 rounds to the nearest step, and float32 rounding noise can tip it to the next one."""
    return np.spacing(np.abs(reference).astype(np.float16)).astype(np.float32) + 1e-5


@dataclass
class Agreement:
    """Running comparison of our float16 values with a float32 reference."""

    values_compared: int = 0
    max_abs_diff: float = 0.0
    max_diff_over_tolerance: float = 0.0
    values_beyond_tolerance: int = 0

    def add(self, ours: np.ndarray, reference: np.ndarray) -> None:
        diff = np.abs(ours - reference)
        over = diff / float16_tolerance(reference)
        self.values_compared += diff.size
        self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
        self.max_diff_over_tolerance = max(self.max_diff_over_tolerance, float(over.max()))
        self.values_beyond_tolerance += int((over > 1).sum())


def agreement(records: list[ProteinRecord], baseline_dir: Path, cache: EmbeddingCache, layers: list[int]) -> dict[str, Any]:
    """Our cache against the baseline's files on every residue the baseline covers."""
    result = Agreement()
    for rec in records:
        theirs = torch.load(baseline_dir / f"{rec.protein_id}.pt", weights_only=True)["representations"]
        ours = cache.protein(rec)
        for pos, layer in enumerate(layers):
            base = theirs[layer].numpy()
            result.add(ours[: len(base), pos], base)
    return asdict(result)


def beyond_truncation(records: list[ProteinRecord], cache: EmbeddingCache, checkpoint: Path, layers: list[int]) -> dict[str, Any]:
    """Residues past position 1022: how many each side covers, and whether ours are exact.

    Exact means: every such residue equals fair-esm's own ``ESM2.forward`` on the window that
    the embed stage assigns it (``window_spans``), within float16 rounding. The baseline
    covers none of them (it truncates).
    """
    long = [r for r in records if len(r.sequence) > TRUNCATION]
    result, residues, covered = Agreement(), 0, 0
    if not long:
        return {"residues": 0, "covered_ours": 0, "covered_baseline": 0, **asdict(result)}
    esm = schema_defaults()["esm"]
    model, alphabet = load_esm(checkpoint)
    converter = alphabet.get_batch_converter()
    with torch.no_grad():
        for rec in long:
            ours = cache.protein(rec)
            residues += len(rec.sequence) - TRUNCATION
            covered += len(ours) - TRUNCATION
            for start, end, keep_start, keep_end in window_spans(len(rec.sequence), esm["window"], esm["window_overlap"])[1:]:
                tokens = converter([(rec.protein_id, rec.sequence[start:end])])[2]
                reps = model(tokens, repr_layers=layers)["representations"]
                reference = torch.stack([reps[layer][0] for layer in layers], dim=1).numpy()
                result.add(ours[keep_start:keep_end], reference[1 + keep_start - start : 1 + keep_end - start])
    return {"residues": residues, "covered_ours": covered, "covered_baseline": 0, **asdict(result)}


def read_ms(records: list[ProteinRecord], baseline_dir: Path, index: Path) -> dict[str, float]:
    """Milliseconds per protein to fetch all its layers: ours in table order (what training does)
    and in random order (every fetch decodes a row group), the baseline's ``torch.load``."""

    def per_protein(fetch: Callable[[ProteinRecord], object], order: list[ProteinRecord]) -> float:
        started = time.perf_counter()
        for rec in order:
            fetch(rec)
        return 1000 * (time.perf_counter() - started) / len(order)

    shuffled = random.Random(0).sample(records, len(records))
    return {
        "ours_in_order": per_protein(EmbeddingCache(index).protein, records),
        "ours_random_order": per_protein(EmbeddingCache(index).protein, shuffled),
        "baseline": per_protein(lambda rec: torch.load(baseline_dir / f"{rec.protein_id}.pt", weights_only=True), shuffled),
    }


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- one set, one size


@dataclass(frozen=True)
class Run:
    """What every child of one model size shares."""

    checkpoint: Path
    warm: Path
    layers: list[int]
    device: str
    threads: int

    def child_args(self, side: str, inputs: Path, out: Path) -> list[str]:
        return [
            "--child", side, "--checkpoint", str(self.checkpoint), "--inputs", str(inputs), "--warm", str(self.warm),
            "--child-out", str(out), "--layers", ",".join(map(str, self.layers)), "--device", self.device, "--threads", str(self.threads),
        ]


def run_set(run: Run, records: list[ProteinRecord], folder: Path, repeats: int) -> dict[str, Any]:
    inputs = write_inputs(folder / "inputs", records)

    def side(name: str) -> Callable[[int], dict[str, Any]]:
        return lambda attempt: run_child(NAME, run.child_args(name, inputs, folder / f"{name}-{attempt}"))

    best = {name: fastest(runs) for name, runs in interleaved({name: side(name) for name in SIDES}, repeats).items()}
    residues = sum(len(r.sequence) for r in records)
    covered = {"baseline": sum(min(TRUNCATION, len(r.sequence)) for r in records), "ours": residues}
    stores = {name: folder / f"{name}-0" for name in SIDES}
    stored = {name: disk_bytes(path) for name, path in stores.items()}
    cache = EmbeddingCache(stores["ours"] / "index.parquet")
    return {
        "proteins": len(records),
        "residues": residues,
        "unique_residues": sum(len(seq) for seq in read_chains(inputs / INPUT["ours"]).values()),
        "seconds": {name: best[name]["seconds"] for name in SIDES},
        "covered_residues": covered,
        "residues_per_s": {name: covered[name] / best[name]["seconds"] for name in SIDES},
        "bytes": stored,
        "bytes_per_residue": {name: stored[name] / covered[name] for name in SIDES},
        "files": {name: sum(1 for p in path.rglob("*") if p.is_file()) for name, path in stores.items()},
        "peak_mb": {name: best[name]["peak_mb"] for name in SIDES},
        "start_mb": {name: best[name]["start_mb"] for name in SIDES},
        "agreement": agreement(records, stores["baseline"], cache, run.layers),
        "beyond_1022": beyond_truncation(records, cache, run.checkpoint, run.layers),
        "read_ms": read_ms(records, stores["baseline"], stores["ours"] / "index.parquet"),
    }


def run_size(size: str, sets: dict[str, tuple[list[ProteinRecord], int]], work: Path, device: str, threads: int) -> dict[str, Any]:
    """Both sets on one random-init checkpoint of a released ESM-2 shape."""
    # imported here: the per-side child processes never need the models (nor torch_geometric)
    from bihmf.models.fusion import FUSIONS, LayerChoice, cached_layers

    shape = ESM_SHAPES[size]
    checkpoint = work / f"esm2_{size}_bench_random.pt"
    write_random_checkpoint(checkpoint, seed=0, **shape)
    record_sha256(checkpoint)  # what rule esm_checkpoint does once per run
    layers = cached_layers(list(FUSIONS), LayerChoice.of(schema_defaults()["model"], shape["num_layers"]))
    rng = random.Random(0)
    warm = write_inputs(work / "warm", [sequence_record(f"w{n}", random_sequence(rng, n)) for n in (60, 120)])
    run = Run(checkpoint, warm, layers, device, threads)
    results = {name: run_set(run, records, work / name, repeats) for name, (records, repeats) in sets.items()}
    return {"shape": shape, "layers": layers, "sets": results}


# ---------------------------------------------------------------- report


SET_LABELS = {"unique": "(a) unique", "decoys": "(b) PSR-like decoys"}


def render(result: dict[str, Any]) -> str:
    s = result["setup"]
    spread = (
        f"lengths of real ScanNet chains (PPBS validation, BCE fold 2), {s['unique_lengths'][0]}-{s['unique_lengths'][1]}, "
        f"median {s['median_length']:.0f}, {s['beyond_truncation']} beyond {s['truncation']}"
        if s.get("lengths") == "scannet"
        else f"lengths evenly spread over {s['unique_lengths'][0]}-{s['unique_lengths'][1]}"
    )
    decoys = (
        f"; (b) {s['targets']} targets x {s['decoys']} decoys sharing the target's sequence, lengths {s['decoy_lengths'][0]}-{s['decoy_lengths'][1]}"
        if s["targets"]
        else ""
    )
    setup = (
        f"Sets: (a) {s['unique']} distinct sequences, {spread}{decoys}. "
        f"Both sides: {s['toks_per_batch']} tokens per batch; the baseline truncates at {s['truncation']}, ours windows of "
        f"{s['window']} with {s['overlap']} overlap. Fastest of {s['repeats']} alternating runs per side on (a)"
        + (", one on (b)." if s["targets"] else ".")
    )
    rows, checks = [], []
    for size, sized in ordered(result["results"], ESM_SHAPES):
        for name, r in ordered(sized["sets"], SET_LABELS):
            for side in SIDES:
                rows.append([
                    f"{size} {SET_LABELS[name]}", side, f"{r['seconds'][side]:.1f}",
                    f"{r['covered_residues'][side]:,} of {r['residues']:,}", f"{r['residues_per_s'][side]:,.0f}",
                    f"{r['bytes_per_residue'][side]:,.0f}", f"{r['peak_mb'][side]:,.0f}",
                    f"{r['peak_mb'][side] - r['start_mb'][side]:,.0f}", str(r["files"][side]),
                ])
            a, b, t = r["agreement"], r["beyond_1022"], r["read_ms"]
            checks.append([
                f"{size} {SET_LABELS[name]}",
                ratio(r["residues_per_s"]["ours"] / r["residues_per_s"]["baseline"]),
                f"{r['bytes_per_residue']['ours'] / r['bytes_per_residue']['baseline']:.3f}x",
                f"{a['max_diff_over_tolerance']:.2f}", f"{a['values_beyond_tolerance']:,} of {a['values_compared']:,}",
                (
                    f"ours {b['covered_ours']:,} / baseline {b['covered_baseline']} of {b['residues']:,}; "
                    f"max diff / tol {b['max_diff_over_tolerance']:.2f}"
                ),
                f"{t['ours_in_order']:.1f} / {t['ours_random_order']:.1f} / {t['baseline']:.1f}",
            ])
    return "\n\n".join([
        setup,
        table(["model, set", "side", "seconds", "residues covered", "residues/s", "bytes/residue", "peak MiB", "peak - start MiB", "files"], rows),
        table([
            "model, set", "speed (ours / baseline)", "bytes/residue (ours / baseline)", "max diff / float16 tol",
            "values beyond tol", "residues beyond 1022: covered; vs fair-esm on their window", "read ms/protein: ours in order / random / baseline",
        ], checks),
    ])


def _per_size(result: dict[str, Any], set_name: str, value: Callable[[dict[str, Any]], float]) -> dict[str, float]:
    return {size: value(sized["sets"][set_name]) for size, sized in ordered(result["results"], ESM_SHAPES) if set_name in sized["sets"]}


def _speed(r: dict[str, Any]) -> float:
    return r["residues_per_s"]["ours"] / r["residues_per_s"]["baseline"]


def _listing(values: dict[str, float], fmt: str) -> str:
    return ", ".join(f"{size} {format(v, fmt)}x" for size, v in values.items())


def _shortfall(result: dict[str, Any], set_name: str, sizes: list[str]) -> str:
    """Why ours falls short where it does, from the seconds and residues of each side."""
    runs = {size: result["results"][size]["sets"][set_name] for size in sizes}
    spent = "; ".join(
        f"{size}: ours {r['seconds']['ours']:.1f} s for {r['unique_residues']:,} distinct residues, "
        f"baseline {r['seconds']['baseline']:.1f} s for {r['residues']:,}"
        for size, r in runs.items()
    )
    return (
        f"; below target ({spent}): on top of the model loading both sides pay, ours encodes float16 Parquet (zstd over "
        "byte-stream split, a fixed-length byte array per value: far slower per byte than the baseline's torch.save of "
        "float32). It runs on a writer thread beside the forward pass, a shard of one part is written directly and the "
        "checkpoint is hashed once per run, so what is left decides only where the forward pass outruns the encoding "
        "(a small model, a GPU) or the set is too small to overlap it (one chunk)"
    )


def targets(result: dict[str, Any]) -> list[Target]:
    unique = _per_size(result, "unique", _speed)
    decoys = _per_size(result, "decoys", _speed)
    size = _per_size(result, "unique", lambda r: r["bytes_per_residue"]["ours"] / r["bytes_per_residue"]["baseline"])
    beyond = {size: sized["sets"]["unique"]["beyond_1022"] for size, sized in ordered(result["results"], ESM_SHAPES)}
    exact = result["machine"]["device"] == "cpu"  # fp16 autocast on GPU is not float32 rounded to float16
    covered = all(b["covered_ours"] == b["residues"] > 0 for b in beyond.values())
    matching = all(b["values_beyond_tolerance"] == 0 for b in beyond.values()) or not exact
    slow = [s for s, v in unique.items() if v < 1.3]
    slow_decoys = [s for s, v in decoys.items() if v < 10]
    found = [
        Target(
            "ESM cache speed, unique sequences", ">= 1.3x residues/s", _listing(unique, ".2f"), not slow,
            "fused attention (SDPA instead of fair-esm's materialised [B, H, T, T] weights) is the gain; windows past 1022 "
            "residues cost forward passes that the baseline skips by truncating"
            + (_shortfall(result, "unique", slow) if slow else ""),
        ),
        Target(
            "ESM cache size", "<= 0.5x bytes/residue", _listing(size, ".3f"), all(v <= 0.5 for v in size.values()),
            "float16 halves float32; zstd over byte-stream-split float16 takes off more (random-init embeddings; "
            "trained ones may compress differently)",
        ),
        Target(
            "ESM cache coverage beyond 1022 residues", "every residue, exact" if exact else "every residue covered",
            "; ".join(
                f"{size} {b['covered_ours']:,} of {b['residues']:,} (baseline 0), max diff / float16 tol {b['max_diff_over_tolerance']:.2f}"
                for size, b in beyond.items()
            ),
            covered and matching,
            "each residue past the first window comes from fair-esm's forward on its own window (overlap from the config)"
            + ("" if exact else "; on GPU the stage runs fp16 autocast, so values differ from float32 by more than rounding"),
        ),
    ]
    if decoys:
        found.insert(1, Target(
            "ESM cache speed, PSR-like decoys", ">= 10x residues/s", _listing(decoys, ".1f"), not slow_decoys,
            "deduplication embeds each target's sequence once instead of once per decoy; fixed costs keep the gain below "
            "the decoys-per-target factor"
            + (_shortfall(result, "decoys", slow_decoys) if slow_decoys else ""),
        ))
    return found


# ---------------------------------------------------------------- command line


def main(argv: list[str]) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", help=f"released ESM-2 shapes, of {', '.join(ESM_SHAPES)} (default: all but t33 on CPU, all on GPU)")
    parser.add_argument("--unique", type=int, default=16, help="sequences in set (a)")
    parser.add_argument("--lengths", choices=["even", "scannet"], default="even", help="set (a)'s lengths: even over 50-1500, or real ScanNet chains")
    parser.add_argument("--targets", type=int, default=4, help="targets in set (b); 0 leaves set (b) out")
    parser.add_argument("--decoys", type=int, default=40, help="decoys per target in set (b)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side of set (a); the fastest counts (set (b): 1)")
    for name in ("--child", "--checkpoint", "--inputs", "--warm", "--child-out", "--layers"):
        parser.add_argument(name, help="internal: one side in a fresh process")
    args = parse(parser, argv)
    if args.child:
        layers = [int(x) for x in args.layers.split(",")]
        emit(child(args.child, Path(args.checkpoint), Path(args.inputs), Path(args.warm), Path(args.child_out), layers, torch.device(args.device)))
        return
    if args.quick:
        args.sizes, args.unique, args.targets, args.repeats = "t6", 2, 0, 1
    sizes = (args.sizes or ",".join(ESM_SHAPES if args.device == "cuda" else list(ESM_SHAPES)[:-1])).split(",")
    started = machine(torch.device(args.device))
    candidates = {"unique": (unique_set(random.Random(1), args.unique, args.lengths), args.repeats), "decoys": (decoy_set(random.Random(2), args.targets, args.decoys), 1)}
    sets = {name: (records, repeats) for name, (records, repeats) in candidates.items() if records}
    results = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            results[size] = run_size(size, sets, Path(tmp), args.device, args.threads)
    unique_lengths = [len(r.sequence) for r in candidates["unique"][0]]
    setup = {
        "unique": args.unique, "lengths": args.lengths, "unique_lengths": [min(unique_lengths), max(unique_lengths)],
        "median_length": statistics.median(unique_lengths), "beyond_truncation": sum(n > TRUNCATION for n in unique_lengths), "targets": args.targets, "decoys": args.decoys,
        "decoy_lengths": DECOY_LENGTHS, "repeats": args.repeats, "toks_per_batch": TOKS_PER_BATCH, "truncation": TRUNCATION,
        "window": schema_defaults()["esm"]["window"], "overlap": schema_defaults()["esm"]["window_overlap"],
    }
    print(save(args.out, NAME, argv, started, setup, results))


if __name__ == "__main__":
    main(sys.argv[1:])
