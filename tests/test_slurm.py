"""SLURM profile: what it asks SLURM for, that the gpu cap stays local, and a real cluster run.

The real run (tests/slurm/run_slurm_test.sh) installs Debian's SLURM and munge when missing,
so it needs root and an apt mirror; elsewhere it is skipped with the reason. The checks it
relies on are tested here first against hand-made job tables, so they are known to fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bihmf.benchmark import load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "slurm" / "run_slurm_test.sh"
SCRIPT_LIMIT_S = 480 + 60  # its own time limit plus the time it keeps for cleaning up
SITE = {
    "BIHMF_SLURM_ACCOUNT": "proj42",
    "BIHMF_SLURM_PARTITION": "short",
    "BIHMF_SLURM_GPU_PARTITION": "gpu_a100",
    "BIHMF_SLURM_GPU_MODEL": "a100",
}


def _load_checks():
    spec = importlib.util.spec_from_file_location("slurm_checks", ROOT / "tests" / "slurm" / "slurm_checks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


checks = _load_checks()


def _profile_args(*profiles: str | Path):
    """Snakemake's own reading of the command line with these profiles (relative to the repository)."""
    from snakemake.cli import parse_args

    argv = ["--snakefile", str(ROOT / "Snakefile")]
    for profile in profiles:
        argv += ["--profile", str(ROOT / profile)]
    _, args = parse_args([*argv, "all"])
    return args


def _dry_run_resources(tmp_path: Path, attempt: int) -> dict[str, set[str]]:
    """Rule -> distinct `resources:` lines of a dry run of the demo through profiles/slurm."""
    env = {**os.environ, **SITE, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "snakemake", "all", "--dry-run", "--cores", "8", "--attempt", str(attempt)]
    command += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config" / "demo.yaml")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources: dict[str, set[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            resources.setdefault(rule, set()).add(line.strip().removeprefix("resources: "))
            rule = None
    return resources


def _values(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split(", "))


def test_slurm_profile_requests_gpus_partitions_and_more_memory_on_retry(tmp_path):
    """A second attempt, as after a failure: GPU rules on the GPU partition with a GPU, memory doubled."""
    demo = load_config(ROOT / "config" / "demo.yaml")
    resources = _dry_run_resources(tmp_path, attempt=2)
    for rule in ("embed", "train"):
        for line in resources[rule]:
            values = _values(line)
            assert values["slurm_partition"] == "gpu_a100" and values["gpu"] == "1" and values["gpu_model"] == "a100"
            assert values["slurm_account"] == "proj42"
    for rule in ("download_dataset", "preprocess", "report"):
        for line in resources[rule]:
            values = _values(line)
            assert values["slurm_partition"] == "short" and "gpu" not in values and "gpu_model" not in values
    (train,) = resources["train"]
    assert _values(train)["mem_mb"] == str(2 * demo["train"]["mem_mb"])  # the rule scales with attempt
    assert _values(train)["runtime"] == str(demo["train"]["runtime_min"])
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "profile.yaml").read_text())["set-resources"]
    for rule in ("download_dataset", "preprocess"):  # figures from the download rehearsal, raised on each retry
        (line,) = resources[rule]
        for key in ("mem_mb", "runtime"):
            base, _, scale = str(profile[rule][key]).partition("*")
            assert scale.strip() == "attempt" and _values(line)[key] == str(2 * int(base))
    (embed,) = resources["embed"]
    assert _values(embed)["cpus_per_task"] == "2"  # the rule's threads
    assert all(_values(line)["mem_mb"] == str(2 * 4000) for line in resources["report"])


def test_gpu_cap_is_local_only():
    """`gpu` is global: a cap would throttle the cluster, so only the workstation profile sets one."""
    local = _profile_args("profiles/local")
    assert local.resources["gpu"].value == 2 and local.executor is None
    cluster = _profile_args("profiles/slurm")
    assert cluster.executor == "slurm" and not cluster.resources
    assert cluster.slurm_logdir == Path("results/logs/slurm")
    assert cluster.retries >= 1
    # Snakemake loads profiles/default on its own, into cluster runs too
    assert not (ROOT / "profiles" / "default").exists()


def _set_resources(args) -> dict[str, set[str]]:
    return {rule: set(resources.keys()) for rule, resources in args.set_resources.items()}


def test_test_profile_keeps_the_production_requests(tmp_path):
    """A later --profile replaces set-resources whole, so the test profile carries the production block."""
    production = checks.load_production_profile(ROOT)
    only_change = tmp_path / "only_change" / "profile.yaml"
    only_change.parent.mkdir()
    only_change.write_text(yaml.safe_dump({"set-resources": {checks.FAILING_RULE: {"mem_mb": 64}}}))
    assert "train" not in _set_resources(_profile_args("profiles/slurm", only_change.parent))
    checks.prepare(ROOT, tmp_path)
    layered = _set_resources(_profile_args("profiles/slurm", tmp_path / "test-profile"))
    for rule, settings in production["set-resources"].items():
        assert set(settings) <= layered[rule]
    assert layered[checks.FAILING_RULE] == {"mem_mb"}
    overlay = yaml.safe_load((tmp_path / "test-profile" / "profile.yaml").read_text())
    failing = overlay["set-resources"][checks.FAILING_RULE]["mem_mb"]
    assert eval(failing, {}, {"attempt": 1}) == checks.FAILING_MEM_MB
    assert eval(failing, {}, {"attempt": 2}) == checks.retry_memory(production) == 8000
    assert overlay["slurm-status-command"] == "squeue"


def test_reduced_demo_config_is_valid():
    config = validate_config(checks.reduced_demo_config(yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())))
    assert list(config["datasets"]) == [checks.DEMO_DATASET]
    assert len(config["model"]["fusions"]) == 2  # two training jobs, one per fake GPU


def _job(job_id, state, comment, start, end, partition="cpu", mem="4000M", tres="", account="bihmf"):
    gres = f" TresPerJob={tres}" if tres else ""
    return (
        f"JobId={job_id} JobName=uuid Account={account} JobState={state} Reason=None StartTime={start} "
        f"EndTime={end} Partition={partition} AllocNode:Sid=localhost:1 MinMemoryNode={mem}{gres} "
        f"Comment={comment}  StdErr=/w/results/logs/slurm/x/{job_id}.log StdOut=/w/results/logs/slurm/x/{job_id}.log Power="
    )


def _train(job_id, start, end, fusion):
    return _job(
        job_id, "COMPLETED", f"rule_train_wildcards_ppbs_demo_gvp_{fusion}_0", start, end, "gpu", "2000M", "gres:gpu:1"
    )


CONSOLE = """\
rule download_dataset:
    output: resources/datasets/ppbs_demo/raw
    jobid: 4
localrule embed_index:
    jobid: 5
rule train:
    jobid: 2
Job 4 has been submitted with SLURM jobid 1 (log: /w/results/logs/slurm/rule_download_dataset/ppbs_demo/1.log).
Job 2 has been submitted with SLURM jobid 7 (log: /w/results/logs/slurm/rule_train/x/7.log).
"""


def test_job_table_and_console_are_parsed():
    (job,) = checks.parse_scontrol(
        _job(
            3,
            "FAILED",
            "rule_download_dataset_wildcards_ppbs_demo",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00:01",
            mem="64M",
        )
    )
    assert (job.job_id, job.state, job.rule, job.wildcards, job.mem_mb) == (
        3,
        "FAILED",
        "download_dataset",
        "ppbs_demo",
        64,
    )
    assert job.stdout == Path("/w/results/logs/slurm/x/3.log") and job.gpus == ""
    assert checks.parse_comment("rule_report_summary") == ("report_summary", "")
    assert checks.planned_jobs(CONSOLE) == {
        4: ("download_dataset", False),
        5: ("embed_index", True),
        2: ("train", False),
    }
    assert checks.submissions(CONSOLE)[2] == [(7, "/w/results/logs/slurm/rule_train/x/7.log")]


def test_gpu_check_catches_a_shared_gpu_and_a_run_without_overlap():
    a = _train(6, "2026-01-01T10:00:00", "2026-01-01T10:00:30", "seq_only")
    b = _train(7, "2026-01-01T10:00:10", "2026-01-01T10:00:40", "bihmf_local")
    later = _train(8, "2026-01-01T10:01:00", "2026-01-01T10:01:30", "token")
    jobs = checks.parse_scontrol(f"{a}\n{b}\n{later}")
    logs = [
        "x CUDA_VISIBLE_DEVICES=0 set by SLURM job 6; using it",
        "CUDA_VISIBLE_DEVICES=1 set by SLURM job 7; using it",
    ]
    devices = checks.gpu_assignments([*logs, "CUDA_VISIBLE_DEVICES=0 set by SLURM job 8; using it"])
    assert checks.check_distinct_gpus(jobs, devices) == []
    shared = {**devices, 7: "0"}
    assert any("same GPU 0" in problem for problem in checks.check_distinct_gpus(jobs, shared))
    assert any("no two GPU jobs ran at the same time" in p for p in checks.check_distinct_gpus(jobs[2:], devices))
    assert any("logged CUDA_VISIBLE_DEVICES=None" in p for p in checks.check_distinct_gpus(jobs, {6: "0", 7: "1"}))


def test_sbatch_and_resource_checks_catch_what_they_should():
    download = _job(
        1, "COMPLETED", "rule_download_dataset_wildcards_ppbs_demo", "2026-01-01T10:00:00", "2026-01-01T10:00:05"
    )
    train = _train(7, "2026-01-01T10:00:10", "2026-01-01T10:00:40", "seq_only")
    jobs = checks.parse_scontrol(f"{download}\n{train}")
    assert checks.check_every_job_went_through_sbatch(CONSOLE, jobs) == []
    assert checks.check_resources(jobs) == []
    unsubmitted = CONSOLE.replace("Job 4 has been submitted", "Job 9 has been submitted")
    assert any("Snakemake job 4" in p for p in checks.check_every_job_went_through_sbatch(unsubmitted, jobs))
    local_gpu = CONSOLE.replace("rule train:", "localrule train:")
    assert any(
        "rule train ran on the submit host" in p for p in checks.check_every_job_went_through_sbatch(local_gpu, jobs)
    )
    on_cpu = checks.parse_scontrol(
        train.replace("Partition=gpu", "Partition=cpu").replace(" TresPerJob=gres:gpu:1", "")
    )
    problems = " | ".join(checks.check_resources(on_cpu))
    assert "partition cpu, expected gpu" in problems and "requested GPUs none" in problems


def test_retry_check_needs_a_failure_then_success_with_more_memory(tmp_path):
    log = tmp_path / "results/logs/slurm/rule_esm_checkpoint/2.log"
    log.parent.mkdir(parents=True)
    log.write_text("slurmstepd: error: StepId=2.batch exceeded memory limit (129048576 > 67108864), being killed\n")
    failed = _job(2, "FAILED", "rule_esm_checkpoint", "2026-01-01T10:00:00", "2026-01-01T10:00:01", mem="64M")
    retried = _job(3, "COMPLETED", "rule_esm_checkpoint", "2026-01-01T10:00:05", "2026-01-01T10:00:20", mem="8000M")
    failed = failed.replace("/w/results/logs/slurm/x/2.log", str(log))
    console = (
        f"message: SLURM-job '2' failed, SLURM status is: 'FAILED'.\n    log: logs/x.log, {log} (check log file(s))"
    )
    jobs = checks.parse_scontrol(f"{failed}\n{retried}")
    assert checks.check_retry(console, jobs, tmp_path, 8000) == []
    assert checks.check_retry(console, jobs[1:], tmp_path, 8000)  # never failed
    assert checks.check_retry(console, jobs, tmp_path, 12000)  # the retry did not get what the profile asks
    assert checks.check_retry("", jobs, tmp_path, 8000)  # failure not reported


def _cannot_run_slurm() -> str | None:
    if not sys.platform.startswith("linux"):
        return "SLURM test needs Linux"
    if os.geteuid() != 0:
        return "SLURM test needs root (it installs and starts slurmctld, slurmd and munged)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is missing"
    return None


@pytest.mark.slow
def test_demo_workflow_on_a_real_slurm_cluster(tmp_path):
    """Every job through sbatch, distinct GPUs for concurrent GPU jobs, an OOM-killed job retried."""
    reason = _cannot_run_slurm()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "PYTHON": sys.executable}
    command = ["bash", str(SCRIPT), str(tmp_path / "work")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=SCRIPT_LIMIT_S + 30)
    output = result.stdout + result.stderr
    print(output)
    if result.returncode == 77:
        pytest.skip(next(line for line in output.splitlines() if line.startswith("SKIPPED:")))
    assert result.returncode == 0, output[-6000:]
    assert "SLURM checks passed" in output
