# What a job really reads, and what `snakemake all` asks for besides the reports, so that a
# deleted intermediate is rebuilt (with what depends on it) instead of worked around.
# Snakemake does not rebuild a missing file that only feeds outputs which still exist; so every
# file `bihmf check --remove` may delete (protein tables, ESM cache shards and indexes, run
# files) is a target of `all`, unless report.partial asks to report only what is there.
from bihmf.run import CURVE_FILE, MODEL_FILE, TEST_PREDICTIONS_FILE

RUN_FILES = (METRICS_FILE, MODEL_FILE, CURVE_FILE, TEST_PREDICTIONS_FILE)


def cache_shards(dataset, esm):
    """Shard files of one (dataset, ESM model) cache: what a training job reads through the index."""
    count = ESM_MODELS[esm]["shards"]
    return [f"{ESM_CACHE}/{SHARD_FILE}".format(dataset=dataset, esm=esm, shard=shard, shards=count) for shard in range(count)]


def main_shards(wc):
    return cache_shards(wc.dataset, ESM_NAME)


def variant_shards(wc):
    return cache_shards(wc.dataset, variant_run(wc).esm_name)


def rebuildable_targets():
    """Every protein table, cache file and run file of the config (none with report.partial)."""
    if config["report"]["partial"]:
        return []
    tables = expand(PROTEINS, dataset=DATASETS)
    caches = [path for dataset, esm in ESM_LAYERS for path in [*cache_shards(dataset, esm), ESM_INDEX.format(dataset=dataset, esm=esm)]]
    return tables + caches + [f"{run.folder}/{name}" for run in BENCHMARK.runs for name in RUN_FILES]
