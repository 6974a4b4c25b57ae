# veth_cluster.sh - sourced by jobs/overlap.sh and jobs/simulate/calibrate.sh
# (LINK=veth): a 2-node Slurm cluster of network namespaces on this machine
# (tests/cluster/cluster.sh), each node's veth shaped to a rate, and a job run
# on it with one or more ranks per node over the nodes' interface fm0.
#
#   veth_cluster_start DIR RATE   start a cluster under DIR (stopped on exit),
#                                 or take the running one CLUSTER=DIR names
#                                 (then RATE is its own); sets VETH_C, VETH_RATE
#   veth_cluster_stop             stop the cluster veth_cluster_start started
#   veth_mpirun LOG RPN ARGS...   sbatch --wait -N 2 --ntasks-per-node=RPN a job
#                                 running `mpirun -np 2*RPN ARGS` (TCP on fm0
#                                 between the nodes, shared memory inside
#                                 one), from the current directory; its output
#                                 into LOG
# The caller defines die (message, exit).
VETH_CL=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/cluster/cluster.sh
VETH_C= VETH_RATE= VETH_OWN=

veth_cluster_start() {
  if [ -n "${CLUSTER:-}" ]; then
    [ -f "$CLUSTER/cluster.env" ] || die "CLUSTER=$CLUSTER: no running cluster there (tests/cluster/cluster.sh start DIR)"
    VETH_C=$(cd "$CLUSTER" && pwd)
  else
    VETH_C=$1 VETH_OWN=1
    mkdir -p "$(dirname "$VETH_C")" || die "cannot create $(dirname "$VETH_C")"
    chmod 755 "$(dirname "$VETH_C")" # munged wants every directory above its socket searchable by all
    trap veth_cluster_stop EXIT
    "$VETH_CL" start "$VETH_C" -n 2 -r "$2" || die "cannot start the 2-node cluster under $VETH_C"
  fi
  VETH_RATE=$(. "$VETH_C/cluster.env" && echo "$RATE")
}

veth_cluster_stop() {
  [ -n "$VETH_OWN" ] && "$VETH_CL" stop "$VETH_C"
  VETH_OWN=
}

veth_mpirun() {
  local log=$1 rpn=$2; shift 2
  local args
  printf -v args ' %q' "$@"
  "$VETH_CL" exec "$VETH_C" sbatch --wait --quiet -N 2 --ntasks-per-node="$rpn" --chdir="$PWD" -o "$log" --wrap \
    "mpirun -np $((2 * rpn)) --bind-to none --mca btl tcp,vader,self --mca btl_tcp_if_include fm0 -x OMP_NUM_THREADS=1$args"
}
