"""Glue for rule ablation_report (logic: bihmf.report.ablation.write_ablation_report)."""

from pathlib import Path

from bihmf.logs import log_to
from bihmf.report.ablation import ABLATION_OUTPUTS, report_spec, write_ablation_report
from bihmf.report.stats import StatsSettings

log_to(snakemake.log[0])
write_ablation_report(
    report_spec(
        snakemake.config,
        snakemake.wildcards.ablation,
        metrics=[Path(p) for p in snakemake.input.metrics],
        settings=StatsSettings.from_config(snakemake.config["report"]),
    ),
    {name: Path(getattr(snakemake.output, name)) for name in ABLATION_OUTPUTS},
)
