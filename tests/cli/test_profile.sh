#!/usr/bin/env bash
# test_profile.sh - the per-layer profile of training steps (run.profile_steps,
# `fmtrain --profile[=N]`) on configs/tiny.yaml:
#   1. --profile sets run.profile_steps=20, --profile=N sets N, a bad N is a
#      usage error (exit 2); the resolved config shows the key (--dry-run).
#   2. vae -> encode -> flow with --profile=5 on 1 rank: the stderr tables,
#      profile-flow.txt and profile-flow.json exist; the JSON has the window
#      (first step 3 = after 3 warm-up steps, 5 steps), rows for conv forward and
#      backward, attention, the optimiser and the allreduce wait, shares that
#      sum to at most 1 (and cover most of the step); metrics.jsonl and the final
#      flow checkpoint are still written.
#   3. Profiling does not change numerics: the flow losses of the same run
#      without profiling are identical, on 1 rank and under `mpirun -np 2`
#      (where the profile is written once, by rank 0, with world_size 2).
#   4. After a resume the window starts 3 steps after the resumed step, and
#      the losses still match the uninterrupted run.
# Prints PASS/FAIL cli/profile_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" cli profile_
RUN_TIMEOUT=600

# every flow run: 20 steps, a metrics line per step, no sample grids
FLOW=(--set flow.steps=20 --set run.log_every=1 --set flow.ckpt_every=10 --set flow.sample_every=0)

# flow_dir NAME: a run directory holding the vae checkpoints and latents of run "main"
flow_dir() {
  mkdir -p "$T/$1/ckpt"
  cp "$T/main/latents.safetensors" "$T/$1/"
  cp "$T/main"/ckpt/vae-*.safetensors "$T/$1/ckpt/"
}

# check_profile NAME FIRST STEPS WORLD: the profile files of run NAME
check_profile() {
  $PY - "$T/$1" "$2" "$3" "$4" <<'PYEOF'
import json, sys
R, first, steps, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
txt = open(f"{R}/profile-flow.txt").read()
assert "by kind" in txt and "by layer" in txt and "sum of the rows" in txt, txt[:300]
j = json.load(open(f"{R}/profile-flow.json"))
assert j["stage"] == "flow" and j["first_step"] == first and j["steps"] == steps, j
assert j["world_size"] == world and j["warmup"] == 3 and j["dropped_calls"] == 0, j
kinds = {r["name"]: r for r in j["by_kind"]}
entries = {r["name"]: r for r in j["by_entry"]}
for k in ("conv fwd", "conv bwd", "attention fwd", "attention bwd", "groupnorm fwd", "adamw", "allreduce",
          "allgather", "clip", "ema", "data", "cfm", "loss"):
    assert k in kinds, f"no kind row {k}: {sorted(kinds)}"
for k in ("step.adamw", "step.allreduce", "step.ema", "step.clip", "step.data", "step.cfm_batch", "step.mse",
          "mid.1.attn fwd", "mid.1.attn bwd"):
    assert k in entries, f"no row {k}"
conv = kinds["conv fwd"]
assert conv["gflops"] and conv["gflops"] > 0 and conv["calls"] > 0, conv
assert entries["step.adamw"]["calls"] == 1, entries["step.adamw"]
for table in ("by_kind", "by_entry"):
    share = sum(r["share"] for r in j[table])
    # the rows are disjoint parts of the measured steps: at most the whole
    # (float sums), and they cover most of it
    assert 0.6 <= share <= 1.0001, f"{table}: shares sum to {share}"
ms = sum(r["ms_per_step"] for r in j["by_entry"])
assert abs(ms - j["accounted_ms"]) <= 1e-3 * ms and j["accounted_ms"] <= j["step_ms"] * 1.0001, (ms, j)
print(f"steps {first}..{first + steps - 1}, {j['step_ms']:.1f} ms/step, {len(j['by_entry'])} rows, "
      f"{100 * j['accounted_ms'] / j['step_ms']:.1f}% accounted, conv fwd {conv['gflops']:.1f} GFLOP/s")
PYEOF
}

# same_losses A B [FROM]: the flow losses of runs A and B are identical (steps >= FROM)
same_losses() {
  $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" "${3:-1}" <<'PYEOF'
import json, sys
def load(p):
    return {j["step"]: j["loss"] for j in map(json.loads, open(p)) if j["stage"] == "flow" and j["step"] >= int(sys.argv[3])}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a and sorted(a) == sorted(b), (sorted(a), sorted(b))
diff = [s for s in a if a[s] != b[s]]
assert not diff, f"losses differ at steps {diff[:5]}: {[(a[s], b[s]) for s in diff[:3]]}"
print(f"{len(a)} steps identical")
PYEOF
}

# --- 1. the option ------------------------------------------------------------------
name=option
if "$FMTRAIN" "$TINY" --out "$T/dry" --profile --dry-run >"$T/dry1.out" 2>&1 &&
   grep -q '^  profile_steps: 20$' "$T/dry1.out" &&
   "$FMTRAIN" "$TINY" --out "$T/dry" --profile=7 --dry-run >"$T/dry2.out" 2>&1 &&
   grep -q '^  profile_steps: 7$' "$T/dry2.out" &&
   "$FMTRAIN" "$TINY" --out "$T/dry" --dry-run >"$T/dry3.out" 2>&1 && grep -q '^  profile_steps: 0$' "$T/dry3.out" &&
   "$FMTRAIN" --help | grep -q -- '--profile\[=N\]'; then
  "$FMTRAIN" "$TINY" --out "$T/dry" --profile=x --dry-run >"$T/dry4.out" 2>"$T/dry4.err"; rc=$?
  "$FMTRAIN" "$TINY" --out "$T/dry" --profile 7 --dry-run >"$T/dry5.out" 2>"$T/dry5.err"; rc5=$?
  if [ $rc -eq 2 ] && grep -q -- "--profile=N" "$T/dry4.err" && [ $rc5 -eq 2 ] && grep -q -- "--profile=7" "$T/dry5.err" &&
     [ ! -e "$T/dry" ]; then pass $name
  else fail $name "--profile=x / --profile 7: exit $rc / $rc5, expected 2 and a message"
    cat "$T/dry4.err" "$T/dry5.err" | sed 's/^/    /' | head -4; fi
else
  fail $name "--profile / --profile=7 do not set run.profile_steps to 20 / 7, or --help lacks --profile[=N]"
fi

# --- 2. the whole pipeline with --profile=5 ---------------------------------------------
run main 1 "$TINY" --out "$T/main" --set "run.stages=[vae,encode,flow]" --profile=5 "${FLOW[@]}" ||
  { finish; exit 1; }
name=files
if msg=$(check_profile main 3 5 1 2>&1) && grep -q 'by layer (top 40)' "$T/main.err" &&
   grep -q 'wrote .*profile-flow' "$T/main.err"; then pass "$name ($msg)"
else fail $name "$msg"; fi
name=run_outputs
if [ -s "$T/main/ckpt/flow-00000020.safetensors" ] && [ "$(grep -c '"stage":"flow"' "$T/main/metrics.jsonl")" -eq 20 ] &&
   ! ls "$T/main" | grep -q 'tmp'; then pass $name
else fail $name "no final flow checkpoint, not 20 flow metrics lines, or a stray temporary file"; ls "$T/main" | sed 's/^/    /'; fi

# --- 3. numerics unchanged: 1 rank, and 2 ranks with and without profiling ----------------
flow_dir plain1
run plain1 1 "$TINY" --out "$T/plain1" --set "run.stages=[flow]" "${FLOW[@]}" &&
  if msg=$(same_losses main plain1 2>&1) && [ ! -e "$T/plain1/profile-flow.txt" ]; then pass "same_losses_np1 ($msg)"
  else fail same_losses_np1 "$msg"; fi
flow_dir prof2; flow_dir plain2
if run prof2 2 "$TINY" --out "$T/prof2" --set "run.stages=[flow]" "${FLOW[@]}" --profile=5 &&
   run plain2 2 "$TINY" --out "$T/plain2" --set "run.stages=[flow]" "${FLOW[@]}"; then
  if msg=$(same_losses prof2 plain2 2>&1); then pass "same_losses_np2 ($msg)"; else fail same_losses_np2 "$msg"; fi
  if msg=$(check_profile prof2 3 5 2 2>&1) && [ "$(grep -c '^by layer' "$T/prof2.err")" -eq 1 ]; then
    pass "files_np2 ($msg)"
  else fail files_np2 "${msg:-the report is not printed exactly once}"; fi
fi

# --- 4. after a resume: the window starts 3 steps after the resumed step ----------------
cp -r "$T/plain1" "$T/resume"
rm -f "$T/resume/ckpt/flow-00000020.safetensors" "$T/resume/metrics.jsonl"
if run resume 1 "$TINY" --out "$T/resume" --set "run.stages=[flow]" "${FLOW[@]}" --profile=4; then
  if msg=$(check_profile resume 13 4 1 2>&1) && msg2=$(same_losses plain1 resume 11 2>&1); then
    pass "after_resume ($msg; $msg2)"
  else fail after_resume "$msg ${msg2:-}"; fi
fi

finish
