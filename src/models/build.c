/* build.c - the run configuration turned into models (see build.h). */
#include "fm/build.h"

#include <stdio.h>
#include <unistd.h>

#include "fm/classifier.h"

#include <string.h>

#define VAE_MAX_TENSORS 4096
#define VAE_MAX_NUMEL ((size_t)64 << 20)

/* The config's enumerations and limits are the models' (those of the flow:
 * stages/generate.c). */
_Static_assert(FM_MODEL_UNET == (int)FM_FLOW_UNET && FM_MODEL_DIT == (int)FM_FLOW_DIT, "fm_model_names order");
_Static_assert(FM_VAE_LOSS_L2 == (int)FM_RECON_L2 && FM_VAE_LOSS_L1 == (int)FM_RECON_L1, "fm_recon_names order");
_Static_assert(FM_CFG_VAE_MAX_RES == FM_VAE_MAX_RES, "vae.res_blocks range");

/* Copy at most cap elements of a list (the checks report a longer one). */
static void copy_list(int *dst, const fm_ilist *src, int cap)
{
    for (int i = 0; i < src->n && i < cap; i++)
        dst[i] = src->v[i];
}

void fm_build_vae_cfg(const fm_config *c, fm_vae_cfg *v)
{
    *v = fm_vae_cfg_default();
    v->size = FM_CFG_IMAGE_SIDE;
    v->levels = c->vae.channels.n;
    copy_list(v->channels, &c->vae.channels, FM_VAE_MAX_LEVELS);
    v->res_blocks = c->vae.res_blocks;
    v->latent_ch = c->vae.latent_channels;
    v->groups = c->vae.groups;
    v->recon = c->vae.loss == FM_RECON_L1 ? FM_VAE_LOSS_L1 : FM_VAE_LOSS_L2;
    v->kl_weight = (float)c->vae.kl_weight;
}

void fm_build_flow_shape(const fm_config *c, int *side, int *channels)
{
    if (c->flow.latent) {
        fm_vae_cfg v;
        fm_build_vae_cfg(c, &v);
        *side = v.levels >= 1 && v.levels <= 30 ? fm_vae_latent_hw(&v) : 0;
        *channels = v.latent_ch;
    } else {
        *side = FM_CFG_IMAGE_SIDE;
        *channels = 1;
    }
}

void fm_build_guide_cfg(const fm_config *c, fm_guide_cfg *g)
{
    memset(g, 0, sizeof *g);
    fm_build_flow_shape(c, &g->size, &g->channels);
    g->width = c->guide.width;
    g->time_dim = c->guide.time_dim;
    g->num_classes = FM_NUM_CLASSES;
    g->groups = 8;
}

void fm_build_flow_cfg(const fm_config *c, fm_flow_model_cfg *f)
{
    memset(f, 0, sizeof *f);
    f->kind = c->flow.model == FM_MODEL_DIT ? FM_FLOW_DIT : FM_FLOW_UNET;
    int side, ch;
    fm_build_flow_shape(c, &side, &ch);
    fm_unet_cfg *u = &f->unet;
    u->size = side;
    u->in_ch = ch;
    u->levels = c->unet.channels.n;
    copy_list(u->channels, &c->unet.channels, FM_UNET_MAX_LEVELS);
    u->res_blocks = c->unet.res_blocks;
    u->n_attn = c->unet.attn_res.n;
    copy_list(u->attn_res, &c->unet.attn_res, FM_UNET_MAX_LEVELS);
    u->heads = c->unet.heads;
    u->groups = c->unet.groups;
    u->emb_dim = c->unet.emb_dim;
    u->num_classes = FM_NUM_CLASSES;
    fm_dit_cfg *d = &f->dit;
    d->size = side;
    d->in_ch = ch;
    d->patch = c->dit.patch;
    d->width = c->dit.width;
    d->depth = c->dit.depth;
    d->heads = c->dit.heads;
    d->mlp_ratio = c->dit.mlp_ratio;
    d->num_classes = FM_NUM_CLASSES;
}

/* A model check's error "<key>: <what>" (key possibly indexed, "unet.channels[1]")
 * becomes "<where the key was set>: <key>: <what>"; a message that does not
 * start with a config key is left as it is. */
static int placed(const fm_config *c, int rc, fm_err *e)
{
    if (rc == FM_OK || !e)
        return rc;
    char key[64], where[FM_CFG_STR_MAX + 64];
    size_t n = strcspn(e->msg, ":[");
    if (n >= sizeof key)
        return rc;
    memcpy(key, e->msg, n);
    key[n] = '\0';
    if (fm_config_key_index(key) < 0)
        return rc;
    fm_config_where(c, key, where, sizeof where);
    fm_err_prefix(e, "%s", where);
    return rc;
}

int fm_build_validate(const fm_config *c, fm_err *e)
{
    FM_TRY(fm_config_validate(c, e));
    if (c->flow.latent) { /* the latent shape depends on the VAE even if the vae stage is not run */
        fm_vae_cfg v;
        fm_build_vae_cfg(c, &v);
        FM_TRY(placed(c, fm_vae_cfg_check(&v, e), e));
    }
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    if (f.kind == FM_FLOW_DIT)
        return placed(c, fm_dit_cfg_check(&f.dit, e), e);
    return placed(c, fm_unet_cfg_check(&f.unet, e), e);
}

int fm_build_flow_params(fm_params *p, const fm_config *c, fm_err *e)
{
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    int tensors = 0;
    size_t numel = 0;
    FM_TRY(fm_flow_model_size(&f, &tensors, &numel, NULL, e));
    return fm_params_init(p, tensors, numel, (uint64_t)c->run.seed, e);
}

int fm_build_vae_params(fm_params *p, fm_err *e) { return fm_params_init(p, VAE_MAX_TENSORS, VAE_MAX_NUMEL, 0, e); }

int fm_build_flow_model(fm_flow_model *f, const fm_config *c, fm_dnn *d, fm_params *p, int batch, fm_err *e)
{
    fm_flow_model_cfg fc;
    fm_build_flow_cfg(c, &fc);
    return fm_flow_model_init(f, &fc, d, p, batch, e);
}

/* ---- the memory a configuration plans ----------------------------------------- */

#define FLOAT_BYTES 4.0
#define IMG_VALUES (FM_CFG_IMAGE_SIDE * FM_CFG_IMAGE_SIDE)
#define MNIST_TRAIN 60000 /* images of the Fashion-MNIST files */
#define MNIST_TEST 10000
#define TRAIN_COPIES 9    /* weights, gradients, EMA, AdamW m and v; a checkpoint read back holds four more */
#define PROCESS_BYTES 0.3e9 /* the process itself: oneDNN, MPI, OpenMP (about 0.2 GB resident on the tiny run) */

/* One stage's plan: the sum of its parts and the largest, with the key it grows with. */
typedef struct mem_plan {
    const char *stage;
    double total, big;
    const char *big_key;
} mem_plan;

static void part(mem_plan *m, double bytes, const char *key)
{
    m->total += bytes;
    if (bytes > m->big) {
        m->big = bytes;
        m->big_key = key;
    }
}

static int local_batch(const fm_config *c, int batch, int world_size)
{
    return c->dist.batch == FM_BATCH_GLOBAL ? batch / world_size : batch;
}

/* A generator of B samples (generate.h): the flow model at 2B rows (and at B with a guidance interval), the
 * VAE decoder at B, its images. */
static int plan_generator(const fm_config *c, int B, const char *key, mem_plan *m, fm_err *e)
{
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    size_t arena, params;
    FM_TRY(fm_flow_model_measure(&f, 2 * B, &arena, &params, e));
    part(m, (double)arena, key);
    part(m, FLOAT_BYTES * (double)params, f.kind == FM_FLOW_DIT ? "dit.width" : "unet.channels");
    if (fm_build_guidance_interval(c)) { /* the B-row model and its copy of the weights */
        FM_TRY(fm_flow_model_measure(&f, B, &arena, &params, e));
        part(m, (double)arena, key);
        part(m, FLOAT_BYTES * (double)params, "sample.cfg_interval");
    }
    if (c->flow.latent) {
        fm_vae_cfg v;
        fm_build_vae_cfg(c, &v);
        size_t enc, dec, pe, pd;
        FM_TRY(fm_vae_half_measure(&v, 1, 0, 0, &enc, &pe, e));
        FM_TRY(fm_vae_half_measure(&v, B, 0, 1, &dec, &pd, e));
        part(m, (double)(enc + dec), key);
        part(m, FLOAT_BYTES * (double)(pe + pd), "vae.channels");
    }
    part(m, 3.0 * FLOAT_BYTES * B * IMG_VALUES, key); /* samples, latents, images */
    return FM_OK;
}

/* The grids of sample.cfg: drawn FM_GRID_BATCH samples a call, held whole (generate.h). */
static int plan_grids(const fm_config *c, mem_plan *m, fm_err *e)
{
    const int n = FM_NUM_CLASSES * c->sample.per_class;
    FM_TRY(plan_generator(c, fm_build_grid_batch(n), "sample.per_class", m, e));
    const double grid = FLOAT_BYTES * n * IMG_VALUES;
    part(m, 2.0 * c->sample.cfg.n * grid + grid, "sample.per_class"); /* drawn, gathered, one PNG */
    return FM_OK;
}

static int plan_stage(const fm_config *c, int stage, int ws, int n_train, int n_test, mem_plan *m, fm_err *e)
{
    memset(m, 0, sizeof *m);
    m->stage = fm_stage_names[stage];
    part(m, PROCESS_BYTES, "run.memory_limit_gb");
    part(m, (FLOAT_BYTES * IMG_VALUES + 4) * (n_train + n_test), "data.train_limit"); /* the dataset's block */
    fm_vae_cfg v;
    fm_build_vae_cfg(c, &v);
    fm_flow_model_cfg f;
    fm_build_flow_cfg(c, &f);
    int side, ch;
    fm_build_flow_shape(c, &side, &ch);
    const double latents = FLOAT_BYTES * (double)n_train * side * side * ch;
    size_t a1, a2, p1, p2;
    switch (stage) {
    case FM_STAGE_VAE: {
        const int b = local_batch(c, c->vae.train.batch_size, ws);
        FM_TRY(fm_vae_half_measure(&v, b, 1, 0, &a1, &p1, e));
        FM_TRY(fm_vae_half_measure(&v, b, 1, 1, &a2, &p2, e));
        part(m, (double)(a1 + a2), "vae.batch_size");
        part(m, TRAIN_COPIES * FLOAT_BYTES * (double)(p1 + p2), "vae.channels");
        return FM_OK;
    }
    case FM_STAGE_ENCODE:
        FM_TRY(fm_vae_half_measure(&v, local_batch(c, c->encode.batch_size, ws), 0, 0, &a1, &p1, e));
        FM_TRY(fm_vae_half_measure(&v, 1, 0, 1, &a2, &p2, e));
        part(m, (double)(a1 + a2), "encode.batch_size");
        part(m, 2.0 * latents, "data.train_limit");
        return FM_OK;
    case FM_STAGE_FLOW:
        FM_TRY(fm_flow_model_measure(&f, local_batch(c, c->flow.train.batch_size, ws), &a1, &p1, e));
        part(m, (double)a1, "flow.batch_size");
        part(m, TRAIN_COPIES * FLOAT_BYTES * (double)p1, f.kind == FM_FLOW_DIT ? "dit.width" : "unet.channels");
        if (c->flow.ema_decay.n > 1) /* each further EMA, and its copy in a checkpoint read back or written */
            part(m, 2.0 * (c->flow.ema_decay.n - 1) * FLOAT_BYTES * (double)p1, "flow.ema_decay");
        if (c->flow.latent)
            part(m, latents, "data.train_limit");
        if (c->flow.sample_every > 0 && c->sample.cfg.n > 0)
            FM_TRY(plan_grids(c, m, e));
        return FM_OK;
    case FM_STAGE_GUIDE: {
        fm_guide_cfg g;
        fm_build_guide_cfg(c, &g);
        FM_TRY(fm_guide_measure(&g, local_batch(c, c->guide.train.batch_size, ws), &a1, &p1, e));
        part(m, (double)a1, "guide.batch_size");
        part(m, (TRAIN_COPIES + 1) * FLOAT_BYTES * (double)p1, "guide.width");
        if (c->flow.latent)
            part(m, latents, "data.train_limit");
        return FM_OK;
    }
    case FM_STAGE_REFLOW: /* the fine-tuned model, the couplings, and the coupling generator */
        FM_TRY(fm_flow_model_measure(&f, local_batch(c, c->reflow.train.batch_size, ws), &a1, &p1, e));
        part(m, (double)a1, "reflow.batch_size");
        part(m, TRAIN_COPIES * FLOAT_BYTES * (double)p1, f.kind == FM_FLOW_DIT ? "dit.width" : "unet.channels");
        part(m, 2.0 * 2.0 * FLOAT_BYTES * (double)c->reflow.pairs * side * side * ch, "reflow.pairs");
        return plan_generator(c, c->eval.batch_size, "eval.batch_size", m, e);
    case FM_STAGE_SAMPLE:
        return plan_grids(c, m, e);
    case FM_STAGE_EVAL: {
        const fm_classifier_cfg cc = fm_classifier_cfg_default();
        const int eb = c->eval.batch_size; /* whole batches, each drawn by one rank (stage_eval.c) */
        FM_TRY(fm_classifier_measure(&cc, local_batch(c, c->eval.classifier_batch_size, ws), 1, &a1, &p1, e));
        FM_TRY(fm_classifier_measure(&cc, eb, 0, &a2, &p2, e));
        part(m, (double)a1, "eval.classifier_batch_size");
        part(m, (double)a2, "eval.batch_size");
        part(m, (TRAIN_COPIES + 1) * FLOAT_BYTES * (double)p1, "eval.classifier_batch_size");
        FM_TRY(plan_generator(c, eb, "eval.batch_size", m, e));
        const double nf = 4.0 * cc.width; /* the classifier's features (classifier.h) */
        part(m, 2.0 * FLOAT_BYTES * nf * ((double)c->sample.cfg.n * FM_NUM_CLASSES * c->eval.samples_per_class),
             "eval.samples_per_class"); /* rank 0: every sample's features, and its own */
        part(m, 2.0 * FLOAT_BYTES * nf * (n_test + (n_test < n_train ? n_test : n_train)), "data.test_limit");
        return FM_OK;
    }
    }
    return FM_OK;
}

int fm_build_check_memory(const fm_config *c, int world_size, fm_err *e)
{
    double limit = c->run.memory_limit_gb * 1e9;
    const char *what = "run.memory_limit_gb";
    if (limit <= 0) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages <= 0 || page <= 0)
            return FM_OK; /* the machine does not say */
        limit = (double)pages * (double)page;
        what = "the machine's memory (run.memory_limit_gb = 0)";
    }
    const int n_train = c->data.train_limit > 0 && c->data.train_limit < MNIST_TRAIN ? c->data.train_limit : MNIST_TRAIN;
    const int n_test = c->data.test_limit > 0 && c->data.test_limit < MNIST_TEST ? c->data.test_limit : MNIST_TEST;
    for (int i = 0; i < c->run.stages.n; i++) {
        mem_plan m;
        int rc = plan_stage(c, c->run.stages.v[i], world_size, n_train, n_test, &m, e);
        if (rc != FM_OK)
            return fm_err_prefix(e, "measuring the memory of stage %s", fm_stage_names[c->run.stages.v[i]]);
        if (m.total > limit) {
            char where[FM_CFG_STR_MAX + 64];
            fm_config_where(c, m.big_key, where, sizeof where);
            return fm_fail(e, FM_ERR_USAGE,
                           "%s: %s: stage %s would take %.2f GB on each rank (%.2f GB of it grows with %s), more than "
                           "%s, %.2f GB: lower it (or raise run.memory_limit_gb)",
                           where, m.big_key, m.stage, m.total / 1e9, m.big / 1e9, m.big_key, what, limit / 1e9);
        }
    }
    return FM_OK;
}
