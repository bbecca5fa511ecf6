"""Continue a local workflow run that was killed hard (``kill -9``, the OOM killer, a power cut).

Such a kill leaves Snakemake's lock in ``.snakemake/locks/``, so rerunning the same command
fails with a LockException until ``snakemake --unlock``. Unlocking is only safe when no other
Snakemake, and no job it started, still runs in that folder (two runs would write the same
outputs), so this command checks that first, then unlocks and reruns the given command with
``--rerun-incomplete`` (outputs of the killed jobs are redone; training continues from
``last.pt``)::

    bihmf resume all --cores 8 --resources gpu=2     # = the killed command's arguments
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class StillRunning(RuntimeError):
    """A Snakemake process, or a job it started, still works in the folder."""


def workdir(args: list[str]) -> Path:
    """The folder Snakemake works in: ``--directory``/``-d`` when given, else the current one."""
    for i, arg in enumerate(args):
        if arg in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1]).resolve()
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1]).resolve()
    return Path.cwd().resolve()


def _ancestors() -> set[int]:
    """This process and its parents (the shell or ``make`` that started it are not a rival run)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def snakemake_processes(folder: Path) -> list[tuple[int, str]]:
    """(pid, command line) of the processes working in ``folder`` whose command mentions
    snakemake: Snakemake itself and its jobs (they run scripts from ``.snakemake/scripts/``)."""
    proc = Path("/proc")
    if not proc.is_dir():
        raise StillRunning("cannot list processes (no /proc); check yourself that no Snakemake runs here, then `snakemake --unlock`")
    found, own = [], _ancestors()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or another user's process
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if cwd == folder and "snakemake" in command:
            found.append((int(entry.name), command))
    return sorted(found)


def resume(args: list[str]) -> int:
    """Refuse while anything of a run still works in the folder; else unlock and rerun ``args``."""
    folder = workdir(args)
    running = snakemake_processes(folder)
    if running:
        listed = "\n".join(f"  pid {pid}: {command[:160]}" for pid, command in running)
        raise StillRunning(f"still running in {folder}; let it finish or stop it, then resume again:\n{listed}")
    snakemake = [sys.executable, "-m", "snakemake", *args]
    unlocked = subprocess.run([*snakemake, "--unlock"], check=False)
    if unlocked.returncode != 0:
        return unlocked.returncode
    rerun = [] if "--rerun-incomplete" in args or "--ri" in args else ["--rerun-incomplete"]
    return subprocess.run([*snakemake, *rerun], check=False).returncode

