# What a job really reads, and what `snakemake all` asks for besides the reports, so that a
# deleted intermediate is rebuilt (with what depends on it) instead of worked around.
# Snakemake does not rebuild a missing file that only feeds outputs which still exist; so every
# file `bihmf check --remove` may delete (protein tables, ESM cache shards and indexes, run
# files) is a target of `all`, unless report.partial asks to report only what is there.
from bihmf.ablation import all_ablation_runs
from bihmf.esm_cache import shard_name
from bihmf.run import CURVE_FILE, MODEL_FILE, TEST_PREDICTIONS_FILE

RUN_FILES = (METRICS_FILE, MODEL_FILE, CURVE_FILE, TEST_PREDICTIONS_FILE)


def cache_shards(dataset, esm):
    """Shard files of one (dataset, ESM model) cache: what a training job reads through the index."""
    count = ESM_MODELS[esm]["shards"]
    return [f"{ESM_CACHE.format(dataset=dataset, esm=esm)}/{shard_name(shard, count)}" for shard in range(count)]


def main_shards(wc):
    return cache_shards(wc.dataset, ESM_NAME)


def variant_shards(wc):
    return cache_shards(wc.dataset, variant_esm(config, ABLATIONS[wc.ablation].variant(wc.variant))["name"])


def rebuildable_targets():
    """Every protein table, cache file and run file of the config (none with report.partial)."""
    if config["report"]["partial"]:
        return []
    tables = expand("results/data/{dataset}/proteins.parquet", dataset=DATASETS)
    caches = [path for dataset, esm in ESM_LAYERS for path in [*cache_shards(dataset, esm), f"{ESM_CACHE.format(dataset=dataset, esm=esm)}/{INDEX_NAME}"]]
    folders = [RUN_DIR.format(dataset=dataset, encoder=e, fusion=f, seed=s) for dataset in DATASETS for e, f, s in expected_runs(dataset)]
    folders += [run.folder for run in all_ablation_runs(config)]
    return tables + caches + [f"{folder}/{name}" for folder in folders for name in RUN_FILES]
