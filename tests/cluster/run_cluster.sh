#!/usr/bin/env bash
# run_cluster.sh - `make test-cluster`: slurm/train.sh across two nodes of a
# real Slurm cluster on this machine (tests/cluster/cluster.sh: two network
# namespaces with their own hostnames and addresses, joined by veth pairs
# shaped by tc to CLUSTER_RATE, default 1gbit). Open MPI is pointed at the
# nodes' interconnect the way a user would on a real cluster:
# OMPI_MCA_btl_tcp_if_include=fm0 in the environment sbatch passes on.
#   1. sbatch --wait -N 2 --ntasks-per-node=1 slurm/train.sh configs/tiny.yaml
#      (mpirun; reduced step counts): completes; the two ranks report
#      different hostnames; each node's veth sent and received at least the
#      job's gradient bytes; the flow losses equal a 1-rank run's to <= 1e-4
#      relative; only rank 0 wrote into the run directory (strace of every
#      rank's file calls, through train.sh's FMTRAIN knob).
#   2. the same with FM_LAUNCHER=srun (srun --mpi=pmix): different hostnames,
#      losses equal run 1's.
#   3. -N 2 --ntasks-per-node=2 (mpirun): each node holds the data once: the
#      ranks of a node map one node-shared block (the same /dev/shm segment,
#      resident once: the sum of the ranks' Pss of it is one block), the two
#      nodes two different ones; measured during the flow stage and printed.
#      Then the same shape with FM_LAUNCHER=srun.
#   3b. -N 2 --ntasks-per-node=2, flow only, dist.hierarchical on and off: the
#      log names the scheme, both match the 1-rank losses to <= 1e-4, and the
#      bytes on the veths with the hierarchical scheme are 2/3 (+- 0.05) of
#      the flat ring's (the ratio the two algorithms give on 2 x 2).
#   4. a node lost: every process of node 2 killed (SIGKILL, slurmd included)
#      during the flow stage of a 2-node job -> the job ends within 60 s; node 2
#      comes back and a resubmission into the same run directory resumes flow
#      from the last checkpoint and completes.
#   5. preemption across nodes: SIGUSR1 to the batch shell of a 2-node job ->
#      the ranks on both nodes stop at a checkpoint, exit 75, train.sh requeues
#      the job, and it resumes on two nodes and completes.
#   6. stop: no namespace, veth or daemon of the cluster is left.
# Prints PASS/FAIL/SKIP cluster/<name>; exits non-zero on any failure. Needs
# root. Takes about 3 minutes on a quiet 2-core machine.
source "$(dirname "$0")/../lib.sh" cluster
export PATH=$PATH:/usr/sbin
export OMP_NUM_THREADS=1
secs() { echo "$(($(date +%s) - $1))s"; }
CL=$ROOT/tests/cluster/cluster.sh

prerequisites prerequisites "network namespaces, tc, slurmd" ip tc nsenter unshare sbatch scontrol squeue sinfo \
    slurmctld slurmd munged mpirun srun strace
# a container may forbid network namespaces even to root
if ip netns add "fmc$$-probe" 2>/dev/null; then ip netns del "fmc$$-probe"
else skip prerequisites "cannot create network namespaces here (ip netns add failed)"; finish; exit; fi

chmod 755 "$T" # munged wants every directory above its socket searchable by all
C=$T/cluster
W=$T/work
mkdir -p "$W"
at_exit '"$CL" stop "$C"'
show_logs() {
    local f
    for f in "$@" "$C"/log/slurmctld.log "$C"/log/slurmd-fmn*.log; do
        [ -f "$f" ] && { echo "    --- $f"; tail -n 12 "$f" | sed 's/^/    /'; }
    done
}

t0=$(date +%s)
if "$CL" start "$C" -n 2 -r "${CLUSTER_RATE:-1gbit}" >"$T/cluster.out" 2>&1; then
    pass "cluster_start (2 nodes, $(secs "$t0"))"
    sed 's/^/    /' "$T/cluster.out"
else
    fail cluster_start "$(cat "$T/cluster.out")"; show_logs; finish; exit 1
fi
# shellcheck disable=SC1091 # PREFIX, NODES, HEAD_NS, IFACE
source "$C/cluster.env"
on_head() { "$CL" exec "$C" "$@"; }
# the interconnect, named as on every node; sbatch passes the environment on
export OMPI_MCA_btl_tcp_if_include=$IFACE

# the rank wrapper (train.sh runs $FMTRAIN): each rank notes its rank and host,
# and with FM_STRACE=1 runs fmtrain under strace (file calls, per rank)
cat >"$T/fmtrain-wrap" <<EOF
#!/bin/sh
r=\${OMPI_COMM_WORLD_RANK:-\${PMIX_RANK:-\${SLURM_PROCID:-x}}}
echo "rank \$r host \$(hostname) job \${SLURM_JOB_ID:-}" >>"$T/ranks"
[ -n "\${FM_STRACE:-}" ] && exec strace -f -qq -e trace=%file -o "$T/strace.\$SLURM_JOB_ID.\$r" "$FMTRAIN" "\$@"
exec "$FMTRAIN" "\$@"
EOF
chmod 755 "$T/fmtrain-wrap"
# hosts JOB: the "rank R host H" lines of JOB, sorted by rank
hosts() { grep " job $1\$" "$T/ranks" 2>/dev/null | sort -n -k2 | cut -d' ' -f1-4 | paste -s -d, | sed 's/,/, /g'; }
nhosts() { grep " job $1\$" "$T/ranks" 2>/dev/null | cut -d' ' -f4 | sort -u | wc -l; }

# tx_rx NODE: the bytes sent and received by NODE's interface
tx_rx() {
    ip -n "$PREFIX-$1" -s -j link show dev "$IFACE" |
        $PY -c 'import json, sys; s = json.load(sys.stdin)[0]["stats64"]; print(s["tx"]["bytes"], s["rx"]["bytes"])'
}
# submit OUTFILE SBATCH-AND-TRAIN-ARGS...: sbatch --wait on the head from the
# repository root; sets jid, rc and log
submit() {
    local out=$1; shift
    jid=$(cd "$ROOT" && on_head sbatch --parsable --wait --chdir="$W" "$@" 2>"$out")
    rc=$?
    jid=${jid%%;*}
    log=$W/slurm-fmtrain-$jid.out
}
# flow_losses A B: the flow losses of metrics A and B agree to <= 1e-4 relative (same steps)
flow_losses() {
    $PY - "$1" "$2" <<'PYEOF'
import json, sys
def load(p):
    return {j["step"]: j["loss"] for j in map(json.loads, open(p)) if j["stage"] == "flow"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a and sorted(a) == sorted(b), f"flow steps {sorted(a)} vs {sorted(b)}"
worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a)
same = sum(a[k] == b[k] for k in a)
print(f"{len(a)} flow losses, max relative difference {worst:.2e}, {same} equal")
sys.exit(0 if worst <= 1e-4 else 1)
PYEOF
}

short=(--set vae.steps=20 --set vae.ckpt_every=10 --set eval.classifier_steps=10 --set eval.samples_per_class=4
       --set sample.steps=4 --set flow.steps=20 --set run.log_every=1)
cd "$ROOT" || exit 1

# ---- the 1-rank reference (no Slurm) -------------------------------------------------
run ref 1 "$TINY" --out "$T/ref" "${short[@]}" --set "run.stages=[vae,encode,flow]" || { finish; exit 1; }

# ---- 1. 2 nodes x 1 rank, mpirun --------------------------------------------------------
t0=$(date +%s)
declare -A before
for n in $NODES; do before[$n]=$(tx_rx "$n"); done
FMTRAIN=$T/fmtrain-wrap FM_STRACE=1 submit "$T/sbatch1.err" -N 2 --ntasks-per-node=1 slurm/train.sh configs/tiny.yaml \
    "${short[@]}"
R1=$W/runs/tiny-$jid
if [ $rc -eq 0 ] && [ -n "$jid" ] && grep -q "train.sh: .*done: runs/tiny-$jid" "$log" &&
    grep -q "on fmn\[1-2\]: 2 ranks x 1 threads, mpirun" "$log" && [ -s "$R1/eval.json" ]; then
    pass "sbatch_N2_tiny_mpirun (job $jid, $(secs "$t0"))"
else
    fail sbatch_N2_tiny_mpirun "sbatch exit $rc, job '$jid'"; cat "$T/sbatch1.err"; show_logs "$log"
fi
j1=$jid
if [ "$(nhosts "$j1")" -eq 2 ] && grep -q '^\[fmn1:[0-9]*\] MCW rank 0 ' "$log" &&
    grep -q '^\[fmn2:[0-9]*\] MCW rank 1 ' "$log"; then
    pass "ranks_on_two_hosts ($(hosts "$j1"); Open MPI's binding report agrees)"
else fail ranks_on_two_hosts "ranks: $(hosts "$j1")"; grep 'MCW rank' "$log"; fi

# the gradient bytes of the job: per stage, parameters (the adam.m tensors of
# its last checkpoint, fp32 like the gradients) x steps; at 2 ranks each rank
# sends and receives at least that much
if msg=$($PY - "$R1" "${before[fmn1]}" "$(tx_rx fmn1)" "${before[fmn2]}" "$(tx_rx fmn2)" <<'PYEOF'
import glob, json, struct, sys
R = sys.argv[1]
grad = 0
parts = []
for stage in ("vae", "flow", "classifier"):
    f = sorted(glob.glob(f"{R}/ckpt/{stage}-*.safetensors"))[-1]
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
    step = int(h["__metadata__"]["step"])
    m = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items() if k.startswith("adam.m."))
    grad += m * step
    parts.append(f"{stage} {m / 1e6:.2f} MB x {step}")
ok = True
out = [f"gradient bytes {grad / 1e6:.1f} MB ({', '.join(parts)})"]
for node, b, a in (("fmn1", sys.argv[2], sys.argv[3]), ("fmn2", sys.argv[4], sys.argv[5])):
    tx = int(a.split()[0]) - int(b.split()[0])
    rx = int(a.split()[1]) - int(b.split()[1])
    out.append(f"{node} fm0 sent {tx / 1e6:.1f} MB, received {rx / 1e6:.1f} MB")
    ok &= tx >= grad and rx >= grad
print("; ".join(out))
sys.exit(0 if ok else 1)
PYEOF
); then pass "traffic_crossed_the_veth ($msg)"; else fail traffic_crossed_the_veth "$msg"; fi

if msg=$(flow_losses "$T/ref/metrics.jsonl" "$R1/metrics.jsonl"); then pass "losses_equal_1_rank ($msg)"
else fail losses_equal_1_rank "$msg"; fi

# who wrote into the run directory: a successful call that creates, writes,
# renames or removes a path under runs/tiny-<job>
if msg=$($PY - "$T/strace.$j1.0" "$T/strace.$j1.1" "runs/tiny-$j1" <<'PYEOF'
import re, sys
WRITE = re.compile(r"^\d+ +(openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|link|linkat|symlink|"
                   r"truncate|chmod|fchmodat|utimensat)\(([^\n]*)\) += (-?\d+)")
def writes(path, run):
    out = []
    for line in open(path):
        m = WRITE.match(line)
        if not m or run not in m.group(2) or m.group(3).startswith("-"):
            continue
        if m.group(1) in ("openat", "open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", m.group(2)):
            continue
        out.append(line.split(" ", 1)[1].strip()[:120])
    return out
w0, w1 = writes(sys.argv[1], sys.argv[3]), writes(sys.argv[2], sys.argv[3])
print(f"rank 0: {len(w0)} writing calls in the run directory, rank 1: {len(w1)}" + (f" (first: {w1[0]})" if w1 else ""))
sys.exit(0 if w0 and not w1 else 1)
PYEOF
); then pass "only_rank0_writes_run_dir ($msg)"; else fail only_rank0_writes_run_dir "$msg"; fi

# ---- 2. 2 nodes x 1 rank, srun --mpi=pmix --------------------------------------------
t0=$(date +%s)
FMTRAIN=$T/fmtrain-wrap FM_LAUNCHER=srun submit "$T/sbatch2.err" -N 2 --ntasks-per-node=1 slurm/train.sh \
    configs/tiny.yaml "${short[@]}" --set "run.stages=[vae,encode,flow]"
if [ $rc -eq 0 ] && grep -q "on fmn\[1-2\]: 2 ranks x 1 threads, srun" "$log" && [ "$(nhosts "$jid")" -eq 2 ] &&
    msg=$(flow_losses "$R1/metrics.jsonl" "$W/runs/tiny-$jid/metrics.jsonl"); then
    pass "sbatch_N2_srun (job $jid, $(secs "$t0"); $(hosts "$jid"); $msg against run 1)"
else
    fail sbatch_N2_srun "sbatch exit $rc, job '$jid', ranks: $(hosts "$jid") ${msg:-}"; cat "$T/sbatch2.err"; show_logs "$log"
fi

# ---- 3. 2 nodes x 2 ranks: one data copy per node ---------------------------------------
# shared_blocks: per node, the node-shared segments (/dev/shm/osc_sm.*) mapped by
# the node's fmtrain ranks: "node pid inode size_kB pss_kB" lines
shared_blocks() {
    local n p
    for n in $NODES; do
        for p in $(ip netns pids "$PREFIX-$n"); do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = fmtrain ] || continue
            awk -v n="$n" -v p="$p" '/^[0-9a-f]+-[0-9a-f]+ / { f = ($6 ~ /^\/dev\/shm\/osc_sm/) ? $5 : "" }
                f != "" && /^Size:/ { s = $2 } f != "" && /^Pss:/ { print n, p, f, s, $2 }' "/proc/$p/smaps" 2>/dev/null
        done
    done
}
t0=$(date +%s)
(FMTRAIN=$T/fmtrain-wrap submit "$T/sbatch3.err" -N 2 --ntasks-per-node=2 slurm/train.sh configs/tiny.yaml \
    "${short[@]}" --set "run.stages=[vae,encode,flow]" --set flow.steps=300 --set run.log_every=50 \
    --set flow.sample_every=0; echo "$jid $rc" >"$T/job3") &
waiter=$!
sampled=
for _ in $(seq 600); do # up to 120 s for the flow stage to run
    log=$(ls "$W"/slurm-fmtrain-*.out 2>/dev/null | sort -V | tail -n 1)
    if grep -q '\(^\|Z \)flow  step 50/' "$log" 2>/dev/null; then shared_blocks >"$T/blocks"; sampled=1; break; fi
    [ -s "$T/job3" ] && break
    sleep 0.2
done
wait "$waiter"
read -r jid rc <"$T/job3"
log=$W/slurm-fmtrain-$jid.out
mib=$(grep -o "data: 4 ranks on 2 nodes: [0-9.]* MiB in all" "$log" | grep -o '[0-9.]* MiB' | cut -d' ' -f1)
if [ "$rc" -eq 0 ] && [ "$(nhosts "$jid")" -eq 2 ] && [ -n "$sampled" ] &&
    msg=$($PY - "$T/blocks" "$(grep -o 'data: [0-9.]* MiB in a node-shared block' "$log" | head -n 1 | grep -o '[0-9.]*')" <<'PYEOF'
import collections, sys
data_kib = float(sys.argv[2]) * 1024
rows = [l.split() for l in open(sys.argv[1])]
# the dataset's block: a segment at least the size of the data
seg = collections.defaultdict(lambda: {"ranks": set(), "size": 0, "pss": 0})
for node, pid, inode, size, pss in rows:
    if int(size) >= data_kib:
        s = seg[(node, inode)]
        s["ranks"].add(pid); s["size"] = int(size); s["pss"] += int(pss)
out, ok = [], True
for node in sorted({n for n, _ in seg}):
    mine = {i: s for (n, i), s in seg.items() if n == node}
    for inode, s in mine.items():
        out.append(f"{node}: 1 block of {s['size'] / 1024:.1f} MiB (inode {inode}) mapped by {len(s['ranks'])} ranks, "
                   f"resident once: their Pss sum {s['pss'] / 1024:.1f} MiB")
    ok &= len(mine) == 1 and all(len(s["ranks"]) == 2 and s["pss"] <= 1.05 * s["size"] for s in mine.values())
nodes = {n for n, _ in seg}
ok &= len(nodes) == 2 and len({i for _, i in seg}) == 2
print("; ".join(out) + f"; {len(seg)} copies on {len(nodes)} nodes")
sys.exit(0 if ok else 1)
PYEOF
) && grep -q "data: 4 ranks on 2 nodes: .* (one copy per node), where a copy per rank would take" "$log"; then
    pass "one_data_copy_per_node (job $jid, $(secs "$t0"); $msg; fmtrain: $mib MiB in all on 2 nodes)"
else
    fail one_data_copy_per_node "sbatch exit $rc, job '$jid', ranks $(hosts "$jid"), sampled '${sampled}': ${msg:-}"
    cat "$T/blocks" 2>/dev/null; grep 'data:' "$log"; show_logs "$log"
fi

t0=$(date +%s)
FMTRAIN=$T/fmtrain-wrap FM_LAUNCHER=srun submit "$T/sbatch4.err" -N 2 --ntasks-per-node=2 slurm/train.sh \
    configs/tiny.yaml "${short[@]}" --set "run.stages=[vae,encode,flow]"
if [ $rc -eq 0 ] && grep -q "on fmn\[1-2\]: 4 ranks x 1 threads, srun" "$log" && [ "$(nhosts "$jid")" -eq 2 ] &&
    grep -q "data: 4 ranks on 2 nodes: .* (one copy per node)" "$log"; then
    pass "sbatch_N2x2_srun (job $jid, $(secs "$t0"); $(hosts "$jid"))"
else
    fail sbatch_N2x2_srun "sbatch exit $rc, job '$jid', ranks: $(hosts "$jid")"; cat "$T/sbatch4.err"; show_logs "$log"
fi

# ---- 3b. 2 nodes x 2 ranks: hierarchical gradient reduction vs the flat ring ------------------
# The same flow-only job (on the reference's latents) with dist.hierarchical on
# and off. The flat ring 0->1->2->3->0 sends 2(p-1)/p = 1.5 bucket sizes out
# of each node per bucket (one link leaves it); the hierarchical scheme sends
# each local rank's half of the bucket once around a 2-node ring: 2(N-1)/N x
# n/2 per rank, 1 bucket size per node. The veth bytes (both nodes, sent +
# received) of the hierarchical job are therefore 2/3 of the flat job's, up to
# the jobs' start-up and small collectives (checked within 0.05).
hier_job() { # hier_job NAME on|off: sets rc, jid, log, and bytes[NAME]
    local d=$T/hier-$1
    mkdir -p "$d/ckpt"
    cp "$T/ref/config.yaml" "$T/ref/latents.safetensors" "$d/"
    cp "$T/ref"/ckpt/vae-*.safetensors "$d/ckpt/"
    local b1 b2 a1 a2
    b1=$(tx_rx fmn1); b2=$(tx_rx fmn2)
    submit "$T/sbatch-hier-$1.err" -N 2 --ntasks-per-node=2 slurm/train.sh configs/tiny.yaml --out "$d" \
        "${short[@]}" --set "run.stages=[flow]" --set flow.sample_every=0 --set dist.hierarchical="$2"
    a1=$(tx_rx fmn1); a2=$(tx_rx fmn2)
    bytes[$1]=$(echo "$b1 $a1 $b2 $a2" | awk '{ print ($3 - $1) + ($4 - $2) + ($7 - $5) + ($8 - $6) }')
}
declare -A bytes
t0=$(date +%s)
hier_job on on; jon=$jid rcon=$rc logon=$log
hier_job off off; joff=$jid rcoff=$rc logoff=$log
sch() { grep -o "2 nodes x 2 ranks, dist.hierarchical: $2: gradients reduced by a $3" "$1" | head -n 1; }
if [ "$rcon" -eq 0 ] && [ "$rcoff" -eq 0 ] && [ -n "$(sch "$logon" on hierarchical)" ] &&
    [ -n "$(sch "$logoff" off flat)" ] &&
    lon=$(flow_losses "$T/ref/metrics.jsonl" "$T/hier-on/metrics.jsonl") &&
    loff=$(flow_losses "$T/ref/metrics.jsonl" "$T/hier-off/metrics.jsonl"); then
    pass "hierarchical_N2x2_losses (jobs $jon, $joff, $(secs "$t0"); hierarchical vs 1 rank: $lon; flat: $loff)"
else
    fail hierarchical_N2x2_losses "sbatch exits $rcon, $rcoff (jobs '$jon', '$joff'): ${lon:-} ${loff:-}"
    grep -h "dist.hierarchical" "$logon" "$logoff"; show_logs "$logon" "$logoff"
fi
if msg=$($PY - "${bytes[on]}" "${bytes[off]}" <<'PYEOF'
import sys
on, off = int(sys.argv[1]), int(sys.argv[2])
expect = (1 / 2) / (3 / 4)  # (N-1)/N over (p-1)/p, N = 2 nodes, p = 4 ranks
r = on / off if off else float("inf")
print(f"inter-node bytes: hierarchical {on / 1e6:.1f} MB, flat ring {off / 1e6:.1f} MB, ratio {r:.3f} "
      f"(expected {expect:.3f} +- 0.05)")
sys.exit(0 if abs(r - expect) <= 0.05 else 1)
PYEOF
); then pass "hierarchical_fewer_internode_bytes ($msg)"; else fail hierarchical_fewer_internode_bytes "$msg"; fi

# ---- 4. a node lost mid-run, then a resubmission resumes ----------------------------------
K=$T/killed
mkdir -p "$K/ckpt"
cp "$T/ref/config.yaml" "$T/ref/latents.safetensors" "$K/"
cp "$T/ref"/ckpt/vae-*.safetensors "$K/ckpt/"
long=(--set "run.stages=[flow]" --set flow.ckpt_every=20 --set flow.sample_every=0 --set run.log_every=10)
t0=$(date +%s)
(submit "$T/sbatch5.err" -N 2 --ntasks-per-node=1 --no-requeue slurm/train.sh configs/tiny.yaml --out "$K" \
    "${short[@]}" "${long[@]}" --set flow.steps=100000; echo "$jid $rc" >"$T/job5") &
waiter=$!
killed=
for _ in $(seq 600); do # up to 120 s for flow step 50 (checkpoints at 20 and 40)
    log=$(ls "$W"/slurm-fmtrain-*.out 2>/dev/null | sort -V | tail -n 1)
    if grep -q '\(^\|Z \)flow  step 50/' "$log" 2>/dev/null; then
        "$CL" kill-node "$C" fmn2 >"$T/kill.out" 2>&1 && killed=$(date +%s)
        break
    fi
    [ -s "$T/job5" ] && break
    sleep 0.2
done
for _ in $(seq 450); do [ -s "$T/job5" ] && break; sleep 0.2; done # 90 s at most
ended=$(date +%s)
if [ ! -s "$T/job5" ]; then
    on_head scancel "$(basename "$log" .out | sed 's/.*-//')" 2>/dev/null
    wait "$waiter"
    fail node_lost_ends_job "the job did not end within 90 s of the kill"; show_logs "$log"
elif [ -z "$killed" ]; then
    wait "$waiter"
    fail node_lost_ends_job "the job never reached flow step 50"; show_logs "$log"
else
    wait "$waiter"
    read -r jid rc <"$T/job5"
    # the batch script has ended; Slurm then cleans up the job on every node: on the
    # lost one only once it has marked the node down (SlurmdTimeout), until then the
    # job shows as COMPLETING
    gone=
    while [ $(($(date +%s) - killed)) -le 60 ]; do
        on_head squeue -h -j "$jid" -o %T 2>/dev/null | grep -q . || { gone=$(date +%s); break; }
        sleep 0.5
    done
    msg="job $jid: the batch script ended $((ended - killed)) s after the kill with exit $rc, the job left"
    if [ -n "$gone" ]; then msg+=" the queue after $((gone - killed)) s"; else msg+=" the queue not within 60 s"; fi
    if [ $((ended - killed)) -le 60 ] && [ "$rc" -ne 0 ] && [ -n "$gone" ]; then
        pass "node_lost_ends_job ($(head -n 1 "$T/kill.out" | cut -c 13-); $msg)"
    else fail node_lost_ends_job "$msg"; show_logs "$log"; fi
fi
grep -h 'lost\|ORTE\|error' "$log" 2>/dev/null | head -n 3 | sed 's/^/    /'

# node 2 comes back; the resubmission resumes from the newest checkpoint
"$CL" start-node "$C" fmn2 >"$T/start-node.out" 2>&1
for _ in $(seq 120); do
    [ "$(on_head sinfo -h -N -t idle -o %N 2>/dev/null | wc -l)" -eq 2 ] && break
    sleep 0.5
done
last=$(ls "$K"/ckpt/flow-*.safetensors 2>/dev/null | sort | tail -n 1 | grep -o '[0-9]*\.safetensors' | cut -d. -f1)
last=$((10#${last:-0}))
t0=$(date +%s)
submit "$T/sbatch6.err" -N 2 --ntasks-per-node=1 --no-requeue slurm/train.sh configs/tiny.yaml --out "$K" \
    "${short[@]}" "${long[@]}" --set flow.steps=$((last + 10))
if [ $rc -eq 0 ] && [ "$last" -gt 0 ] && grep -q "flow: resumed from .*flow-0*$last.safetensors (step $last)" "$log" &&
    grep -q "train.sh: .*done: $K" "$log" && [ -s "$K/ckpt/flow-$(printf %08d $((last + 10))).safetensors" ]; then
    pass "resubmission_resumes (job $jid, flow resumed at step $last, ran to $((last + 10)), $(secs "$t0"))"
else
    fail resubmission_resumes "sbatch exit $rc, newest checkpoint before: step $last"
    cat "$T/start-node.out" "$T/sbatch6.err"; on_head sinfo -N; show_logs "$log"
fi

# ---- 5. preemption across nodes: USR1 -> both nodes' ranks stop at a checkpoint -> requeue -> resume
P=$T/preempted
mkdir -p "$P/ckpt"
cp "$T/ref/config.yaml" "$T/ref/latents.safetensors" "$P/"
cp "$T/ref"/ckpt/vae-*.safetensors "$P/ckpt/"
t0=$(date +%s)
(submit "$T/sbatch7.err" -N 2 --ntasks-per-node=1 slurm/train.sh configs/tiny.yaml --out "$P" "${short[@]}" \
    "${long[@]}" --set flow.ckpt_every=100000 --set flow.steps=150; echo "$jid $rc" >"$T/job7") &
waiter=$!
sent=
for _ in $(seq 600); do # up to 120 s for flow step 30
    log=$(ls "$W"/slurm-fmtrain-*.out 2>/dev/null | sort -V | tail -n 1)
    if grep -q '\(^\|Z \)flow  step 30/' "$log" 2>/dev/null; then
        on_head scancel --signal=USR1 --batch "$(basename "$log" .out | sed 's/.*-//')" && sent=1
        break
    fi
    [ -s "$T/job7" ] && break
    sleep 0.2
done
for _ in $(seq 900); do [ -s "$T/job7" ] && break; sleep 0.2; done # 180 s at most
[ -s "$T/job7" ] || on_head scancel "$(basename "$log" .out | sed 's/.*-//')"
wait "$waiter"
read -r jid rc <"$T/job7" 2>/dev/null
S=$(sed -n 's/.*flow: stopped by signal 10 after step \([0-9]*\).*/\1/p' "$log" | head -n 1)
if [ -n "$sent" ] && [ "${rc:-x}" = 0 ] && [ -n "$S" ] && grep -q "requeueing job $jid" "$log" &&
    grep -q "job $jid (attempt 2) on fmn\[1-2\]" "$log" &&
    grep -q "flow: resumed from .*flow-0*$S.safetensors (step $S)" "$log" && grep -q "train.sh: .*done: $P" "$log"; then
    pass "preempted_across_nodes_resumes (job $jid: checkpoint after flow step $S, exit 75, requeued, resumed on 2 nodes, done; $(secs "$t0"))"
else
    fail preempted_across_nodes_resumes "USR1 sent: ${sent:-no}, sbatch exit ${rc:-none}, stopped after step '${S}'"
    show_logs "$log"
fi

# ---- 6. nothing left behind ---------------------------------------------------------------
pids=$(cat "$C"/run/*.pid "$C/munge/munged.pid" 2>/dev/null)
"$CL" stop "$C" >"$T/stop.out" 2>&1
left=
for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left daemon $p"; done
for ns in $(ip netns list | cut -d' ' -f1); do case $ns in "$PREFIX"-*) left="$left namespace $ns" ;; esac; done
ip -o link show | grep -q ' fm0[@:]\| h[0-9]*@' && left="$left veth in the machine's namespace"
[ -e "$C/state" ] || [ -e "$C/spool" ] || [ -e "$C/munge" ] && left="$left state directories"
if [ -z "$left" ]; then pass "stop_leaves_nothing ($(echo "$pids" | wc -w) daemons stopped, namespaces $PREFIX-* deleted)"
else fail stop_leaves_nothing "left:$left"; cat "$T/stop.out"; fi

finish
