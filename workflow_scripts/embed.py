"""Glue for rule embed (logic: bihmf.esm.embed_proteins)."""

from pathlib import Path

import torch

from bihmf.data.schema import read_proteins
from bihmf.esm import embed_proteins
from bihmf.logs import log_to
from bihmf.training import pick_device

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
esm = snakemake.params.esm
embed_proteins(
    Path(snakemake.input.checkpoint),
    [(record.seq_hash, record.sequence) for record in read_proteins(Path(snakemake.input.proteins))],
    list(snakemake.params.layers),
    Path(snakemake.output[0]),
    token_budget=esm["token_budget"],
    window=esm["window"],
    overlap=esm["window_overlap"],
    device=pick_device(),
)
