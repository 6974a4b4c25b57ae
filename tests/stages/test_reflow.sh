#!/usr/bin/env bash
# test_reflow.sh - the reflow stage and the quality-vs-cost table on the tiny config.
#   1. After vae, encode, flow (1 rank): reflow to step 10 writes the couplings
#      (reflow-pairs.safetensors, reflow.pairs of them) and reflow-00000010;
#      reflow.steps=20 resumes from step 10 (couplings read, not drawn again)
#      and writes reflow-00000020; a third run says "reflow: done".
#   2. The couplings drawn on 2 ranks (another copy of the flow run) are the
#      same bytes as on 1 rank.
#   3. sample.weights: reflow draws reflow-sample-* grids from the reflowed
#      weights; eval with eval.table_steps=[1,2,4], eval.table_cfg=[1,3] writes
#      by_cfg and a table of 2 weights x 3 steps x 2 scales = 12 rows (steps,
#      nfe = 2 x steps for Euler, accuracy in [0, 1], a finite fd).
#   4. With a trained guide classifier, eval.table_interval=[0.5,1] and
#      eval.table_classifier_scale=2 add the methods interval, classifier and
#      both: 4 methods x 2 weights x w in {1, 3} rows at 2 Euler steps, whose
#      costs are what the sampler made: the model evaluated at t = 0 and 0.5;
#      with an interval one branch (1 row) where w(t) is 1 (outside it, or
#      w = 1), CFG's 2 rows elsewhere; classifier guidance off at t = 0 (c(0)
#      is infinite): w = 3 nfe 4/3/4/3, w = 1 nfe 4/2/4/2 (cfg/interval/
#      classifier/both), classifier_evals 0/0/1/1.
source "$(dirname "$0")/../lib.sh" stages reflow/
export OMP_NUM_THREADS=1

R=(--set reflow.pairs=150 --set reflow.sampler_steps=4 --set reflow.batch_size=16 --set reflow.ckpt_every=10
   --set reflow.warmup=2)
run flow 1 "$TINY" --out "$T/a" --set "run.stages=[vae,encode,flow]" --set flow.sample_every=0 || { finish; exit 1; }
cp -r "$T/a" "$T/b"

# --- 1. train, resume, done ---------------------------------------------------------------
run reflow10 1 "$TINY" --out "$T/a" --set "run.stages=[reflow]" "${R[@]}" --set reflow.steps=10
run reflow20 1 "$TINY" --out "$T/a" --set "run.stages=[reflow]" "${R[@]}" --set reflow.steps=20
run reflow_done 1 "$TINY" --out "$T/a" --set "run.stages=[reflow]" "${R[@]}" --set reflow.steps=20
if [ -f "$T/a/reflow-pairs.safetensors" ] && [ -f "$T/a/ckpt/reflow-00000010.safetensors" ] &&
   grep -q "reflow: 150 couplings at w = 3 (euler, 4 steps) from the flow's step 60" "$T/reflow10.err"; then
  pass couplings_and_first_ckpt
else
  fail couplings_and_first_ckpt "no couplings file, step-10 checkpoint or log line"; show "$T/reflow10.err"
fi
if grep -q "reflow: couplings from .*reflow-pairs.safetensors" "$T/reflow20.err" &&
   grep -q "20 steps from step 10 on 150 couplings" "$T/reflow20.err" &&
   [ -f "$T/a/ckpt/reflow-00000020.safetensors" ]; then
  pass resumes
else
  fail resumes "reflow.steps=20 did not resume from step 10 on the saved couplings"; show "$T/reflow20.err"
fi
if grep -q "reflow: done (checkpoint at step 20)" "$T/reflow_done.err" && ! grep -q "reflow  step" "$T/reflow_done.err"; then
  pass skipped_when_done
else
  fail skipped_when_done "a finished reflow stage ran again"; show "$T/reflow_done.err"
fi

# --- 2. couplings independent of the rank count -------------------------------------------
run reflow_np2 2 "$TINY" --out "$T/b" --set "run.stages=[reflow]" "${R[@]}" --set reflow.steps=10
if cmp -s "$T/a/reflow-pairs.safetensors" "$T/b/reflow-pairs.safetensors"; then
  pass couplings_same_on_2_ranks
else
  fail couplings_same_on_2_ranks "reflow-pairs.safetensors differs between 1 and 2 ranks"
fi

# --- 3. grids and the table ---------------------------------------------------------------
run sample_reflow 1 "$TINY" --out "$T/a" --set "run.stages=[sample]" --set sample.weights=reflow
if ls "$T/a"/samples/reflow-sample-00000020-w3.png >/dev/null 2>&1; then
  pass reflow_grids
else
  fail reflow_grids "no samples/reflow-sample-00000020-w3.png"; show "$T/sample_reflow.err"
fi
run eval_table 1 "$TINY" --out "$T/a" --set "run.stages=[eval]" --set "eval.table_steps=[1,2,4]" \
  --set "eval.table_cfg=[1,3]"
if "$PY" - "$T/a/eval.json" <<'EOF'
import json, math, sys
d = json.load(open(sys.argv[1]))
assert len(d["by_cfg"]) == 2, d["by_cfg"]
rows = d["table"]["rows"]
assert len(rows) == 12, len(rows)
seen = {(r["weights"], r["steps"], r["cfg"]) for r in rows}
assert seen == {(w, s, c) for w in ("flow", "reflow") for s in (1, 2, 4) for c in (1, 3)}, seen
for r in rows:
    assert r["nfe"] == 2 * r["steps"] and r["method"] == "cfg", r
    assert 0 <= r["accuracy"] <= 1 and math.isfinite(r["fd"]), r
    assert r["weights_step"] == (60 if r["weights"] == "flow" else 20), r
EOF
then
  pass table_rows
else
  fail table_rows "eval.json lacks the configured table"; show "$T/eval_table.err"
fi

# --- 4. the table's other methods ------------------------------------------------------------
mv "$T/a/eval.json" "$T/a/eval-cfg.json"
run guide_table 1 "$TINY" --out "$T/a" --set "run.stages=[guide,eval]" --set guide.steps=20 --set guide.warmup=2 \
  --set "eval.table_steps=[2]" --set "eval.table_cfg=[1,3]" --set "eval.table_interval=[0.5,1]" \
  --set eval.table_classifier_scale=2
if "$PY" - "$T/a/eval.json" <<'EOF'
import json, math, sys
rows = json.load(open(sys.argv[1]))["table"]["rows"]
want = {"cfg": (4, 4, 0, [0, 1], 0), "interval": (3, 2, 0, [0.5, 1], 0), "classifier": (4, 4, 1, [0, 1], 2),
        "both": (3, 2, 1, [0.5, 1], 2)}
assert sorted((r["method"], r["weights"], r["cfg"]) for r in rows) == \
    sorted((m, w, c) for m in want for w in ("flow", "reflow") for c in (1, 3)), rows
for r in rows:
    nfe3, nfe1, cls, iv, s = want[r["method"]]
    nfe = nfe3 if r["cfg"] == 3 else nfe1
    assert (r["nfe"], r["classifier_evals"], r["interval"], r["classifier_scale"]) == (nfe, cls, iv, s), r
    assert 0 <= r["accuracy"] <= 1 and math.isfinite(r["fd"]), r
EOF
then
  pass table_methods
else
  fail table_methods "the table lacks the interval/classifier/both rows or their costs"; show "$T/guide_table.err"
fi
finish
