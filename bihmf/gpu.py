"""One GPU per job on a workstation; whatever SLURM assigned on a cluster.

Snakemake's ``--resources gpu=N`` only caps how many GPU jobs run at once; it sets no
``CUDA_VISIBLE_DEVICES`` (snakemake issue #281), so two concurrent jobs would both use GPU 0.
A job therefore leases a slot: it takes a non-blocking ``flock`` on one lock file per GPU and
exports that GPU's index. The kernel releases the lock when the process exits, even after
SIGKILL, so a crashed job never leaks its GPU. When ``CUDA_VISIBLE_DEVICES`` is already set
(SLURM with GRES, or the user) it is respected and nothing is locked. A SLURM job without
one was allocated no GPU: it runs on the CPU and locks nothing, because lock files on a
shared file system would hand out GPUs of other nodes and other users' jobs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = Path(".snakemake") / "gpu-locks"


def visible_gpu_count() -> int:
    """Physical GPUs on this host, asked of nvidia-smi so CUDA is not initialised here.

    Initialising CUDA before ``CUDA_VISIBLE_DEVICES`` is set would make the process ignore it.
    """
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


@contextmanager
def gpu_slot(num_gpus: int | None = None, lock_dir: Path = DEFAULT_LOCK_DIR, poll_s: float = 0.2) -> Iterator[str | None]:
    """Hold one free GPU for the duration of the block and set ``CUDA_VISIBLE_DEVICES`` to it.

    Yields the GPU id as a string, the pre-set ``CUDA_VISIBLE_DEVICES`` value, or None when
    there is no GPU or SLURM allocated none (CPU fallback). Waits while every GPU is leased.
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        slurm_job = os.environ.get("SLURM_JOB_ID")
        origin = f"SLURM job {slurm_job}" if slurm_job else "the environment"
        log.info("CUDA_VISIBLE_DEVICES=%s set by %s; using it", preset, origin)
        yield preset
        return
    if "SLURM_JOB_ID" in os.environ:
        log.info("SLURM job %s was allocated no GPU: running on CPU", os.environ["SLURM_JOB_ID"])
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # GPUs on the node belong to other jobs
        try:
            yield None
        finally:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        return
    count = visible_gpu_count() if num_gpus is None else num_gpus
    if count == 0:
        log.info("no GPU on this host: running on CPU")
        yield None
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(lock_dir / f"gpu{index}.lock", "w")  # noqa: SIM115 (held until the block ends)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            log.info("leased GPU %d of %d (lock %s)", index, count, lock_dir / f"gpu{index}.lock")
            try:
                yield str(index)
            finally:
                del os.environ["CUDA_VISIBLE_DEVICES"]
                handle.close()
            return
        time.sleep(poll_s + random.random() * poll_s)


def pick_device() -> torch.device:
    """CUDA when a GPU is visible (after :func:`gpu_slot` has chosen it), else the CPU."""
    if torch.cuda.is_available():
        log.info("device: cuda (%s)", torch.cuda.get_device_name(0))
        return torch.device("cuda")
    log.info("device: cpu (no CUDA device visible; training on CPU)")
    return torch.device("cpu")
