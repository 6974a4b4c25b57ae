#!/usr/bin/env bash
# Install every Debian package fmtrain needs to build, run, test and benchmark.
# Idempotent and non-interactive: packages already present are not touched, and
# apt-get runs only when something is missing. Needs root (or sudo).
set -euo pipefail

PKGS=(
  # build
  build-essential make pkg-config
  libopenmpi-dev openmpi-bin
  libdnnl-dev
  libyaml-dev libpng-dev zlib1g-dev libcjson-dev liblapacke-dev
  # data
  dataset-fashion-mnist
  # tests: PyTorch parity, sanitizers, fuzzing, local Slurm; scaling plots
  python3 python3-torch python3-numpy python3-yaml python3-matplotlib
  clang libclang-rt-14-dev
  slurm-wlm munge
  # benchmark baseline: a real BLAS for PyTorch
  libopenblas0-openmp
  # scaling simulation (jobs/simulate): SimGrid SMPI's smpicc and smpirun
  libsimgrid-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
