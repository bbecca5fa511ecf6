"""Glue for rule esm_checkpoint (logic: bihmf.esm_checkpoint.provide_checkpoint).

The ESM settings come from the config, not from the rule's params: the params leave out the
checksums so that pinning one reruns nothing (bihmf.data.fetch.without_checksums).
"""

from pathlib import Path

from bihmf.benchmark import esm_models
from bihmf.esm_checkpoint import provide_checkpoint
from bihmf.lock import LOCK_FILE
from bihmf.logs import log_to

log_to(snakemake.log[0])
esm = esm_models(snakemake.config)[snakemake.wildcards.esm]
provide_checkpoint(
    esm, Path(snakemake.output.model), Path(snakemake.params.downloads), Path(snakemake.params.base_dir), lock_file=Path(LOCK_FILE)
)
