/* steptrace.c - record a window of training steps and write it as JSON. */
#include "fm/steptrace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/files.h"
#include "fm/json.h"

int fm_steptrace_init(fm_steptrace *s, int cap, int max_buckets, int world, fm_err *e)
{
    memset(s, 0, sizeof *s);
    if (cap <= 0)
        return FM_OK;
    const size_t per = 3 * (size_t)max_buckets + (size_t)world;
    s->steps = calloc((size_t)cap, sizeof *s->steps);
    s->pool = calloc((size_t)cap * per, sizeof(double));
    if (!s->steps || !s->pool) {
        fm_steptrace_free(s);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a schedule of %d steps", cap);
    }
    s->cap = cap;
    s->world = world;
    s->max_buckets = max_buckets;
    for (int i = 0; i < cap; i++) {
        double *p = s->pool + (size_t)i * per;
        s->steps[i].ready_ms = p;
        s->steps[i].reduce0_ms = p + max_buckets;
        s->steps[i].reduce1_ms = p + 2 * (size_t)max_buckets;
        s->steps[i].rank_compute_ms = p + 3 * (size_t)max_buckets;
    }
    return FM_OK;
}

void fm_steptrace_free(fm_steptrace *s)
{
    free(s->steps);
    free(s->pool);
    memset(s, 0, sizeof *s);
}

void fm_steptrace_add(fm_steptrace *s, int64_t step, const fm_steptrace_marks *m, const fm_gradsync *gs,
                      const double *gathered)
{
    if (s->n >= s->cap)
        return;
    fm_steptrace_step *r = &s->steps[s->n++];
    r->step = step;
    r->m = *m;
    const int nb = gs->plan.nbuckets < s->max_buckets ? gs->plan.nbuckets : s->max_buckets;
    r->nbuckets = gs->th ? nb : 0; /* one rank: no reduction */
    const double t0 = m->backward > 0 ? m->backward : m->begin;
    for (int k = 0; k < r->nbuckets; k++) {
        r->ready_ms[k] = 1e3 * (gs->t_handed[k] - t0);
        r->reduce0_ms[k] = 1e3 * (gs->t_reduce0[k] - t0);
        r->reduce1_ms[k] = 1e3 * (gs->t_reduce1[k] - t0);
    }
    for (int q = 0; q < s->world; q++)
        r->rank_compute_ms[q] = gathered[3 * q + 1];
}

/* b - a in ms, or -1 when a phase did not run */
static double span(double a, double b) { return a > 0 && b > 0 ? 1e3 * (b - a) : -1; }

static void list(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
    {
        fputs(i ? ", " : "", f);
        fm_json_num(f, "%.4f", v[i]);
    }
    fputc(']', f);
}

int fm_steptrace_write(const fm_steptrace *s, const fm_steptrace_info *in, const fm_gradsync *gs, const char *path,
                       fm_err *e)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the schedule of %s", path);
    fprintf(f, "{\n  \"format\": \"fmtrain-schedule-1\",\n  \"stage\": \"%s\", \"model\": \"%s\",\n", in->stage,
            in->model);
    fprintf(f, "  \"world_size\": %d, \"threads_per_rank\": %d, \"zero\": %s, \"global_batch\": %lld,\n", in->world,
            in->threads, in->zero ? "true" : "false", (long long)in->global_batch);
    fprintf(f, "  \"params\": %zu, \"forward_flops_per_rank_step\": ", in->params);
    fm_json_num(f, "%.6g", in->flops_per_step);
    fprintf(f, ", \"bucket_mb\": %g,\n  \"comm_ms_alone\": ", in->bucket_mb);
    fm_json_num(f, "%.4f", in->comm_ms);
    fputs(",\n", f);
    fprintf(f, "  \"buckets\": [");
    for (int k = 0; k < gs->plan.nbuckets; k++) {
        const fm_gs_bucket *b = &gs->plan.buckets[k];
        fprintf(f, "%s\n    {\"floats\": %zu, \"bytes\": %zu, \"tensors\": %d, \"packed\": %s}", k ? "," : "",
                b->count, 4 * b->count, b->ntensors, b->packed ? "true" : "false");
    }
    fprintf(f, "\n  ],\n  \"steps\": [");
    for (int i = 0; i < s->n; i++) {
        const fm_steptrace_step *r = &s->steps[i];
        const fm_steptrace_marks *m = &r->m;
        fprintf(f, "%s\n    {\"step\": %lld, \"step_ms\": %.4f, \"forward_ms\": %.4f, \"backward_ms\": %.4f,", i ? "," : "",
                (long long)r->step, span(m->begin, m->end), span(m->begin, m->backward),
                span(m->backward > 0 ? m->backward : m->begin, m->compute_end));
        fprintf(f, "\n     \"wait_after_backward_ms\": %.4f, \"stats_allgather_ms\": %.4f, \"clip_ms\": %.4f, "
                   "\"adamw_ms\": %.4f, \"ema_ms\": %.4f, \"param_allgather_ms\": %.4f, \"rest_ms\": %.4f,",
                span(m->compute_end, m->reduced), span(m->reduced, m->stats), span(m->stats, m->clip),
                span(m->clip, m->adamw), span(m->adamw, m->ema), span(m->ema, m->param_allgather),
                span(m->param_allgather > 0 ? m->param_allgather : m->ema > 0 ? m->ema : m->clip, m->end));
        fprintf(f, "\n     \"bucket_ready_ms\": ");
        list(f, r->ready_ms, r->nbuckets);
        fprintf(f, ",\n     \"bucket_reduce_start_ms\": ");
        list(f, r->reduce0_ms, r->nbuckets);
        fprintf(f, ",\n     \"bucket_reduce_end_ms\": ");
        list(f, r->reduce1_ms, r->nbuckets);
        fprintf(f, ",\n     \"rank_compute_ms\": ");
        list(f, r->rank_compute_ms, s->world);
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f) != 0 || !text) {
        free(text);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the schedule of %s", path);
    }
    int rc = fm_write_text_atomic(path, text, e);
    free(text);
    return rc;
}
