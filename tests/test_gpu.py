"""GPU slots: concurrent jobs get different GPU ids; a scheduler's choice is respected."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from bihmf.gpu import gpu_slot

HOLD = """
import sys, time
from pathlib import Path
from bihmf.gpu import gpu_slot
with gpu_slot(num_gpus=2, lock_dir=Path(sys.argv[1]), poll_s=0.02) as gpu:
    import os
    print(gpu, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _start(lock_dir, hold_s):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}  # a workstation
    return subprocess.Popen([sys.executable, "-c", HOLD, str(lock_dir), str(hold_s)], stdout=subprocess.PIPE, text=True, env=env)


def test_two_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path):
    first, second = _start(tmp_path, 2.0), _start(tmp_path, 2.0)
    ids = {first.stdout.readline().split()[0], second.stdout.readline().split()[0]}
    assert ids == {"0", "1"}
    started = time.time()
    third = _start(tmp_path, 0.0)
    third_id = third.stdout.readline().split()[0]
    assert time.time() - started > 0.5  # it had to wait for a slot to free up
    assert third_id in {"0", "1"}
    for process in (first, second, third):
        assert process.wait(timeout=30) == 0


def test_killed_job_releases_its_gpu(tmp_path):
    holder = _start(tmp_path, 60.0)
    assert holder.stdout.readline().split()[0] == "0"
    holder.kill()
    holder.wait()
    follower = _start(tmp_path, 0.0)
    assert follower.stdout.readline().split()[0] == "0"
    assert follower.wait(timeout=30) == 0


def test_scheduler_assignment_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with gpu_slot(num_gpus=2, lock_dir=tmp_path) as gpu:
        assert gpu == "3"
    assert not list(tmp_path.iterdir())


def test_no_gpu_means_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with gpu_slot(num_gpus=0, lock_dir=tmp_path) as gpu:
        assert gpu is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slurm_job_without_gpu_runs_on_cpu_and_locks_nothing(tmp_path, monkeypatch):
    """Under SLURM the scheduler allocates GPUs; a job it gave none must not lease one itself."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with gpu_slot(num_gpus=2, lock_dir=tmp_path) as gpu:
        assert gpu is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # the node's GPUs stay hidden
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not list(tmp_path.iterdir())


def test_slurm_gpu_allocation_is_used_as_given(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with caplog.at_level(logging.INFO, logger="bihmf.gpu"), gpu_slot(num_gpus=2, lock_dir=tmp_path) as gpu:
        assert gpu == "1"
    # the job log names the SLURM job that chose the GPU (tests/slurm reads this line)
    assert "CUDA_VISIBLE_DEVICES=1 set by SLURM job 42; using it" in caplog.text
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert not list(tmp_path.iterdir())
