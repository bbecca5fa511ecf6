"""esm.precision: the config key, what the forward pass does with it, and the cache's identity."""

from __future__ import annotations

import copy
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from bihmf.benchmark import esm_models, validate_config
from bihmf.config import SCHEMA_PATH, ConfigError
from bihmf.data.schema import sequence_hash
from bihmf.esm import embed_sequences
from bihmf.esm_writer import embed_proteins, write_shard
from bihmf.esm_cache import PRECISIONS, EmbedSettings, EmbeddingCache, file_metadata, shard_name, write_index
from bihmf.esm_checkpoint import load_esm
from conftest import ROOT

CPU = torch.device("cpu")
DEMO = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _chains(seed: int, n: int, length: int) -> dict[str, str]:
    rng = random.Random(seed)
    sequences = ["".join(rng.choice(AMINO) for _ in range(length + i)) for i in range(n)]
    return {sequence_hash(seq): seq for seq in sequences}


def _settings(precision: str) -> EmbedSettings:
    return EmbedSettings(token_budget=512, window=1022, window_overlap=256, precision=precision)


def _demo(**esm) -> dict:
    config = copy.deepcopy(DEMO)
    config["esm"].update(esm)
    return config


# --- the config key --------------------------------------------------------------------------------

def test_precision_defaults_to_float32_and_names_the_key_when_wrong() -> None:
    assert yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["esm"]["properties"]["precision"]["enum"] == list(PRECISIONS)
    config = validate_config(DEMO)
    assert config["esm"]["precision"] == "float32"
    assert EmbedSettings.from_config(config["esm"]).precision == "float32"
    assert EmbedSettings.from_config(validate_config(_demo(precision="bfloat16"))["esm"]).precision == "bfloat16"
    with pytest.raises(ConfigError, match=r"esm/precision: 'float8' is not one of \['float32', 'float16', 'bfloat16'\]"):
        validate_config(_demo(precision="float8"))
    with pytest.raises(ValueError, match="esm.precision 'half': expected one of float32, float16, bfloat16"):
        EmbedSettings(512, 1022, 256, "half")


def test_each_precision_runs_on_the_cpu_and_only_float32_is_the_plain_forward(tiny_checkpoint) -> None:
    model, alphabet = load_esm(tiny_checkpoint)
    chains = _chains(1, 3, 60)
    out = {p: embed_sequences(model, alphabet, chains, [2, 4], _settings(p), device=CPU) for p in ("float32", "float16", "bfloat16")}
    plain = embed_sequences(model, alphabet, chains, [2, 4], EmbedSettings(512, 1022, 256), device=CPU)
    for key in chains:
        np.testing.assert_array_equal(out["float32"][key], plain[key])
        for reduced in ("float16", "bfloat16"):
            assert not np.array_equal(out[reduced][key], plain[key]), f"{reduced} computed the same numbers as float32"
            a, b = out[reduced][key].astype(np.float32), plain[key].astype(np.float32)
            cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            assert cosine.min() > 0.99


# --- provenance and identity -----------------------------------------------------------------------

def test_the_cache_records_its_precision_and_refuses_another(tiny_checkpoint, tmp_path) -> None:
    chains = _chains(2, 4, 30)
    index = tmp_path / "index.parquet"
    embed_proteins(tiny_checkpoint, chains.items(), [2, 4], index, _settings("float16"), device=CPU)
    assert file_metadata(tmp_path / shard_name(0, 1))["precision"] == "float16"
    cache = EmbeddingCache(index, precision="float16")
    assert cache.metadata["precision"] == "float16"  # what a run's provenance copies (esm_cache)
    assert EmbedSettings.from_cache(cache.metadata, token_budget=40) == EmbedSettings(40, 1022, 256, "float16")
    with pytest.raises(ValueError, match="computed at esm.precision float16, asked for float32; two precisions never share a cache"):
        EmbeddingCache(index, precision="float32")
    unrecorded = {k: v for k, v in cache.metadata.items() if k != "precision"}  # a cache from before the key
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(index).replace_schema_metadata(unrecorded), old)
    with pytest.raises(ValueError, match="asked for esm.precision float32, but it was built before esm.precision was recorded"):
        EmbeddingCache(old, precision="float32")
    with pytest.raises(ValueError, match="records no precision"):
        EmbedSettings.from_cache(unrecorded, token_budget=40)


def test_shards_of_two_precisions_are_not_one_cache(tiny_checkpoint, tmp_path) -> None:
    chains = _chains(3, 6, 20)
    shards = [tmp_path / shard_name(i, 2) for i in range(2)]
    for i, precision in enumerate(("float32", "bfloat16")):
        mine = {key: seq for key, seq in chains.items() if int(key[:16], 16) % 2 == i}
        write_shard(tiny_checkpoint, mine, [4], i, 2, shards[i], _settings(precision), device=CPU)
    with pytest.raises(ValueError, match=r"metadata \['precision'\] differs"):
        write_index(tmp_path / "index.parquet", shards, chains)


def test_parts_of_a_killed_job_are_not_reused_at_another_precision(tiny_checkpoint, tmp_path, killed_at_embed_call) -> None:
    chains = _chains(4, 8, 30)
    out = tmp_path / shard_name(0, 1)
    small = {"row_group_bytes": 1, "part_residues": 60}  # one chain per row group, two per part
    with killed_at_embed_call(3):
        write_shard(tiny_checkpoint, chains, [4], 0, 1, out, _settings("float32"), device=CPU, **small)
    assert write_shard(tiny_checkpoint, chains, [4], 0, 1, out, _settings("float16"), device=CPU, **small) == len(chains)
    assert file_metadata(out)["precision"] == "float16"


def test_the_embed_jobs_get_the_precision_and_one_model_name_has_one(tiny_checkpoint) -> None:
    """The embed rule's params are the model's esm settings, so a changed precision re-runs its jobs;
    a variant may not give the main model's name (its cache folder) another precision."""
    main = DEMO["esm"]["name"]
    assert esm_models(validate_config(_demo(precision="float16")))[main]["precision"] == "float16"
    assert esm_models(validate_config(DEMO))[main]["precision"] == "float32"
    same_name = {"name": "abl", "datasets": ["ppbs_demo"], "encoders": ["gvp"], "fusions": ["bihmf_local"], "seeds": [0],
                 "variants": [{"name": "half", "esm": {**DEMO["esm"], "precision": "float16"}}]}
    with pytest.raises(ConfigError, match=f"esm.name '{main}' has other settings than in the main esm"):
        validate_config({**copy.deepcopy(DEMO), "ablations": [same_name]})
    renamed = copy.deepcopy(same_name)
    renamed["variants"][0]["esm"]["name"] = "esm2_t6_demo_random_fp16"
    models = esm_models(validate_config({**copy.deepcopy(DEMO), "ablations": [renamed]}))
    assert {name: esm["precision"] for name, esm in models.items()} == {main: "float32", "esm2_t6_demo_random_fp16": "float16"}
