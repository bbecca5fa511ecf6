"""Training on the demo data: loss goes down, runs are deterministic, bad input is explicit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bihmf.data import preprocess_dataset
from bihmf.esm_cache import EmbedSettings
from bihmf.esm_writer import embed_proteins
from bihmf.data.schema import read_proteins
from bihmf.models.fusion import LayerChoice, cached_layers
from bihmf.batching import residue_budget_batches
from bihmf.run import RunSpec, read_record
from bihmf.engine import NonFiniteLossError, lr_factor
from bihmf.training import train_run


@pytest.fixture(scope="module")
def demo_tables(demo_raw, demo_spec, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    preprocess_dataset(demo_raw, demo_spec, out / "proteins.parquet", out / "preprocess_report.json")
    records = read_proteins(out / "proteins.parquet")
    layers = cached_layers(["struct_only", "serial", "bihmf_local"], LayerChoice(2, 4))
    embed_proteins(
        tiny_checkpoint, [(r.seq_hash, r.sequence) for r in records], layers, out / "cache.parquet",
        EmbedSettings(token_budget=4096, window=1022, window_overlap=256), device=torch.device("cpu"),
    )
    return out


@pytest.fixture()
def cfgs(demo_config):
    model = {**demo_config["model"], "hidden_dim": 16, "vector_dim": 4, "num_layers": 2, "knn": 8}
    train = {**demo_config["train"], "epochs": 4, "patience": 10, "lr": 3e-3}
    return model, train


def _run(tables, out, cfgs, fusion="bihmf_local", seed=0):
    model_cfg, train_cfg = cfgs
    spec = RunSpec("ppbs_demo", "gvp", fusion, seed, "residue_binary")
    return train_run(spec, tables / "proteins.parquet", tables / "cache.parquet", model_cfg, train_cfg, out)


def test_fusion_training_lowers_the_loss_and_writes_outputs(demo_tables, cfgs, tmp_path):
    result = _run(demo_tables, tmp_path, cfgs)
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    losses = [float(line.split(",")[1]) for line in curve[1:]]
    assert losses[-1] < losses[0]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result.as_json()))
    assert read_record(tmp_path / "metrics.json") == result
    assert set(saved["metrics"]) == {"val", "test", "test_70", "test_homology"}
    for split in saved["metrics"].values():
        assert all(np.isfinite(v) and 0 <= v <= 1 for v in split.values())
    provenance = saved["provenance"]
    assert provenance["parameters"] > 0 and provenance["device"] == "cpu" and len(provenance["dataset_sha256"]) == 64
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["epoch"] == saved["best_epoch"]


def test_same_seed_same_metrics(demo_tables, cfgs, tmp_path):
    first = _run(demo_tables, tmp_path / "a", cfgs, fusion="serial", seed=3)
    second = _run(demo_tables, tmp_path / "b", cfgs, fusion="serial", seed=3)
    assert first.metrics == second.metrics
    assert (tmp_path / "a" / "curve.csv").read_text().split("seconds")[0] == (tmp_path / "b" / "curve.csv").read_text().split("seconds")[0]


def test_protein_over_the_residue_budget_is_named():
    with pytest.raises(ValueError, match="protein big has 500 residues, more than train.residue_budget=300"):
        residue_budget_batches([100, 500], ["small", "big"], 300, np.array([0, 1]))


def test_batches_respect_the_budget_and_keep_every_protein():
    sizes = [120, 80, 200, 50, 300, 10]
    batches = residue_budget_batches(sizes, [str(i) for i in range(6)], 300, np.array([5, 4, 3, 2, 1, 0]))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(sum(sizes[i] for i in b) <= 300 for b in batches)


def test_non_finite_loss_stops_with_a_clear_error(demo_tables, cfgs, tmp_path, monkeypatch):
    from bihmf.tasks import residue_binary

    real_loss = residue_binary.loss
    monkeypatch.setattr(residue_binary, "loss", lambda logits, graph, head: real_loss(logits, graph, head) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: loss is nan on proteins \['"):
        _run(demo_tables, tmp_path, cfgs)
    assert not (tmp_path / "metrics.json").exists()



def test_the_engine_step_updates_the_weights_and_skips_the_update_on_a_non_finite_loss(demo_tables, cfgs, monkeypatch):
    """The step bench/ and `bihmf plan` take (Engine.step) is training's: one update of the
    weights per step, and none at all when the loss is not finite."""
    import copy

    from bihmf.batching import collate, protein_graph
    from bihmf.engine import Engine
    from bihmf.esm_cache import EmbeddingCache
    from bihmf.models.fusion import FusionContext
    from bihmf.models.model import build_model
    from bihmf.tasks import TASKS, residue_binary

    model_cfg, train_cfg = cfgs
    cache = EmbeddingCache(demo_tables / "cache.parquet")
    records = [r for r in read_proteins(demo_tables / "proteins.parquet") if r.split == "train"][:2]
    context = FusionContext.of(model_cfg, cache.info.embed_dim, cache.info.esm_depth, tuple(cache.layers))
    torch.manual_seed(0)
    model = build_model("gvp", "bihmf_local", "residue_binary", model_cfg, context, {})
    TASKS["residue_binary"].prepare(model.head, np.array([r.target for r in records]))
    engine = Engine.build(model, TASKS["residue_binary"], train_cfg, torch.device("cpu"))
    batch = collate([protein_graph(r, cache.rows(r)) for r in records], torch.device("cpu"))
    before = copy.deepcopy(model.state_dict())
    assert np.isfinite(engine.step(batch))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    after = copy.deepcopy(model.state_dict())
    real_loss = residue_binary.loss
    monkeypatch.setattr(residue_binary, "loss", lambda logits, graph, head: real_loss(logits, graph, head) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        engine.step(batch)
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())


RUN_SCRIPT = """
import json, sys
from pathlib import Path
from bihmf.run import RunSpec
from bihmf.training import train_run
args = json.loads(sys.argv[1])
train_run(RunSpec("ppbs_demo", "gvp", "bihmf_local", 0, "residue_binary"), Path(args["proteins"]), Path(args["cache"]),
          args["model"], args["train"], Path(args["out"]))
"""


def _last_epoch(out: Path) -> int:
    path = out / "last.pt"
    if not path.exists():
        return 0
    try:
        return torch.load(path, weights_only=True)["progress"]["epoch"]
    except Exception:  # being replaced at this very moment
        return 0


def test_sigkilled_run_resumes_to_identical_metrics(demo_tables, cfgs, tmp_path):
    model_cfg, train_cfg = cfgs
    train_cfg = {**train_cfg, "epochs": 6}
    reference = _run(demo_tables, tmp_path / "reference", (model_cfg, train_cfg))

    out = tmp_path / "killed"
    args = json.dumps({"proteins": str(demo_tables / "proteins.parquet"), "cache": str(demo_tables / "cache.parquet"),
                       "model": model_cfg, "train": train_cfg, "out": str(out)})
    process = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _last_epoch(out) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _last_epoch(out)
    assert 2 <= killed_at < 6, f"kill landed after epoch {killed_at}"
    assert not (out / "metrics.json").exists()

    resumed = _run(demo_tables, out, (model_cfg, train_cfg))
    assert resumed.provenance["resumed"] is True
    assert resumed.metrics == reference.metrics
    assert resumed.best_epoch == reference.best_epoch
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # drop the seconds column
    assert strip((out / "curve.csv").read_text()) == strip((tmp_path / "reference" / "curve.csv").read_text())


def test_checkpoint_of_another_config_is_not_resumed(demo_tables, cfgs, tmp_path):
    model_cfg, train_cfg = cfgs
    _run(demo_tables, tmp_path, (model_cfg, {**train_cfg, "epochs": 2}))
    result = _run(demo_tables, tmp_path, (model_cfg, {**train_cfg, "epochs": 2, "lr": 1e-3}))
    assert result.provenance["resumed"] is False


def test_warmup_then_cosine_schedule():
    assert lr_factor(0.0, 0.1) == 0.0
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0.0, 0.0) == pytest.approx(1.0)


def test_time_training_steps_runs_the_training_loop_without_writing(demo_tables, cfgs, tmp_path, monkeypatch):
    from bihmf.batching import protein_graph
    from bihmf.esm_cache import EmbeddingCache
    from bihmf.models.fusion import FusionContext
    from bihmf.models.model import build_model
    from bihmf.engine import time_training_steps

    monkeypatch.chdir(tmp_path)
    model_cfg, train_cfg = cfgs
    cache = EmbeddingCache(demo_tables / "cache.parquet")
    records = [r for r in read_proteins(demo_tables / "proteins.parquet") if r.split == "train"][:3]
    graphs = [protein_graph(r, cache.protein(r)) for r in records]
    context = FusionContext.of(model_cfg, cache.info.embed_dim, cache.info.esm_depth, cache.info.layers)
    spec = RunSpec("ppbs_demo", "gvp", "bihmf_local", 0, "residue_binary")
    model = build_model("gvp", "bihmf_local", "residue_binary", model_cfg, context, {})
    timing = time_training_steps(spec, model, records, graphs, {**train_cfg, "residue_budget": 100_000}, torch.device("cpu"), 2)
    assert timing.steps == 2 and timing.residues == 2 * sum(g.num_nodes for g in graphs)
    assert timing.seconds > 0 and timing.seconds_per_residue == timing.seconds / timing.residues
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())  # backward ran
    assert list(tmp_path.iterdir()) == []


def test_rows_streamed_from_the_cache_give_the_same_run(demo_tables, cfgs, tmp_path, caplog):
    """A job whose rows exceed its memory share streams them per batch; nothing else changes."""
    model_cfg, train_cfg = cfgs
    train_cfg = {**train_cfg, "epochs": 2}
    with caplog.at_level("INFO", logger="bihmf.loader"):
        in_memory = _run(demo_tables, tmp_path / "memory", (model_cfg, train_cfg))
        streamed = _run(demo_tables, tmp_path / "streamed", (model_cfg, {**train_cfg, "mem_mb": 0.001}))
    decisions = [r.getMessage() for r in caplog.records if "ESM rows" in r.getMessage()]
    assert decisions[0].endswith("kept in memory") and decisions[1].endswith("streamed from the cache per batch")
    assert streamed.metrics == in_memory.metrics
    held, read = in_memory.provenance["esm_rows"], streamed.provenance["esm_rows"]  # the choice, in each run's record
    assert (held["rows"], read["rows"]) == ("in memory", "streamed")
    assert held["read_layers"] == read["read_layers"] == 2 and held["rows_mb"] == read["rows_mb"] > read["budget_mb"]
    assert read_record(tmp_path / "streamed" / "metrics.json").provenance["esm_rows"] == read


def test_a_job_reading_no_esm_layer_records_none_read():
    from bihmf.loader import place_rows

    placement = place_rows(None, [], 1000)
    assert (placement.rows, placement.read_layers, placement.rows_mb, placement.in_memory) == ("none read", 0, 0.0, False)


def test_cache_serves_float16_rows_of_the_layers_asked_within_its_bound(demo_tables):
    from bihmf.esm_cache import EmbeddingCache

    cache = EmbeddingCache(demo_tables / "cache.parquet", decoded_bytes=1)
    record = read_proteins(demo_tables / "proteins.parquet")[0]
    full = cache.protein(record)
    last = cache.layers[-1]
    rows = cache.rows(record, [last])
    assert rows.dtype == np.float16 and rows.shape == (len(record.sequence), 1, full.shape[2])
    assert np.array_equal(rows[:, 0].astype(np.float32), full[:, -1])
    assert len(cache._decoded) == 1  # the bound keeps only the group in use
    with pytest.raises(ValueError, match="layers \\[99\\] are not cached"):
        cache.rows(record, [99])


@pytest.mark.parametrize("fusion", ["seq_only", "serial", "parallel", "cross", "bihmf_local", "bihmf_global", "token"])
def test_a_model_reading_only_its_layers_equals_one_reading_the_whole_cache(demo_tables, cfgs, fusion):
    """Training loads only the layers a fusion reads, so its slots number those; the weights,
    and so the outputs, are those of a model built on the whole cache (what predict builds)."""
    from bihmf.batching import collate, protein_graph
    from bihmf.esm_cache import EmbeddingCache
    from bihmf.models.model import build_model
    from bihmf.training import _fusion_context, read_layers

    model_cfg = {**cfgs[0], "dropout": 0.0}
    cache = EmbeddingCache(demo_tables / "cache.parquet")
    read = read_layers(fusion, cache, model_cfg)
    record = read_proteins(demo_tables / "proteins.parquet")[0]
    outputs = []
    for layers in (tuple(cache.layers), read):
        torch.manual_seed(0)
        model = build_model("gvp", fusion, "residue_binary", model_cfg, _fusion_context(cache, model_cfg, layers), {}).eval()
        with torch.no_grad():
            outputs.append(model(collate([protein_graph(record, cache.rows(record, layers))], torch.device("cpu"))))
    assert set(read) <= set(cache.layers) and torch.equal(outputs[0], outputs[1])
    if fusion in ("seq_only", "serial", "parallel", "cross"):  # the last layer only: one of the cache's two
        assert read == (cache.layers[-1],)


def test_an_epochs_batches_follow_from_the_seed_and_the_epoch_alone(demo_tables):
    """What lets the producer prepare the next epoch early and a resumed run draw the same batches."""
    from bihmf.batching import protein_graph
    from bihmf.engine import RunData, epoch_batches

    records = read_proteins(demo_tables / "proteins.parquet")
    graphs = [protein_graph(r, None) for r in records]
    data = RunData(records, graphs, {"train": list(range(len(records)))}, None, Path(), "")
    budget = max(g.num_nodes for g in graphs)
    first = epoch_batches(data, budget, 0, 1)
    assert len(first) > 1 and sorted(i for ids in first for i in ids) == data.splits["train"]
    assert first == epoch_batches(data, budget, 0, 1)
    assert first != epoch_batches(data, budget, 0, 2) and first != epoch_batches(data, budget, 1, 1)


def test_test_predictions_in_batches_equal_those_of_one_protein_at_a_time(demo_tables, cfgs):
    """Each test row keeps its protein when the test proteins go through the model together."""
    from bihmf.batching import protein_graph
    from bihmf.esm_cache import EmbeddingCache
    from bihmf.models.fusion import FusionContext
    from bihmf.models.model import build_model
    from bihmf.tasks import TASKS
    from bihmf.engine import Engine, RunData

    model_cfg, train_cfg = cfgs
    cache = EmbeddingCache(demo_tables / "cache.parquet")
    records = read_proteins(demo_tables / "proteins.parquet")
    graphs = [protein_graph(r, cache.protein(r)) for r in records]
    data = RunData(records, graphs, {}, cache, demo_tables / "cache.parquet", "")
    context = FusionContext.of(model_cfg, cache.info.embed_dim, cache.info.esm_depth, cache.info.layers)
    torch.manual_seed(0)
    model = build_model("gvp", "bihmf_local", "residue_binary", model_cfg, context, {})

    def predictions(budget: int):
        engine = Engine.build(model, TASKS["residue_binary"], {**train_cfg, "residue_budget": budget}, torch.device("cpu"))
        return engine.test_predictions(data).to_pandas()

    one_by_one = predictions(max(g.num_nodes for g in graphs))
    together = predictions(100_000)
    tested = [r for r in records if r.split == "test"]
    assert len(tested) > 1
    assert list(together["protein_id"].unique()) == [r.protein_id for r in tested if (r.labels >= 0).any()]
    assert (together["protein_id"] == one_by_one["protein_id"]).all() and (together["subset"] == one_by_one["subset"]).all()
    assert (together["label"] == one_by_one["label"]).all()
    np.testing.assert_allclose(together["score"], one_by_one["score"], atol=1e-5)


def test_protein_level_tasks_own_one_row_per_graph():
    from torch_geometric.data import Batch, Data

    from bihmf.tasks import TASKS

    batch = Batch.from_data_list([Data(num_nodes=n) for n in (3, 1, 2)])
    for name in ("graph_classification", "graph_regression"):
        assert TASKS[name].prediction_owners(batch).tolist() == [0, 1, 2]


def test_proteins_of_one_sequence_share_their_rows_in_memory(demo_tables):
    """PSR-like decoys: the rows a job keeps are one array per distinct sequence, and the memory
    decision counts them once."""
    from dataclasses import replace

    from bihmf.batching import protein_graph
    from bihmf.esm_cache import EmbeddingCache
    from bihmf.loader import EsmRows

    cache = EmbeddingCache(demo_tables / "cache.parquet")
    first, other = read_proteins(demo_tables / "proteins.parquet")[:2]
    decoys = [replace(first, protein_id=f"decoy{k}", coords=first.coords + k) for k in range(3)] + [other]
    rows = EsmRows(cache, tuple(cache.layers), "all")
    graphs = [protein_graph(r, esm) for r, esm in zip(decoys, rows.held(decoys))]
    assert graphs[0].esm.data_ptr() == graphs[1].esm.data_ptr() == graphs[2].esm.data_ptr() != graphs[3].esm.data_ptr()
    np.testing.assert_array_equal(graphs[2].esm.numpy(), cache.rows(first, cache.layers))
    assert rows.bytes(decoys) == rows.bytes([first]) + rows.bytes([other]) < 4 * rows.bytes([first]) + rows.bytes([other])
