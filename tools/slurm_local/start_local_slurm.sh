#!/usr/bin/env bash
# Starts a single-node SLURM cluster on this machine (munge + slurmctld + slurmd on loopback), e.g. to
# run tools/slurm_incubate.sh for real in tests (tests/test_slurm_local.py). Needs root and Debian's
# slurm-wlm and munge packages (apt-get install slurm-wlm munge). Safe to run again: running
# daemons are left alone. Stop it with tools/slurm_local/stop_local_slurm.sh.
#
#   [SLURM_LOCAL_DIR=/tmp/slurm_local] [SLURM_LOCAL_GPUS=$(nproc)] tools/slurm_local/start_local_slurm.sh
#
# Jobs inherit slurmd's nice value, so `nice -n 19 tools/slurm_local/start_local_slurm.sh` makes
# every job run at low priority.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm_local}
CONF=$DIR/slurm.conf
HOST=$(hostname)
CPUS=$(nproc)
# The launch scripts always ask for --gres=gpu:N, which SLURM rejects unless the node has a "gpu"
# GRES. So the node declares GPUs (one per CPU by default, so that jobs can run side by side). slurmd
# drops GPUs without a File and wants character devices: on a CPU-only machine, links to /dev/null.
GPUS=${SLURM_LOCAL_GPUS:-$CPUS}
# Slightly below the available memory: a node that reports less memory than slurm.conf is drained.
MEM=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

if [ "$(id -u)" != 0 ]; then
    echo "$0 must run as root (the daemons switch to the jobs' users)" >&2
    exit 1
fi
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install slurm-wlm munge" >&2; exit 1; }
done
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/gpu"

# munge authenticates every message between the SLURM commands and daemons.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
    # As the munge user, as its packaging does (munged refuses keys that other users could read).
    runuser -u munge -- munged
    touch "$DIR/munged.ours"  # so the stop script stops only a munged that we started
fi

# No cgroups: containers rarely get a writable cgroup tree, so processes are tracked through /proc
# (proctrack/linuxproc), tasks are not confined (task/none), and no cgroup.conf is needed.
# CR_CPU: schedule plain CPUs (CPUs=nproc), whatever the socket/core/thread layout.
# MinJobAge: finished jobs stay visible to `scontrol show job` for an hour, as there is no accounting
# database for sacct.
cat >"$CONF.new" <<CONF
# Written by tools/slurm_local/start_local_slurm.sh
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
mv "$CONF.new" "$CONF"
for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$DIR/gpu/$i"; done
echo "NodeName=$HOST Name=gpu File=$DIR/gpu/[0-$((GPUS - 1))]" >"$DIR/gres.conf"  # read next to slurm.conf

# The commands (sinfo, sbatch, ...) read /etc/slurm/slurm.conf unless SLURM_CONF says otherwise:
# point it at this cluster, but never replace a configuration that is not ours.
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
else
    echo "/etc/slurm/slurm.conf exists: use this cluster with export SLURM_CONF=$CONF" >&2
fi
export SLURM_CONF=$CONF

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
running "$DIR/slurmd.pid" || slurmd -f "$CONF"

for i in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    case "$state" in
        idle*|mixed*|allocated*) sinfo; exit 0 ;;
        # A drain from an earlier run (e.g. an older config) survives in the state directory.
        drain*|inval*) [ "$i" -gt 5 ] && [ "$i" -lt 10 ] && scontrol update NodeName="$HOST" State=RESUME || true ;;
    esac
    sleep 1
done
echo "the node did not come up within 60 s; sinfo says: $(sinfo -h -o '%T %E' 2>&1)" >&2
for log in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
    echo "--- tail of $log" >&2
    tail -n 20 "$log" >&2 || true
done
exit 1
