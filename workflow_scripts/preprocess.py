"""Glue for rule preprocess (logic: bihmf.data.preprocess_dataset)."""

from pathlib import Path

from bihmf.data import preprocess_dataset
from bihmf.logs import log_to

log_to(snakemake.log[0])
preprocess_dataset(Path(snakemake.input[0]), snakemake.params.spec, Path(snakemake.output.proteins), Path(snakemake.output.report))
