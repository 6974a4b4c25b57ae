#!/usr/bin/env bash
# sim.sh - run the skeleton (jobs/simulate/skeleton.c) on P simulated ranks.
#
#   jobs/simulate/sim.sh PLATFORM.xml P [RANKS_PER_NODE] -- SKELETON ARGS...
#
# Places rank r (and its communication actor) on host node-(r / RANKS_PER_NODE)
# of PLATFORM (default 1 rank a node; every platform here names its hosts
# node-0, node-1, ...), runs smpirun with the options that make SMPI follow
# the platform's alpha-beta figures (docs/scaling.md, "Simulation (SimGrid
# SMPI)"), and prints the skeleton's JSON line on stdout. SimGrid's own log
# goes to stderr (warnings and worse). Extra SMPI options in SIM_CFG (e.g.
# fitted factors: SIM_CFG="--cfg=smpi/bw-factor:65472:0.97"). Builds the
# skeleton when it is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 PLATFORM.xml P [RANKS_PER_NODE] -- SKELETON ARGS..." >&2; exit 2; }
[ $# -ge 3 ] || usage
platform=$1 p=$2; shift 2
rpn=1
if [ "$1" != "--" ]; then rpn=$1; shift; fi
[ "${1:-}" = "--" ] || usage
shift
[ -f "$platform" ] || { echo "sim.sh: $platform: no such platform file" >&2; exit 2; }
case "$p$rpn" in *[!0-9]*) usage ;; esac
[ "$p" -ge 2 ] && [ "$rpn" -ge 1 ] || { echo "sim.sh: need P >= 2 ranks and >= 1 rank a node" >&2; exit 2; }
command -v smpirun >/dev/null || { echo "sim.sh: smpirun not found: install libsimgrid-dev (scripts/setup.sh)" >&2; exit 2; }
skel=$here/../../build/simulate/skeleton
[ -x "$skel" ] || make -s -C "$here" >&2

hostfile=$(mktemp /tmp/fm-sim-hosts.XXXXXX)
trap 'rm -f "$hostfile"' EXIT
# world ranks 0..P-1 are the ranks' main threads, P..2P-1 their communication threads
for pass in 0 1; do
  for ((r = 0; r < p; r++)); do echo "node-$((r / rpn))"; done
done >"$hostfile"

# The options (measured on this machine, /work/shared/notes/scale.md and docs/scaling.md):
#   simulate-computation:no   only smpi_execute*() advances a rank's clock, not the real CPU time
#                             the skeleton spends between MPI calls
#   network/model:CM02, bw-factor and lat-factor 1 at every size
#                             a message of b bytes takes latency + b / bandwidth of its route
#                             (SMPI's default factors are fitted to another cluster)
#   network/crosstraffic:0    no 5 % of each flow's bandwidth charged to the reverse direction
#                             (an emulated TCP ack flow; it made a ring 5 % slower than alpha-beta)
#   smpi/test:0               MPI_Test/Testall cost no simulated time (SMPI's default 0.1 ms per
#                             call is there to stop busy loops; the skeleton has none)
#   privatization:no          the skeleton has no globals; all ranks share one image
#   coll-selector:ompi        the small world collectives (statistics allgather, stop check)
#                             use Open MPI's algorithms
# shellcheck disable=SC2086
smpirun -np $((2 * p)) -platform "$platform" -hostfile "$hostfile" \
  --cfg=smpi/simulate-computation:no --cfg=network/model:CM02 \
  --cfg=smpi/bw-factor:65472:1.0 --cfg=smpi/lat-factor:65472:1.0 --cfg=network/crosstraffic:0 \
  --cfg=smpi/privatization:no --cfg=smpi/coll-selector:ompi --cfg=smpi/test:0 \
  --log=root.thres:warning ${SIM_CFG:-} \
  "$skel" "$@"
