/* signals.h - preemption requests: SIGUSR1 (Slurm's --signal) and SIGTERM
 * (scancel, the batch shell forwarding its signal) set a flag; the trainers
 * poll it at every step boundary, agree on it over all ranks, write a
 * checkpoint and stop with FM_PREEMPTED (exit 75: requeue me).
 *
 * The flag is the one mutable global besides the logger's level: a signal
 * handler can only communicate through a volatile sig_atomic_t. */
#ifndef FM_SIGNALS_H
#define FM_SIGNALS_H

/* Install the handlers (SA_RESTART, so interrupted I/O resumes). */
int fm_signals_install(void);
/* The signal that asked us to stop, or 0. */
int fm_stop_requested(void);
/* For tests: forget a request. */
void fm_stop_clear(void);

#endif
