"""ESM checkpoints (fair-esm format, weights-only), windowed embedding, the sharded Parquet cache."""

from __future__ import annotations

import argparse
import pathlib
import random
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import bihmf.esm
import bihmf.esm_writer
from bihmf.data.schema import ProteinRecord, sequence_hash, write_proteins
from bihmf.esm import (
    embed_sequences,
    layer_representations,
    window_spans,
)
from bihmf.esm_checkpoint import load_esm, regression_path
from bihmf.esm_cache import EmbedSettings, EmbeddingCache, chain_sequences, file_metadata, read_chains, shard_name, shard_of, write_index
from bihmf.esm_writer import embed_proteins, embed_shard

CPU = torch.device("cpu")
SETTINGS = EmbedSettings(token_budget=512, window=1022, window_overlap=256)
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _sequence(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(AMINO) for _ in range(length))


def _record(protein_id: str, chains: list[tuple[str, str]], group: str = "") -> ProteinRecord:
    sequence = "".join(seq for _, seq in chains)
    n = len(sequence)
    return ProteinRecord(
        protein_id=protein_id,
        pdb_id="1abc",
        split="train",
        subset="",
        sequence=sequence,
        chain_ids=tuple(chain for chain, seq in chains for _ in seq),
        resnums=np.arange(n, dtype=np.int32),
        icodes=("",) * n,
        coords=np.zeros((n, 5, 3), np.float32),
        labels=np.zeros(n, np.int8),
        weight=1.0,
        group=group,
    )


def _cache(checkpoint, records, layers, out_dir, n_shards=1, settings=SETTINGS, **options) -> EmbeddingCache:
    """The workflow's embed stage in-process: every shard job, then the index job."""
    proteins = out_dir / "proteins.parquet"
    write_proteins(records, proteins)
    shards = [out_dir / shard_name(i, n_shards) for i in range(n_shards)]
    for i, shard in enumerate(shards):
        embed_shard(checkpoint, proteins, layers, i, n_shards, shard, settings, device=CPU, **options)
    write_index(out_dir / "index.parquet", shards, read_chains(proteins))
    return EmbeddingCache(out_dir / "index.parquet")


def _assert_float16_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to one float16 step (+1e-5 near zero): what float32 rounding noise can do after the cast."""
    step = np.spacing(np.abs(expected).astype(np.float16)).astype(np.float32) + 1e-5
    excess = np.abs(actual.astype(np.float32) - expected.astype(np.float32)) - step
    assert excess.max() <= 0, f"{(excess > 0).sum()} values differ by more than a float16 step (worst by {excess.max():.2e})"


def test_random_checkpoint_loads_through_fair_esm(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    assert model.num_layers == 4 and model.embed_dim == 32
    assert regression_path(tiny_checkpoint).exists()
    data = torch.load(tiny_checkpoint, weights_only=False)
    assert isinstance(data["cfg"]["model"], argparse.Namespace)
    assert all(key.startswith("encoder.sentence_encoder.") for key in data["model"])


def test_checkpoint_with_unlisted_type_is_refused(tiny_checkpoint, tmp_path):
    data = torch.load(tiny_checkpoint, weights_only=False)
    data["cfg"]["extra"] = pathlib.PurePosixPath("/not/allowed")
    bad = tmp_path / "esm2_t4_bad.pt"
    torch.save(data, bad)
    regression_path(bad).write_bytes(regression_path(tiny_checkpoint).read_bytes())
    with pytest.raises(ValueError, match=r"esm2_t4_bad.pt: checkpoint stores pathlib.PurePosixPath, which is outside the weights-only allow-list \(argparse.Namespace\)"):
        load_esm(bad)


@pytest.mark.parametrize(("length", "window", "overlap"), [(5, 10, 3), (10, 10, 3), (11, 10, 3), (2500, 1022, 256), (997, 100, 40), (50, 10, 0)])
def test_window_spans_cover_every_residue_once(length, window, overlap):
    spans = window_spans(length, window, overlap)
    kept = [i for _, _, a, b in spans for i in range(a, b)]
    assert kept == list(range(length))
    for start, end, keep_start, keep_end in spans:
        assert 0 <= start <= keep_start < keep_end <= end <= length and end - start <= window
    # the first window is kept whole (what a truncating extractor returns); later ones keep
    # only residues with at least `overlap` residues of left context inside the window
    assert spans[0][:2] == spans[0][2:] == (0, min(length, window))
    assert all(keep_start - start >= overlap for start, _, keep_start, _ in spans[1:])


def test_fused_forward_matches_fair_esm(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    _, _, tokens = alphabet.get_batch_converter()([("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "GSH"), ("c", "ACDEFG<mask>KLM")])
    layers = list(range(model.num_layers + 1))
    with torch.inference_mode():
        reference = model(tokens, repr_layers=layers)["representations"]
        fused = layer_representations(model, tokens, layers)
    real = tokens.ne(alphabet.padding_idx)
    for layer in layers:
        torch.testing.assert_close(fused[layer][real], reference[layer][real], atol=1e-5, rtol=1e-5)


def test_long_sequence_is_windowed_not_truncated(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 2500))
    out = embed_sequences(model, alphabet, {"long": seq, "short": seq[:300]}, [2, 4], EmbedSettings(4096, 1022, 256), device=CPU)
    assert out["long"].shape == (2500, 2, 32) and out["long"].dtype == np.float16
    assert np.isfinite(out["long"]).all()
    # windows [0, 1022) [766, 1788) [1532, 2500): each residue comes from the first window holding it
    alone = embed_sequences(model, alphabet, {"w0": seq[:1022], "w1": seq[766:1788], "w2": seq[1532:]}, [2, 4], EmbedSettings(1100, 1022, 256), device=CPU)
    _assert_float16_equal(out["long"][:1022], alone["w0"])
    _assert_float16_equal(out["long"][1022:1788], alone["w1"][256:])
    _assert_float16_equal(out["long"][1788:], alone["w2"][256:])


def test_batching_does_not_change_embeddings(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    seqs = {"a": "MKTAYIAKQRQISFVKSHFSRQ", "b": "GSHSMRYFFTSVSRPGRGEPRFIAVGYVDDTQ", "c": "ACDE"}
    together = embed_sequences(model, alphabet, seqs, [4], EmbedSettings(4096, 1022, 256), device=CPU)
    alone = embed_sequences(model, alphabet, seqs, [4], EmbedSettings(40, 1022, 256), device=CPU)
    for key in seqs:
        np.testing.assert_allclose(together[key].astype(np.float32), alone[key].astype(np.float32), atol=2e-3)


def test_cache_roundtrip_dedup_and_metadata(tiny_checkpoint, tmp_path):
    out = tmp_path / "cache.parquet"
    pairs = [("h1", "MKTAYIAKQR"), ("h2", "GSHSMRYFF"), ("h1", "MKTAYIAKQR")]
    assert embed_proteins(tiny_checkpoint, pairs, [1, 4], out, SETTINGS, device=CPU) == 2
    cache = EmbeddingCache(out)
    assert cache.layers == [1, 4] and cache.metadata["esm_depth"] == "4" and cache.metadata["embed_dim"] == "32"
    model, alphabet = load_esm(tiny_checkpoint)
    direct = embed_sequences(model, alphabet, {"h2": "GSHSMRYFF"}, [1, 4], SETTINGS, device=CPU)
    np.testing.assert_array_equal(cache["h2"], direct["h2"].astype(np.float32))
    with pytest.raises(KeyError, match="no embedding for sequence hash nope"):
        cache["nope"]
    with pytest.raises(ValueError, match="layers \\[7\\] requested, model has 4 layers"):
        embed_proteins(tiny_checkpoint, pairs, [7], tmp_path / "x.parquet", SETTINGS, device=CPU)


def test_chain_sequences_are_runs_of_chain_ids():
    assert chain_sequences("ABCDE", ("A", "A", "B", "B", "A")) == [
        (sequence_hash("AB"), "AB"), (sequence_hash("CD"), "CD"), (sequence_hash("E"), "E")
    ]


def test_multi_chain_protein_is_its_chains_embedded_alone(tiny_checkpoint, tmp_path):
    rng = random.Random(0)
    heavy, light = _sequence(rng, 40), _sequence(rng, 25)
    complex_ = _record("complex", [("H", heavy), ("L", light)])
    cache = _cache(tiny_checkpoint, [complex_], [1, 4], tmp_path)
    model, alphabet = load_esm(tiny_checkpoint)
    alone = embed_sequences(model, alphabet, {"H": heavy, "L": light}, [1, 4], EmbedSettings(64, 1022, 256), device=CPU)
    got = cache.protein(complex_)
    assert got.shape == (65, 2, 32) and got.dtype == np.float32
    _assert_float16_equal(got, np.concatenate([alone["H"], alone["L"]]))
    # a chain differs from the same residues embedded as one sequence: ESM sees single chains
    joined = embed_sequences(model, alphabet, {"j": heavy + light}, [4], SETTINGS, device=CPU)
    assert not np.allclose(got[:40, 1], joined["j"][:40, 0], atol=1e-2)


def test_identical_chains_are_embedded_once(tiny_checkpoint, tmp_path, monkeypatch):
    rng = random.Random(1)
    targets = [_sequence(rng, 30 + 10 * t) for t in range(3)]
    decoys = [_record(f"T{t}_decoy{d}", [("A", seq)], group=f"T{t}") for t, seq in enumerate(targets) for d in range(40)]
    dimer = _record("dimer", [("A", targets[0]), ("B", targets[0])])
    rows = []
    real = bihmf.esm.layer_representations
    monkeypatch.setattr(bihmf.esm, "layer_representations", lambda m, tokens, layers: rows.append(len(tokens)) or real(m, tokens, layers))
    cache = _cache(tiny_checkpoint, [*decoys, dimer], [4], tmp_path)
    assert sum(rows) == 3  # 121 proteins, 122 chains, 3 distinct sequences
    first, other = cache.protein(decoys[0]), cache.protein(decoys[39])
    np.testing.assert_array_equal(first, other)
    np.testing.assert_array_equal(cache.protein(dimer), np.concatenate([first, first]))


def test_shard_assignment_is_stable_and_partitions_the_chains(tiny_checkpoint, tmp_path):
    assert [shard_of(sequence_hash(s), 7) for s in ("MKTAYIAKQR", "GSHSMRYFF", "ACDE")] == [4, 4, 6]
    rng = random.Random(2)
    records = [_record(f"p{i}", [("A", _sequence(rng, 20 + i))]) for i in range(12)]
    cache = _cache(tiny_checkpoint, records, [2, 4], tmp_path, n_shards=3)
    for shard in range(3):
        keys = pq.read_table(tmp_path / shard_name(shard, 3), columns=["seq_hash"])["seq_hash"].to_pylist()
        assert keys and all(shard_of(key, 3) == shard for key in keys)
    single = _cache(tiny_checkpoint, records[::-1], [2, 4], tmp_path / "one")
    for record in records:
        _assert_float16_equal(cache.protein(record), single.protein(record))


def test_killed_shard_job_resumes_to_identical_bytes(tiny_checkpoint, tmp_path, killed_at_embed_call):
    rng = random.Random(3)
    records = [_record(f"p{i}", [("A", _sequence(rng, 30))]) for i in range(10)]
    small = {"row_group_bytes": 1, "part_residues": 60}  # one chain per row group, two per part
    complete = tmp_path / "complete"
    _cache(tiny_checkpoint, records, [1, 4], complete, **small)
    proteins = tmp_path / "proteins.parquet"
    write_proteins(records, proteins)
    out = tmp_path / "resumed" / shard_name(0, 1)

    with killed_at_embed_call(3):
        embed_shard(tiny_checkpoint, proteins, [1, 4], 0, 1, out, SETTINGS, device=CPU, **small)
    parts = out.with_name(out.stem + ".parts")
    assert not out.exists() and len(list(parts.glob("part-*.parquet"))) == 2
    (parts / ".part-00002-0123456789abcdef.parquet.x1y2.tmp").write_bytes(b"PAR1 half a part")  # killed mid-write
    # a different setting must not reuse those parts
    assert embed_shard(tiny_checkpoint, proteins, [4], 0, 1, out.with_name("other.parquet"), SETTINGS, device=CPU, **small) == 10
    assert embed_shard(tiny_checkpoint, proteins, [1, 4], 0, 1, out, SETTINGS, device=CPU, **small) == 6
    assert out.read_bytes() == (complete / shard_name(0, 1)).read_bytes()
    assert not parts.exists()


def test_reader_decodes_only_the_row_group_it_needs(tiny_checkpoint, tmp_path, monkeypatch):
    rng = random.Random(4)
    records = [_record(f"p{i}", [("A", _sequence(rng, 25))]) for i in range(8)]
    cache = _cache(tiny_checkpoint, records, [2, 4], tmp_path, row_group_bytes=2 * 64 * 50)  # two chains per row group
    shard = pq.ParquetFile(tmp_path / shard_name(0, 1))
    assert shard.num_row_groups == 4
    column = shard.metadata.row_group(0).column(2)  # one fixed-size value per residue (format 2), stored as is
    assert column.physical_type == "FIXED_LEN_BYTE_ARRAY" and column.compression == "UNCOMPRESSED"
    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, **kw: reads.append(i) or real(self, i, **kw))
    model, alphabet = load_esm(tiny_checkpoint)
    direct = embed_sequences(model, alphabet, {"p5": records[5].sequence}, [2, 4], SETTINGS, device=CPU)
    _assert_float16_equal(cache.protein(records[5]), direct["p5"])
    cache.protein(records[4])  # same row group: already decoded
    assert reads == [2]


def test_embed_settings_go_from_the_config_into_the_cache_and_back(tiny_checkpoint, tmp_path, demo_config):
    settings = EmbedSettings.from_config({**demo_config["esm"], "window": 64, "window_overlap": 16})
    assert settings == EmbedSettings(token_budget=4096, window=64, window_overlap=16)
    record = _record("p0", [("A", _sequence(random.Random(6), 150))])
    cache = _cache(tiny_checkpoint, [record], [2, 4], tmp_path, settings=settings)
    shard = file_metadata(tmp_path / shard_name(0, 1))
    assert {key: shard[key] for key in ("window", "window_overlap")} == {"window": "64", "window_overlap": "16"}
    read_back = EmbedSettings.from_cache(cache.metadata, token_budget=40)
    assert read_back == EmbedSettings(token_budget=40, window=64, window_overlap=16)
    model, alphabet = load_esm(tiny_checkpoint)
    direct = embed_sequences(model, alphabet, {"p0": record.sequence}, [2, 4], read_back, device=CPU)
    _assert_float16_equal(cache.protein(record), direct["p0"])


def test_cache_refuses_what_it_was_not_built_with(tiny_checkpoint, tmp_path):
    rng = random.Random(5)
    records = [_record(f"p{i}", [("A", _sequence(rng, 20))]) for i in range(6)]
    cache = _cache(tiny_checkpoint, records, [2, 4], tmp_path)
    index = tmp_path / "index.parquet"
    assert EmbeddingCache(index, layers=[2, 4], checkpoint_sha256=cache.metadata["checkpoint_sha256"]).layers == [2, 4]
    with pytest.raises(ValueError, match=r"built for layers \[2, 4\], asked for \[4\]"):
        EmbeddingCache(index, layers=[4])
    with pytest.raises(ValueError, match="built from checkpoint sha256"):
        EmbeddingCache(index, checkpoint_sha256="0" * 64)
    proteins = tmp_path / "proteins.parquet"
    mixed = [tmp_path / "mixed" / shard_name(i, 2) for i in range(2)]
    for i, layers in enumerate(([2, 4], [4])):
        embed_shard(tiny_checkpoint, proteins, layers, i, 2, mixed[i], SETTINGS, device=CPU)
    with pytest.raises(ValueError, match=r"metadata \['layers'\] differs"):
        write_index(tmp_path / "mixed" / "index.parquet", mixed, read_chains(proteins))
    with pytest.raises(ValueError, match="1 chains have no embedding"):
        write_index(tmp_path / "x.parquet", [tmp_path / shard_name(0, 1)], [*read_chains(proteins), "f" * 64])


def test_released_names_resolve_to_fair_esm_urls_and_others_are_refused():
    from bihmf.esm_checkpoint import released_checkpoint

    urls = released_checkpoint("esm2_t33_650M_UR50D")
    assert urls["model"]["url"] == "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t33_650M_UR50D.pt"
    assert urls["regression"]["url"].endswith("/regression/esm2_t33_650M_UR50D-contact-regression.pt")
    with pytest.raises(ValueError, match="not a released ESM-2"):
        released_checkpoint("esm2_t33_650M_typo")


def test_local_checkpoint_pair_is_copied_and_verified(tiny_checkpoint, tmp_path):
    from bihmf.download import ChecksumError
    from bihmf.io import file_digest
    from bihmf.esm_checkpoint import provide_checkpoint

    pair = {
        "model": {"url": f"file://{tiny_checkpoint}", "checksum": f"sha256:{file_digest(tiny_checkpoint, 'sha256')}"},
        "regression": {"url": f"file://{regression_path(tiny_checkpoint)}", "checksum": None},
    }
    out = tmp_path / "resources" / "esm2_t4_test_random.pt"
    provide_checkpoint({"name": "esm2_t4_test_random", "checkpoint": pair}, out, tmp_path / "dl", tmp_path)
    assert load_esm(out)[0].num_layers == 4
    pair["model"]["checksum"] = "sha256:" + "0" * 64
    with pytest.raises(ChecksumError):
        provide_checkpoint({"name": "esm2_t4_test_random", "checkpoint": pair}, tmp_path / "other" / "esm2_x.pt", tmp_path / "dl2", tmp_path)



def test_a_checkpoint_url_gets_its_own_cache_entry_and_the_lock_holds_the_weights(tiny_checkpoint, tmp_path, capsys):
    """Repointing esm.checkpoint at other weights under the same model name fetches the new
    file (the cache was keyed by file name: the old weights came back); ``bihmf lock`` records
    the pair, and weights that differ from the lock are named and never published."""
    from bihmf.cli import main as bihmf_main
    from bihmf.esm_checkpoint import provide_checkpoint, write_random_checkpoint
    from bihmf.io import file_digest, recorded_sha256
    from bihmf.lock import LockDriftError

    other = tmp_path / "other" / tiny_checkpoint.name
    write_random_checkpoint(other, num_layers=4, embed_dim=32, attention_heads=4, seed=1)

    def pair(model: pathlib.Path) -> dict:
        return {"name": "esm2_t4_test_random", "checkpoint": {
            "model": {"url": f"file://{model}", "checksum": None},
            "regression": {"url": f"file://{regression_path(model)}", "checksum": None}}}

    downloads, lock_file = tmp_path / "dl", tmp_path / "bihmf.lock.yaml"
    out = tmp_path / "resources" / tiny_checkpoint.name
    provide_checkpoint(pair(tiny_checkpoint), out, downloads, tmp_path, lock_file)
    provide_checkpoint(pair(other), out, downloads, tmp_path, lock_file)
    assert file_digest(out, "sha256") == file_digest(other, "sha256") != file_digest(tiny_checkpoint, "sha256")
    assert recorded_sha256(out) == file_digest(out, "sha256")  # the digest taken before the copy, recorded for the embed jobs

    assert bihmf_main(["lock", "--downloads", str(downloads), "--lock", str(lock_file)]) == 0
    assert "locked 2 files of 0 datasets and 1 ESM checkpoints" in capsys.readouterr().out
    model_url = f"file://{other}"
    assert yaml.safe_load(lock_file.read_text())["checkpoints"]["esm2_t4_test_random"][model_url] == f"sha256:{file_digest(other, 'sha256')}"

    write_random_checkpoint(other, num_layers=4, embed_dim=32, attention_heads=4, seed=2)  # changed upstream
    shutil.rmtree(downloads / "seen")
    for cached in downloads.rglob(other.name):  # a fresh machine: nothing cached
        cached.unlink()
    fresh = tmp_path / "fresh" / tiny_checkpoint.name
    with pytest.raises(LockDriftError, match=rf"1 files of ESM checkpoint esm2_t4_test_random differ from .*\n  {model_url}: locked sha256:"):
        provide_checkpoint(pair(other), fresh, downloads, tmp_path, lock_file)
    assert not fresh.exists()

def test_only_the_checkpoints_own_settings_can_fetch_it_again():
    """The checkpoint rule's params: a new precision, token budget, window or shard count re-runs
    the embed jobs, never the (multi-GB) checkpoint download; a new checkpoint does."""
    from bihmf.benchmark import load_config
    from bihmf.esm_checkpoint import checkpoint_source

    root = pathlib.Path(__file__).parents[1]
    esm = load_config(root / "config" / "demo.yaml")["esm"]
    run_differently = {**esm, "precision": "float16", "token_budget": 1, "window": 100, "window_overlap": 10, "shards": 7}
    assert checkpoint_source(run_differently) == checkpoint_source(esm)
    other_weights = {**esm, "random_init": {**esm["random_init"], "seed": 1}}
    assert checkpoint_source(other_weights) != checkpoint_source(esm)
    assert "checkpoint_source(ESM_MODELS[wc.esm])" in (root / "rules" / "download.smk").read_text()
