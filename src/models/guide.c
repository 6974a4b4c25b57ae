/* guide.c - the noise-conditioned latent classifier (see guide.h). */
#include "fm/guide.h"

#include <math.h>
#include <string.h>


#define ARENA_SLACK 4096 /* alignment of the four buffers */

static int check_cfg(const fm_guide_cfg *cfg, int n, fm_err *e)
{
    if (cfg->channels < 1 || cfg->time_dim < 2 || cfg->time_dim % 2 || n < 1)
        return fm_fail(e, FM_ERR_USAGE, "guide classifier: channels (%d) and batch (%d) must be >= 1 and time_dim "
                       "(%d) even and >= 2: fix the guide section", cfg->channels, n, cfg->time_dim);
    return FM_OK;
}

/* The CNN on the latent + time channels. */
static fm_classifier_cfg cnn_cfg(const fm_guide_cfg *cfg)
{
    fm_classifier_cfg cc = { .in_ch = cfg->channels + cfg->time_dim, .size = cfg->size, .width = cfg->width,
                             .num_classes = cfg->num_classes, .groups = cfg->groups };
    return cc;
}

/* Bytes of g's own arena (the CNN has its own). */
static size_t own_bytes(const fm_guide_cfg *cfg, int n, int train)
{
    const size_t nin = (size_t)n * cfg->size * cfg->size * (size_t)(cfg->channels + cfg->time_dim);
    return (size_t)(cfg->time_dim / 2) * sizeof(double) +
           ((train ? 2 : 1) * nin + (size_t)n * cfg->time_dim + (size_t)n * cfg->num_classes) * sizeof(float) +
           ARENA_SLACK;
}

int fm_guide_measure(const fm_guide_cfg *cfg, int n, size_t *arena, size_t *params, fm_err *e)
{
    FM_TRY(check_cfg(cfg, n, e));
    const fm_classifier_cfg cc = cnn_cfg(cfg);
    FM_TRY(fm_classifier_measure(&cc, n, 1, arena, params, e));
    *arena += own_bytes(cfg, n, 1);
    return FM_OK;
}

int fm_guide_init(fm_guide *g, fm_dnn *d, fm_params *p, const fm_guide_cfg *cfg, int n, int train, fm_err *e)
{
    memset(g, 0, sizeof *g);
    FM_TRY(check_cfg(cfg, n, e));
    g->cfg = *cfg;
    g->n = n;
    g->cin = cfg->channels + cfg->time_dim;
    const fm_classifier_cfg cc = cnn_cfg(cfg);
    FM_TRY(fm_classifier_init(&g->cls, d, p, &cc, n, train, e));
    const size_t nin = (size_t)n * cfg->size * cfg->size * (size_t)g->cin;
    int rc = fm_arena_init(&g->arena, own_bytes(cfg, n, train), e);
    if (rc == FM_OK)
        rc = fm_time_embed_init(&g->temb, &g->arena, n, cfg->time_dim, FM_GUIDE_T_SCALE, e);
    if (rc == FM_OK)
        rc = fm_arena_take(&g->arena, nin, sizeof(float), &g->in, "guide buffers", e);
    if (rc == FM_OK)
        rc = fm_arena_take(&g->arena, (size_t)n * cfg->time_dim, sizeof(float), &g->tf, "guide buffers", e);
    if (rc == FM_OK)
        rc = fm_arena_take(&g->arena, (size_t)n * cfg->num_classes, sizeof(float), &g->dlogits, "guide buffers", e);
    if (rc == FM_OK && train)
        rc = fm_arena_take(&g->arena, nin, sizeof(float), &g->din, "guide buffers", e);
    if (rc != FM_OK) {
        fm_guide_free(g);
        return fm_err_prefix(e, "guide classifier (batch %d)", n);
    }
    return FM_OK;
}

void fm_guide_free(fm_guide *g)
{
    fm_classifier_free(&g->cls);
    fm_arena_free(&g->arena);
    memset(g, 0, sizeof *g);
}

int fm_guide_forward(fm_guide *g, const float *x, const float *t, const float **logits, fm_err *e)
{
    const int C = g->cfg.channels, T = g->cfg.time_dim;
    const long hw = (long)g->cfg.size * g->cfg.size;
    FM_TRY(fm_time_embed_forward(&g->temb, t, g->tf, e));
    for (int i = 0; i < g->n; i++) {
        const float *tf = g->tf + (long)i * T;
        for (long p = 0; p < hw; p++) {
            float *o = g->in + ((long)i * hw + p) * g->cin;
            memcpy(o, x + ((long)i * hw + p) * C, (size_t)C * sizeof *o);
            memcpy(o + C, tf, (size_t)T * sizeof *o);
        }
    }
    return fm_classifier_forward(&g->cls, g->in, logits, NULL, e);
}

int fm_guide_loss(const fm_guide *g, const int32_t *labels, double *loss, int *correct, fm_err *e)
{
    return fm_classifier_loss(&g->cls, labels, loss, correct, e);
}

int fm_guide_backward(fm_guide *g, const int32_t *labels, fm_err *e)
{
    return fm_classifier_backward(&g->cls, g->in, labels, e);
}

int fm_guide_grad_logp(fm_guide *g, const float *x, const float *t, const int32_t *y, float *grad, float *logp,
                       fm_err *e)
{
    if (!g->din)
        return fm_fail(e, FM_ERR_INTERNAL, "guide classifier: input gradient on an instance built without train");
    const float *lg;
    FM_TRY(fm_guide_forward(g, x, t, &lg, e));
    const int K = g->cfg.num_classes, C = g->cfg.channels;
    /* d log softmax_y / d logits = onehot(y) - softmax */
    for (int i = 0; i < g->n; i++) {
        const float *l = lg + (long)i * K;
        float *dl = g->dlogits + (long)i * K;
        if (y[i] < 0 || y[i] >= K) {
            memset(dl, 0, (size_t)K * sizeof *dl);
            if (logp)
                logp[i] = 0.0f;
            continue;
        }
        double mx = l[0], s = 0.0;
        for (int k = 1; k < K; k++)
            mx = l[k] > mx ? l[k] : mx;
        for (int k = 0; k < K; k++)
            s += exp((double)l[k] - mx);
        const double lse = mx + log(s);
        for (int k = 0; k < K; k++)
            dl[k] = (float)((k == y[i] ? 1.0 : 0.0) - exp((double)l[k] - lse));
        if (logp)
            logp[i] = (float)((double)l[y[i]] - lse);
    }
    FM_TRY(fm_classifier_backward_logits(&g->cls, g->in, g->dlogits, g->din, e));
    const long pix = (long)g->n * g->cfg.size * g->cfg.size;
    for (long p = 0; p < pix; p++)
        memcpy(grad + p * C, g->din + p * g->cin, (size_t)C * sizeof *grad);
    return FM_OK;
}
