# Shared names and input functions; all logic lives in the bihmf package.
import os
import re
from pathlib import Path

from bihmf.benchmark import Benchmark
from bihmf.layout import ABLATION_FORMATS, ABLATION_REPORT, DATASET_REPORT, ESM_CACHE, ESM_CHECKPOINT, ESM_INDEX
from bihmf.layout import LOGS, PROTEINS, REPORT_DIR, SHARD_FILE, SUMMARY_FRONT, TRAIN_BENCHMARK, dataset_report_files
from bihmf.predict.structures import expand_inputs
from bihmf.run import ABLATION_RUN_DIR, METRICS_FILE, RUN_DIR

# every run (main and ablation variants) with its settings, ESM model, cache and folder
BENCHMARK = Benchmark(config, WRITTEN_CONFIG)
DATASETS = list(config["datasets"])
ESM_NAME = config["esm"]["name"]  # the main model; ablation variants may add others
ESM_MODELS = BENCHMARK.esm_models  # name -> esm settings: one checkpoint and one cache per dataset each
MAIN_INDEX = ESM_INDEX.format(dataset="{dataset}", esm=ESM_NAME)  # the main model's cache, read by the main runs
# (dataset, ESM model) -> the layers its cache holds: the union of what every run reading it needs
ESM_LAYERS = BENCHMARK.caches
ABLATIONS = BENCHMARK.ablations


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[A-Za-z0-9_]+",
    fusion="[A-Za-z0-9_]+",
    seed=r"\d+",
    esm="|".join(map(re.escape, ESM_MODELS)),
    ablation="[a-z0-9_]+",
    variant="[a-z0-9_]+",


def esm_shards(wc):
    """Shard files of one (dataset, ESM model) cache (rules/integrity.smk)."""
    return cache_shards(wc.dataset, wc.esm)


def train_settings(dataset, encoder=None):
    """Train settings of one dataset x encoder (its recipe applied); without an encoder, what
    every run of the dataset shares (seeds, resources)."""
    return BENCHMARK.settings(dataset, encoder).train


def model_settings(dataset, encoder):
    """Model settings of one dataset x encoder: the config with the encoder's recipe applied."""
    return BENCHMARK.settings(dataset, encoder).model


def variant_run(wc):
    """The variant run of one train_ablation job."""
    return BENCHMARK.run(wc.dataset, wc.encoder, wc.fusion, wc.seed, wc.ablation, wc.variant)


def variant_index(wc):
    """The cache a variant run reads: its dataset's, of the variant's ESM model."""
    return ESM_INDEX.format(dataset=wc.dataset, esm=variant_run(wc).esm_name)


def expected_runs(dataset):
    """Every main training run of one dataset, (encoder, fusion, seed)."""
    return [(run.encoder, run.fusion, run.seed) for run in BENCHMARK.dataset_runs(dataset)]


# report stage: which run files a report reads, and its report() outputs


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
        TRAIN_BENCHMARK.format(dataset=wc.dataset, encoder=encoder, fusion=fusion, seed=seed)
        for encoder, fusion, seed in report_runs(wc.dataset)
    ]


def dataset_report(name, caption, category, kind):
    """A report() output of one dataset, filed under its category with the dataset as label."""
    return report(
        DATASET_REPORT.format(dataset="{dataset}", name=name),
        caption=f"../captions/{caption}.rst",
        category=category,
        subcategory="{dataset}",
        labels={"dataset": "{dataset}", "content": kind},
    )


def report_outputs():
    """Every report file: per dataset the tables, statistics, provenance and figures; the summary."""
    return dataset_report_files(DATASETS)


def ablation_run_files(ablation, name):
    """Input-function factory of the ablation_report rule, one file of every variant run of the
    ablation (``ablation`` may be the pattern "{ablation}"), after the main runs they are
    compared with (the variant "default"); with report.partial only the finished ones."""

    def files(wc):
        entry = ablation.format(**dict(wc.items()))
        folders = [run.folder for run in BENCHMARK.compared_runs(entry) + BENCHMARK.variant_runs[entry]]
        if config["report"]["partial"]:
            folders = [folder for folder in folders if os.path.exists(f"{folder}/{METRICS_FILE}")]
        return [f"{folder}/{name}" for folder in folders]

    return files


def ablation_report_file(ext, caption, kind):
    """A report() output of one ablation, filed under "4. Ablations" with the ablation as label."""
    return report(
        ABLATION_REPORT.format(ablation="{ablation}", ext=ext),
        caption=f"../captions/{caption}.rst",
        category="4. Ablations",
        subcategory="{ablation}",
        labels={"ablation": "{ablation}", "content": kind},
    )


def ablation_report_outputs():
    """Every ablation's report: one table (Markdown, CSV, HTML) and one figure each."""
    return expand(ABLATION_REPORT, ablation=list(ABLATIONS), ext=ABLATION_FORMATS)


def predict_request():
    """(run folder, structure files) of target predict; a clear error when --config lacks them."""
    if not config["predict_run"] or not config["predict_in"]:
        raise ValueError("target predict needs --config predict_run=<run folder> predict_in=<structure folder, file or [list]>")
    given = [config["predict_in"]] if isinstance(config["predict_in"], str) else config["predict_in"]
    files = expand_inputs([Path(p) for p in given])
    if not files:
        raise ValueError(f"predict_in={config['predict_in']}: no structure files (.pdb/.ent/.cif/.mmcif, optionally .gz)")
    return config["predict_run"], [str(f) for f in files]
