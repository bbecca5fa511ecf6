"""Published recipes: every benchmark x encoder of the full config has one, each value sourced
or marked as our choice; one resolver applies them under explicit config values; the demo and
`recipe: none` stay exactly as before; published numbers name trained rows of ours."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bihmf.benchmark import Benchmark, load_config, run_settings, validate_config
from bihmf.models.encoders import ENCODERS
from bihmf.models.fusion import FUSIONS, LayerChoice, cached_layers
from bihmf.models.model import NO_ENCODER
from bihmf.recipes import RECIPE_KEY, RECIPES_PATH, REQUIRED, load_recipes
from bihmf.report.paper import load_published

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def full() -> tuple[dict, dict]:
    """config.yaml validated (defaults filled) and as written (what counts as explicit)."""
    written = yaml.safe_load((ROOT / "config.yaml").read_text())
    return validate_config(written), written


@pytest.fixture(scope="module")
def recipes():
    return load_recipes()


def test_every_benchmark_and_encoder_of_the_full_config_has_a_sourced_recipe(full, recipes) -> None:
    config, _ = full
    assert set(config["model"]["encoders"]) == set(ENCODERS)  # the full config trains every encoder
    for dataset in config["datasets"]:
        for encoder in config["model"]["encoders"]:
            recipe = recipes.get(dataset, encoder)
            assert recipe is not None, (dataset, encoder)
            assert set(REQUIRED) <= set(recipe.hyperparameters), recipe.id
            assert recipe.basis
            for name, entry in recipe.hyperparameters.items():
                assert entry.where, f"{recipe.id} {name}: no table/file, or no reason for our choice"
                assert entry.source is None or entry.source in recipes.sources, f"{recipe.id} {name}"
                if recipe.published:  # a published recipe is the source's, value by value
                    assert entry.source is not None, f"{recipe.id} {name} is our choice in a published recipe"


def test_recipes_hold_the_source_values(recipes) -> None:
    """Spot checks against the files read: drorlab run_atom3d.py, DIG run_ProNet.py, ESM-GearNet PSR."""
    assert recipes.get("lba30", "gvp").settings() == {
        "model": {"hidden_dim": 100, "vector_dim": 16, "num_layers": 5, "dropout": 0.1, "readout": "atom3d_gvp"},
        "train": {"epochs": 50, "weight_decay": 0.0, "lr": 1e-4, "patience": 50},
    }
    assert recipes.get("react", "pronet_backbone").settings()["train"] == {
        "epochs": 400, "weight_decay": 0.0, "lr": 5e-4, "patience": 400}
    assert recipes.get("psr", "gearnet").settings()["model"] == {
        "hidden_dim": 512, "num_layers": 6, "knn": 10, "dropout": 0.0, "readout": "gearnet_psr"}
    react = recipes.get("react", "gearnet")  # SGD: its rate is recorded, not applied to AdamW
    assert react.hyperparameters["lr"].value == 1e-3 and "lr" not in react.settings()["train"]
    assert not recipes.get("ppbs", "gvp").published and recipes.get("psr", "gvp").published


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("source: gvp_run_atom3d, where: \"--epochs", "source: nowhere, where: \"--epochs", 1),
         "source 'nowhere' is not one of"),
        (lambda t: t.replace("sets: train.lr}", "sets: train.threads}", 1), "sets 'train.threads', which a recipe may not set"),
        (lambda t: t.replace("epochs: {value: 50, source: gvp_run_atom3d", "epochs: {value: fifty, source: gvp_run_atom3d", 1),
         "sets 'train.epochs' to 'fifty', not an integer"),
        (lambda t: t.replace(", source: gvp_run_atom3d, where: \"--epochs default 50\"", "", 1),
         "needs either a source .with where. or a silent note"),
        (lambda t: t.replace("        basis: run_atom3d.py LBA with --lba-split 30\n", "", 1), "needs a basis"),
        (lambda t: t.replace("      dropout: {value: 0.1, source: gvp_atom3d_model", "      drop: {value: 0.1, source: gvp_atom3d_model", 1),
         r"encoders.gvp.benchmarks.psr: states no \['dropout'\]"),
    ],
)
def test_bad_recipe_file_names_the_entry(tmp_path: Path, edit, match: str) -> None:
    bad = tmp_path / "recipes.yaml"
    bad.write_text(edit(RECIPES_PATH.read_text()))
    with pytest.raises(ValueError, match=match) as err:
        load_recipes(bad)
    assert str(bad) in str(err.value)


def test_the_recipe_is_applied_under_schema_defaults(full, recipes) -> None:
    config, written = full
    settings = run_settings(config, written, "psr", "gvp", recipes)
    assert (settings.model["hidden_dim"], settings.model["num_layers"], settings.model["knn"]) == (100, 5, 16)
    assert (settings.train["epochs"], settings.train["lr"], settings.train["weight_decay"]) == (50, 1e-4, 0.0)
    assert settings.train["warmup_fraction"] == config["train"]["warmup_fraction"]  # no recipe knob: ours
    assert (settings.train["threads"], settings.train["mem_mb"], settings.train["seeds"]) == (4, 16000, [0, 1, 2])
    assert settings.train[RECIPE_KEY] == {"id": "psr/gvp", "published": True, "overridden": []}
    other = run_settings(config, written, "psr", "pronet", recipes)
    assert (other.model["num_layers"], other.train["lr"]) == (4, 5e-4)  # per encoder, not global


def test_explicit_values_beat_the_recipe(full, recipes) -> None:
    config, written = full
    written = {**written, "model": {**written["model"], "hidden_dim": 64}, "train": {**written["train"], "epochs": 2}}
    config = validate_config(copy.deepcopy(written))
    config["datasets"]["psr"]["train"] = {"lr": 0.01}
    settings = run_settings(config, written, "psr", "gvp", recipes)
    assert (settings.model["hidden_dim"], settings.model["num_layers"]) == (64, 5)
    assert (settings.train["epochs"], settings.train["lr"], settings.train["patience"]) == (2, 0.01, 50)
    assert settings.train[RECIPE_KEY]["overridden"] == ["model.hidden_dim", "train.epochs", "train.lr"]


def test_recipe_none_and_the_demo_keep_the_plain_config(full, recipes) -> None:
    demo = load_config(ROOT / "config" / "demo.yaml")
    assert demo["recipe"] == "none"
    for dataset in demo["datasets"]:
        settings = run_settings(demo, demo, dataset, "gvp", recipes)
        assert settings.recipe is None and settings.model == demo["model"]
        assert settings.train == {**demo["train"], **demo["datasets"][dataset]["train"]}  # byte-identical provenance
    model, name = demo["model"], demo["esm"]["name"]
    main_caches = {dataset: layers for (dataset, esm), layers in Benchmark(demo, demo, recipes).caches.items() if esm == name}
    assert set(main_caches) == set(demo["datasets"])
    assert all(layers == cached_layers(model["fusions"], LayerChoice.of(model, 6)) for layers in main_caches.values())
    config, written = full
    off = validate_config({**written, "recipe": "none"})
    assert run_settings(off, written, "psr", "gvp", recipes).model == off["model"]


def test_runs_without_a_recipe_say_so(full, recipes) -> None:
    config, written = full
    seq_only = run_settings(config, written, "psr", NO_ENCODER, recipes)
    assert seq_only.model == config["model"] and seq_only.train[RECIPE_KEY]["id"] is None
    shared = run_settings(config, written, "psr", None, recipes)  # seeds and resources of the dataset
    assert RECIPE_KEY not in shared.train and shared.train["threads"] == 4


def test_paper_benchmark_picks_the_recipe(full, recipes) -> None:
    config, written = full
    config = copy.deepcopy(config)
    config["datasets"]["my_lba"] = {**config["datasets"]["lba30"], "paper_benchmark": "lba60"}
    assert run_settings(config, written, "my_lba", "gearnet", recipes).train[RECIPE_KEY]["id"] == "lba60/gearnet"


def test_esm_cache_covers_every_recipe_depth(full, recipes) -> None:
    config, written = full
    caches = Benchmark(config, written, recipes).caches
    every_depth = set()
    for dataset in config["datasets"]:
        depths = {recipes.get(dataset, e).settings()["model"]["num_layers"] for e in config["model"]["encoders"]}
        every_depth |= depths
        for depth in depths | {config["model"]["num_layers"]}:  # seq_only keeps the config depth
            assert set(cached_layers(config["model"]["fusions"], LayerChoice(depth, 33))) <= set(caches[(dataset, config["esm"]["name"])])
    assert every_depth == {3, 4, 5, 6}


def test_published_matches_name_trained_rows() -> None:
    published = load_published()
    encoders = set(ENCODERS)
    for method in published.methods:
        if method.matched:
            assert method.fusion in FUSIONS, method.name
            assert method.encoder is None or method.encoder in encoders, method.name
    ours = {"GVP-GNN": "gvp", "ProNet, amino-acid level": "pronet", "ProNet, backbone level": "pronet_backbone",
            "GearNet-Edge": "gearnet_edge"}
    by_name = {m.name: m for m in published.methods}
    assert {name: (by_name[name].encoder, by_name[name].fusion) for name in ours} == {
        name: (encoder, "struct_only") for name, encoder in ours.items()}


def test_full_config_dry_run_trains_the_variants(tmp_path: Path) -> None:
    """`snakemake -n` on config.yaml: GearNet-Edge and ProNet's backbone level are trained like
    every other encoder (one benchmark as target keeps the DAG small)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "results/report/psr_table.md", "--cores", "1", "--dry-run", "--config", "train={'seeds': [0]}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trained = {line.split("encoder=")[1].split(",")[0] for line in result.stdout.splitlines() if "wildcards: dataset=psr, encoder=" in line}
    assert trained == {"gvp", "egnn", "gearnet", "gearnet_edge", "pronet", "pronet_backbone", NO_ENCODER}
