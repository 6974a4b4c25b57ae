#!/usr/bin/env bash
# test_slurm.sh - slurm/train.sh under a real one-node Slurm cluster started on
# this machine (tests/slurm/cluster.sh: munged, slurmctld, slurmd, private
# config, ports and state under a temp dir; all stopped by pid at the end).
#   1. sbatch --wait slurm/train.sh configs/tiny.yaml (2 ranks x 1 thread,
#      mpirun): the job completes and runs/tiny-<job id> holds what DESIGN §8
#      promises (config, metrics, checkpoints, samples, eval.json).
#   2. preemption: `scancel --signal=USR1 --batch` while the flow stage runs ->
#      the batch shell forwards the signal, the ranks checkpoint, fmtrain exits
#      75, the script requeues the job, and the requeued job (same id, same run
#      directory) resumes flow from that checkpoint and completes.
#   3. hybrid 1 rank x 2 threads launched with srun --mpi=pmix, chosen by a
#      site hook (FM_SITE_SETUP, sourced first); the run's log starts with
#      the version block showing 2 threads bound close to cores.
#   4. FM_SITE_SETUP naming a missing file: the job ends with exit 2 and says
#      so before fmtrain starts.
# Prints PASS/FAIL slurm/<name>; exits non-zero on any failure. Needs root.
source "$(dirname "$0")/../lib.sh" slurm
export FMTRAIN
export PATH=$PATH:/usr/sbin
secs() { echo "$(($(date +%s) - $1))s"; }

# prerequisites: without root or Slurm the test cannot run here (skipped);
# without a built fmtrain it fails
prerequisites prerequisites "to run slurmd and munged" sbatch scontrol scancel squeue sinfo slurmctld slurmd munged mpirun srun

chmod 755 "$T" # munged wants every directory above its socket searchable by all
C=$T/cluster
W=$T/work
mkdir -p "$W"
at_exit '"$ROOT/tests/slurm/cluster.sh" stop "$C"'
# on failure: the end of a job log and of the daemon logs
show_logs() {
    local f
    for f in "$@" "$C"/log/slurmctld.log "$C"/log/slurmd.log; do
        [ -f "$f" ] && { echo "    --- $f"; tail -n 15 "$f" | sed 's/^/    /'; }
    done
}

t0=$(date +%s)
if "$ROOT/tests/slurm/cluster.sh" start "$C" >"$T/cluster.out" 2>&1; then
    pass "cluster_start ($(secs "$t0"), $(grep -o 'CPUs=[0-9]*' "$C/slurm.conf"))"
else
    fail cluster_start "$(cat "$T/cluster.out")"; show_logs; exit 1
fi
export SLURM_CONF=$C/slurm.conf
cpus=$(grep -o 'CPUs=[0-9]*' "$C/slurm.conf" | cut -d= -f2)
ranks=2; [ "$cpus" -ge 2 ] || ranks=1

# keep the jobs short: the tiny pipeline with fewer steps
short=(--set vae.steps=20 --set vae.ckpt_every=10 --set eval.classifier_steps=10 --set eval.samples_per_class=4
       --set sample.steps=4)

# ---- 1. sbatch --wait slurm/train.sh configs/tiny.yaml ------------------------------
t0=$(date +%s)
cd "$ROOT" || exit 1
jid=$(sbatch --parsable --wait --chdir="$W" --ntasks-per-node=$ranks slurm/train.sh configs/tiny.yaml \
    "${short[@]}" --set flow.steps=20 2>"$T/sbatch1.err")
rc=$?
jid=${jid%%;*}
log1=$W/slurm-fmtrain-$jid.out
R1=$W/runs/tiny-$jid
if [ $rc -eq 0 ] && [ -n "$jid" ] && grep -q "train.sh: .*done: runs/tiny-$jid" "$log1"; then
    pass "sbatch_wait_tiny (job $jid, $ranks ranks, $(secs "$t0"))"
else
    fail sbatch_wait_tiny "sbatch exit $rc, job '${jid}'"; cat "$T/sbatch1.err"; show_logs "$log1"
fi
state=$(scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z]*\|Restarts=[0-9]*\|ExitCode=[0-9:]*' | tr '\n' ' ')
echo "    job $jid: ${state:-purged from slurmctld}"

missing=""
for f in config.yaml metrics.jsonl latents.safetensors eval.json; do [ -s "$R1/$f" ] || missing="$missing $f"; done
for s in vae flow classifier; do ls "$R1/ckpt/$s-"*.safetensors >/dev/null 2>&1 || missing="$missing ckpt/$s-*"; done
ls "$R1"/samples/sample-*-w1.png >/dev/null 2>&1 || missing="$missing samples/sample-*"
if [ -z "$missing" ]; then pass "run_directory_per_job_id (runs/tiny-$jid)"; else fail run_directory_per_job_id "missing:$missing"; fi
if grep -q "$ranks ranks x 1 threads, mpirun" "$log1" && grep -q "MCW rank $((ranks - 1)) \(bound\|is not bound\)" "$log1"; then
    pass "mpirun_ranks_bound"
else fail mpirun_ranks_bound "no '$ranks ranks x 1 threads' or binding report in the job log"; fi

# ---- 2. preemption: USR1 to the batch shell while flow runs -> 75 -> requeue -> resume --
t0=$(date +%s)
flow_steps=200
(sbatch --parsable --wait --chdir="$W" --ntasks-per-node=$ranks slurm/train.sh configs/tiny.yaml \
    "${short[@]}" --set flow.steps=$flow_steps --set flow.ckpt_every=1000 --set flow.sample_every=0 \
    >"$T/sbatch2.out" 2>"$T/sbatch2.err"; echo $? >"$T/sbatch2.rc") &
waiter=$!
jid2=
for _ in $(seq 100); do jid2=$(cut -d';' -f1 "$T/sbatch2.out" 2>/dev/null); [ -n "$jid2" ] && break; sleep 0.2; done
log2=$W/slurm-fmtrain-$jid2.out
R2=$W/runs/tiny-$jid2
sent=0
for _ in $(seq 600); do # up to 120 s for the job to reach flow step 10
    if grep -q '\(^\|Z \)flow  step 10/' "$log2" 2>/dev/null; then
        scancel --signal=USR1 --batch "$jid2" && sent=1
        break
    fi
    [ -s "$T/sbatch2.rc" ] && break
    sleep 0.2
done
if [ $sent -eq 1 ]; then pass "usr1_sent_to_batch_shell_during_flow (job $jid2, $(secs "$t0"))"
else fail usr1_sent_to_batch_shell_during_flow "job '$jid2' never reached the flow stage"; show_logs "$log2"; fi

for _ in $(seq 900); do [ -s "$T/sbatch2.rc" ] && break; sleep 0.2; done # up to 180 s more
if [ ! -s "$T/sbatch2.rc" ]; then
    scancel "$jid2" 2>/dev/null
    fail preempted_job_completes "job $jid2 still not finished after 180 s: $(squeue -h -j "$jid2" -o '%T %r' 2>&1)"
fi
wait "$waiter" 2>/dev/null
rc2=$(cat "$T/sbatch2.rc" 2>/dev/null || echo none)
# the first attempt: checkpoint at step K, exit 75, requeue
K=$(sed -n 's/.*flow: stopped by signal 10 after step \([0-9]*\).*/\1/p' "$log2" | head -n 1)
if [ -n "$K" ] && grep -q 'got SIGUSR1' "$log2" && grep -q 'Exit code: *75' "$log2" &&
    grep -q "requeueing job $jid2" "$log2"; then
    pass "checkpoint_exit75_requeue (flow step $K)"
else
    fail checkpoint_exit75_requeue "no signal -> checkpoint -> exit 75 -> requeue sequence in the job log"; show_logs "$log2"
fi
# the second attempt: same job id and run directory, resumes flow from step K, completes
if [ "$rc2" = 0 ] && [ -n "$K" ] && grep -q "job $jid2 (attempt 2)" "$log2" &&
    grep -q "flow: resumed from .*runs/tiny-$jid2/ckpt/flow-0*$K.safetensors (step $K)" "$log2" &&
    grep -q "train.sh: .*done: runs/tiny-$jid2" "$log2"; then
    pass "requeued_job_resumes_and_completes ($(secs "$t0"))"
else
    fail requeued_job_resumes_and_completes "sbatch exit $rc2"; show_logs "$log2"
fi
# metrics.jsonl: one flow run, steps strictly increasing through the resume, up to the end
$PY - "$R2" "${K:-0}" "$flow_steps" <<'PYEOF' && pass "metrics_continue_after_resume" || fail metrics_continue_after_resume "see above"
import glob, json, os, re, sys
R, K, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [l["step"] for l in map(json.loads, open(f"{R}/metrics.jsonl")) if l["stage"] == "flow"]
assert steps == sorted(set(steps)), f"flow steps not strictly increasing: {steps}"
assert steps[0] == 1 and steps[-1] == N, steps
assert K > 0, "no preemption step found in the job log"
assert K + 1 in steps, f"no metrics line for the first step after the resume ({K + 1}): {steps}"
# without a resume, only step 1 and multiples of log_every are logged
log_every = int(re.search(r"log_every: *(\d+)", open(f"{R}/config.yaml").read()).group(1))
off = [s for s in steps if s != 1 and s % log_every and s != N]
assert off == ([K + 1] if (K + 1) % log_every else []), f"unexpected off-grid steps {off} (resume at {K + 1})"
assert os.path.exists(f"{R}/eval.json") and glob.glob(f"{R}/samples/sample-*.png"), "final outputs missing"
print(f"    checkpoint after flow step {K}, resumed at {K + 1}; flow steps logged: {steps[:4]} ... {steps[-1]}")
PYEOF
state=$(scontrol show job "$jid2" 2>/dev/null | grep -o 'JobState=[A-Z]*\|Restarts=[0-9]*\|ExitCode=[0-9:]*' | tr '\n' ' ')
echo "    job $jid2: ${state:-purged from slurmctld}"

# ---- 3. 1 rank x 2 threads through srun --mpi=pmix ----------------------------------------
if [ "$cpus" -ge 2 ]; then
    t0=$(date +%s)
    # the site hook picks the launcher (as a site's `module load` would set up its MPI)
    printf 'FM_LAUNCHER=srun\necho "$SLURM_JOB_ID" >"%s"\n' "$T/hook.ran" >"$T/site.sh"
    jid3=$(FM_SITE_SETUP=$T/site.sh sbatch --parsable --wait --chdir="$W" --ntasks-per-node=1 --cpus-per-task=2 \
        slurm/train.sh configs/tiny.yaml --set run.stages=[vae] --set vae.steps=10 --out "$T/r3" 2>"$T/sbatch3.err")
    rc=$?
    jid3=${jid3%%;*}
    log3=$W/slurm-fmtrain-$jid3.out
    if [ $rc -eq 0 ] && grep -q '1 ranks x 2 threads, srun' "$log3" && [ -s "$T/r3/ckpt/vae-00000010.safetensors" ]; then
        pass "srun_pmix_1x2_threads (job $jid3, $(secs "$t0"))"
    else
        fail srun_pmix_1x2_threads "sbatch exit $rc"; cat "$T/sbatch3.err"; show_logs "$log3"
    fi
    if [ "$(cat "$T/hook.ran" 2>/dev/null)" = "$jid3" ] && grep -q "sourcing the site hook $T/site.sh" "$log3"; then
        pass site_hook_sourced
    else
        fail site_hook_sourced "the hook did not run in job $jid3"; show_logs "$log3"
    fi
    if grep -q '\(^\|Z \)fmtrain:   OpenMP:   2 threads, OMP_PROC_BIND=close (bind close), OMP_PLACES=cores' "$log3"; then
        pass log_version_block
    else
        fail log_version_block "the job log lacks the version block with 2 threads bound close"; show_logs "$log3"
    fi
else
    skip_hw srun_pmix_1x2_threads "the node has $cpus CPU(s), 2 needed"
fi

# ---- 4. a site hook that does not exist ----------------------------------------------------
jid4=$(FM_SITE_SETUP=$T/no-such-site.sh sbatch --parsable --wait --chdir="$W" --ntasks-per-node=1 \
    slurm/train.sh configs/tiny.yaml --out "$T/r4" 2>"$T/sbatch4.err")
rc=$?
jid4=${jid4%%;*}
log4=$W/slurm-fmtrain-$jid4.out
if [ $rc -eq 2 ] && grep -q "FM_SITE_SETUP=$T/no-such-site.sh: no such readable file" "$log4" && [ ! -e "$T/r4" ]; then
    pass site_hook_missing
else
    fail site_hook_missing "expected exit 2 and the message, got exit $rc"; show_logs "$log4"
fi

finish
