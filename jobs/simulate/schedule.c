/* schedule.c - read or make the schedule the skeleton replays (schedule.h). */
#include "schedule.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

void sim_schedule_free(sim_schedule *s)
{
    if (s->steps)
        for (int i = 0; i < s->nsteps; i++)
            free(s->steps[i].ready_ms);
    free(s->steps);
    free(s->floats);
    free(s->rank_compute_ms);
    memset(s, 0, sizeof *s);
}

/* number under key, or -1 (a phase that did not run) when absent */
static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static double nonneg(double x) { return x > 0 ? x : 0; }

static int alloc(sim_schedule *s, int nbuckets, int nsteps, int world)
{
    s->nbuckets = nbuckets;
    s->nsteps = nsteps;
    s->world = world;
    s->floats = calloc((size_t)nbuckets + 1, sizeof *s->floats);
    s->steps = calloc((size_t)nsteps, sizeof *s->steps);
    s->rank_compute_ms = calloc((size_t)nsteps * (size_t)world, sizeof(double));
    if (!s->floats || !s->steps || !s->rank_compute_ms)
        return -1;
    for (int i = 0; i < nsteps; i++)
        if (!(s->steps[i].ready_ms = calloc((size_t)nbuckets + 1, sizeof(double))))
            return -1;
    return 0;
}

int sim_schedule_load(sim_schedule *s, const char *path, char *err, size_t n)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, n, "%s: cannot open the schedule (write one with fmtrain CONFIG --dump-schedule=N)", path);
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                return fail(err, n, "%s: out of memory", path);
            }
            text = t;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    text[len] = 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int rc = 0;
    if (!root)
        return fail(err, n, "%s: not JSON", path);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *buckets = cJSON_GetObjectItemCaseSensitive(root, "buckets");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(root, "steps");
    const int world = (int)num(root, "world_size");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "fmtrain-schedule-1") != 0) {
        rc = fail(err, n, "%s: format: expected \"fmtrain-schedule-1\"", path);
        goto out;
    }
    if (!cJSON_IsArray(buckets) || cJSON_GetArraySize(buckets) == 0 || !cJSON_IsArray(steps) ||
        cJSON_GetArraySize(steps) == 0 || world < 1) {
        rc = fail(err, n, "%s: buckets, steps and world_size must be non-empty (was the run on one rank? a "
                          "1-rank run reduces nothing: dump the schedule of a run on 2 or more ranks)", path);
        goto out;
    }
    const int nb = cJSON_GetArraySize(buckets), ns = cJSON_GetArraySize(steps);
    if (alloc(s, nb, ns, world) != 0) {
        rc = fail(err, n, "%s: out of memory", path);
        goto out;
    }
    s->zero = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "zero"));
    s->bucket_mb = num(root, "bucket_mb");
    s->comm_ms_alone = num(root, "comm_ms_alone");
    for (int k = 0; k < nb; k++) {
        double fl = num(cJSON_GetArrayItem(buckets, k), "floats");
        if (!(fl >= 1)) {
            rc = fail(err, n, "%s: buckets[%d].floats: expected a positive count", path, k);
            goto out;
        }
        s->floats[k] = (size_t)fl;
    }
    for (int i = 0; i < ns; i++) {
        const cJSON *st = cJSON_GetArrayItem(steps, i);
        sim_step *d = &s->steps[i];
        d->forward_ms = num(st, "forward_ms");
        d->backward_ms = num(st, "backward_ms");
        if (d->forward_ms < 0 || d->backward_ms < 0) {
            rc = fail(err, n, "%s: steps[%d]: forward_ms and backward_ms are required", path, i);
            goto out;
        }
        d->clip_ms = nonneg(num(st, "clip_ms"));
        d->adamw_ms = nonneg(num(st, "adamw_ms"));
        d->ema_ms = nonneg(num(st, "ema_ms"));
        d->rest_ms = nonneg(num(st, "rest_ms"));
        const cJSON *ready = cJSON_GetObjectItemCaseSensitive(st, "bucket_ready_ms");
        const cJSON *rcm = cJSON_GetObjectItemCaseSensitive(st, "rank_compute_ms");
        if (!cJSON_IsArray(ready) || cJSON_GetArraySize(ready) != nb) {
            rc = fail(err, n, "%s: steps[%d].bucket_ready_ms: expected %d hand-over times", path, i, nb);
            goto out;
        }
        double prev = 0;
        for (int k = 0; k < nb; k++) {
            const cJSON *v = cJSON_GetArrayItem(ready, k);
            double t = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (t < prev - 1e-3) /* hand-overs in plan order; clock noise below 1 us tolerated */
                t = prev;
            if (t < 0) {
                rc = fail(err, n, "%s: steps[%d].bucket_ready_ms[%d]: expected a time >= 0", path, i, k);
                goto out;
            }
            d->ready_ms[k] = prev = t;
        }
        for (int q = 0; q < world; q++) {
            const cJSON *v = cJSON_IsArray(rcm) ? cJSON_GetArrayItem(rcm, q) : NULL;
            s->rank_compute_ms[(size_t)i * world + q] = cJSON_IsNumber(v) ? v->valuedouble
                                                                        : d->forward_ms + d->backward_ms;
        }
    }
out:
    cJSON_Delete(root);
    if (rc != 0)
        sim_schedule_free(s);
    return rc;
}

int sim_schedule_synthetic(sim_schedule *s, size_t floats, int nbuckets, char *err, size_t n)
{
    memset(s, 0, sizeof *s);
    if (floats < 1 || nbuckets < 1)
        return fail(err, n, "synthetic schedule: need at least one bucket of at least one float");
    if (alloc(s, nbuckets, 1, 1) != 0)
        return fail(err, n, "synthetic schedule: out of memory");
    for (int k = 0; k < nbuckets; k++)
        s->floats[k] = floats;
    s->bucket_mb = 4.0 * (double)floats / 1048576.0;
    s->comm_ms_alone = -1;
    return 0;
}

void sim_schedule_rebucket(sim_schedule *s, double bucket_mb)
{
    const double cap = bucket_mb * 1048576.0 / 4.0;
    int m = 0;
    for (int k = 0; k < s->nbuckets; k++) {
        const int merge = k > 0 && (double)(s->floats[m - 1] + s->floats[k]) <= cap;
        if (!merge)
            m++;
        s->floats[m - 1] = merge ? s->floats[m - 1] + s->floats[k] : s->floats[k];
        for (int i = 0; i < s->nsteps; i++)
            s->steps[i].ready_ms[m - 1] = s->steps[i].ready_ms[k];
    }
    s->nbuckets = m;
    s->bucket_mb = bucket_mb;
}

size_t sim_schedule_max_bucket(const sim_schedule *s)
{
    size_t m = 0;
    for (int k = 0; k < s->nbuckets; k++)
        m = s->floats[k] > m ? s->floats[k] : m;
    return m;
}
