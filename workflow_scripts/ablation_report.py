"""Glue for rule ablation_report (logic: bihmf.report.ablation.write_ablation_report)."""

from pathlib import Path

from bihmf.logs import log_to
from bihmf.report.ablation import ABLATION_OUTPUTS, resolve_entry, write_ablation_report
from bihmf.report.stats import StatsSettings

log_to(snakemake.log[0])
write_ablation_report(
    resolve_entry(
        snakemake.params.ablation,
        datasets=dict(snakemake.params.tasks),
        encoders=list(snakemake.params.encoders),
        fusions=list(snakemake.params.fusions),
        seeds=dict(snakemake.params.seeds),
        splits=dict(snakemake.params.splits),
        metrics=[Path(p) for p in snakemake.input.metrics],
        settings=StatsSettings.from_config(snakemake.params.settings),
    ),
    {name: Path(getattr(snakemake.output, name)) for name in ABLATION_OUTPUTS},
)
