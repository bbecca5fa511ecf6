"""A run resumed twice costs the sum of its three attempts in the report, not the last one's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bihmf.attempts import ATTEMPTS_FILE, read_attempts, start_attempt
from bihmf.report.build import attempts_note
from bihmf.report.costs import CacheSize, run_table
from bihmf.run import read_record

BENCH = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n0.5\t0:00:00\t100\t1\t1\t1\t0\t0\t1\t0.4\n"
ATTEMPT = """
import sys, time
from pathlib import Path
from bihmf.attempts import start_attempt
end = time.process_time() + 0.2
while time.process_time() < end:
    pass
start_attempt(Path(sys.argv[1]), resumed=sys.argv[2] == "resumed")
"""


def _run_folder(root: Path) -> Path:
    folder = root / "results/runs/d/gvp/bihmf_local/seed0"
    folder.mkdir(parents=True)
    record = {"dataset": "d", "encoder": "gvp", "fusion": "bihmf_local", "seed": 0, "task": "residue_binary",
              "metrics": {"test": {"auprc": 0.5}}, "best_epoch": 1, "epochs_run": 2,
              "provenance": {"device": "cpu", "model_config": {"num_layers": 3, "esm_layers": None}, "wall_seconds": 0.5,
                             "peak_rss_mb": 100.0}}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def _attempt(folder: Path, resumed: bool) -> None:
    subprocess.run([sys.executable, "-c", ATTEMPT, str(folder), "resumed" if resumed else "fresh"], check=True)


def test_costs_after_two_resumes_are_the_sum_of_the_attempts(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    for resumed in (False, True, True):  # killed twice, resumed twice
        _attempt(folder, resumed)
    attempts = read_attempts(folder)
    assert len(attempts) == 3 and len({a["pid"] for a in attempts}) == 3
    bench = tmp_path / "seed0.tsv"
    bench.write_text(BENCH)  # Snakemake's benchmark file: the last attempt only
    run = read_record(folder / "metrics.json")
    costs = run_table([run], {run.key: bench}, CacheSize(1.0, (2, 4, 6), 6)).iloc[0]
    assert costs["attempts"] == 3
    assert costs["compute_hours"] == pytest.approx(sum(a["cpu_s"] for a in attempts) / 3600)
    assert costs["attempts_cpu_s"] >= 3 * 0.2
    assert costs["peak_rss_mb"] == max(a["peak_rss_mb"] for a in attempts)
    assert attempts_note(run_table([run], {}, CacheSize(1.0, (2, 4, 6), 6)), "d") == [
        ("p", "Costs sum every attempt at a run (column `attempts` of `d_runs.csv`); runs that took more than one: "
              "gvp/bihmf_local seed 0: 3 attempts.")]


def test_a_fresh_start_drops_the_attempts_of_the_folders_earlier_run(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    _attempt(folder, resumed=False)
    _attempt(folder, resumed=True)
    start_attempt(folder, resumed=False)  # e.g. the config changed: last.pt was not resumed
    assert len(json.loads((folder / ATTEMPTS_FILE).read_text())) == 1
