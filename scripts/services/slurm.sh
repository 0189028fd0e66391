#!/usr/bin/env bash
# Start a single-node Slurm cluster on localhost for the tests (Debian 12, as root).
#
# Idempotent and fast when the cluster already answers.  Installs slurm-wlm, munge and
# libslurm-dev when missing (apt-get update only then).  Every file the cluster uses
# lives under <repo>/.services/slurm/; the tests read <repo>/.services/slurm/env.
#
#   scripts/services/slurm.sh          start (or check) the cluster
#   scripts/services/slurm.sh stop     stop slurmctld and slurmd started from here
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SVC="$ROOT/.services/slurm"
CONF="$SVC/slurm.conf"
ENV_FILE="$SVC/env"
export SLURM_CONF="$CONF"

log() { echo "slurm.sh: $*" >&2; }

stop_daemons() {
    local pidfile
    for pidfile in "$SVC/run/slurmd.pid" "$SVC/run/slurmctld.pid"; do
        if [[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")" || true
        fi
    done
}

if [[ "${1:-start}" == "stop" ]]; then
    stop_daemons
    exit 0
fi

cluster_ready() {
    [[ -f "$CONF" && -f "$ENV_FILE" ]] || return 1
    scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    local state
    state="$(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null || true)"
    [[ "$state" == idle* || "$state" == mixed* || "$state" == allocated* ]]
}

if cluster_ready; then
    exit 0
fi

# --- packages -------------------------------------------------------------------
missing=()
for pkg in slurm-wlm munge libslurm-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- munge (one per machine: reuse it when it already answers) ------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    [[ -s /etc/munge/munge.key ]] || /usr/sbin/mungekey --create --force
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

# --- configuration --------------------------------------------------------------
mkdir -p "$SVC/state" "$SVC/spool" "$SVC/run" "$SVC/log"
# not nproc: it honours OMP_NUM_THREADS, which a Dask worker in the calling process sets to 1
cpus="$(getconf _NPROCESSORS_ONLN)"
# Declare 90 % of the memory so slurmd never drains the node for "Low RealMemory".
mem_mb="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
# Node features: the generic x86-64 levels this CPU supports, so that jobs can ask
# for a microarchitecture with --constraint (archspec names).
features="$(uname -m)"
if [[ "$features" == x86_64 ]]; then
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
    has cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3 && features+=",x86_64_v2" \
        && has avx avx2 bmi1 bmi2 f16c fma abm movbe xsave && features+=",x86_64_v3" \
        && has avx512f avx512bw avx512cd avx512dq avx512vl && features+=",x86_64_v4"
fi

cat >"$CONF.new" <<EOF
# Written by scripts/services/slurm.sh: a single-node test cluster.
ClusterName=bridgetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SVC/log/jobcomp.txt
StateSaveLocation=$SVC/state
SlurmdSpoolDir=$SVC/spool
SlurmctldPidFile=$SVC/run/slurmctld.pid
SlurmdPidFile=$SVC/run/slurmd.pid
SlurmctldLogFile=$SVC/log/slurmctld.log
SlurmdLogFile=$SVC/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1,sched_interval=1
MinJobAge=300
MaxArraySize=1001
InactiveLimit=0
KillWait=2
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Features=$features State=UNKNOWN
# Short jobs share cores (up to 4 per core) so that tests do not queue behind each other.
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
if ! cmp -s "$CONF.new" "$CONF"; then
    mv "$CONF.new" "$CONF"
    stop_daemons
    sleep 1
else
    rm -f "$CONF.new"
fi
printf 'SLURM_CONF=%s\n' "$CONF" >"$ENV_FILE"

# --- daemons --------------------------------------------------------------------
pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! pid_alive "$SVC/run/slurmctld.pid"; then
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$CONF"
fi
if ! pid_alive "$SVC/run/slurmd.pid"; then
    log "starting slurmd"
    /usr/sbin/slurmd -f "$CONF" -N localhost
fi

for _ in $(seq 100); do
    if cluster_ready; then
        exit 0
    fi
    # A node left DOWN/DRAIN by an earlier run comes back here.
    case "$(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null || true)" in
        down* | drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
log "the cluster did not become ready; see $SVC/log/"
sinfo -N -l >&2 || true
exit 1
