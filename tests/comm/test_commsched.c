/* test_commsched.c - the communication thread's scheduling policies
 * (commsched.h), checked from what the kernel reports for the thread
 * (/proc/thread-self/sched: policy and se.slice; the nice values).
 *
 * slice: a thread asking for it is SCHED_OTHER with se.slice 100000 ns
 * (kernel >= 6.12, else skipped). rt: SCHED_FIFO, also under auto (root or
 * RLIMIT_RTPRIO >= 1, else skipped), and refused with an error naming
 * dist.comm_sched and what to do once the process may not (a child drops to
 * nobody with RLIMIT_RTPRIO 0), where auto falls back to slice (or none). nice: the
 * calling thread and every OpenMP worker end at the communication thread's
 * nice + 5 while the communication thread keeps its own (in a child: nice
 * cannot be undone). none changes nothing. The policy names equal the
 * config's (fm_comm_sched_names). */
#define _GNU_SOURCE /* syscall, SYS_gettid */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm/commsched.h"
#include "fm/config.h"
#include "test.h"

/* One communication thread's start: fm_comm_sched_thread on a new thread,
 * which then reports what the kernel says about it. */
typedef struct probe {
    int want, rc;
    fm_comm_sched_state st;
    fm_err e;
    long policy, slice_ns;
    int nice;
    char name[32];
} probe;

/* The value of "key : value" in /proc/thread-self/sched, or -1. */
static long sched_field(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    p = strchr(p, ':');
    return p ? strtol(p + 1, NULL, 10) : -1;
}

static void *probe_main(void *arg)
{
    probe *pr = arg;
    pr->rc = fm_comm_sched_thread(pr->want, &pr->st, &pr->e);
    char text[8192] = "";
    FILE *f = fopen("/proc/thread-self/sched", "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
    }
    pr->policy = sched_field(text, "\npolicy");
    pr->slice_ns = sched_field(text, "se.slice");
    pr->nice = getpriority(PRIO_PROCESS, 0);
    f = fopen("/proc/thread-self/comm", "r");
    if (f) {
        if (!fgets(pr->name, sizeof pr->name, f))
            pr->name[0] = 0;
        pr->name[strcspn(pr->name, "\n")] = 0;
        fclose(f);
    }
    return NULL;
}

static int run_probe(probe *pr, int want)
{
    memset(pr, 0, sizeof *pr);
    pr->want = want;
    pthread_t t;
    if (pthread_create(&t, NULL, probe_main, pr) != 0)
        return -1;
    pthread_join(t, NULL);
    return 0;
}

static const char *no_slices(void)
{
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return "cannot read the kernel release";
    return major > 6 || (major == 6 && minor >= 12) ? NULL : "Linux < 6.12 has no custom EEVDF slices";
}

static const char *no_rt(void)
{
    struct rlimit rl;
    if (geteuid() == 0 || (getrlimit(RLIMIT_RTPRIO, &rl) == 0 && rl.rlim_cur >= FM_COMM_RT_PRIO))
        return NULL;
    return "needs root or RLIMIT_RTPRIO >= 1";
}

static int test_names_match_config(void)
{
    for (int i = 0; i < FM_COMM_SCHED_COUNT; i++)
        CHECK(fm_comm_sched_names[i] && strcmp(fm_comm_sched_names[i], fm_comm_sched_name(i)) == 0, "policy %d: %s",
              i, fm_comm_sched_name(i));
    CHECK(fm_comm_sched_names[FM_COMM_SCHED_COUNT] == NULL, "the config has more names");
    return 0;
}

static int test_slice_applied(void)
{
    probe pr;
    CHECK(run_probe(&pr, FM_COMM_SCHED_SLICE) == 0, "pthread_create");
    CHECK(pr.rc == FM_OK, "%s", pr.e.msg);
    CHECK(pr.st.mode == FM_COMM_SCHED_SLICE && pr.st.poll_sleep_s > 0, "mode %s", fm_comm_sched_name(pr.st.mode));
    CHECK(pr.policy == 0 && pr.slice_ns == (long)FM_COMM_SLICE_NS, "policy %ld, se.slice %ld ns", pr.policy,
          pr.slice_ns);
    CHECK(strcmp(pr.name, "fmtrain-comm") == 0, "thread name '%s'", pr.name);
    char line[320];
    fm_comm_sched_describe(&pr.st, line, sizeof line);
    CHECK(strstr(line, "slice") && strstr(line, "100 us"), "%s", line);
    return 0;
}

static int test_rt_applied(void)
{
    probe pr;
    static const int wants[] = { FM_COMM_SCHED_AUTO, FM_COMM_SCHED_RT };
    for (int i = 0; i < 2; i++) {
        const int want = wants[i];
        CHECK(run_probe(&pr, want) == 0, "pthread_create");
        CHECK(pr.rc == FM_OK, "%s: %s", fm_comm_sched_name(want), pr.e.msg);
        CHECK(pr.st.mode == FM_COMM_SCHED_RT && pr.st.poll_sleep_s > 0, "%s: mode %s", fm_comm_sched_name(want),
              fm_comm_sched_name(pr.st.mode));
        CHECK(pr.policy == 1, "%s: policy %ld, not SCHED_FIFO (1)", fm_comm_sched_name(want), pr.policy);
    }
    return 0;
}

/* In a child without the right to real-time scheduling: rt fails clearly,
 * auto does not take it. Exit 0 when all holds. */
static int child_without_rt(void)
{
    const struct rlimit zero = { 0, 0 };
    if (setrlimit(RLIMIT_RTPRIO, &zero) != 0)
        return 10;
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) /* drops CAP_SYS_NICE */
        return 11;
    probe pr;
    if (run_probe(&pr, FM_COMM_SCHED_RT) != 0)
        return 12;
    fprintf(stderr, "    rt without permission: %s\n", pr.e.msg);
    if (pr.rc != FM_ERR_USAGE || !strstr(pr.e.msg, "dist.comm_sched: rt is not available") ||
        !strstr(pr.e.msg, "RLIMIT_RTPRIO") || !strstr(pr.e.msg, "set dist.comm_sched: auto") || pr.policy != 0)
        return 13;
    if (run_probe(&pr, FM_COMM_SCHED_AUTO) != 0 || pr.rc != FM_OK || pr.policy != 0 ||
        !strstr(pr.st.tried, "rt: SCHED_FIFO not permitted"))
        return 14;
    /* auto without rt: slice where the kernel has it, else none */
    if (pr.st.mode != (no_slices() ? FM_COMM_SCHED_NONE : FM_COMM_SCHED_SLICE))
        return 15;
    return 0;
}

static int in_child(int (*fn)(void), const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(fn());
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child check %d failed", what,
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

static int test_rt_refused_without_permission(void) { return in_child(child_without_rt, "rt refused"); }

/* Exit 0 when nice raised every compute thread and spared the communication thread. */
static int child_nice(void)
{
    probe pr;
    if (run_probe(&pr, FM_COMM_SCHED_NICE) != 0 || pr.rc != FM_OK || pr.st.mode != FM_COMM_SCHED_NICE)
        return 20;
    const int before = getpriority(PRIO_PROCESS, 0), want = pr.st.comm_nice + FM_COMM_NICE_STEP;
    if (before != pr.st.comm_nice || want > 19)
        return 21;
    omp_set_num_threads(3);
    int started = 0;
#pragma omp parallel reduction(+ : started)
    started++; /* the workers exist before: they do not inherit the new value */
    fm_err e = { 0 };
    if (fm_comm_sched_compute(&pr.st, &e) != FM_OK || pr.st.compute_nice != want) {
        fprintf(stderr, "    %s\n", e.msg);
        return 22;
    }
    int wrong = 0, seen = 0;
#pragma omp parallel reduction(+ : wrong, seen)
    {
        wrong += getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)) != want;
        seen++;
    }
    if (wrong || seen != 3 || started != 3 || getpriority(PRIO_PROCESS, 0) != want)
        return 23;
    char line[320];
    fm_comm_sched_describe(&pr.st, line, sizeof line);
    fprintf(stderr, "    %s\n", line);
    return pr.nice == before ? 0 : 24; /* the communication thread kept its nice */
}

static int test_nice_raises_compute_threads(void) { return in_child(child_nice, "nice"); }

static int test_none_changes_nothing(void)
{
    probe pr;
    CHECK(run_probe(&pr, FM_COMM_SCHED_NONE) == 0, "pthread_create");
    CHECK(pr.rc == FM_OK && pr.st.mode == FM_COMM_SCHED_NONE && pr.st.poll_sleep_s == 0, "mode %s",
          fm_comm_sched_name(pr.st.mode));
    CHECK(pr.policy == 0 && pr.slice_ns != (long)FM_COMM_SLICE_NS, "policy %ld, se.slice %ld", pr.policy,
          pr.slice_ns);
    fm_err e = { 0 };
    const int nice = getpriority(PRIO_PROCESS, 0);
    CHECK_OK(fm_comm_sched_compute(&pr.st, &e), &e);
    CHECK(getpriority(PRIO_PROCESS, 0) == nice, "nice changed");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_names_match_config),
        TEST_UNLESS(test_slice_applied, no_slices),
        TEST_UNLESS(test_rt_applied, no_rt),
        TEST(test_rt_refused_without_permission),
        TEST(test_nice_raises_compute_threads),
        TEST(test_none_changes_nothing),
    };
    return fm_test_main("comm/commsched", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
