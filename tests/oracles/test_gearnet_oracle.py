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

Our graph construction is also compared with torchdrug's own, the published GearNet-Edge
setting: ``GraphConstruction`` with ``AlphaCarbonNode``, ``SequentialEdge(max_distance=2)``,
``SpatialEdge(radius=10, min_distance=5)``, ``KNNEdge(k=10, min_distance=5)`` and
``edge_feature="gearnet"``, on real PPBS demo chains given to it as CA atoms with their residue
types and chain ids. Compared: the edge sets as (source, target, relation), every common edge's
feature (both residue types, relation, sequence distance, CA distance), and torchdrug's
``SpatialLineGraph`` on its own graph against our line graph and angle bins on ours. The one
departure these chains reach is documented in ``bihmf.models.encoders.gearnet``: torchdrug joins
residues i and i +- 1, 2 of a chain across a gap in the model, we do not; so its edges must be
ours plus exactly those (one chain here has two gaps), and its line graph ours plus exactly the
line-graph edges that touch them. (The other documented departure, spatial edges between
different chains fewer than 5 rows apart, needs a multi-chain protein; the chains here are
single.)

The published readouts ``gearnet_psr`` and ``gearnet_fold`` (``bihmf.tasks.heads``) are compared
with what torchdrug's ``PropertyPrediction`` composes from GearNet's configs: ``SumReadout``
over each protein's nodes, then ``layers.MLP`` with two hidden layers (batch norm and dropout
0.5 for Fold3D), on our encoder's last states, with the same random weights, in evaluation mode.

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
RADIUS = 10.0  # Å, the published SpatialEdge radius
CONSTRUCTION_CHAINS = ("1hvr_0-A", "1bd2_0-D")  # PPBS demo chains; 1bd2_0-D has two gaps in its model
ATOL = 1e-6


def _torchdrug_name(ours: str) -> str:
    """Our parameter name -> torchdrug's (its layer norms are ``batch_norm`` / ``batch_norms``)."""
    if ours.startswith("norms."):
        return "batch_" + ours
    return ours.replace(".norm.", ".batch_norm.")


def _construct(case: dict) -> dict:
    """torchdrug's published GearNet-Edge graph construction on CA-only proteins (subprocess only)."""
    from torchdrug import data, layers
    from torchdrug.layers import geometry

    proteins = []
    for sequence, position in zip(case["sequences"], case["positions"]):
        n = len(sequence)
        proteins.append(data.Protein(
            edge_list=torch.zeros(0, 3, dtype=torch.long), atom_type=torch.full((n,), 6), bond_type=torch.zeros(0, dtype=torch.long),
            residue_type=torch.tensor([data.Protein.residue_symbol2id[a] for a in sequence]),
            atom_name=torch.full((n,), data.Protein.atom_name2id["CA"]), atom2residue=torch.arange(n),
            chain_id=torch.zeros(n, dtype=torch.long), node_position=position, num_node=n,
        ))
    construction = layers.GraphConstruction(
        node_layers=[geometry.AlphaCarbonNode()],
        edge_layers=[geometry.SequentialEdge(max_distance=2), geometry.SpatialEdge(radius=RADIUS, min_distance=5),
                     geometry.KNNEdge(k=KNN, min_distance=5)],
        edge_feature="gearnet",
    )
    graph = construction(data.Protein.pack(proteins))
    return {
        "edge_list": graph.edge_list, "edge_feature": graph.edge_feature, "num_relation": int(graph.num_relation),
        "line_graph": layers.SpatialLineGraph(ANGLE_BINS)(graph).edge_list,
        "residue_symbols": "".join(sorted(data.Protein.residue_symbol2id, key=data.Protein.residue_symbol2id.get)),
    }


def _readout(case: dict) -> torch.Tensor:
    """torchdrug's PropertyPrediction head on given node features (subprocess only)."""
    from torchdrug import data, layers

    features = case["features"]
    graph = data.PackedGraph(torch.zeros(0, 2, dtype=torch.long), num_nodes=case["num_nodes"], num_edges=[0] * len(case["num_nodes"]))
    width = features.shape[1]
    head = layers.MLP(width, [width, width, case["out_dim"]], batch_norm=case["batch_norm"], dropout=case["dropout"])
    head.load_state_dict(case["mlp"])
    head.eval()
    with torch.no_grad():
        return head(layers.SumReadout()(graph, features))


def _run_torchdrug(cases_path: Path, out_path: Path) -> None:
    """Evaluate torchdrug's models, or build its graphs, on every case (runs in the subprocess only)."""
    import oracle_shims

    oracle_shims.install_torchdrug_stand_ins()
    torch.set_default_dtype(torch.float64)
    from torchdrug import data, layers, models, utils

    utils.sparse_coo_tensor = torch.sparse_coo_tensor
    as_float = torch.Tensor.float
    torch.Tensor.float = lambda self, *args, **kwargs: self if self.dtype == torch.float64 else as_float(self, *args, **kwargs)

    results = []
    for case in torch.load(cases_path):
        if "sequences" in case:
            results.append(_construct(case))
            continue
        if "mlp" in case:
            results.append(_readout(case))
            continue
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
from bihmf.data.structure import STANDARD_AA  # noqa: E402
from bihmf.tasks.heads import READOUTS  # noqa: E402
from bihmf.models.encoders.gearnet import RADIUS_RELATION  # noqa: E402
from bihmf.models.encoders.gearnet_edge import NODE_TYPES  # noqa: E402
from bihmf.models.graph import CA_IDX, chain_breaks, residue_and_ligand_nodes  # noqa: E402
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
def construction_batch(demo_raw, demo_spec):
    """The construction chains as one float64 batch of ours; torchdrug gets their CA atoms."""
    records = {r.protein_id: r for r in parse(demo_raw, demo_spec)[0]}
    chains = [records[p] for p in CONSTRUCTION_CHAINS]
    batch = collate([protein_graph(r, None) for r in chains], CPU)
    batch.coords, batch.ligand_pos = batch.coords.double(), batch.ligand_pos.double()
    assert torch.isfinite(batch.coords[:, CA_IDX]).all() and batch.ligand_pos.shape[0] == 0
    assert sum(len(r.sequence) for r in chains) == batch.coords.shape[0] and not any("X" in r.sequence for r in chains)
    return chains, batch


@pytest.fixture(scope="module")
def evaluated(batches, construction_batch, tmp_path_factory):
    """Per model case our outputs and torchdrug's, and torchdrug's graph construction, from one
    torchdrug subprocess for all cases."""
    work = tmp_path_factory.mktemp("gearnet_oracle")
    runs = [_ours(variant, batches[kind], training) for variant, kind, training in CASES]
    chains, batch = construction_batch
    positions = batch.coords[:, CA_IDX].split([len(r.sequence) for r in chains])
    construction = {"sequences": [r.sequence for r in chains], "positions": list(positions)}
    heads = [_readout_case(name, runs[0][1]["hiddens"][-1], batches["chains"]) for name in READOUT_CASES]
    torch.save([case for case, _ in runs] + [construction] + [case for case, _ in heads], work / "cases.pt")
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
    models = {key: (ours, reference) for key, (_, ours), reference in zip(CASES, runs, theirs)}
    readouts = {name: (ours, reference) for name, (_, ours), reference in zip(READOUT_CASES, heads, theirs[len(CASES) + 1:])}
    return models, theirs[len(CASES)], readouts


@pytest.fixture(scope="module")
def compared(evaluated):
    return evaluated[0]


READOUT_CASES = ("gearnet_psr", "gearnet_fold")
OUT_DIM = 3


def _readout_case(name: str, states: torch.Tensor, graphs: list) -> tuple[dict, torch.Tensor]:
    """Our published readout on our encoder's last states (random weights and running
    statistics), and the case torchdrug gets: the same states and weights under its names."""
    batch = collate(graphs, CPU)
    pool, mlp = READOUTS[name](WIDTH, OUT_DIM, 0.0)
    mlp = mlp.double()
    randomise_parameters(mlp, 2)
    generator = torch.Generator().manual_seed(2)
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    norms = [m for m in mlp if isinstance(m, torch.nn.BatchNorm1d)]
    for norm in norms:
        norm.running_mean = 0.2 * torch.randn(WIDTH, generator=generator, dtype=torch.float64)
        norm.running_var = 0.5 + torch.rand(WIDTH, generator=generator, dtype=torch.float64)
    names = {**{f"layers.{i}": m for i, m in enumerate(linears)}, **{f"batch_norms.{i}": m for i, m in enumerate(norms)}}
    state_dict = {f"{prefix}.{key}": value.clone() for prefix, module in names.items() for key, value in module.state_dict().items()}
    dropout = next((m.p for m in mlp if isinstance(m, torch.nn.Dropout)), 0.0)
    mlp.eval()
    residues = states[: batch.coords.shape[0]]
    with torch.no_grad():
        ours = mlp(pool(residues, batch))
    case = {"features": residues, "num_nodes": torch.bincount(batch.batch).tolist(), "mlp": state_dict,
            "batch_norm": bool(norms), "dropout": dropout, "out_dim": OUT_DIM}
    return case, ours


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


def _keys(rows: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(row) for row in rows.tolist()]


def _line_keys(line_edges: torch.Tensor, edge_keys: list[tuple[int, ...]]) -> set[tuple]:
    """Line-graph edges (first edge, second edge, angle bin) named by the edges' own keys."""
    return {(edge_keys[first], edge_keys[second], angle) for first, second, angle in line_edges.tolist()}


def test_graph_construction_equals_torchdrugs_own(evaluated, construction_batch):
    """Edges, relations, edge features and line graph of ours against torchdrug's
    GraphConstruction (module docstring), on real chains, one of them with gaps."""
    theirs = evaluated[1]
    _, batch = construction_batch
    torch.manual_seed(0)
    encoder = ENCODERS["gearnet_edge"](NUM_RESIDUE_TYPES, WIDTH, 4, NUM_LAYERS, KNN, 0.0).double().eval()
    with torch.no_grad():
        extra = encoder.prepare(batch, F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).double()).extra
    mine = _keys(torch.stack([*extra["edge_index"], extra["relation"]], dim=1))
    reference = _keys(theirs["edge_list"])
    assert len(set(mine)) == len(mine) and len(set(reference)) == len(reference), "duplicate edges"
    assert theirs["num_relation"] == NUM_RELATIONS

    gap = chain_breaks(batch.coords, batch.chain_index)  # gap[i]: residue i is not bonded to i + 1
    across_gaps = {(s, d, r) for s, d, r in reference if r < RADIUS_RELATION and gap[min(s, d):max(s, d)].any()}
    spatial = sum(r >= RADIUS_RELATION for _, _, r in mine)
    print(f"{len(mine)} edges of ours ({spatial} spatial), torchdrug {len(reference)}: {len(across_gaps)} across gaps")
    assert across_gaps, "the chains should reach the documented departure (sequential edges across a gap)"
    assert set(mine) <= set(reference), sorted(set(mine) - set(reference))[:10]
    assert set(reference) - set(mine) == across_gaps

    row = {key: i for i, key in enumerate(reference)}
    feature = theirs["edge_feature"][torch.tensor([row[key] for key in mine])]
    symbols = theirs["residue_symbols"]
    types, relations, distances = len(symbols), NUM_RELATIONS, theirs["edge_feature"].shape[1] - 2 * len(symbols) - NUM_RELATIONS - 1
    ours = extra["edge_h"]
    for end in range(2):  # source, then target residue type, as one-letter codes
        their_type = feature[:, end * types:(end + 1) * types]
        our_type = ours[:, end * NODE_TYPES:(end + 1) * NODE_TYPES]
        assert (their_type.sum(1) == 1).all()
        assert [symbols[i] for i in their_type.argmax(1).tolist()] == [STANDARD_AA[i] for i in our_type.argmax(1).tolist()]
    assert torch.equal(feature[:, 2 * types:2 * types + relations + distances],
                       ours[:, 2 * NODE_TYPES:2 * NODE_TYPES + relations + distances]), "relation or sequence distance"
    # torchdrug's Molecule stores positions in float32 (torch.float whatever the default dtype)
    assert _max_diff(ours[:, -1], feature[:, -1]) < 1e-5, "CA distance"

    their_line = _line_keys(theirs["line_graph"], reference)
    target_slot, source = extra["line_adjacency"].indices()
    our_line = _line_keys(torch.stack([source, torch.div(target_slot, ANGLE_BINS, rounding_mode="floor"), target_slot % ANGLE_BINS], 1), mine)
    assert len(our_line) == extra["line_adjacency"].indices().shape[1] and len(their_line) == theirs["line_graph"].shape[0]
    assert our_line <= their_line
    assert their_line - our_line == {e for e in their_line if e[0] in across_gaps or e[1] in across_gaps}


@pytest.mark.parametrize("name", READOUT_CASES)
def test_published_readouts_equal_torchdrugs_head(name, evaluated):
    ours, theirs = evaluated[2][name]
    diff = _max_diff(ours, theirs)
    print(f"{name}: max |ours - torchdrug| = {diff:.1e}")
    assert diff < ATOL and ours.abs().max() > 0.1
