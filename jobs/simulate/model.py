"""model.py - the alpha-beta model of fmtrain's data-parallel step (the skeleton's twin).

jobs/simulate/skeleton.c replays a schedule on SimGrid; this module computes the
same step in closed form, so that points SMPI cannot afford here (256 and 1,024
ranks with many buckets, thousands of sensitivity points) still have a figure.
jobs/simulate/study.py checks it against SMPI wherever both run and prints the
difference beside the tables. Used by study.py and calibrate.py; no main.

Network (a platform of jobs/simulate/platforms): ranks placed q a node in rank
order; between nodes a message of b bytes takes alpha + b / bw (each node a
private full-duplex link into a non-blocking fat-tree), inside a node
alpha_i + b / bw_i. The reductions' additions are free (the skeleton's default
--reduce-gbs 0).

Engines (as skeleton.c):
  ring (new)   buckets one after another on the communication thread, each
               starting when handed over and the previous one has finished;
               2(p-1) rounds of n/p bytes (reduce-scatter + allgather), or with
               ZeRO-1 only the p-1 reduce-scatter rounds and, after the
               optimiser, an allgather of every bucket.
  binomial     the old in-place libnbc MPI_Iallreduce (p a power of 2): a binomial
  (old)        reduce to rank 0 (a receive and an addition round per level)
               then rank 0 sends to ranks 1, 2, 4, ... in one round and each of
               those forwards in turn; a round starts only at a progress call
               of the main thread: at the bucket hand-overs during backward,
               then continuously in the final wait. Rank 0's sends of one round
               share its link; buckets in flight share rank 0's link in both
               directions (first come, first served).
"""
import heapq
import json
import math
import statistics


class Net:
    """alpha (s) and bw (bytes/s) between nodes, alpha_i and bw_i inside one, q ranks a node"""

    def __init__(self, alpha, bw, alpha_i=0.25e-6, bw_i=10e9, q=1):
        self.alpha, self.bw, self.alpha_i, self.bw_i, self.q = alpha, bw, alpha_i, bw_i, q

    def msg(self, nbytes, same_node):
        return (self.alpha_i + nbytes / self.bw_i) if same_node else (self.alpha + nbytes / self.bw)

    def ring_round(self, p, nbytes):
        """one round of a ring of p ranks, each sending nbytes to the next (ms)"""
        if p <= self.q:
            return self.msg(nbytes, True)
        t = self.msg(nbytes, False)  # one rank per node sends to the next node; its link is its own
        return max(t, self.msg(nbytes, True)) if self.q > 1 else t

    def small_coll(self, p, nbytes_per_level=8):
        """a small allreduce / allgather (recursive doubling): log2(p) levels"""
        t, d = 0.0, 1
        while d < p:
            t += self.msg(nbytes_per_level * d, d < self.q)
            d *= 2
        return t


def load_schedule(path):
    """fmtrain-schedule-1 -> one representative step: medians over the recorded steps (ms)"""
    d = json.load(open(path))
    st = d["steps"]
    med = lambda k: statistics.median(s[k] for s in st)
    nb = len(d["buckets"])
    ready = [statistics.median(s["bucket_ready_ms"][k] for s in st) for k in range(nb)]
    for k in range(1, nb):  # medians of non-decreasing series can cross; keep the order
        ready[k] = max(ready[k], ready[k - 1])
    return {
        "model": d.get("model"), "world": d["world_size"], "zero": bool(d["zero"]), "params": d["params"],
        "batch_per_rank": d["global_batch"] // d["world_size"],
        "floats": [b["floats"] for b in d["buckets"]], "ready": ready,
        "forward": med("forward_ms"), "backward": med("backward_ms"), "clip": med("clip_ms"),
        "adamw": med("adamw_ms"), "ema": med("ema_ms"), "rest": med("rest_ms"),
    }


def scale_batch(a, b, batch):
    """the schedule at `batch` per rank from schedules a and b measured at two batches x0 < x1: compute
    and the rest of the step piecewise linear in the batch, through 0 at batch 0, the measured times at
    x0 and x1, and proportional to the batch above x1 (per-image cost of the larger batch); hand-overs at
    the same share of backward as in the schedule at x1; the optimiser does not depend on the batch"""
    lo, hi = (a, b) if a["batch_per_rank"] < b["batch_per_rank"] else (b, a)
    x0, x1 = lo["batch_per_rank"], hi["batch_per_rank"]

    def f(k):
        if batch <= x0:
            return lo[k] * batch / x0
        if batch <= x1:
            return lo[k] + (hi[k] - lo[k]) * (batch - x0) / (x1 - x0)
        return hi[k] * batch / x1
    s = dict(hi)
    s["batch_per_rank"] = batch
    for k in ("forward", "backward", "rest"):
        s[k] = f(k)
    s["ready"] = [r * s["backward"] / hi["backward"] for r in hi["ready"]]
    return s


def faster(s, speed):
    """the schedule on nodes `speed` times as fast (every computed phase divided by it; the skeleton's
    --speed): e.g. a rank with 16 cores where the schedule was measured with one"""
    f = dict(s)
    for k in ("forward", "backward", "clip", "adamw", "ema", "rest"):
        f[k] = s[k] / speed
    f["ready"] = [r / speed for r in s["ready"]]
    return f


def rebucket(s, bucket_mb):
    """neighbouring buckets merged while the merged one stays <= bucket_mb MiB (schedule.c's rule);
    a merged bucket is handed over when its last part is"""
    if bucket_mb <= 0:
        return list(s["floats"]), list(s["ready"])
    cap = bucket_mb * 1048576 / 4
    fl, rd = [], []
    for n, r in zip(s["floats"], s["ready"]):
        if fl and fl[-1] + n <= cap:
            fl[-1] += n
            rd[-1] = r
        else:
            fl.append(n)
            rd.append(r)
    return fl, rd


def to_skeleton_json(s, path, zero_measured=None):
    """write s as a one-step fmtrain-schedule-1 file the skeleton reads (s's times, its buckets)"""
    nb = len(s["floats"])
    step = {"step": 1, "step_ms": 0, "forward_ms": s["forward"], "backward_ms": s["backward"],
            "wait_after_backward_ms": 0, "stats_allgather_ms": 0, "clip_ms": s["clip"], "adamw_ms": s["adamw"],
            "ema_ms": s["ema"], "param_allgather_ms": 0, "rest_ms": s["rest"], "bucket_ready_ms": s["ready"],
            "bucket_reduce_start_ms": [0] * nb, "bucket_reduce_end_ms": [0] * nb,
            "rank_compute_ms": [s["forward"] + s["backward"]] * s["world"]}
    d = {"format": "fmtrain-schedule-1", "stage": "flow", "model": s.get("model") or "unet",
         "world_size": s["world"], "threads_per_rank": 1,
         "zero": s["zero"] if zero_measured is None else zero_measured,
         "global_batch": s["batch_per_rank"] * s["world"], "params": s["params"],
         "forward_flops_per_rank_step": 0, "bucket_mb": 0.25, "comm_ms_alone": 0,
         "buckets": [{"floats": n, "bytes": 4 * n, "tensors": 1, "packed": False} for n in s["floats"]],
         "steps": [step, dict(step, step=2)]}
    with open(path, "w") as f:
        json.dump(d, f)


def _polls_after(t, polls, end, count):
    """the time of the count-th progress call at or after t (count = 1 or 2): hand-over polls during
    backward (each a call, equal times included), then the final wait, where calls follow at once"""
    for i, q in enumerate(polls):
        if q >= t:
            if count == 1:
                return q
            return polls[i + 1] if i + 1 < len(polls) else max(q, end)
    return max(t, end)


def _binomial(fl, rd, backward_end, net, p):
    """end time (ms from backward start) of every bucket of the old engine. The buckets' rounds are
    taken in time order (a heap), so that rank 0's node link serves them first come, first served."""
    m = int(round(math.log2(p)))
    if 2 ** m != p:
        raise ValueError(f"the binomial model needs a power-of-2 rank count, not {p}")
    lq = int(round(math.log2(min(net.q, p))))
    down_free = up_free = 0.0  # rank 0's node link, ms
    ends = [0.0] * len(fl)
    sender = [0] * len(fl)
    heap = [(r0, k, 0) for k, r0 in enumerate(rd)]  # (time the level is posted, bucket, level)
    heapq.heapify(heap)
    while heap:
        t, k, lev = heapq.heappop(heap)
        polls, nb = rd[k:], 4.0 * fl[k]  # the polls at this and the later hand-overs
        if lev < m:  # reduce: rank 0 (and every subtree root alike) receives from 2^lev
            if 2 ** lev < net.q:
                done = t + 1e3 * net.msg(nb, True)
            else:
                done = max(t, down_free) + 1e3 * net.msg(nb, False)
                down_free = done - 1e3 * net.alpha
            # the receive round ends at a progress call, the addition round at the next one
            nxt = _polls_after(done, polls, backward_end, 2)
        else:
            # broadcast along the chain 0 -> 1 -> 3 -> 7 ...: rank c receives from its parent, and at
            # its next progress call sends to its m - j children in one round (its inter-node sends
            # share its link); node 0's link carries every inter-node send of its q ranks,
            # q (m - log2 q) buckets' worth, after the other buckets' already there
            j = lev - m
            children = [sender[k] + 2 ** i for i in range(j, m)]
            inter = sum(1 for c in children if c // net.q != sender[k] // net.q)
            start = t
            if j == 0 and net.q < p:
                start = max(t, up_free)
                up_free = start + 1e3 * net.q * (m - lq) * nb / net.bw
                ends[k] = max(ends[k], up_free + 1e3 * net.alpha)
            tt = start + 1e3 * (net.alpha + inter * nb / net.bw) if inter else start
            if inter < len(children):
                tt = max(tt, start + 1e3 * net.msg(nb, True))
            ends[k] = max(ends[k], tt)
            nxt = _polls_after(tt, polls, backward_end, 1)
            sender[k] += 2 ** j
        if lev + 1 < 2 * m:
            heapq.heappush(heap, (nxt, k, lev + 1))
        else:
            ends[k] = max(ends[k], t)
    return ends


def step(s, p, net, engine="ring", zero=False, bucket_mb=0.0, grid=None):
    """one steady-state training step at p ranks; dict of ms: step (the training step, without the
    periodic grids), compute, blocked, optimiser, comm_exposed, rank0, buckets, comm_alone. grid = (images, ms per image, every K steps): the periodic sample
    grids, amortised per step; the old engine drew them on rank 0 while the others waited, the new one
    splits them by sample index (ceil(images / p) each)"""
    fl, rd = rebucket(s, bucket_mb)
    F, B = s["forward"], s["backward"]
    ring = engine == "ring"
    if zero and not ring:
        raise ValueError("the binomial engine had no ZeRO-1")
    if ring:
        t = 0.0
        alone = 0.0
        for n, r in zip(fl, rd):
            rounds = (p - 1) * (1 if zero else 2)
            dt = 1e3 * rounds * net.ring_round(p, 4.0 * n / p)
            t = max(t, r) + dt
            alone += dt
        last = t
        ag = sum(1e3 * (p - 1) * net.ring_round(p, 4.0 * n / p) for n in fl) if zero else 0.0
        alone += ag
    else:
        ends = _binomial(fl, rd, B, net, p)
        last = max(ends)
        alone = max(_binomial(fl, [0.0] * len(fl), 0.0, net, p))
        ag = 0.0
    blocked = max(0.0, last - B)
    g = (1.0 / p if zero else 1.0) / (1.0 / s["world"] if s["zero"] else 1.0)
    opt = g * (s["clip"] + s["adamw"] + s["ema"])
    small = 1e3 * (net.small_coll(p, 16) + net.small_coll(p, 4) + (net.small_coll(p, 8) if zero else 0.0))
    rank0 = 0.0
    if grid:
        images, per_image, every = grid
        rank0 = (images if not ring else math.ceil(images / p)) * per_image / every
    total = F + B + blocked + small + opt + ag + s["rest"]
    return {"step": total, "compute": F + B, "blocked": blocked, "optimiser": opt, "comm_exposed": blocked + ag + small,
            "rank0": rank0, "buckets": len(fl), "comm_alone": alone}


def single_rank_ms(s):
    """the same step on one rank: no communication, the whole optimiser"""
    g = 1.0 / (1.0 / s["world"] if s["zero"] else 1.0)
    return s["forward"] + s["backward"] + g * (s["clip"] + s["adamw"] + s["ema"]) + s["rest"]
