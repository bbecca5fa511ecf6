# Shared names and input functions; all logic lives in the bihmf package.
import os
import re
from pathlib import Path

from bihmf.benchmark import AblationRun, ablation_runs, ablations, cache_layers, default_runs, esm_models
from bihmf.benchmark import run_provenance, run_settings, variant_esm, variant_run_settings
from bihmf.esm_cache import INDEX_NAME
from bihmf.models.model import run_combinations
from bihmf.predict.structures import expand_inputs
from bihmf.recipes import load_recipes
from bihmf.run import ABLATION_RUN_DIR, METRICS_FILE, RUN_DIR

DATASETS = list(config["datasets"])
ESM_NAME = config["esm"]["name"]  # the main model; ablation variants may add others
ESM_MODELS = esm_models(config)  # name -> esm settings: one checkpoint and one cache per dataset each
ESM_CHECKPOINT = "resources/esm/{esm}.pt"
# one cache per dataset and ESM model: shard files from the embed jobs, and the index that training reads
ESM_CACHE = "results/embeddings/{dataset}/{esm}"
ESM_INDEX = f"results/embeddings/{{dataset}}/{ESM_NAME}/{INDEX_NAME}"  # the main model's, read by the main runs
RECIPES = load_recipes()
# (dataset, ESM model) -> the layers its cache holds: the union of what every run reading it needs
ESM_LAYERS = cache_layers(config, EXPLICIT_CONFIG, RECIPES)
ABLATIONS = {ablation.name: ablation for ablation in ablations(config)}


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[A-Za-z0-9_]+",
    fusion="[A-Za-z0-9_]+",
    seed=r"\d+",
    esm="|".join(map(re.escape, ESM_MODELS)),
    ablation="[a-z0-9_]+",
    variant="[a-z0-9_]+",


def esm_shards(wc):
    """Shard files of one (dataset, ESM model) cache."""
    count = ESM_MODELS[wc.esm]["shards"]
    return [f"results/embeddings/{wc.dataset}/{wc.esm}/shard-{shard}-of-{count}.parquet" for shard in range(count)]


def train_settings(dataset, encoder=None):
    """Train settings of one dataset x encoder (its recipe applied); without an encoder, what
    every run of the dataset shares (seeds, resources)."""
    return run_settings(config, EXPLICIT_CONFIG, dataset, encoder, RECIPES).train


def model_settings(dataset, encoder):
    """Model settings of one dataset x encoder: the config with the encoder's recipe applied."""
    return run_settings(config, EXPLICIT_CONFIG, dataset, encoder, RECIPES).model


def ablation_run(wc):
    """The variant run of one train_ablation job."""
    return AblationRun(wc.ablation, wc.variant, wc.dataset, wc.encoder, wc.fusion, int(wc.seed))


def variant_index(wc):
    """The cache a variant run reads: its dataset's, of the variant's ESM model."""
    variant = ABLATIONS[wc.ablation].variant(wc.variant)
    return f"results/embeddings/{wc.dataset}/{variant_esm(config, variant)['name']}/{INDEX_NAME}"


def variant_settings_of(wc):
    return variant_run_settings(config, EXPLICIT_CONFIG, ablation_run(wc), RECIPES)


def variant_provenance(wc):
    return run_provenance(ablation_run(wc), ABLATIONS[wc.ablation].variant(wc.variant))


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


def ablation_run_files(ablation, name):
    """Input-function factory of the ablation_report rule, one file of every variant run of the
    ablation (``ablation`` may be the pattern "{ablation}"), after the main runs they are
    compared with (the variant "default"); with report.partial only the finished ones."""

    def files(wc):
        entry = ABLATIONS[ablation.format(**dict(wc.items()))]
        main = [RUN_DIR.format(dataset=d, encoder=e, fusion=f, seed=s) for d, e, f, s in default_runs(config, entry)]
        folders = main + [run.folder for run in ablation_runs(config, entry)]
        if config["report"]["partial"]:
            folders = [folder for folder in folders if os.path.exists(f"{folder}/{METRICS_FILE}")]
        return [f"{folder}/{name}" for folder in folders]

    return files


def ablation_report_file(ext, caption, kind):
    """A report() output of one ablation, filed under "4. Ablations" with the ablation as label."""
    return report(
        f"{REPORT_DIR}/ablations/{{ablation}}.{ext}",
        caption=f"../report/{caption}.rst",
        category="4. Ablations",
        subcategory="{ablation}",
        labels={"ablation": "{ablation}", "content": kind},
    )


def ablation_report_outputs():
    """Every ablation's report: one table (Markdown, CSV, HTML) and one figure each."""
    return expand(f"{REPORT_DIR}/ablations/{{ablation}}.{{ext}}", ablation=list(ABLATIONS), ext=("md", "csv", "html", "png"))


def predict_request():
    """(run folder, structure files) of target predict; a clear error when --config lacks them."""
    if not config["predict_run"] or not config["predict_in"]:
        raise ValueError("target predict needs --config predict_run=<run folder> predict_in=<structure folder, file or [list]>")
    given = [config["predict_in"]] if isinstance(config["predict_in"], str) else config["predict_in"]
    files = expand_inputs([Path(p) for p in given])
    if not files:
        raise ValueError(f"predict_in={config['predict_in']}: no structure files (.pdb/.ent/.cif/.mmcif, optionally .gz)")
    return config["predict_run"], [str(f) for f in files]
