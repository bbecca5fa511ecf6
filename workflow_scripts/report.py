"""Glue for rule report (logic: bihmf.report.build.write_dataset_report)."""

from pathlib import Path

from bihmf.logs import log_to
from bihmf.report.build import DATASET_OUTPUTS, DatasetReport, write_dataset_report
from bihmf.report.stats import StatsSettings

log_to(snakemake.log[0])
write_dataset_report(
    DatasetReport(
        dataset=snakemake.wildcards.dataset,
        task=snakemake.params.task,
        metrics=[Path(p) for p in snakemake.input.metrics],
        benchmarks=[Path(p) for p in snakemake.input.benchmarks],
        cache_index=Path(snakemake.input.cache),
        expected=[tuple(run) for run in snakemake.params.expected],
        splits=list(snakemake.params.splits),
        settings=StatsSettings.from_config(snakemake.params.settings),
    ),
    {name: Path(getattr(snakemake.output, name)) for name in DATASET_OUTPUTS},
)
