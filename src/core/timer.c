/* timer.c - monotonic wall-clock time and the UTC clock of log lines. */
#include "fm/timer.h"

#include <stdio.h>
#include <time.h>

double fm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *fm_utc_now(char buf[FM_UTC_LEN])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, FM_UTC_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, FM_UTC_LEN - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    return buf;
}
