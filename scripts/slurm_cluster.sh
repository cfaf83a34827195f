#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the cluster tests (tests/cluster/) and CI.
#
#   scripts/slurm_cluster.sh up      install Debian's packages if missing, configure, start every
#                                    daemon, wait until the node is idle (about 20 s, 1 min with
#                                    the install)
#   scripts/slurm_cluster.sh down    stop each daemon it started, by the PID in its pid file
#   scripts/slurm_cluster.sh status  whether the node answers (exit 0) or not (exit 1)
#
# As root, on Debian 12 (SLURM 22.05), without systemd or cgroups: each daemon is started here,
# not by a service manager. What the project needs of a cluster, and what this one has:
#   - accounting (slurmdbd on MariaDB, unix socket only): submitit polls job states with sacct;
#     without it a job that dies outside Python (scancel, preemption, OOM) is never seen as
#     ended and a sweep waits forever;
#   - two partitions: "debug" (the default) and "high", whose jobs preempt debug's
#     (PreemptMode=REQUEUE) after GRACE seconds (SLURM_GRACE, default 10): SIGTERM to every
#     process of the job, SIGKILL after the grace time;
#   - a GPU on /dev/null with 4 shards (GresTypes=gpu,shard), so that hydra/launcher=slurm_shared
#     (--gres=shard:1) schedules on a machine without a GPU;
#   - a requeued job may start again after about 10 s (cred_expire=10, a 2 s scheduler interval;
#     SLURM's defaults make it wait 2 minutes).
set -euo pipefail

GRACE=${SLURM_GRACE:-10}
SHARDS=${SLURM_GPU_SHARDS:-4}
CONF=/etc/slurm
LOGS=/var/log/slurm
PIDFILES=(/run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid)

say() { printf 'slurm_cluster: %s\n' "$*"; }

wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds, polling every 0.25 s
  local polls=$(($1 * 4))
  shift
  for _ in $(seq "$polls"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = idle ]; }

install_packages() {
  local wanted=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server) missing=()
  for package in "${wanted[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100))
  mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd "$LOGS"
  local gres_types="" node_gres=""
  if [ "$SHARDS" -gt 0 ]; then
    gres_types="GresTypes=gpu,shard" node_gres=" Gres=gpu:1,shard:${SHARDS}"
    printf 'Name=gpu File=/dev/null\nName=shard Count=%s\n' "$SHARDS" >"$CONF/gres.conf"
  else
    rm -f "$CONF/gres.conf"
  fi
  cat >"$CONF/slurm.conf" <<EOF
ClusterName=sdexp
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
InactiveLimit=0
KillWait=10
MinJobAge=3600
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
${gres_types}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb}${node_gres} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=${GRACE}
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2
EOF
  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=sdexp
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=${LOGS}/slurmdbd.log
EOF
  chmod 600 "$CONF/slurmdbd.conf"
  say "node ${host}: ${cpus} CPUs, ${mem_mb} MB, gpu:1 with ${SHARDS} shards; partitions debug (preempted after ${GRACE} s) and high"
}

start_munge() {
  alive /run/munge/munged.pid && return 0
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
}

start_accounting() {
  if ! alive /run/mysqld/mysqld.pid; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
      --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadb -e 'select 1' || { say "MariaDB did not start:"; tail "$LOGS/mariadb.log"; exit 1; }
  fi
  mariadb -e "CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY 'sdexp';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  alive /run/slurmdbd.pid || slurmdbd
  wait_for 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819' || { say "slurmdbd did not start:"; tail "$LOGS/slurmdbd.log"; exit 1; }
  sacctmgr -i add cluster sdexp >/dev/null 2>&1 || true # "already exists" on a later start
}

up() {
  if alive /run/slurmctld.pid && node_idle; then
    say "already up: $(sinfo -h -N -o '%N %T, %c CPUs, gres %G' | sort -u)"
    return 0
  fi
  install_packages
  write_config
  start_munge
  start_accounting
  alive /run/slurmctld.pid || slurmctld
  alive /run/slurmd.pid || slurmd
  wait_for 60 node_idle || {
    say "the node is not idle: $(sinfo -h -N -o '%T %E' 2>&1)"
    tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log"
    exit 1
  }
  say "up: $(sinfo -h -N -o '%N %T, %c CPUs, gres %G' | sort -u); stop it with: $0 down"
}

down() {
  for pidfile in "${PIDFILES[@]}"; do
    alive "$pidfile" || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    if wait_for 30 bash -c "! kill -0 $pid"; then say "stopped $(basename "$pidfile" .pid) (pid $pid)"
    else say "$(basename "$pidfile" .pid) (pid $pid) still runs after 30 s" && exit 1; fi
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) node_idle || sinfo -h >/dev/null 2>&1 ;;
  *) echo "usage: $0 up|down|status" >&2 && exit 2 ;;
esac
