/* log.c - leveled logging to stderr. */
#include "fm/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "fm/timer.h"

static struct {
    fm_log_level level;
    int rank;
} g_log = { FM_LOG_INFO, 0 };

void fm_log_set_level(fm_log_level lvl) { g_log.level = lvl; }
fm_log_level fm_log_get_level(void) { return g_log.level; }
void fm_log_set_rank(int rank) { g_log.rank = rank; }

void fm_log(fm_log_level lvl, const char *fmt, ...)
{
    static const char *names[] = { "debug", "info", "warning", "error" };
    if (lvl < g_log.level || lvl >= FM_LOG_QUIET)
        return;
    if (g_log.rank != 0 && lvl < FM_LOG_WARN)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char now[FM_UTC_LEN];
    fm_utc_now(now);
    if (g_log.rank != 0)
        fprintf(stderr, "%s fmtrain[rank %d]: %s: %s\n", now, g_log.rank, names[lvl], line);
    else if (lvl == FM_LOG_INFO)
        fprintf(stderr, "%s fmtrain: %s\n", now, line);
    else
        fprintf(stderr, "%s fmtrain: %s: %s\n", now, names[lvl], line);
}
