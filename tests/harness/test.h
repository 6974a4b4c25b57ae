/* test.h - a minimal unit-test harness.
 *
 * A test is `static int test_name(void)` returning 0 on success; CHECK and
 * CHECK_OK print where a check failed. fm_test_main runs a table of tests,
 * prints "PASS <file>/<name>" or "FAIL <file>/<name>" per test (tests/run.sh
 * counts these lines) and returns the number of failures.
 *
 * A test that cannot run on this machine or build (a missing CPU feature, a
 * sanitizer build that makes a timing meaningless) is listed with
 * TEST_UNLESS(fn, why): why() returns NULL when the test can run, else the
 * reason, and fm_test_main prints "SKIP <file>/<name>: <reason>" instead of
 * running it. A skipped test is neither a pass nor a failure. */
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
    const char *(*skip)(void); /* NULL, or: the reason this test cannot run here (NULL: it can) */
} fm_test;

#define TEST(fn) { #fn, fn, NULL }
#define TEST_UNLESS(fn, why) { #fn, fn, why }

int fm_test_main(const char *suite, const fm_test *tests, int n, int argc, char **argv);

/* Reasons for TEST_UNLESS: NULL when the test can run. */
const char *fm_test_no_avx512bf16(void); /* this CPU lacks AVX512-BF16 */
const char *fm_test_no_avx512(void);     /* this CPU lacks AVX-512 (AVX512F) */
const char *fm_test_sanitized(void);     /* a sanitizer build (make test SAN=1) */

/* Max |a-b| / max(max|b|, floor): the relative error used by all comparisons. */
double fm_rel_err(const float *a, const float *b, long n, double floor);

#endif
