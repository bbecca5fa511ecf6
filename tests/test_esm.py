"""ESM checkpoints (fair-esm format, weights-only), windowed embedding, the Parquet cache."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import pytest
import torch

from bihmf.esm import EmbeddingCache, embed_proteins, embed_sequences, load_esm, regression_path, window_spans

CPU = torch.device("cpu")


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


@pytest.mark.parametrize(("length", "window", "overlap"), [(5, 10, 3), (10, 10, 3), (11, 10, 3), (2500, 1022, 256), (997, 100, 40)])
def test_window_spans_cover_every_residue_once(length, window, overlap):
    spans = window_spans(length, window, overlap)
    kept = [i for _, _, a, b in spans for i in range(a, b)]
    assert kept == list(range(length))
    for start, end, keep_start, keep_end in spans:
        assert 0 <= start <= keep_start < keep_end <= end <= length and end - start <= window


def test_long_sequence_is_windowed_not_truncated(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 2500))
    out = embed_sequences(model, alphabet, {"long": seq, "short": seq[:300]}, [2, 4], token_budget=4096, window=1022, overlap=256, device=CPU)
    assert out["long"].shape == (2500, 2, 32) and out["long"].dtype == np.float16
    assert np.isfinite(out["long"]).all()
    # the first window's kept part equals embedding that prefix on its own
    prefix = embed_sequences(model, alphabet, {"p": seq[:1022]}, [2, 4], token_budget=4096, window=1022, overlap=256, device=CPU)
    np.testing.assert_array_equal(out["long"][:500], prefix["p"][:500])


def test_batching_does_not_change_embeddings(tiny_checkpoint):
    model, alphabet = load_esm(tiny_checkpoint)
    seqs = {"a": "MKTAYIAKQRQISFVKSHFSRQ", "b": "GSHSMRYFFTSVSRPGRGEPRFIAVGYVDDTQ", "c": "ACDE"}
    together = embed_sequences(model, alphabet, seqs, [4], token_budget=4096, window=1022, overlap=256, device=CPU)
    alone = embed_sequences(model, alphabet, seqs, [4], token_budget=40, window=1022, overlap=256, device=CPU)
    for key in seqs:
        np.testing.assert_allclose(together[key].astype(np.float32), alone[key].astype(np.float32), atol=2e-3)


def test_cache_roundtrip_dedup_and_metadata(tiny_checkpoint, tmp_path):
    out = tmp_path / "cache.parquet"
    pairs = [("h1", "MKTAYIAKQR"), ("h2", "GSHSMRYFF"), ("h1", "MKTAYIAKQR")]
    assert embed_proteins(tiny_checkpoint, pairs, [1, 4], out, token_budget=512, window=1022, overlap=256, device=CPU) == 2
    cache = EmbeddingCache(out)
    assert cache.layers == [1, 4] and cache.metadata["esm_depth"] == "4" and cache.metadata["embed_dim"] == "32"
    model, alphabet = load_esm(tiny_checkpoint)
    direct = embed_sequences(model, alphabet, {"h2": "GSHSMRYFF"}, [1, 4], token_budget=512, window=1022, overlap=256, device=CPU)
    np.testing.assert_array_equal(cache["h2"], direct["h2"].astype(np.float32))
    with pytest.raises(KeyError, match="no embedding for sequence hash nope"):
        cache["nope"]
    with pytest.raises(ValueError, match="layers \\[7\\] requested, model has 4 layers"):
        embed_proteins(tiny_checkpoint, pairs, [7], tmp_path / "x.parquet", token_budget=512, window=1022, overlap=256, device=CPU)
