"""What the benchmark is: the runs a config asks for, built once, with their settings, ESM
model, cache, layers and folder, and every check across config keys.

:class:`Benchmark` is built from the validated config, the config as the user wrote it
(``written``: only there can a written value be told from a schema default, and only a written
value beats a published recipe) and the recipes. Its :class:`Run` is one training run, main or
ablation variant; the DAG (``rules/common.smk``), ``bihmf plan`` and ``bench/`` iterate the same
runs, and each cache's layers are the union over the runs that read it.

The ``ablations`` block: an ablation names a subset of the benchmark (datasets, encoders,
fusions, seeds) and a list of variants, each a small override of the ``esm`` or ``model``
settings. Every variant trains that whole subset again in its own folder
(:data:`bihmf.run.ABLATION_RUN_DIR`); the main runs of the same subset are the variant
``default`` it is compared with, never retrained.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bihmf.config import ConfigError, config_error, deep_merge, error_line, schema_errors
from bihmf.esm_checkpoint import RELEASED_ESM2, esm_depth
from bihmf.models.fusion import FUSIONS, LayerChoice, cached_layers
from bihmf.models.model import run_combinations
from bihmf.recipes import RECIPE_KEY, Recipe, Recipes, load_recipes
from bihmf.run import ABLATION_RUN_DIR, RUN_DIR


@dataclass(frozen=True)
class RunSettings:
    model: dict[str, Any]
    train: dict[str, Any]
    recipe: Recipe | None


def benchmark_of(config: dict[str, Any], dataset: str) -> str:
    """The benchmark a dataset is (``paper_benchmark``, or its own name): the recipe key."""
    return config["datasets"][dataset]["paper_benchmark"] or dataset


def run_settings(config: dict[str, Any], written: dict[str, Any], dataset: str, encoder: str | None,
                 recipes: Recipes | None = None) -> RunSettings:
    """Model and train settings of one run of ``dataset`` × ``encoder``.

    ``config`` is the validated config (schema defaults filled in), ``written`` the config as
    the user wrote it, before validation filled the defaults: only there can a written value
    be told from a default, and only a written value beats the recipe. With ``recipe: none``
    the result is the plain config, unchanged (no recipe key), as before recipes existed; so it
    is with ``encoder=None``, the settings every run of the dataset shares (seeds, resources).
    """
    model, train = copy.deepcopy(config["model"]), {**config["train"], **config["datasets"][dataset]["train"]}
    if config["recipe"] == "none" or encoder is None:
        return RunSettings(model, train, None)
    benchmark = benchmark_of(config, dataset)
    recipe = (recipes or load_recipes()).get(benchmark, encoder)
    if recipe is None:
        return RunSettings(model, {**train, RECIPE_KEY: {"id": None, "reason": f"no recipe for {benchmark}/{encoder}"}}, None)
    applied = recipe.settings()
    given = {"model": written.get("model") or {},
             "train": {**(written.get("train") or {}), **config["datasets"][dataset]["train"]}}
    overridden = sorted(f"{s}.{k}" for s, values in applied.items() for k in values if k in given[s])
    model.update({k: v for k, v in applied["model"].items() if k not in given["model"]})
    train.update({k: v for k, v in applied["train"].items() if k not in given["train"]})
    train[RECIPE_KEY] = {"id": recipe.id, "published": recipe.published, "overridden": overridden}
    return RunSettings(model, train, recipe)


def variant_settings(config: dict[str, Any], written: dict[str, Any], dataset: str, encoder: str | None,
                     model_override: dict[str, Any], recipes: Recipes | None = None) -> RunSettings:
    """Settings of one run of an ablation variant: its model override counts as written config,
    so it beats the encoder's recipe exactly as ``--config model=...`` would."""
    override = {"model": model_override}
    return run_settings(deep_merge(config, override), deep_merge(written, override), dataset, encoder, recipes)


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


def registries() -> dict[str, list[str]]:
    """The registries the schema's ``x-registry`` choice lists name (imported on use: the model
    and data packages are heavier than config loading and import nothing from here)."""
    from bihmf.data import DATASETS
    from bihmf.models.encoders import ENCODERS
    from bihmf.models.fusion import FUSIONS
    from bihmf.tasks import TASKS
    from bihmf.tasks.heads import READOUTS

    return {"datasets": list(DATASETS), "tasks": list(TASKS), "encoders": list(ENCODERS), "fusions": list(FUSIONS),
            "readouts": list(READOUTS)}


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
    one_way = _one_way_errors(where, variant.model.get("fusion_direction", "both"), ablation.fusions)
    return one_way or _esm_errors(where, variant)


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


def _one_way_errors(where: str, direction: str, fusions: list[str] | tuple[str, ...]) -> list[str]:
    """A one-way ``model.fusion_direction`` given to fusions whose streams do not update each other."""
    one_way = [f for f in fusions if direction != "both" and not getattr(FUSIONS[f], "directional", False)]
    return [f"{where}: model.fusion_direction={direction} needs bidirectional fusions; {one_way} are not"] if one_way else []


def _direction_errors(config: dict[str, Any]) -> list[str]:
    """The main model's direction against the configured fusions (each run's training would
    otherwise refuse it, one job at a time)."""
    return _one_way_errors("model/fusion_direction", config["model"]["fusion_direction"], config["model"]["fusions"])


def _ablation_problems(config: dict[str, Any]) -> list[str]:
    """Problems of a schema-valid ``ablations`` block, one line each. Every variant's override
    is merged into the main esm/model settings and checked by the same schema as they are; a
    variant's own checkpoint / random_init gets its schema defaults filled in (so two spellings of
    one model compare equal). Then what no schema sees (:func:`bihmf.benchmark.ablation_errors`)."""
    lines: list[str] = []
    for index, entry in enumerate(config["ablations"]):
        for position, raw in enumerate(entry["variants"]):
            variant = Variant(raw["name"], raw.get("esm"), raw.get("model", {}))
            merged = {"esm": variant_esm(config, variant), "model": variant_model(config, variant)}
            errors = schema_errors(merged, registries())
            where = f"ablations/{index}/variants/{position} ({entry['name']}/{raw['name']})"
            lines += [f"{where}: {error_line(e)}" for e in errors]
            if not errors and variant.esm is not None:
                raw["esm"].update({key: merged["esm"][key] for key in ("checkpoint", "random_init") if key in raw["esm"]})
    return lines or ablation_errors(config)


def _validated(config: dict[str, Any], details: Path | None) -> dict[str, Any]:
    try:
        filled = expand_esm_list(copy.deepcopy(config))
    except ValueError as error:
        raise ConfigError(f"invalid bihmf config: {error}") from None
    errors = schema_errors(filled, registries())
    if errors:
        raise config_error(errors, details)
    problems = _direction_errors(filled) + _ablation_problems(filled)
    if problems:
        raise ConfigError("invalid bihmf config: " + "\n  ".join(problems))
    return filled


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with schema defaults filled in."""
    return _validated(config, None)


def check_config(config: dict[str, Any], details: Path) -> dict[str, Any]:
    """The workflow's config, validated with defaults filled in. Unlike Snakemake's ``validate``,
    whose error starts with 10-170 lines of schema excerpt, the error names the key and the
    reason first and leaves the excerpts in ``details``."""
    return _validated(config, details)


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Load YAML files, later ones overriding earlier ones key by key, then validate."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = deep_merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(merged)


@dataclass(frozen=True)
class Run:
    """One training run, main or ablation variant, resolved: what the train rule's job gets."""

    dataset: str
    encoder: str
    fusion: str
    seed: int
    esm: dict[str, Any]  # settings of the ESM model whose cache the run reads
    settings: RunSettings  # model and train settings: recipe applied, a variant's override on top
    ablation: str | None = None  # None: a main run
    variant: Variant | None = None

    @property
    def esm_name(self) -> str:
        return self.esm["name"]

    @property
    def folder(self) -> str:
        names = {"dataset": self.dataset, "encoder": self.encoder, "fusion": self.fusion, "seed": self.seed}
        if self.variant is None:
            return RUN_DIR.format(**names)
        return ABLATION_RUN_DIR.format(ablation=self.ablation, variant=self.variant.name, **names)

    @property
    def layer_choice(self) -> LayerChoice:
        """Which ESM layers the run's fusion reads: its model section at its ESM model's depth."""
        return LayerChoice.of(self.settings.model, esm_depth(self.esm))

    @property
    def layers(self) -> list[int]:
        """The ESM layers the run needs cached (its fusion's, at its depth and pairing, and the last)."""
        return cached_layers([self.fusion], self.layer_choice)

    @property
    def provenance(self) -> dict[str, Any] | None:
        """``provenance["ablation"]`` of the run's metrics.json (main runs have none)."""
        if self.variant is None:
            return None
        return {"name": self.ablation, "variant": self.variant.name, "overrides": self.variant.overrides}


RunKey = tuple[str | None, str | None, str, str, str, int]  # (ablation, variant, dataset, encoder, fusion, seed)


class Benchmark:
    """Every run of a validated config, built once (main runs first, then each ablation's
    variants in config order), and what follows from them: the ESM models, and each cache with
    the union of the layers its runs read."""

    def __init__(self, config: dict[str, Any], written: dict[str, Any], recipes: Recipes | None = None):
        self.config, self.written, self.recipes = config, written, recipes or load_recipes()
        self.ablations = {ablation.name: ablation for ablation in ablations(config)}
        pairs = run_combinations(config["model"]["encoders"], config["model"]["fusions"])
        self.main_runs = [Run(dataset, encoder, fusion, seed, config["esm"], self.settings(dataset, encoder))
                          for dataset in config["datasets"] for encoder, fusion in pairs
                          for seed in self.settings(dataset).train["seeds"]]
        self.variant_runs = {name: [self._variant_run(ablation, variant, *run)
                                    for variant in ablation.variants for run in default_runs(config, ablation)]
                             for name, ablation in self.ablations.items()}
        self.runs = self.main_runs + [run for runs in self.variant_runs.values() for run in runs]
        self._by_key = {_key(run): run for run in self.runs}

    @classmethod
    def load(cls, *paths: str | Path) -> Benchmark:
        """The benchmark of YAML config files, later ones overriding earlier ones key by key."""
        written: dict[str, Any] = {}
        for path in paths:
            written = deep_merge(written, yaml.safe_load(Path(path).read_text()) or {})
        return cls(validate_config(written), written)

    def _variant_run(self, ablation: Ablation, variant: Variant, dataset: str, encoder: str, fusion: str, seed: int) -> Run:
        settings = variant_settings(self.config, self.written, dataset, encoder, variant.model, self.recipes)
        return Run(dataset, encoder, fusion, seed, variant_esm(self.config, variant), settings, ablation.name, variant)

    def settings(self, dataset: str, encoder: str | None = None) -> RunSettings:
        """Settings of the main runs of ``dataset`` × ``encoder``; without an encoder, what every
        run of the dataset shares (seeds, resources)."""
        return run_settings(self.config, self.written, dataset, encoder, self.recipes)

    def run(self, dataset: str, encoder: str, fusion: str, seed: int, ablation: str | None = None,
            variant: str | None = None) -> Run:
        """The run of one train (or train_ablation) job."""
        key = (ablation, variant, dataset, encoder, fusion, int(seed))
        if key not in self._by_key:
            raise KeyError(f"no run {key} in the benchmark")
        return self._by_key[key]

    def dataset_runs(self, dataset: str) -> list[Run]:
        """The main runs of one dataset (what its report reads)."""
        return [run for run in self.main_runs if run.dataset == dataset]

    def compared_runs(self, ablation: str) -> list[Run]:
        """The main runs an ablation compares its variants with (its variant ``default``)."""
        return [self.run(*key) for key in default_runs(self.config, self.ablations[ablation])]

    @property
    def esm_models(self) -> dict[str, dict[str, Any]]:
        """ESM model name -> its settings, the main model first (one checkpoint and one cache per dataset each)."""
        return esm_models(self.config)

    @property
    def caches(self) -> dict[tuple[str, str], list[int]]:
        """(dataset, ESM model name) -> the layers its cache holds: the union of what every run
        reading it needs, main and variant runs alike."""
        layers: dict[tuple[str, str], set[int]] = {}
        for run in self.runs:
            layers.setdefault((run.dataset, run.esm_name), set()).update(run.layers)
        return {key: sorted(values) for key, values in layers.items()}

    def read_layers(self, dataset: str, esm: str) -> int:
        """The most layers one run reading the (dataset, ESM model) cache loads."""
        return max(len(run.layers) for run in self.runs if (run.dataset, run.esm_name) == (dataset, esm))


def _key(run: Run) -> RunKey:
    return (run.ablation, run.variant.name if run.variant else None, run.dataset, run.encoder, run.fusion, run.seed)
