"""Glue for rule embed_index (logic: bihmf.esm_cache.write_index)."""

from pathlib import Path

from bihmf.esm_cache import read_chains, write_index
from bihmf.logs import log_to

log_to(snakemake.log[0])
write_index(Path(snakemake.output[0]), [Path(p) for p in snakemake.input.shards], read_chains(Path(snakemake.input.proteins)))
