"""Glue for rule predict: bihmf.predict.predict on the rule's inputs, with the options of
``predict_args`` (the `bihmf predict` options).

Files that cannot be predicted are listed in summary.json and the job still succeeds, so one
bad structure does not throw away a cluster batch; an unusable run fails the job.
"""

import logging
import shlex
from pathlib import Path

from bihmf.cli import predict_options
from bihmf.gpu import gpu_slot
from bihmf.logs import log_to
from bihmf.predict import RunError, predict

log_to(snakemake.log[0])
options = predict_options(["--threads", str(snakemake.threads), *shlex.split(snakemake.params.args)])
out = Path(snakemake.output.summary).parent
with gpu_slot():
    try:
        summary = predict(Path(snakemake.input.model).parent, [Path(p) for p in snakemake.input.structures], out, options)
    except RunError as exc:
        raise SystemExit(f"bihmf predict on {snakemake.input.model}: {exc}") from exc
if summary["failed"]:
    logging.getLogger("bihmf").warning("some files failed; see %s", snakemake.output.summary)
