#!/usr/bin/env bash
# test_results.sh - what a user looks at after a run (issue 17), on one short
# tiny run (every stage, 10 steps each):
#   1. metrics.jsonl: time, elapsed_s, world_size, loss_mean, mfu on every
#      training line (run.peak_gflops 0: the peak measured at start and
#      logged), loss_mean the mean of the step
#      losses since the previous line (log_every 1 then 5: checkable), one eval
#      line per guidance scale; log and progress lines start with the UTC time
#      and the progress line shows MFU, stage i/n and the run's ETA;
#   2. fmtrain sample --n 1000 --out-dir D --npz F, from checkpoints copied out
#      of the run (--vae): 1,000 PNG files and an .npz that a plain numpy/PIL
#      script reads, the same pixels in both, the class in each file name;
#      the -o grid is labelled (wider than the plain grid, header strip);
#   3. fmtrain plot RUN writes RUN/report.png of a sane size, and fails with a
#      clear message on a missing (exit 2) or empty (exit 3) run directory.
source "$(dirname "$0")/../lib.sh" cli results_
R=$T/run
SETS=(--set vae.steps=10 --set flow.steps=10 --set flow.sample_every=5 --set eval.classifier_steps=10
      --set run.log_every=5 --set vae.ckpt_every=10 --set flow.ckpt_every=10
      --set eval.samples_per_class=4 --set vae.warmup=2 --set flow.warmup=2)
run tiny 1 "$TINY" --out "$R" "${SETS[@]}" || { finish; exit 1; }

# --- 1. metrics and progress ------------------------------------------------------
if msg=$($PY - "$R/metrics.jsonl" 2>&1 <<'PYEOF'
import json, re, sys
L = [json.loads(l) for l in open(sys.argv[1])]
train = [l for l in L if l["stage"] != "eval"]
ev = [l for l in L if l["stage"] == "eval"]
for l in L:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", l["time"]), l
    assert l["elapsed_s"] >= 0, l
for l in train:
    assert l["world_size"] == 1 and 0 < l["mfu"] < 100 and l["loss_mean"] > 0, l
assert [l["cfg"] for l in ev] == [1, 3] and all(0 <= l["accuracy"] <= 1 and l["fd"] > 0 for l in ev), ev
for st in ("vae", "flow", "classifier"):
    s = [l for l in train if l["stage"] == st]
    assert [l["step"] for l in s] == [1, 5, 10], (st, [l["step"] for l in s])
    # the first line is one step: its mean is its loss
    assert s[0]["loss_mean"] == s[0]["loss"], s[0]
    # the mean of steps 2..5 lies between their extremes; here only the last is logged
    assert s[1]["loss_mean"] != s[1]["loss"] or s[2]["loss_mean"] != s[2]["loss"], st
t = sorted(l["time"] for l in L)
assert t == [l["time"] for l in L], "times not in order"
print(f"{len(train)} training lines, {len(ev)} eval lines")
PYEOF
); then pass "metrics_keys ($msg)"; else fail metrics_keys "$msg"; fi
if grep -qE '^20[0-9-]{8}T[0-9:.]{12}Z flow  step 5/10  loss [0-9.]+  [0-9]+ img/s  MFU [0-9]+%  ETA [0-9a-z]+  stage 3/5, run ETA [0-9a-z]+' "$T/tiny.err" &&
   grep -qE '^20[0-9-]{8}T[0-9:.]{12}Z fmtrain: stage flow$' "$T/tiny.err" &&
   grep -qE 'Z fmtrain: peak: [0-9.]+ GFLOP/s measured on rank 0' "$T/tiny.err"; then pass progress_line
else fail progress_line "no timestamped progress line with MFU, stage 3/5 and run ETA, or no measured peak"; grep 'step 5/' "$T/tiny.err" | sed 's/^/    /'; fi

# --- 2. fmtrain sample into files ---------------------------------------------------
mkdir -p "$T/copy"
cp "$R"/ckpt/flow-00000010.safetensors "$R"/ckpt/vae-00000010.safetensors "$T/copy/"
run sample 1 sample "$T/copy/flow-00000010.safetensors" --vae "$T/copy/vae-00000010.safetensors" --steps 1 \
  --n 1000 --out-dir "$T/pngs" --npz "$T/s.npz" -o "$T/grid.png"
if [ -f "$T/s.npz" ] && msg=$($PY - "$T/pngs" "$T/s.npz" 2>&1 <<'PYEOF'
import os, re, sys
import numpy as np
from PIL import Image
d, f = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(d))
assert len(names) == 1000, len(names)
z = np.load(f)
x, y = z["images"], z["labels"]
assert x.shape == (1000, 32, 32) and x.dtype == np.uint8 and y.shape == (1000,), (x.shape, x.dtype, y.shape)
assert (np.bincount(y, minlength=10) == 100).all(), np.bincount(y)
for name in names:
    m = re.fullmatch(r"(\d{6})-c(\d)-([a-z-]+)\.png", name)
    assert m, name
    i, c = int(m.group(1)), int(m.group(2))
    a = np.asarray(Image.open(os.path.join(d, name)))
    assert a.shape == (32, 32) and y[i] == c and (a == x[i]).all(), name
assert x.std() > 5, "blank samples"
print(f"1000 PNGs = npz images, labels {np.bincount(y).tolist()}")
PYEOF
); then pass "sample_files_numpy_pil ($msg)"; else fail sample_files_numpy_pil "$msg"; fi
# the labelled grid: class names at the left, a header strip above (plain: 10 x 2 cells of 66 px + 2)
if msg=$($PY -c "
from PIL import Image; import numpy as np, sys
a = np.asarray(Image.open(sys.argv[1])); h, w = a.shape
assert h > 10 * 66 + 2 and w > 2 * 66 + 2, a.shape
assert (a[:h - 10 * 66 - 2] < 128).any() and (a[:, :w - 2 * 66 - 2] < 128).any(), 'no text'
print(a.shape)" "$T/grid.png" 2>&1) && grep -q "cfg 3" "$T/sample.err"; then pass "labelled_grid_default_w3 ($msg)"
else fail labelled_grid_default_w3 "$msg"; show "$T/sample.err"; fi

# --- 3. fmtrain plot -----------------------------------------------------------------
if ! $PY -c "import matplotlib" 2>/dev/null; then skip plot "no python3-matplotlib"
else
  run plot 1 plot "$R"
  if msg=$($PY -c "
from PIL import Image; import os, sys
p = sys.argv[1]; im = Image.open(p)
assert im.format == 'PNG' and im.size[0] >= 800 and im.size[1] >= 800 and os.path.getsize(p) > 50000, (im.size, os.path.getsize(p))
print(im.size, os.path.getsize(p), 'bytes')" "$R/report.png" 2>&1); then pass "plot_report ($msg)"
  else fail plot_report "$msg"; fi
  (cd "$T" && "$FMTRAIN" plot "$T/nope") >/dev/null 2>"$T/p1.err"; rc=$?
  if [ $rc -eq 2 ] && grep -q "nope: no such run directory" "$T/p1.err"; then pass plot_missing_dir
  else fail plot_missing_dir "exit $rc"; show "$T/p1.err"; fi
  mkdir -p "$T/empty"; : >"$T/empty/metrics.jsonl"
  (cd "$T" && "$FMTRAIN" plot "$T/empty") >/dev/null 2>"$T/p2.err"; rc=$?
  if [ $rc -eq 3 ] && grep -q "no metrics lines" "$T/p2.err" && [ ! -e "$T/empty/report.png" ]; then pass plot_empty_dir
  else fail plot_empty_dir "exit $rc"; show "$T/p2.err"; fi
fi
finish
