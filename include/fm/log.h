/* log.h - leveled logging to stderr. The log level is the program's one
 * mutable global; it is set once in main() before any work starts. Every
 * line starts with the UTC time, e.g.
 *   2026-12-04T10:20:31.123Z fmtrain: stage flow
 *   2026-12-04T10:20:31.123Z fmtrain[rank 1]: warning: ...
 * so that a batch system's log can be timed. */
#ifndef FM_LOG_H
#define FM_LOG_H

typedef enum { FM_LOG_DEBUG = 0, FM_LOG_INFO, FM_LOG_WARN, FM_LOG_ERROR, FM_LOG_QUIET } fm_log_level;

void fm_log_set_level(fm_log_level lvl);
fm_log_level fm_log_get_level(void);
/* Set the rank shown in messages; ranks other than 0 log warnings and errors only. */
void fm_log_set_rank(int rank);
void fm_log(fm_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fm_debug(...) fm_log(FM_LOG_DEBUG, __VA_ARGS__)
#define fm_info(...) fm_log(FM_LOG_INFO, __VA_ARGS__)
#define fm_warn(...) fm_log(FM_LOG_WARN, __VA_ARGS__)
#define fm_error(...) fm_log(FM_LOG_ERROR, __VA_ARGS__)

#endif
