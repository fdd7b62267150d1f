#!/usr/bin/env bash
# A real single-node Slurm cluster for the workflow's Slurm test (tests/test_slurm.py).
#
#   tests/slurm/cluster.sh up   [BASE]   install, configure and start it
#   tests/slurm/cluster.sh down [BASE]   stop exactly what `up` started, by PID
#
# BASE (default $REKALM_SLURM_BASE or /tmp/rekalm-slurm) holds every file it writes.
# `up` installs the Debian packages (slurm-wlm 22.05, munge) with apt-get when missing,
# writes slurm.conf, gres.conf and cgroup.conf, links them into /etc/slurm (the compiled-in
# path: the jobstep plugin strips SLURM_CONF inside jobs), starts munged (unless one is
# already running), slurmctld and slurmd, and waits until the node is idle. The node has
# two fake GPUs (gres on /dev/null and /dev/zero, type `fake`) and two partitions: `debug`
# (default) and `gpu`. There is no slurmdbd: status comes from squeue, and MinJobAge keeps
# finished jobs visible to squeue/scontrol for an hour.
# Every daemon `up` starts is listed in BASE/started ("name pid"); `down` stops only those.
#
# Exit status 77: this machine cannot host the cluster (not root, no apt-get, the packages
# do not install, another Slurm is configured or running); the message says which.
set -euo pipefail

ACTION=${1:-}
BASE=${2:-${REKALM_SLURM_BASE:-/tmp/rekalm-slurm}}
STARTED=$BASE/started
SKIP=77

say() { echo "cluster.sh: $*" >&2; }
cannot() { say "$*"; exit $SKIP; }

# Our own config links in /etc/slurm, or nothing there at all.
etc_is_ours_or_free() {
  local f target
  for f in slurm.conf gres.conf cgroup.conf; do
    [ -e /etc/slurm/$f ] || [ -L /etc/slurm/$f ] || continue
    target=$(readlink /etc/slurm/$f || true)
    [ "$target" = "$BASE/$f" ] || return 1
  done
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  command -v apt-get >/dev/null || cannot "slurm-wlm is not installed and there is no apt-get"
  say "installing slurm-wlm, slurmctld, slurmd, slurm-client, munge with apt-get"
  # Keep the packages' init scripts from starting daemons we would not own.
  local policy_created=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  local ok=1
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm slurmctld slurmd slurm-client munge >/dev/null; } || ok=""
  [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
  [ -n "$ok" ] || cannot "apt-get could not install slurm-wlm/munge"
}

write_configs() {
  local host ncpu mem cgroup
  host=$(hostname -s)
  ncpu=$(nproc)
  # All of the machine's memory (Slurm drains a node that has less than RealMemory): the
  # requests are bookkeeping here (ConstrainRAMSpace=no) and two 8 GB jobs should fit.
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 512 ))
  rm -rf "$BASE/state" "$BASE/log" "$BASE/run"
  mkdir -p "$BASE"/state/ctld "$BASE"/state/d "$BASE"/log "$BASE"/run
  chown -R slurm:slurm "$BASE/state/ctld" "$BASE/log" "$BASE/run"
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cgroup=$'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes'
  else
    cgroup="CgroupPlugin=cgroup/v1"
  fi
  cat > "$BASE/cgroup.conf" <<CONF
$cgroup
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF
  cat > "$BASE/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu Type=fake File=/dev/null
NodeName=$host Name=gpu Type=fake File=/dev/zero
CONF
  cat > "$BASE/slurm.conf" <<CONF
ClusterName=rekalmtest
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (s): the workflow's status
# polling uses squeue (no slurmdbd here) and the test reads the jobs back afterwards.
MinJobAge=3600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
CONF
  mkdir -p /etc/slurm
  local f
  for f in slurm.conf gres.conf cgroup.conf; do ln -sfn "$BASE/$f" /etc/slurm/$f; done
}

# Wait for a daemon's PID file, record "name pid" in BASE/started.
record_pid() {
  local name=$1 pidfile=$2 i
  for i in $(seq 1 100); do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$name $(cat "$pidfile")" >> "$STARTED"
      return 0
    fi
    sleep 0.1
  done
  say "$name did not start (no live PID in $pidfile); see $BASE/log"
  return 1
}

up() {
  [ "$(id -u)" = 0 ] || cannot "needs root (it installs packages and starts slurmd as root)"
  if [ -s "$STARTED" ]; then
    say "$BASE/started exists: stopping the previous cluster first"
    down
  fi
  install_packages
  pgrep -x slurmctld >/dev/null && cannot "a slurmctld is already running (pid $(pgrep -x slurmctld | tr '\n' ' ')); not starting a second cluster"
  pgrep -x slurmd >/dev/null && cannot "a slurmd is already running (pid $(pgrep -x slurmd | tr '\n' ' ')); not starting a second cluster"
  etc_is_ours_or_free || cannot "/etc/slurm already holds another Slurm configuration; not touching it"
  write_configs
  : > "$STARTED"
  trap 'say "start failed; stopping what was started"; down; exit 1' ERR

  mkdir -p /run/munge && chown munge:munge /run/munge
  if [ ! -f /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  if pgrep -x munged >/dev/null; then
    say "using the munged that is already running (not ours: it stays up)"
  else
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    record_pid munged /run/munge/munged.pid
  fi
  /usr/sbin/slurmctld
  record_pid slurmctld "$BASE/run/slurmctld.pid"
  /usr/sbin/slurmd
  record_pid slurmd "$BASE/run/slurmd.pid"
  # Ready when the node is idle; give up after 60 s or as soon as a daemon has died.
  local i name pid
  for i in $(seq 1 120); do
    timeout 5 sinfo -h -o %T 2>/dev/null | grep -qx idle && break
    while read -r name pid; do
      kill -0 "$pid" 2>/dev/null || { say "$name ($pid) died; see $BASE/log/$name.log"; tail -n 5 "$BASE/log/$name.log" >&2 || true; false; }
    done < "$STARTED"
    sleep 0.5
  done
  trap - ERR
  timeout 5 sinfo -h -o %T | grep -qx idle || { say "the node did not become idle"; down; exit 1; }
  timeout 5 sinfo
}

down() {
  local name pid i f
  if [ -f "$STARTED" ]; then
    # Jobs still queued or running (e.g. after an aborted test) would outlive slurmd.
    local jobs
    if grep -q '^slurmctld ' "$STARTED"; then
      jobs=$(timeout 5 squeue -h -t PD,R,S,CG -o %i 2>/dev/null || true)
      if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for i in $(seq 1 30); do timeout 5 squeue -h -t R,CG -o %i 2>/dev/null | grep -q . || break; sleep 0.5; done
        echo "cancelled job(s) $(echo $jobs)"
      fi
    fi
    # Reverse order: slurmd, slurmctld, then munged.
    tac "$STARTED" | while read -r name pid; do
      [ -n "$pid" ] || continue
      if kill "$pid" 2>/dev/null; then
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        echo "stopped $name ($pid)"
      fi
    done
    rm -f "$STARTED"
  fi
  for f in slurm.conf gres.conf cgroup.conf; do
    [ "$(readlink /etc/slurm/$f 2>/dev/null)" = "$BASE/$f" ] && rm -f /etc/slurm/$f
  done
  return 0
}

case "$ACTION" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down [BASE]" >&2; exit 2 ;;
esac
