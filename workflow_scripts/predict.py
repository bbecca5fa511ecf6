"""Glue for rule predict: the `bihmf predict` command on the rule's inputs (logic: bihmf.predict).

Files that cannot be predicted are listed in summary.json and the job still succeeds, so one
bad structure does not throw away a cluster batch; an unusable run fails the job.
"""

import logging
import shlex
from pathlib import Path

from bihmf.cli import USAGE_ERROR, main
from bihmf.gpu import gpu_slot
from bihmf.logs import log_to

log_to(snakemake.log[0])
argv = [
    "predict",
    "--run", str(Path(snakemake.input.model).parent),
    "--out", str(Path(snakemake.output.summary).parent),
    "--threads", str(snakemake.threads),
    *shlex.split(snakemake.params.args),
    *snakemake.input.structures,
]
with gpu_slot():
    status = main(argv)
if status == USAGE_ERROR:
    raise SystemExit(f"bihmf {shlex.join(argv)} failed; see {snakemake.log[0]}")
if status != 0:
    logging.getLogger("bihmf").warning("some files failed; see %s", snakemake.output.summary)
