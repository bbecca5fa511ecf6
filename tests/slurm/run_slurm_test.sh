#!/usr/bin/env bash
# Runs a reduced demo workflow through profiles/slurm on a real, single-host SLURM cluster
# (Debian's slurmctld + slurmd + munge, two fake GPUs) and checks, from the controller's job
# table and the job logs, that every job went through sbatch, that GPU jobs running at once
# got different GPUs, and that a job killed for memory was retried with more and reported.
#
#   tests/slurm/run_slurm_test.sh [WORKDIR]      (as root; WORKDIR defaults to a temp dir)
#
# Exit status: 0 passed, 77 this machine cannot run it (the reason is printed), else failed.
# The cluster lives in a private temp dir: its own slurm.conf (SLURM_CONF), munge key and
# socket, and free ports, so a munge or SLURM already running is not disturbed. The one
# file outside it is a link at /etc/slurm/slurm.conf (see below), made only where that
# path is free and removed again. The daemons are started here and stopped by pid on every
# exit path; the whole script is bounded by BIHMF_SLURM_TEST_LIMIT_S seconds (default 480).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/slurm"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LIMIT_S=${BIHMF_SLURM_TEST_LIMIT_S:-480}
CLEANUP_S=60   # left after the limit for cancelling jobs and stopping daemons
SKIP=77
export PATH="/usr/sbin:/sbin:$PATH"

skip() { echo "SKIPPED: $*"; exit "$SKIP"; }

[ "$(id -u)" = 0 ] || skip "needs root to install and run slurmctld, slurmd and munged"

# Hard bound: re-run this script under timeout(1). On expiry the script gets TERM and its
# trap stops everything; KILL follows CLEANUP_S seconds later. Daemons and Snakemake run in
# their own sessions, so the signal reaches only this script, which stops them in order.
if [ -z "${BIHMF_SLURM_TEST_BOUNDED:-}" ]; then
  export BIHMF_SLURM_TEST_BOUNDED=1
  exec timeout --kill-after="$CLEANUP_S" "$LIMIT_S" "$0" "$@"
fi

# A run from inside another SLURM job, or with a GPU chosen, must not hand that to these jobs.
unset CUDA_VISIBLE_DEVICES $(compgen -e | grep '^SLURM_' || true)

# --- packages ---------------------------------------------------------------------------
have_slurm() {
  local tool
  for tool in slurmctld slurmd slurmstepd sbatch squeue scancel scontrol sinfo munged mungekey munge unmunge; do
    command -v "$tool" >/dev/null || return 1
  done
}

# Debian starts a service on install where an init system runs; policy-rc.d exit 101 stops
# that, so no daemon is started that this script would not know the pid of.
install_slurm() {
  local policy=/usr/sbin/policy-rc.d own_policy="" rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } || rc=$?
  [ -z "$own_policy" ] || rm -f "$policy"
  return "$rc"
}

if ! have_slurm; then
  command -v apt-get >/dev/null || skip "SLURM is not installed and there is no apt-get to install it"
  echo "installing slurmctld slurmd slurm-client munge (apt-get)"
  install_slurm || skip "apt-get could not install slurmctld slurmd slurm-client munge (no mirror reachable?)"
  have_slurm || skip "the SLURM packages installed, but their programs are not on PATH"
fi
[ -x "$PYTHON" ] || { echo "no Python at $PYTHON (run make venv first)"; exit 1; }

# The slurm-jobstep plugin (0.6.1) removes every SLURM_* variable, SLURM_CONF included, from
# the environment of the srun it starts inside a job, so that srun reads the compiled-in
# /etc/slurm/slurm.conf. This run links its private config there, and only if that path is
# free: a host with its own SLURM configuration is left alone.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -L "$SYSTEM_CONF" ] && [ ! -e "$SYSTEM_CONF" ] && [[ "$(readlink "$SYSTEM_CONF")" == /tmp/bihmf-slurm.*/slurm.conf ]]; then
  rm -f "$SYSTEM_CONF"   # left by a run of this script that was killed before its cleanup
fi
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
  skip "$SYSTEM_CONF exists: this host has its own SLURM configuration, which this test does not replace"
fi

# --- private cluster --------------------------------------------------------------------
CLUSTER=$(mktemp -d /tmp/bihmf-slurm.XXXXXX)
chmod 755 "$CLUSTER"   # munged wants its socket directory reachable by everyone
WORK=${1:-$CLUSTER/work}
mkdir -p "$WORK" "$CLUSTER/log" "$CLUSTER/key" "$CLUSTER/run" "$CLUSTER/ctld" "$CLUSTER/slurmd"
chmod 700 "$CLUSTER/key"
WORK=$(cd "$WORK" && pwd)
export SLURM_CONF="$CLUSTER/slurm.conf"
MUNGE_SOCKET="$CLUSTER/run/munge.socket"
MUNGED_PID="" SLURMCTLD_PID="" SLURMD_PID="" SNAKEMAKE_PID="" LINKED_CONF=""

alive() {   # running and not a zombie waiting to be reaped
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]
}

wait_until() {   # wait_until SECONDS COMMAND...: poll every 0.5 s
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

gone() { ! alive "$1"; }

stop_pid() {   # TERM, then KILL after 5 s; reaps the child
  alive "$1" || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait_until 5 gone "$1" || kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

node_idle() { sinfo -h -N -o %t | grep -qx idle; }

no_running_jobs() { [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ]; }

cleanup() {
  local rc=$?
  trap - EXIT TERM INT
  if alive "$SNAKEMAKE_PID"; then
    echo "stopping snakemake (pid $SNAKEMAKE_PID) and its process group"
    kill -KILL -- "-$SNAKEMAKE_PID" 2>/dev/null || true
    wait "$SNAKEMAKE_PID" 2>/dev/null || true
  fi
  if alive "$SLURMCTLD_PID"; then
    local ids
    ids=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [ -z "${ids// /}" ] || scancel $ids 2>/dev/null || true
    wait_until 30 no_running_jobs || echo "warning: jobs still running after scancel: $(squeue -h 2>&1)"
  fi
  stop_pid "$SLURMD_PID"
  stop_pid "$SLURMCTLD_PID"
  stop_pid "$MUNGED_PID"
  if [ -n "$LINKED_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then rm -f "$SYSTEM_CONF"; fi
  if [ "$rc" != 0 ] && [ "$rc" != "$SKIP" ]; then
    for file in "$CLUSTER"/log/*; do
      [ -s "$file" ] && { echo "--- last lines of $file"; tail -n 15 "$file"; }
    done
  fi
  rm -rf "$CLUSTER"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted (time limit ${LIMIT_S}s or signal)"; exit 143' TERM INT

free_ports() {
  "$PYTHON" - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
}

"$PYTHON" "$HERE/slurm_checks.py" prepare --root "$ROOT" --workdir "$WORK"
set -a
# shellcheck source=/dev/null
. "$WORK/site.env"   # BIHMF_SLURM_* the profile reads, as a user sets them once
set +a
read -r CTLD_PORT SLURMD_PORT < <(free_ports)

cat >"$SLURM_CONF" <<EOF
ClusterName=bihmftest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$CLUSTER/ctld
SlurmdSpoolDir=$CLUSTER/slurmd
SlurmctldPidFile=$CLUSTER/run/slurmctld.pid
SlurmdPidFile=$CLUSTER/run/slurmd.pid
SlurmctldLogFile=$CLUSTER/log/slurmctld.log
SlurmdLogFile=$CLUSTER/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# the node is declared as below whatever the host has (2 CPUs, 64 GB), so the profile's
# memory requests fit and the run is the same on every CI machine
SlurmdParameters=config_overrides
ReturnToService=2
# no slurmdbd: sacct cannot work, the profile is run with --slurm-status-command squeue,
# and finished jobs stay visible to squeue/scontrol for MinJobAge seconds
AccountingStorageType=accounting_storage/none
MinJobAge=3600
# sample every job's memory each second and kill it above its --mem
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
GresTypes=gpu
NodeName=localhost CPUs=2 RealMemory=64000 Gres=gpu:2 State=UNKNOWN
PartitionName=$BIHMF_SLURM_PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=$BIHMF_SLURM_GPU_PARTITION Nodes=localhost MaxTime=INFINITE State=UP
EOF
mkdir -p "$(dirname "$SYSTEM_CONF")"
ln -s "$SLURM_CONF" "$SYSTEM_CONF"
LINKED_CONF=1
# two fake GPUs: any character devices will do; SLURM hands out indices 0 and 1
printf 'NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n' \
  >"$CLUSTER/gres.conf"

mungekey --create --keyfile="$CLUSTER/key/munge.key"
setsid munged --foreground --socket="$MUNGE_SOCKET" --key-file="$CLUSTER/key/munge.key" \
  --pid-file="$CLUSTER/run/munged.pid" --log-file="$CLUSTER/log/munged.log" \
  --seed-file="$CLUSTER/key/munged.seed" >"$CLUSTER/log/munged.out" 2>&1 &
MUNGED_PID=$!
wait_until 10 munge_works || { echo "munged did not start"; exit 1; }
setsid slurmctld -D -i -f "$SLURM_CONF" >"$CLUSTER/log/slurmctld.out" 2>&1 &
SLURMCTLD_PID=$!
wait_until 20 scontrol ping || { echo "slurmctld did not answer"; exit 1; }
setsid slurmd -D -N localhost -f "$SLURM_CONF" >"$CLUSTER/log/slurmd.out" 2>&1 &
SLURMD_PID=$!
wait_until 30 node_idle || { echo "node did not become idle"; sinfo -N -l; exit 1; }
echo "SLURM up: munged $MUNGED_PID, slurmctld $SLURMCTLD_PID, slurmd $SLURMD_PID, ports $CTLD_PORT/$SLURMD_PORT"

# --- the workflow, through the production profile --------------------------------------
cd "$WORK"
RUN_LIMIT_S=$((LIMIT_S - CLEANUP_S - 30))
echo "snakemake --profile profiles/slurm --profile test-profile (at most ${RUN_LIMIT_S}s), log: $WORK/snakemake.log"
setsid "$PYTHON" -m snakemake all --snakefile "$ROOT/Snakefile" \
  --profile "$ROOT/profiles/slurm" --profile "$WORK/test-profile" \
  --configfile "$WORK/config.yaml" >"$WORK/snakemake.log" 2>&1 &
SNAKEMAKE_PID=$!
deadline=$((SECONDS + RUN_LIMIT_S))
while alive "$SNAKEMAKE_PID" && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
if alive "$SNAKEMAKE_PID"; then
  echo "snakemake still running after ${RUN_LIMIT_S}s; last lines:"
  tail -n 40 "$WORK/snakemake.log"
  exit 1
fi
snakemake_rc=0
wait "$SNAKEMAKE_PID" || snakemake_rc=$?
SNAKEMAKE_PID=""
echo "snakemake exited with $snakemake_rc after ${SECONDS}s"

scontrol -o show job >"$WORK/slurm_jobs.txt"
verify_rc=0
"$PYTHON" "$HERE/slurm_checks.py" verify --root "$ROOT" --workdir "$WORK" --jobs "$WORK/slurm_jobs.txt" \
  --console "$WORK/snakemake.log" --snakemake-rc "$snakemake_rc" || verify_rc=$?
if [ "$verify_rc" != 0 ]; then
  echo "--- last lines of $WORK/snakemake.log"
  tail -n 60 "$WORK/snakemake.log"
fi
exit "$verify_rc"
