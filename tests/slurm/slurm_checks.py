"""Prepare and verify the single-host SLURM run of the demo (driven by run_slurm_test.sh).

``prepare`` writes a reduced demo config and a test profile that is layered over
``profiles/slurm`` (a later ``--profile`` replaces whole top-level keys). The test profile
adds what a cluster without accounting needs and makes one job fail once: the first
attempt of ``esm_checkpoint`` asks for less memory than Python itself takes, so SLURM
kills it, and the retry must get the production profile's memory for attempt 2 and pass.
That job runs beside the download, so the retry costs the run no time.

``verify`` judges the finished run from the controller's job table (``scontrol -o show
job``), Snakemake's console log and the rule logs. It prints every broken expectation and
exits 1 if there is one, so a failure names what went wrong rather than only that it did.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

DEMO_DATASET = "ppbs_demo"
DEMO_FUSIONS = ["seq_only", "bihmf_local"]
FAILING_RULE = "esm_checkpoint"
FAILING_MEM_MB = 64  # below the ~150 MB a Python process with Snakemake imported takes
GPU_RULES = ("embed", "train")
GPU_PARTITION = "gpu"
CPU_PARTITION = "cpu"
ACCOUNT = "bihmf"
# the site settings profiles/slurm reads, as a user exports them once (run_slurm_test.sh
# sources this and names the cluster's partitions after it)
SITE_ENV = {
    "BIHMF_SLURM_ACCOUNT": ACCOUNT,
    "BIHMF_SLURM_PARTITION": CPU_PARTITION,
    "BIHMF_SLURM_GPU_PARTITION": GPU_PARTITION,
    "BIHMF_SLURM_GPU_MODEL": "",
}
SLURM_LOG_DIR = "results/logs/slurm"
CUDA_LINE = re.compile(r"CUDA_VISIBLE_DEVICES=(\S*) set by SLURM job (\d+); using it")
HEADER = re.compile(r"^(local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@dataclass(frozen=True)
class SlurmJob:
    """One job as the controller remembers it (finished jobs stay for MinJobAge seconds)."""

    job_id: int
    state: str
    rule: str
    wildcards: str
    partition: str
    account: str
    mem_mb: int
    gpus: str
    start: datetime | None
    end: datetime | None
    stdout: Path


def reduced_demo_config(demo: dict) -> dict:
    """One demo dataset, two fusions, short training: every stage runs, and the two
    training jobs (one GPU each, two fake GPUs) run at the same time.
    """
    config = copy.deepcopy(demo)
    config["datasets"] = {DEMO_DATASET: demo["datasets"][DEMO_DATASET]}
    config["model"]["fusions"] = list(DEMO_FUSIONS)
    config["ablations"] = []  # the two training jobs above are the whole training stage
    config["train"].update(seeds=[0], epochs=2, patience=2, runtime_min=10)
    return config


def production_memory(production: dict) -> str:
    """The production profile's ``mem_mb`` expression for the rule made to fail."""
    return str(
        production["set-resources"].get(FAILING_RULE, {}).get("mem_mb", production["default-resources"]["mem_mb"])
    )


def retry_memory(production: dict) -> int:
    """MB the production profile asks for on attempt 2 (Snakemake evaluates it with ``attempt``)."""
    return int(eval(production_memory(production), {"__builtins__": {}}, {"attempt": 2}))


def failing_memory_expression(production: dict) -> str:
    """``mem_mb`` too small for the first attempt, the production profile's value after it."""
    return f"{FAILING_MEM_MB} if attempt == 1 else {production_memory(production)}"


def overlay_profile(production: dict) -> dict:
    """Keys that replace or extend the production profile for this cluster and this test.

    ``set-resources`` is copied from the production profile and only gains the failing
    memory request, so the GPU and partition requests under test are the production ones.
    """
    set_resources = copy.deepcopy(production["set-resources"])
    set_resources.setdefault(FAILING_RULE, {})["mem_mb"] = failing_memory_expression(production)
    return {
        "slurm-status-command": "squeue",  # this cluster has no accounting database
        "slurm-init-seconds-before-status-checks": 2,
        "set-resources": set_resources,
    }


def parse_comment(comment: str) -> tuple[str, str]:
    """Rule name and wildcard string from the plugin's ``rule_<rule>_wildcards_<values>`` comment."""
    rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
    return rule, wildcards


def _time(value: str) -> datetime | None:
    return None if value in ("", "Unknown", "None") else datetime.fromisoformat(value)


def _mem_mb(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([MG]?)", value).groups()
    return int(number) * (1024 if unit == "G" else 1)


def parse_scontrol(text: str) -> list[SlurmJob]:
    """Jobs from ``scontrol -o show job`` (one ``Key=Value ...`` line per job)."""
    jobs = []
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields:
            continue
        rule, wildcards = parse_comment(fields.get("Comment", ""))
        jobs.append(
            SlurmJob(
                job_id=int(fields["JobId"]),
                state=fields["JobState"],
                rule=rule,
                wildcards=wildcards,
                partition=fields["Partition"],
                account=fields["Account"],
                mem_mb=_mem_mb(fields["MinMemoryNode"]),
                gpus=fields.get("TresPerJob", ""),
                start=_time(fields["StartTime"]),
                end=_time(fields["EndTime"]),
                stdout=Path(fields["StdOut"]),
            )
        )
    return jobs


def planned_jobs(console: str) -> dict[int, tuple[str, bool]]:
    """Snakemake job id -> (rule, runs locally) for every job the run started."""
    jobs: dict[int, tuple[str, bool]] = {}
    header: tuple[str, bool] | None = None
    for line in console.splitlines():
        if match := HEADER.match(line):
            header = (match.group(2), match.group(1) is not None)
        elif header and (match := JOBID.match(line)):
            jobs[int(match.group(1))] = header
            header = None
    return jobs


def submissions(console: str) -> dict[int, list[tuple[int, str]]]:
    """Snakemake job id -> [(SLURM job id, SLURM log path)], one entry per sbatch call."""
    submitted: dict[int, list[tuple[int, str]]] = {}
    for job, slurm_id, log in SUBMITTED.findall(console):
        submitted.setdefault(int(job), []).append((int(slurm_id), log))
    return submitted


def gpu_assignments(logs: Iterable[str]) -> dict[int, str]:
    """SLURM job id -> CUDA_VISIBLE_DEVICES, from the line bihmf.gpu writes into each rule log."""
    return {int(job): devices for text in logs for devices, job in CUDA_LINE.findall(text)}


def overlapping(first: SlurmJob, second: SlurmJob) -> bool:
    return first.start < second.end and second.start < first.end


def check_every_job_went_through_sbatch(console: str, jobs: list[SlurmJob]) -> list[str]:
    """Each non-local Snakemake job was submitted, and each (rule, wildcards) ended COMPLETED."""
    problems = []
    planned, submitted = planned_jobs(console), submissions(console)
    remote = {job for job, (_, local) in planned.items() if not local}
    for job in sorted(remote - set(submitted)):
        problems.append(f"Snakemake job {job} (rule {planned[job][0]}) was never submitted with sbatch")
    for rule in GPU_RULES:
        if any(name == rule and local for name, local in planned.values()):
            problems.append(f"rule {rule} ran on the submit host, not through SLURM")
    known = {job.job_id for job in jobs}
    for job, calls in submitted.items():
        problems += [
            f"SLURM job {slurm_id} (Snakemake job {job}) is unknown to the controller"
            for slurm_id, _ in calls
            if slurm_id not in known
        ]
    completed = {(job.rule, job.wildcards) for job in jobs if job.state == "COMPLETED"}
    if len(completed) != len(remote):
        problems.append(
            f"{len(completed)} distinct SLURM jobs COMPLETED, but Snakemake ran {len(remote)} non-local jobs"
        )
    return problems


def check_resources(jobs: list[SlurmJob]) -> list[str]:
    """GPU rules got a GPU on the GPU partition; CPU rules got neither; every job the account."""
    problems = []
    for job in jobs:
        wants_gpu = job.rule in GPU_RULES
        partition = GPU_PARTITION if wants_gpu else CPU_PARTITION
        if job.partition != partition:
            problems.append(
                f"SLURM job {job.job_id} ({job.rule}) ran on partition {job.partition}, expected {partition}"
            )
        if wants_gpu != ("gpu" in job.gpus):
            problems.append(f"SLURM job {job.job_id} ({job.rule}) requested GPUs {job.gpus or 'none'}")
        if job.account != ACCOUNT:
            problems.append(f"SLURM job {job.job_id} ({job.rule}) was charged to {job.account}, expected {ACCOUNT}")
        if not str(job.stdout).startswith(SLURM_LOG_DIR) and f"/{SLURM_LOG_DIR}/" not in str(job.stdout):
            problems.append(f"SLURM job {job.job_id} logs to {job.stdout}, not under {SLURM_LOG_DIR}/")
    return problems


def check_distinct_gpus(jobs: list[SlurmJob], devices: dict[int, str]) -> list[str]:
    """Every completed GPU job saw one SLURM-assigned GPU; jobs running at once saw different ones."""
    problems = []
    gpu_jobs = [job for job in jobs if job.rule in GPU_RULES and job.state == "COMPLETED"]
    for job in gpu_jobs:
        if devices.get(job.job_id) not in ("0", "1"):
            problems.append(
                f"SLURM job {job.job_id} ({job.rule}) logged CUDA_VISIBLE_DEVICES={devices.get(job.job_id)}"
            )
    pairs = [(a, b) for i, a in enumerate(gpu_jobs) for b in gpu_jobs[i + 1 :] if overlapping(a, b)]
    if not pairs:
        problems.append("no two GPU jobs ran at the same time, so GPU assignment was not put to the test")
    for a, b in pairs:
        if devices.get(a.job_id) == devices.get(b.job_id):
            problems.append(f"SLURM jobs {a.job_id} and {b.job_id} ran at once on the same GPU {devices.get(a.job_id)}")
    return problems


def check_retry(console: str, jobs: list[SlurmJob], root: Path, retry_mem_mb: int) -> list[str]:
    """The job made to fail was killed for memory, reported with its log, resubmitted with more, and passed."""
    attempts = sorted((job for job in jobs if job.rule == FAILING_RULE), key=lambda job: job.job_id)
    states = [(job.state, job.mem_mb) for job in attempts]
    if len(attempts) != 2 or attempts[0].state not in ("FAILED", "OUT_OF_MEMORY") or attempts[1].state != "COMPLETED":
        return [f"{FAILING_RULE} should fail once and then complete; SLURM saw (state, MB) {states}"]
    failed, retried = attempts
    problems = []
    if (failed.mem_mb, retried.mem_mb) != (FAILING_MEM_MB, retry_mem_mb):
        problems.append(
            f"expected {FAILING_MEM_MB} MB, then {retry_mem_mb} MB on the retry; SLURM saw (state, MB) {states}"
        )
    if f"SLURM-job '{failed.job_id}' failed" not in console:
        problems.append(f"Snakemake did not report the failure of SLURM job {failed.job_id}")
    log = failed.stdout if failed.stdout.is_absolute() else root / failed.stdout
    if str(log) not in console and str(failed.stdout) not in console:
        problems.append(f"Snakemake's report does not name the failed job's log {failed.stdout}")
    if not log.is_file() or "exceeded memory limit" not in log.read_text():
        problems.append(f"the failed job's log {log} is missing or does not say it ran out of memory")
    return problems


def verify(workdir: Path, jobs_text: str, console: str, snakemake_rc: int, retry_mem_mb: int) -> list[str]:
    """Every broken expectation of the SLURM run, as readable sentences (empty: passed)."""
    problems = [] if snakemake_rc == 0 else [f"snakemake exited with {snakemake_rc}"]
    jobs = parse_scontrol(jobs_text)
    if not jobs:
        return [*problems, "the controller knows no jobs: nothing went through SLURM"]
    rule_logs = (path.read_text() for path in (workdir / "logs").rglob("*.log"))
    problems += check_every_job_went_through_sbatch(console, jobs)
    problems += check_resources(jobs)
    problems += check_distinct_gpus(jobs, gpu_assignments(rule_logs))
    problems += check_retry(console, jobs, workdir, retry_mem_mb)
    for kind in ("table.md", "table.csv", "metrics.png"):
        if not (workdir / f"results/report/{DEMO_DATASET}_{kind}").is_file():
            problems.append(f"the report results/report/{DEMO_DATASET}_{kind} is missing")
    return problems


def load_production_profile(root: Path) -> dict:
    return yaml.safe_load((root / "profiles" / "slurm" / "profile.yaml").read_text())


def prepare(root: Path, workdir: Path) -> None:
    """Write workdir/config.yaml, workdir/test-profile/profile.yaml and workdir/site.env."""
    demo = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    (workdir / "test-profile").mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(reduced_demo_config(demo), sort_keys=False))
    profile = overlay_profile(load_production_profile(root))
    (workdir / "test-profile" / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (workdir / "site.env").write_text("".join(f"{name}={value}\n" for name, value in SITE_ENV.items()))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "verify"])
    parser.add_argument("--root", type=Path, required=True, help="the repository")
    parser.add_argument("--workdir", type=Path, required=True, help="where the workflow runs")
    parser.add_argument("--jobs", type=Path, help="verify: output of `scontrol -o show job`")
    parser.add_argument("--console", type=Path, help="verify: Snakemake's stdout and stderr")
    parser.add_argument("--snakemake-rc", type=int, help="verify: Snakemake's exit status")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.root, args.workdir)
        return 0
    retry_mb = retry_memory(load_production_profile(args.root))
    problems = verify(args.workdir, args.jobs.read_text(), args.console.read_text(), args.snakemake_rc, retry_mb)
    for problem in problems:
        print(f"FAILED CHECK: {problem}")
    if not problems:
        print(
            "SLURM checks passed: every job went through sbatch, GPU jobs got distinct GPUs, the failed job was retried"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
