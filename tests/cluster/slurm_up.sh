#!/usr/bin/env bash
# Start a throwaway single-node Slurm on this machine, for tests/test_slurm.py.
#
# Debian's slurm-wlm (slurmctld, slurmd, client) and munge, started by hand as root:
# no systemd, no cgroups, no accounting database. Job states come from squeue, so run
# Snakemake's Slurm executor with `--slurm-status-command squeue` against it.
# Everything lives under $SLURM_CI_ROOT (default /tmp/lambda-hat-slurm); the daemons'
# PIDs are recorded there and tests/cluster/slurm_down.sh stops them and cleans up.
#
# Settings (environment):
#   SLURM_CI_ROOT  state, logs, keys and PIDs                    [/tmp/lambda-hat-slurm]
#   SLURM_CI_CPUS  CPUs the node advertises; may exceed nproc    [8]
#   SLURM_CI_GPUS  count-only fake GPUs (gres/gpu, no device)    [0]
#   SLURM_CI_PARTITIONS  partition names, the first the default  [debug]
#
# Facts this relies on (checked with Slurm 22.05 on Debian 12):
# - slurm.conf must be at /etc/slurm/slurm.conf: the executor's job step strips the
#   SLURM_* variables, SLURM_CONF included, before its nested srun.
# - munge must listen on its default socket /run/munge/munge.socket.2.
# - A node may advertise more CPUs than it has with SlurmdParameters=config_overrides;
#   nothing enforces CPU, memory or GPU limits here.
set -euo pipefail

ROOT=${SLURM_CI_ROOT:-/tmp/lambda-hat-slurm}
CPUS=${SLURM_CI_CPUS:-8}
GPUS=${SLURM_CI_GPUS:-0}
PARTITIONS=${SLURM_CI_PARTITIONS:-debug}
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
NODE=$(hostname -s)

fail() {
  echo "slurm_up: $*" >&2
  tail -n 15 "$ROOT"/log/*.log 2>/dev/null >&2 || true
  exit 1
}

# poll CMD... every 0.2 s until it succeeds; give up after SECONDS or if PID dies
await() {
  local pid=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "daemon $pid died before: $*"
    [ "$SECONDS" -lt "$deadline" ] || fail "gave up after ${limit}s waiting for: $*"
    sleep 0.2
  done
}

# run a daemon in the foreground mode, in the background, and record its PID
daemon() {
  local name=$1
  shift
  "$@" >"$ROOT/log/$name.out" 2>&1 &
  STARTED=$!
  echo "$name $STARTED" >>"$ROOT/pids"
}

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and writes /etc/slurm)"

# 1. Packages. A policy-rc.d that says 101 keeps apt from starting their services.
packages="munge slurmctld slurmd slurm-client"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $missing >/dev/null || fail "could not install:$missing"
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

mkdir -p "$ROOT"/{state,spool,log,run}
: >"$ROOT/pids"

# 2. munge, with a key of our own, on the default socket.
install -d -m 0755 /run/munge
if [ ! -f "$ROOT/munge.key" ]; then
  mungekey --create --keyfile="$ROOT/munge.key"
  chmod 400 "$ROOT/munge.key"
fi
daemon munged munged --foreground --key-file="$ROOT/munge.key" \
  --log-file="$ROOT/log/munged.log" --pid-file="$ROOT/run/munged.pid" \
  --seed-file="$ROOT/munged.seed"
await "$STARTED" 20 sh -c 'munge -n </dev/null | unmunge'

# 3. slurm.conf (and gres.conf for fake GPUs), linked from /etc/slurm.
node_gres="" gres_types="" overrides=""
if [ "$GPUS" -gt 0 ]; then
  node_gres="Gres=gpu:$GPUS"
  gres_types="GresTypes=gpu"
fi
if [ "$CPUS" -gt "$(nproc)" ]; then overrides="SlurmdParameters=config_overrides"; fi
cat >"$ROOT/slurm.conf" <<EOF
ClusterName=lambdahat
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$ROOT/log/jobcomp.txt
$gres_types
$overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $node_gres State=UNKNOWN
EOF
default=YES
for p in $PARTITIONS; do
  echo "PartitionName=$p Nodes=ALL Default=$default MaxTime=INFINITE State=UP" \
    >>"$ROOT/slurm.conf"
  default=NO
done
mkdir -p /etc/slurm
ln -sfn "$ROOT/slurm.conf" /etc/slurm/slurm.conf
if [ "$GPUS" -gt 0 ]; then
  # slurmd drops a GPU without a device file; /dev/null's numbers make a harmless one
  : >"$ROOT/gres.conf"
  for i in $(seq 0 $((GPUS - 1))); do
    [ -e "$ROOT/gpu$i" ] || mknod "$ROOT/gpu$i" c 1 3
    echo "Name=gpu File=$ROOT/gpu$i" >>"$ROOT/gres.conf"
  done
  ln -sfn "$ROOT/gres.conf" /etc/slurm/gres.conf
fi

# 4. The controller, then the node.
daemon slurmctld slurmctld -D -i
await "$STARTED" 60 sh -c 'timeout 5 scontrol ping | grep -q UP'
daemon slurmd slurmd -D
await "$STARTED" 60 sh -c '[ "$(timeout 5 sinfo -h -o %T | sort -u)" = idle ]'
sinfo
