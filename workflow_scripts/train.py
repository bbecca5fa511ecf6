"""Glue for rule train (logic: bihmf.training.train_run)."""

from pathlib import Path

from bihmf.gpu import gpu_slot
from bihmf.logs import log_to
from bihmf.run import RunSpec
from bihmf.training import train_run

log_to(snakemake.log[0])
wc = snakemake.wildcards
spec = RunSpec(
    dataset=wc.dataset,
    encoder=wc.encoder,
    fusion=wc.fusion,
    seed=int(wc.seed),
    task=snakemake.params.task,
    task_options=snakemake.params.task_options,
    graph_residues=snakemake.params.graph_residues,
)
train_cfg = {**snakemake.params.train, "threads": snakemake.threads}
# rule train_ablation (a variant run) adds the variant's identity; a main run has no such param
ablation = getattr(snakemake.params, "ablation", None)
with gpu_slot():
    train_run(
        spec,
        Path(snakemake.input.proteins),
        Path(snakemake.input.cache),
        snakemake.params.model,
        train_cfg,
        Path(snakemake.output.metrics).parent,
        extra_provenance={"ablation": ablation} if ablation else None,
    )
