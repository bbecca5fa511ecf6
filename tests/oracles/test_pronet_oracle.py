"""Our ProNet (amino-acid level ``pronet``, backbone level ``pronet_backbone``) against the
authors' release, DIG's ``dig.threedgraph.method.pronet`` (dive-into-graphs 1.1.0), in float64
on real demo proteins, with the release's default sizes (4 blocks of 128 channels).

What is compared, per level and protein:

* the edge features each interaction block receives (feature0, feature1, pos_emb), ours from
  ``prepare`` and the release's from its own geometry and bases on the same edges;
* the node states entering the first block: the release embeds the residue type, ours maps
  the fusion's node input linearly; with a one-hot residue-type input the release's embedding
  row k is our input layer's column k plus its bias, the same map; the backbone level's
  dihedral input (the release's bb_embs) is ours, reordered to its cos-then-sin layout;
* every interaction block in isolation: the release's blocks carry our blocks' weights
  (loaded by parameter name, which both share), and our block runs on the release's inputs
  to that block;
* the whole encoder: our states after each ``layer`` step against the release's block
  outputs, and the release's graph-level output against our published readout ``pronet``
  (``bihmf.tasks.heads``, which ``recipe: published`` gives ProNet on react) applied to our final
  states, with the release's readout weights.

Every parameter on both sides is random (``oracle_params``), biases included: with the
release's zero-initialised biases, a bias added once per neighbour instead of once per node, or
a block's final bias dropped, computed the same numbers as the right code.

The release's graph comes from a radius search we cannot run here (pyg-lib is missing), so
its ``radius_graph`` returns our edges. Its position encoding is computed in float32 and fed
to float64 layers, which torch refuses, so the test casts it (values unchanged). It is run
one protein at a time: its sequence neighbours wrap round the whole batch (i - 1 modulo all
nodes), ours round each protein, which agree for a batch of one.
"""

from __future__ import annotations

import importlib
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from bihmf.data.ppbs import parse
from bihmf.models.encoders import ENCODERS
from bihmf.models.encoders.pronet import SphericalBasis
from bihmf.models.graph import C_IDX, CA_IDX, N_IDX, backbone_dihedrals, chain_breaks
from bihmf.batching import collate, protein_graph
from bihmf.tasks.heads import READOUTS
from oracle_params import assert_all_random, randomise_parameters

AA_TYPES = 26  # the release's residue vocabulary
WIDTH, BLOCKS = 128, 4
PROTEINS = ("1hvr_0-A", "4e43_0-B")
LEVELS = {"aminoacid": "pronet", "backbone": "pronet_backbone"}
ATOL = 1e-6
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dig():
    """The release's pronet modules, imported without ``dig.threedgraph.method``'s package
    init (it pulls in tensorboard and the other methods' extensions). numpy 2 dropped
    ``np.math``, which its bases use; ``torch_sparse`` is only named for the SparseTensor path
    our dense edges never take, so a stub stands in while the module is imported."""
    np.math = math
    threedgraph = importlib.import_module("dig.threedgraph")
    method = types.ModuleType("dig.threedgraph.method")
    method.__path__ = [f"{threedgraph.__path__[0]}/method"]
    sys.modules.setdefault("dig.threedgraph.method", method)
    sys.modules["torch_sparse"] = types.ModuleType("torch_sparse")
    sys.modules["torch_sparse"].matmul = None
    try:
        pronet = importlib.import_module("dig.threedgraph.method.pronet.pronet")
        features = importlib.import_module("dig.threedgraph.method.pronet.features")
    finally:
        del sys.modules["torch_sparse"]
    return pronet, features


@pytest.fixture(scope="module")
def proteins(demo_raw, demo_spec):
    records = {r.protein_id: r for r in parse(demo_raw, demo_spec)[0]}
    graphs = [protein_graph(records[p], None) for p in PROTEINS]
    for p, g in zip(PROTEINS, graphs):
        # the backbone level's missing-atom rule differs by design (module docstring)
        assert torch.isfinite(g.coords[:, [N_IDX, CA_IDX, C_IDX]]).all(), f"{p} lacks backbone atoms"
    return graphs


def _pair(dig, level: str):
    """Our encoder and the release's model with the same weights, float64, eval mode."""
    torch.manual_seed(0)
    ours = ENCODERS[LEVELS[level]](AA_TYPES, WIDTH, 0, BLOCKS, 0, 0.0).double().eval()
    theirs = dig[0].ProNet(level=level, num_blocks=BLOCKS, hidden_channels=WIDTH).double().eval()
    randomise_parameters(ours, 0)
    randomise_parameters(theirs, 1)  # its embedding and readout head; the blocks take ours below
    for block, our_block in zip(theirs.interaction_blocks, ours.layers):
        block.load_state_dict(our_block.state_dict())
    with torch.no_grad():
        if level == "aminoacid":  # one-hot residue type k: our W[:, k] + b is the release's row k
            theirs.embedding.weight.copy_((ours.node_in.weight + ours.node_in.bias[:, None]).T)
        else:  # the release orders the dihedral input cos, sin; ours sin, cos
            weight = theirs.embedding.weight
            ours.node_in.weight.copy_(torch.cat([weight[:, :AA_TYPES], weight[:, AA_TYPES + 3 :], weight[:, AA_TYPES : AA_TYPES + 3]], 1))
            ours.node_in.bias.copy_(theirs.embedding.bias)
    assert_all_random(ours)
    assert_all_random(theirs)
    return ours, theirs


def _published_readout(theirs) -> torch.nn.Module:
    """Our ``pronet`` readout carrying the release's readout weights (lins_out, then lin_out)."""
    pool, mlp = READOUTS["pronet"](WIDTH, 1, 0.0)
    mlp = mlp.double()
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == len(theirs.lins_out) + 1
    for mine, reference in zip(linears, [*theirs.lins_out, theirs.lin_out]):
        mine.load_state_dict(reference.state_dict())
    return lambda residues, batch: mlp(pool(residues, batch))


def _run_ours(encoder, batch, residue_type):
    state = encoder.prepare(batch, F.one_hot(residue_type, AA_TYPES).double())
    states = [state.s]
    for depth in range(encoder.num_layers):
        state = encoder.layer(depth, state)
        states.append(state.s)
    return state.extra, states


def _run_theirs(dig, model, batch, residue_type, edge_index, monkeypatch):
    """The release's forward on one protein with our edges; returns its output and, per block,
    the inputs and output."""
    coords = batch.coords.double()
    dihedrals = backbone_dihedrals(coords, chain_breaks(coords, batch.chain_index)).double()
    data = Data(
        x=residue_type, coords_ca=coords[:, CA_IDX], coords_n=coords[:, N_IDX], coords_c=coords[:, C_IDX],
        bb_embs=torch.cat([dihedrals[:, 3:], dihedrals[:, :3]], 1), side_chain_embs=coords.new_zeros(coords.shape[0], 8),
        batch=torch.zeros(coords.shape[0], dtype=torch.long),
    )
    monkeypatch.setattr(dig[0], "radius_graph", lambda pos, r, batch, max_num_neighbors: edge_index)
    monkeypatch.setattr(model, "pos_emb", lambda index, count: dig[0].ProNet.pos_emb(model, index, count).double())
    calls = []
    hooks = [b.register_forward_hook(lambda _, args, out: calls.append((args, out))) for b in model.interaction_blocks]
    try:
        output = model(data)
    finally:
        for hook in hooks:
            hook.remove()
    return output, calls


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_pronet_equals_the_release(level, dig, proteins, monkeypatch):
    ours, theirs = _pair(dig, level)
    for name, graph in zip(PROTEINS, proteins):
        batch = collate([graph], CPU)
        batch.coords = batch.coords.double()
        residue_type = batch.residue_type
        with torch.no_grad():
            extra, states = _run_ours(ours, batch, residue_type)
            output, calls = _run_theirs(dig, theirs, batch, residue_type, extra["edge_index"], monkeypatch)
            x, feature0, feature1, pos_emb, edge_index, _ = calls[0][0]
            diffs = {
                "feature0": _max_diff(extra["feature0"], feature0),
                "feature1": _max_diff(extra["feature1"], feature1),
                "pos_emb": _max_diff(extra["pos_emb"], pos_emb),
                "input states": _max_diff(states[0], x),
            }
            for depth, (args, out) in enumerate(calls):
                diffs[f"block {depth} alone"] = _max_diff(ours.layers[depth](*args[:5]), out)
                diffs[f"encoder after block {depth}"] = _max_diff(states[depth + 1], out)
            diffs["published readout"] = _max_diff(_published_readout(theirs)(states[-1], batch), output)
        print(level, name, graph.num_nodes, "residues", edge_index.shape[1], "edges", diffs)
        assert len(calls) == BLOCKS and edge_index.shape[1] > 10 * graph.num_nodes
        assert max(diffs.values()) < ATOL, diffs


def test_bases_equal_the_releases_beyond_the_default_degree(dig):
    """Both bases at l < 3, a degree the default (l < 2, compared through the models above)
    does not reach: the order of m and the Legendre recurrence beyond degree 1, on random
    distances and angles covering their ranges."""
    num_spherical = 3
    features = dig[1]
    generator = torch.Generator().manual_seed(0)
    dist = torch.rand(500, generator=generator, dtype=torch.float64) * 9.9 + 0.05
    theta = torch.rand(500, generator=generator, dtype=torch.float64) * math.pi
    phi = (torch.rand(500, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    ours = SphericalBasis(6, num_spherical, 10.0)
    defined = torch.ones(500, dtype=torch.bool)
    theirs_position = features.d_theta_phi_emb(6, num_spherical, 10.0)(dist, theta, phi)
    theirs_angle = features.d_angle_emb(6, num_spherical, 10.0)(dist, phi)
    assert _max_diff(ours.distance_theta_phi(dist, theta, phi, defined), theirs_position) < 1e-9
    assert _max_diff(ours.distance_angle(dist, phi, defined), theirs_angle) < 1e-9
