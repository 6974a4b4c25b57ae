/* commsched.c - the communication thread's scheduling policy (commsched.h). */
#define _GNU_SOURCE /* syscall, SYS_sched_setattr, SYS_gettid */
#include "fm/commsched.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *const names[FM_COMM_SCHED_COUNT] = { "auto", "slice", "rt", "nice", "none" };

const char *fm_comm_sched_name(int mode)
{
    return mode >= 0 && mode < FM_COMM_SCHED_COUNT ? names[mode] : "?";
}

/* The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER0, 48 bytes); glibc
 * before 2.41 has neither the type nor a wrapper. */
typedef struct fm_sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
} fm_sched_attr;

static int thread_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0); /* on Linux: of the calling thread */
    return errno ? 0 : n;
}

static const char *kernel_release(struct utsname *u) { return uname(u) == 0 ? u->release : "?"; }

/* SCHED_OTHER at the thread's nice with a custom slice; 0, or why not in why. */
static int try_slice(char *why, size_t cap)
{
    struct utsname u;
#if defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
    fm_sched_attr a = { .size = sizeof a, .policy = SCHED_OTHER, .nice = thread_nice(), .runtime = FM_COMM_SLICE_NS };
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0) {
        snprintf(why, cap, "slice: sched_setattr refused (%s) on Linux %s", strerror(errno), kernel_release(&u));
        return -1;
    }
    fm_sched_attr b;
    memset(&b, 0, sizeof b);
    if (syscall(SYS_sched_getattr, 0, &b, sizeof b, 0) != 0 || b.runtime != FM_COMM_SLICE_NS) {
        /* before 6.12 the kernel ignores sched_runtime of SCHED_OTHER threads */
        snprintf(why, cap, "slice: Linux %s keeps no custom slice for SCHED_OTHER threads (Linux 6.12 or newer does)",
                 kernel_release(&u));
        return -1;
    }
    return 0;
#else
    snprintf(why, cap, "slice: this system has no sched_setattr (Linux %s)", kernel_release(&u));
    return -1;
#endif
}

static int try_rt(char *why, size_t cap)
{
    const struct sched_param sp = { .sched_priority = FM_COMM_RT_PRIO };
    int err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (err == 0)
        return 0;
    struct rlimit rl = { 0, 0 };
    getrlimit(RLIMIT_RTPRIO, &rl);
    if (err == EPERM)
        snprintf(why, cap, "rt: SCHED_FIFO not permitted (not root, no CAP_SYS_NICE, RLIMIT_RTPRIO %llu)",
                 (unsigned long long)rl.rlim_cur);
    else
        snprintf(why, cap, "rt: SCHED_FIFO refused (%s)", strerror(err));
    return -1;
}

/* Put policy `mode` (slice or rt) in force for the calling thread: 0, or -1
 * with why not in why. */
static int try_mode(int mode, fm_comm_sched_state *st, char *why, size_t cap)
{
    if ((mode == FM_COMM_SCHED_RT ? try_rt : try_slice)(why, cap) != 0)
        return -1;
    st->mode = mode;
    st->poll_sleep_s = FM_COMM_POLL_S;
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul); /* sleeps as asked, not 50 us longer (SCHED_OTHER's default) */
    return 0;
}

int fm_comm_sched_thread(int want, fm_comm_sched_state *st, fm_err *e)
{
    memset(st, 0, sizeof *st);
    pthread_setname_np(pthread_self(), "fmtrain-comm");
    st->comm_nice = thread_nice();
    st->mode = want == FM_COMM_SCHED_AUTO ? FM_COMM_SCHED_NONE : want;
    if (want == FM_COMM_SCHED_NICE || want == FM_COMM_SCHED_NONE)
        return FM_OK;
    char why[160] = "";
    if (want != FM_COMM_SCHED_AUTO) {
        if (try_mode(want, st, why, sizeof why) == 0)
            return FM_OK;
        return fm_fail(e, FM_ERR_USAGE, "dist.comm_sched: %s is not available: %s; %sset dist.comm_sched: auto (or %s)",
                       fm_comm_sched_name(want), strchr(why, ' ') + 1,
                       want == FM_COMM_SCHED_RT ? "run as root or raise RLIMIT_RTPRIO (ulimit -r 1, limits.conf "
                                                  "rtprio), or "
                                                : "",
                       want == FM_COMM_SCHED_RT ? "slice, nice, none" : "rt, nice, none");
    }
    static const int order[] = { FM_COMM_SCHED_RT, FM_COMM_SCHED_SLICE };
    for (int i = 0; i < 2; i++) {
        if (try_mode(order[i], st, why, sizeof why) == 0)
            return FM_OK;
        size_t n = strlen(st->tried);
        snprintf(st->tried + n, sizeof st->tried - n, "%s%s", n ? "; " : "", why);
    }
    return FM_OK;
}

typedef struct probe_arg {
    int want, rc;
    fm_comm_sched_state *st;
    fm_err *e;
} probe_arg;

static void *probe_main(void *p)
{
    probe_arg *a = p;
    a->rc = fm_comm_sched_thread(a->want, a->st, a->e);
    return NULL;
}

int fm_comm_sched_probe(int want, fm_comm_sched_state *st, fm_err *e)
{
    probe_arg a = { want, FM_OK, st, e };
    pthread_t t;
    int err = pthread_create(&t, NULL, probe_main, &a);
    if (err != 0)
        return fm_fail(e, FM_ERR_INTERNAL, "dist.comm_sched: cannot start a thread to try it: %s", strerror(err));
    pthread_join(t, NULL);
    return a.rc;
}

int fm_comm_sched_compute(fm_comm_sched_state *st, fm_err *e)
{
    if (st->mode != FM_COMM_SCHED_NICE)
        return FM_OK;
    const int to = st->comm_nice + FM_COMM_NICE_STEP < 19 ? st->comm_nice + FM_COMM_NICE_STEP : 19;
    if (to <= st->comm_nice)
        return fm_fail(e, FM_ERR_USAGE,
                       "dist.comm_sched: nice: the communication thread already runs at nice %d, so the compute "
                       "threads cannot go below it; start fmtrain at a lower nice or set dist.comm_sched: auto",
                       st->comm_nice);
    st->compute_nice = to;
    int bad = 0, err = 0;
#pragma omp parallel reduction(| : bad) reduction(max : err)
    {
        if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), to) != 0) {
            bad = 1;
            err = errno;
        }
    }
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), to) != 0) /* the caller, whatever the team */
        bad = 1, err = errno;
    if (bad)
        return fm_fail(e, FM_ERR_USAGE,
                       "dist.comm_sched: nice: cannot set the compute threads' nice value to %d (%s); set "
                       "dist.comm_sched: auto or none",
                       to, strerror(err));
    return FM_OK;
}

void fm_comm_sched_describe(const fm_comm_sched_state *st, char *buf, int cap)
{
    switch (st->mode) {
    case FM_COMM_SCHED_SLICE:
        snprintf(buf, (size_t)cap,
                 "slice: the communication thread is SCHED_OTHER (nice %d) with a %llu us EEVDF slice, so it "
                 "preempts a compute thread when it wakes; its waits test for 50 us, then sleep 10-%.0f us",
                 st->comm_nice, FM_COMM_SLICE_NS / 1000, 1e6 * st->poll_sleep_s);
        break;
    case FM_COMM_SCHED_RT:
        snprintf(buf, (size_t)cap,
                 "rt: the communication thread is SCHED_FIFO priority %d; its waits test for 50 us, then sleep "
                 "10-%.0f us",
                 FM_COMM_RT_PRIO, 1e6 * st->poll_sleep_s);
        break;
    case FM_COMM_SCHED_NICE:
        snprintf(buf, (size_t)cap, "nice: compute threads at nice %d, the communication thread at nice %d",
                 st->compute_nice, st->comm_nice);
        break;
    default:
        snprintf(buf, (size_t)cap, "none: every thread left as it is (nice %d, SCHED_OTHER)", st->comm_nice);
        break;
    }
}
