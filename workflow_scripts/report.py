"""Glue for rule report (logic: bihmf.report.write_report)."""

from pathlib import Path

from bihmf.logs import log_to
from bihmf.report import write_report

log_to(snakemake.log[0])
write_report([Path(p) for p in snakemake.input], Path(snakemake.output.table).parent, snakemake.wildcards.dataset)
