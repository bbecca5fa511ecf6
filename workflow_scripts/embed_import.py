"""Glue for rule embed_import, one job per shard (logic: bihmf.embeddings_import.import_shard)."""

from pathlib import Path

from bihmf.embeddings_import import import_shard
from bihmf.logs import log_to

log_to(snakemake.log[0])
esm = snakemake.params.esm
import_shard(
    esm["precomputed"],
    Path(snakemake.input.proteins),
    list(snakemake.params.layers),
    int(snakemake.wildcards.shard),
    esm["shards"],
    Path(snakemake.output[0]),
)
