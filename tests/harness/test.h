/* test.h - a minimal unit-test harness.
 *
 * A test is `static int test_name(void)` returning 0 on success; CHECK and
 * CHECK_OK print where a check failed. fm_test_main runs a table of tests,
 * prints "PASS <file>/<name>" or "FAIL <file>/<name>" per test (tests/run.sh
 * counts these lines) and returns the number of failures. */
#ifndef FM_TEST_H
#define FM_TEST_H

#include <stdio.h>

#include "fm/status.h"

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
            return 1;                                                     \
        }                                                                 \
    } while (0)

/* Call returning an fm status; fails the test with e's message. */
#define CHECK_OK(call, e)                                                 \
    do {                                                                  \
        int chk_rc_ = (call);                                             \
        if (chk_rc_ != FM_OK) {                                           \
            fprintf(stderr, "  %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call, chk_rc_, (e)->msg); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

typedef struct fm_test {
    const char *name;
    int (*fn)(void);
} fm_test;

#define TEST(fn) { #fn, fn }

int fm_test_main(const char *suite, const fm_test *tests, int n, int argc, char **argv);

/* Max |a-b| / max(max|b|, floor): the relative error used by all comparisons. */
double fm_rel_err(const float *a, const float *b, long n, double floor);

#endif
