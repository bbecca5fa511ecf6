"""The embed stage against the way users extract ESM embeddings today, side by side in one run.

Baseline: fair-esm's ``scripts/extract.py`` with ``--include per_tok --repr_layers <layers>``.
The PyPI fair-esm 2.0.0 wheel does not ship that script, so :func:`extract_baseline`
re-expresses its documented behaviour with fair-esm's public API (not its code): sequences
sorted by length and packed greedily into batches of ``toks_per_batch=4096`` (FastaBatchedDataset
with one extra token per sequence), truncation at 1022 residues (BatchConverter), ESM2.forward
under ``torch.no_grad``, one ``torch.save``d float32 ``.pt`` per protein holding
``{"label", "representations": {layer: [L', D]}}``.

Ours: the workflow's embed jobs in-process (``embed_shard`` per shard, then ``write_index``)
on a protein table, with the same checkpoint, layers, token budget and torch thread count.

Both read the checkpoint with the same weights-only loader, and the clock covers model
loading, embedding and writing; writing the input FASTA / protein table is not timed.
Run: ``.venv/bin/python bench/embed_vs_extract.py`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from esm.data import FastaBatchedDataset

from bihmf.data.schema import ProteinRecord, write_proteins
from bihmf.esm import EmbeddingCache, embed_shard, load_esm, write_index, write_random_checkpoint
from bihmf.esm_cache import read_chains, shard_name
from bihmf.io import write_json_atomic, write_text_atomic
from bihmf.models.fusion import cached_layers

AMINO = "ACDEFGHIKLMNPQRSTVWY"
# t12_35M's shape (12 layers x 480, 20 heads) with random weights: timings are those of a
# real mid-size ESM-2, the embeddings mean nothing.
SHAPE = {"num_layers": 12, "embed_dim": 480, "attention_heads": 20}
TOKS_PER_BATCH = 4096
TRUNCATION = 1022


def extract_baseline(checkpoint: Path, fasta: Path, out_dir: Path, layers: list[int]) -> None:
    """fair-esm ``extract.py <model> <fasta> <out> --include per_tok --repr_layers ...`` on CPU."""
    model, alphabet = load_esm(checkpoint)
    dataset = FastaBatchedDataset.from_file(fasta)
    batches = dataset.get_batch_indices(TOKS_PER_BATCH, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(TRUNCATION), batch_sampler=batches)
    out_dir.mkdir(parents=True)
    with torch.no_grad():
        for labels, strs, tokens in loader:
            representations = model(tokens, repr_layers=layers, return_contacts=False)["representations"]
            for row, label in enumerate(labels):
                kept = min(TRUNCATION, len(strs[row]))
                result = {"label": label, "representations": {layer: t[row, 1 : kept + 1].clone() for layer, t in representations.items()}}
                torch.save(result, out_dir / f"{label}.pt")


def embed_stage(checkpoint: Path, proteins: Path, out_dir: Path, layers: list[int], shards: int) -> None:
    """What the Snakemake embed jobs (one per shard) and the embed_index job run."""
    paths = [out_dir / shard_name(i, shards) for i in range(shards)]
    for shard, path in enumerate(paths):
        embed_shard(checkpoint, proteins, layers, shard, shards, path, token_budget=TOKS_PER_BATCH, window=1022, overlap=256, device=torch.device("cpu"))
    write_index(out_dir / "index.parquet", paths, read_chains(proteins))


def record(protein_id: str, sequence: str, group: str) -> ProteinRecord:
    n = len(sequence)
    return ProteinRecord(
        protein_id=protein_id, pdb_id="none", split="test", subset="", sequence=sequence, chain_ids=("A",) * n,
        resnums=np.arange(n, dtype=np.int32), icodes=("",) * n, coords=np.zeros((n, 5, 3), np.float32),
        labels=np.zeros(n, np.int8), weight=1.0, group=group,
    )


def mixed_set(rng: random.Random, count: int) -> list[ProteinRecord]:
    """(a) unique sequences, lengths uniform in 50..1500."""
    return [record(f"u{i}", "".join(rng.choice(AMINO) for _ in range(rng.randint(50, 1500))), "") for i in range(count)]


def psr_set(rng: random.Random, targets: int, decoys: int) -> list[ProteinRecord]:
    """(b) PSR-like: every decoy of a target has the target's sequence (lengths 80..400)."""
    sequences = ["".join(rng.choice(AMINO) for _ in range(rng.randint(80, 400))) for _ in range(targets)]
    return [record(f"T{t}_d{d}", seq, f"T{t}") for t, seq in enumerate(sequences) for d in range(decoys)]


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def best_times(sides: dict[str, Callable[[int], None]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs per side, the sides alternating so that both meet the same
    load (the machine is shared; the minimum is the least disturbed run)."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    for attempt in range(repeats):
        for side, run in sides.items():
            started = time.perf_counter()
            run(attempt)
            times[side].append(time.perf_counter() - started)
    return {side: min(values) for side, values in times.items()}


def float16_tolerance(reference: np.ndarray) -> np.ndarray:
    """One float16 step at the reference value, plus 1e-5 for float32 noise near zero: storing
    float16 rounds to the nearest step, and float32 rounding noise can tip it to the next one."""
    return np.spacing(np.abs(reference).astype(np.float16)).astype(np.float32) + 1e-5


def compare(records: list[ProteinRecord], baseline_dir: Path, cache: EmbeddingCache, layers: list[int]) -> dict:
    """Our float16 cache against the baseline's float32 on every residue the baseline covers."""
    worst_abs, worst_ratio, outside, compared = 0.0, 0.0, 0, 0
    for rec in records:
        theirs = torch.load(baseline_dir / f"{rec.protein_id}.pt", weights_only=True)["representations"]
        ours = cache.protein(rec)
        for pos, layer in enumerate(layers):
            base = theirs[layer].numpy()
            mine = ours[: len(base), pos]
            diff = np.abs(mine - base)
            worst_abs = max(worst_abs, float(diff.max()))
            ratio = diff / float16_tolerance(base)
            worst_ratio = max(worst_ratio, float(ratio.max()))
            outside += int((ratio > 1).sum())
            compared += diff.size
    return {"values_compared": compared, "max_abs_diff": worst_abs, "max_diff_over_tolerance": worst_ratio, "values_beyond_tolerance": outside}


def read_timings(records: list[ProteinRecord], baseline_dir: Path, index: Path) -> dict:
    """Milliseconds per protein to fetch all its layers: ours in table order (what training does)
    and in random order (every fetch decodes a row group), the baseline's ``torch.load``."""

    def per_protein_ms(fetch: Callable[[ProteinRecord], object], order: list[ProteinRecord]) -> float:
        started = time.perf_counter()
        for rec in order:
            fetch(rec)
        return 1000 * (time.perf_counter() - started) / len(order)

    shuffled = random.Random(0).sample(records, len(records))
    return {
        "ours_in_order_ms": per_protein_ms(EmbeddingCache(index).protein, records),
        "ours_random_order_ms": per_protein_ms(EmbeddingCache(index).protein, shuffled),
        "baseline_ms": per_protein_ms(lambda rec: torch.load(baseline_dir / f"{rec.protein_id}.pt", weights_only=True), shuffled),
    }


def run_set(name: str, records: list[ProteinRecord], checkpoint: Path, layers: list[int], work: Path, repeats: int, shards: int) -> dict:
    fasta, proteins = work / f"{name}.fasta", work / f"{name}_proteins.parquet"
    fasta.write_text("".join(f">{r.protein_id}\n{r.sequence}\n" for r in records))
    write_proteins(records, proteins)

    def baseline(attempt: int) -> None:
        extract_baseline(checkpoint, fasta, work / f"{name}_extract_{attempt}", layers)

    def ours(attempt: int) -> None:
        embed_stage(checkpoint, proteins, work / f"{name}_cache_{attempt}", layers, shards)

    times = best_times({"baseline": baseline, "ours": ours}, repeats)
    residues = sum(len(r.sequence) for r in records)
    covered = {"baseline": sum(min(TRUNCATION, len(r.sequence)) for r in records), "ours": residues}
    stores = {"baseline": work / f"{name}_extract_0", "ours": work / f"{name}_cache_0"}
    stored_bytes = {side: disk_bytes(path) for side, path in stores.items()}
    unique_residues = sum(len(seq) for seq in read_chains(proteins).values())
    cache = EmbeddingCache(stores["ours"] / "index.parquet")
    return {
        "proteins": len(records),
        "residues": residues,
        "unique_residues": unique_residues,
        "seconds": times,
        "covered_residues": covered,
        "residues_per_s": {side: covered[side] / times[side] for side in times},
        "bytes": stored_bytes,
        "bytes_per_residue": {side: stored_bytes[side] / covered[side] for side in times},
        "ours_bytes_per_stored_residue": stored_bytes["ours"] / unique_residues,
        "files": {side: sum(1 for p in path.rglob("*") if p.is_file()) for side, path in stores.items()},
        "agreement": compare(records, stores["baseline"], cache, layers),
        "read_per_protein": read_timings(records, stores["baseline"], stores["ours"] / "index.parquet"),
    }


def markdown(results: dict) -> str:
    lines = [
        "| set | side | seconds | residues covered | residues/s | bytes/residue | files |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["sets"].items():
        for side in ("baseline", "ours"):
            lines.append(
                f"| {name} | {side} | {r['seconds'][side]:.1f} | {r['covered_residues'][side]:,} of {r['residues']:,} | "
                f"{r['residues_per_s'][side]:,.0f} | {r['bytes_per_residue'][side]:,.0f} | {r['files'][side]} |"
            )
    lines += [
        "",
        "| set | speed ratio (ours / baseline) | size ratio (ours / baseline) | max abs diff | max diff / float16 tolerance | values beyond tolerance | ms per protein read: ours in order / random order / baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["sets"].items():
        a, t = r["agreement"], r["read_per_protein"]
        lines.append(
            f"| {name} | {r['residues_per_s']['ours'] / r['residues_per_s']['baseline']:.2f}x | "
            f"{r['bytes_per_residue']['ours'] / r['bytes_per_residue']['baseline']:.3f}x | {a['max_abs_diff']:.2e} | "
            f"{a['max_diff_over_tolerance']:.2f} | {a['values_beyond_tolerance']} of {a['values_compared']:,} | "
            f"{t['ours_in_order_ms']:.1f} / {t['ours_random_order_ms']:.1f} / {t['baseline_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixed", type=int, default=50, help="sequences in set (a)")
    parser.add_argument("--targets", type=int, default=5, help="targets in set (b), 40 decoys each")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side of set (a); the fastest counts")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = cached_layers(["struct_only", "serial", "bihmf_local"], 3, SHAPE["num_layers"], None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "esm2_t12_bench_random.pt"
        write_random_checkpoint(checkpoint, seed=0, **SHAPE)
        warm = work / "warm"
        warm.mkdir()
        run_set("warm", mixed_set(random.Random(0), 2), checkpoint, layers, warm, 1, 1)  # first-call costs, untimed
        sets = {
            "(a) mixed 50-1500": (mixed_set(random.Random(1), args.mixed), args.repeats),
            "(b) PSR-like, 40 decoys/target": (psr_set(random.Random(2), args.targets, 40), 1),
        }
        results = {
            "date": date.today().isoformat(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}, {args.threads} threads",
            "model": f"random-init ESM-2 {SHAPE}",
            "layers": layers,
            "sets": {name: run_set(f"set{i}", recs, checkpoint, layers, work, repeats, args.shards) for i, (name, (recs, repeats)) in enumerate(sets.items())},
        }
    write_json_atomic(args.out / "embed_vs_extract.json", results)
    table = markdown(results)
    write_text_atomic(args.out / "embed_vs_extract.md", table)
    print(json.dumps({k: v for k, v in results.items() if k != "sets"}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
