"""Task heads and metrics: correlations against scipy, regression/classification heads
train on real demo structures, per-group (per-target) metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch

from bihmf.data.ppbs import parse
from bihmf.models.fusion import FusionContext
from bihmf.models.model import build_model
from bihmf.tasks import TASKS
from bihmf.tasks.metrics import METRICS, average_ranks, group_mean
from bihmf.batching import collate, protein_graph


@pytest.mark.parametrize("seed", range(4))
def test_regression_metrics_match_scipy_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = np.round(rng.normal(size=60), 1)  # ties
    p = np.round(y + rng.normal(scale=0.7, size=60), 1)
    assert METRICS["pearson"].fn(y, p) == pytest.approx(scipy.stats.pearsonr(y, p).statistic, abs=1e-12)
    assert METRICS["spearman"].fn(y, p) == pytest.approx(scipy.stats.spearmanr(y, p).statistic, abs=1e-12)
    assert METRICS["kendall"].fn(y, p) == pytest.approx(scipy.stats.kendalltau(y, p).statistic, abs=1e-12)
    assert METRICS["rmse"].fn(y, p) == pytest.approx(np.sqrt(sklearn.metrics.mean_squared_error(y, p)), abs=1e-12)
    np.testing.assert_allclose(average_ranks(y), scipy.stats.rankdata(y))
    labels = rng.integers(0, 5, 60)
    preds = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 5, 60))
    assert METRICS["accuracy"].fn(labels, preds) == pytest.approx(sklearn.metrics.accuracy_score(labels, preds))


def test_correlation_of_constant_input_raises():
    with pytest.raises(ValueError, match="constant"):
        METRICS["spearman"].fn([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])


def test_group_mean_is_the_unweighted_mean_over_defined_groups():
    y = np.array([1, 2, 3, 4, 1, 2, 3, 7.0, 9.0])
    p = np.array([1, 3, 2, 4, 4, 3, 2, 1, 5.0])
    groups = ["a"] * 4 + ["b"] * 4 + ["c"]  # "c" has one member: skipped
    expected = np.mean([scipy.stats.spearmanr(y[:4], p[:4]).statistic, scipy.stats.spearmanr(y[4:8], p[4:8]).statistic])
    value, used = group_mean("spearman", y, p, groups)
    assert value == pytest.approx(expected) and used == 2


@pytest.fixture(scope="module")
def demo_graphs(demo_raw, demo_spec):
    records, _ = parse(demo_raw, demo_spec)
    return records


def _train(task_name, records, targets, options, steps=100):
    torch.manual_seed(0)
    cfg = {"hidden_dim": 16, "vector_dim": 4, "num_layers": 2, "knn": 8, "dropout": 0.0, "esm_layers": None}
    context = FusionContext.of(cfg, 8, 1, (1,))
    model = build_model("gvp", "struct_only", task_name, cfg, context, options)
    task = TASKS[task_name]
    records = [dataclasses.replace(r, target=float(t)) for r, t in zip(records, targets)]
    task.prepare(model.head, np.asarray(targets, dtype=float))
    batch = collate([protein_graph(r, None) for r in records], torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = task.loss(model(batch), batch, model.head)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate([task.predictions(model(batch), batch, model.head)])
    return losses, metrics


def test_graph_classification_fits_real_proteins(demo_graphs):
    records = demo_graphs[:8]
    targets = [i % 3 for i in range(len(records))]
    # GVP-GNN's readout (LayerNorm + ReLU GVP) makes 3 classes from width-16 features take
    # about 100 steps to fall to 10 %; 150 leave a margin
    losses, metrics = _train("graph_classification", records, targets, {"num_classes": 3}, steps=150)
    assert losses[-1] < 0.1 * losses[0]
    assert metrics["accuracy"] == 1.0


def test_graph_regression_fits_real_proteins_in_original_units(demo_graphs):
    records = demo_graphs[:8]
    targets = [40.0 + 5.0 * i for i in range(len(records))]  # far from zero: standardisation matters
    losses, metrics = _train("graph_regression", records, targets, {})
    assert losses[-1] < 0.1 * losses[0]
    assert metrics["rmse"] < 5.0 and metrics["spearman"] > 0.9


def test_classification_rejects_labels_outside_the_head(demo_graphs):
    cfg = {"hidden_dim": 8, "vector_dim": 2, "num_layers": 1, "knn": 4, "dropout": 0.0, "esm_layers": None}
    context = FusionContext.of(cfg, 8, 1, (1,))
    model = build_model("gvp", "struct_only", "graph_classification", cfg, context, {"num_classes": 3})
    with pytest.raises(ValueError, match=r"class labels \[3\.0\] are not integers in \[0, 3\)"):
        TASKS["graph_classification"].prepare(model.head, np.array([0.0, 3.0]))


def test_constant_predictions_give_undefined_correlations_not_a_crash():
    """A sequence-only model scores all decoys of a PSR target alike: correlations are null."""
    parts = [{"pred": np.full(4, 0.5), "label": np.array([0.2, 0.4, 0.6, 0.8]), "group": ["T1"] * 4}]
    result = TASKS["graph_regression"].evaluate(parts)
    assert result["spearman"] is None and result["mean_spearman"] is None and result["n_groups"] == 0
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((np.array([0.2, 0.4, 0.6, 0.8]) - 0.5) ** 2)))
