/* metrics.c - JSON-lines metrics log and the stderr progress line. */
#include "fm/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "fm/timer.h"

int fm_metrics_open(fm_metrics *m, const char *path, fm_err *e)
{
    memset(m, 0, sizeof *m);
    m->t0 = fm_now();
    if (snprintf(m->path, sizeof m->path, "%s", path) >= (int)sizeof m->path)
        return fm_fail(e, FM_ERR_IO, "%s: path too long", path);
    /* does an existing regular file end in a partial line? */
    int partial = 0;
    FILE *rd = fopen(path, "rb");
    if (rd) {
        struct stat st;
        if (fstat(fileno(rd), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && fseek(rd, -1, SEEK_END) == 0)
            partial = fgetc(rd) != '\n';
        fclose(rd);
    }
    m->fp = fopen(path, "a");
    if (!m->fp)
        return fm_fail(e, FM_ERR_IO, "%s: cannot open the metrics log: %s", path, strerror(errno));
    if (partial && (fputc('\n', m->fp) == EOF || fflush(m->fp) != 0)) {
        fclose(m->fp);
        m->fp = NULL;
        return fm_fail(e, FM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return FM_OK;
}

/* Append s to buf at *k as a JSON string. 0 if it does not fit. */
static int put_string(char *buf, size_t cap, size_t *k, const char *s)
{
    size_t j = *k;
    if (j + 1 >= cap)
        return 0;
    buf[j++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        int n;
        if (c == '"' || c == '\\')
            n = snprintf(esc, sizeof esc, "\\%c", c);
        else if (c < 0x20)
            n = snprintf(esc, sizeof esc, "\\u%04x", c);
        else
            n = snprintf(esc, sizeof esc, "%c", c);
        if (j + (size_t)n + 1 >= cap)
            return 0;
        memcpy(buf + j, esc, (size_t)n);
        j += (size_t)n;
    }
    buf[j++] = '"';
    *k = j;
    return 1;
}

/* Append printf output at *k. 0 if it does not fit. */
static int put_fmt(char *buf, size_t cap, size_t *k, const char *fmt, double v)
{
    int n = snprintf(buf + *k, cap - *k, fmt, v);
    if (n < 0 || (size_t)n >= cap - *k)
        return 0;
    *k += (size_t)n;
    return 1;
}

/* Append the raw text s at *k. 0 if it does not fit. */
static int put_raw(char *buf, size_t cap, size_t *k, const char *s)
{
    size_t n = strlen(s);
    if (*k + n + 1 > cap)
        return 0;
    memcpy(buf + *k, s, n + 1);
    *k += n;
    return 1;
}

static int put_number(char *buf, size_t cap, size_t *k, double v)
{
    if (!isfinite(v))
        return put_raw(buf, cap, k, "null");
    if (v == floor(v) && fabs(v) < 1e15)
        return put_fmt(buf, cap, k, "%.0f", v);
    return put_fmt(buf, cap, k, "%.9g", v);
}

int fm_metrics_log(fm_metrics *m, const char *stage, int64_t step, int n, const char *const *keys,
                   const double *values, fm_err *e)
{
    if (!m || !m->fp)
        return FM_OK;
    char *b = m->line;
    size_t cap = sizeof m->line, k = 0;
    int ok = put_raw(b, cap, &k, "{\"stage\":") && put_string(b, cap, &k, stage);
    int sn = snprintf(b + k, cap - k, ",\"step\":%" PRId64, step);
    ok = ok && sn > 0 && (size_t)sn < cap - k;
    if (ok)
        k += (size_t)sn;
    for (int i = 0; i < n && ok; i++)
        ok = put_raw(b, cap, &k, ",") && put_string(b, cap, &k, keys[i]) && put_raw(b, cap, &k, ":") &&
             put_number(b, cap, &k, values[i]);
    char now[FM_UTC_LEN];
    ok = ok && put_raw(b, cap, &k, ",\"time\":") && put_string(b, cap, &k, fm_utc_now(now)) &&
         put_fmt(b, cap, &k, ",\"elapsed_s\":%.3f", fm_now() - m->t0);
    ok = ok && put_raw(b, cap, &k, "}\n");
    if (!ok)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: metrics line for step %" PRId64 " longer than %zu bytes", m->path,
                       step, cap);
    if (fwrite(b, 1, k, m->fp) != k || fflush(m->fp) != 0)
        return fm_fail(e, FM_ERR_IO, "%s: write failed: %s", m->path, strerror(errno));
    return FM_OK;
}

int fm_metrics_close(fm_metrics *m, fm_err *e)
{
    if (!m->fp)
        return FM_OK;
    int bad = fclose(m->fp) != 0;
    m->fp = NULL;
    if (bad)
        return fm_fail(e, FM_ERR_IO, "%s: close failed: %s", m->path, strerror(errno));
    return FM_OK;
}

const char *fm_format_duration(double seconds, char *buf, int len)
{
    if (!isfinite(seconds) || seconds < 0 || seconds > 1e12) {
        snprintf(buf, (size_t)len, "?");
        return buf;
    }
    long long s = llround(seconds);
    if (s < 60)
        snprintf(buf, (size_t)len, "%llds", s);
    else if (s < 3600)
        snprintf(buf, (size_t)len, "%lldm%02llds", s / 60, s % 60);
    else
        snprintf(buf, (size_t)len, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
    return buf;
}

const char *fm_progress_format(char *buf, int len, const fm_progress *p)
{
    char eta[32], run_eta[32], mfu[32] = "";
    if (isfinite(p->mfu))
        snprintf(mfu, sizeof mfu, "  MFU %.0f%%", 100 * p->mfu);
    int n = snprintf(buf, (size_t)len, "%s  step %" PRId64 "/%" PRId64 "  loss %.4f  %.0f img/s%s  ETA %s", p->stage,
                     p->step, p->total, p->loss, p->images_per_s, mfu, fm_format_duration(p->eta_s, eta, sizeof eta));
    if (n >= 0 && n < len && p->stage_n > 0)
        snprintf(buf + n, (size_t)(len - n), "  stage %d/%d, run ETA %s", p->stage_i, p->stage_n,
                 fm_format_duration(p->run_eta_s, run_eta, sizeof run_eta));
    return buf;
}
