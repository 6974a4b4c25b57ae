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
#              model below in fp32 and in bf16 (run.precision: bf16), with
#              fmtrain's per-layer profile of each
#   4. stage:  images/s of a real, short `fmtrain` flow stage (ldm.yaml's
#              U-Net on latents from a briefly trained VAE)
# Writes bench.json at the repository root, the profile tables to
# runs/bench/profile-<model>.txt (and profile-<model>-bf16.txt), and prints a table.
#
# Environment: BUILD (build), FMTRAIN (./fmtrain), OMP_NUM_THREADS (nproc),
# BENCH_MODELS (the cases below, by name), BENCH_STEPS / BENCH_WARMUP (timed
# and warm-up steps per case; default per case), BENCH_ROUNDS (alternating
# rounds per case; default 3 for unet and dit, 1 for the large ones), BENCH_STAGE_STEPS (flow
# steps of part 4, default 60; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
FMTRAIN=${FMTRAIN:-./fmtrain}
THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS
PY=/usr/bin/python3
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS="$THREADS")
PROFILE_DIR=runs/bench
mkdir -p "$PROFILE_DIR"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# name | config | timed, warm-up and profiled steps, rounds | --set overrides
# unet_16m and dit_s1 are the 16 M-parameter U-Net and the DiT-S/1 of issue 7.
# Rounds: the three runs (fmtrain fp32, bf16, PyTorch) repeat this many times,
# alternating, and each side's figure is its best round (the lowest median
# step time): PyTorch's median moves by up to 20 % from one run to the next on
# this host while fmtrain's moves by 2-5 %, so one run per side would measure
# the host as much as the code. Every round's median is in bench.json.
CASES=(
    "unet|configs/ldm.yaml|10 3 10 3|"
    "dit|configs/dit.yaml|10 3 10 3|"
    "unet_16m|configs/ldm.yaml|8 2 3 1|unet.channels=[128,256] unet.res_blocks=2"
    "dit_s1|configs/dit.yaml|5 2 2 1|dit.width=384 dit.depth=12 dit.heads=6 dit.patch=1"
)
BENCH_MODELS=${BENCH_MODELS:-unet dit unet_16m dit_s1}

echo "bench: $THREADS threads; peak probe..." >&2
"$BUILD/tests/bench/bench_peak" >"$out/peak.json"

echo "bench: fmtrain layers..." >&2
"$BUILD/tests/bench/bench_layers" >"$out/fm_layers.jsonl"
echo "bench: PyTorch layers..." >&2
"${TORCH_ENV[@]}" $PY tests/bench/torch_layers.py "$THREADS" <"$out/fm_layers.jsonl" >"$out/torch_layers.jsonl"

: >"$out/fm_steps.jsonl"
: >"$out/torch_steps.jsonl"
: >"$out/fm_steps_bf16.jsonl"
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
    for ((r = 1; r <= rounds; r++)); do
        # the per-layer profile once, in the first round
        p=0
        [ "$r" = 1 ] && p=$psteps
        echo "bench: $name: fmtrain step ($steps steps after $warmup, round $r of $rounds)..." >&2
        "$BUILD/tests/bench/bench_step" "$config" --name "$name" "${args[@]}" --steps "$steps" --warmup "$warmup" \
            --profile-steps "$p" >"$out/step_$name.json" 2>"$out/err.txt" ||
            { cat "$out/err.txt" >&2; exit 1; }
        [ "$r" = 1 ] && cp "$out/err.txt" "$PROFILE_DIR/profile-$name.txt"
        cat "$out/step_$name.json" >>"$out/fm_steps.jsonl"
        echo "bench: $name: fmtrain step in bf16..." >&2
        "$BUILD/tests/bench/bench_step" "$config" --name "$name" "${args[@]}" --set run.precision=bf16 \
            --steps "$steps" --warmup "$warmup" --profile-steps "$p" \
            >"$out/step_${name}_bf16.json" 2>"$out/err.txt" || { cat "$out/err.txt" >&2; exit 1; }
        [ "$r" = 1 ] && cp "$out/err.txt" "$PROFILE_DIR/profile-$name-bf16.txt"
        cat "$out/step_${name}_bf16.json" >>"$out/fm_steps_bf16.jsonl"
        echo "bench: $name: PyTorch step..." >&2
        "${TORCH_ENV[@]}" $PY tests/bench/torch_step.py "$THREADS" <"$out/step_$name.json" >>"$out/torch_steps.jsonl"
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

$PY - "$out" "$THREADS" "$stage_dir" <<'PYEOF'
import json, os, statistics, sys
out, threads, stage_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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

# training steps: per model and side, the round with the lowest median step
# time, with the per-layer profile of the first round (the one that has it)
def best_rounds(f, key):
    by = {}
    for d in lines(f):
        by.setdefault(d["name"], []).append(d)
    best = {}
    for name, runs in by.items():
        b = dict(min(runs, key=lambda d: d[key]))
        for d in runs:
            for k in ("profile_by_kind", "profile_by_block", "profile_step_s", "profile_coverage"):
                if d.get(k) is not None:
                    b[k] = d[k]
        b["rounds"] = [d[key] for d in runs]
        best[name] = b
    return best
torch_by = best_rounds("torch_steps.jsonl", "torch_step_s")
bf16_by = best_rounds("fm_steps_bf16.jsonl", "step_s")
fp32_by = best_rounds("fm_steps.jsonl", "step_s")
models = {}
hdr = (f"\n{'model (training step)':16s} {'params':>7s} {'batch':>5s} {'torch s':>8s} {'fp32 s':>8s} {'speed-up':>8s} "
       f"{'bf16 s':>7s} {'speed-up':>8s} "
       f"{'GFLOP':>7s} {'GFLOP/s':>8s} {'of peak':>7s} {'RSS MB':>7s} {'torch MB':>8s} {'act KB/smp':>10s}")
print(hdr)
for d in fp32_by.values():
    t = torch_by.get(d["name"], {})
    bf = bf16_by.get(d["name"])
    ts = t.get("torch_step_s")
    m = {
        "model": d["model"], "config": d["config"], "sets": d["sets"], "params": d["params"], "batch": d["batch"],
        "input": [d["side"], d["side"], d["ch"]], "threads": d["threads"],
        "torch_step_s": ts, "fp32_step_s": d["step_s"],
        "speedup_fp32": ts / d["step_s"] if ts else None,
        "bf16_step_s": bf["step_s"] if bf else None,
        "speedup_bf16": ts / bf["step_s"] if bf and ts else None,
        "bf16_vs_fp32": d["step_s"] / bf["step_s"] if bf else None,
        "bf16_peak_rss_mb": bf["peak_rss_mb"] if bf else None,
        "bf16_phase_s": bf["phase_s"] if bf else None,
        "bf16_profile_by_kind": bf.get("profile_by_kind") if bf else None,
        "gflop_per_step": d["gflop_per_step"], "gflop_per_step_counted": d["gflop_per_step_counted"],
        "peak_gflops": P, "fm_gflops": d["fm_gflops"], "fp32_peak_fraction": d["fm_gflops"] / P,
        "torch_gflops": d["gflop_per_step"] / ts if ts else None,
        "peak_rss_mb": d["peak_rss_mb"], "torch_peak_rss_mb": t.get("torch_peak_rss_mb"),
        "activation_bytes_per_sample": d["activation_bytes_per_sample"],
        "fp32_images_per_s": d["batch"] / d["step_s"],
        "steps": d["steps"], "fp32_step_s_all": d["step_s_all"], "torch_step_s_all": t.get("torch_step_s_all"),
        "bf16_step_s_all": bf["step_s_all"] if bf else None,
        "rounds": len(d["rounds"]), "fp32_step_s_rounds": d["rounds"], "bf16_step_s_rounds": bf["rounds"] if bf else None,
        "torch_step_s_rounds": t.get("rounds"),
        "fp32_phase_s": d["phase_s"], "torch_phase_s": t.get("torch_phase_s"),
        "profile_step_s": d.get("profile_step_s"), "profile_coverage": d.get("profile_coverage"),
        "profile_by_kind": d.get("profile_by_kind"), "profile_by_block": d.get("profile_by_block"),
    }
    models[d["name"]] = m
    f = lambda v, fmt: format(v, fmt) if v is not None else "-"
    print(f"{d['name']:16s} {d['params'] / 1e6:6.1f}M {d['batch']:5d} {f(ts, '8.3f')} {d['step_s']:8.3f} "
          f"{f(m['speedup_fp32'], '8.2f')} {f(m['bf16_step_s'], '7.3f')} {f(m['speedup_bf16'], '8.2f')} "
          f"{d['gflop_per_step']:7.1f} {d['fm_gflops']:8.1f} "
          f"{m['fp32_peak_fraction']:7.1%} {d['peak_rss_mb']:7.0f} {f(t.get('torch_peak_rss_mb'), '8.0f')} "
          f"{d['activation_bytes_per_sample'] / 1024:10.1f}")
print("  (GFLOP = 3 x forward FLOPs of convolutions and matrix products; speed-ups are torch fp32 / fmtrain; "
      "bf16 = run.precision: bf16;\n   each side's best of its rounds' median step times, rounds alternating)")
for name, m in models.items():
    if m["rounds"] > 1:
        g = lambda v: " ".join(f"{x:.3f}" for x in v) if v else "-"
        print(f"  {name} rounds: torch {g(m['torch_step_s_rounds'])} | fp32 {g(m['fp32_step_s_rounds'])} | "
              f"bf16 {g(m['bf16_step_s_rounds'])}")

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

json.dump({"threads": threads, "peak": peak, "layers": layers, "models": models, "flow_stage": stage},
          open("bench.json", "w"), indent=2)
print("wrote bench.json; profile tables in runs/bench/profile-<model>[-bf16].txt")
PYEOF
