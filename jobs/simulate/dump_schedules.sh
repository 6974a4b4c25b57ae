#!/usr/bin/env bash
# dump_schedules.sh - measure the schedules the simulated scaling study replays.
#
#   jobs/simulate/dump_schedules.sh [OUT_DIR]     (default jobs/simulate/schedules)
#
# For each model of the study (MODELS, default "unet dit unet16m") and each
# batch per rank in BATCHES (default "8 64"): a real 2-rank x 1-thread run of
# fmtrain's flow stage (`--dump-schedule`, dist.batch=per_rank, 0.25 MiB
# buckets so that the hand-over times are fine-grained; the simulator merges
# them into larger buckets), copied to OUT_DIR/<model>-b<batch>.json. The
# models:
#   unet     configs/ldm.yaml (the default U-Net on 8x8x4 latents)
#   dit      configs/dit.yaml
#   unet16m  configs/ldm.yaml with unet.channels=[128,256] unet.res_blocks=2
#            (the 16 M-parameter U-Net of tests/bench/run.sh)
# The latents come from one short VAE + encode run (VAE_STEPS steps on
# TRAIN_LIMIT images): their values do not change the timings.
# STEPS schedule steps are recorded after fmtrain's 3 warm-up steps (default 5; the run trains
# 2 more so that the end of the stage, its checkpoint, is not in the window).
#
# Measure on a quiet machine: timings taken under load are inflated, and the
# study (jobs/simulate/study.py) replays them as they are. On this 2-core
# machine the whole dump takes a few minutes. Needs ./fmtrain (make).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${1:-jobs/simulate/schedules}
MODELS=${MODELS:-unet dit unet16m}
BATCHES=${BATCHES:-8 64}
STEPS=${STEPS:-5}
TRAIN_LIMIT=${TRAIN_LIMIT:-1024} VAE_STEPS=${VAE_STEPS:-2}
FMTRAIN=${FMTRAIN:-./fmtrain}
RUNS=${RUNS:-runs/schedules}
die() { echo "dump_schedules.sh: error: $*" >&2; exit 2; }
[ -x "$FMTRAIN" ] || die "$FMTRAIN not built: run make"
command -v mpirun >/dev/null || die "mpirun not found (Debian openmpi-bin; scripts/setup.sh installs it)"
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT" "$RUNS"

model_args() { # config and --set overrides of a model
  case $1 in
    unet) echo "configs/ldm.yaml" ;;
    dit) echo "configs/dit.yaml" ;;
    unet16m) echo "configs/ldm.yaml --set unet.channels=[128,256] --set unet.res_blocks=2" ;;
    *) die "unknown model $1 (expected unet, dit or unet16m)" ;;
  esac
}

common=(--set data.train_limit="$TRAIN_LIMIT" --set data.test_limit=256)
base=$RUNS/latents
if [ ! -f "$base/.done" ]; then
  rm -rf "$base"
  echo "dump_schedules: VAE + encode ($VAE_STEPS steps, $TRAIN_LIMIT images) in $base" >&2
  OMP_NUM_THREADS=1 "$FMTRAIN" configs/ldm.yaml --out "$base" "${common[@]}" --set 'run.stages=[vae,encode]' \
    --set vae.steps="$VAE_STEPS" --set vae.warmup=1 --set vae.ckpt_every="$VAE_STEPS" --set vae.batch_size=32 \
    --set encode.batch_size=256 >"$RUNS/latents.log" 2>&1 || die "the VAE/encode run failed: see $RUNS/latents.log"
  touch "$base/.done"
fi

for m in $MODELS; do
  read -r -a margs <<<"$(model_args "$m")"
  for b in $BATCHES; do
    dir=$RUNS/$m-b$b
    rm -rf "$dir"
    cp -r "$base" "$dir"
    echo "dump_schedules: $m, batch $b per rank, 2 ranks x 1 thread" >&2
    mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1 "$FMTRAIN" "${margs[@]}" --out "$dir" "${common[@]}" \
      --set 'run.stages=[flow]' --set dist.batch=per_rank --set flow.batch_size="$b" \
      --set flow.steps=$((STEPS + 5)) --set flow.warmup=1 --set flow.ckpt_every=100000 --set flow.sample_every=0 \
      --set flow.bucket_mb=0.25 --dump-schedule="$STEPS" >"$dir.log" 2>&1 ||
      die "the $m run (batch $b per rank) failed: see $dir.log"
    [ -f "$dir/schedule-flow.json" ] || die "$dir/schedule-flow.json was not written: see $dir.log"
    cp "$dir/schedule-flow.json" "$OUT/$m-b$b.json"
    echo "dump_schedules: wrote $OUT/$m-b$b.json (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
done
