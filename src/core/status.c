/* status.c - the error record. */
#include "fm/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fm_fail(fm_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int fm_err_prefix(fm_err *e, const char *fmt, ...)
{
    if (!e)
        return FM_OK;
    char pre[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof e->msg - 3)
        n = sizeof e->msg - 3;
    memcpy(e->msg, pre, n);
    memcpy(e->msg + n, ": ", 2);
    size_t rest = sizeof e->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(e->msg + n + 2, old, m);
    e->msg[n + 2 + m] = '\0';
    return e->code;
}

void fm_err_clear(fm_err *e)
{
    if (e) {
        e->code = FM_OK;
        e->msg[0] = '\0';
    }
}

int fm_status_rank(int rc)
{
    if (rc == FM_OK)
        return 0;
    if (rc == FM_PREEMPTED)
        return 1;
    return rc > 0 ? 1 + rc : 2; /* 1 -> 2, 2 -> 3, ...; a negative code counts as internal */
}

int fm_status_of_rank(int rank)
{
    if (rank <= 0)
        return FM_OK;
    return rank == 1 ? FM_PREEMPTED : rank - 1;
}

int fm_status_worst(int a, int b) { return fm_status_rank(a) >= fm_status_rank(b) ? a : b; }
