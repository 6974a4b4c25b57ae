/* test.c - run a table of tests. */
#include "test.h"

#include <math.h>
#include <string.h>

#include "fm/timer.h"

int fm_test_main(const char *suite, const fm_test *tests, int n, int argc, char **argv)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1]))
            continue;
        const char *why = tests[i].skip ? tests[i].skip() : NULL;
        if (why) {
            printf("SKIP %s/%s: %s\n", suite, tests[i].name, why);
            fflush(stdout);
            continue;
        }
        double t0 = fm_now();
        int rc = tests[i].fn();
        double dt = fm_now() - t0;
        printf("%s %s/%s (%.2fs)\n", rc == 0 ? "PASS" : "FAIL", suite, tests[i].name, dt);
        fflush(stdout);
        failed += rc != 0;
    }
    return failed ? 1 : 0;
}

const char *fm_test_no_avx512bf16(void)
{
    return __builtin_cpu_supports("avx512bf16") ? NULL : "this CPU has no AVX512-BF16";
}

const char *fm_test_no_avx512(void)
{
    return __builtin_cpu_supports("avx512f") ? NULL : "this CPU has no AVX-512";
}

const char *fm_test_sanitized(void)
{
#ifdef __SANITIZE_ADDRESS__
    return "sanitizer build: the figures would mean nothing";
#else
    return NULL;
#endif
}

double fm_rel_err(const float *a, const float *b, long n, double floor)
{
    double maxd = 0, maxb = floor;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > maxd || isnan(d))
            maxd = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > maxb)
            maxb = fabs((double)b[i]);
    }
    return maxd / maxb;
}
