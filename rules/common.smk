# Shared names and input functions; all logic lives in the bihmf package.
from bihmf.esm import esm_depth
from bihmf.esm_cache import INDEX_NAME
from bihmf.models.fusion import cached_layers
from bihmf.models.model import run_combinations

DATASETS = list(config["datasets"])
ESM_NAME = config["esm"]["name"]
ESM_CHECKPOINT = f"resources/esm/{ESM_NAME}.pt"
ESM_SHARDS = config["esm"]["shards"]
# one cache per dataset: shard files from the embed jobs, and the index that training reads
ESM_CACHE = f"results/embeddings/{{dataset}}/{ESM_NAME}"
ESM_INDEX = f"{ESM_CACHE}/{INDEX_NAME}"
ESM_LAYERS = cached_layers(
    config["model"]["fusions"],
    config["model"]["num_layers"],
    esm_depth(config["esm"]),
    config["model"]["esm_layers"],
)


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[A-Za-z0-9_]+",
    fusion="[A-Za-z0-9_]+",
    seed=r"\d+",


def train_settings(dataset):
    """Global train settings with the dataset's own overrides on top."""
    return {**config["train"], **config["datasets"][dataset]["train"]}


def run_metrics(dataset):
    """Every training run of one dataset: (encoder, fusion) pairs x seeds from the config."""
    return [
        f"results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/metrics.json"
        for encoder, fusion in run_combinations(config["model"]["encoders"], config["model"]["fusions"])
        for seed in train_settings(dataset)["seeds"]
    ]


def report_outputs():
    return expand(
        "results/report/{dataset}_{kind}",
        dataset=DATASETS,
        kind=["table.md", "table.csv", "metrics.png"],
    )
