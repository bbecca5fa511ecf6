"""Glue for rule embed, one job per shard (logic: bihmf.esm_writer.embed_shard)."""

from pathlib import Path

import torch

from bihmf.esm_cache import EmbedSettings
from bihmf.esm_writer import embed_shard
from bihmf.gpu import gpu_slot, pick_device
from bihmf.logs import log_to

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
esm = snakemake.params.esm
with gpu_slot():
    embed_shard(
        Path(snakemake.input.checkpoint),
        Path(snakemake.input.proteins),
        list(snakemake.params.layers),
        int(snakemake.wildcards.shard),
        esm["shards"],
        Path(snakemake.output[0]),
        EmbedSettings.from_config(esm),
        device=pick_device(),
    )
