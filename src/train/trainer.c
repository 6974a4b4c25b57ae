/* trainer.c - the update, logging and checkpoint half of every training loop. */
#include "fm/trainer.h"

#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fm/clip.h"
#include "fm/files.h"
#include "fm/log.h"
#include "fm/signals.h"
#include "fm/timer.h"

/* Embedding tables (2-D, but lookup tables, not weights of a product). */
static int no_decay_embedding(const fm_param *p, void *ctx)
{
    (void)ctx;
    return strcmp(p->name, "class_emb.weight") == 0 || strcmp(p->name, "y_embed.weight") == 0;
}

/* The gradsync fault hook: at a run.fault_nan_steps step, grad[0] turns NaN
 * just before the bucket holding it is reduced (so the reduction spreads it). */
static void poison_hook(void *ctx, fm_params *p, const fm_gs_plan *pl, int k)
{
    fm_trainer *t = ctx;
    if (t->poison && pl->ntensors > 0 && k == pl->bucket_of[0]) {
        p->grad[p->items[0].offset] = NAN;
        t->poison = 0;
    }
}

/* Rank 0 logs the optimiser + EMA state each rank holds (AdamW m and v, the
 * EMA): its shard under ZeRO (the largest and smallest over the ranks, computed
 * from the plan), and the whole. */
static void log_state(const fm_trainer *t, const char *when)
{
    const fm_world *w = t->world;
    if (w->rank != 0)
        return;
    const double arrays = 2 + t->nema, whole = arrays * 4.0 * (double)t->params->numel;
    double most = 0, least = INFINITY;
    for (int r = 0; r < w->size; r++) {
        const double b = arrays * 4.0 * (double)fm_gradsync_shard_floats(&t->sync, r);
        most = fmax(most, b);
        least = fmin(least, b);
    }
    char emas[32] = "";
    if (t->nema > 1)
        snprintf(emas, sizeof emas, " and %d EMAs", t->nema);
    fm_info("%s: zero: state %.3f MB per rank (whole %.3f MB; ZeRO %s, %d rank%s%s; AdamW m, v%s; bytes per rank "
            "%.0f to %.0f, whole %.0f)",
            t->stage, most / 1e6, whole / 1e6, t->sync.zero ? "on" : "off", w->size, w->size == 1 ? "" : "s", when,
            t->nema > 1 ? emas : t->use_ema ? " and EMA" : "", least, most, whole);
}

/* The node layout and the reduction scheme it gave (dist.hierarchical). */
static void log_scheme(const fm_trainer *t, const char *stage)
{
    const fm_gradsync *g = &t->sync;
    char layout[64];
    if (g->per_node > 0)
        snprintf(layout, sizeof layout, "%d node%s x %d rank%s", g->nodes, g->nodes == 1 ? "" : "s", g->per_node,
                 g->per_node == 1 ? "" : "s");
    else
        snprintf(layout, sizeof layout, "%d nodes of unequal rank counts", g->nodes);
    const char *scheme = g->hier ? "hierarchical (ring inside each node, rings across the nodes per local rank)"
                                 : "flat ring over all ranks";
    if (g->hier && g->zero)
        scheme = "flat ring over all ranks for ZeRO-1's reduce-scatter and allgather (its shards are the flat "
                 "ring's chunks)";
    fm_info("%s: %s, dist.hierarchical: %s: gradients reduced by a %s", stage, layout,
            fm_hier_names[t->cfg->dist.hierarchical], scheme);
}

/* With EMA warm-up, a rate that (1+k)/(10+k) does not reach within the
 * stage's steps never applies: say so (the EMA is the warm-up curve's),
 * and warn when two or more rates are such, for their EMAs are then the
 * same weights. */
static void note_warmup_capped(const char *stage, const fm_trainer *t, int64_t steps)
{
    char list[160] = "";
    int capped = 0;
    size_t n = 0;
    const fm_ema *one = NULL;
    for (int k = 0; k < t->nema; k++) {
        if (fm_ema_warmup_reaches(t->ema[k].decay) < steps)
            continue;
        one = &t->ema[k];
        if (n < sizeof list)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%g", capped ? ", " : "", t->ema[k].decay);
        capped++;
    }
    if (capped == 0)
        return;
    if (capped == 1)
        fm_info("%s: EMA %s: with %s.ema_warmup its decay min(%s, (1+k)/(10+k)) stays on the warm-up curve for all "
                "%lld steps (%.5f at the last; the rate applies from update %lld on): it averages roughly the last "
                "ninth of the steps", stage, list, stage, list, (long long)steps, fm_ema_decay_at(one, steps - 1),
                (long long)fm_ema_warmup_reaches(one->decay));
    else
        fm_warn("%s.ema_decay: rates %s stay on the warm-up curve (1+k)/(10+k) for all %lld steps of %s "
                "(%s.ema_warmup: true): their EMAs are the same weights; set %s.ema_warmup: false or train longer",
                stage, list, (long long)steps, stage, stage, stage);
}

int fm_trainer_init(fm_trainer *t, const char *stage, const fm_train_config *tc, const fm_config *cfg,
                    const char *config_text, const fm_world *w, fm_params *params, fm_metrics *metrics,
                    const fm_flist *ema_decay, int ema_warmup, fm_err *e)
{
    memset(t, 0, sizeof *t);
    t->stage = stage;
    t->tc = tc;
    t->cfg = cfg;
    t->config_text = config_text;
    t->world = w;
    t->params = params;
    t->metrics = metrics;
    t->global_batch = tc->batch_size;
    t->max_bad_steps = cfg->run.max_bad_steps;
    t->sched.base = tc->lr;
    t->sched.min_ratio = tc->min_lr_ratio;
    t->sched.warmup = tc->warmup;
    t->sched.total = tc->steps;
    int rc = fm_lr_schedule_check(&t->sched, e);
    t->gathered = malloc((size_t)w->size * 3 * sizeof(double));
    if (rc == FM_OK && !t->gathered)
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d ranks' step statistics", w->size);
    if (rc == FM_OK)
        rc = fm_gradsync_init(&t->sync, w, params, (size_t)(cfg->flow.bucket_mb * 1048576.0), cfg->dist.hierarchical,
                              cfg->dist.timeout, cfg->dist.comm_sched, e);
    if (rc == FM_OK && cfg->dist.zero)
        rc = fm_gradsync_set_zero(&t->sync, 1, e);
    /* the moments and the EMA: this rank's shard under ZeRO, else whole */
    const size_t floats = rc == FM_OK ? fm_gradsync_shard_floats(&t->sync, w->rank) : 0; /* a failed init freed it */
    fm_adamw_cfg oc = fm_adamw_defaults();
    oc.beta1 = tc->beta1;
    oc.beta2 = tc->beta2;
    oc.weight_decay = tc->weight_decay;
    if (rc == FM_OK && (rc = fm_adamw_init_shard(&t->opt, params, &oc, floats, e)) == FM_OK) {
        fm_adamw_no_decay_1d(&t->opt);
        fm_adamw_no_decay_if(&t->opt, no_decay_embedding, NULL);
    }
    if (rc == FM_OK && ema_decay && ema_decay->n > FM_EMA_MAX)
        rc = fm_fail(e, FM_ERR_USAGE, "flow.ema_decay: %d rates, at most %d", ema_decay->n, FM_EMA_MAX);
    for (int k = 0; rc == FM_OK && ema_decay && k < ema_decay->n; k++) {
        rc = fm_ema_init_shard(&t->ema[k], params, ema_decay->v[k], ema_warmup, floats, e);
        if (rc == FM_OK)
            fm_ema_prefix(ema_decay->v[k], k == 0, t->ema_prefix[k], sizeof t->ema_prefix[k]);
        t->nema += rc == FM_OK;
    }
    t->use_ema = t->nema > 0;
    if (rc == FM_OK && ema_warmup && w->rank == 0)
        note_warmup_capped(stage, t, tc->steps);
    if (rc != FM_OK) {
        fm_err_prefix(e, "%s", stage);
        fm_trainer_free(t);
        return rc;
    }
    log_state(t, "");
    fm_gradsync_set_fault_hook(&t->sync, poison_hook, t);
    fm_gradsync_log_sched(&t->sync, stage);
    if (w->size > 1)
        fm_info("%s: gradients in %d bucket%s of at most %.3g MiB (largest %.3g MiB), %.2f ms to reduce them alone",
                stage, t->sync.plan.nbuckets, t->sync.plan.nbuckets == 1 ? "" : "s", cfg->flow.bucket_mb,
                t->sync.plan.max_bucket * 4 / 1048576.0, t->sync.comm_ms);
    if (w->size > 1)
        log_scheme(t, stage);
    return FM_OK;
}

void fm_trainer_free(fm_trainer *t)
{
    fm_adamw_free(&t->opt);
    for (int k = 0; k < t->nema; k++)
        fm_ema_free(&t->ema[k]);
    t->nema = t->use_ema = 0;
    fm_gradsync_free(&t->sync);
    fm_profile_free(&t->prof_table);
    fm_steptrace_free(&t->trace);
    t->prof = NULL;
    free(t->gathered);
    t->gathered = NULL;
}

int fm_trainer_add_extra(fm_trainer *t, const char *name, float *data, int n, fm_err *e)
{
    if (t->nextra == FM_TRAINER_MAX_EXTRA)
        return fm_fail(e, FM_ERR_INTERNAL, "trainer: more than %d extra tensors", FM_TRAINER_MAX_EXTRA);
    fm_ckpt_extra *x = &t->extra[t->nextra++];
    memset(x, 0, sizeof *x);
    x->name = name;
    x->data = data;
    x->ndim = 1;
    x->shape[0] = n;
    return FM_OK;
}

/* The checkpoint's groups: the weights, then the first EMA, m and v at
 * ema[0], m, v, then each further EMA k at ema[k] (whole arrays, or NULL: the
 * group only verified on load; ema NULL: every EMA NULL). Returns the count;
 * *required: the groups before the further EMAs (which a resume may lack). */
#define MAX_GROUPS (3 + FM_EMA_MAX)
static int groups(fm_trainer *t, float *const *ema, float *m, float *v, fm_ckpt_group *g, int *required)
{
    int n = 0;
    g[n++] = (fm_ckpt_group){ "", t->params, t->params->data };
    if (t->use_ema)
        g[n++] = (fm_ckpt_group){ t->ema_prefix[0], t->params, ema ? ema[0] : NULL };
    g[n++] = (fm_ckpt_group){ "adam.m.", t->params, m };
    g[n++] = (fm_ckpt_group){ "adam.v.", t->params, v };
    if (required)
        *required = n;
    for (int k = 1; k < t->nema; k++)
        g[n++] = (fm_ckpt_group){ t->ema_prefix[k], t->params, ema ? ema[k] : NULL };
    return n;
}

/* This rank's (shard of the) state array of group k of groups(). */
static float *group_state(fm_trainer *t, int k, int required)
{
    if (k >= required)
        return t->ema[k - required + 1].w;
    return k == required - 1 ? t->opt.v : k == required - 2 ? t->opt.m : t->ema[0].w;
}

/* ---- resume: rank 0 reads the checkpoint, the others receive it ---- */

/* EMA k <- the current weights (this rank's shard of them under ZeRO). */
static void ema_from_weights(fm_trainer *t, int k)
{
    if (t->sync.zero)
        fm_gradsync_pack(&t->sync, t->params->data, t->ema[k].w);
    else
        memcpy(t->ema[k].w, t->params->data, t->params->numel * sizeof(float));
}

/* rc of rank 0 to every rank (a failure elsewhere: the ranks stop together). */
static int agree(const fm_world *w, int rc, fm_err *e)
{
    int bad = rc != FM_OK;
    int mrc = fm_world_max_int(w, &bad, e);
    if (rc != FM_OK)
        return rc;
    if (mrc != FM_OK)
        return mrc;
    return bad ? fm_fail(e, FM_ERR_DATA, "rank 0 could not read the checkpoint's EMA (its message says why)") : FM_OK;
}

/* The step of the newest file named <stage>-<digits>.safetensors in
 * run_dir/ckpt (0 if there is none or no directory): what a rank sees
 * without opening any file. */
static int64_t newest_name(const char *run_dir, const char *stage)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ckpt", run_dir);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    const size_t ls = strlen(stage), lx = strlen(".safetensors");
    int64_t best = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        if (len <= ls + 1 + lx || strncmp(n, stage, ls) != 0 || n[ls] != '-' || strcmp(n + len - lx, ".safetensors"))
            continue;
        int64_t v = 0;
        size_t k = ls + 1;
        for (; k < len - lx && n[k] >= '0' && n[k] <= '9' && v < INT64_MAX / 10 - 9; k++)
            v = 10 * v + (n[k] - '0');
        if (k == len - lx && v > best)
            best = v;
    }
    closedir(d);
    return best;
}

/* A rank other than 0: which checkpoint it sees where rank 0 loaded `step`
 * (found) of `bytes` bytes, without reading it: (step, its size) when the file
 * of that name is there, else (the newest step among its names, -1). */
static void visible_ckpt(const fm_trainer *t, int found, int64_t step, double view[2])
{
    view[0] = (double)newest_name(t->cfg->run.out, t->stage);
    view[1] = -1;
    if (!found)
        return;
    char path[4300];
    struct stat st;
    snprintf(path, sizeof path, "%s/ckpt/%s-%08lld.safetensors", t->cfg->run.out, t->stage, (long long)step);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        view[0] = (double)step;
        view[1] = (double)st.st_size;
    }
}

/* Only rank 0 loads the newest valid checkpoint; the other ranks must see the
 * same file (the same step, the same size) in their run directory. A rank 0
 * that cannot load one, or another rank that sees another step or file (a
 * run directory that is not shared, or not in sync, between the nodes),
 * stops every rank with an error instead of training diverged replicas.
 * mine = this rank's (status, step, bytes): rank 0's loaded file, the
 * others' view of it. */
static int agree_on_resume(fm_trainer *t, int rc, const double mine[3], fm_err *e)
{
    const fm_world *w = t->world;
    double *all = malloc(3 * (size_t)w->size * sizeof(double));
    if (!all)
        return rc != FM_OK ? rc : fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    fm_err ce = { 0 };
    int crc = fm_world_allgather(w, mine, 3, all, &ce);
    int bad = -1, other = -1;
    for (int r = 0; crc == FM_OK && r < w->size && bad < 0 && other < 0; r++) {
        if (all[3 * r] != 0.0)
            bad = r;
        else if (all[3 * r + 1] != all[1] || all[3 * r + 2] != all[2])
            other = r;
    }
    const double step0 = all[1], size0 = all[2];
    const double step_other = other >= 0 ? all[3 * other + 1] : 0.0, size_other = other >= 0 ? all[3 * other + 2] : 0.0;
    const int bad_rc = bad >= 0 ? (int)all[3 * bad] : 0;
    free(all);
    if (rc != FM_OK) /* this rank's own message */
        return rc;
    if (crc != FM_OK) {
        *e = ce;
        return crc;
    }
    if (bad >= 0)
        return fm_fail(e, bad_rc, "%s: rank %d could not load its checkpoint (its message says why)", t->stage, bad);
    if (other >= 0 && step_other != step0)
        return fm_fail(e, FM_ERR_DATA,
                       "%s: rank %d found step %.0f in %s/ckpt, rank 0 step %.0f: the ranks see different "
                       "checkpoints (is the run directory on a file system shared by every node?)",
                       t->stage, other, step_other, t->cfg->run.out, step0);
    if (other >= 0)
        return fm_fail(e, FM_ERR_DATA,
                       "%s: rank %d sees the step-%.0f checkpoint in %s/ckpt with %.0f bytes, rank 0 loaded %.0f: "
                       "the ranks see different checkpoints (is the run directory on a file system shared by every "
                       "node?)",
                       t->stage, other, step0, t->cfg->run.out, size_other, size0);
    return FM_OK;
}

int fm_trainer_resume(fm_trainer *t, fm_err *e)
{
    const fm_world *w = t->world;
    const size_t n = t->params->numel;
    const int zero = t->sync.zero;
    FM_TRY(fm_world_bcast(w, t->params->data, n, e));
    for (int k = 0; k < t->nema; k++) /* each EMA starts equal to the broadcast weights */
        ema_from_weights(t, k);
    t->step = 0;
    /* under ZeRO rank 0 verifies the state now and sends each rank its shard below;
     * the further EMAs are verified and copied after the load (a checkpoint may lack them) */
    fm_ckpt_group g[MAX_GROUPS];
    float *emas[FM_EMA_MAX];
    for (int k = 0; k < t->nema; k++)
        emas[k] = t->ema[k].w;
    int required;
    int ng = zero ? groups(t, NULL, NULL, NULL, g, &required) : groups(t, emas, t->opt.m, t->opt.v, g, &required);
    fm_ckpt ck;
    memset(&ck, 0, sizeof ck);
    int rc = FM_OK, found = 0;
    int64_t step = 0, adam_step = 0;
    double bytes = -1;
    if (w->rank == 0) {
        rc = fm_ckpt_load_latest(t->cfg->run.out, t->stage, g, required, t->extra, t->nextra, &ck, e);
        found = rc == FM_OK;
        if (rc == FM_CKPT_NONE)
            rc = FM_OK;
        if (found) {
            step = ck.step; /* AdamW counts the steps it took: at most the trainer's (skipped ones not) */
            rc = fm_ckpt_meta_int_range(&ck, "adam_step", 0, step, &adam_step, e);
            bytes = (double)ck.file.size;
        }
    }
    /* what rank 0 found, to every rank (rank 0's row of an allgather) */
    double head[4] = { rc == FM_OK ? 0.0 : (double)rc, found, (double)step, (double)adam_step }, *heads = NULL;
    if (w->size > 1) {
        heads = malloc(4 * (size_t)w->size * sizeof(double));
        int hrc = heads ? fm_world_allgather(w, head, 4, heads, e)
                        : fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d ranks' resume figures", w->size);
        if (hrc == FM_OK && w->rank != 0) {
            found = heads[0] == 0.0 && heads[1] != 0.0;
            step = (int64_t)heads[2];
            adam_step = (int64_t)heads[3];
        }
        free(heads);
        if (hrc != FM_OK) {
            if (found && w->rank == 0)
                fm_ckpt_close(&ck);
            return rc != FM_OK ? rc : hrc;
        }
    }
    double mine[3] = { rc == FM_OK ? 0.0 : (double)rc, (double)step, bytes };
    if (w->rank != 0)
        visible_ckpt(t, found, step, &mine[1]);
    rc = agree_on_resume(t, rc, mine, e);
    /* the further EMAs: which ones the file holds (rank 0 looks, every rank learns) */
    int have[FM_EMA_MAX] = { 0 };
    for (int k = required; k < ng && found && rc == FM_OK; k++) {
        char key[64];
        snprintf(key, sizeof key, "group:%s", g[k].prefix);
        have[k - required] = w->rank == 0 && fm_ckpt_meta(&ck, key) != NULL;
        rc = fm_world_max_int(w, &have[k - required], e);
    }
    if (found && rc == FM_OK) { /* rank 0's tensors, bit for bit, to the others */
        rc = fm_world_bcast(w, t->params->data, n, e);
        if (rc == FM_OK && !zero && t->use_ema)
            rc = fm_world_bcast(w, t->ema[0].w, n, e);
        if (rc == FM_OK && !zero)
            rc = fm_world_bcast(w, t->opt.m, n, e);
        if (rc == FM_OK && !zero)
            rc = fm_world_bcast(w, t->opt.v, n, e);
        /* ZeRO: group by group, rank 0 puts the state into the (still unused)
         * gradient arena and sends each rank its shard; a further EMA the
         * file holds: the same (rank 0 verifies it as it copies it), else it
         * starts from the resumed weights */
        for (int k = 1; k < ng && rc == FM_OK; k++) {
            const int further = k >= required;
            if (further && !have[k - required]) {
                ema_from_weights(t, k - required + 1);
                if (w->rank == 0)
                    fm_warn("%s: %s has no EMA of decay %g (tensors %s*): it starts from the resumed weights",
                            t->stage, ck.path, t->ema[k - required + 1].decay, g[k].prefix);
                continue;
            }
            if (!zero && !further)
                continue;
            fm_ckpt_group whole = g[k];
            whole.base = zero ? t->params->grad : group_state(t, k, required);
            if (w->rank == 0) /* the required groups: verified with the rest of the file */
                rc = fm_ckpt_copy_group(&ck, &whole, e);
            rc = agree(w, rc, e);
            if (rc == FM_OK)
                rc = zero ? fm_gradsync_scatter0(&t->sync, t->params->grad, group_state(t, k, required), e)
                          : fm_world_bcast(w, whole.base, n, e);
        }
        for (int k = 0; k < t->nextra && rc == FM_OK; k++)
            rc = fm_world_bcast(w, t->extra[k].data, (size_t)t->extra[k].shape[0], e);
    }
    if (found && rc == FM_OK) {
        t->step = step;
        t->opt.step = adam_step;
        if (w->rank == 0)
            fm_info("%s: resumed from %s (step %lld)%s", t->stage, ck.path, (long long)step,
                    zero ? "; read by rank 0, the weights broadcast, each rank's shard of the state sent to it"
                    : w->size > 1 ? "; read by rank 0 and broadcast" : "");
    }
    if (found && w->rank == 0)
        fm_ckpt_close(&ck);
    return rc;
}

/* Test-only fault injection (run.fault_nan_steps): rank 0's gradient turns
 * NaN at the listed steps just before it is reduced; the allreduce spreads it
 * to every rank. */
static int fault_step(const fm_trainer *t)
{
    const fm_ilist *l = &t->cfg->run.fault_nan_steps;
    for (int i = 0; i < l->n && t->world->rank == 0; i++)
        if (l->v[i] == t->step)
            return 1;
    return 0;
}

int fm_trainer_profile_init(fm_trainer *t, int steps, fm_err *e)
{
    if (steps <= 0)
        return FM_OK;
    FM_TRY(fm_profile_init(&t->prof_table, FM_TRAINER_PROFILE_CAP, e));
    t->prof_steps = steps;
    t->prof_done = 0;
    t->prof_wall = 0;
    return FM_OK;
}

void fm_trainer_begin(fm_trainer *t)
{
    t->t_begin = fm_now();
    if (t->t_start == 0) {
        t->t_start = t->t_begin;
        t->step_at_start = t->step;
        t->prof_first = t->step + FM_TRAINER_PROFILE_WARMUP;
    }
    t->prof = t->prof_done < t->prof_steps && t->step >= t->prof_first ? &t->prof_table : NULL;
    t->tracing = t->trace.n < t->trace_steps && t->step >= t->prof_first;
    memset(&t->marks, 0, sizeof t->marks);
    t->marks.begin = t->t_begin;
    fm_gradsync_begin(&t->sync);
    t->poison = fault_step(t);
}

int fm_trainer_ema_whole(fm_trainer *t, int k, float *dst, fm_err *e)
{
    if (k < 0 || k >= t->nema)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: no EMA %d to gather (%d kept)", t->stage, k, t->nema);
    if (t->sync.zero)
        return fm_gradsync_allgather_shard(&t->sync, t->ema[k].w, dst, e);
    memcpy(dst, t->ema[k].w, t->params->numel * sizeof(float));
    return FM_OK;
}

int fm_trainer_ema_index(const fm_trainer *t, double rate)
{
    for (int k = 0; k < t->nema; k++)
        if (t->ema[k].decay == rate)
            return k;
    return -1;
}

/* Write the checkpoint (rank 0) of the whole state at ema[k], m, v. */
static int write_ckpt(fm_trainer *t, float *const *ema, float *m, float *v, fm_err *e)
{
    fm_ckpt_group g[MAX_GROUPS];
    int ng = groups(t, ema, m, v, g, NULL);
    char seed[32], world[32], adam_step[32];
    snprintf(seed, sizeof seed, "%d", t->cfg->run.seed);
    snprintf(world, sizeof world, "%d", t->world->size);
    snprintf(adam_step, sizeof adam_step, "%lld", (long long)t->opt.step);
    fm_st_meta meta[] = {
        { "config", t->config_text ? t->config_text : "" },
        { "seed", seed },
        { "world_size", world },
        { "adam_step", adam_step },
        { "data_position", "step" }, /* the data order is a pure function of (seed, step): see loader.h */
    };
    return fm_ckpt_save(t->cfg->run.out, t->stage, t->step, g, ng, t->extra, t->nextra, meta,
                        (int)(sizeof meta / sizeof meta[0]), t->cfg->run.ckpt_keep, NULL, 0, e);
}

int fm_trainer_save(fm_trainer *t, fm_err *e)
{
    const int root = t->world->rank == 0;
    float *ema[FM_EMA_MAX];
    for (int k = 0; k < t->nema; k++)
        ema[k] = t->ema[k].w;
    if (!t->sync.zero)
        return root ? write_ckpt(t, ema, t->opt.m, t->opt.v, e) : FM_OK;
    /* ZeRO: the whole state exists for the write only, on rank 0: the first
     * EMA in the gradient arena (spent after the update), m, v and the
     * further EMAs in a buffer freed right after */
    const size_t n = t->params->numel;
    const int further = t->nema > 1 ? t->nema - 1 : 0;
    float *mv = root ? malloc((2 + (size_t)further) * n * sizeof(float)) : NULL;
    int bad = root && !mv;
    FM_TRY(fm_world_max_int(t->world, &bad, e));
    if (bad)
        return root ? fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory for the optimiser state of the checkpoint "
                              "(%.1f MB on rank 0)", t->stage, 4e-6 * (2 + further) * (double)n)
                    : fm_fail(e, FM_ERR_INTERNAL, "%s: rank 0 could not write the checkpoint (its message says why)",
                              t->stage);
    float *m = mv, *v = mv ? mv + n : NULL;
    for (int k = 0; k < t->nema; k++)
        ema[k] = k == 0 ? t->params->grad : mv ? mv + (size_t)(1 + k) * n : NULL;
    int rc = fm_gradsync_gather0(&t->sync, t->opt.m, m, e);
    if (rc == FM_OK)
        rc = fm_gradsync_gather0(&t->sync, t->opt.v, v, e);
    for (int k = 0; k < t->nema && rc == FM_OK; k++)
        rc = fm_gradsync_gather0(&t->sync, t->ema[k].w, ema[k], e);
    if (rc == FM_OK && root)
        rc = write_ckpt(t, ema, m, v, e);
    free(mv);
    return rc;
}

/* The report of the profiled window (rank 0): the text tables to stderr and
 * <run.out>/profile-<stage>.txt, both tables to profile-<stage>.json. */
static int profile_report(const fm_trainer *t, fm_err *e)
{
    const fm_profile *p = &t->prof_table;
    const int n = t->prof_done;
    const double wall = t->prof_wall;
    const long long first = (long long)(t->step - n), last = (long long)t->step - 1;
    char *txt = NULL, *js = NULL;
    size_t ntxt = 0, njs = 0;
    int rc = FM_OK;
    FILE *f = open_memstream(&txt, &ntxt);
    if (!f)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the profile report");
    fprintf(f,
            "%s: profile of steps %lld to %lld (%d step%s after %d warm-up), %d rank%s x %d thread%s, "
            "%.2f ms per step with the timers on (rank 0)\n",
            t->stage, first, last, n, n == 1 ? "" : "s", FM_TRAINER_PROFILE_WARMUP, t->world->size,
            t->world->size == 1 ? "" : "s", omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s",
            1e3 * wall / n);
    fprintf(f, "\nby kind (share of the measured step time):\n");
    rc = fm_profile_print(p, FM_PROFILE_BY_KIND, n, wall, 0, f, e);
    if (rc == FM_OK) {
        fprintf(f, "\nby layer (top %d):\n", FM_TRAINER_PROFILE_ROWS);
        rc = fm_profile_print(p, FM_PROFILE_BY_ENTRY, n, wall, FM_TRAINER_PROFILE_ROWS, f, e);
    }
    if (fclose(f) != 0 && rc == FM_OK)
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for the profile report");
    if (rc == FM_OK) {
        fprintf(stderr, "%s", txt);
        if (!(f = open_memstream(&js, &njs)))
            rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for the profile report");
    }
    if (rc == FM_OK) {
        fprintf(f,
                "{\"stage\": \"%s\", \"first_step\": %lld, \"steps\": %d, \"warmup\": %d, \"world_size\": %d, "
                "\"threads\": %d, \"step_ms\": %.6g, \"accounted_ms\": %.6g, \"dropped_calls\": %lld,\n"
                "\"by_kind\": ",
                t->stage, first, n, FM_TRAINER_PROFILE_WARMUP, t->world->size, omp_get_max_threads(), 1e3 * wall / n,
                1e3 * fm_profile_seconds(p, -1) / n, (long long)p->dropped);
        rc = fm_profile_json(p, FM_PROFILE_BY_KIND, n, wall, f, e);
        if (rc == FM_OK) {
            fprintf(f, ",\n\"by_entry\": ");
            rc = fm_profile_json(p, FM_PROFILE_BY_ENTRY, n, wall, f, e);
        }
        fprintf(f, "}\n");
        if (fclose(f) != 0 && rc == FM_OK)
            rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for the profile report");
    }
    char path[FM_CFG_STR_MAX + 64];
    if (rc == FM_OK) {
        snprintf(path, sizeof path, "%s/profile-%s.txt", t->cfg->run.out, t->stage);
        rc = fm_write_text_atomic(path, txt, e);
    }
    if (rc == FM_OK) {
        snprintf(path, sizeof path, "%s/profile-%s.json", t->cfg->run.out, t->stage);
        rc = fm_write_text_atomic(path, js, e);
    }
    if (rc == FM_OK)
        fm_info("%s: wrote %s/profile-%s.{txt,json}", t->stage, t->cfg->run.out, t->stage);
    free(txt);
    free(js);
    return rc;
}

/* ---- the schedule window (steptrace.h) ---- */

#define MARK(t, field)                          \
    do {                                        \
        if ((t)->tracing)                       \
            (t)->marks.field = fm_now();        \
    } while (0)

int fm_trainer_trace_init(fm_trainer *t, int steps, fm_err *e)
{
    if (steps <= 0)
        return FM_OK;
    t->trace_steps = steps;
    return fm_steptrace_init(&t->trace, steps, t->params->n, t->world->size, e);
}

void fm_trainer_backward_begins(fm_trainer *t) { MARK(t, backward); }

/* Record a traced step; at the end of the window (or of the stage) rank 0
 * writes RUN/schedule-<stage>.json. */
static void trace_step_done(fm_trainer *t)
{
    if (!t->tracing)
        return;
    t->marks.end = fm_now();
    t->tracing = 0;
    fm_steptrace_add(&t->trace, t->step - 1, &t->marks, &t->sync, t->gathered);
    if (t->trace.n < t->trace_steps && t->step < t->tc->steps)
        return;
    t->trace_steps = t->trace.n; /* the window is closed */
    if (t->world->rank != 0)
        return;
    const fm_config *c = t->cfg;
    const fm_steptrace_info info = {
        .stage = t->stage,
        .model = !strcmp(t->stage, "flow") ? fm_model_names[c->flow.model] : t->stage,
        .world = t->world->size,
        .threads = omp_get_max_threads(),
        .zero = t->sync.zero,
        .global_batch = t->global_batch,
        .bucket_mb = c->flow.bucket_mb,
        .flops_per_step = t->flops_per_step,
        .comm_ms = t->sync.comm_ms,
        .params = t->params->numel,
    };
    char path[4200], name[96];
    snprintf(name, sizeof name, "schedule-%s.json", t->stage);
    snprintf(path, sizeof path, "%s/%s", c->run.out, name);
    fm_err we = { 0 };
    if (fm_steptrace_write(&t->trace, &info, &t->sync, path, &we) != FM_OK)
        fm_warn("%s: the schedule was not written: %s", t->stage, we.msg);
    else
        fm_info("%s: the schedule of %d steps is in %s", t->stage, t->trace.n, path);
}

/* Close a profiled step (t->prof set): add its wall time; at the end of the
 * window (or of the stage) report and stop profiling. */
static void profile_step_done(fm_trainer *t)
{
    if (t->prof_done < t->prof_steps && t->step == t->tc->steps && !t->prof && t->world->rank == 0)
        fm_warn("%s: run.profile_steps: the stage ended before the profiled window (step %lld): nothing profiled",
                t->stage, (long long)t->prof_first);
    if (!t->prof)
        return;
    t->prof_wall += fm_now() - t->t_begin;
    t->prof_done++;
    t->prof = NULL;
    if (t->prof_done < t->prof_steps && t->step < t->tc->steps)
        return;
    t->prof_steps = t->prof_done; /* the window is closed */
    fm_err pe = { 0 };
    if (t->world->rank == 0 && profile_report(t, &pe) != FM_OK)
        fm_warn("%s: the profile report was not written: %s", t->stage, pe.msg);
}

/* The stage's place among the run's stages and the run's remaining time:
 * this stage's ETA plus the images the later trained stages will process at
 * this stage's images/s (a rough estimate: their models differ). */
static void run_position(const fm_trainer *t, fm_progress *pg)
{
    const fm_config *c = t->cfg;
    int me = strcmp(t->stage, "vae") == 0      ? FM_STAGE_VAE
             : strcmp(t->stage, "flow") == 0   ? FM_STAGE_FLOW
             : strcmp(t->stage, "guide") == 0  ? FM_STAGE_GUIDE
             : strcmp(t->stage, "reflow") == 0 ? FM_STAGE_REFLOW
                                               : FM_STAGE_EVAL;
    double later = 0;
    int seen = 0;
    for (int i = 0; i < c->run.stages.n; i++) {
        int s = c->run.stages.v[i];
        if (seen && s == FM_STAGE_VAE)
            later += (double)c->vae.train.steps * c->vae.train.batch_size;
        else if (seen && s == FM_STAGE_FLOW)
            later += (double)c->flow.train.steps * c->flow.train.batch_size * c->flow.accum_steps;
        else if (seen && s == FM_STAGE_GUIDE)
            later += (double)c->guide.train.steps * c->guide.train.batch_size;
        else if (seen && s == FM_STAGE_REFLOW)
            later += (double)c->reflow.train.steps * c->reflow.train.batch_size;
        else if (seen && s == FM_STAGE_EVAL)
            later += (double)c->eval.classifier_steps * c->eval.classifier_batch_size;
        if (s == me && !seen) {
            seen = 1;
            pg->stage_i = i + 1;
        }
    }
    pg->stage_n = seen ? c->run.stages.n : 0;
    pg->run_eta_s = pg->eta_s + (pg->images_per_s > 0 ? later / pg->images_per_s : NAN);
}

int fm_trainer_end(fm_trainer *t, double local_loss, fm_err *e)
{
    fm_profile *const pr = t->prof;
    t->t_compute_end = fm_now();
    MARK(t, compute_end);
    FM_PROF_CALL(pr, "step", "allreduce", "allreduce", FM_PROF_STEP, 0, fm_gradsync_finish(&t->sync, e));
    MARK(t, reduced);
    /* the loss is the mean of the ranks' losses (equal local batches); the
     * compute times give the imbalance; the shortest wait after a rank's own
     * backward is the last rank's: the reduction's exposed time, without the
     * wait for a slower rank */
    const double compute_ms = 1e3 * (t->t_compute_end - t->t_begin),
                 mine[3] = { local_loss, compute_ms, 1e3 * (fm_now() - t->t_compute_end) };
    FM_PROF_CALL(pr, "step", "allgather", "allgather", FM_PROF_STEP, 0,
                 fm_world_allgather(t->world, mine, 3, t->gathered, e));
    MARK(t, stats);
    double loss = 0, slowest = 0, exposed = INFINITY;
    for (int r = 0; r < t->world->size; r++) {
        loss += t->gathered[3 * r];
        slowest = fmax(slowest, t->gathered[3 * r + 1]);
        exposed = fmin(exposed, t->gathered[3 * r + 2]);
    }
    loss /= t->world->size;
    double t_reduced = fm_now();
    double max_norm = t->tc->grad_clip > 0 ? t->tc->grad_clip : INFINITY;
    double norm;
    const fm_gradsync *gs = &t->sync;
    if (gs->zero) { /* the global norm from every rank's shard */
        double t0 = FM_PROF_START(pr), sq = fm_grad_sumsq_spans(t->params->grad, gs->shard, gs->nshard);
        FM_TRY(fm_world_sum(t->world, &sq, e));
        norm = sqrt(sq);
        fm_clip_scale_spans(t->params->grad, gs->shard, gs->nshard, norm, max_norm);
        FM_PROF_STOP(pr, t0, "step", "clip", "clip", FM_PROF_STEP, 0);
    } else {
        FM_PROF_VOID(pr, "step", "clip", "clip", FM_PROF_STEP, 0,
                     norm = fm_clip_grad_norm(t->params->grad, t->params->numel, max_norm));
    }
    MARK(t, clip);
    double lr = fm_lr_at(&t->sched, t->step);
    if (!isfinite(loss) || !isfinite(norm)) {
        t->bad_steps++;
        fm_warn("%s step %lld: non-finite %s (loss %g, gradient norm %g): update skipped (%d in a row)", t->stage,
                (long long)t->step, isfinite(loss) ? "gradient" : "loss", loss, norm, t->bad_steps);
        if (t->bad_steps >= t->max_bad_steps)
            return fm_fail(e, FM_ERR_INTERNAL,
                           "%s: %d consecutive non-finite steps at step %lld: training diverged; lower %s.lr or set "
                           "%s.grad_clip, then resume from the last checkpoint",
                           t->stage, t->bad_steps, (long long)t->step, t->stage, t->stage);
    } else {
        t->bad_steps = 0;
        if (gs->zero) { /* this rank's shard, then every rank's new weights */
            FM_PROF_CALL(pr, "step", "adamw", "adamw", FM_PROF_STEP, 0,
                         fm_adamw_step_spans(&t->opt, lr, gs->shard, gs->shard_at, gs->nshard, e));
            MARK(t, adamw);
            if (t->use_ema)
                FM_PROF_CALL(pr, "step", "ema", "ema", FM_PROF_STEP, 0,
                             fm_ema_update_spans_n(t->ema, t->nema, t->opt.step - 1, gs->shard, gs->shard_at,
                                                   gs->nshard, e));
            MARK(t, ema);
            FM_PROF_CALL(pr, "step", "param_allgather", "allgather", FM_PROF_STEP, 0,
                         fm_gradsync_allgather(&t->sync, t->params->data, e));
            MARK(t, param_allgather);
        } else {
            FM_PROF_CALL(pr, "step", "adamw", "adamw", FM_PROF_STEP, 0, fm_adamw_step(&t->opt, lr, e));
            MARK(t, adamw);
            if (t->use_ema)
                FM_PROF_CALL(pr, "step", "ema", "ema", FM_PROF_STEP, 0,
                             fm_ema_update_n(t->ema, t->nema, t->opt.step - 1, e));
            MARK(t, ema);
        }
    }
    if (gs->replan_due) { /* ZeRO after the first step: the state moves to the shards of the new plan */
        float **xs[2 + FM_EMA_MAX] = { &t->opt.m, &t->opt.v };
        for (int k = 0; k < t->nema; k++)
            xs[2 + k] = &t->ema[k].w;
        FM_TRY(fm_gradsync_replan(&t->sync, xs, 2 + t->nema, t->params->grad, e));
        if (t->opt.nstate != gs->shard_floats) {
            t->opt.nstate = gs->shard_floats;
            for (int k = 0; k < t->nema; k++)
                t->ema[k].nstate = gs->shard_floats;
            log_state(t, " after the re-plan");
        }
    }
    double now = fm_now();
    t->last_loss = loss;
    t->last_grad_norm = norm;
    t->last_lr = lr;
    t->last_step_ms = 1e3 * (now - t->t_begin);
    const double step_times[7] = { t->last_step_ms,           compute_ms,
                                   1e3 * (t_reduced - t->t_compute_end), t->sync.last.poll_ms,
                                   t->sync.last.inflight_ms, slowest - compute_ms,
                                   exposed };
    for (int i = 0; i < 7; i++)
        t->win[i] += step_times[i];
    t->win_n++;
    t->win_loss += loss;
    t->step++;
    int64_t total = t->tc->steps;
    int log_every = t->cfg->run.log_every > 0 ? t->cfg->run.log_every : 1;
    int log_now = t->step % log_every == 0 || t->step == total || t->step == t->step_at_start + 1;
    /* another sample of the blocking reduction cost (the gradient is spent):
     * at the first 8 logged steps, then every 100 steps; the same steps on every rank */
    if (log_now && (t->sync.nprobes < 3 + 8 || t->step % 100 == 0))
        FM_PROF_CALL(pr, "step", "comm_probe", "comm_probe", FM_PROF_STEP, 0, fm_gradsync_probe(&t->sync, 1, e));
    const double t_log = FM_PROF_START(pr);
    if (t->world->rank == 0 && log_now) {
        double elapsed = now - t->t_start;
        double done = (double)(t->step - t->step_at_start);
        double ips = done * t->global_batch / (elapsed > 0 ? elapsed : 1e-9);
        double m[7];
        for (int i = 0; i < 7; i++)
            m[i] = t->win[i] / t->win_n;
        double step_ms = m[0], mean_compute_ms = m[1], allreduce_ms = m[2], comm_ms = t->sync.comm_ms;
        double hidden = comm_ms > 0 ? fmax(0.0, fmin(1.0, 1.0 - allreduce_ms / comm_ms)) : 0.0;
        double gflops = t->flops_per_step > 0 ? t->flops_per_step / (mean_compute_ms * 1e-3) * 1e-9 : NAN;
        double peak = t->cfg->run.peak_gflops;
        double mfu = t->flops_per_step > 0 && peak > 0 ? t->flops_per_step / (step_ms * 1e-3) * 1e-9 / peak : NAN;
        double loss_mean = t->win_loss / t->win_n;
        const char *keys[] = { "loss",         "lr",          "grad_norm",   "images_per_s", "step_ms",
                               "compute_ms",   "allreduce_ms", "comm_ms",    "hidden_frac",  "poll_ms",
                               "inflight_ms",  "imbalance_ms", "exposed_ms", "gflops",       "loss_mean",
                               "mfu",          "world_size" };
        double vals[] = { loss,    lr,     norm, ips,  step_ms, mean_compute_ms, allreduce_ms,
                          comm_ms, hidden, m[3], m[4], m[5],    m[6],            gflops,
                          loss_mean, mfu,  t->world->size };
        FM_TRY(fm_metrics_log(t->metrics, t->stage, t->step, (int)(sizeof vals / sizeof vals[0]), keys, vals, e));
        fm_progress pg = { .stage = t->stage, .step = t->step, .total = total, .loss = loss_mean,
                           .images_per_s = ips, .mfu = mfu, .eta_s = (double)(total - t->step) * elapsed / done };
        run_position(t, &pg);
        char line[320], now[FM_UTC_LEN];
        fm_progress_format(line, sizeof line, &pg);
        if (t->world->size > 1)
            fprintf(stderr,
                    "%s %s  compute %.1f ms  allreduce %.1f ms (comm %.1f ms, %.0f%% hidden, imbalance %.1f ms, "
                    "after the last backward %.1f ms)\n",
                    fm_utc_now(now), line, mean_compute_ms, allreduce_ms, comm_ms, 100 * hidden, m[5], m[6]);
        else
            fprintf(stderr, "%s %s  compute %.1f ms\n", fm_utc_now(now), line, mean_compute_ms);
    }
    if (log_now) { /* a new averaging window */
        memset(t->win, 0, sizeof t->win);
        t->win_loss = 0;
        t->win_n = 0;
        FM_PROF_STOP(pr, t_log, "step", "log", "log", FM_PROF_STEP, 0);
    }
    int saved = t->step == total || (t->tc->ckpt_every > 0 && t->step % t->tc->ckpt_every == 0);
    if (saved)
        FM_PROF_CALL(pr, "step", "ckpt", "ckpt", FM_PROF_STEP, 0, fm_trainer_save(t, e));
    /* preemption: every rank learns whether any rank was signalled */
    int stop = fm_stop_requested();
    FM_PROF_CALL(pr, "step", "stop_check", "sync", FM_PROF_STEP, 0, fm_world_max_int(t->world, &stop, e));
    profile_step_done(t);
    trace_step_done(t);
    if (stop && t->step < total) {
        if (!saved)
            FM_TRY(fm_trainer_save(t, e));
        return fm_fail(e, FM_PREEMPTED,
                       "%s: stopped by signal %d after step %lld: checkpoint written; run the same command again "
                       "(or let Slurm requeue the job) to resume",
                       t->stage, stop, (long long)t->step);
    }
    return FM_OK;
}
