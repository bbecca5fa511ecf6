"""Glue for rule plan (logic: bihmf.plan, also the `bihmf plan` command): calibrated on the
job's GPU when it has one, else priced from the calibration the package ships."""

from pathlib import Path

from bihmf.benchmark import Benchmark
from bihmf.logs import log_to
from bihmf.plan import choose_calibration, plan_run

log_to(snakemake.log[0])
benchmark = Benchmark(snakemake.config, snakemake.params.written)
plan_run(benchmark, Path("."), Path(snakemake.output[0]).parent, choose_calibration(benchmark, None, None))
