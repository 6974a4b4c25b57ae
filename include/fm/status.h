/* status.h - error codes and an error record carrying a message.
 *
 * Every fallible function returns an int status (FM_OK on success) and, on
 * failure, fills the caller's fm_err with a one-line message. Only main()
 * turns a status into a process exit code; the codes ARE the exit codes. */
#ifndef FM_STATUS_H
#define FM_STATUS_H

enum {
    FM_OK = 0,
    FM_ERR_INTERNAL = 1,  /* a bug, or a library call that should not fail */
    FM_ERR_USAGE = 2,     /* bad command line or config */
    FM_ERR_DATA = 3,      /* missing, truncated or corrupt input data */
    FM_ERR_IO = 4,        /* cannot write: disk full, unwritable directory */
    FM_PREEMPTED = 75     /* checkpoint written, requeue me (EX_TEMPFAIL) */
};

typedef struct fm_err {
    int code;
    char msg[1024];
} fm_err;

/* Record code and a printf-style message in e (if non-NULL); returns code so
 * callers can write `return fm_fail(e, FM_ERR_DATA, "...", ...);`. */
int fm_fail(fm_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the message already in e with "prefix: " (adds context upward). */
int fm_err_prefix(fm_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void fm_err_clear(fm_err *e);

/* Exit-code precedence, wherever statuses are combined (ranks agreeing on an
 * outcome, the end of a run): success < FM_PREEMPTED < any real error, and
 * among real errors the larger code (1 < 2 < 3 < 4). So a real error always
 * wins over 75: a rank whose preemption checkpoint failed is never hidden by
 * the others' "requeue me". fm_status_rank maps a status to its place in this
 * order (0 for FM_OK; a max over ranks of it is the worst status) and
 * fm_status_of_rank maps it back. */
int fm_status_rank(int rc);
int fm_status_of_rank(int rank);
/* The worse of two statuses in that order. */
int fm_status_worst(int a, int b);

/* Propagate a non-OK status. */
#define FM_TRY(expr)                 \
    do {                             \
        int fm_try_rc_ = (expr);     \
        if (fm_try_rc_ != FM_OK)     \
            return fm_try_rc_;       \
    } while (0)

#endif
