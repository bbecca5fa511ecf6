"""Glue for rule plan (logic: bihmf.plan.plan_run, also the `bihmf plan` command)."""

from pathlib import Path

import torch

from bihmf.benchmark import Benchmark
from bihmf.logs import log_to
from bihmf.plan import plan_run

log_to(snakemake.log[0])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
plan_run(Benchmark(snakemake.config, snakemake.params.written), Path("."), Path(snakemake.output[0]).parent, device)
