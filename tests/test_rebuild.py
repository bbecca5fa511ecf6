"""A deleted run or a damaged cache shard is rebuilt by the next `snakemake all`, with what
depends on it (a real, small demo run; dry runs after each damage); the HTML report opens on the summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _jobs(stdout: str) -> dict[str, int]:
    return {parts[0]: int(parts[1]) for parts in map(str.split, stdout.splitlines()) if len(parts) == 2 and parts[1].isdigit()}


@pytest.mark.slow
def test_deleted_runs_and_a_removed_shard_are_rebuilt(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    config["datasets"] = {"ppbs_demo": config["datasets"]["ppbs_demo"]}
    config["datasets"]["ppbs_demo"]["download"]["archive"]["url"] = f"file:{ROOT / 'demo/ppbs_demo.tar.gz'}"
    config["ablations"] = []
    config["model"]["fusions"] = ["struct_only", "bihmf_local"]
    config["train"]["epochs"] = 1
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                   "all", "--cores", "2", "--configfile", str(tmp_path / "mini.yaml"), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)

    def planned() -> dict[str, int]:
        result = snakemake("--dry-run", "--quiet", "rules")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return _jobs(result.stdout)

    done = snakemake()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert planned() == {}
    # the HTML report opens on the summary numbers (the front page's text, not inside an embedded file)
    report = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                             "--configfile", str(tmp_path / "mini.yaml"), "--report", "report.html"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report.html").read_text()
    assert "Summary: all benchmarks beside the published numbers" in page

    # a deleted dataset's runs are retrained and its report rebuilt (put back as they were after the dry run)
    runs = tmp_path / "results/runs/ppbs_demo"
    shutil.copytree(runs, tmp_path / "kept", copy_function=shutil.copy2)
    shutil.rmtree(runs)
    assert planned() == {"train": 2, "report": 1, "report_summary": 1, "all": 1, "total": 5}
    shutil.copytree(tmp_path / "kept", runs, copy_function=shutil.copy2)
    assert planned() == {}

    # a truncated shard: bihmf check names and removes it; the shard is rebuilt with what depends on it
    shard = tmp_path / "results/embeddings/ppbs_demo/esm2_t6_demo_random/shard-0-of-1.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    check = subprocess.run([sys.executable, "-m", "bihmf", "check", "--root", str(tmp_path), "--remove"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert check.returncode == 0 and f"DAMAGED {shard} (rebuilt by rule embed)" in check.stdout, check.stdout + check.stderr
    assert planned() == {"embed": 1, "embed_index": 1, "train": 2, "report": 1, "report_summary": 1, "all": 1, "total": 7}
