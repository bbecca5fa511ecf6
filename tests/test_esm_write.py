"""The embed stage's write side: chunks written on a background thread, single-part shards written
directly, failed writes named and cleaned up, the checkpoint hashed once per run."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading

import numpy as np
import pytest
import torch

import bihmf.esm_writer
import bihmf.io
from bihmf.esm_checkpoint import load_esm, provide_checkpoint
from bihmf.esm_cache import EmbedSettings, EmbeddingCache, file_metadata, shard_name, write_index
from bihmf.esm_writer import ShardWriteError, embed_proteins, write_shard
from bihmf.io import digest_record, file_digest, recorded_sha256

CPU = torch.device("cpu")
SETTINGS = EmbedSettings(token_budget=512, window=1022, window_overlap=256)
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _chains(seed: int, lengths: list[int]) -> dict[str, str]:
    rng = random.Random(seed)
    return {f"h{i}": "".join(rng.choice(AMINO) for _ in range(n)) for i, n in enumerate(lengths)}


def test_chunks_are_encoded_off_the_job_thread_without_a_part_round_trip(tiny_checkpoint, tmp_path, monkeypatch):
    chains = _chains(0, [300, 260, 120, 410, 90, 1100, 35])  # one chain windowed
    settings = EmbedSettings(token_budget=64, window=1022, window_overlap=256)  # chunks close once they hold 512 residues
    calls, threads = [], set()
    real_embed, real_write = bihmf.esm_writer.embed_sequences, bihmf.esm_writer.write_row_group
    monkeypatch.setattr(bihmf.esm_writer, "embed_sequences", lambda *a, **kw: calls.append(len(a[2])) or real_embed(*a, **kw))
    monkeypatch.setattr(bihmf.esm_writer, "write_row_group", lambda w, t: threads.add(threading.current_thread().name) or real_write(w, t))
    monkeypatch.setattr(bihmf.esm_writer, "read_row_groups", lambda path: pytest.fail(f"{path} read back for a one-part shard"))
    shard = tmp_path / "cache" / shard_name(0, 1)
    assert write_shard(tiny_checkpoint, chains, [2, 4], 0, 1, shard, settings, device=CPU, row_group_bytes=1) == len(chains)
    assert calls == [2, 2, 2, 1]
    assert threads and threading.main_thread().name not in threads
    assert sorted(p.name for p in shard.parent.iterdir()) == [f".{shard.name}.lock", shard.name]  # the shard and its writer lock
    write_index(shard.with_name("index.parquet"), [shard], chains)
    cache = EmbeddingCache(shard.with_name("index.parquet"))
    model, alphabet = load_esm(tiny_checkpoint)
    for key, seq in chains.items():  # a chunk boundary moves no residue between chains
        alone = real_embed(model, alphabet, {key: seq}, [2, 4], SETTINGS, device=CPU)[key]
        np.testing.assert_allclose(cache[key], alone.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_failed_write_names_the_shard_keeps_finished_parts_and_resumes(tiny_checkpoint, tmp_path, monkeypatch):
    chains = _chains(1, [30] * 6)
    small = {"row_group_bytes": 1, "part_residues": 60}  # one chain per row group, two per part
    complete = tmp_path / "complete.parquet"
    write_shard(tiny_checkpoint, chains, [1, 4], 0, 1, complete, SETTINGS, device=CPU, **small)
    real = bihmf.esm_writer.embedding_table

    def full_disk_at_third_chain(schema, keys, arrays):
        if list(chains)[2] in keys:  # part 1's first row group, in the shard and in its part
            raise OSError("No space left on device")
        return real(schema, keys, arrays)

    monkeypatch.setattr(bihmf.esm_writer, "embedding_table", full_disk_at_third_chain)
    out = tmp_path / "shard" / "shard-0-of-1.parquet"
    with pytest.raises(ShardWriteError, match=f"{out}: writing the shard failed: No space left on device"):
        write_shard(tiny_checkpoint, chains, [1, 4], 0, 1, out, SETTINGS, device=CPU, **small)
    parts = out.with_name(out.stem + ".parts")
    assert [p.name[:10] for p in parts.iterdir()] == ["part-00000"]  # part 1 lost a row group: never committed
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))
    monkeypatch.setattr(bihmf.esm_writer, "embedding_table", real)
    assert write_shard(tiny_checkpoint, chains, [1, 4], 0, 1, out, SETTINGS, device=CPU, **small) == 4
    assert out.read_bytes() == complete.read_bytes() and not parts.exists()


def test_checkpoint_is_hashed_once_by_its_rule_and_the_record_is_checked(tmp_path, monkeypatch):
    checkpoint = tmp_path / "resources" / "esm2_t2_test_random.pt"
    provide_checkpoint({"random_init": {"num_layers": 2, "embed_dim": 32, "attention_heads": 4, "seed": 0}}, checkpoint, tmp_path, tmp_path)
    digest = file_digest(checkpoint, "sha256")
    assert json.loads(digest_record(checkpoint).read_text())["sha256"] == digest
    hashed = []
    real = bihmf.io.file_digest
    monkeypatch.setattr(bihmf.io, "file_digest", lambda path, algorithm: hashed.append(path) or real(path, algorithm))
    out = tmp_path / "cache" / "index.parquet"
    embed_proteins(checkpoint, [("h", "MKTAYIAKQR")], [2], out, SETTINGS, device=CPU)
    assert hashed == [] and file_metadata(out)["checkpoint_sha256"] == digest
    replacement = checkpoint.with_name("replacement.pt")
    shutil.copyfile(checkpoint, replacement)
    os.replace(replacement, checkpoint)  # another file now: the record no longer vouches for it
    assert recorded_sha256(checkpoint) == digest and hashed == [checkpoint]
    digest_record(checkpoint).write_text("{not json")
    assert recorded_sha256(checkpoint) == digest and len(hashed) == 2
    digest_record(checkpoint).unlink()
    assert recorded_sha256(checkpoint) == digest and len(hashed) == 3
