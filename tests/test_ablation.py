"""Ablations (issue 18): layer pairing strategies, the ablations block's validation and
expansion, the union of cached layers, and (slow) a variant run through the workflow."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bihmf.benchmark import (
    ESM_LIST_ABLATION,
    Benchmark,
    ablations,
    default_runs,
    esm_models,
    load_config,
    validate_config,
    variant_esm,
)
from bihmf.config import ConfigError
from bihmf.esm_cache import file_metadata
from bihmf.layout import INDEX_NAME
from bihmf.models.fusion import FusionContext, LayerChoice, paired_layers
from bihmf.models.fusion.hierarchical import SequenceStream
from bihmf.run import ABLATION_RUN_DIR, METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
T12 = {"name": "esm2_t12_demo_random", "random_init": {"num_layers": 12, "embed_dim": 96, "attention_heads": 4}}


def _demo_with(*entries: dict) -> dict:
    return {**copy.deepcopy(DEMO), "ablations": list(entries)}


def _entry(**fields) -> dict:
    return {"name": "abl", "datasets": ["ppbs_demo"], "encoders": ["gvp"], "fusions": ["bihmf_local"], "seeds": [0],
            "variants": [{"name": "last", "model": {"layer_pairing": "last"}}], **fields}


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    return str(caught.value)


# --- layer pairing -------------------------------------------------------------------------------

def test_pairing_strategies_give_the_documented_layers() -> None:
    assert paired_layers(3, 6) == [2, 4, 6]  # evenly: round(l * D / L)
    assert paired_layers(3, 33) == [11, 22, 33]
    assert paired_layers(4, 30, pairing="evenly") == [8, 15, 23, 30]
    assert paired_layers(3, 33, pairing="last") == [31, 32, 33]  # D-L+1..D
    assert paired_layers(6, 6, pairing="last") == [1, 2, 3, 4, 5, 6]
    assert paired_layers(3, 33, [1, 5, 9], pairing="last") == [1, 5, 9]  # an explicit list wins
    with pytest.raises(ValueError, match="layer_pairing=last: 7 GNN layers"):
        paired_layers(7, 6, pairing="last")
    with pytest.raises(ValueError, match="layer_pairing='first'"):
        paired_layers(3, 6, pairing="first")


def test_the_sequence_stream_reads_the_pairing_of_its_context() -> None:
    last = FusionContext(8, (4, 5, 6), LayerChoice(3, 6, pairing="last"))
    assert SequenceStream(last, 3, 8).slots == [0, 1, 2]
    with pytest.raises(ValueError, match="ESM layer 2 is not in the embedding cache"):
        SequenceStream(FusionContext(8, (4, 5, 6), LayerChoice(3, 6)), 3, 8)
    with pytest.raises(ValueError, match="the layer choice pairs 3 GNN depths, the encoder has 2"):
        SequenceStream(last, 2, 8)


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("entries", "message"), [
    ([_entry(variants=[{"name": "x", "modle": {}}])], "ablations/0/variants/0: Additional properties are not allowed ('modle'"),
    ([_entry(variants=[{"name": "x", "model": {"hiden_dim": 8}}])],
     "ablations/0/variants/0 (abl/x): model: Additional properties are not allowed ('hiden_dim'"),
    ([_entry(fusions=["bihmf_local", "serial"], variants=[{"name": "x", "model": {"fusion_direction": "struct_to_seq"}}])],
     "(abl/x): model.fusion_direction=struct_to_seq needs bidirectional fusions; ['serial'] are not"),
    ([_entry(variants=[{"name": "x", "model": {"layer_pairing": "first"}}])], "(abl/x): model/layer_pairing: 'first' is not one of"),
    ([_entry(variants=[{"name": "x", "model": {"fusions": ["token"]}}])],
     "(abl/x): model.fusions are the ablation's own keys"),
    ([_entry(variants=[{"name": "x"}])], "(abl/x): the variant overrides nothing"),
    ([_entry(variants=[{"name": "default", "model": {"knn": 8}}])], "(abl/default): 'default' names the main runs"),
    ([_entry(name="Bad-Name")], "ablations/0/name: 'Bad-Name' does not match"),
    ([_entry(), _entry()], "ablations: duplicate name 'abl'"),
    ([_entry(variants=[{"name": "x", "model": {"knn": 8}}, {"name": "x", "model": {"knn": 4}}])],
     "ablations/0 (abl): duplicate variant name 'x'"),
    ([_entry(datasets=["ppbs"])], "ablations/0 (abl): dataset 'ppbs' is not in datasets"),
    ([_entry(encoders=["gvpp"])], "ablations/0/encoders/0: 'gvpp' is not one of"),
    ([_entry(encoders=["egnn"])], "ablations/0 (abl): encoder 'egnn' is not in model.encoders"),
    ([_entry(fusions=["late"])], "ablations/0/fusions/0: 'late' is not one of"),
    ([_entry(seeds=[0, 7])], "ablations/0 (abl): seeds [7] are not train seeds of ppbs_demo"),
    ([_entry(variants=[{"name": "x", "esm": {"random_init": {"num_layers": 2}}}])],
     "ablations/0/variants/0/esm: 'name' is a required property"),
    ([_entry(variants=[{"name": "x", "esm": {"name": "esm2_t12_demo"}}])],
     "(abl/x): esm.name 'esm2_t12_demo' is not a released ESM-2"),
    ([_entry(variants=[{"name": "x", "esm": {"name": "t12", "random_init": {"num_layers": 2}}}])],
     "(abl/x): esm/name: 't12' does not match '^esm2'"),
    ([_entry(variants=[{"name": "x", "esm": {"name": "esm2_t6_demo_random", "random_init": {"num_layers": 2}}}])],
     "(abl/x): esm.name 'esm2_t6_demo_random' has other settings than in the main esm"),
    ([_entry(variants=[{"name": "x", "esm": T12}, {"name": "y", "esm": {**T12, "window": 64}}])],
     "ablations/0/variants/1 (abl/y): esm.name 'esm2_t12_demo_random' has other settings than in ablations/0/variants/0"),
])
def test_a_bad_ablation_is_named_with_the_reason(entries, message) -> None:
    assert message in _error(_demo_with(*entries))


def test_one_model_written_twice_with_its_defaults_is_one_model() -> None:
    same = {"name": "esm2_t6_demo_random", "random_init": {"num_layers": 6, "embed_dim": 64}}  # the rest are defaults
    config = validate_config(_demo_with(_entry(variants=[{"name": "x", "esm": same}])))
    assert list(esm_models(config)) == ["esm2_t6_demo_random"]


# --- expansion -----------------------------------------------------------------------------------

def test_the_demo_ablations_expand_into_readable_run_folders() -> None:
    benchmark = Benchmark.load(ROOT / "config" / "demo.yaml")
    config = benchmark.config
    run, one_way = benchmark.runs[len(benchmark.main_runs):]
    assert run.folder == "results/ablations/esm_size/t12/ppbs_demo/gvp/bihmf_local/seed0"
    assert one_way.folder == "results/ablations/direction/one_way/ppbs_demo/gvp/bihmf_local/seed0"
    assert run.folder == ABLATION_RUN_DIR.format(**{**vars(run), "variant": run.variant.name})
    assert (run.esm_name, one_way.esm_name) == ("esm2_t12_demo_random", "esm2_t6_demo_random")
    ablation, direction = ablations(config)
    assert default_runs(config, ablation) == default_runs(config, direction) == [("ppbs_demo", "gvp", "bihmf_local", 0)]
    assert [r.folder for r in benchmark.compared_runs("direction")] == ["results/runs/ppbs_demo/gvp/bihmf_local/seed0"]
    assert one_way.provenance["overrides"] == {"model.fusion_direction": "seq_to_struct"}
    assert benchmark.main_runs[0].provenance is None
    assert run.provenance == {"name": "esm_size", "variant": "t12", "overrides": {
        "esm.name": "esm2_t12_demo_random", "esm.random_init.num_layers": 12, "esm.random_init.embed_dim": 96,
        "esm.random_init.attention_heads": 4, "esm.random_init.seed": 0}}
    # the variant's own model, with the main embedding settings
    assert variant_esm(config, ablation.variants[0]) == {**config["esm"], **T12, "random_init": {**T12["random_init"], "seed": 0}}
    assert list(esm_models(config)) == ["esm2_t6_demo_random", "esm2_t12_demo_random"]


def test_the_ablation_config_is_the_full_config_plus_its_ablations() -> None:
    full, benchmark = load_config(ROOT / "config.yaml"), Benchmark.load(ROOT / "config" / "ablation.yaml")
    ablation = benchmark.config
    assert {**ablation, "ablations": []} == full
    size = benchmark.ablations["esm_size"]
    assert [variant_esm(ablation, v)["name"] for v in size.variants] == ["esm2_t6_8M_UR50D", "esm2_t12_35M_UR50D", "esm2_t30_150M_UR50D"]
    assert len(benchmark.variant_runs["esm_size"]) == 3 * 2 * 3 * 3  # variants x datasets x fusions x seeds
    assert len(benchmark.variant_runs["direction"]) == 2 * 2 * 3 * 3
    assert len(benchmark.variant_runs["layer_pairing"]) == 1 * 2 * 3 * 3


def test_a_list_of_esm_models_runs_the_whole_benchmark_per_model() -> None:
    """esm.name as a list: the first is the main model, each other one a variant of 'esm_models'
    over every dataset, encoder x fusion and seed, with its own checkpoint and caches."""
    full = load_config(ROOT / "config.yaml")
    written = {**yaml.safe_load((ROOT / "config.yaml").read_text()),
               "esm": {"name": ["esm2_t33_650M_UR50D", "esm2_t12_35M_UR50D", "esm2_t6_8M_UR50D"]}}
    listed = validate_config(written)
    benchmark = Benchmark(listed, written)
    assert listed["esm"] == full["esm"]
    (entry,) = [a for a in ablations(listed) if a.name == ESM_LIST_ABLATION]
    assert [(v.name, v.esm) for v in entry.variants] == [
        ("esm2_t12_35m_ur50d", {"name": "esm2_t12_35M_UR50D"}), ("esm2_t6_8m_ur50d", {"name": "esm2_t6_8M_UR50D"})]
    main_runs = [run for ablation in ablations(listed) for run in default_runs(listed, ablation)]
    assert len(benchmark.variant_runs[entry.name]) == 2 * len(main_runs) == 2 * len(benchmark.main_runs) == 2 * 774
    assert list(benchmark.esm_models) == ["esm2_t33_650M_UR50D", "esm2_t12_35M_UR50D", "esm2_t6_8M_UR50D"]
    assert {model for _, model in benchmark.caches} == set(benchmark.esm_models)
    assert validate_config({**copy.deepcopy(DEMO), "esm": {**DEMO["esm"], "name": [DEMO["esm"]["name"]]}})["ablations"] == \
        validate_config(copy.deepcopy(DEMO))["ablations"]  # a one-model list is that model alone
    assert "esm2_t12_demo_random" in _error({**copy.deepcopy(DEMO), "ablations": [],
                                             "esm": {**DEMO["esm"], "name": [DEMO["esm"]["name"], "esm2_t12_demo_random"]}})
    assert "esm.name []: a list must name one or more ESM-2 models" in _error({**copy.deepcopy(DEMO), "esm": {"name": []}})
    assert "does not match '^esm2'" in _error({**copy.deepcopy(DEMO), "ablations": [], "esm": {"name": ["t12"]}})


def test_seq_only_runs_once_under_encoder_none_and_seeds_default_to_the_datasets() -> None:
    entry = {key: value for key, value in _entry(fusions=["seq_only", "struct_only"]).items() if key not in ("encoders", "seeds")}
    config = validate_config(_demo_with(entry))
    (ablation,) = ablations(config)
    assert default_runs(config, ablation) == [("ppbs_demo", "none", "seq_only", 0), ("ppbs_demo", "gvp", "struct_only", 0)]


def test_a_variant_override_beats_the_recipe_like_written_config() -> None:
    config = load_config(ROOT / "config" / "ablation.yaml")
    written = yaml.safe_load((ROOT / "config" / "ablation.yaml").read_text())
    config["ablations"].append({"name": "depth", "datasets": ["react"], "encoders": ["gvp"], "fusions": ["bihmf_local"],
                                "variants": [{"name": "deep", "model": {"num_layers": 8}}]})
    (run, *_) = Benchmark(config, written).variant_runs["depth"]
    settings = run.settings
    assert settings.model["num_layers"] == 8 and "model.num_layers" in settings.train["recipe"]["overridden"]


# --- cache union ---------------------------------------------------------------------------------

def test_each_cache_holds_the_union_of_the_layers_its_runs_read() -> None:
    config = validate_config(_demo_with(
        _entry(name="pairing"),  # bihmf_local on the main t6 model, last layers: 4, 5, 6
        _entry(name="size", datasets=["bce_demo"], variants=[{"name": "t12", "esm": T12}]),
    ))
    layers = Benchmark(config, config).caches
    assert layers[("ppbs_demo", "esm2_t6_demo_random")] == [2, 4, 5, 6]  # evenly [2, 4, 6] of the main runs + last
    assert layers[("psr_demo", "esm2_t6_demo_random")] == [2, 4, 6]  # no variant reads psr_demo
    assert layers[("bce_demo", "esm2_t12_demo_random")] == [4, 8, 12]  # bihmf_local at depth 3 on 12 layers
    assert ("ppbs_demo", "esm2_t12_demo_random") not in layers  # only the datasets a variant trains on


# --- through the workflow (slow: a real embed and a one-epoch variant run) ------------------------

@pytest.mark.slow
def test_a_variant_run_reads_its_own_cache_and_records_its_identity(tmp_path) -> None:
    config = _demo_with(copy.deepcopy(load_config(ROOT / "config" / "demo.yaml")["ablations"][0]), _entry(name="pairing"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = f"results/ablations/esm_size/t12/ppbs_demo/gvp/bihmf_local/seed0/{METRICS_FILE}"
    last = f"results/ablations/pairing/last/ppbs_demo/gvp/bihmf_local/seed0/{METRICS_FILE}"
    main_cache = f"results/embeddings/ppbs_demo/esm2_t6_demo_random/{INDEX_NAME}"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", run, last, "--snakefile", str(ROOT / "Snakefile"), "--directory",
         str(tmp_path), "--cores", "2", "--configfile", str(tmp_path / "config.yaml"), "--config",
         "train={'epochs': 1}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    provenance = json.loads((tmp_path / run).read_text())["provenance"]
    assert provenance["ablation"] == Benchmark(validate_config(config), config).variant_runs["esm_size"][0].provenance
    assert (provenance["esm_cache"]["esm_depth"], provenance["esm_cache"]["embed_dim"]) == ("12", "96")
    assert json.loads(provenance["esm_cache"]["layers"]) == [4, 8, 12]
    assert json.loads(file_metadata(tmp_path / main_cache)["layers"]) == [2, 4, 5, 6]
    # the last-layers run read the main model's cache, which holds its layers 4, 5, 6 too
    pairing = json.loads((tmp_path / last).read_text())["provenance"]
    assert pairing["model_config"]["layer_pairing"] == "last" and pairing["esm_cache"]["checkpoint"] == "esm2_t6_demo_random.pt"
    assert pairing["ablation"]["overrides"] == {"model.layer_pairing": "last"}  # the main runs' evenly layers and the variant's last ones
