#!/usr/bin/env bash
# test_shared.sh - one data copy per node (src/comm/shared.c, issue 14 item 4).
#   1. tiny.yaml (vae -> encode -> flow) on 1 rank, on 2 ranks of one node
#      (dataset and latents in node-shared blocks) and on 2 ranks as two
#      nodes of one rank (FMTRAIN_RANKS_PER_NODE=1: private copies, the old
#      path): the "data:" lines say who holds what; the 2-rank losses equal
#      the private-copy 2-rank run's bit for bit and the 1-rank run's within
#      1e-4 relative (test_multirank's bound: 1 and 2 ranks sum gradients in
#      another order).
#   2. A resume at 2 ranks from the step-10 flow checkpoint: only rank 0
#      opens the checkpoint, the vae checkpoint and the latents (strace -e
#      openat per rank), and the losses of steps 11..20 and the step-20
#      checkpoint equal the straight run's.
#   3. Errors: a corrupt data file on one node of 2 ranks, and a missing data
#      directory on the second of two nodes of 2 ranks: every rank exits 3,
#      the message names the file, nothing is created.
#   4. The unit test test_shared under 2 ranks and under 4 ranks as 2 nodes.
#   5. Memory (configs/ldm.yaml's full data, 60,000 + 10,000 images): 2 ranks
#      of one node stopped right after loading (gdb breakpoint at
#      fm_pipeline_run): the sum of their Pss <= 1.1 x one rank's Rss; the
#      same with private copies for comparison (printed).
source "$(dirname "$0")/../lib.sh" comm shared/
export OMP_NUM_THREADS=1

SETS=(--set "run.stages=[vae,encode,flow]" --set vae.steps=10 --set flow.steps=20 --set run.log_every=1
      --set data.train_limit=512 --set vae.batch_size=32 --set flow.batch_size=32 --set encode.batch_size=128
      --set vae.ckpt_every=10 --set flow.ckpt_every=10 --set flow.sample_every=0 --set run.ckpt_keep=5)

# losses RUN: "stage step loss" lines of RUN/metrics.jsonl
losses() { grep -o '"stage":"[a-z]*","step":[0-9]*,"loss":[^,]*' "$1/metrics.jsonl"; }

# --- 1. who holds the data; losses ----------------------------------------------
run np1 1 "$TINY" --out "$T/np1" "${SETS[@]}" || { finish; exit 1; }
run np2 2 "$TINY" --out "$T/np2" "${SETS[@]}" || { finish; exit 1; }
FMTRAIN_RANKS_PER_NODE=1 run np2priv 2 "$TINY" --out "$T/np2priv" "${SETS[@]}" ||
  { finish; exit 1; }

if grep -q "\(^\|Z \)fmtrain: data: [0-9.]* MiB private (the only rank of its node)" "$T/np1.err"; then
  pass "np1_private ($(grep -o 'data: .*' "$T/np1.err" | head -1))"
else fail np1_private "no 'data: ... private' line"; show "$T/np1.err"; fi

mib=$(grep -o "data: [0-9.]* MiB private" "$T/np1.err" | grep -o "[0-9.]*" | head -1)
if grep -q "\(^\|Z \)fmtrain: data: $mib MiB in a node-shared block (node rank 0 of 2 holds it), 0.0 MiB private" "$T/np2.err" &&
  grep -q "\(^\|Z \)fmtrain: data: rank 1: $mib MiB in a node-shared block (node rank 1 of 2 maps it), 0.0 MiB private" "$T/np2.err" &&
  grep -q "\(^\|Z \)fmtrain: data: 2 ranks on 1 node: $mib MiB in all (one copy per node)" "$T/np2.err"; then
  pass "np2_one_copy ($(grep -o 'data: 2 ranks.*' "$T/np2.err"))"
else fail np2_one_copy "the data lines of 2 ranks on one node are not as expected"; grep "data:" "$T/np2.err"; fi

if grep -q "\(^\|Z \)fmtrain: data: rank 1: $mib MiB private (the only rank of its node)" "$T/np2priv.err" &&
  grep -q "2 ranks on 2 nodes" "$T/np2priv.err"; then pass np2priv_private_copies
else fail np2priv_private_copies "the private-copy run's data lines"; grep "data:" "$T/np2priv.err"; fi

if [ "$(losses "$T/np2" | wc -l)" -eq 30 ] && cmp -s <(losses "$T/np2") <(losses "$T/np2priv"); then
  pass "losses_shared_equal_private (30 losses of vae and flow, bit for bit)"
else fail losses_shared_equal_private "the shared and private 2-rank losses differ"; fi
if msg=$($PY - "$T/np1/metrics.jsonl" "$T/np2/metrics.jsonl" <<'PYEOF'
import json, sys
def load(p):
    return {(j["stage"], j["step"]): j["loss"] for j in map(json.loads, open(p)) if "loss" in j}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b) and len(a) == 30, f"steps {len(a)} vs {len(b)}"
worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a)
same = sum(a[k] == b[k] for k in a)
print(f"max relative difference {worst:.2e}, {same} of {len(a)} equal")
sys.exit(0 if worst <= 1e-4 else 1)
PYEOF
); then pass "losses_np2_vs_np1 ($msg)"; else fail losses_np2_vs_np1 "$msg"; fi

# --- 2. a 2-rank resume reads the checkpoint on rank 0 only ----------------------
R=$T/resume
mkdir -p "$R/ckpt"
cp "$T/np2/config.yaml" "$T/np2/latents.safetensors" "$R/"
cp "$T/np2/ckpt/vae-00000010.safetensors" "$T/np2/ckpt/flow-00000010.safetensors" "$R/ckpt/"
# (LeakSanitizer cannot run under ptrace: a SAN=1 build's leak check is off for the traced runs)
if ! command -v strace >/dev/null; then skip resume_rank0_reads "strace is not installed"
else
  mkdir -p "$T/cwd-resume"
  (cd "$T/cwd-resume" && MPI_TIMEOUT=$RUN_TIMEOUT mpi 2 sh -c \
    'export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"; exec strace -f -e trace=openat -o "$0/openat.$OMPI_COMM_WORLD_RANK" "$@"' "$T" \
    "$FMTRAIN" "$TINY" --out "$R" "${SETS[@]}") >"$T/resume.out" 2>"$T/resume.err"
  rc=$?
  r0=$(grep -c "\"$R/\(ckpt/[a-z]*-[0-9]*.safetensors\|latents.safetensors\)\"" "$T/openat.0")
  r1=$(grep "\"$R/\(ckpt/[a-z]*-[0-9]*.safetensors\|latents.safetensors\)\"" "$T/openat.1" | head -3)
  if [ $rc -ne 0 ]; then fail resume_rank0_reads "exit $rc"; show "$T/resume.err"
  elif ! grep -q "resumed from $R/ckpt/flow-00000010.safetensors (step 10); read by rank 0 and broadcast" "$T/resume.err"; then
    fail resume_rank0_reads "no 'resumed from ... (step 10)' line"; show "$T/resume.err"
  elif [ "$r0" -lt 2 ] || [ -n "$r1" ]; then
    fail resume_rank0_reads "rank 0 opened $r0 checkpoint/latents files, rank 1: ${r1:-none}"
  elif ! cmp -s <(losses "$R" | grep '"flow"') <(losses "$T/np2" | grep '"flow"' | tail -n 10); then
    fail resume_rank0_reads "the losses of steps 11..20 differ from the straight run's"
  elif ! same=$($PY "$ROOT/tests/fault/ckpt.py" same "$R/ckpt/flow-00000020.safetensors" \
    "$T/np2/ckpt/flow-00000020.safetensors"); then
    fail resume_rank0_reads "the step-20 checkpoint differs from the straight run's: $same"
  else
    pass "resume_rank0_reads (rank 0 opened $r0 checkpoint/latents files, rank 1 none; losses 11..20 equal; flow-20: $same)"
  fi
fi

# --- 3. data errors reach every rank ---------------------------------------------
# exits NAME NP MPIRUN-ARGS...: each rank's exit status in $T/NAME.exits ("rank R exit S")
exits() {
  local name=$1 np=$2; shift 2
  mkdir -p "$T/cwd-$name"
  (cd "$T/cwd-$name" && MPI_TIMEOUT=120 mpi "$np" "$@") >"$T/$name.out" 2>"$T/$name.err"
}
rank_exit() { echo '"$@"; echo "rank $OMPI_COMM_WORLD_RANK exit $?" >>"$0"'; }

BAD=$T/baddata
mkdir -p "$BAD"
cp /usr/share/datasets/fashion-mnist/*.gz "$BAD/"
truncate -s 100000 "$BAD/train-images-idx3-ubyte.gz"
exits corrupt 2 sh -c "$(rank_exit)" "$T/corrupt.exits" "$FMTRAIN" "$TINY" --out "$T/corrupt-run" "${SETS[@]}" \
  --set data.dir="$BAD"
want="$BAD/train-images-idx3-ubyte.gz: truncated gzip stream"
if [ "$(sort "$T/corrupt.exits" 2>/dev/null | tr '\n' ' ')" != "rank 0 exit 3 rank 1 exit 3 " ]; then
  fail corrupt_file_one_node "exits: $(tr '\n' ' ' <"$T/corrupt.exits" 2>/dev/null)"; show "$T/corrupt.err"
elif [ "$(grep -c "error: $want" "$T/corrupt.err")" -ne 1 ] || [ -e "$T/corrupt-run" ]; then
  fail corrupt_file_one_node "not one error naming the file, or the run directory was created"; show "$T/corrupt.err"
else pass "corrupt_file_one_node (both ranks exit 3: $(grep -o "error: .*" "$T/corrupt.err" | cut -c1-110))"; fi

# ranks 0-1 (node 0) have the data, ranks 2-3 (node 1) point to a missing directory
FMTRAIN_RANKS_PER_NODE=2 exits node1 2 sh -c "$(rank_exit)" "$T/node1.exits" "$FMTRAIN" "$TINY" \
  --out "$T/node1-run" "${SETS[@]}" : -np 2 sh -c "$(rank_exit)" "$T/node1.exits" \
  "$FMTRAIN" "$TINY" --out "$T/node1-run" "${SETS[@]}" --set data.dir="$T/missing"
if [ "$(sort "$T/node1.exits" 2>/dev/null | tr '\n' ' ')" != "rank 0 exit 3 rank 1 exit 3 rank 2 exit 3 rank 3 exit 3 " ]; then
  fail missing_data_second_node "exits: $(tr '\n' ' ' <"$T/node1.exits" 2>/dev/null)"; show "$T/node1.err"
elif [ "$(grep -c "error: $T/missing: cannot open data directory" "$T/node1.err")" -ne 1 ] || [ -e "$T/node1-run" ]; then
  fail missing_data_second_node "not one error naming the directory, or the run directory was created"; show "$T/node1.err"
else pass "missing_data_second_node (4 ranks exit 3, rank 0 reports node 1's error)"; fi

# --- 4. the unit test under mpirun ------------------------------------------------
UT=$BUILD/tests/comm/test_shared
if [ ! -x "$UT" ]; then fail unit_mpi "$UT not built"
else
  for np in 2 4; do
    if [ "$np" -eq 4 ]; then
      FMTRAIN_RANKS_PER_NODE=2 MPI_TIMEOUT=120 mpi "$np" "$UT" >"$T/ut$np.out" 2>&1; rc=$?; what=" (2 nodes of 2)"
    else
      MPI_TIMEOUT=120 mpi "$np" "$UT" >"$T/ut$np.out" 2>&1; rc=$?; what=""
    fi
    if [ $rc -eq 0 ] && [ "$(grep -c '^PASS comm/shared/' "$T/ut$np.out")" -eq $((5 * np)) ]; then
      pass "unit_mpi_np$np$what"
    else fail "unit_mpi_np$np" "exit $rc"; grep -v '^PASS' "$T/ut$np.out" | sed 's/^/    /' | head -10; fi
  done
fi

# --- 5. memory of 2 ranks on one node, full data ------------------------------------
# stopped NAME [ENV]: 2 ranks of ldm.yaml stopped at fm_pipeline_run (right after
# loading); prints "pss0 pss1 rss0 rss1" in KiB
stopped() {
  local name=$1 i pids=()
  mkdir -p "$T/cwd-$name"
  (cd "$T/cwd-$name" && export FMTRAIN_RANKS_PER_NODE=${2:-} && MPI_TIMEOUT=300 mpi 2 sh -c \
    'd=$0 n=$1; shift; echo $$ >"$d/$n.pid.$OMPI_COMM_WORLD_RANK"; export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"; exec gdb -q -batch -ex "break fm_pipeline_run" \
       -ex run -ex "shell touch $d/$n.stopped.$OMPI_COMM_WORLD_RANK; while [ ! -e $d/$n.go ]; do sleep 0.2; done" \
       -ex kill --args "$@"' "$T" "$name" "$FMTRAIN" "$ROOT/configs/ldm.yaml" --out "$T/$name-run" \
    --set "run.stages=[vae]" --set vae.steps=1 --set vae.warmup=0) >"$T/$name.out" 2>"$T/$name.err" &
  local job=$!
  for ((i = 0; i < 1200; i++)); do
    [ -e "$T/$name.stopped.0" ] && [ -e "$T/$name.stopped.1" ] && break
    kill -0 $job 2>/dev/null || break
    sleep 0.1
  done
  local out=""
  if [ -e "$T/$name.stopped.0" ] && [ -e "$T/$name.stopped.1" ]; then
    for r in 0 1; do # the rank: the child of gdb (the process exec'd from the sh)
      pids[$r]=$(ps -o pid= --ppid "$(cat "$T/$name.pid.$r")" | tr -d ' ' | head -1)
    done
    for key in Pss Rss; do
      for r in 0 1; do
        out+="$(awk -v k="$key:" '$1 == k { print $2 }' "/proc/${pids[$r]}/smaps_rollup") "
      done
    done
  fi
  touch "$T/$name.go"
  wait $job
  echo "$out"
}
if ! command -v gdb >/dev/null; then skip memory_per_node "gdb is not installed"
else
  read -r p0 p1 r0 r1 <<<"$(stopped shm)"
  read -r q0 q1 s0 s1 <<<"$(stopped priv 1)"
  if [ -z "${p0:-}" ] || [ -z "${q0:-}" ]; then fail memory_per_node "the ranks did not stop after loading"
    show "$T/shm.err"; show "$T/priv.err"
  else
    line=$(grep -o "data: [0-9.]* MiB in a node-shared.*" "$T/shm.err" | head -1)
    fig="shared: Pss $((p0 / 1024)) + $((p1 / 1024)) = $(((p0 + p1) / 1024)) MiB, Rss $((r0 / 1024)) / $((r1 / 1024)) MiB;"
    fig+=" private copies: Pss $((q0 / 1024)) + $((q1 / 1024)) = $(((q0 + q1) / 1024)) MiB, Rss $((s0 / 1024)) / $((s1 / 1024)) MiB"
    rmax=$((r0 > r1 ? r0 : r1))
    if [ $((10 * (p0 + p1))) -le $((11 * rmax)) ]; then pass "memory_per_node ($fig; $line)"
    else fail memory_per_node "sum of Pss above 1.1 x one rank's Rss: $fig"; fi
  fi
fi

finish
