"""Ablations: the config's ``ablations`` block expanded into training runs, ESM models and caches.

An ablation names a subset of the benchmark (datasets, encoders, fusions, seeds) and a list of
variants, each a small override of the ``esm`` or ``model`` settings. Every variant trains that
whole subset again in its own folder (:data:`bihmf.run.ABLATION_RUN_DIR`); the main runs of the
same subset are the variant ``default`` it is compared with, never retrained. Everything here is
a pure function of the validated config, so the DAG (``rules/common.smk``), the config check
(:func:`ablation_errors`) and job counting (``bihmf plan``) expand the block the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bihmf.esm import RELEASED_ESM2, esm_depth
from bihmf.models.fusion import FUSIONS
from bihmf.models.model import run_combinations
from bihmf.recipes import Recipes, RunSettings, load_recipes, run_esm_layers, run_settings, variant_settings
from bihmf.run import ABLATION_RUN_DIR

DEFAULT_VARIANT = "default"  # the main runs, in an ablation's tables
ESM_LIST_ABLATION = "esm_models"  # what a list in esm.name expands into
# the esm keys that make one checkpoint: a variant naming another model brings its own
ESM_IDENTITY = ("name", "checkpoint", "random_init", "precomputed")


@dataclass(frozen=True)
class Variant:
    name: str
    esm: dict[str, Any] | None  # the esm override as written (None: the main model)
    model: dict[str, Any]  # the model override as written

    @property
    def overrides(self) -> dict[str, Any]:
        """What the variant changes, as dotted keys (``esm.name``, ``model.fusion_direction``)."""
        return {**_dotted("esm", self.esm or {}), **_dotted("model", self.model)}


@dataclass(frozen=True)
class Ablation:
    name: str
    datasets: tuple[str, ...]
    encoders: tuple[str, ...]
    fusions: tuple[str, ...]
    seeds: tuple[int, ...] | None  # None: each dataset's train seeds
    variants: tuple[Variant, ...]

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"ablation {self.name!r} has no variant {name!r} (variants: {[v.name for v in self.variants]})")


@dataclass(frozen=True)
class AblationRun:
    ablation: str
    variant: str
    dataset: str
    encoder: str
    fusion: str
    seed: int

    @property
    def folder(self) -> str:
        return ABLATION_RUN_DIR.format(ablation=self.ablation, variant=self.variant, dataset=self.dataset,
                                       encoder=self.encoder, fusion=self.fusion, seed=self.seed)


def _dotted(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def expand_esm_list(config: dict[str, Any]) -> dict[str, Any]:
    """``esm.name`` given as a list of models: the first is the main model; each other one trains
    the whole benchmark again as a variant of the ablation :data:`ESM_LIST_ABLATION` (every
    dataset, encoder × fusion and seed: the full cross product the list asks for), named after the
    model in lower case, so it gets its own cache and run folders and is compared with the first."""
    names = config.get("esm", {}).get("name")
    if not isinstance(names, list):
        return config  # one model (or nothing yet): the schema checks it
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"esm.name {names!r}: a list must name one or more ESM-2 models")
    expanded = copy.deepcopy(config)
    expanded["esm"]["name"] = names[0]
    if len(names) > 1:
        variants = [{"name": name.lower(), "esm": {"name": name}} for name in names[1:]]
        expanded["ablations"] = [*expanded.get("ablations", []), {"name": ESM_LIST_ABLATION, "variants": variants}]
    return expanded


def ablations(config: dict[str, Any]) -> list[Ablation]:
    """The config's ablations with their defaults resolved (every dataset, the configured
    encoders and fusions)."""
    return [
        Ablation(
            name=entry["name"],
            datasets=tuple(entry.get("datasets", config["datasets"])),
            encoders=tuple(entry.get("encoders", config["model"]["encoders"])),
            fusions=tuple(entry.get("fusions", config["model"]["fusions"])),
            seeds=tuple(entry["seeds"]) if "seeds" in entry else None,
            variants=tuple(Variant(v["name"], v.get("esm"), v.get("model", {})) for v in entry["variants"]),
        )
        for entry in config["ablations"]
    ]


def find_ablation(config: dict[str, Any], name: str) -> Ablation:
    for ablation in ablations(config):
        if ablation.name == name:
            return ablation
    raise KeyError(f"no ablation {name!r} in the config (ablations: {[a['name'] for a in config['ablations']]})")


def dataset_seeds(config: dict[str, Any], dataset: str) -> list[int]:
    """The seeds the main runs of ``dataset`` train (seeds are never a recipe's business)."""
    return list({**config["train"], **config["datasets"][dataset]["train"]}["seeds"])


def default_runs(config: dict[str, Any], ablation: Ablation) -> list[tuple[str, str, str, int]]:
    """(dataset, encoder, fusion, seed) of the main runs an ablation compares its variants with."""
    return [
        (dataset, encoder, fusion, seed)
        for dataset in ablation.datasets
        for encoder, fusion in run_combinations(list(ablation.encoders), list(ablation.fusions))
        for seed in (ablation.seeds if ablation.seeds is not None else dataset_seeds(config, dataset))
    ]


def ablation_runs(config: dict[str, Any], ablation: Ablation) -> list[AblationRun]:
    """Every run an ablation trains: its variants × its subset of the benchmark."""
    return [AblationRun(ablation.name, variant.name, *run)
            for variant in ablation.variants for run in default_runs(config, ablation)]


def all_ablation_runs(config: dict[str, Any]) -> list[AblationRun]:
    """The training jobs the ablations add to the DAG (what ``bihmf plan`` counts)."""
    return [run for ablation in ablations(config) for run in ablation_runs(config, ablation)]


def variant_esm(config: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """The variant's esm settings: its own model (name, checkpoint or random_init, only from the
    override), with the main embedding settings (token budget, window, shards) where it sets none."""
    if variant.esm is None:
        return copy.deepcopy(config["esm"])
    shared = {key: value for key, value in config["esm"].items() if key not in ESM_IDENTITY}
    return copy.deepcopy({**shared, **variant.esm})


def variant_model(config: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """The main model settings with the variant's override on top (recipes aside)."""
    return {**copy.deepcopy(config["model"]), **copy.deepcopy(variant.model)}


def esm_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ESM model name -> its settings: the main model first, then each variant's (one checkpoint
    file and one cache per name)."""
    models = {config["esm"]["name"]: config["esm"]}
    for ablation in ablations(config):
        for variant in ablation.variants:
            esm = variant_esm(config, variant)
            models.setdefault(esm["name"], esm)
    return models


def variant_run_settings(config: dict[str, Any], explicit: dict[str, Any], run: AblationRun,
                         recipes: Recipes | None = None) -> RunSettings:
    """Model and train settings of one variant run: its encoder's recipe, the override on top."""
    variant = find_ablation(config, run.ablation).variant(run.variant)
    return variant_settings(config, explicit, run.dataset, run.encoder, variant.model, recipes)


def run_layers(config: dict[str, Any], explicit: dict[str, Any], recipes: Recipes | None = None) -> dict[tuple[str, str], list[list[int]]]:
    """(dataset, ESM model name) -> the ESM layers of each training run reading that cache, main
    runs and variant runs alike (a variant's pairing or depth reads its own layers of the model
    it names). The one expansion behind the cache's layers and the widest job reading it."""
    recipes = recipes or load_recipes()
    main = config["esm"]
    runs: dict[tuple[str, str], list[list[int]]] = {}
    for dataset in config["datasets"]:
        for encoder, fusion in run_combinations(config["model"]["encoders"], config["model"]["fusions"]):
            model = run_settings(config, explicit, dataset, encoder, recipes).model
            runs.setdefault((dataset, main["name"]), []).append(run_esm_layers(model, fusion, esm_depth(main)))
    for ablation in ablations(config):
        for variant in ablation.variants:
            esm = variant_esm(config, variant)
            for dataset, encoder, fusion, _ in default_runs(config, ablation):
                model = variant_settings(config, explicit, dataset, encoder, variant.model, recipes).model
                runs.setdefault((dataset, esm["name"]), []).append(run_esm_layers(model, fusion, esm_depth(esm)))
    return runs


def cache_layers(config: dict[str, Any], explicit: dict[str, Any], recipes: Recipes | None = None) -> dict[tuple[str, str], list[int]]:
    """(dataset, ESM model name) -> the ESM layers its cache holds: the union of what every run
    reading that cache needs (:func:`run_layers`)."""
    return {key: sorted({layer for layers in runs for layer in layers}) for key, runs in run_layers(config, explicit, recipes).items()}


def run_provenance(run: AblationRun, variant: Variant) -> dict[str, Any]:
    """``provenance["ablation"]`` of a variant run's metrics.json (main runs have none)."""
    return {"name": run.ablation, "variant": variant.name, "overrides": variant.overrides}


def _duplicates(names: list[str]) -> list[str]:
    return sorted({name for name in names if names.count(name) > 1})


def _esm_errors(where: str, variant: Variant) -> list[str]:
    esm = variant.esm or {}
    if "checkpoint" in esm and "random_init" in esm:
        return [f"{where}: esm: give either checkpoint (real weights) or random_init, not both"]
    if variant.esm is not None and not {"checkpoint", "random_init", "precomputed"} & set(esm) and esm["name"] not in RELEASED_ESM2:
        return [f"{where}: esm.name {esm['name']!r} is not a released ESM-2 ({', '.join(RELEASED_ESM2)}); "
                f"another name needs random_init or checkpoint"]
    return []


def _subset_errors(where: str, config: dict[str, Any], ablation: Ablation) -> list[str]:
    model = config["model"]
    errors = [f"{where}: dataset {d!r} is not in datasets (configured: {list(config['datasets'])})"
              for d in ablation.datasets if d not in config["datasets"]]
    errors += [f"{where}: encoder {e!r} is not in model.encoders {model['encoders']}; the variants are compared "
               f"with the main runs, so an ablation picks among the configured encoders" for e in ablation.encoders
               if e not in model["encoders"]]
    errors += [f"{where}: fusion {f!r} is not in model.fusions {model['fusions']}; the variants are compared "
               f"with the main runs, so an ablation picks among the configured fusions" for f in ablation.fusions
               if f not in model["fusions"]]
    for dataset in (d for d in ablation.datasets if d in config["datasets"]):
        extra = sorted(set(ablation.seeds or ()) - set(dataset_seeds(config, dataset)))
        if extra:
            errors.append(f"{where}: seeds {extra} are not train seeds of {dataset} {dataset_seeds(config, dataset)}")
    return errors


def _variant_errors(where: str, ablation: Ablation, variant: Variant) -> list[str]:
    if variant.name == DEFAULT_VARIANT:
        return [f"{where}: {DEFAULT_VARIANT!r} names the main runs every ablation is compared with; call the variant otherwise"]
    if variant.esm is None and not variant.model:
        return [f"{where}: the variant overrides nothing (give esm or model settings)"]
    axes = sorted({"encoders", "fusions"} & set(variant.model))
    if axes:
        return [f"{where}: model.{'/'.join(axes)} are the ablation's own keys (encoders, fusions), not a variant's setting"]
    direction = variant.model.get("fusion_direction", "both")
    one_way = [f for f in ablation.fusions if direction != "both" and not getattr(FUSIONS[f], "directional", False)]
    if one_way:
        return [f"{where}: model.fusion_direction={direction} needs bidirectional fusions; {one_way} are not"]
    return _esm_errors(where, variant)


def ablation_errors(config: dict[str, Any]) -> list[str]:
    """What the schema cannot see in a schema-valid ``ablations`` block, one line per problem,
    each naming the ablation (and variant): duplicate names, a dataset/encoder/fusion/seed
    outside the configured benchmark, an esm override without a usable model, one ESM name with
    two different settings (its checkpoint file and cache would be shared)."""
    errors = [f"ablations: duplicate name {name!r}" for name in _duplicates([a["name"] for a in config["ablations"]])]
    seen = {config["esm"]["name"]: ("the main esm", config["esm"])}
    for index, ablation in enumerate(ablations(config)):
        where = f"ablations/{index} ({ablation.name})"
        errors += _subset_errors(where, config, ablation)
        errors += [f"{where}: duplicate variant name {name!r}" for name in _duplicates([v.name for v in ablation.variants])]
        for position, variant in enumerate(ablation.variants):
            at = f"ablations/{index}/variants/{position} ({ablation.name}/{variant.name})"
            errors += _variant_errors(at, ablation, variant)
            esm = variant_esm(config, variant)
            first, settings = seen.setdefault(esm["name"], (at, esm))
            if settings != esm:
                errors.append(f"{at}: esm.name {esm['name']!r} has other settings than in {first}; "
                              f"one name is one checkpoint file and one cache, so give this model another name")
    return errors
