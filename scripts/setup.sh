#!/usr/bin/env bash
# setup.sh - install the Debian packages fmtrain needs, by group:
#
#   scripts/setup.sh [run|test|all]   install what is missing of the group (default all)
#   scripts/setup.sh --list GROUP     print the group's packages, one a line; install nothing
#
#   run   build and run fmtrain (`make`, `make run`)
#   test  what `make test`, `make bench`, `make fuzz` and the scaling studies add:
#         PyTorch, clang, a local Slurm (slurm-wlm, munge: their packages install
#         daemons), SimGrid, ...
#   all   both (`make test`, `make bench`, CI)
#
# Idempotent and non-interactive: apt-get runs only when a package is missing.
# What it does for a real machine:
#   - checks the distribution (/etc/os-release): Debian 12 is supported; on
#     another Debian-based system it warns and tries; without apt-get it stops
#     and lists the packages to find by hand
#   - installs as root, or through sudo: without a terminal only passwordless
#     sudo (probed with `sudo -n`); when it cannot install it prints the exact
#     command for an administrator and exits 1
#   - keeps the proxy variables (http_proxy, https_proxy, ...) across sudo
#   - waits for the dpkg and apt locks another apt or unattended-upgrades holds
#     (fcntl locks, as apt takes them), naming the holder, for at most
#     FM_SETUP_LOCK_WAIT seconds (default 600); apt-get itself waits as long
#     (DPkg::Lock::Timeout) should another apt take the lock in between
#   - retries failed downloads (Acquire::Retries=3)
# Environment (tests): FM_SETUP_ALWAYS=1 runs `apt-get install --no-upgrade`
# on the group even when nothing is missing (apt then changes nothing, but
# takes its locks);
# FM_SETUP_OS_RELEASE=FILE reads FILE instead of /etc/os-release.
set -euo pipefail

# build and run: compiler, MPI, oneDNN, the libraries fmtrain links, the data
RUN_PKGS=(
  build-essential make pkg-config
  libopenmpi-dev openmpi-bin
  libdnnl-dev
  libyaml-dev libpng-dev zlib1g-dev libcjson-dev liblapacke-dev
  dataset-fashion-mnist
  # fmtrain plot (scripts/plot_run.py): the run report
  python3 python3-matplotlib
)
# tests and benchmarks: PyTorch parity, sanitizers and fuzzing, local Slurm,
# scaling plots, a real BLAS for the PyTorch baseline, the scaling simulation
TEST_PKGS=(
  python3-torch python3-numpy python3-yaml
  clang libclang-rt-14-dev
  slurm-wlm munge
  # the multi-node cluster of make test-cluster (ip netns, veth, tc) and its write check; strace and gdb:
  # which rank reads the data and the memory each rank maps (tests/comm/test_shared.sh)
  iproute2 strace gdb
  libopenblas0-openmp
  libsimgrid-dev
)
LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock)
LOCK_WAIT=${FM_SETUP_LOCK_WAIT:-600}
KEEP_ENV=DEBIAN_FRONTEND,http_proxy,https_proxy,ftp_proxy,no_proxy,all_proxy,HTTP_PROXY,HTTPS_PROXY,FTP_PROXY,NO_PROXY,ALL_PROXY

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }
usage() { echo "usage: scripts/setup.sh [run|test|all] | --list run|test|all" >&2; exit 2; }

# group_pkgs GROUP: the packages of GROUP into PKGS
group_pkgs() {
  case $1 in
  run) PKGS=("${RUN_PKGS[@]}") ;;
  test) PKGS=("${TEST_PKGS[@]}") ;;
  all) PKGS=("${RUN_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  *) usage ;;
  esac
}

list=0
group=all
case $# in
0) ;;
1) [ "$1" = --list ] && usage; group=$1 ;;
2) [ "$1" = --list ] || usage; list=1 group=$2 ;;
*) usage ;;
esac
group_pkgs "$group"
if [ $list -eq 1 ]; then printf '%s\n' "${PKGS[@]}"; exit 0; fi

# ---- the distribution ----
os_release=${FM_SETUP_OS_RELEASE:-/etc/os-release}
ID='' VERSION_ID='' PRETTY_NAME='' ID_LIKE=''
# shellcheck disable=SC1090 # the system's file (or the test's)
[ -r "$os_release" ] && . "$os_release"
distro=${PRETTY_NAME:-${ID:-an unknown system}}
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  die "$distro has no apt-get/dpkg: this script installs Debian packages. fmtrain is supported on Debian 12;" \
      "elsewhere install the equivalents of: ${PKGS[*]}"
fi
if [ "$ID" = debian ] && [ "$VERSION_ID" = 12 ]; then
  :
elif [ "$ID" = debian ] || [[ " $ID_LIKE " == *" debian "* ]]; then
  say "warning: $distro is not Debian 12, the one system fmtrain is tested on: trying anyway" \
      "(package names may differ, e.g. libclang-rt-14-dev, libdnnl-dev must be oneDNN 2.x)" >&2
else
  say "warning: $distro is not Debian-based; fmtrain is supported on Debian 12: trying anyway" >&2
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ] && [ "${FM_SETUP_ALWAYS:-0}" != 1 ]; then
  say "all ${#PKGS[@]} packages of group '$group' present"
  exit 0
fi
install=("${missing[@]}")
# only what is missing is named, so apt upgrades nothing already installed
# (a package named on the command line would be upgraded)
[ ${#install[@]} -gt 0 ] || install=(--no-upgrade "${PKGS[@]}") # FM_SETUP_ALWAYS=1

# ---- privileges: root, or sudo that can run without a prompt (or with one, at a terminal) ----
APT_OPTS=(-o Acquire::Retries=3 -o DPkg::Lock::Timeout="$LOCK_WAIT")
admin_cmd() {
  [ ${#missing[@]} -eq 0 ] || echo "  apt-get update"
  echo "  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${install[*]}"
}
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  why=
  if ! command -v sudo >/dev/null; then
    why="you are not root and sudo is not installed"
  elif sudo -n --preserve-env="$KEEP_ENV" true 2>/dev/null; then
    SUDO=(sudo -n --preserve-env="$KEEP_ENV")
  elif [ -t 0 ] && [ -t 2 ]; then
    say "installing needs root: sudo will ask for your password"
    SUDO=(sudo --preserve-env="$KEEP_ENV")
  else
    why="you are not root and sudo cannot run without a password here (sudo -n failed)"
  fi
  if [ -n "$why" ]; then
    {
      echo "setup: error: ${#missing[@]} package(s) of group '$group' missing: ${missing[*]}"
      echo "setup: $why, so this script cannot install them. Ask an administrator to run, as root:"
      admin_cmd
      echo "setup: then run this command again (or run it as root)."
    } >&2
    exit 1
  fi
fi

# ---- the locks ----
# holder LOCKFILE: "PID (COMMAND)" of the process holding an fcntl lock on
# LOCKFILE, from /proc/locks; nothing when it is free
holder() {
  local dev ino id pid cmd
  [ -e "$1" ] || return 0
  read -r dev ino < <(stat -L -c '%d %i' "$1") || return 0
  id=$(printf '%02x:%02x:%s' $(((dev >> 8) & 0xfff)) $(((dev & 0xff) | ((dev >> 12) & 0xfff00))) "$ino")
  pid=$(awk -v id="$id" '$2 != "->" && $6 == id { print $5; exit }' /proc/locks 2>/dev/null)
  [ -n "$pid" ] || return 0
  cmd=$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null) || cmd=
  cmd=${cmd% }
  [ ${#cmd} -le 100 ] || cmd="${cmd:0:97}..."
  echo "$pid (${cmd:-a process of another namespace})"
}
# wait_locks: until none of LOCKS is held, at most LOCK_WAIT s in all; names
# each holder once
wait_locks() {
  local t0 lock h last=
  t0=$(date +%s)
  while :; do
    h=
    for lock in "${LOCKS[@]}"; do
      h=$(holder "$lock")
      [ -z "$h" ] || break
    done
    [ -n "$h" ] || return 0
    # once per lock and pid: the command line read from /proc may change or vanish between looks
    if [ "$lock ${h%% *}" != "$last" ]; then
      say "waiting for $lock, held by pid $h (at most ${LOCK_WAIT} s; FM_SETUP_LOCK_WAIT changes it)"
      last="$lock ${h%% *}"
    fi
    if [ $(($(date +%s) - t0)) -ge "$LOCK_WAIT" ]; then
      die "$lock is still held by pid $h after ${LOCK_WAIT} s: wait for it to finish (unattended-upgrades" \
          "can take minutes) and run this command again, or raise FM_SETUP_LOCK_WAIT"
    fi
    sleep 1
  done
}

say "installing on $distro: ${install[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  wait_locks
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -q ||
    die "apt-get update failed (see above): check the network and proxy (http_proxy), then run this again"
fi
wait_locks
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${install[@]}" ||
  die "apt-get install failed (see above); the command was: apt-get install -y --no-install-recommends ${install[*]}"
say "done"
