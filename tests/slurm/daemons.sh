# shellcheck shell=bash
# daemons.sh - what the two private Slurm clusters share: tests/slurm/cluster.sh
# (one node) and tests/cluster/cluster.sh (nodes in network namespaces) source
# it. The caller defines die MESSAGE (print, exit non-zero).
#
#   stop_pid FILE NAME     TERM the pid in FILE, wait up to 10 s, then KILL
#   start_munged DIR       munged with its own key and socket under DIR/munge
#                          (log DIR/log/munged.log); DIR and DIR/munge are made
#                          searchable by all, as munged requires
#   slurm_conf_common DIR  the slurm.conf lines both clusters share: munge
#                          under DIR, root daemons, plugins, and the settings for
#                          short tests:
#     AuthInfo cred_expire=10  a requeued job may start again 11 s after requeue
#                              (default 120 s)
#     sched_interval=2         the main scheduler looks at pending jobs every 2 s
#                              (default 60 s), so a requeued job starts as soon
#                              as it is eligible
#     MinJobAge=4              sbatch --wait polls every 2 s instead of backing
#                              off to 32 s (it polls at most min_job_age/2 apart)
#     KillWait=5               SIGKILL 5 s after SIGTERM when a job is cancelled
#     TaskPlugin=task/affinity srun --cpu-bind works (ranks bound to their cores)
#   cancel_jobs CMD...     cancel every job and wait up to 30 s for the queue to
#                          empty, running the Slurm clients through CMD... (e.g.
#                          `env`, or `nsenter --net=...` to reach the controller)

stop_pid() {
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$(basename "$0"): $2 (pid $pid) did not stop on SIGTERM: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$1"
}

start_munged() {
    local d=$1
    mkdir -p "$d/munge" "$d/log" || die "cannot create $d/munge"
    # munged insists on a key of mode 0600 and a socket directory that all can enter
    chmod 755 "$d" "$d/munge"
    (umask 077 && head -c 1024 /dev/urandom >"$d/munge/munge.key") || die "cannot write the munge key"
    munged --socket="$d/munge/munge.socket" --key-file="$d/munge/munge.key" --pid-file="$d/munge/munged.pid" \
        --log-file="$d/log/munged.log" --seed-file="$d/munge/munged.seed" ||
        die "munged failed to start: $(tail -n 3 "$d/log/munged.log" 2>/dev/null)"
}

slurm_conf_common() {
    cat <<EOF
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$1/munge/munge.socket,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$1/state
SlurmctldLogFile=$1/log/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2
MinJobAge=4
KillWait=5
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
EOF
}

cancel_jobs() {
    # shellcheck disable=SC2046 # one word per job id
    "$@" scancel --quiet $("$@" squeue -h -o %i 2>/dev/null) 2>/dev/null
    for _ in $(seq 60); do
        [ -z "$("$@" squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
}
