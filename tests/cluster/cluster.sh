#!/usr/bin/env bash
# cluster.sh - an N-node Slurm cluster on this one machine: every node is a
# network namespace with its own hostname (UTS namespace), its own address and
# its own slurmd, joined to a head namespace (slurmctld and a bridge) by a veth
# pair whose two ends are shaped by `tc`, so the nodes talk over a real, slow
# link. One munged (its own key and socket) serves every node. Needs root.
#
#   tests/cluster/cluster.sh start DIR [-n NODES] [-r RATE] [-l LATENCY]
#       NODES    nodes (default 2), named fmn1 .. fmnN, at 10.77.0.11 ..
#       RATE     each node link's bandwidth, both directions, tc syntax
#                (default 1gbit; 0 = not shaped)
#       LATENCY  one-way delay between two nodes, tc syntax (default 0; needs
#                the kernel's netem qdisc, which some kernels lack: then any
#                LATENCY other than 0 is refused)
#       Everything (config, munge key and socket, state, spool, logs, pid
#       files) lives under DIR; the script waits until every node is idle.
#   tests/cluster/cluster.sh stop DIR
#       cancel every job, stop every daemon by its pid file, kill whatever
#       still runs inside the cluster's namespaces (only processes started
#       there), delete the namespaces (with them the veths and the bridge), and
#       remove what start wrote under DIR except DIR/log
#   tests/cluster/cluster.sh exec DIR CMD...
#       run CMD on the head (its network namespace, SLURM_CONF set): sbatch,
#       squeue, scontrol, ... talk to this cluster from there
#   tests/cluster/cluster.sh on DIR NODE CMD...
#       run CMD on node NODE (fmn1 ..): its network namespace and hostname
#   tests/cluster/cluster.sh kill-node DIR NODE
#       SIGKILL every process of node NODE (slurmd, job steps, ranks): the node
#       is lost; its network stays
#   tests/cluster/cluster.sh start-node DIR NODE
#       start NODE's slurmd again (the node is back; ReturnToService=2 makes
#       it usable as soon as it registers)
#   tests/cluster/cluster.sh info DIR
#       the cluster's facts (cluster.env): namespaces, nodes, addresses, rate
#
# It never collides with tests/slurm/cluster.sh's one-node cluster or a system
# Slurm: its own ClusterName (fmcluster), config file, munge key and socket,
# state and spool directories, and its daemons listen only inside namespaces it
# created (named fmc<pid>-head, fmc<pid>-fmn1, ...: two clusters can run side by
# side). Nothing is added to the machine's own network namespace: the veth
# pairs are created with their ends already inside the namespaces, every
# address is inside them, and the subnet 10.77.0.0/24 exists only there.
#
# Network: the head holds bridge br0 (10.77.0.1); node fmnK has interface fm0
# (10.77.0.(10+K)), its peer hK is a port of br0. Traffic from fmnI to fmnJ
# leaves through fm0 on fmnI (shaped) and hJ on the head (shaped), so a
# node's link runs at RATE in each direction and the one-way delay node to node
# is LATENCY (half of it on each of the two egress queues). Every node calls
# the interface fm0, as every node of a real cluster calls its interconnect the
# same: Open MPI is pointed at it with OMPI_MCA_btl_tcp_if_include=fm0 (or
# the subnet), see docs/cluster.md.
#
# Slurm settings beyond the short-test ones of tests/slurm/daemons.sh:
#   TmpFS=DIR/tmp/NODE   each node's own temporary directory (srun --mpi=pmix
#                        puts its per-step directories there; in the shared
#                        /tmp the nodes' directories would collide)
#   TaskProlog           sets every task's TMPDIR to DIR/tmp/NODE, so Open
#                        MPI's session directories are per node and go away
#                        with the cluster (a killed node cannot clean up its own)
#   SlurmdTimeout=10     a node whose slurmd stops answering is DOWN within
#                        about 10 s (default 300 s), so a job on a lost node
#                        ends promptly
set -u

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
usage() {
    echo "usage: $0 start DIR [-n NODES] [-r RATE] [-l LATENCY] | stop DIR | exec DIR CMD... |" \
        "on DIR NODE CMD... | kill-node DIR NODE | start-node DIR NODE | info DIR" >&2
    exit 2
}
export PATH=$PATH:/usr/sbin
SUBNET=10.77.0
# shellcheck source=tests/slurm/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/../slurm/daemons.sh"

# load DIR: read DIR/cluster.env (written by start)
load() {
    [ -f "$1/cluster.env" ] || die "no cluster under $1 (no $1/cluster.env): start one first"
    # shellcheck disable=SC1091 # PREFIX NODES HEAD_NS SUBNET RATE LATENCY HALF_DELAY_US IFACE
    source "$1/cluster.env"
}

# node_ns NODE: the namespace of NODE; dies when NODE is not one of this cluster's
node_ns() {
    case " $NODES " in *" $1 "*) echo "$PREFIX-$1" ;; *) die "no node '$1' in this cluster (nodes: $NODES)" ;; esac
}

# shape NS DEV: RATE and half of LATENCY on DEV's egress inside NS
shape() {
    local ns=$1 dev=$2
    if [ "$RATE" != 0 ]; then
        # limit (queue bytes) large enough that the link never drops: a drop costs TCP a 200 ms timeout
        tc -n "$ns" qdisc add dev "$dev" root handle 1: tbf rate "$RATE" burst 256kb limit 64mb ||
            die "tc qdisc add (tbf rate $RATE) on $dev in $ns failed"
    fi
    if [ "$HALF_DELAY_US" != 0 ]; then
        local parent=(root)
        [ "$RATE" != 0 ] && parent=(parent 1:1)
        tc -n "$ns" qdisc add dev "$dev" "${parent[@]}" handle 10: netem delay "${HALF_DELAY_US}us" \
            limit 100000 || die "tc qdisc add (netem delay) on $dev in $ns failed"
    fi
}

# delay_us LATENCY: LATENCY (tc time syntax: 500us, 2ms, 0.1s, or a bare number of us) in microseconds
delay_us() {
    /usr/bin/python3 - "$1" <<'PYEOF'
import re, sys
m = re.fullmatch(r"([0-9.]+)(us|usec|ms|msec|s|sec|secs)?", sys.argv[1])
if not m:
    sys.exit(1)
scale = {None: 1, "us": 1, "usec": 1, "ms": 1e3, "msec": 1e3, "s": 1e6, "sec": 1e6, "secs": 1e6}[m.group(2)]
print(int(round(float(m.group(1)) * scale)))
PYEOF
}

# netem_available: whether this kernel has the netem qdisc (tried on a dummy
# veth inside a throw-away namespace)
netem_available() {
    local ns=$PREFIX-probe ok=1
    ip netns add "$ns" || return 1
    ip -n "$ns" link add p0 type veth peer name p1 &&
        tc -n "$ns" qdisc add dev p0 root netem delay 1ms 2>/dev/null && ok=0
    ip netns del "$ns"
    return $ok
}

start() {
    local d=$1 nodes=2 b n i ns node_hw
    shift
    RATE=1gbit
    local latency=0
    while [ $# -gt 0 ]; do
        case $1 in
        -n) nodes=${2:?-n needs a number}; shift 2 ;;
        -r) RATE=${2:?-r needs a rate}; shift 2 ;;
        -l) latency=${2:?-l needs a latency}; shift 2 ;;
        *) usage ;;
        esac
    done
    case $nodes in '' | *[!0-9]*) die "-n $nodes: the number of nodes must be a whole number from 1 to 200" ;; esac
    if [ "$nodes" -lt 1 ] || [ "$nodes" -gt 200 ]; then die "-n $nodes: the number of nodes must be from 1 to 200"; fi
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc, and slurmd starts jobs as their user)"
    for b in ip tc unshare munged slurmctld slurmd sinfo; do
        command -v "$b" >/dev/null || die "$b not found: install iproute2, util-linux, slurm-wlm and munge (scripts/setup.sh)"
    done
    mkdir -p "$d" || die "cannot create $d"
    d=$(cd "$d" && pwd)
    [ -f "$d/cluster.env" ] && die "$d already holds a cluster ($d/cluster.env): stop it first ($0 stop $d)"
    PREFIX=fmc$$
    HALF_DELAY_US=$(delay_us "$latency") || die "-l $latency: not a latency (examples: 0, 200us, 1ms)"
    HALF_DELAY_US=$((HALF_DELAY_US / 2))
    if [ "$HALF_DELAY_US" != 0 ] && ! netem_available; then
        die "-l $latency: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so no delay can be added;" \
            "use -l 0 (bandwidth is still shaped with tbf)"
    fi
    NODES=$(for i in $(seq "$nodes"); do printf 'fmn%d ' "$i"; done)
    NODES=${NODES% }
    mkdir -p "$d/munge" "$d/state" "$d/spool" "$d/log" "$d/run" || die "cannot create directories under $d"
    # the facts every other command reads; written first, so that stop can clean up a half-started cluster
    cat >"$d/cluster.env" <<EOF
PREFIX=$PREFIX
NODES="$NODES"
HEAD_NS=$PREFIX-head
SUBNET=$SUBNET
RATE=$RATE
LATENCY=$latency
HALF_DELAY_US=$HALF_DELAY_US
IFACE=fm0
EOF
    trap 'echo "cluster.sh: start failed: stopping what was started" >&2; stop "$d"' EXIT

    # ---- network: the head with bridge br0, one veth pair per node --------------------
    HEAD_NS=$PREFIX-head
    ip netns add "$HEAD_NS" || die "ip netns add $HEAD_NS failed"
    ip -n "$HEAD_NS" link set lo up
    ip -n "$HEAD_NS" link add br0 type bridge || die "cannot create the bridge in $HEAD_NS"
    ip -n "$HEAD_NS" addr add "$SUBNET.1/24" dev br0
    ip -n "$HEAD_NS" link set br0 up
    i=0
    for n in $NODES; do
        i=$((i + 1))
        ns=$PREFIX-$n
        ip netns add "$ns" || die "ip netns add $ns failed"
        ip -n "$ns" link set lo up
        ip link add fm0 netns "$ns" type veth peer name "h$i" netns "$HEAD_NS" ||
            die "cannot create the veth pair of $n"
        ip -n "$HEAD_NS" link set "h$i" master br0
        ip -n "$HEAD_NS" link set "h$i" up
        ip -n "$ns" addr add "$SUBNET.$((10 + i))/24" dev fm0
        ip -n "$ns" link set fm0 up
        shape "$ns" fm0
        shape "$HEAD_NS" "h$i"
    done

    # ---- munge: one daemon, its own key and socket (a unix socket: every namespace reaches it)
    start_munged "$d"

    # each job's TMPDIR is its node's own directory (a node's local /tmp): Open MPI's
    # session directories go there, and stop removes what a killed node left
    printf '#!/bin/sh\necho "export TMPDIR=%s/tmp/$SLURMD_NODENAME"\necho "export OMPI_MCA_orte_tmpdir_base=%s/tmp/$SLURMD_NODENAME"\n' "$d" "$d" >"$d/taskprolog.sh" &&
        chmod 755 "$d/taskprolog.sh" || die "cannot write $d/taskprolog.sh"

    # ---- slurm.conf: every node as this machine describes itself (slurmd -C) ----------
    node_hw=$(slurmd -C | head -n 1)
    case $node_hw in NodeName=*) ;; *) die "slurmd -C did not describe the node: $node_hw" ;; esac
    node_hw=${node_hw#NodeName=* }
    {
        cat <<EOF
# generated by tests/cluster/cluster.sh: a $nodes-node cluster in network namespaces $PREFIX-*, under $d
ClusterName=fmcluster
SlurmctldHost=fmhead($SUBNET.1)
SlurmctldPort=7817
SlurmdPort=7818
SlurmdSpoolDir=$d/spool/%n
TmpFS=$d/tmp/%n
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd-%n.pid
SlurmdLogFile=$d/log/slurmd-%n.log
SlurmdTimeout=10
TaskProlog=$d/taskprolog.sh
$(slurm_conf_common "$d")
EOF
        i=0
        for n in $NODES; do
            i=$((i + 1))
            echo "NodeName=$n NodeAddr=$SUBNET.$((10 + i)) $node_hw State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=${NODES// /,} Default=YES MaxTime=INFINITE State=UP"
    } >"$d/slurm.conf"
    export SLURM_CONF=$d/slurm.conf

    # ---- daemons: slurmctld on the head, one slurmd per node, each under its hostname
    in_ns "$HEAD_NS" unshare --uts sh -c 'hostname fmhead && exec slurmctld' ||
        die "slurmctld failed to start: $(tail -n 5 "$d/log/slurmctld.log" 2>/dev/null)"
    for n in $NODES; do start_slurmd "$d" "$n"; done
    local want idle
    want=$(echo "$NODES" | wc -w)
    for _ in $(seq 60); do
        idle=$(in_ns "$HEAD_NS" sinfo -h -N -t idle -o %N 2>/dev/null | wc -l)
        [ "$idle" -eq "$want" ] && { trap - EXIT; info "$d"; return 0; }
        sleep 0.5
    done
    die "only $idle of $want nodes idle after 30 s: $(in_ns "$HEAD_NS" sinfo -N 2>&1 | tr '\n' ' '); see $d/log"
}

# start_slurmd DIR NODE: NODE's slurmd in NODE's namespace under hostname NODE
start_slurmd() {
    local ns
    ns=$(node_ns "$2")
    mkdir -p "$1/spool/$2" "$1/tmp/$2" || die "cannot create $1/spool/$2 and $1/tmp/$2"
    # shellcheck disable=SC2016 # expanded by the inner shell
    SLURM_CONF=$1/slurm.conf in_ns "$ns" unshare --uts sh -c 'hostname "$0" && exec slurmd' "$2" ||
        die "slurmd of $2 failed to start: $(tail -n 5 "$1/log/slurmd-$2.log" 2>/dev/null)"
}

# in_ns NS CMD...: CMD in network namespace NS only (nsenter: unlike `ip netns exec`
# no new mount namespace, so /sys and its cgroup tree stay as they are, which slurmd needs)
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# ns_pids NS: the processes inside namespace NS
ns_pids() { ip netns pids "$1" 2>/dev/null; }

stop() {
    local d=$1 ns n pids
    [ -f "$d/cluster.env" ] || return 0
    load "$d"
    export SLURM_CONF=$d/slurm.conf
    # end the jobs first, so that no slurmstepd or rank outlives the cluster
    if [ -s "$d/run/slurmctld.pid" ] && kill -0 "$(cat "$d/run/slurmctld.pid")" 2>/dev/null; then
        cancel_jobs in_ns "$HEAD_NS"
    fi
    for n in $NODES; do stop_pid "$d/run/slurmd-$n.pid" "slurmd of $n"; done
    stop_pid "$d/run/slurmctld.pid" slurmctld
    stop_pid "$d/munge/munged.pid" munged
    # whatever still runs inside the cluster's namespaces was started there (by a job): end it
    for ns in "$HEAD_NS" $(for n in $NODES; do echo "$PREFIX-$n"; done); do
        pids=$(ns_pids "$ns")
        if [ -n "$pids" ]; then
            echo "cluster.sh: killing what still runs in $ns: $(echo "$pids" | tr '\n' ' ')" >&2
            # shellcheck disable=SC2086 # one word per pid
            kill -KILL $pids 2>/dev/null
        fi
    done
    for ns in $(for n in $NODES; do echo "$PREFIX-$n"; done) "$HEAD_NS"; do
        for _ in $(seq 50); do [ -z "$(ns_pids "$ns")" ] && break; sleep 0.1; done
        [ -e "/run/netns/$ns" ] && { ip netns del "$ns" || echo "cluster.sh: cannot delete namespace $ns" >&2; }
    done
    ip netns del "$PREFIX-probe" 2>/dev/null
    rm -rf "$d/munge" "$d/state" "$d/spool" "$d/tmp" "$d/run" "$d/slurm.conf" "$d/taskprolog.sh" "$d/cluster.env"
}

info() {
    local d=$1 n i=0
    load "$d"
    echo "cluster fmcluster under $d: SLURM_CONF=$d/slurm.conf; head namespace $HEAD_NS (slurmctld, $SUBNET.1)"
    for n in $NODES; do
        i=$((i + 1))
        echo "  node $n: namespace $PREFIX-$n, $IFACE $SUBNET.$((10 + i)), link rate ${RATE/#0/unshaped}," \
            "node-to-node latency $LATENCY"
    done
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
case $cmd in
start) start "$dir" "$@" ;;
stop) [ $# -eq 0 ] || usage; stop "$dir" ;;
info) [ $# -eq 0 ] || usage; info "$dir" ;;
exec)
    [ $# -ge 1 ] || usage
    load "$dir"
    SLURM_CONF=$(cd "$dir" && pwd)/slurm.conf exec nsenter --net="/run/netns/$HEAD_NS" "$@" ;;
on)
    [ $# -ge 2 ] || usage
    load "$dir"
    ns=$(node_ns "$1") || exit 1
    node=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner shell
    SLURM_CONF=$(cd "$dir" && pwd)/slurm.conf exec nsenter --net="/run/netns/$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$node" "$@" ;;
kill-node)
    [ $# -eq 1 ] || usage
    load "$dir"
    ns=$(node_ns "$1") || exit 1
    pids=$(ns_pids "$ns")
    [ -n "$pids" ] || die "nothing runs on $1"
    # shellcheck disable=SC2086 # one word per pid
    kill -KILL $pids
    echo "cluster.sh: killed $(echo "$pids" | wc -l) processes of $1: $(echo "$pids" | tr '\n' ' ')" ;;
start-node)
    [ $# -eq 1 ] || usage
    load "$dir"
    start_slurmd "$(cd "$dir" && pwd)" "$1" ;;
*) usage ;;
esac
