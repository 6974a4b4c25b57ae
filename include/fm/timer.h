/* timer.h - monotonic wall-clock time and the UTC clock of log lines. */
#ifndef FM_TIMER_H
#define FM_TIMER_H

/* Seconds since an arbitrary fixed point, from CLOCK_MONOTONIC. */
double fm_now(void);

#define FM_UTC_LEN 32
/* The current UTC time as ISO 8601 with milliseconds, e.g.
 * "2026-12-04T10:20:31.123Z" (CLOCK_REALTIME). Returns buf. */
const char *fm_utc_now(char buf[FM_UTC_LEN]);

#endif
