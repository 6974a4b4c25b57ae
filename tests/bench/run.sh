#!/usr/bin/env bash
# make bench: fmtrain against PyTorch 1.13 on the same cases, same thread
# count, side by side, in one invocation. Not a test: it asserts nothing, it
# measures. PyTorch runs with OpenBLAS (libopenblas0-openmp) and without the
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pins some machines set.
#
#   1. peak:   bench_peak, a large oneDNN 3x3 convolution and a 2048^3 sgemm
#   2. layers: bench_layers vs torch_layers.py (3x3 convs, attention)
#   3. steps:  bench_step vs torch_step.py, a whole flow training step (CFM
#              batch, forward, MSE, backward, clipping, AdamW, EMA) of each
#              model below in fmtrain fp32 and bf16 (run.precision: bf16),
#              with fmtrain's per-layer profile of each, and in PyTorch's
#              modes (below); the executed FLOPs (real taps) by real_taps.py
#   4. stage:  images/s of a real, short `fmtrain` flow stage (ldm.yaml's
#              U-Net on latents from a briefly trained VAE)
# Writes bench.json at the repository root, the profile tables to
# runs/bench/profile-<model>.txt (and profile-<model>-bf16.txt), and prints
# two tables and the must-show ratios of issue 18.
#
# Environment: BUILD (build), FMTRAIN (./fmtrain), OMP_NUM_THREADS (nproc),
# BENCH_MODELS (the cases below, by name), BENCH_STEPS / BENCH_WARMUP (timed
# and warm-up steps per case; default per case), BENCH_ROUNDS (rounds per
# case; default 3 for unet and dit, 1 for the large ones), BENCH_SEED (the
# rounds' order, default 1), BENCH_TORCH_MODES (PyTorch modes of every case,
# default per model, see below), BENCH_STAGE_STEPS (flow steps of part 4,
# default 60; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
FMTRAIN=${FMTRAIN:-./fmtrain}
THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS
PY=/usr/bin/python3
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS="$THREADS")
PROFILE_DIR=runs/bench
SEED=${BENCH_SEED:-1}
mkdir -p "$PROFILE_DIR"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# name | config | timed, warm-up and profiled steps, rounds | --set overrides
# unet_16m and dit_s1 are the 16 M-parameter U-Net and the DiT-S/1 of issue 7.
# Rounds: every run of a case (fmtrain fp32, fmtrain bf16, each PyTorch mode)
# once per round, in an order shuffled per round (seeded by BENCH_SEED, case
# and round; recorded in bench.json), so that no side always runs first or
# after the same neighbour. PyTorch's median moves by up to 20 % from one run
# to the next on a host where fmtrain's moves by 2-5 %, so each side is
# reported by its best round (the lowest median step time) and the median of
# its rounds with their min and max; every round is in bench.json.
CASES=(
    "unet|configs/ldm.yaml|10 3 10 3|"
    "dit|configs/dit.yaml|10 3 10 3|"
    "unet_16m|configs/ldm.yaml|8 2 3 1|unet.channels=[128,256] unet.res_blocks=2"
    "dit_s1|configs/dit.yaml|5 2 2 1|dit.width=384 dit.depth=12 dit.heads=6 dit.patch=1"
)
BENCH_MODELS=${BENCH_MODELS:-unet dit unet_16m dit_s1}
# PyTorch modes (tests/bench/torch_step.py --mode): fp32 NCHW and
# channels_last (_cl), each with nearest x2 + 3x3 and with fmtrain's 4-parity
# upsampling convolution (_up4), and bf16 autocast (channels_last for the
# U-Net, where PyTorch 1.13 is expected to fail on GroupNorm: the failure is
# recorded, not hidden). The best fp32 mode is what the speed-ups use.
UNET_MODES="fp32 fp32_cl fp32_up4 fp32_cl_up4 bf16_cl"
DIT_MODES="fp32 bf16"

echo "bench: $THREADS threads; peak probe..." >&2
"$BUILD/tests/bench/bench_peak" >"$out/peak.json"

echo "bench: fmtrain layers..." >&2
"$BUILD/tests/bench/bench_layers" >"$out/fm_layers.jsonl"
echo "bench: PyTorch layers..." >&2
"${TORCH_ENV[@]}" $PY tests/bench/torch_layers.py "$THREADS" <"$out/fm_layers.jsonl" >"$out/torch_layers.jsonl"

# one fmtrain step run: fm_run NAME PRECISION PROFILE_STEPS (appends its JSON
# line to fm_steps[_bf16].jsonl; the profile tables, when asked, to runs/bench)
fm_run() {
    local sfx=""
    local pset=(--set run.precision="$2")
    [ "$2" = bf16 ] && sfx=_bf16
    echo "bench: $1: fmtrain $2 step ($steps steps after $warmup, round $r of $rounds)..." >&2
    "$BUILD/tests/bench/bench_step" "$config" --name "$1" "${args[@]}" "${pset[@]}" --steps "$steps" \
        --warmup "$warmup" --profile-steps "$3" >"$out/step_$1$sfx.json" 2>"$out/err.txt" ||
        { cat "$out/err.txt" >&2; exit 1; }
    if [ "$3" != 0 ]; then cp "$out/err.txt" "$PROFILE_DIR/profile-$1${sfx//_/-}.txt"; fi
    cat "$out/step_$1$sfx.json" >>"$out/fm_steps$sfx.jsonl"
}

: >"$out/fm_steps.jsonl"
: >"$out/fm_steps_bf16.jsonl"
: >"$out/torch_steps.jsonl"
: >"$out/order.jsonl"
: >"$out/taps.jsonl"
for c in "${CASES[@]}"; do
    IFS='|' read -r name config sw sets <<<"$c"
    case " $BENCH_MODELS " in *" $name "*) ;; *) continue ;; esac
    read -r steps warmup psteps rounds <<<"$sw"
    steps=${BENCH_STEPS:-$steps}
    warmup=${BENCH_WARMUP:-$warmup}
    rounds=${BENCH_ROUNDS:-$rounds}
    read -ra setv <<<"$sets"  # no pathname expansion of "[128,256]"
    args=()
    for s in "${setv[@]}"; do args+=(--set "$s"); done
    modes=$DIT_MODES
    case $config in *ldm*) modes=$UNET_MODES ;; esac
    modes=${BENCH_TORCH_MODES:-$modes}
    # round 1 runs fmtrain fp32 first: its JSON line is the case's spec (shapes,
    # batch, optimiser) for PyTorch and the FLOP count; it also takes the
    # per-layer profiles, outside the timed steps. Rounds 2.. are shuffled.
    runs=(fm:fp32 fm:bf16)
    for m in $modes; do runs+=("torch:$m"); done
    for ((r = 1; r <= rounds; r++)); do
        # the order, recorded in order.jsonl (round 1: fmtrain fp32 first, then shuffled)
        order=$($PY - "$out/order.jsonl" "$SEED:$name:$r" "$name" "$r" "${runs[@]}" <<'PYEOF'
import json, random, sys
path, seed, name, r, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
first, rest = (runs[:1], runs[1:]) if r == 1 else ([], runs)
random.Random(seed).shuffle(rest)
print(" ".join(first + rest))
with open(path, "a") as f:
    print(json.dumps({"name": name, "round": r, "seed": seed, "order": first + rest}), file=f)
PYEOF
)
        read -ra order <<<"$order"
        for run in "${order[@]}"; do
            case $run in
            fm:fp32)
                p=0; [ "$r" = 1 ] && p=$psteps
                fm_run "$name" fp32 "$p"
                if [ "$r" = 1 ]; then  # the executed FLOPs (real taps only), from the case's shapes
                    "${TORCH_ENV[@]}" $PY tests/bench/real_taps.py <"$out/step_$name.json" >>"$out/taps.jsonl"
                fi
                ;;
            fm:bf16) p=0; [ "$r" = 1 ] && p=$psteps; fm_run "$name" bf16 "$p" ;;
            torch:*)
                echo "bench: $name: PyTorch ${run#torch:} step (round $r of $rounds)..." >&2
                "${TORCH_ENV[@]}" $PY tests/bench/torch_step.py "$THREADS" --mode "${run#torch:}" \
                    <"$out/step_$name.json" >>"$out/torch_steps.jsonl"
                ;;
            esac
        done
    done
done

# The flow stage for real: ldm.yaml's U-Net on the latents of a VAE trained for
# a few steps on 4096 images (the flow's speed does not depend on the VAE's
# quality); no sample grids; images/s as the trainer logs it.
stage_dir=""
stage_steps=${BENCH_STAGE_STEPS:-60}
if [ "$stage_steps" != 0 ]; then
    echo "bench: flow stage (fmtrain configs/ldm.yaml, short)..." >&2
    stage_dir="$out/stage"
    "$FMTRAIN" configs/ldm.yaml --out "$stage_dir" --set 'run.stages=[vae,encode,flow]' \
        --set data.train_limit=4096 --set data.test_limit=512 \
        --set vae.steps=10 --set vae.warmup=2 --set vae.ckpt_every=10 \
        --set flow.steps="$stage_steps" --set flow.warmup=5 --set flow.ckpt_every="$stage_steps" \
        --set flow.sample_every=0 \
        --set run.log_every=10 >"$out/stage.log" 2>&1 || { cat "$out/stage.log" >&2; stage_dir=""; }
fi

$PY - "$out" "$THREADS" "$stage_dir" "$SEED" <<'PYEOF'
import json, os, statistics, sys
out, threads, stage_dir, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = lambda f: [json.loads(l) for l in open(os.path.join(out, f)) if l.strip()]
peak = json.load(open(os.path.join(out, "peak.json")))
P = peak["peak_gflops"]

print(f"peak: {P:.1f} GFLOP/s fp32 on {threads} threads (3x3 conv {peak['conv_gflops']:.1f}, "
      f"sgemm {peak['sgemm_gflops']:.1f}); the U-Net's 3x3 conv 8x8 128->128 b128 forward alone: "
      f"{peak['conv8x8_any_gflops']:.1f} in oneDNN's layout, {peak['conv8x8_nhwc_gflops']:.1f} in NHWC\n")

# layers
tt = {d["case"]: d["torch_ms"] for d in lines("torch_layers.jsonl")}
layers = []
print(f"{'layer (forward + backward)':32s} {'fmtrain ms':>11s} {'torch ms':>9s} {'speed-up':>9s} {'fm GFLOP/s':>11s}")
for d in lines("fm_layers.jsonl"):
    t = tt[d["case"]]
    r = {"case": d["case"], "fm_ms": d["fm_ms"], "torch_ms": round(t, 3), "speedup": round(t / d["fm_ms"], 3),
         "fm_gflops": d["gflops"]}
    layers.append(r)
    print(f"{d['case']:32s} {d['fm_ms']:11.2f} {t:9.2f} {r['speedup']:9.2f} {d['gflops']:11.1f}")

# training steps. Every side (fmtrain fp32, fmtrain bf16, each PyTorch mode)
# has one median step time per round; it is reported by its best round (the
# lowest median), the median of its rounds and their min and max. The best
# round of fmtrain fp32 carries the per-layer profile of round 1.
def summary(runs, key):
    v = [d[key] for d in runs]
    return {"best": min(v), "median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v,
            "step_s_all": [d.get("step_s_all", d.get("torch_step_s_all")) for d in runs]}
def by_name(f):
    by = {}
    for d in lines(f):
        by.setdefault(d["name"], []).append(d)
    return by
fp32_by, bf16_by, taps = by_name("fm_steps.jsonl"), by_name("fm_steps_bf16.jsonl"), by_name("taps.jsonl")
order_by = by_name("order.jsonl")
torch_by = {}
for d in lines("torch_steps.jsonl"):
    torch_by.setdefault(d["name"], {}).setdefault(d["mode"], []).append(d)

f = lambda v, fmt: format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0])  # "-" as wide
ratio = lambda a, b: a / b if a and b else None
models = {}
for name, runs in fp32_by.items():
    d = min(runs, key=lambda x: x["step_s"])
    for x in runs:  # the profile is in round 1's line
        for k in ("profile_by_kind", "profile_by_block", "profile_step_s", "profile_coverage"):
            if x.get(k) is not None:
                d = dict(d, **{k: x[k]})
    fp, bf = summary(runs, "step_s"), summary(bf16_by[name], "step_s") if name in bf16_by else None
    bfd = min(bf16_by[name], key=lambda x: x["step_s"]) if bf else None
    tm = {}
    for mode, tr in torch_by.get(name, {}).items():
        err = next((x["error"] for x in tr if "error" in x), None)
        ok = [x for x in tr if "error" not in x]
        tm[mode] = dict(summary(ok, "torch_step_s") if ok else {}, error=err, runs=len(tr),
                        peak_rss_mb=max((x["torch_peak_rss_mb"] for x in ok), default=None),
                        phase_s=min(ok, key=lambda x: x["torch_step_s"])["torch_phase_s"] if ok else None)
    fp32_modes = {k: v for k, v in tm.items() if k.startswith("fp32") and v.get("best")}
    best_mode = min(fp32_modes, key=lambda k: fp32_modes[k]["best"]) if fp32_modes else None
    tb = tm[best_mode] if best_mode else {}
    ts = tb.get("best")
    tbf = next((v for k, v in tm.items() if k.startswith("bf16")), None)
    tbf_s = tbf.get("best") if tbf else None
    P = peak["peak_gflops"]
    ex = taps[name][0]["gflop_per_step_executed"] if name in taps else None
    m = {
        "model": d["model"], "config": d["config"], "sets": d["sets"], "params": d["params"], "batch": d["batch"],
        "input": [d["side"], d["side"], d["ch"]], "threads": d["threads"],
        "torch_best_fp32_mode": best_mode, "torch_step_s": ts, "torch_step_s_median": tb.get("median"),
        "fp32_step_s": fp["best"], "fp32_step_s_median": fp["median"],
        "bf16_step_s": bf["best"] if bf else None, "bf16_step_s_median": bf["median"] if bf else None,
        "torch_bf16_step_s": tbf_s, "torch_bf16_error": tbf.get("error") if tbf else None,
        # the must-show ratios, best round against best round (and median against median)
        "speedup_fp32": ratio(ts, fp["best"]), "speedup_fp32_median": ratio(tb.get("median"), fp["median"]),
        "speedup_bf16": ratio(ts, bf and bf["best"]),
        "speedup_bf16_median": ratio(tb.get("median"), bf and bf["median"]),
        "speedup_bf16_vs_torch_bf16": ratio(tbf_s, bf and bf["best"]),
        "speedup_bf16_vs_torch_bf16_median": ratio(tbf and tbf.get("median"), bf and bf["median"]),
        "bf16_vs_fp32": ratio(fp["best"], bf and bf["best"]),
        "bf16_peak_rss_mb": bfd["peak_rss_mb"] if bfd else None,
        "bf16_phase_s": bfd["phase_s"] if bfd else None,
        "bf16_profile_by_kind": next((x.get("profile_by_kind") for x in bf16_by.get(name, [])
                                      if x.get("profile_by_kind") is not None), None),
        "gflop_per_step": d["gflop_per_step"], "gflop_per_step_counted": d["gflop_per_step_counted"],
        "gflop_per_step_executed": ex,
        "peak_gflops": P, "fm_gflops": d["gflop_per_step"] / fp["best"],
        "fp32_peak_fraction": d["gflop_per_step"] / fp["best"] / P,
        "fp32_peak_fraction_executed": ex / fp["best"] / P if ex else None,
        "bf16_gflops_executed": ex / bf["best"] if ex and bf else None,
        "torch_gflops": d["gflop_per_step"] / ts if ts else None,
        "peak_rss_mb": d["peak_rss_mb"], "torch_peak_rss_mb": tb.get("peak_rss_mb"),
        "activation_bytes_per_sample": d["activation_bytes_per_sample"],
        "fp32_images_per_s": d["batch"] / fp["best"],
        "steps": d["steps"], "rounds": len(runs), "round_order": [o["order"] for o in order_by.get(name, [])],
        "round_seed": [o["seed"] for o in order_by.get(name, [])],
        "fp32": fp, "bf16": bf, "torch_modes": tm,
        "fp32_step_s_rounds": fp["rounds"], "bf16_step_s_rounds": bf["rounds"] if bf else None,
        "torch_step_s_rounds": tb.get("rounds"),
        "fp32_phase_s": d["phase_s"], "torch_phase_s": tb.get("phase_s"),
        "profile_step_s": d.get("profile_step_s"), "profile_coverage": d.get("profile_coverage"),
        "profile_by_kind": d.get("profile_by_kind"), "profile_by_block": d.get("profile_by_block"),
    }
    models[name] = m

# table 1: every side of every model, best round, median and range of rounds
print(f"\n{'training step':16s} {'side':22s} {'best s':>8s} {'median s':>8s} {'min-max s':>15s} {'rounds':>6s}")
for name, m in models.items():
    rows = [("fmtrain fp32", m["fp32"]), ("fmtrain bf16", m["bf16"])]
    rows += [(f"torch {k}" + (" *" if k == m["torch_best_fp32_mode"] else ""), v) for k, v in m["torch_modes"].items()]
    for side, v in rows:
        if not v:
            continue
        if v.get("best") is None:
            print(f"{name:16s} {side:22s} failed: {v.get('error')}")
            continue
        print(f"{name:16s} {side:22s} {v['best']:8.3f} {v['median']:8.3f} {v['min']:7.3f}-{v['max']:<7.3f} "
              f"{len(v['rounds']):6d}")
print("  (* the best PyTorch fp32 mode, which the speed-ups use; _cl = channels_last, _up4 = fmtrain's 4-parity "
      "upsampling convolution,\n   bf16 = torch.autocast('cpu', dtype=torch.bfloat16); each round's figure is the "
      "median of its timed steps; rounds in shuffled order, see bench.json)")

# table 2: speed-ups, FLOPs, peak fractions, memory
print(f"\n{'model':16s} {'params':>7s} {'batch':>5s} {'fp32 x':>7s} {'bf16 x':>7s} {'bf16 x':>7s} "
      f"{'GFLOP':>7s} {'exec':>7s} {'GFLOP/s':>8s} {'of peak':>7s} {'exec':>6s} {'RSS MB':>7s} {'torch MB':>8s} "
      f"{'act KB/smp':>10s}")
print(f"{'':16s} {'':>7s} {'':>5s} {'vs fp32':>7s} {'vs fp32':>7s} {'vs bf16':>7s}")
for name, m in models.items():
    print(f"{name:16s} {m['params'] / 1e6:6.1f}M {m['batch']:5d} {f(m['speedup_fp32'], '7.2f')} "
          f"{f(m['speedup_bf16'], '7.2f')} {f(m['speedup_bf16_vs_torch_bf16'], '7.2f')} "
          f"{m['gflop_per_step']:7.1f} {f(m['gflop_per_step_executed'], '7.1f')} {m['fm_gflops']:8.1f} "
          f"{m['fp32_peak_fraction']:7.1%} {f(m['fp32_peak_fraction_executed'], '6.1%')} {m['peak_rss_mb']:7.0f} "
          f"{f(m['torch_peak_rss_mb'], '8.0f')} {m['activation_bytes_per_sample'] / 1024:10.1f}")
print("  (speed-ups: PyTorch / fmtrain, best rounds; vs fp32 = the best PyTorch fp32 mode, vs bf16 = PyTorch's bf16 "
      "autocast;\n   GFLOP = 3 x forward FLOPs of convolutions and matrix products, exec = the same on real taps "
      "only (no padding taps;\n   the upsampling as fmtrain's 2x2 parity convolutions, no zero taps); of peak = "
      "fmtrain fp32 GFLOP/s over the probe's peak)")

# the must-show of issue 18, computed
must = [("unet", "speedup_fp32", 1.6, "U-Net fp32 vs the best PyTorch fp32 mode"),
        ("unet", "speedup_bf16", 3.0, "U-Net bf16 vs the best PyTorch fp32 mode"),
        ("dit", "speedup_bf16_vs_torch_bf16", 2.0, "DiT bf16 vs PyTorch bf16 autocast")]
shown = []
for name, key, need, what in must:
    if name not in models:
        continue
    m = models[name]
    v, vm = m.get(key), m.get(key + "_median")
    shown.append({"what": what, "model": name, "key": key, "need": need, "best": v, "median": vm,
                  "met": v is not None and v >= need})
    print(f"must-show: {what}: {f(v, '.2f')}x best rounds ({f(vm, '.2f')}x medians), needs >= {need}: "
          f"{'met' if v is not None and v >= need else 'NOT met'}")

# the flow stage
stage = None
if stage_dir:
    rows = [json.loads(l) for l in open(os.path.join(stage_dir, "metrics.jsonl"))]
    flow = [r for r in rows if r.get("stage") == "flow"]
    if flow:
        ms = statistics.median(r["step_ms"] for r in flow[1:] or flow)
        import yaml
        cfg_batch = yaml.safe_load(open(os.path.join(stage_dir, "config.yaml")))["flow"]["batch_size"]
        stage = {"what": f"fmtrain configs/ldm.yaml, stages vae (10 steps), encode (4096 images), flow "
                         f"({flow[-1]['step']} steps, no grids); flow rows of metrics.jsonl",
                 "images_per_s": flow[-1]["images_per_s"], "steps": flow[-1]["step"],
                 "step_ms_median": ms, "images_per_s_steady": cfg_batch / ms * 1e3}
        print(f"\nflow stage (ldm.yaml U-Net, {stage['steps']} steps): {stage['images_per_s']:.1f} images/s over "
              f"the stage, {stage['images_per_s_steady']:.1f} images/s from the median logged step "
              f"({ms:.1f} ms)")

json.dump({"threads": threads, "seed": seed, "peak": peak, "layers": layers,
           "models": models, "must_show": shown, "flow_stage": stage},
          open("bench.json", "w"), indent=2)
print("wrote bench.json; profile tables in runs/bench/profile-<model>[-bf16].txt")
PYEOF
