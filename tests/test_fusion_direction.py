"""model.fusion_direction: a one-way variant of a bidirectional fusion is the same code with one
stream's update switched off, and the switched-off stream gets nothing from the other one.

Inputs that reach one stream only: the ESM rows (``graph.esm``) feed only the sequence stream,
coordinates and residue types only the structure encoder. For a blocked stream the test asks
for an exactly zero gradient w.r.t. the other stream's inputs and bit-identical states when
those inputs change; the receiving stream, and both streams under ``both``, must change.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml

from bihmf.batching import collate, protein_graph
from bihmf.benchmark import run_settings, validate_config
from bihmf.config import SCHEMA_PATH, ConfigError
from bihmf.data.ppbs import parse
from bihmf.models.fusion import FUSIONS, FusionContext, LayerChoice
from bihmf.models.fusion.base import BOTH_DIRECTIONS, FUSION_DIRECTIONS, StreamStates
from bihmf.models.model import build_model
from bihmf.run import RunSpec, run_hash

ESM_DIM, ESM_DEPTH = 16, 6
CONTEXT = FusionContext(ESM_DIM, (2, 4, 6), LayerChoice(3, ESM_DEPTH))
MODEL_CFG = {"hidden_dim": 16, "vector_dim": 4, "num_layers": 3, "knn": 8, "dropout": 0.0}
DIRECTIONAL = ("bihmf_local", "bihmf_global", "token")
ONE_WAY = ("seq_to_struct", "struct_to_seq")
INPUT = {"seq": "sequence", "struct": "structure"}  # stream -> the modality whose inputs only it reads
# one-way direction -> (the blocked stream, the stream that still receives)
STREAMS = {"seq_to_struct": ("seq", "struct"), "struct_to_seq": ("struct", "seq")}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def graphs(demo_raw, demo_spec):
    """The 3 smallest demo proteins with random ESM layers [N, 3, D]."""
    records, _ = parse(demo_raw, demo_spec)
    records = sorted(records, key=lambda r: (len(r.sequence), r.protein_id))[:3]
    rng = np.random.default_rng(0)
    return [protein_graph(r, rng.standard_normal((len(r.sequence), 3, ESM_DIM)).astype(np.float32)) for r in records]


def _fusion(name: str, direction: str):
    torch.manual_seed(0)
    model_cfg = {**MODEL_CFG, "fusion_direction": direction}
    return build_model("gvp", name, "residue_binary", model_cfg, CONTEXT).fusion.eval()


def _gradients(fusion, graphs, stream: str) -> dict[str, torch.Tensor]:
    """Gradient of a random projection of one stream's final state w.r.t. each modality's input.

    A random projection, not a plain sum: the sum over features of a LayerNorm output is constant,
    so its gradient would vanish whatever the wiring."""
    batch = collate(graphs, CPU)
    inputs = {"sequence": batch.esm.requires_grad_(), "structure": batch.coords.requires_grad_()}
    state = getattr(fusion.streams(batch), stream)
    weights = torch.randn(state.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((state * weights).sum(), list(inputs.values()), allow_unused=True)
    return {name: torch.zeros_like(inputs[name]) if g is None else g for name, g in zip(inputs, grads)}


def _perturbed(graphs, modality: str) -> list:
    """The same proteins with one modality's inputs changed (structure: coordinates and residue types)."""
    gen = torch.Generator().manual_seed(2)
    changed = []
    for g in graphs:
        h = g.clone()
        if modality == "sequence":
            h.esm = g.esm + torch.randn(g.esm.shape, generator=gen)
        else:
            h.coords = g.coords + torch.randn(g.coords.shape, generator=gen)
            h.residue_type = torch.randint(0, 20, g.residue_type.shape, generator=gen)
        changed.append(h)
    return changed


def _states(fusion, graphs) -> StreamStates:
    with torch.no_grad():
        return fusion.streams(collate(graphs, CPU))


def test_the_bidirectional_fusions_declare_it_and_the_schema_lists_the_directions():
    assert sorted(name for name, cls in FUSIONS.items() if cls.directional) == sorted(DIRECTIONAL)
    entry = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["model"]["properties"]["fusion_direction"]
    assert tuple(entry["enum"]) == FUSION_DIRECTIONS and entry["default"] == BOTH_DIRECTIONS


@pytest.mark.parametrize("direction", ONE_WAY)
@pytest.mark.parametrize("fusion", DIRECTIONAL)
def test_blocked_stream_gets_no_gradient_from_the_other_modality(fusion, direction, graphs):
    blocked, receiving = STREAMS[direction]
    module = _fusion(fusion, direction)
    blocked_grads = _gradients(module, graphs, blocked)
    assert torch.count_nonzero(blocked_grads[INPUT[receiving]]) == 0, f"{blocked} stream gets a gradient from the other input"
    assert torch.count_nonzero(blocked_grads[INPUT[blocked]]) > 0, f"{blocked} stream gets no gradient from its own input"
    received = _gradients(module, graphs, receiving)[INPUT[blocked]]
    assert torch.count_nonzero(received) > 0, f"{receiving} stream no longer receives"


@pytest.mark.parametrize("direction", ONE_WAY)
@pytest.mark.parametrize("fusion", DIRECTIONAL)
def test_changing_the_other_modality_leaves_the_blocked_stream_bit_identical(fusion, direction, graphs):
    blocked, receiving = STREAMS[direction]
    module = _fusion(fusion, direction)
    base = _states(module, graphs)
    other_changed = _states(module, _perturbed(graphs, INPUT[receiving]))
    assert torch.equal(getattr(other_changed, blocked), getattr(base, blocked))
    assert not torch.allclose(getattr(other_changed, receiving), getattr(base, receiving))
    own_changed = _states(module, _perturbed(graphs, INPUT[blocked]))
    assert not torch.allclose(getattr(own_changed, receiving), getattr(base, receiving)), f"{receiving} stream no longer receives"


@pytest.mark.parametrize("fusion", DIRECTIONAL)
def test_both_directions_flow_by_default(fusion, graphs):
    module = _fusion(fusion, BOTH_DIRECTIONS)
    for stream, other in (("seq", "struct"), ("struct", "seq")):
        assert torch.count_nonzero(_gradients(module, graphs, stream)[INPUT[other]]) > 0, f"{stream} stream does not receive"
    base = _states(module, graphs)
    for stream, other in (("seq", "struct"), ("struct", "seq")):
        changed = _states(module, _perturbed(graphs, INPUT[other]))
        assert not torch.allclose(getattr(changed, stream), getattr(base, stream)), f"{stream} stream does not receive"


@pytest.mark.parametrize("fusion", DIRECTIONAL)
def test_directions_share_the_parameters_and_their_initialisation(fusion):
    """Same seed, same weights: a one-way run differs from the two-way run only in the switched-off update."""
    two_way = _fusion(fusion, BOTH_DIRECTIONS).state_dict()
    for direction in ONE_WAY:
        one_way = _fusion(fusion, direction).state_dict()
        assert one_way.keys() == two_way.keys()
        assert all(torch.equal(one_way[k], two_way[k]) for k in two_way)


@pytest.mark.parametrize("direction", ONE_WAY)
@pytest.mark.parametrize("fusion", sorted(set(FUSIONS) - set(DIRECTIONAL)))
def test_a_fusion_that_is_not_bidirectional_refuses_a_one_way_direction(fusion, direction):
    with pytest.raises(ValueError, match=rf"fusion '{fusion}' is not bidirectional, so model.fusion_direction must be"):
        _fusion(fusion, direction)


def test_unknown_direction_is_refused_by_the_fusion_and_the_schema():
    with pytest.raises(ValueError, match="unknown fusion direction 'sideways'"):
        _fusion("bihmf_local", "sideways")
    with pytest.raises(ConfigError, match="model/fusion_direction: 'sideways' is not one of"):
        validate_config({"model": {"fusion_direction": "sideways"}})


def test_a_one_way_main_direction_with_a_fusion_that_cannot_take_it_is_refused_at_config_time(demo_config):
    """model.fusion_direction is checked against model.fusions when the config is validated,
    not in each training job of a fusion that cannot take it."""
    written = {**demo_config, "model": {**demo_config["model"], "fusion_direction": "seq_to_struct"}}
    refused = sorted(set(demo_config["model"]["fusions"]) - set(DIRECTIONAL), key=demo_config["model"]["fusions"].index)
    with pytest.raises(ConfigError, match=re.escape(f"model/fusion_direction: model.fusion_direction=seq_to_struct needs "
                                                    f"bidirectional fusions; {refused} are not")):
        validate_config(written)
    written["model"]["fusions"] = list(DIRECTIONAL)
    assert validate_config(written)["model"]["fusion_direction"] == "seq_to_struct"


def test_the_direction_reaches_the_run_settings_and_the_run_identity(demo_config):
    spec = RunSpec("ppbs_demo", "gvp", "bihmf_local", 0, "residue_binary")
    hashes = set()
    for direction in FUSION_DIRECTIONS:
        written = {**demo_config, "model": {**demo_config["model"], "fusions": list(DIRECTIONAL), "fusion_direction": direction}}
        settings = run_settings(validate_config(written), written, "ppbs_demo", "gvp")
        assert settings.model["fusion_direction"] == direction
        hashes.add(run_hash(spec, settings.model, settings.train, "data", "cache"))
    assert len(hashes) == len(FUSION_DIRECTIONS)
