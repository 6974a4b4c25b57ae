/* commsched.h - how the gradient communication thread gets a core while the
 * compute threads occupy them all (dist.comm_sched).
 *
 * With as many compute threads as cores, the communication thread waits for
 * the scheduler to preempt one of them each time it wakes: on Linux ≥ 6.6
 * (EEVDF) up to the running thread's slice (0.7 ms × (1 + log2 cores)), so a
 * bucket handed over during backward can wait milliseconds before its
 * reduction starts, and every poll of an in-flight reduction waits again.
 * The policies, in the order `auto` tries them:
 *
 *   rt     SCHED_FIFO priority FM_COMM_RT_PRIO (root, CAP_SYS_NICE or
 *          RLIMIT_RTPRIO >= 1): it preempts any SCHED_OTHER thread on wake-up,
 *          whatever else runs on the node. First because it was the most
 *          reliable in the per-bucket schedules on this machine (bucket 0's
 *          hand-over to reduction start: p90 0.18 ms against 3.7 ms under
 *          slice with other jobs running, docs/scaling.md).
 *   slice  the communication thread stays SCHED_OTHER (same nice) with a
 *          custom EEVDF slice of FM_COMM_SLICE_NS (sched_setattr's
 *          sched_runtime; Linux >= 6.12, no privilege needed): with the
 *          kernel's PREEMPT_SHORT a woken short-slice thread preempts the
 *          compute thread at once, and its short slice ends its turn soon.
 *          Available when the kernel reports the slice back (sched_getattr).
 *   nice   (only when asked for) every compute thread (the calling thread and
 *          each OpenMP worker) raises its nice value to the communication
 *          thread's + FM_COMM_NICE_STEP (at most 19): the scheduler favours the
 *          communication thread by weight. An unprivileged thread can never
 *          lower its nice again, so this lasts for the process (a later
 *          trained stage's communication thread inherits the raised value and
 *          raises the compute threads once more); auto never picks it.
 *   none   nothing changes.
 *
 * Under slice and rt every wake-up of the communication thread preempts a
 * compute thread, so its waits must not spin: instead of the yielding poll
 * (sched_yield gives a real-time thread's core to no SCHED_OTHER thread, and
 * 5 us sleeps would preempt compute 100 000 times a second while a slow link
 * drains) it tests for 50 us, which a fast link's round needs, then sleeps
 * between MPI tests, 10 us doubling up to FM_COMM_POLL_S (fm_world_poll),
 * with a timer slack of 1 ns. With nothing to do the communication thread sleeps on a
 * condition variable: no policy costs compute time then. */
#ifndef FM_COMMSCHED_H
#define FM_COMMSCHED_H

#include "fm/status.h"

/* The values of dist.comm_sched, in the order of fm_comm_sched_names
 * (config.h). */
typedef enum fm_comm_sched {
    FM_COMM_SCHED_AUTO,
    FM_COMM_SCHED_SLICE,
    FM_COMM_SCHED_RT,
    FM_COMM_SCHED_NICE,
    FM_COMM_SCHED_NONE,
    FM_COMM_SCHED_COUNT
} fm_comm_sched;

#define FM_COMM_SLICE_NS 100000ull /* the kernel's shortest custom slice (100 us) */
#define FM_COMM_RT_PRIO 1
#define FM_COMM_POLL_S 200e-6     /* slice, rt: the longest sleep between MPI tests (see docs/scaling.md) */
#define FM_COMM_NICE_STEP 5

/* What is in force on one rank. */
typedef struct fm_comm_sched_state {
    int mode;            /* FM_COMM_SCHED_SLICE, _RT, _NICE or _NONE */
    double poll_sleep_s; /* > 0: waits sleep this long between MPI tests (rt); 0: the yielding poll */
    int comm_nice;       /* the communication thread's nice value */
    int compute_nice;    /* nice: the compute threads' new value */
    char tried[320];     /* auto: why the policies before `mode` were not available ("" if none) */
} fm_comm_sched_state;

/* The policy's name: "auto", "slice", "rt", "nice", "none". */
const char *fm_comm_sched_name(int mode);

/* On the communication thread, before its first MPI call: name the thread
 * "fmtrain-comm" (ps -L, top -H), put `want` in force for it (auto: rt,
 * else slice, else none; nice and none change nothing here) and fill *st. An explicitly requested slice or rt that the
 * system refuses: FM_ERR_USAGE naming dist.comm_sched, why, and what to do. */
int fm_comm_sched_thread(int want, fm_comm_sched_state *st, fm_err *e);

/* fm_comm_sched_thread on a thread of its own that ends at once (the
 * caller's threads keep their scheduling): what `want` would put in force
 * here, for --dry-run. */
int fm_comm_sched_probe(int want, fm_comm_sched_state *st, fm_err *e);

/* On the compute (calling) thread, after the communication thread has filled
 * *st: for nice, raise the nice value of this thread and of every OpenMP
 * worker thread to st->comm_nice + FM_COMM_NICE_STEP (capped at 19; an error
 * when already there or when the system refuses); otherwise nothing. */
int fm_comm_sched_compute(fm_comm_sched_state *st, fm_err *e);

/* One line for the log: what is in force and what it means, e.g.
 * "slice: communication thread SCHED_OTHER with a 100 us EEVDF slice". */
void fm_comm_sched_describe(const fm_comm_sched_state *st, char *buf, int cap);

#endif
