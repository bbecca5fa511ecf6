"""Glue for rule download_dataset (logic: bihmf.data.fetch.fetch_dataset)."""

from pathlib import Path

from bihmf.data.fetch import fetch_dataset
from bihmf.logs import log_to

log_to(snakemake.log[0])
fetch_dataset(snakemake.params.spec, Path(snakemake.output[0]), Path(snakemake.params.downloads), Path(snakemake.params.base_dir))
