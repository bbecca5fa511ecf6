"""README "Resuming" on a workstation, done for real: a Snakemake run killed with SIGKILL
mid-training, the same command refused by Snakemake's leftover lock, and the documented
command (``bihmf resume <the same arguments>``) finishing the run (issue 16)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bihmf.resume import workdir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONWARNINGS": "ignore"}
RUN = Path("results/runs/ppbs_demo/gvp/struct_only/seed0")
TRAIN_LOG = Path("logs/train/ppbs_demo/gvp/struct_only/seed0.log")


def _arguments(tmp_path: Path) -> list[str]:
    """One demo dataset, one fusion, three epochs, up to the trained run (no report)."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config = copy.deepcopy(demo)
    config["datasets"] = {"ppbs_demo": demo["datasets"]["ppbs_demo"]}
    config["model"]["fusions"] = ["struct_only"]
    config["ablations"] = []  # the demo's ablations compare fusions this run does not train
    config["train"].update(seeds=[0], epochs=3, patience=3)
    path = tmp_path / "reduced.yaml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    return ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), str(RUN / "metrics.json"), "--cores", "2", "--configfile", str(path)]


def _locks(work: Path) -> list[Path]:
    folder = work / ".snakemake" / "locks"
    return list(folder.iterdir()) if folder.exists() else []


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)


def _kill_during_training(arguments: list[str], work: Path) -> None:
    """Start the run in its own process group; SIGKILL all of it once epoch 1's ``last.pt`` is written."""
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *arguments], env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    try:
        while not (work / RUN / "last.pt").exists():
            assert run.poll() is None, f"the run ended (rc {run.returncode}) before training started"
            assert time.monotonic() < deadline, "training did not start within 10 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.slow
def test_run_killed_with_sigkill_finishes_with_the_documented_command(tmp_path):
    arguments = _arguments(tmp_path)
    work = workdir(arguments)
    _kill_during_training(arguments, work)
    assert not (work / RUN / "metrics.json").exists() and (work / RUN / "last.pt").exists()
    assert _locks(work), "a killed Snakemake leaves its lock"

    again = _run([sys.executable, "-m", "snakemake", *arguments])  # what the README no longer promises
    assert again.returncode != 0 and "LockException" in again.stdout + again.stderr

    resumed = _run([sys.executable, "-m", "bihmf", "resume", *arguments])
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert (work / RUN / "metrics.json").exists()
    assert len((work / RUN / "curve.csv").read_text().splitlines()) == 1 + 3
    log = (work / TRAIN_LOG).read_text()
    assert "attempt 1 started" in log and "attempt 2 started" in log
    assert log.index("attempt 2 started") < log.index("resuming after epoch ")
    assert not _locks(work)
    assert not [p for p in (work / "results").rglob("*.tmp")]


def test_resume_refuses_while_a_job_of_the_killed_run_still_works_there(tmp_path):
    """A job outlives its killed Snakemake; unlocking then would let two runs write one output."""
    work = tmp_path / "work"
    (work / ".snakemake" / "scripts").mkdir(parents=True)
    job_script = work / ".snakemake" / "scripts" / "tmp_train.py"
    job_script.write_text("import time\ntime.sleep(120)\n")
    job = subprocess.Popen([sys.executable, str(job_script)], cwd=work)
    try:
        refused = _run([sys.executable, "-m", "bihmf", "resume", "--directory", str(work), "all", "--cores", "1"])
    finally:
        job.kill()
        job.wait()
    assert refused.returncode == 1
    assert f"pid {job.pid}: " in refused.stderr and "tmp_train.py" in refused.stderr and "still running in" in refused.stderr
    assert not (work / ".snakemake" / "locks").exists()  # Snakemake was never started


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [(["all", "--directory", "w"], "w"), (["-d", "w", "all"], "w"), (["--directory=w"], "w"), (["all", "--cores", "2"], ".")],
)
def test_the_folder_checked_is_snakemakes_working_directory(arguments, expected):
    assert workdir(arguments) == Path(expected).resolve()
