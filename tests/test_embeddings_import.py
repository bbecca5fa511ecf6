"""Bring your own embeddings: extract.py .pt folders, HDF5 and .npz import into the cache and train."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bihmf.benchmark import validate_config
from bihmf.config import ConfigError
from bihmf.data import preprocess_dataset
from bihmf.data.schema import read_proteins
from bihmf.embeddings_import import SourceError, import_shard, source_depth
from bihmf.esm_checkpoint import esm_depth
from bihmf.esm_cache import EmbeddingCache, chain_sequences, file_metadata, read_chains, shard_name, write_index
from bihmf.run import RunSpec, read_record
from bihmf.training import train_run

WIDTH = 16
LAYERS = [1, 2, 3]


@pytest.fixture(scope="module")
def table(demo_raw, demo_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("import_table")
    preprocess_dataset(demo_raw, demo_spec, out / "proteins.parquet", out / "preprocess_report.json")
    return out / "proteins.parquet"


@pytest.fixture(scope="module")
def arrays(table) -> dict[str, np.ndarray]:
    """Per protein id, float32 [n_layers, L, D] as another language model might have written them."""
    rng = np.random.default_rng(0)
    return {r.protein_id: rng.normal(size=(len(LAYERS), len(r.sequence), WIDTH)).astype(np.float32) for r in read_proteins(table)}


def write_esm_pt(folder: Path, arrays: dict[str, np.ndarray], numbers: list[int] = LAYERS) -> Path:
    """What fair-esm's extract.py --include per_tok writes: one <label>.pt per protein."""
    folder.mkdir(parents=True, exist_ok=True)
    for protein_id, stacked in arrays.items():
        reps = {layer: torch.from_numpy(stacked[i]).clone() for i, layer in enumerate(numbers[: len(stacked)])}
        torch.save({"label": protein_id, "representations": reps}, folder / f"{protein_id}.pt")
    return folder


def write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """One dataset per protein (the ProtT5 / Ankh scripts' layout), here [n_layers, L, D]."""
    with h5py.File(path, "w") as handle:
        for protein_id, stacked in arrays.items():
            handle.create_dataset(protein_id, data=stacked)
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


WRITERS = {"esm_pt": lambda d, a: write_esm_pt(d / "pt", a), "hdf5": lambda d, a: write_hdf5(d / "e.h5", a),
           "npz": lambda d, a: write_npz(d / "e.npz", a)}


def imported(precomputed: dict, table: Path, out: Path, layers: list[int], n_shards: int = 2) -> Path:
    """The workflow's two steps: one import job per shard, then embed_index."""
    shards = [out / shard_name(i, n_shards) for i in range(n_shards)]
    for i, shard in enumerate(shards):
        import_shard(precomputed, table, layers, i, n_shards, shard)
    write_index(out / "index.parquet", shards, read_chains(table))
    return out / "index.parquet"


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_each_format_imports_row_for_row_and_trains(kind, table, arrays, demo_config, tmp_path):
    source = WRITERS[kind](tmp_path, arrays)
    precomputed = {"format": kind, "path": str(source)}
    assert source_depth(precomputed) == 3
    index = imported(precomputed, table, tmp_path / "cache", [2, 3])
    cache = EmbeddingCache(index, layers=[2, 3])
    first: dict[str, np.ndarray] = {}  # a chain in several proteins keeps its first protein's rows
    for record in read_proteins(table):
        rows, start = arrays[record.protein_id][1:].transpose(1, 0, 2).astype(np.float16), 0
        for key, chain in chain_sequences(record.sequence, record.chain_ids):
            first.setdefault(key, rows[start : start + len(chain)])
            start += len(chain)
        expected = np.concatenate([first[key] for key, _ in chain_sequences(record.sequence, record.chain_ids)])
        assert np.array_equal(cache.rows(record), expected), record.protein_id
    assert any(np.array_equal(cache.rows(r), arrays[r.protein_id][1:].transpose(1, 0, 2).astype(np.float16)) for r in read_proteins(table))
    meta = cache.metadata
    assert (meta["embed_dim"], meta["esm_depth"]) == (str(WIDTH), "3")
    shard_meta = json.loads(file_metadata(tmp_path / "cache" / shard_name(0, 2))["source_files"])
    assert all(len(digest) == 64 for digest in shard_meta.values())
    assert len(shard_meta) == (len(arrays) if kind == "esm_pt" else 1)

    model = {**demo_config["model"], "hidden_dim": 16, "vector_dim": 4, "num_layers": 2, "knn": 8, "esm_layers": [2, 3]}
    train = {**demo_config["train"], "epochs": 2, "lr": 3e-3}
    result = train_run(RunSpec("ppbs_demo", "gvp", "bihmf_local", 0, "residue_binary"), table, index, model, train, tmp_path / "run")
    assert read_record(tmp_path / "run" / "metrics.json") == result
    assert result.provenance["esm_checkpoint_sha256"] == meta["checkpoint_sha256"]


def test_one_layer_arrays_are_layer_1(table, arrays, tmp_path):
    flat = {pid: a[0] for pid, a in arrays.items()}
    precomputed = {"format": "hdf5", "path": str(write_hdf5(tmp_path / "flat.h5", flat))}
    assert source_depth(precomputed) == 1
    cache = EmbeddingCache(imported(precomputed, table, tmp_path / "cache", [1], n_shards=1))
    record = read_proteins(table)[0]
    assert np.array_equal(cache.rows(record)[:, 0], flat[record.protein_id].astype(np.float16))


def test_extract_py_layer_numbers_are_kept(table, arrays, tmp_path):
    precomputed = {"format": "esm_pt", "path": str(write_esm_pt(tmp_path / "pt", arrays, [0, 5, 6]))}
    assert source_depth(precomputed) == 6
    cache = EmbeddingCache(imported(precomputed, table, tmp_path / "cache", [5, 6], n_shards=1))
    record = read_proteins(table)[0]
    assert np.array_equal(cache.rows(record, [5]).astype(np.float32)[:, 0], arrays[record.protein_id][1].astype(np.float16))


def _broken(arrays: dict[str, np.ndarray], how: str) -> tuple[dict[str, np.ndarray], str]:
    """A copy with one protein (the second) broken ``how``; returns it and that protein's id."""
    out = dict(arrays)
    victim = list(arrays)[1]
    a = arrays[victim].copy()
    if how == "missing":
        del out[victim]
        return out, victim
    if how == "short":
        a = a[:, 1:]
    elif how == "nan":
        a[1, 3, 2] = np.nan
    elif how == "inf":
        a[2, 0, 0] = np.inf
    elif how == "float16_overflow":
        a[1, 0, 0] = 1e6
    elif how == "width":
        a = a[:, :, :-1]
    elif how == "layers":
        a = a[:2]
    out[victim] = a
    return out, victim


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize(
    "how, reason",
    [("missing", "no |missing"), ("short", "rows, its sequence"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
     ("float16_overflow", "float16"), ("width", "width"), ("layers", "layers")],
)
def test_a_bad_protein_is_named_with_its_file(kind, how, reason, table, arrays, tmp_path):
    broken, victim = _broken(arrays, how)
    source = WRITERS[kind](tmp_path, broken)
    with pytest.raises(SourceError, match=reason) as error:
        import_shard({"format": kind, "path": str(source)}, table, [2, 3], 0, 1, tmp_path / "shard.parquet")
    assert victim in str(error.value) and str(source) in str(error.value)
    assert not (tmp_path / "shard.parquet").exists()


def test_layers_the_source_lacks_are_named(table, arrays, tmp_path):
    precomputed = {"format": "npz", "path": str(write_npz(tmp_path / "e.npz", arrays))}
    with pytest.raises(SourceError, match=r"lacks layers \[4\]"):
        import_shard(precomputed, table, [3, 4], 0, 1, tmp_path / "shard.parquet")


def test_extract_py_output_without_per_token_rows_or_with_another_label(table, arrays, tmp_path):
    folder = write_esm_pt(tmp_path / "pt", arrays)
    victim = list(arrays)[0]
    torch.save({"label": victim, "mean_representations": {3: torch.zeros(WIDTH)}}, folder / f"{victim}.pt")
    with pytest.raises(SourceError, match="per_tok"):
        import_shard({"format": "esm_pt", "path": str(folder)}, table, [3], 0, 1, tmp_path / "s.parquet")
    torch.save({"label": "other", "representations": {3: torch.zeros(3, WIDTH)}}, folder / f"{victim}.pt")
    with pytest.raises(SourceError, match="label 'other'"):
        import_shard({"format": "esm_pt", "path": str(folder)}, table, [3], 0, 1, tmp_path / "s.parquet")


def test_config_takes_a_precomputed_source_and_reads_its_depth(table, arrays, tmp_path):
    path = write_npz(tmp_path / "e.npz", arrays)
    dataset = {"d": {"kind": "ppbs", "task": "residue_binary", "download": {}}}
    config = validate_config({"datasets": dataset, "esm": {"name": "prot_t5_xl", "precomputed": {"format": "npz", "path": str(path)}}})
    assert esm_depth(config["esm"]) == 3
    for bad in ({"name": "prot_t5_xl", "random_init": {}}, {"name": "x", "precomputed": {"format": "npz", "path": "e.npz"}, "random_init": {}},
                {"name": "x", "precomputed": {"format": "csv", "path": "e.csv"}}):
        with pytest.raises(ConfigError):
            validate_config({"datasets": dataset, "esm": bad})


def test_workflow_imports_a_precomputed_source_instead_of_running_esm(arrays, tmp_path):
    """Dry run of the demo's PPBS dataset with an .npz source: import jobs, no checkpoint, no embed."""
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    demo = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    source = write_npz(tmp_path / "e.npz", arrays)
    config = {**demo, "datasets": {"ppbs_demo": demo["datasets"]["ppbs_demo"]}, "ablations": [],
              "esm": {"name": "my_plm", "precomputed": {"format": "npz", "path": str(source)}, "shards": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(tmp_path), "all",
         "--cores", "1", "--dry-run", "--quiet", "rules", "--configfile", str(tmp_path / "c.yaml")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {parts[0]: int(parts[1]) for parts in map(str.split, result.stdout.splitlines()) if len(parts) == 2 and parts[1].isdigit()}
    assert jobs["embed_import"] == 2 and jobs["embed_index"] == 1
    assert "embed" not in jobs and "esm_checkpoint" not in jobs
