"""Our GVP-GNN against the reference layers of ProteinWorkshop 0.2.5 (the maths of drorlab's
gvp-pytorch), in float64 on real demo proteins and a real LBA complex.

The reference file ``proteinworkshop/models/graph_encoders/layers/gvp.py`` is loaded alone, by
path (the package ``__init__`` pulls in its whole training stack). Every reference module is
built in the setting of drorlab's ATOM3D GVP-GNN models, ``activations=(relu, None)`` with
``vector_gate=True`` (GVPs the reference builds with ``(None, None)`` stay so), our weights are
copied into it parameter by parameter (each of ours used exactly once), and both run on the
same inputs. Every parameter of ours is drawn at random first (``oracle_params``): biases and
the norms' scales and shifts too, which initialise to constants that would hide a bias or an
affine step applied twice or not at all.

Per layer: GVP (with and without activation, with vector, scalar-only and scalar-output
dimensions), LayerNorm, and GVPConvLayer in eval mode and in training mode with dropout (the
same seed on both sides, so this checks where dropout acts and that vectors drop by channel).

Encoder: our ``GVPEncoder.prepare`` + every ``layer`` against the stack the ATOM3D base model
composes: ``W_v`` (LayerNorm + linear GVP) on the residue features, the atom-type embedding
followed by its own ``W_v`` on the ligand atoms, ``W_e`` (LayerNorm + linear GVP) on the edge
features, the GVPConvLayers on the residue + ligand graph, and ``W_out`` (LayerNorm + GVP to
scalars) at the end. Compared: residue scalars and vectors and ligand scalars after every
layer, the last layer's scalars after ``W_out``. Not compared: the featurisation (dihedrals,
orientation vectors, RBF, sequence-offset encoding, kNN edges), which is ours on both sides;
the raw features our encoder computes are captured with forward pre-hooks and handed to the
reference. The ATOM3D models' pooling and dense head are task heads, outside the encoder.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bihmf.data.ppbs import parse
from bihmf.models.encoders.gvp import EDGE_SCALARS, LIGAND_TYPES, NODE_VECTORS, GVP, GVPConvLayer, GVPEncoder, GVPLayerNorm
from bihmf.models.fusion.base import NUM_RESIDUE_TYPES
from bihmf.batching import collate, protein_graph
from oracle_params import assert_all_random, randomise_parameters

REFERENCE_FILE = Path("proteinworkshop") / "models" / "graph_encoders" / "layers" / "gvp.py"
ATOM3D = (F.relu, None)
LINEAR = (None, None)
WIDTH, VECTORS, LAYERS, KNN = 16, 4, 3, 8
ATOL = 1e-6


@pytest.fixture(scope="module")
def ref():
    """The reference file as module ``reference_gvp``, registered in ``sys.modules`` while the
    tests run (PyG's MessagePassing looks its module up there)."""
    spec = importlib.util.find_spec("proteinworkshop")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("proteinworkshop is not installed: `make test-oracles` installs tests/oracles/requirements.txt")
    path = Path(spec.submodule_search_locations[0]).parent / REFERENCE_FILE
    module_spec = importlib.util.spec_from_file_location("reference_gvp", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    yield module
    del sys.modules[module_spec.name]


@pytest.fixture(scope="module", autouse=True)
def float64():
    """The reference creates its zero vectors, and our featurisation some constants, in the
    default dtype; module scope so the shared inputs below are built under it too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def batch(demo_raw, demo_spec, lba_records):
    records = {r.protein_id: r for r in parse(demo_raw, demo_spec)[0]}
    graphs = [protein_graph(records[p], None) for p in ("1hvr_0-A", "4e43_0-B")]
    graphs.append(protein_graph(lba_records[0], None, "pocket"))
    out = collate(graphs, torch.device("cpu"))
    out.coords, out.ligand_pos = out.coords.double(), out.ligand_pos.double()
    assert out.ligand_pos.shape[0] > 0
    return out


def _copy_weights(ours: nn.Module, theirs: nn.Module, rename: Callable[[str], str]) -> None:
    """Their parameter ``k`` takes our ``rename(k)``; every parameter of ours is used once."""
    assert_all_random(ours)
    mine = ours.state_dict()
    wanted = {k: rename(k) for k in theirs.state_dict() if not k.endswith("dummy_param")}
    assert sorted(wanted.values()) == sorted(mine), (sorted(wanted.values()), sorted(mine))
    missing, unexpected = theirs.load_state_dict({k: mine[v] for k, v in wanted.items()}, strict=False)
    assert all(k.endswith("dummy_param") for k in missing) and not unexpected


def _max_diff(record_property, name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, name
    diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
    print(f"{name}: max |ours - reference| = {diff:.3e}")
    record_property(name, diff)
    return diff


def _encoder() -> GVPEncoder:
    torch.manual_seed(0)
    encoder = GVPEncoder(NUM_RESIDUE_TYPES, WIDTH, VECTORS, LAYERS, KNN, dropout=0.25).double().eval()
    randomise_parameters(encoder, 0)
    return encoder


def _one_hot(batch) -> torch.Tensor:
    return F.one_hot(batch.residue_type, NUM_RESIDUE_TYPES).double()


@pytest.fixture(scope="module")
def raw_inputs(batch) -> dict:
    """What our encoder feeds its input GVPs (captured by pre-hooks) and its first layer."""
    encoder = _encoder()
    seen: dict = {}
    hooks = [
        getattr(encoder, name).register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args))
        for name in ("node_in", "edge_in", "ligand_embed")
    ]
    with torch.no_grad():
        state = encoder.prepare(batch, _one_hot(batch))
    for hook in hooks:
        hook.remove()
    seen["state"] = state
    return seen


@pytest.mark.parametrize(("activations", "out_dims"), [(ATOM3D, (WIDTH, VECTORS)), (LINEAR, (WIDTH, VECTORS)), (ATOM3D, (WIDTH, 0))])
def test_gvp_equals_reference(ref, raw_inputs, record_property, activations, out_dims):
    s, v = raw_inputs["node_in"]
    in_dims = (s.shape[-1], NODE_VECTORS)
    torch.manual_seed(1)
    ours = GVP(in_dims, out_dims, activate=activations[0] is not None).double()
    randomise_parameters(ours, 1)
    theirs = ref.GVP(in_dims, out_dims, activations=activations, vector_gate=True).double()
    _copy_weights(ours, theirs, lambda k: k)
    with torch.no_grad():
        our_s, our_v = ours(s, v)
        out = theirs((s, v))
    their_s, their_v = out if out_dims[1] else (out, None)
    name = f"gvp[{'relu' if activations[0] else 'linear'},{out_dims}]"
    assert _max_diff(record_property, f"{name}.s", our_s, their_s) < ATOL
    if out_dims[1]:
        assert _max_diff(record_property, f"{name}.V", our_v, their_v) < ATOL
    else:
        assert our_v is None


def test_scalar_only_gvp_equals_reference(ref, raw_inputs, record_property):
    """The ligand atoms' input GVP: scalars in, zero vectors out."""
    (types,) = raw_inputs["ligand_embed"]
    torch.manual_seed(2)
    embed = nn.Embedding(LIGAND_TYPES, LIGAND_TYPES).double()
    s = embed(types).detach()
    ours = GVP((LIGAND_TYPES, 0), (WIDTH, VECTORS), activate=False).double()
    randomise_parameters(ours, 2)
    theirs = ref.GVP((LIGAND_TYPES, 0), (WIDTH, VECTORS), activations=LINEAR, vector_gate=True).double()
    _copy_weights(ours, theirs, lambda k: k)
    with torch.no_grad():
        our_s, our_v = ours(s, None)
        their_s, their_v = theirs(s)
    assert _max_diff(record_property, "gvp[scalar-in].s", our_s, their_s) < ATOL
    assert _max_diff(record_property, "gvp[scalar-in].V", our_v, their_v) < ATOL


def test_layer_norm_equals_reference(ref, raw_inputs, record_property):
    s, v = raw_inputs["node_in"]
    ours = GVPLayerNorm(s.shape[-1]).double()
    randomise_parameters(ours, 3)
    theirs = ref.LayerNorm((s.shape[-1], NODE_VECTORS)).double()
    _copy_weights(ours, theirs, lambda k: k)
    with torch.no_grad():
        our_s, our_v = ours(s, 3.0 * v)
        their_s, their_v = theirs((s, 3.0 * v))
    assert _max_diff(record_property, "layernorm.s", our_s, their_s) < ATOL
    assert _max_diff(record_property, "layernorm.V", our_v, their_v) < ATOL


def _conv_name(key: str) -> str:
    return key.replace("conv.message_func", "message_func")


@pytest.mark.parametrize("training", [False, True])
def test_conv_layer_equals_reference(ref, raw_inputs, record_property, training):
    """Training mode runs both with dropout 0.25 from the same seed: equal outputs mean the same
    dropout draws on the same tensors (aggregated message and feed-forward output)."""
    state = raw_inputs["state"]
    x = state.extra
    s = torch.cat([state.s, x["ligand_s"]])
    v = torch.cat([x["v"], x["ligand_v"]])
    torch.manual_seed(3)
    ours = GVPConvLayer((WIDTH, VECTORS), (EDGE_SCALARS, 1), dropout=0.25).double().train(training)
    randomise_parameters(ours, 4)
    theirs = ref.GVPConvLayer(
        (WIDTH, VECTORS), (EDGE_SCALARS, 1), drop_rate=0.25, activations=ATOM3D, vector_gate=True
    ).double().train(training)
    _copy_weights(ours, theirs, _conv_name)
    with torch.no_grad():
        torch.manual_seed(4)
        our_s, our_v = ours(s, v, x["edge_index"], x["edge_s"], x["edge_v"])
        torch.manual_seed(4)
        their_s, their_v = theirs((s, v), x["edge_index"], (x["edge_s"], x["edge_v"]))
    mode = "train" if training else "eval"
    assert _max_diff(record_property, f"conv[{mode}].s", our_s, their_s) < ATOL
    assert _max_diff(record_property, f"conv[{mode}].V", our_v, their_v) < ATOL
    if training:
        assert (our_v == 0).all(-1).any(), "some vector channels must have been dropped whole"


class Atom3dStack(nn.Module):
    """The reference modules in the order drorlab's ATOM3D base model applies them."""

    def __init__(self, ref: ModuleType, node_scalars: int):
        super().__init__()
        node, edge = (WIDTH, VECTORS), (EDGE_SCALARS, 1)
        self.W_v = nn.Sequential(ref.LayerNorm((node_scalars, NODE_VECTORS)), ref.GVP((node_scalars, NODE_VECTORS), node, activations=LINEAR))
        self.embed = nn.Embedding(LIGAND_TYPES, LIGAND_TYPES)
        self.W_atoms = nn.Sequential(ref.LayerNorm((LIGAND_TYPES, 0)), ref.GVP((LIGAND_TYPES, 0), node, activations=LINEAR))
        self.W_e = nn.Sequential(ref.LayerNorm(edge), ref.GVP(edge, edge, activations=LINEAR))
        self.layers = nn.ModuleList(ref.GVPConvLayer(node, edge, activations=ATOM3D, vector_gate=True) for _ in range(LAYERS))
        self.W_out = nn.Sequential(ref.LayerNorm(node), ref.GVP(node, (WIDTH, 0), activations=ATOM3D, vector_gate=True))


ENCODER_NAMES = {
    "W_v.0.": "node_in.norm.", "W_v.1.": "node_in.gvp.", "embed.": "ligand_embed.",
    "W_atoms.0.": "ligand_in.norm.", "W_atoms.1.": "ligand_in.gvp.", "W_e.0.": "edge_in.norm.",
    "W_e.1.": "edge_in.gvp.", "W_out.0.": "readout.norm.", "W_out.1.": "readout.gvp.",
}


def _encoder_name(key: str) -> str:
    for theirs, ours in ENCODER_NAMES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return _conv_name(key)


def test_encoder_equals_reference_stack(ref, batch, raw_inputs, record_property):
    encoder = _encoder()
    node_s, node_v = raw_inputs["node_in"]
    edge_s, edge_v = raw_inputs["edge_in"]
    (types,) = raw_inputs["ligand_embed"]
    edge_index = raw_inputs["state"].extra["edge_index"]
    stack = Atom3dStack(ref, node_s.shape[-1]).double().eval()
    _copy_weights(encoder, stack, _encoder_name)
    residues = node_s.shape[0]
    with torch.no_grad():
        state = encoder.prepare(batch, _one_hot(batch))
        their_s, their_v = stack.W_v((node_s, node_v))
        atom_s, atom_v = stack.W_atoms(stack.embed(types))
        h = (torch.cat([their_s, atom_s]), torch.cat([their_v, atom_v]))
        edges = stack.W_e((edge_s, edge_v))
        assert _max_diff(record_property, "encoder.input.s", state.s, h[0][:residues]) < ATOL
        for depth, layer in enumerate(stack.layers):
            state = encoder.layer(depth, state)
            h = layer(h, edge_index, edges)
            assert _max_diff(record_property, f"encoder.layer{depth}.V", state.extra["v"], h[1][:residues]) < ATOL
            their_out = stack.W_out(h) if depth == LAYERS - 1 else h[0]
            assert _max_diff(record_property, f"encoder.layer{depth}.s", state.s, their_out[:residues]) < ATOL
            assert _max_diff(record_property, f"encoder.layer{depth}.ligand_s", state.extra["ligand_s"], their_out[residues:]) < ATOL
