#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (Debian/Ubuntu, run as root).
#
#   scripts/start_local_slurm.sh          install slurm + munge if missing, write
#                                         /etc/slurm/slurm.conf, start munged, slurmctld,
#                                         slurmd, wait until the node takes jobs
#   scripts/start_local_slurm.sh --stop   stop the daemons this script started
#   scripts/start_local_slurm.sh --status print what is running
#
# Idempotent: running it again when the cluster is up changes nothing and exits 0.
# The cluster has one node (this host, `hostname -s`) with all its CPUs and one partition
# named "debug"; no accounting database (sacct is unavailable; submitit only warns).
# It is meant for CI and for trying `trex-run-experiments --launcher slurm` locally. It never
# overwrites a slurm.conf it did not write (a real cluster's), unless given --force.
set -euo pipefail

MARKER="# written by procgen-trex scripts/start_local_slurm.sh"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
PARTITION="${TREX_SLURM_PARTITION:-debug}"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_RUN=/run/munge

say() { echo "[start_local_slurm] $*"; }
die() { echo "[start_local_slurm] error: $*" >&2; exit 1; }

FORCE=0
ACTION=start
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --stop) ACTION=stop ;;
        --status) ACTION=status ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "unknown argument $arg (use --stop, --status, --force)" ;;
    esac
done

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ctld_ok() { command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q "is UP"; }

node_state() { sinfo -h -N -o "%T" 2>/dev/null | head -n1; }

node_ok() {
    local s
    s="$(node_state)"
    [[ "$s" == idle* || "$s" == mixed* || "$s" == allocated* || "$s" == completing* ]]
}

stop_pidfile() {
    local name="$1" file="$2"
    if pid_alive "$file"; then
        say "stopping $name (pid $(cat "$file"))"
        kill "$(cat "$file")" || true
        for _ in $(seq 1 50); do pid_alive "$file" || break; sleep 0.2; done
    fi
    rm -f "$file"
}

if [[ "$ACTION" == status ]]; then
    munge_ok && say "munged: up" || say "munged: down"
    ctld_ok && say "slurmctld: up" || say "slurmctld: down"
    say "node state: $(node_state || true)"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts system daemons)"

if [[ "$ACTION" == stop ]]; then
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
    if [[ -f "$MUNGE_RUN/munged.pid" ]]; then stop_pidfile munged "$MUNGE_RUN/munged.pid"; fi
    exit 0
fi

# ---------------------------------------------------------------- packages
need=()
command -v munged >/dev/null || need+=(munge)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
if ((${#need[@]})); then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating munge key"
    mungekey -c -f -k /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 "$MUNGE_RUN"
if ! munge_ok; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.2; done
    munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- slurm.conf
HOST="$(hostname -s)"
NCPUS="$(nproc --all)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
if getent hosts "$HOST" >/dev/null; then ADDR="$HOST"; else ADDR=127.0.0.1; fi

read -r -d '' NEW_CONF <<EOF || true
$MARKER
ClusterName=trexlocal
SlurmctldHost=$HOST($ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
MaxArraySize=10001
NodeName=$HOST NodeAddr=$ADDR CPUs=$NCPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
changed=0
if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF" && [[ "$FORCE" != 1 ]]; then
    die "$CONF exists and was not written by this script (a real cluster's?); not touching it (--force overwrites)"
fi
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$NEW_CONF" ]]; then
    say "writing $CONF (node $HOST, $NCPUS CPUs, ${MEM_MB} MB, partition $PARTITION)"
    printf '%s\n' "$NEW_CONF" > "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    changed=1
fi
# Debian's slurmd looks for a cgroup.conf even with proctrack/linuxproc on some versions
[[ -f "$CONF_DIR/cgroup.conf" ]] || echo "CgroupPlugin=autodetect" > "$CONF_DIR/cgroup.conf"

if ((changed)); then
    # a new config: restart daemons we started with the old one
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
fi

# ---------------------------------------------------------------- daemons
if ! ctld_ok; then
    stop_pidfile slurmctld "$CTLD_PID"
    say "starting slurmctld"
    /usr/sbin/slurmctld
    for _ in $(seq 1 100); do ctld_ok && break; sleep 0.2; done
    ctld_ok || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
if ! pid_alive "$SLURMD_PID"; then
    say "starting slurmd"
    /usr/sbin/slurmd
fi

for _ in $(seq 1 150); do
    node_ok && break
    case "$(node_state)" in
        down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
node_ok || die "node $HOST is not taking jobs (state: $(node_state); see $LOG_DIR/slurmd.log)"
say "cluster up: partition $PARTITION, node $HOST ($(node_state))"
