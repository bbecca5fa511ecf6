"""Glue for rule download_dataset (logic: bihmf.data.fetch.fetch_dataset).

The dataset's spec comes from the config, not from the rule's params: the params leave out the
checksums so that pinning one reruns nothing (bihmf.data.fetch.without_checksums).
"""

from pathlib import Path

from bihmf.data.fetch import fetch_dataset
from bihmf.lock import LOCK_FILE
from bihmf.logs import log_to

log_to(snakemake.log[0])
dataset = snakemake.wildcards.dataset
fetch_dataset(
    snakemake.config["datasets"][dataset],
    Path(snakemake.output[0]),
    Path(snakemake.params.downloads),
    Path(snakemake.params.base_dir),
    dataset=dataset,
    lock_file=Path(LOCK_FILE),
)
