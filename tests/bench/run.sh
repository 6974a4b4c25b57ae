#!/usr/bin/env bash
# make bench: fmtrain against PyTorch 1.13 on the same cases, same thread
# count, side by side. Not a test: it asserts nothing, it measures.
# PyTorch runs with OpenBLAS (libopenblas0-openmp) and without the
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pins some machines set.
# Writes bench.json at the repository root and prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS
PY=/usr/bin/python3
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS="$THREADS")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "bench: $THREADS threads; fmtrain layers..." >&2
"$BUILD/tests/bench/bench_layers" >"$out/fm_layers.jsonl"
echo "bench: PyTorch layers..." >&2
"${TORCH_ENV[@]}" $PY tests/bench/torch_layers.py "$THREADS" <"$out/fm_layers.jsonl" >"$out/torch_layers.jsonl"

$PY - "$out" "$THREADS" <<'PYEOF'
import json, sys, os
out, threads = sys.argv[1], int(sys.argv[2])
fm = [json.loads(l) for l in open(os.path.join(out, "fm_layers.jsonl"))]
tt = {d["case"]: d["torch_ms"] for d in map(json.loads, open(os.path.join(out, "torch_layers.jsonl")))}
rows = []
print(f"{'case':32s} {'fmtrain ms':>11s} {'torch ms':>9s} {'speed-up':>9s} {'fm GFLOP/s':>11s}")
for d in fm:
    t = tt[d["case"]]
    r = {"case": d["case"], "fm_ms": d["fm_ms"], "torch_ms": round(t, 3), "speedup": round(t / d["fm_ms"], 3),
         "fm_gflops": d["gflops"]}
    rows.append(r)
    print(f"{d['case']:32s} {d['fm_ms']:11.2f} {t:9.2f} {r['speedup']:9.2f} {d['gflops']:11.1f}")
json.dump({"threads": threads, "layers": rows}, open("bench.json", "w"), indent=2)
print("wrote bench.json")
PYEOF
