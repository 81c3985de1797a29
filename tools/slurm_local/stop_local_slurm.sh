#!/usr/bin/env bash
# Stops the cluster of tools/slurm_local/start_local_slurm.sh (same SLURM_LOCAL_DIR): its jobs are
# cancelled, then slurmd, slurmctld and munged stop. Its state directory is kept (logs included).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm_local}
export SLURM_CONF=$DIR/slurm.conf

# Jobs first, so that no training process outlives the cluster.
[ -f "$SLURM_CONF" ] && scancel --partition=local 2>/dev/null || true
stop() {  # stop PIDFILE: SIGTERM, then wait up to 10 s for the daemon to exit
    [ -s "$1" ] || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 10); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 1
    done
    echo "process $pid ($1) did not stop" >&2
    return 1
}
stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
# A munged that was running before the start script (the system's) keeps running.
if [ -f "$DIR/munged.ours" ]; then
    runuser -u munge -- munged --stop
    rm "$DIR/munged.ours"
fi
# The symlink points at a file that no longer serves a cluster.
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then
    rm /etc/slurm/slurm.conf
fi
echo "local SLURM stopped (logs in $DIR/log)"
