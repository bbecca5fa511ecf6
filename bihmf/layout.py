"""The workflow tree, named once: every file a rule writes outside a run folder, relative to the
workflow folder, as a template of the rules' wildcards. The rules, ``bihmf plan`` and the
report import these names; a run folder's own files are :mod:`bihmf.run`'s.

    resources/datasets/<dataset>/raw/          the dataset as published (rule download_dataset)
    resources/esm/<esm>.pt (+ regression, sha256)   one ESM-2 checkpoint per model name
    results/data/<dataset>/                    protein table and preprocess report
    results/embeddings/<dataset>/<esm>/        ESM cache: shards and the index training reads
    results/runs/..., results/ablations/...    run folders (bihmf.run)
    results/report/                            tables, statistics, figures, summary, ablations
    logs/<stage>/..., benchmarks/train/...     one log per job; Snakemake's benchmark per train job
"""

from __future__ import annotations

RAW_DIR = "resources/datasets/{dataset}/raw"

PROTEINS = "results/data/{dataset}/proteins.parquet"
PREPROCESS_REPORT = "results/data/{dataset}/preprocess_report.json"

ESM_CHECKPOINT = "resources/esm/{esm}.pt"
ESM_REGRESSION = "resources/esm/{esm}-contact-regression.pt"  # fair-esm reads it beside the checkpoint
ESM_SHA256 = f"{ESM_CHECKPOINT}.sha256.json"  # hashed once by rule esm_checkpoint for every embed job

# one cache per dataset and ESM model: shard files from the embed jobs, and the index that training reads
ESM_CACHE = "results/embeddings/{dataset}/{esm}"
SHARD_FILE = "shard-{shard}-of-{shards}.parquet"
INDEX_NAME = "index.parquet"
ESM_INDEX = f"{ESM_CACHE}/{INDEX_NAME}"

REPORT_DIR = "results/report"
# per dataset: results/report/<dataset>_<name>
DATASET_TABLES = ("table.md", "table.html", "table.tex", "table.csv", "stats.csv", "runs.csv")
DATASET_FIGURES = tuple(f"{name}.{ext}" for name in ("metrics", "heatmap", "curves", "cost") for ext in ("png", "pdf"))
DATASET_REPORT = f"{REPORT_DIR}/{{dataset}}_{{name}}"
SUMMARY = f"{REPORT_DIR}/summary.{{ext}}"
SUMMARY_FORMATS = ("md", "html", "tex", "csv")
SUMMARY_FRONT = f"{REPORT_DIR}/summary_front.html"  # the HTML report's first page (captions/workflow.rst)
ABLATION_REPORT = f"{REPORT_DIR}/ablations/{{ablation}}.{{ext}}"
ABLATION_FORMATS = ("md", "csv", "html", "png")

PLAN = "results/plan/plan.csv"
CONFIG_ERRORS = "logs/config_errors.txt"  # the schema's full reports of an invalid config

LOGS = {
    "download_dataset": "logs/download/{dataset}.log",
    "esm_checkpoint": "logs/esm_checkpoint/{esm}.log",
    "preprocess": "logs/preprocess/{dataset}.log",
    "embed": "logs/embed/{dataset}/{esm}/shard-{shard}-of-{shards}.log",
    "embed_index": "logs/embed/{dataset}/{esm}/index.log",
    "train": "logs/train/{dataset}/{encoder}/{fusion}/seed{seed}.log",
    "train_ablation": "logs/train/ablations/{ablation}/{variant}/{dataset}/{encoder}/{fusion}/seed{seed}.log",
    "report": "logs/report/{dataset}.log",
    "report_summary": "logs/report/summary.log",
    "ablation_report": "logs/report/ablation_{ablation}.log",
    "predict": "logs/predict/predict.log",
    "plan": "logs/plan/plan.log",
}
TRAIN_BENCHMARK = "benchmarks/train/{dataset}/{encoder}/{fusion}/seed{seed}.tsv"
ABLATION_TRAIN_BENCHMARK = "benchmarks/train/ablations/{ablation}/{variant}/{dataset}/{encoder}/{fusion}/seed{seed}.tsv"


def dataset_report_files(datasets: list[str]) -> list[str]:
    """Every per-dataset report file, then the summary's (the report rules' outputs)."""
    per_dataset = [DATASET_REPORT.format(dataset=d, name=name) for d in datasets for name in DATASET_TABLES + DATASET_FIGURES]
    return per_dataset + [SUMMARY.format(ext=ext) for ext in SUMMARY_FORMATS] + [SUMMARY_FRONT]
