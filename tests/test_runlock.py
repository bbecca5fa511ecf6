"""Two writers of one run folder (or one shard) cannot both write: the second is refused with the
holder's PID; a lock left by a killed writer is taken over, with a log line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bihmf.esm_cache import EmbedSettings
from bihmf.esm_writer import write_shard
from bihmf.run import RunSpec
from bihmf.runlock import RUN_LOCK, HeldElsewhere, run_lock
from bihmf.training import train_run

HOLD = """
import sys, time
from pathlib import Path
from bihmf.runlock import {lock}
with {lock}(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(lock: str, path: Path) -> subprocess.Popen:
    """Another process holding ``lock`` of ``path`` (started and holding when this returns)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(lock=lock), str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_trainer_of_one_run_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "results/runs/d/gvp/token/seed0"
    first = _holder("run_lock", folder)
    try:
        spec = RunSpec("d", "gvp", "token", 0, "residue_binary")
        with pytest.raises(HeldElsewhere, match=rf"run folder {folder} is being written by pid {first.pid} on "):
            train_run(spec, tmp_path / "proteins.parquet", tmp_path / "index.parquet", {}, {}, folder)
        assert sorted(p.name for p in folder.iterdir()) == [RUN_LOCK]  # nothing written, nothing deleted
    finally:
        first.kill()
        first.wait()


def test_a_second_writer_of_one_shard_is_refused(tmp_path: Path) -> None:
    shard = tmp_path / "shard-0-of-1.parquet"
    first = _holder("shard_lock", shard)
    try:
        with pytest.raises(HeldElsewhere, match=rf"shard {shard} is being written by pid {first.pid} "):
            write_shard(tmp_path / "esm.pt", {}, [1], 0, 1, shard, EmbedSettings(512, 1022, 256), device=torch.device("cpu"))
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "run"
    first = _holder("run_lock", folder)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with caplog.at_level(logging.INFO, logger="bihmf.runlock"), run_lock(folder):
        pass
    assert f"taking over the lock of pid {first.pid} on " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bihmf.runlock"), run_lock(folder):  # released cleanly: nothing to say
        pass
    assert caplog.text == ""
