/* generate.c - CFG sampling and VAE decoding into images, from a run's
 * checkpoints, into PNG grids drawn by the ranks and written by rank 0 (see
 * generate.h). */
#include "fm/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/build.h"
#include "fm/ckpt.h"
#include "fm/dataset.h"
#include "fm/ema.h"
#include "fm/log.h"
#include "fm/png.h"
#include "fm/target.h"

#define IMG_SIDE 32

/* The config's enumerations are the flow's values (casts below and in the
 * flow stage). */
_Static_assert(FM_PATH_LINEAR == 0 && FM_PATH_COSINE == 1, "fm_path_names order");
_Static_assert(FM_TIME_UNIFORM == 0 && FM_TIME_LOGIT_NORMAL == 1, "fm_tdist_names order");
_Static_assert(FM_SAMPLER_EULER == 0 && FM_SAMPLER_HEUN == 1 && FM_SAMPLER_SDE == 2, "fm_sampler_names order");
_Static_assert(FM_TARGET_VELOCITY == 0 && FM_TARGET_X1 == 1 && FM_TARGET_EPS == 2 && FM_TARGET_V == 3,
               "fm_target_names order");
_Static_assert(FM_CFG_CONSTANT == 0 && FM_CFG_LINEAR == 1 && FM_CFG_COSINE == 2, "fm_cfg_schedule_names order");

/* The sampler's model: 2B rows on the full model, B rows (one branch) on the half one. */
static int generator_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e)
{
    fm_generator *g = ctx;
    return fm_flow_model_velocity(n == g->half.batch ? &g->half : &g->model, x, t, y, n, u, e);
}

int fm_generator_init(fm_generator *g, const fm_config *c, fm_dnn *d, int B, fm_sampler_kind kind, int steps,
                      fm_err *e)
{
    memset(g, 0, sizeof *g);
    g->B = B;
    g->latent = c->flow.latent;
    g->latent_scale = 1.0f;
    int rc = fm_build_flow_params(&g->flow_p, c, e);
    if (rc == FM_OK)
        rc = fm_build_flow_model(&g->model, c, d, &g->flow_p, 2 * B, e);
    if (rc != FM_OK)
        goto fail;
    g->dim = g->model.dim;
    const fm_flist *iv = &c->sample.cfg_interval;
    const int interval = fm_build_guidance_interval(c);
    if (interval && ((rc = fm_build_flow_params(&g->half_p, c, e)) != FM_OK ||
                     (rc = fm_build_flow_model(&g->half, c, d, &g->half_p, B, e)) != FM_OK))
        goto fail;
    fm_sampler_cfg sc = { .kind = kind,
                          .path = (fm_path_kind)c->flow.path,
                          .steps = steps,
                          .sde_sigma = (float)c->sample.sde_sigma,
                          .heun_euler_last = 0,
                          .null_label = FM_NUM_CLASSES,
                          .target = c->flow.target,
                          .cfg_interval = interval,
                          .cfg_lo = iv->v[0],
                          .cfg_hi = iv->v[1],
                          .cfg_schedule = c->sample.cfg_schedule,
                          .half_calls = interval };
    if (c->sample.classifier_scale > 0) {
        if ((rc = fm_guide_sampler_init(&g->guide, c, d, B, e)) != FM_OK)
            goto fail;
        sc.cguide = &g->guide.cg;
    }
    if ((rc = fm_sampler_init(&g->sampler, &sc, B, g->dim, e)) != FM_OK)
        goto fail;
    if (g->latent) {
        fm_vae_cfg vc;
        fm_build_vae_cfg(c, &vc);
        if ((rc = fm_build_vae_params(&g->vae_p, e)) != FM_OK ||
            (rc = fm_vae_encoder_init(&g->enc, d, &g->vae_p, &vc, 1, 0, e)) != FM_OK ||
            (rc = fm_vae_decoder_init(&g->dec, d, &g->vae_p, &vc, B, 0, e)) != FM_OK)
            goto fail;
    }
    const size_t nx = (size_t)B * g->dim; /* one block: x, z, then the images */
    if (!(g->x = malloc((2 * nx + (size_t)B * IMG_SIDE * IMG_SIDE) * sizeof(float)))) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d generated samples", B);
        goto fail;
    }
    g->z = g->x + nx;
    g->images = g->z + nx;
    return FM_OK;
fail:
    fm_generator_free(g);
    return rc;
}

void fm_generator_free(fm_generator *g)
{
    if (g->model.batch)
        fm_flow_model_free(&g->model);
    if (g->half.batch)
        fm_flow_model_free(&g->half);
    fm_params_free(&g->half_p);
    fm_sampler_free(&g->sampler);
    fm_guide_sampler_free(&g->guide);
    fm_vae_half_free(&g->dec);
    fm_vae_half_free(&g->enc);
    fm_params_free(&g->vae_p);
    fm_params_free(&g->flow_p);
    free(g->x); /* with z and the images */
    memset(g, 0, sizeof *g);
}

void fm_generator_set_flow_weights(fm_generator *g, const float *w, size_t numel)
{
    memcpy(g->flow_p.data, w, (numel < g->flow_p.numel ? numel : g->flow_p.numel) * sizeof(float));
}

int fm_generator_load_vae(fm_generator *g, const char *run_dir, float latent_scale, fm_err *e)
{
    if (!g->latent)
        return FM_OK;
    fm_ckpt_group grp = { "", &g->vae_p, g->vae_p.data };
    fm_ckpt ck;
    int rc = fm_ckpt_load_latest(run_dir, "vae", &grp, 1, NULL, 0, &ck, e);
    if (rc == FM_CKPT_NONE)
        return fm_fail(e, FM_ERR_DATA, "%s/ckpt: no vae checkpoint: the latent flow needs the trained VAE (run the vae stage)",
                       run_dir);
    FM_TRY(rc);
    g->vae_step = ck.step;
    fm_ckpt_close(&ck);
    g->latent_scale = latent_scale;
    return FM_OK;
}

int fm_generate(fm_generator *g, const int32_t *y, float w, uint64_t seed, uint64_t first, fm_err *e)
{
    long n = (long)g->B * g->dim;
    if (g->half.batch) /* the half model's weights are the full one's, however these were set */
        memcpy(g->half_p.data, g->flow_p.data, g->flow_p.numel * sizeof(float));
    fm_sample_noise(g->x, g->B, g->dim, seed, first);
    FM_TRY(fm_sample(&g->sampler, generator_velocity, g, y, w, seed, first, g->x, e));
    for (long i = 0; i < n; i++)
        if (!isfinite(g->x[i]))
            return fm_fail(e, FM_ERR_DATA, "sampler: sample %llu (guidance %g) is not finite: the flow model diverged "
                           "or its flow.target does not match the checkpoint's training",
                           (unsigned long long)(first + (uint64_t)(i / g->dim)), w);
    const float *img = g->x;
    if (g->latent) {
        float inv = 1.0f / g->latent_scale;
        for (long i = 0; i < n; i++)
            g->z[i] = g->x[i] * inv;
        FM_TRY(fm_vae_decode(&g->dec, g->z, g->images, e));
        img = g->images;
    }
    long npix = (long)g->B * IMG_SIDE * IMG_SIDE;
    for (long i = 0; i < npix; i++) {
        float v = img[i];
        g->images[i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    }
    return FM_OK;
}

int fm_generator_load(fm_generator *g, const fm_config *c, const char *ckpt, int64_t *step, fm_err *e)
{
    return fm_generator_load_files(g, c, ckpt, NULL, step, e);
}

int fm_generator_load_files(fm_generator *g, const fm_config *c, const char *ckpt, const char *vae_ckpt,
                            int64_t *step, fm_err *e)
{
    float scale = 1.0f;
    fm_ckpt_extra ex = { "latent_scale", &scale, 1, { 1 } };
    double rate = 0;
    char prefix[32] = "";
    const int ema = fm_config_sample_ema(c, &rate);
    if (ema)
        fm_ema_prefix(rate, rate == c->flow.ema_decay.v[0], prefix, sizeof prefix);
    fm_ckpt_group grp = { prefix, &g->flow_p, g->flow_p.data };
    fm_ckpt ck;
    const char *stage = fm_weights_names[c->sample.weights]; /* flow, or reflow: the same model and groups */
    int rc = ckpt ? fm_ckpt_load_file(ckpt, &grp, 1, &ex, 1, &ck, e)
                  : fm_ckpt_load_latest(c->run.out, stage, &grp, 1, &ex, 1, &ck, e);
    if (rc == FM_CKPT_NONE)
        return fm_fail(e, FM_ERR_DATA, "%s/ckpt: no %s checkpoint: run the %s stage first (sample.weights: %s)",
                       c->run.out, stage, stage, stage);
    if (rc != FM_OK && ema && prefix[3] == '@') /* the rate's tensors are missing, most likely */
        fm_err_prefix(e, "sample.ema = %s: the checkpoint must hold the EMA of decay %g (tensors %s*, kept when "
                      "flow.ema_decay lists the rate during training)", c->sample.ema, rate, prefix);
    FM_TRY(rc);
    if (!(scale > 0.0f)) /* finite: fm_ckpt_load_* checked it */
        rc = fm_fail(e, FM_ERR_DATA, "%s: tensor latent_scale: %g is not > 0", ck.path, scale);
    if (step)
        *step = ck.step;
    fm_ckpt_close(&ck);
    FM_TRY(rc);
    if (!vae_ckpt || !g->latent)
        return fm_generator_load_vae(g, c->run.out, scale, e);
    fm_ckpt_group vg = { "", &g->vae_p, g->vae_p.data };
    FM_TRY(fm_ckpt_load_file(vae_ckpt, &vg, 1, NULL, 0, &ck, e));
    rc = strcmp(ck.stage, "vae") == 0 ? FM_OK
                                      : fm_fail(e, FM_ERR_USAGE, "%s is a %s checkpoint, not a vae checkpoint", vae_ckpt,
                                                ck.stage);
    fm_ckpt_close(&ck);
    g->latent_scale = scale;
    return rc;
}

/* out [rows * cols, 32, 32, 1] <- a rows x cols grid (see
 * fm_generator_grid), drawn in calls of g->B samples: sample i of the grid is
 * sample i of seed wherever the calls split. */
static int grid_images(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed, float *out, fm_err *e)
{
    const int n = rows * cols;
    if (g->B != fm_build_grid_batch(n))
        return fm_fail(e, FM_ERR_INTERNAL, "a %dx%d grid from a generator of %d samples", rows, cols, g->B);
    int32_t *y = malloc((size_t)g->B * sizeof *y);
    if (!y)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d labels", g->B);
    const size_t img = IMG_SIDE * IMG_SIDE;
    int rc = FM_OK;
    for (int first = 0; first < n && rc == FM_OK; first += g->B) {
        const int m = n - first < g->B ? n - first : g->B; /* the last call's samples past n are not kept */
        for (int i = 0; i < g->B; i++)
            y[i] = cls >= 0 ? cls : ((first + i) / cols) % FM_NUM_CLASSES;
        rc = fm_generate(g, y, w, seed, (uint64_t)first, e);
        if (rc == FM_OK)
            memcpy(out + (size_t)first * img, g->images, (size_t)m * img * sizeof(float));
    }
    free(y);
    return rc;
}

/* A rows x cols grid written to path, with row labels and a header when
 * header is not NULL. */
static int grid_png(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed, const char *header,
                    const char *path, fm_err *e)
{
    const size_t n = (size_t)rows * cols;
    float *out = malloc(n * IMG_SIDE * IMG_SIDE * sizeof(float));
    if (!out)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for a grid of %zu images", n);
    int rc = grid_images(g, rows, cols, cls, w, seed, out, e);
    if (rc == FM_OK && !header) {
        rc = fm_png_write_grid(path, out, (int)n, IMG_SIDE, IMG_SIDE, 1, rows, cols, 2, 2, e);
    } else if (rc == FM_OK) {
        const char *labels[FM_NUM_CLASSES];
        for (int r = 0; r < rows && r < FM_NUM_CLASSES; r++)
            labels[r] = fm_class_names[cls >= 0 ? cls : r];
        rc = fm_png_write_grid_labelled(path, out, (int)n, IMG_SIDE, IMG_SIDE, 1, rows, cols, 2, 2, header,
                                        rows <= FM_NUM_CLASSES ? labels : NULL, e);
    }
    free(out);
    return rc;
}

int fm_generator_grid(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed, const char *path,
                      fm_err *e)
{
    return grid_png(g, rows, cols, cls, w, seed, NULL, path, e);
}

int fm_generator_grid_labelled(fm_generator *g, int rows, int cols, int cls, float w, uint64_t seed,
                               const char *header, const char *path, fm_err *e)
{
    return grid_png(g, rows, cols, cls, w, seed, header, path, e);
}

int fm_generator_samples(fm_generator *g, int64_t n, int cls, float w, uint64_t seed, fm_sample_sink sink,
                         void *ctx, fm_err *e)
{
    int32_t *y = malloc((size_t)g->B * sizeof *y);
    if (!y)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d labels", g->B);
    int rc = FM_OK;
    for (int64_t first = 0; rc == FM_OK && first < n; first += g->B) {
        const int k = n - first < g->B ? (int)(n - first) : g->B;
        for (int i = 0; i < g->B; i++) /* a short last batch still runs B rows: the rest are not kept */
            y[i] = cls >= 0 ? cls : (int32_t)((first + i) % FM_NUM_CLASSES);
        rc = fm_generate(g, y, w, seed, (uint64_t)first, e);
        if (rc == FM_OK)
            rc = sink(ctx, first, k, g->images, y, e);
    }
    free(y);
    return rc;
}

int fm_generator_write_grids(fm_generator *g, const fm_config *c, const fm_world *w, const char *tag, int64_t step,
                             fm_err *e)
{
    const int n = c->sample.cfg.n, per = c->sample.per_class, rows = FM_NUM_CLASSES;
    const int p = w->size, r = w->rank, own = fm_batches_mine(n, r, p);
    const size_t floats = (size_t)rows * per * IMG_SIDE * IMG_SIDE; /* one grid's images */
    float *mine = own ? malloc((size_t)own * floats * sizeof(float)) : NULL;
    float *all = r == 0 && n ? malloc((size_t)n * floats * sizeof(float)) : NULL;
    int rc = (own && !mine) || (r == 0 && n && !all)
                 ? fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory for %d grids of %d samples", r, n, rows * per)
                 : FM_OK;
    for (int s = 0; rc == FM_OK && s < own; s++) {
        const int k = fm_batches_global(s, r, p);
        rc = grid_images(g, rows, per, -1, (float)c->sample.cfg.v[k], (uint64_t)c->run.seed, mine + (size_t)s * floats,
                         e);
    }
    char what[160];
    snprintf(what, sizeof what, "%s: drawing the grids of step %lld", tag, (long long)step);
    rc = fm_batches_agree(w, rc, what, e);
    const int agreed = rc == FM_OK; /* then every rank takes part in the agreement after writing */
    if (rc == FM_OK)
        rc = fm_batches_gather(w, mine, n, floats, all, e);
    for (int k = 0; rc == FM_OK && r == 0 && k < n; k++) {
        char path[FM_CFG_STR_MAX + 128];
        snprintf(path, sizeof path, "%s/samples/%s-%08lld-w%g.png", c->run.out, tag, (long long)step,
                 c->sample.cfg.v[k]);
        rc = fm_png_write_grid(path, all + (size_t)k * floats, rows * per, IMG_SIDE, IMG_SIDE, 1, rows, per, 2, 2, e);
        char weights[48];
        fm_config_weights_label(c, weights, sizeof weights);
        if (rc == FM_OK && p > 1)
            fm_info("%s: wrote %s (%s, drawn by rank %d)", tag, path, weights, k % p);
        else if (rc == FM_OK)
            fm_info("%s: wrote %s (%s)", tag, path, weights);
    }
    free(mine);
    free(all);
    if (agreed) { /* the others learn whether rank 0 could write */
        snprintf(what, sizeof what, "%s: writing the grids of step %lld", tag, (long long)step);
        rc = fm_batches_agree(w, rc, what, e);
    }
    return rc;
}

/* The ranks that loaded (has) compare their status and the steps of what
 * they loaded (vals[0..nv-1], named names[]); the first rank that failed, or
 * that differs from the lowest loading rank, stops every rank. *ref_out <-
 * the lowest loading rank's vals (if not NULL). Collective. */
static int agree_loaded(const fm_world *w, int has, int rc, const double *vals, int nv, const char *const *names,
                        const char *run, double *ref_out, fm_err *e)
{
    enum { MAXV = 2 };
    double mine[2 + MAXV] = { rc, has };
    memcpy(mine + 2, vals, (size_t)nv * sizeof *vals);
    const int m = 2 + nv;
    double *all = malloc((size_t)w->size * m * sizeof(double));
    if (!all)
        return rc != FM_OK ? rc : fm_fail(e, FM_ERR_INTERNAL, "rank %d: out of memory", w->rank);
    fm_err ce = { 0 };
    int crc = fm_world_allgather(w, mine, m, all, &ce);
    int bad = -1, ref = -1, other = -1, which = 0;
    for (int q = 0; crc == FM_OK && q < w->size && bad < 0 && other < 0; q++) {
        const double *a = all + (size_t)q * m;
        if (a[0] != FM_OK)
            bad = q;
        else if (a[1] != 0 && ref < 0)
            ref = q;
        else if (a[1] != 0)
            for (int k = 0; k < nv && other < 0; k++)
                if (a[2 + k] != all[(size_t)ref * m + 2 + k])
                    other = q, which = k;
    }
    const int bad_rc = bad >= 0 ? (int)all[(size_t)bad * m] : FM_OK;
    const double ref_v = ref >= 0 ? all[(size_t)ref * m + 2 + which] : 0;
    const double other_v = other >= 0 ? all[(size_t)other * m + 2 + which] : 0;
    if (ref_out)
        for (int k = 0; k < nv; k++)
            ref_out[k] = ref >= 0 ? all[(size_t)ref * m + 2 + k] : 0;
    free(all);
    if (rc != FM_OK)
        return rc;
    if (crc != FM_OK) {
        *e = ce;
        return crc;
    }
    if (bad >= 0)
        return fm_fail(e, bad_rc, "rank %d could not load the %s checkpoint (its message says why)", bad,
                       nv > 1 ? "flow" : names[0]);
    if (other >= 0)
        return fm_fail(e, FM_ERR_DATA,
                       "rank %d found the %s checkpoint of step %.0f in %s/ckpt, rank %d that of step %.0f: the "
                       "ranks see different checkpoints (is the run directory on a file system shared by every "
                       "node?)",
                       other, names[which], other_v, run, ref, ref_v);
    return FM_OK;
}

int fm_generator_agree_vae(const fm_generator *g, const fm_world *w, const char *run_dir, int has, int rc,
                           fm_err *e)
{
    static const char *const names[] = { "vae" };
    const double v = has && rc == FM_OK ? (double)g->vae_step : 0;
    return agree_loaded(w, has, rc, &v, 1, names, run_dir, NULL, e);
}

int fm_generator_load_all(fm_generator *g, const fm_config *c, const fm_world *w, int has, int64_t *step,
                          fm_err *e)
{
    static const char *const names[] = { "flow", "vae" };
    int64_t mine_step = 0;
    int rc = has ? fm_generator_load(g, c, NULL, &mine_step, e) : FM_OK;
    const double mine[2] = { (double)mine_step, has && rc == FM_OK ? (double)g->vae_step : 0 };
    double ref[2];
    FM_TRY(agree_loaded(w, has, rc, mine, 2, names, c->run.out, ref, e));
    *step = (int64_t)ref[0];
    return FM_OK;
}
