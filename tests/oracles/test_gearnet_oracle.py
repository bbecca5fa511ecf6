"""Our GearNet and GearNet-Edge against torchdrug 0.2.1, the GearNet authors' implementation.

Both sides get the same real proteins (PPBS demo chains; LBA pockets with their ligand atoms as
extra nodes), our relational graph (``edge_list`` rows = source, target, relation), our node
states after the input embedding, and the same weights, every parameter drawn at random
(``oracle_params``: biases and norm scales / shifts included) and the batch norms' running
statistics too, so that no norm is the identity and no bias is zero. Compared in float64:

* torchdrug's ``SpatialLineGraph`` on our edges and CA positions against the line graph and
  angle bins our GearNet-Edge multiplies with;
* torchdrug's ``GeometricRelationalGraphConv`` against our first convolution;
* every layer's output: torchdrug's ``GearNet`` (published settings: ``short_cut``,
  ``batch_norm``; ``concat_hidden`` so its output holds each layer's) against our state after
  each ``layer`` step, in evaluation mode (running statistics) and in training mode (batch
  statistics); the last layer is the whole encoder's output.

torchdrug patches torch when imported (``nn.Module``, the optimisers, ``torch.utils.data``), so
it runs in an interpreter of its own: this file, run as a script, reads the cases the test
wrote and writes torchdrug's outputs back. Stand-ins there, none of which changes a result:
torch_scatter, torch_cluster and rdkit's drawing canvas as in ``oracle_shims``; the JIT-compiled
C++ ``sparse_coo_tensor_unsafe`` replaced by ``torch.sparse_coo_tensor`` (the same tensor, with
index checks); float64 as default dtype (torchdrug makes its unit edge weights in it) and
``Tensor.float()`` keeping float64 tensors as they are (torchdrug casts edge features with it),
so that the comparison stays a float64 one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WIDTH, NUM_LAYERS, KNN, ANGLE_BINS, NUM_RELATIONS = 16, 3, 10, 8, 7  # knn: the published k
ATOL = 1e-6


def _torchdrug_name(ours: str) -> str:
    """Our parameter name -> torchdrug's (its layer norms are ``batch_norm`` / ``batch_norms``)."""
    if ours.startswith("norms."):
        return "batch_" + ours
    return ours.replace(".norm.", ".batch_norm.")


def _run_torchdrug(cases_path: Path, out_path: Path) -> None:
    """Evaluate torchdrug's models on every case (runs in the subprocess only)."""
    import oracle_shims

    oracle_shims.install_torchdrug_stand_ins()
    torch.set_default_dtype(torch.float64)
    from torchdrug import data, layers, models, utils

    utils.sparse_coo_tensor = torch.sparse_coo_tensor
    as_float = torch.Tensor.float
    torch.Tensor.float = lambda self, *args, **kwargs: self if self.dtype == torch.float64 else as_float(self, *args, **kwargs)

    results = []
    for case in torch.load(cases_path):
        edge_list, h0, edge_feature = case["edge_list"], case["input"], case["edge_feature"]
        graph = data.PackedGraph(
            edge_list, num_nodes=[h0.shape[0]],
            num_edges=[edge_list.shape[0]], num_relation=NUM_RELATIONS, edge_feature=edge_feature,
        )
        with graph.node():
            graph.node_position = case["position"]
        edge = edge_feature is not None
        model = models.GearNet(
            WIDTH, [WIDTH] * NUM_LAYERS, NUM_RELATIONS, edge_input_dim=edge_feature.shape[1] if edge else None,
            num_angle_bin=ANGLE_BINS if edge else None, short_cut=True, batch_norm=True, concat_hidden=True, readout="sum",
        )
        model.load_state_dict(case["state_dict"])
        conv = layers.GeometricRelationalGraphConv(WIDTH, WIDTH, NUM_RELATIONS, None, True, "relu")
        conv.load_state_dict({k.removeprefix("layers.0."): v for k, v in case["state_dict"].items() if k.startswith("layers.0.")})
        model.train(case["training"])
        conv.train(case["training"])
        with torch.no_grad():
            result = {"node_feature": model(graph, h0)["node_feature"], "first_conv": conv(graph, h0)}
            if edge:
                result["line_graph"] = layers.SpatialLineGraph(ANGLE_BINS)(graph).edge_list
        results.append(result)
    torch.save(results, out_path)


if __name__ == "__main__":
    _run_torchdrug(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.exit(0)

import torch.nn.functional as F  # noqa: E402  (test side only: the subprocess must not import bihmf)

from bihmf.data.ppbs import parse  # noqa: E402
from bihmf.models.encoders import ENCODERS, StructureEncoder  # noqa: E402
from bihmf.models.encoders.gearnet_edge import GearNetEdgeEncoder  # noqa: E402
from bihmf.models.fusion.base import NUM_RESIDUE_TYPES  # noqa: E402
from bihmf.models.graph import residue_and_ligand_nodes  # noqa: E402
from bihmf.batching import collate, protein_graph  # noqa: E402
from oracle_params import assert_all_random, randomise_parameters  # noqa: E402

CPU = torch.device("cpu")
CASES = [(variant, kind, training) for variant in ("gearnet", "gearnet_edge") for kind in ("chains", "complexes") for training in (False, True)]


def _randomise(encoder: StructureEncoder) -> None:
    randomise_parameters(encoder, 1)
    assert_all_random(encoder)
    generator = torch.Generator().manual_seed(1)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            size = module.num_features
            module.running_mean = 0.2 * torch.randn(size, generator=generator, dtype=torch.float64)
            module.running_var = 0.5 + torch.rand(size, generator=generator, dtype=torch.float64)


def _ours(variant: str, graphs: list, training: bool) -> tuple[dict, dict]:
    """The case torchdrug gets (weights taken before any forward pass) and our outputs."""
    torch.manual_seed(0)
    encoder = ENCODERS[variant](NUM_RESIDUE_TYPES, WIDTH, 4, NUM_LAYERS, KNN, 0.0).double()
    _randomise(encoder)
    encoder.train(training)
    state_dict = {_torchdrug_name(k): v.clone() for k, v in encoder.state_dict().items() if not k.startswith(("node_in.", "ligand_in."))}
    batch = collate(graphs, CPU)
    batch.coords, batch.ligand_pos = batch.coords.double(), batch.ligand_pos.double()
    with torch.no_grad():
        state = encoder.prepare(batch, F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).double())
        extra = state.extra
        h0 = torch.cat([state.s, extra["ligand_h"]])
        hiddens = []
        for depth in range(NUM_LAYERS):
            state = encoder.layer(depth, state)
            hiddens.append(torch.cat([state.s, state.extra["ligand_h"]]))
        first_conv = encoder.layers[0](h0, extra["adjacency"])
    edge = isinstance(encoder, GearNetEdgeEncoder)
    case = {
        "training": training,
        "state_dict": state_dict,
        "input": h0,
        "edge_list": torch.stack([*extra["edge_index"], extra["relation"]], dim=1),
        "position": residue_and_ligand_nodes(batch)[0],
        "edge_feature": extra["edge_h"] if edge else None,
    }
    ours = {"hiddens": hiddens, "first_conv": first_conv}
    if edge:
        target_slot, source = extra["line_adjacency"].indices()
        ours["line_graph"] = torch.stack([source, torch.div(target_slot, ANGLE_BINS, rounding_mode="floor"), target_slot % ANGLE_BINS], dim=1)
    return case, ours


@pytest.fixture(scope="module")
def batches(demo_raw, demo_spec, lba_records):
    chains = sorted(parse(demo_raw, demo_spec)[0], key=lambda r: (len(r.sequence), r.protein_id))[:2]
    return {
        "chains": [protein_graph(r, None) for r in chains],
        "complexes": [protein_graph(r, None, "pocket") for r in lba_records[:2]],
    }


@pytest.fixture(scope="module")
def compared(batches, tmp_path_factory):
    """Per case: our outputs and torchdrug's, from one torchdrug subprocess for all cases."""
    work = tmp_path_factory.mktemp("gearnet_oracle")
    runs = [_ours(variant, batches[kind], training) for variant, kind, training in CASES]
    torch.save([case for case, _ in runs], work / "cases.pt")
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), str(work / "cases.pt"), str(work / "torchdrug.pt")],
        cwd=Path(__file__).parent, capture_output=True, text=True, timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(
            "torchdrug 0.2.1 could not evaluate the cases (install the oracle requirements: "
            f"make test-oracles); its interpreter said:\n{done.stderr[-3000:]}"
        )
    theirs = torch.load(work / "torchdrug.pt")
    return {key: (ours, reference) for key, (_, ours), reference in zip(CASES, runs, theirs)}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    return float((a - b).abs().max())


@pytest.mark.parametrize(("variant", "kind", "training"), CASES)
def test_layers_and_encoder_equal_torchdrug(variant, kind, training, compared):
    ours, theirs = compared[(variant, kind, training)]
    per_layer = theirs["node_feature"].split(WIDTH, dim=1)
    diffs = [_max_diff(mine, reference) for mine, reference in zip(ours["hiddens"], per_layer, strict=True)]
    conv = _max_diff(ours["first_conv"], theirs["first_conv"])
    print(f"{variant} {kind} {'train' if training else 'eval'}: conv {conv:.1e}, layers " + ", ".join(f"{d:.1e}" for d in diffs))
    assert conv <= ATOL, f"first relational convolution differs by {conv:.2e}"
    assert max(diffs) <= ATOL, f"per-layer max differences {diffs} (last = whole encoder)"
    assert ours["hiddens"][-1].abs().max() > 0.1, "outputs too small for the comparison to mean anything"


@pytest.mark.parametrize("kind", ["chains", "complexes"])
def test_line_graph_and_angle_bins_equal_torchdrug(kind, compared):
    ours, theirs = compared[("gearnet_edge", kind, False)]
    mine, reference = (torch.unique(rows, dim=0) for rows in (ours["line_graph"], theirs["line_graph"]))
    assert mine.shape[0] == ours["line_graph"].shape[0] == theirs["line_graph"].shape[0], "duplicate line-graph edges"
    assert torch.equal(mine, reference)
    assert len(torch.unique(mine[:, 2])) == ANGLE_BINS, "every angle bin should occur on real proteins"
