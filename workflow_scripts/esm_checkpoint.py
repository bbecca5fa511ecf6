"""Glue for rule esm_checkpoint (logic: bihmf.esm.provide_checkpoint)."""

from pathlib import Path

from bihmf.esm import provide_checkpoint
from bihmf.logs import log_to

log_to(snakemake.log[0])
provide_checkpoint(snakemake.params.esm, Path(snakemake.output.model), Path(snakemake.params.downloads), Path(snakemake.params.base_dir))
