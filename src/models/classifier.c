/* classifier.c - the eval CNN: four conv + GroupNorm + SiLU stages, a linear
 * head on the flattened last map, and its global average pool as the Frechet
 * features (see classifier.h). */
#include "fm/classifier.h"

#include <stdio.h>
#include <string.h>

#include "fm/pool.h"
#include "fm/sizing.h"
#include "fm/xent.h"

#define GN_EPS 1e-5f

fm_classifier_cfg fm_classifier_cfg_default(void)
{
    fm_classifier_cfg c = { .in_ch = 1, .size = 32, .width = 32, .num_classes = 10, .groups = 8 };
    return c;
}

static int gn_groups(const fm_classifier_cfg *c, int ch) { return ch < c->groups ? ch : c->groups; }

/* Channels of stage k: w, 2w, 4w, 4w. */
static int stage_ch(const fm_classifier_cfg *c, int k) { return c->width * (k == 0 ? 1 : k == 1 ? 2 : 4); }

static int check_cfg(const fm_classifier_cfg *c, int n, fm_err *e)
{
    if (c->in_ch < 1 || c->width < 1 || c->num_classes < 1 || c->groups < 1 || n < 1)
        return fm_fail(e, FM_ERR_USAGE,
                       "classifier: in_ch (%d), width (%d), num_classes (%d), groups (%d) and batch (%d) must be >= 1",
                       c->in_ch, c->width, c->num_classes, c->groups, n);
    if (c->size < 8)
        return fm_fail(e, FM_ERR_USAGE, "classifier: image size %d is below 8", c->size);
    for (int k = 0; k < FM_CLS_STAGES; k++) {
        int ch = stage_ch(c, k);
        if (ch % gn_groups(c, ch))
            return fm_fail(e, FM_ERR_USAGE, "classifier: %d channels are not a multiple of %d groups", ch,
                           gn_groups(c, ch));
    }
    return FM_OK;
}

static int build(fm_classifier *m, fm_dnn *d, fm_params *p, fm_err *e)
{
    const fm_classifier_cfg *c = &m->cfg;
    const int n = m->n;
    fm_arena *a = &m->arena;
    int hw = c->size, cin = c->in_ch;
    long mx = (long)n * hw * hw * cin;
    const char *what = "classifier buffers";
    char name[32];
    for (int k = 0; k < FM_CLS_STAGES; k++) {
        const int cout = stage_ch(c, k), stride = k == 0 ? 1 : 2;
        snprintf(name, sizeof name, "features.%d", 3 * k);
        FM_TRY(fm_conv2d_init(&m->conv[k], d, p, a, name, cin, cout, 3, stride, 1, 1, n, hw, hw, e));
        hw = (int)m->conv[k].ho;
        snprintf(name, sizeof name, "features.%d", 3 * k + 1);
        FM_TRY(fm_groupnorm_init(&m->norm[k], p, a, name, gn_groups(c, cout), GN_EPS, FM_GN_SILU, n, hw, hw, cout, e));
        const long act = (long)n * hw * hw * cout;
        FM_TRY(fm_arena_take(a, (size_t)act, sizeof(float), &m->c[k], what, e));
        FM_TRY(fm_arena_take(a, (size_t)act, sizeof(float), &m->h[k], what, e));
        mx = act > mx ? act : mx;
        m->hw[k] = hw;
        m->ch[k] = cout;
        cin = cout;
    }
    m->nfeat = cin;
    FM_TRY(fm_linear_init(&m->head, d, p, a, "head", hw * hw * cin, c->num_classes, 1, n, e));
    FM_TRY(fm_arena_take(a, (size_t)n * cin, sizeof(float), &m->features, what, e));
    FM_TRY(fm_arena_take(a, (size_t)n * c->num_classes, sizeof(float), &m->logits, what, e));
    if (m->train) {
        FM_TRY(fm_arena_take(a, (size_t)n * c->num_classes, sizeof(float), &m->dlogits, what, e));
        FM_TRY(fm_arena_take(a, (size_t)mx, sizeof(float), &m->g[0], what, e));
        FM_TRY(fm_arena_take(a, (size_t)mx, sizeof(float), &m->g[1], what, e));
    }
    return FM_OK;
}

/* The set-up (sizing.h) of a classifier of cfg for batch n, with the
 * backward buffers when train. */
typedef struct classifier_args {
    const fm_classifier_cfg *cfg;
    int n, train;
} classifier_args;

/* fm_classifier_init on an arena of arena_cap bytes (FM_ARENA_MEASURE: a
 * measuring one); on failure m is freed. */
static int setup(void *obj, fm_dnn *d, fm_params *p, const void *args, size_t arena_cap, fm_err *e)
{
    fm_classifier *m = obj;
    const classifier_args *a = args;
    FM_TRY(check_cfg(a->cfg, a->n, e));
    m->cfg = *a->cfg;
    m->n = a->n;
    m->train = a->train;
    int rc = fm_arena_init(&m->arena, arena_cap, e);
    if (rc == FM_OK)
        rc = build(m, d, p, e);
    if (rc != FM_OK) {
        fm_classifier_free(m);
        return fm_err_prefix(e, "classifier (batch %d)", a->n);
    }
    return FM_OK;
}

static const fm_arena *arena_of(const void *m) { return &((const fm_classifier *)m)->arena; }
static void release(void *m) { fm_classifier_free(m); }

static const fm_sizing_ops sizing = { sizeof(fm_classifier), setup, arena_of, release };

int fm_classifier_init(fm_classifier *m, fm_dnn *d, fm_params *p, const fm_classifier_cfg *cfg, int n, int train,
                       fm_err *e)
{
    const classifier_args args = { cfg, n, train };
    return fm_sizing_init(&sizing, m, d, p, &args, e);
}

int fm_classifier_measure(const fm_classifier_cfg *cfg, int n, int train, size_t *arena, size_t *params, fm_err *e)
{
    const classifier_args args = { cfg, n, train };
    return fm_sizing_measure(&sizing, &args, arena, params, NULL, NULL, e);
}

int fm_classifier_forward(fm_classifier *m, const float *x, const float **logits, const float **features,
                          fm_err *e)
{
    const float *in = x;
    for (int k = 0; k < FM_CLS_STAGES; k++) {
        FM_TRY(fm_conv2d_forward(&m->conv[k], in, m->c[k], e));
        FM_TRY(fm_groupnorm_forward(&m->norm[k], m->c[k], m->h[k], e));
        in = m->h[k];
    }
    const int last = FM_CLS_STAGES - 1;
    fm_global_avgpool_forward(in, m->features, m->n, (long)m->hw[last] * m->hw[last], m->nfeat);
    FM_TRY(fm_linear_forward(&m->head, in, m->logits, e)); /* on the flattened NHWC map */
    if (logits)
        *logits = m->logits;
    if (features)
        *features = m->features;
    return FM_OK;
}

int fm_classifier_loss(const fm_classifier *m, const int32_t *labels, double *loss, int *correct, fm_err *e)
{
    return fm_xent_forward(m->logits, labels, m->n, m->cfg.num_classes, loss, correct, e);
}

/* Backward from m->dlogits of the last forward on x: every parameter
 * gradient, and dL/dx into dx unless it is NULL. */
static int backward_from(fm_classifier *m, const float *x, float *dx, fm_err *e)
{
    const int last = FM_CLS_STAGES - 1;
    float *cur = m->g[0], *oth = m->g[1], *sw;
    FM_TRY(fm_linear_backward(&m->head, m->h[last], m->dlogits, cur, e)); /* the pooled features have no gradient */
    for (int k = last; k >= 0; k--) {
        FM_TRY(fm_groupnorm_backward(&m->norm[k], m->c[k], cur, cur, e));
        FM_TRY(fm_conv2d_backward(&m->conv[k], k > 0 ? m->h[k - 1] : x, cur, k > 0 ? oth : dx, e));
        sw = cur, cur = oth, oth = sw;
    }
    return FM_OK;
}

int fm_classifier_backward(fm_classifier *m, const float *x, const int32_t *labels, fm_err *e)
{
    if (!m->train)
        return fm_fail(e, FM_ERR_INTERNAL, "classifier: backward on an instance built without train");
    FM_TRY(fm_xent_backward(m->logits, labels, m->n, m->cfg.num_classes, 1.0f, m->dlogits, e));
    return backward_from(m, x, NULL, e);
}

int fm_classifier_backward_logits(fm_classifier *m, const float *x, const float *dlogits, float *dx, fm_err *e)
{
    if (!m->train)
        return fm_fail(e, FM_ERR_INTERNAL, "classifier: backward on an instance built without train");
    if (dlogits != m->dlogits)
        memcpy(m->dlogits, dlogits, (size_t)m->n * (size_t)m->cfg.num_classes * sizeof *dlogits);
    return backward_from(m, x, dx, e);
}

double fm_classifier_flops(const fm_classifier *m)
{
    double f = fm_linear_flops_fwd(&m->head) + fm_linear_flops_bwd(&m->head, 1);
    for (int k = 0; k < FM_CLS_STAGES; k++)
        f += fm_conv2d_flops_fwd(&m->conv[k]) + fm_conv2d_flops_bwd(&m->conv[k], k > 0);
    return f;
}

void fm_classifier_free(fm_classifier *m)
{
    for (int k = 0; k < FM_CLS_STAGES; k++)
        fm_conv2d_free(&m->conv[k]);
    fm_linear_free(&m->head);
    fm_arena_free(&m->arena);
    memset(m, 0, sizeof *m);
}
