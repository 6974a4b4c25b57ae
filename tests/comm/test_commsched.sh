#!/usr/bin/env bash
# test_commsched.sh - dist.comm_sched end to end: configs/scaling.yaml's flow
# on 2 ranks x 1 thread, while a watcher reads /proc/PID/task/TID/sched of
# every thread named fmtrain-comm of this run's processes.
#   1. auto: rank 0 logs the policy once, and both ranks' communication
#      threads carry it (as root rt: SCHED_FIFO; else slice on Linux >= 6.12:
#      SCHED_OTHER with se.slice 100000 ns).
#   1b. auto with one bucket (flow.bucket_mb larger than the gradient): none,
#      logged as such, both threads SCHED_OTHER (nothing to overlap).
#   2. slice (Linux >= 6.12): both communication threads have the 100 us slice.
#   3. rt requested by a user who may not have it (nobody, RLIMIT_RTPRIO 0):
#      every rank stops with exit 2 and the error names dist.comm_sched and
#      what to do; no rank hangs. --dry-run on 2 ranks stops the same way
#      before anything is created; on 1 rank (no communication thread) it
#      notes it and succeeds.
#   4. --dry-run's plan names the policy auto put in force in 1.
# Prints PASS/FAIL/SKIP comm/commsched/<name>.
source "$(dirname "$0")/../lib.sh" comm commsched/
export OMP_NUM_THREADS=1
SCALING=$ROOT/configs/scaling.yaml
ARGS=(--set flow.steps=30 --set flow.batch_size=8 --set flow.bucket_mb=1 --set run.log_every=10)
[ -x "$FMTRAIN" ] || { fail build "no fmtrain binary at $FMTRAIN (run make)"; finish; exit 1; }

# watch OUT: until killed, one line "PID policy=P slice=NS" per fmtrain-comm
# thread of a process whose command line holds $T, every 0.1 s
watch_comm() {
  local t pid
  while :; do
    for t in /proc/[0-9]*/task/[0-9]*; do
      [ "$(cat "$t/comm" 2>/dev/null)" = fmtrain-comm ] || continue
      pid=${t#/proc/}; pid=${pid%%/*}
      grep -qa -- "$T" "/proc/$pid/cmdline" 2>/dev/null || continue
      echo "$pid policy=$(awk '$1 == "policy" {print $3}' "$t/sched") slice=$(awk '$1 == "se.slice" {print $3}' "$t/sched")"
    done
    sleep 0.1
  done >"$1" 2>/dev/null
}

# watched NAME ARGS...: run NAME on 2 ranks with the watcher; then
# $T/NAME.threads holds what it saw, one line per communication thread
watched() {
  local name=$1 w rc; shift
  watch_comm "$T/$name.seen" & w=$!
  run "$name" 2 "$SCALING" --out "$T/$name" "${ARGS[@]}" "$@"; rc=$?
  kill "$w"; wait "$w" 2>/dev/null
  sort -u "$T/$name.seen" | grep -v "policy= " >"$T/$name.threads"
  return $rc
}

# threads_are NAME POLICY SLICE: both ranks' communication threads were seen, all with
# that policy number and (unless SLICE is -) that slice
threads_are() {
  $PY - "$T/$1.threads" "$2" "$3" <<'PYEOF'
import sys
seen = {}
for line in open(sys.argv[1]):
    pid, pol, sl = line.split()
    seen.setdefault(pid, set()).add((pol.split("=")[1], sl.split("=")[1]))
want = (sys.argv[2], sys.argv[3])
ok = len(seen) == 2 and all(all(p == want[0] and (want[1] == "-" or s == want[1]) for p, s in v) for v in seen.values())
print("%d ranks' communication threads: %s" % (len(seen), "; ".join("pid %s %s" % (k, sorted(v)) for k, v in seen.items())))
sys.exit(0 if ok else 1)
PYEOF
}

release=$(uname -r)
new_kernel=0
[ "$(printf '%s\n6.12\n' "${release%%-*}" | sort -V | head -1)" = 6.12 ] && new_kernel=1

# --- 1. auto ------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then want=rt; elif [ $new_kernel = 1 ]; then want=slice; else want=; fi
if watched auto; then
  lines=$(grep -c "dist.comm_sched: auto" "$T/auto.err")
  policy=$(grep -o "dist.comm_sched: auto: [a-z]*" "$T/auto.err" | head -1 | awk '{print $3}')
  if [ "$lines" != 1 ]; then
    fail auto_logged_once "$lines lines 'dist.comm_sched: auto' (want 1, from rank 0)"; show "$T/auto.err" 5
  elif [ -n "$want" ] && [ "$policy" != "$want" ]; then
    fail auto_picks_$want "auto chose '$policy' (uid $(id -u), Linux $release)"; grep comm_sched "$T/auto.err"
  else
    pass "auto_logged_once ($(grep -o 'dist.comm_sched: .*' "$T/auto.err" | cut -c1-110))"
    case $policy in
      slice) expect=(0 100000) ;; rt) expect=(1 -) ;; *) expect=(0 -) ;;
    esac
    if msg=$(threads_are auto "${expect[@]}"); then pass "auto_in_force ($policy: $msg)"
    else fail auto_in_force "$policy: $msg"; fi
  fi
fi

# --- 1b. auto, one bucket -------------------------------------------------------
if watched onebucket --set flow.bucket_mb=64; then
  if ! grep -q "dist.comm_sched: auto: none (one gradient bucket" "$T/onebucket.err"; then
    fail auto_one_bucket_none "no 'auto: none (one gradient bucket' line"; grep comm_sched "$T/onebucket.err"
  elif msg=$(threads_are onebucket 0 -); then pass "auto_one_bucket_none ($msg)"
  else fail auto_one_bucket_none "$msg"; fi
fi

# --- 2. slice -------------------------------------------------------------------
if [ $new_kernel = 0 ]; then
  skip_hw slice_in_force "Linux $release has no custom EEVDF slices (6.12 or newer)"
elif watched slice --set dist.comm_sched=slice; then
  if ! grep -q "dist.comm_sched: slice: the communication thread is SCHED_OTHER" "$T/slice.err"; then
    fail slice_logged "no slice line"; show "$T/slice.err" 5
  elif msg=$(threads_are slice 0 100000); then pass "slice_in_force ($msg)"
  else fail slice_in_force "$msg"; fi
fi

# --- 3. rt refused --------------------------------------------------------------
# as nobody (root drops to it) or as this user when it may not use SCHED_FIFO
deny=()
if [ "$(id -u)" -eq 0 ]; then
  if command -v setpriv >/dev/null; then deny=(setpriv --reuid=65534 --regid=65534 --clear-groups --); fi
elif [ "$(ulimit -r)" = 0 ]; then deny=(env); fi
if [ ${#deny[@]} -eq 0 ]; then
  skip rt_refused "needs root with setpriv (util-linux), or a user with RLIMIT_RTPRIO 0"
else
  chmod 755 "$T"; mkdir -p "$T/deny" "$T/home"; chmod 777 "$T/deny" "$T/home"
  (ulimit -r 0; cd "$T/deny" && HOME=$T/home timeout 120 "${deny[@]}" mpirun --bind-to none --oversubscribe -np 2 \
     -x OMP_NUM_THREADS "$FMTRAIN" "$SCALING" --out "$T/deny/run" "${ARGS[@]}" --set dist.comm_sched=rt) \
    >"$T/deny.out" 2>"$T/deny.err"
  rc=$?
  n=$(grep -c "dist.comm_sched: rt is not available: SCHED_FIFO not permitted.*RLIMIT_RTPRIO.*set dist.comm_sched: auto" "$T/deny.err")
  if [ $rc -eq 2 ] && [ "$n" -ge 1 ]; then
    pass "rt_refused (exit 2: $(grep -o 'dist.comm_sched: rt is not available[^;]*' "$T/deny.err" | head -1))"
  else
    fail rt_refused "exit $rc (want 2), $n lines of the error"; show "$T/deny.err" 6
  fi
  # --dry-run says so too, before anything runs (2 ranks); on one rank it only notes it
  (ulimit -r 0; cd "$T/deny" && HOME=$T/home timeout 120 "${deny[@]}" mpirun --bind-to none --oversubscribe -np 2 \
     -x OMP_NUM_THREADS "$FMTRAIN" "$SCALING" --out "$T/deny/dry" "${ARGS[@]}" --set dist.comm_sched=rt --dry-run) \
    >"$T/dry.out" 2>"$T/dry.err"
  rc=$?
  (ulimit -r 0; cd "$T/deny" && HOME=$T/home timeout 120 "${deny[@]}" "$FMTRAIN" "$SCALING" --out "$T/deny/dry1" \
     "${ARGS[@]}" --set dist.comm_sched=rt --dry-run) >"$T/dry1.out" 2>"$T/dry1.err"
  rc1=$?
  if [ $rc -eq 2 ] && grep -q "dist.comm_sched: rt is not available: SCHED_FIFO not permitted" "$T/dry.err" &&
     [ ! -e "$T/deny/dry" ] && [ $rc1 -eq 0 ] && grep -q "^# dist.comm_sched: .*rt is not available.*(unused on one rank)" \
     "$T/dry1.out"; then
    pass "rt_refused_dry_run (2 ranks: exit 2 before the run; 1 rank: noted)"
  else
    fail rt_refused_dry_run "exit $rc / $rc1 (want 2 / 0)"; show "$T/dry.err" 4; show "$T/dry1.out" 4
  fi
fi

# --- 4. --dry-run names the policy auto puts in force here -----------------------------
if line=$("$FMTRAIN" "$SCALING" "${ARGS[@]}" --dry-run 2>/dev/null | grep '^# dist.comm_sched: auto: ') &&
   case "$line" in *"auto: $policy:"*) true ;; *) false ;; esac; then
  pass "auto_in_dry_run (${line:2:60})"
else
  fail auto_in_dry_run "got '$line', the run put '$policy' in force"
fi

finish
