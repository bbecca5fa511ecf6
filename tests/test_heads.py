"""Protein-level readouts: the default (mean + attention) is built exactly as before readouts
could be chosen; recipe: published picks each encoder's published readout for the benchmarks
its paper trained; each published readout computes what its reference defines."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch_geometric.utils import scatter

from bihmf.batching import collate, protein_graph
from bihmf.benchmark import validate_config
from bihmf.data.ppbs import parse
from bihmf.models.fusion import FusionContext, LayerChoice
from bihmf.models.model import build_model
from bihmf.benchmark import run_settings
from bihmf.recipes import RECIPES_PATH, load_recipes
from bihmf.tasks.heads import DEFAULT_READOUT, READOUTS, MeanAttentionPool, NodePool

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = FusionContext(8, (1,), LayerChoice(2, 1))
CFG = {"hidden_dim": 16, "vector_dim": 4, "num_layers": 2, "knn": 8, "dropout": 0.0, "esm_layers": None}


@pytest.fixture(scope="module")
def batch(demo_raw, demo_spec):
    records = sorted(parse(demo_raw, demo_spec)[0], key=lambda r: r.protein_id)[:3]
    return collate([protein_graph(r, None) for r in records], torch.device("cpu"))


def _model(readout: str | None, task: str = "graph_regression", options: dict | None = None):
    torch.manual_seed(0)
    cfg = CFG if readout is None else {**CFG, "readout": readout}
    return build_model("gvp", "struct_only", task, cfg, CONTEXT, options).eval()


def test_default_readout_is_built_as_before(batch):
    """Without model.readout (a run saved before it existed) and with its default, the head is the
    one that existed before: mean + attention pooling, then Linear(2w, w), ReLU, Dropout,
    Linear(w, out), its parameters drawn in that order, so one seed gives the same weights and
    outputs as before readouts could be chosen."""
    legacy, default = _model(None), _model(DEFAULT_READOUT)
    assert isinstance(default.head.pool, MeanAttentionPool)
    assert [type(m) for m in default.head.mlp] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert default.head.mlp[0].in_features == 2 * CFG["hidden_dim"]
    assert [k for k in default.state_dict() if k.startswith("head.")] == [
        "head.target_mean", "head.target_std", "head.pool.score.weight", "head.pool.score.bias",
        "head.mlp.0.weight", "head.mlp.0.bias", "head.mlp.3.weight", "head.mlp.3.bias"]
    for (name, a), (_, b) in zip(legacy.state_dict().items(), default.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(legacy(batch), default(batch))


def test_recipe_none_keeps_the_default_readout():
    written = yaml.safe_load((ROOT / "config.yaml").read_text())
    off = validate_config({**copy.deepcopy(written), "recipe": "none"})
    for dataset, encoder in (("lba30", "gvp"), ("psr", "gearnet"), ("react", "pronet_backbone")):
        assert run_settings(off, written, dataset, encoder).model["readout"] == DEFAULT_READOUT


PUBLISHED_READOUTS = {
    ("lba30", "gvp"): "atom3d_gvp", ("lba60", "gvp"): "atom3d_gvp", ("psr", "gvp"): "atom3d_gvp",
    ("psr", "gearnet"): "gearnet_psr", ("react", "gearnet"): "gearnet_fold", ("react", "gearnet_edge"): "gearnet_fold",
    ("react", "pronet"): "pronet", ("react", "pronet_backbone"): "pronet",
}


@pytest.mark.parametrize(("dataset", "encoder"), [*PUBLISHED_READOUTS, ("ppbs", "gvp"), ("react", "egnn"), ("lba30", "pronet"),
                                                  ("psr", "gearnet_edge")], ids=str)
def test_published_recipe_picks_the_papers_readout(dataset, encoder):
    """Where the encoder's paper trained the benchmark, its readout; elsewhere ours."""
    written = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = validate_config(copy.deepcopy(written))
    assert config["recipe"] == "published"
    expected = PUBLISHED_READOUTS.get((dataset, encoder), DEFAULT_READOUT)
    assert run_settings(config, written, dataset, encoder).model["readout"] == expected


def test_explicit_readout_beats_the_recipe():
    written = yaml.safe_load((ROOT / "config.yaml").read_text())
    written["model"] = {**written["model"], "readout": DEFAULT_READOUT}
    config = validate_config(copy.deepcopy(written))
    settings = run_settings(config, written, "lba30", "gvp")
    assert settings.model["readout"] == DEFAULT_READOUT and "model.readout" in settings.train["recipe"]["overridden"]


def test_atom3d_gvp_readout_is_the_mean_then_the_two_layer_dense(batch):
    model = _model("atom3d_gvp")
    head = model.head
    assert isinstance(head.pool, NodePool) and head.pool.reduce == "mean"
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head.mlp[0].out_features, head.mlp[2].p) == (2 * CFG["hidden_dim"], 0.1)
    with torch.no_grad():
        residues = model.fusion(batch)
        mean = torch.stack([residues[batch.batch == k].mean(0) for k in range(batch.num_graphs)])
        expected = head.mlp[3](torch.relu(head.mlp[0](mean))).squeeze(-1)
        assert torch.allclose(model(batch), expected, atol=1e-6)


@pytest.mark.parametrize(("readout", "reduce", "kinds"), [
    ("pronet", "sum", [nn.Linear, nn.ReLU, nn.Linear]),
    ("gearnet_psr", "sum", [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]),
    ("gearnet_fold", "sum", [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]),
])
def test_published_readouts_have_the_reference_layers(readout, reduce, kinds, batch):
    model = _model(readout, "graph_classification", {"num_classes": 5})
    assert model.head.pool.reduce == reduce and [type(m) for m in model.head.mlp] == kinds
    with torch.no_grad():
        pooled = model.head.pool(model.fusion(batch), batch)
        assert torch.allclose(pooled, scatter(model.fusion(batch), batch.batch, dim=0, reduce=reduce))
        assert model(batch).shape == (batch.num_graphs, 5)


def test_residue_tasks_refuse_a_protein_readout():
    with pytest.raises(ValueError, match="'atom3d_gvp' pools proteins, but task 'residue_binary' predicts per residue"):
        _model("atom3d_gvp", "residue_binary")


def test_every_readout_is_registered_and_a_recipe_cannot_name_another(tmp_path):
    assert set(READOUTS) == {"mean_attention", "atom3d_gvp", "pronet", "gearnet_psr", "gearnet_fold"}
    assert set(PUBLISHED_READOUTS.values()) == set(READOUTS) - {DEFAULT_READOUT}
    bad = tmp_path / "recipes.yaml"
    bad.write_text(RECIPES_PATH.read_text().replace("value: atom3d_gvp", "value: atom4d_gvp", 1))
    with pytest.raises(ValueError, match="sets 'model.readout' to 'atom4d_gvp', not one of") as err:
        load_recipes(bad)
    assert str(bad) in str(err.value)
