"""Glue for rule report_summary (logic: bihmf.report.build.write_summary_report)."""

from pathlib import Path

from bihmf.logs import log_to
from bihmf.report.build import SUMMARY_OUTPUTS, write_summary_report

log_to(snakemake.log[0])
write_summary_report(
    tables=dict(zip(snakemake.params.datasets, map(Path, snakemake.input.tables))),
    paper_benchmarks=snakemake.params.paper_benchmarks,
    rows=[tuple(row) for row in snakemake.params.rows],
    outputs={name: Path(getattr(snakemake.output, name)) for name in SUMMARY_OUTPUTS},
    published_path=Path(snakemake.input.published),
)
