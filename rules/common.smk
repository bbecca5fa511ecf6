# Shared names and input functions; all logic lives in the bihmf package.
import os
from pathlib import Path

from bihmf.esm import esm_depth
from bihmf.esm_cache import INDEX_NAME
from bihmf.models.model import run_combinations
from bihmf.predict.structures import expand_inputs
from bihmf.recipes import esm_layers_to_cache, load_recipes, run_settings
from bihmf.run import METRICS_FILE, RUN_DIR

DATASETS = list(config["datasets"])
ESM_NAME = config["esm"]["name"]
ESM_CHECKPOINT = f"resources/esm/{ESM_NAME}.pt"
ESM_SHARDS = config["esm"]["shards"]
# one cache per dataset: shard files from the embed jobs, and the index that training reads
ESM_CACHE = f"results/embeddings/{{dataset}}/{ESM_NAME}"
ESM_INDEX = f"{ESM_CACHE}/{INDEX_NAME}"
RECIPES = load_recipes()
ESM_LAYERS = esm_layers_to_cache(config, EXPLICIT_CONFIG, esm_depth(config["esm"]), RECIPES)


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[A-Za-z0-9_]+",
    fusion="[A-Za-z0-9_]+",
    seed=r"\d+",


def train_settings(dataset, encoder=None):
    """Train settings of one dataset x encoder (its recipe applied); without an encoder, what
    every run of the dataset shares (seeds, resources)."""
    return run_settings(config, EXPLICIT_CONFIG, dataset, encoder, RECIPES).train


def model_settings(dataset, encoder):
    """Model settings of one dataset x encoder: the config with the encoder's recipe applied."""
    return run_settings(config, EXPLICIT_CONFIG, dataset, encoder, RECIPES).model


def expected_runs(dataset):
    """Every training run of one dataset, (encoder, fusion, seed): pairs x seeds from the config."""
    return [
        (encoder, fusion, seed)
        for encoder, fusion in run_combinations(config["model"]["encoders"], config["model"]["fusions"])
        for seed in train_settings(dataset)["seeds"]
    ]


# report stage: which run files a report reads, and its report() outputs
REPORT_DIR = "results/report"


def report_runs(dataset):
    """The runs a report reads: all configured ones, or (report.partial) only the finished ones."""
    runs = expected_runs(dataset)
    if not config["report"]["partial"]:
        return runs
    return [run for run in runs if os.path.exists(run_file(dataset, run, METRICS_FILE))]


def run_file(dataset, run, name):
    encoder, fusion, seed = run
    return f"{RUN_DIR.format(dataset=dataset, encoder=encoder, fusion=fusion, seed=seed)}/{name}"


def report_inputs(name):
    """Input function: one file of every run the report reads."""
    return lambda wc: [run_file(wc.dataset, run, name) for run in report_runs(wc.dataset)]


def report_benchmarks(wc):
    return [
        f"benchmarks/train/{wc.dataset}/{encoder}/{fusion}/seed{seed}.tsv"
        for encoder, fusion, seed in report_runs(wc.dataset)
    ]


def dataset_report(name, caption, category, kind):
    """A report() output of one dataset, filed under its category with the dataset as label."""
    return report(
        f"{REPORT_DIR}/{{dataset}}_{name}",
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory="{dataset}",
        labels={"dataset": "{dataset}", "content": kind},
    )


def report_outputs():
    """Every report file: per dataset the tables, statistics, provenance and figures; the summary."""
    per_dataset = ["table.md", "table.html", "table.tex", "table.csv", "stats.csv", "runs.csv"]
    figures = [f"{name}.{ext}" for name in ("metrics", "heatmap", "curves", "cost") for ext in ("png", "pdf")]
    summary = [f"{REPORT_DIR}/summary.{ext}" for ext in ("md", "html", "tex", "csv")]
    return expand(f"{REPORT_DIR}/{{dataset}}_{{kind}}", dataset=DATASETS, kind=per_dataset + figures) + summary


def predict_request():
    """(run folder, structure files) of target predict; a clear error when --config lacks them."""
    if not config["predict_run"] or not config["predict_in"]:
        raise ValueError("target predict needs --config predict_run=<run folder> predict_in=<structure folder, file or [list]>")
    given = [config["predict_in"]] if isinstance(config["predict_in"], str) else config["predict_in"]
    files = expand_inputs([Path(p) for p in given])
    if not files:
        raise ValueError(f"predict_in={config['predict_in']}: no structure files (.pdb/.ent/.cif/.mmcif, optionally .gz)")
    return config["predict_run"], [str(f) for f in files]
