"""Which ESM layers a run reads: one ``LayerChoice`` that the embed plan, the fusion and the cost
report all ask, and the cache metadata it starts from, typed once (``CacheInfo``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bihmf.batching import collate, protein_graph
from bihmf.data.ppbs import parse
from bihmf.esm_cache import FORMAT, CacheInfo, EmbeddingCache
from bihmf.models.fusion import FUSIONS, FusionContext, LayerChoice, cached_layers, layers_read, loaded_layers
from bihmf.models.model import build_model
from bihmf.report.costs import CacheSize, esm_layers_read
from bihmf.run import RunRecord

ESM_DIM, ESM_DEPTH = 8, 6
SLOTS = (1, 2, 3, 4, 5, 6)  # every layer cached: a fusion reading one it should not is caught
CHOICES = {  # model section -> the layers the hierarchical fusions pair with 3 GNN depths
    "evenly": ({"num_layers": 3, "esm_layers": None, "layer_pairing": "evenly"}, [2, 4, 6]),
    "last": ({"num_layers": 3, "esm_layers": None, "layer_pairing": "last"}, [4, 5, 6]),
    "explicit": ({"num_layers": 3, "esm_layers": [5, 1, 3], "layer_pairing": "last"}, [5, 1, 3]),
}
METADATA = {"format": FORMAT, "checkpoint": "esm2_t6_8M_UR50D.pt", "checkpoint_sha256": "e" * 64, "embed_dim": "8",
            "esm_depth": "6", "layers": "[2, 4, 6]", "dtype": "float16", "window": "1022", "window_overlap": "256", "n_shards": "1"}
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def graph(demo_raw, demo_spec):
    records, _ = parse(demo_raw, demo_spec)
    record = min(records, key=lambda r: (len(r.sequence), r.protein_id))
    rows = np.random.default_rng(0).standard_normal((len(record.sequence), len(SLOTS), ESM_DIM)).astype(np.float32)
    return collate([protein_graph(record, rows)], torch.device("cpu"))


@pytest.mark.parametrize("choice", sorted(CHOICES))
@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_a_fusion_reads_exactly_the_layers_its_choice_names(fusion, choice, graph):
    """Under every pairing, the slots a built model takes gradient from are those of the layers
    the choice says the fusion reads: what the embed plan caches and a job loads."""
    section, paired = CHOICES[choice]
    model_cfg = {"hidden_dim": 8, "vector_dim": 2, "knn": 6, "dropout": 0.0, **section}
    layer_choice = LayerChoice.of(model_cfg, ESM_DEPTH)
    read = layers_read(fusion, layer_choice)
    assert set(read) <= set(cached_layers([fusion], layer_choice))
    assert set(read) == {"hidden": set(paired), "last": {ESM_DEPTH}, "none": set()}[_rule(fusion)]
    encoder = "gvp" if FUSIONS[fusion].uses_structure else "none"
    torch.manual_seed(0)
    model = build_model(encoder, fusion, "residue_binary", model_cfg, FusionContext.of(model_cfg, ESM_DIM, ESM_DEPTH, SLOTS))
    batch = graph.clone()
    batch.esm = esm = graph.esm.detach().clone().requires_grad_(True)
    model(batch).sum().backward()
    reached = {layer for slot, layer in enumerate(SLOTS) if esm.grad is not None and esm.grad[:, slot].abs().sum() > 0}
    assert reached == set(read)
    assert loaded_layers(fusion, layer_choice, SLOTS) == tuple(sorted(set(read)))


def _rule(fusion: str) -> str:
    if fusion in ("bihmf_local", "bihmf_global", "token"):
        return "hidden"
    return "none" if fusion == "struct_only" else "last"


def test_the_cost_report_counts_the_layers_of_the_runs_pairing(tmp_path):
    """A ``layer_pairing: last`` run reads layers 4, 5, 6 of a cache holding just those: 3 layers
    (the report once applied the evenly rule and counted 2)."""
    run = RunRecord(tmp_path / "metrics.json", "d", "gvp", "bihmf_local", 0, "residue_binary", {}, 1, 1,
                    {"model_config": CHOICES["last"][0]})
    assert esm_layers_read(run, CacheSize(1.0, (4, 5, 6), ESM_DEPTH)) == 3


def test_cache_metadata_is_typed_once():
    info = CacheInfo.parse({**METADATA, "extra": "kept elsewhere"}, "index.parquet")
    assert (info.embed_dim, info.esm_depth, info.layers, info.window, info.n_shards) == (8, 6, (2, 4, 6), 1022, 1)
    assert CacheInfo.parse({**METADATA, "window": "none", "window_overlap": "none"}, "x").window is None  # imported embeddings


@pytest.mark.parametrize(("change", "message"), [
    ({"embed_dim": None}, r"lacks \['embed_dim'\]"),
    ({"esm_depth": "six"}, "malformed ESM cache metadata"),
    ({"layers": "[2, 4"}, "malformed ESM cache metadata"),
])
def test_a_cache_with_missing_or_bad_metadata_is_refused_naming_the_file(tmp_path: Path, change, message):
    metadata = {key: value for key, value in {**METADATA, **change}.items() if value is not None}
    index = tmp_path / "index.parquet"
    table = pa.table({"seq_hash": ["a"], "shard": [0], "row_group": [0], "row": [0]})
    pq.write_table(table.replace_schema_metadata(metadata), index)
    with pytest.raises(ValueError, match=f"{re.escape(str(index))}: .*{message}"):
        EmbeddingCache(index)
