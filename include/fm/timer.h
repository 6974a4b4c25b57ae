/* timer.h - monotonic wall-clock time. */
#ifndef FM_TIMER_H
#define FM_TIMER_H

/* Seconds since an arbitrary fixed point, from CLOCK_MONOTONIC. */
double fm_now(void);

#endif
