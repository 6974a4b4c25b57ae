#!/usr/bin/env bash
# test_slurm_faults.sh - failures at scale end a Slurm job within a bound
# (slurm/train.sh under a real one-node Slurm, tests/slurm/cluster.sh):
#   1. srun (2 ranks): one rank killed with SIGKILL during the flow stage ->
#      srun --kill-on-bad-exit ends the job within 60 s;
#   2. srun (2 ranks, dist.timeout=15): one rank stopped with SIGSTOP -> the
#      other stops at its deadline with a message naming the stopped rank,
#      and the job ends within 60 s;
#   3. a job that keeps exiting 75 without writing a new checkpoint is
#      requeued at most FM_MAX_STALLED times in a row (a stand-in fmtrain that
#      always exits 75).
# Prints PASS/FAIL slurm/<name>; exits non-zero on any failure. Needs root.
source "$(dirname "$0")/../lib.sh" slurm
export FMTRAIN
export PATH=$PATH:/usr/sbin
secs() { echo "$(($(date +%s) - $1))s"; }

# prerequisites: without root or Slurm the test cannot run here (skipped);
# without a built fmtrain it fails
prerequisites fault_prerequisites "to run slurmd and munged" sbatch scontrol squeue slurmctld slurmd munged srun

chmod 755 "$T" # munged wants every directory above its socket searchable by all
C=$T/cluster
W=$T/work
mkdir -p "$W"
at_exit '"$ROOT/tests/slurm/cluster.sh" stop "$C"'

if ! "$ROOT/tests/slurm/cluster.sh" start "$C" >"$T/cluster.out" 2>&1; then
    fail fault_cluster_start "$(cat "$T/cluster.out")"; exit 1
fi
export SLURM_CONF=$C/slurm.conf
cpus=$(grep -o 'CPUs=[0-9]*' "$C/slurm.conf" | cut -d= -f2)
cd "$ROOT" || exit 1

# the latents once (1 rank, no Slurm), copied into each job's run directory
if ! "$FMTRAIN" configs/tiny.yaml --out "$T/base" --set "run.stages=[vae,encode]" --set vae.steps=10 \
    >"$T/base.log" 2>&1; then
    fail fault_latents "the VAE and encode stages failed"; show "$T/base.log" 15; exit 1
fi

# start NAME ARGS...: a long flow job with srun, 2 ranks; sets jid, log, rcfile
start() {
    local name=$1; shift
    cp -r "$T/base" "$T/$name"
    rcfile=$T/$name.rc
    (FM_LAUNCHER=srun FM_NO_REQUEUE=1 sbatch --parsable --wait --chdir="$W" --ntasks-per-node=2 --requeue \
        slurm/train.sh configs/tiny.yaml --out "$T/$name" --set "run.stages=[flow]" --set flow.steps=100000 \
        --set flow.sample_every=0 --set flow.ckpt_every=100000 "$@" >"$T/$name.out" 2>&1; echo $? >"$rcfile") &
    jid=
    for _ in $(seq 100); do jid=$(grep -o '^[0-9]*' "$T/$name.out" 2>/dev/null | head -n 1); [ -n "$jid" ] && break; sleep 0.2; done
    log=$W/slurm-fmtrain-$jid.out
}
# rank_pid RANK: the pid of fmtrain rank RANK of the running job (its environment says which)
rank_pid() {
    local p
    for p in $(pgrep -x fmtrain); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -q "^SLURM_JOB_ID=$jid$" &&
            tr '\0' '\n' <"/proc/$p/environ" | grep -q "^SLURM_PROCID=$1$"; then echo "$p"; return; fi
    done
}
# wait_flow: until the job's flow stage has logged step 10 (up to 120 s)
wait_flow() {
    for _ in $(seq 600); do
        grep -q '\(^\|Z \)flow  step 10/' "$log" 2>/dev/null && return 0
        [ -s "$rcfile" ] && return 1
        sleep 0.2
    done
    return 1
}
# wait_end SECONDS: until the job ended; 0 if it did within SECONDS
wait_end() {
    for _ in $(seq $(($1 * 5))); do [ -s "$rcfile" ] && return 0; sleep 0.2; done
    scancel "$jid" 2>/dev/null
    return 1
}

if [ "$cpus" -lt 2 ]; then
    skip_hw srun_rank_sigkill_ends_job "the local cluster has $cpus CPU; 2 ranks needed"
    skip_hw srun_rank_sigstop_named_at_deadline "the local cluster has $cpus CPU; 2 ranks needed"
else
    # ---- 1. SIGKILL of one rank under srun ---------------------------------------------
    start kill --set run.log_every=10
    if wait_flow && p=$(rank_pid 1) && [ -n "$p" ]; then
        t0=$(date +%s)
        kill -KILL "$p"
        if wait_end 60; then pass "srun_rank_sigkill_ends_job (job $jid, $(secs "$t0") after the kill, exit $(cat "$rcfile"))"
        else fail srun_rank_sigkill_ends_job "job $jid still running 60 s after rank 1 was killed"; show "$log" 15; fi
    else
        fail srun_rank_sigkill_ends_job "job $jid never reached flow step 10 or rank 1 not found"; show "$log" 15; scancel "$jid"
    fi
    wait 2>/dev/null

    # ---- 2. SIGSTOP of one rank: the deadline names it ------------------------------------
    start stop --set run.log_every=10 --set dist.timeout=15
    if wait_flow && p=$(rank_pid 1) && [ -n "$p" ]; then
        t0=$(date +%s)
        kill -STOP "$p"
        if wait_end 60 && grep -q 'waited 15 s for rank 1\|rank 1' "$log" && grep -q 'dist.timeout\|waited 15 s' "$log"; then
            pass "srun_rank_sigstop_named_at_deadline (job $jid, $(secs "$t0") after the stop: $(grep -o 'rank 0 waited 15 s for rank 1[^:]*' "$log" | head -n 1))"
        else
            fail srun_rank_sigstop_named_at_deadline "job $jid: no end within 60 s or no message naming rank 1"; show "$log" 15
        fi
        kill -CONT "$p" 2>/dev/null
    else
        fail srun_rank_sigstop_named_at_deadline "job $jid never reached flow step 10"; show "$log" 15; scancel "$jid"
    fi
    wait 2>/dev/null
fi

# ---- 3. exit 75 without progress is not requeued forever -------------------------------------
fake=$T/fake-fmtrain
printf '#!/bin/sh\necho "fake fmtrain: preempted at once"\nexit 75\n' >"$fake"
chmod +x "$fake"
t0=$(date +%s)
jid=$(FMTRAIN=$fake FM_MAX_STALLED=2 sbatch --parsable --wait --chdir="$W" --ntasks-per-node=1 slurm/train.sh \
    configs/tiny.yaml --out "$T/stalled" 2>"$T/stalled.err")
rc=$?
jid=${jid%%;*}
log=$W/slurm-fmtrain-$jid.out
attempts=$(grep -c "train.sh: .*job $jid (attempt" "$log" 2>/dev/null)
if [ "$rc" -ne 0 ] && [ "$attempts" -eq 3 ] && grep -q 'not requeued (FM_MAX_STALLED=2)' "$log"; then
    pass "stalled_requeue_bounded (job $jid: $attempts attempts, then not requeued; $(secs "$t0"))"
else
    fail stalled_requeue_bounded "sbatch exit $rc, $attempts attempts"; show "$log" 15; scancel "$jid" 2>/dev/null
fi

finish
