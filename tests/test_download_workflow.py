"""The download rule in Snakemake: pinning a checksum or writing the lock file reruns nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = "resources/datasets/ppbs_demo/raw"


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_pinning_a_checksum_or_locking_after_the_first_run_schedules_no_job(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    archive = config["datasets"]["ppbs_demo"]["download"]["archive"]
    pinned, archive["checksum"] = archive["checksum"], None  # first run: nothing pinned yet
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    first = _snakemake(tmp_path, TARGET)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / TARGET / "ppbs_demo" / "table.csv").exists()

    archive["checksum"] = pinned  # the sha256 the first run logged, pinned afterwards
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert subprocess.run([sys.executable, "-m", "bihmf", "lock"], cwd=tmp_path, capture_output=True).returncode == 0
    assert (tmp_path / "bihmf.lock.yaml").exists()
    again = _snakemake(tmp_path, TARGET, "--dry-run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
