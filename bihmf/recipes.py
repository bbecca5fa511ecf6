"""Published training recipes (``bihmf/data/recipes.yaml``): read and checked here, applied to
one run's settings by :func:`bihmf.benchmark.run_settings`.

A reviewer's first question about a ``struct_only`` row is whether the encoder was trained the
way its authors trained it. The recipes file answers it per benchmark × encoder, each value
with its source or an explicit "paper silent" note. :func:`bihmf.benchmark.run_settings` applies a recipe
between the schema defaults and what the user wrote:

    schema defaults  <  recipe of (benchmark, encoder)  <  written config  <  datasets.<d>.train

so ``--config 'train={epochs: 2}'`` still means two epochs, and resources (threads, memory,
runtime) are never a recipe's business. Fusion runs use their encoder's recipe: the fusion adds
the ESM side, it does not change how the structure side is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bihmf.tasks.heads import READOUTS

RECIPES_PATH = Path(__file__).parent / "data" / "recipes.yaml"
# every (benchmark, encoder) recipe states these, each sourced or marked as our choice
REQUIRED = ("epochs", "optimizer", "lr", "schedule", "batch_size", "hidden_dim", "num_layers", "graph", "dropout",
            "early_stopping")
# the config keys a recipe may set; resources and seeds stay ours
SETTABLE = {
    "model": frozenset({"hidden_dim", "vector_dim", "num_layers", "knn", "dropout", "readout"}),
    "train": frozenset({"epochs", "lr", "weight_decay", "warmup_fraction", "patience", "grad_clip"}),
}
INTEGER_KEYS = frozenset({"model.hidden_dim", "model.vector_dim", "model.num_layers", "model.knn", "train.epochs",
                          "train.patience"})
NAMED_KEYS = {"model.readout": READOUTS}  # keys set to a registry name, not a number
RECIPE_KEY = "recipe"  # where a run's train settings record the recipe (training writes them to provenance)


@dataclass(frozen=True)
class Hyperparameter:
    value: Any
    source: str | None  # key of `sources`; None = the source is silent and the value is our choice
    where: str  # file/line, table or appendix in the source; with `silent`: why we chose the value
    sets: dict[str, Any]  # "model.hidden_dim" -> value applied to our config
    note: str = ""


@dataclass(frozen=True)
class Recipe:
    benchmark: str
    encoder: str
    published: bool  # the source published a recipe for this very benchmark
    basis: str  # where the values come from, and for an unpublished pair which recipe we transfer and why
    hyperparameters: dict[str, Hyperparameter] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.benchmark}/{self.encoder}"

    def settings(self) -> dict[str, dict[str, Any]]:
        """The config values this recipe sets: {"model": {...}, "train": {...}}."""
        out: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
        for entry in self.hyperparameters.values():
            for key, value in entry.sets.items():
                section, _, name = key.partition(".")
                out[section][name] = value
        return out


@dataclass(frozen=True)
class Recipes:
    sources: dict[str, str]
    recipes: dict[tuple[str, str], Recipe]  # (benchmark, encoder) -> recipe

    def get(self, benchmark: str, encoder: str) -> Recipe | None:
        return self.recipes.get((benchmark, encoder))


def _mapping(value: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} must be a mapping, got {type(value).__name__}")
    return value


def _sets(raw: Any, value: Any, where: str, path: Path) -> dict[str, Any]:
    """``sets: model.hidden_dim`` applies the value itself; a mapping states derived settings."""
    sets = {} if raw is None else {raw: value} if isinstance(raw, str) else _mapping(raw, f"{where}.sets", path)
    for key in sets:
        section, _, name = str(key).partition(".")
        if name not in SETTABLE.get(section, ()):
            allowed = sorted(f"{s}.{n}" for s, names in SETTABLE.items() for n in names)
            raise ValueError(f"{path}: {where}: sets {key!r}, which a recipe may not set (allowed: {allowed})")
        if key in NAMED_KEYS:
            if sets[key] not in NAMED_KEYS[key]:
                raise ValueError(f"{path}: {where}: sets {key!r} to {sets[key]!r}, not one of {sorted(NAMED_KEYS[key])}")
            continue
        integer = key in INTEGER_KEYS
        if isinstance(sets[key], bool) or not isinstance(sets[key], int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{path}: {where}: sets {key!r} to {sets[key]!r}, not {kind}")
    return dict(sets)


def _hyperparameter(raw: Any, sources: dict[str, str], where: str, path: Path) -> Hyperparameter:
    entry = _mapping(raw, where, path)
    unknown = set(entry) - {"value", "source", "where", "silent", "sets", "note"}
    if unknown:
        raise ValueError(f"{path}: {where}: unknown field(s) {sorted(unknown)}")
    if "value" not in entry:
        raise ValueError(f"{path}: {where}: needs a value")
    source, silent = entry.get("source"), entry.get("silent")
    if (source is None) == (silent is None):
        raise ValueError(f"{path}: {where}: needs either a source (with where) or a silent note (our choice and why)")
    if source is not None and source not in sources:
        raise ValueError(f"{path}: {where}: source {source!r} is not one of {sorted(sources)}")
    text = entry.get("where") if source is not None else silent
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}: {where}: {'where (table, appendix or file)' if source else 'silent'} must be a non-empty text")
    sets = _sets(entry.get("sets"), entry["value"], where, path)
    return Hyperparameter(entry["value"], source, " ".join(text.split()), sets, " ".join(str(entry.get("note", "")).split()))


def _entries(raw: Any, sources: dict[str, str], where: str, path: Path) -> dict[str, Hyperparameter]:
    return {str(name): _hyperparameter(value, sources, f"{where}.{name}", path)
            for name, value in _mapping(raw or {}, where, path).items()}


def _recipe(benchmark: str, encoder: str, raw: Any, defaults: dict[str, Hyperparameter], sources: dict[str, str],
            path: Path) -> Recipe:
    where = f"encoders.{encoder}.benchmarks.{benchmark}"
    entry = _mapping(raw, where, path)
    unknown = set(entry) - {"published", "basis", "hyperparameters"}
    if unknown:
        raise ValueError(f"{path}: {where}: unknown field(s) {sorted(unknown)}")
    if not isinstance(entry.get("published"), bool):
        raise ValueError(f"{path}: {where}: published must be true or false")
    basis = entry.get("basis")
    if not isinstance(basis, str) or not basis.strip():
        raise ValueError(f"{path}: {where}: needs a basis (the recipe's source, or for an unpublished pair our choice and why)")
    merged = {**defaults, **_entries(entry.get("hyperparameters"), sources, f"{where}.hyperparameters", path)}
    missing = [name for name in REQUIRED if name not in merged]
    if missing:
        raise ValueError(f"{path}: {where}: states no {missing} (every recipe states {list(REQUIRED)})")
    return Recipe(benchmark, encoder, entry["published"], " ".join(basis.split()), merged)


def load_recipes(path: Path = RECIPES_PATH) -> Recipes:
    """Read and validate the recipes file; every error names the file and the entry."""
    path = Path(path)
    raw = _mapping(yaml.safe_load(path.read_text()), "the file", path)
    sources = {str(k): " ".join(str(v).split()) for k, v in _mapping(raw.get("sources"), "sources", path).items()}
    recipes: dict[tuple[str, str], Recipe] = {}
    for encoder, spec in _mapping(raw.get("encoders"), "encoders", path).items():
        spec = _mapping(spec, f"encoders.{encoder}", path)
        defaults = _entries(spec.get("defaults"), sources, f"encoders.{encoder}.defaults", path)
        for benchmark, entry in _mapping(spec.get("benchmarks"), f"encoders.{encoder}.benchmarks", path).items():
            recipes[(str(benchmark), str(encoder))] = _recipe(str(benchmark), str(encoder), entry, defaults, sources, path)
    return Recipes(sources, recipes)
