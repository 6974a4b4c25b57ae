/* dit.c - the DiT velocity model: parameter registration, the position
 * embedding, forward and backward (see dit.h). */
#include "fm/dit.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/act.h"
#include "fm/flowmodel.h"
#include "fm/gelu.h"
#include "fm/modulate.h"
#include "fm/patch.h"
#include "fm/sizing.h"
#include "fm/tensorops.h"

int fm_dit_cfg_check(const fm_dit_cfg *c, fm_err *e)
{
    const struct { const char *name; int v; } pos[] = {
        { "in_ch", c->in_ch }, { "size", c->size }, { "patch", c->patch }, { "width", c->width },
        { "depth", c->depth }, { "heads", c->heads }, { "num_classes", c->num_classes },
    };
    for (size_t i = 0; i < sizeof pos / sizeof *pos; i++)
        if (pos[i].v < 1)
            return fm_fail(e, FM_ERR_USAGE, "dit.%s: must be >= 1, got %d", pos[i].name, pos[i].v);
    if (c->width % c->heads)
        return fm_fail(e, FM_ERR_USAGE, "dit.heads: %d does not divide dit.width = %d", c->heads, c->width);
    if (c->size % c->patch)
        return fm_fail(e, FM_ERR_USAGE, "dit.patch: %d does not divide the side of the %dx%d flow input", c->patch,
                       c->size, c->size);
    const double hidden = c->mlp_ratio * c->width;
    if (fabs(hidden - nearbyint(hidden)) > 1e-9 * hidden)
        return fm_fail(e, FM_ERR_USAGE, "dit.mlp_ratio: %g * dit.width = %g is not a whole number of channels",
                       c->mlp_ratio, hidden);
    if (!(hidden >= 1) || hidden > 1e8)
        return fm_fail(e, FM_ERR_USAGE, "dit.mlp_ratio: %g gives an MLP width of %g", c->mlp_ratio, hidden);
    if (c->width % 4)
        return fm_fail(e, FM_ERR_USAGE, "dit.width: %d is not a multiple of 4 (2-D sin-cos position embedding)",
                       c->width);
    if (c->t_freq < 0 || c->t_freq % 2)
        return fm_fail(e, FM_ERR_USAGE, "dit.t_freq: must be even and >= 0 (0 = %d), got %d", FM_DIT_T_FREQ,
                       c->t_freq);
    return FM_OK;
}

static int t_freq_of(const fm_dit_cfg *c) { return c->t_freq ? c->t_freq : FM_DIT_T_FREQ; }
static int64_t hidden_of(const fm_dit_cfg *c) { return (int64_t)(c->mlp_ratio * c->width); }

/* ---- init ------------------------------------------------------------------ */

/* The 2-D sin-cos table of dit.h: pos [T, D] for a (side x side) token grid. */
static void position_embedding(float *pos, int side, int64_t D)
{
    const int64_t q = D / 4;
    for (int i = 0; i < side; i++)
        for (int j = 0; j < side; j++) {
            float *r = pos + ((int64_t)i * side + j) * D;  // [D]
            for (int64_t k = 0; k < q; k++) {
                const double omega = exp(-log(10000.0) * (double)k / (double)q);
                r[k] = (float)sin(j * omega);
                r[q + k] = (float)cos(j * omega);
                r[2 * q + k] = (float)sin(i * omega);
                r[3 * q + k] = (float)cos(i * omega);
            }
        }
}

static void zero_linear(fm_linear *l)
{
    fm_param_fill(l->weight, 0.0f);
    fm_param_fill(l->bias, 0.0f);
}

static int init_block(fm_dit *m, int i, fm_err *e)
{
    fm_dit_block *b = &m->blocks[i];
    const int64_t B = m->batch, M = B * m->tokens, D = m->cfg.width;
    char name[FM_PARAM_NAME];
    b->first_param = m->p->n;
    snprintf(name, sizeof name, "blocks.%d.adaLN", i);
    FM_TRY(fm_linear_init(&b->ada, m->d, m->p, &m->arena, name, D, 6 * D, 1, B, e));
    zero_linear(&b->ada);
    FM_TRY(fm_layernorm_init(&b->ln1, NULL, &m->arena, NULL, D, 0, FM_DIT_LN_EPS, M, e));
    snprintf(name, sizeof name, "blocks.%d.attn", i);
    FM_TRY(fm_attention_init(&b->attn, m->d, m->p, &m->arena, name, D, m->cfg.heads, B, m->tokens, e));
    FM_TRY(fm_layernorm_init(&b->ln2, NULL, &m->arena, NULL, D, 0, FM_DIT_LN_EPS, M, e));
    snprintf(name, sizeof name, "blocks.%d.mlp.0", i);
    FM_TRY(fm_linear_init(&b->mlp0, m->d, m->p, &m->arena, name, D, m->hidden, 1, M, e));
    snprintf(name, sizeof name, "blocks.%d.mlp.2", i);
    FM_TRY(fm_linear_init(&b->mlp2, m->d, m->p, &m->arena, name, m->hidden, D, 1, M, e));
    b->n_params = m->p->n - b->first_param;
    FM_TRY(fm_arena_take(&m->arena, (size_t)(M * D), sizeof(float), &b->xmid, "dit", e));
    FM_TRY(fm_arena_take(&m->arena, (size_t)(M * D), sizeof(float), &b->a, "dit", e));
    FM_TRY(fm_arena_take(&m->arena, (size_t)(M * m->hidden), sizeof(float), &b->h1, "dit", e));
    FM_TRY(fm_arena_take(&m->arena, (size_t)(M * D), sizeof(float), &b->f, "dit", e));
    FM_TRY(fm_arena_take(&m->arena, (size_t)(B * 6 * D), sizeof(float), &b->mod, "dit", e));
    m->flops += fm_linear_flops_fwd(&b->ada) + fm_attention_flops_fwd(&b->attn) + fm_linear_flops_fwd(&b->mlp0) +
                fm_linear_flops_fwd(&b->mlp2);
    return FM_OK;
}

/* Every layer and buffer, from an arena of arena_cap bytes (FM_ARENA_MEASURE:
 * a measuring one). */
static int init(fm_dit *m, fm_dnn *d, fm_params *p, const fm_dit_cfg *cfg, int batch, size_t arena_cap, fm_err *e)
{
    m->cfg = *cfg;
    m->cfg.t_freq = t_freq_of(cfg);
    m->d = d;
    m->p = p;
    m->batch = batch;
    const int side = cfg->size / cfg->patch;
    m->tokens = (int64_t)side * side;
    m->pdim = (int64_t)cfg->patch * cfg->patch * cfg->in_ch;
    m->hidden = hidden_of(cfg);
    const int64_t B = batch, T = m->tokens, M = B * T, D = cfg->width, P = m->pdim, F = m->cfg.t_freq;
    m->blocks = calloc((size_t)cfg->depth, sizeof *m->blocks);
    if (!m->blocks)
        return fm_fail(e, FM_ERR_INTERNAL, "dit: out of memory for %d blocks", cfg->depth);
    FM_TRY(fm_arena_init(&m->arena, arena_cap, e));
    fm_arena *a = &m->arena;

    /* parameters, in the twin's state-dict order */
    m->x_first = p->n;
    FM_TRY(fm_linear_init(&m->x_embed, d, p, a, "x_embed", P, D, 1, M, e));
    m->x_n = p->n - m->x_first;
    m->cond_first = p->n;
    FM_TRY(fm_time_embed_init(&m->temb, a, batch, (int)F, FM_DIT_T_SCALE, e));
    FM_TRY(fm_linear_init(&m->t0, d, p, a, "t_embed.0", F, D, 1, B, e));
    FM_TRY(fm_linear_init(&m->t2, d, p, a, "t_embed.2", D, D, 1, B, e));
    FM_TRY(fm_class_embed_init(&m->yemb, p, "y_embed", batch, cfg->num_classes, (int)D, e));
    m->cond_n = p->n - m->cond_first;
    for (int i = 0; i < cfg->depth; i++)
        FM_TRY(init_block(m, i, e));
    m->final_first = p->n;
    FM_TRY(fm_linear_init(&m->final_ada, d, p, a, "final.adaLN", D, 2 * D, 1, B, e));
    zero_linear(&m->final_ada);
    FM_TRY(fm_layernorm_init(&m->final_ln, NULL, a, NULL, D, 0, FM_DIT_LN_EPS, M, e));
    FM_TRY(fm_linear_init(&m->final_linear, d, p, a, "final.linear", D, P, 1, M, e));
    zero_linear(&m->final_linear);
    m->final_n = p->n - m->final_first;

    /* activations and scratch */
    for (int i = 0; i < cfg->depth; i++)
        FM_TRY(fm_arena_take(a, (size_t)(M * D), sizeof(float), &m->blocks[i].x, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(M * D), sizeof(float), &m->xout, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(T * D), sizeof(float), &m->pos, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(M * P), sizeof(float), &m->tok, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)B, sizeof(float), &m->t, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)B, sizeof(int32_t), &m->y, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(B * F), sizeof(float), &m->tf, "dit", e));
    float **bd[] = { &m->t1, &m->t1s, &m->ye, &m->c, &m->sc, &m->dsc, &m->dpart, &m->dc, &m->dt1 };
    for (size_t i = 0; i < sizeof bd / sizeof *bd; i++)
        FM_TRY(fm_arena_take(a, (size_t)(B * D), sizeof(float), bd[i], "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(B * 2 * D), sizeof(float), &m->fmod, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(M * D), sizeof(float), &m->mfin, "dit", e));
    if (cfg->patch > 1)
        FM_TRY(fm_arena_take(a, (size_t)(M * P), sizeof(float), &m->otok, "dit", e));
    float **md[] = { &m->s_n, &m->s_m, &m->s_g, &m->s_d };
    for (size_t i = 0; i < sizeof md / sizeof *md; i++)
        FM_TRY(fm_arena_take(a, (size_t)(M * D), sizeof(float), md[i], "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(M * m->hidden), sizeof(float), &m->s_h, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(B * 6 * D), sizeof(float), &m->dmod, "dit", e));
    FM_TRY(fm_arena_take(a, (size_t)(B * 2 * D), sizeof(float), &m->dfmod, "dit", e));

    if (!fm_arena_measuring(a))
        position_embedding(m->pos, side, D);
    m->flops += fm_linear_flops_fwd(&m->x_embed) + fm_linear_flops_fwd(&m->t0) + fm_linear_flops_fwd(&m->t2) +
                fm_linear_flops_fwd(&m->final_ada) + fm_linear_flops_fwd(&m->final_linear);
    return FM_OK;
}

/* The set-up (sizing.h) of a DiT of cfg for batch. */
typedef struct dit_args {
    const fm_dit_cfg *cfg;
    int batch;
} dit_args;

/* fm_dit_init on an arena of arena_cap bytes (FM_ARENA_MEASURE: a measuring
 * one); on failure m is freed. */
static int setup(void *obj, fm_dnn *d, fm_params *p, const void *args, size_t arena_cap, fm_err *e)
{
    fm_dit *m = obj;
    const dit_args *a = args;
    memset(m, 0, sizeof *m);
    FM_TRY(fm_dit_cfg_check(a->cfg, e));
    if (a->batch < 1)
        return fm_fail(e, FM_ERR_USAGE, "dit: batch must be >= 1, got %d", a->batch);
    int rc = init(m, d, p, a->cfg, a->batch, arena_cap, e);
    if (rc != FM_OK) {
        fm_dit_free(m);
        fm_err_prefix(e, "dit init");
    }
    return rc;
}

static const fm_arena *arena_of(const void *m) { return &((const fm_dit *)m)->arena; }
static void release(void *m) { fm_dit_free(m); }
static const fm_sizing_ops sizing = { sizeof(fm_dit), setup, arena_of, release };

int fm_dit_init(fm_dit *m, fm_dnn *d, fm_params *p, const fm_dit_cfg *cfg, int batch, fm_err *e)
{
    const dit_args args = { cfg, batch };
    return fm_sizing_init(&sizing, m, d, p, &args, e);
}

int fm_dit_measure(const fm_dit_cfg *cfg, int batch, size_t *arena, size_t *params, fm_err *e)
{
    const dit_args args = { cfg, batch };
    return fm_sizing_measure(&sizing, &args, arena, params, NULL, NULL, e);
}

int fm_dit_param_count(const fm_dit_cfg *cfg, int *tensors, size_t *padded, size_t *count, fm_err *e)
{
    const dit_args args = { cfg, 1 }; /* the parameters do not depend on the batch */
    return fm_sizing_param_count(&sizing, &args, tensors, padded, count, e);
}

/* ---- forward ---------------------------------------------------------------- */
/* Every layer times itself when the model's walk (below) attached it to a
 * profile (profile.h): the model code holds no timers. */

/* One block: x (blk->x) -> out [B, T, D]. */
static int block_forward(fm_dit *m, fm_dit_block *b, float *out, fm_err *e)
{
    const int B = m->batch, D = m->cfg.width;
    const long T = (long)m->tokens, ld = 6L * D;
    const float *mod = b->mod;  // [B, 6D]: shift1 scale1 gate1 shift2 scale2 gate2
    FM_TRY(fm_linear_forward(&b->ada, m->sc, b->mod, e));
    /* attention half */
    FM_TRY(fm_layernorm_forward(&b->ln1, b->x, m->s_n, e));
    fm_modulate_forward(m->s_n, mod, mod + D, ld, m->s_m, B, T, D);
    FM_TRY(fm_attention_forward(&b->attn, m->s_m, b->a, e));
    fm_gate_residual_forward(b->x, mod + 2 * D, ld, b->a, b->xmid, B, T, D);
    /* MLP half */
    FM_TRY(fm_layernorm_forward(&b->ln2, b->xmid, m->s_n, e));
    fm_modulate_forward(m->s_n, mod + 3 * D, mod + 4 * D, ld, m->s_m, B, T, D);
    FM_TRY(fm_linear_forward(&b->mlp0, m->s_m, b->h1, e));
    FM_TRY(fm_linear_forward_gelu(&b->mlp2, b->h1, m->s_h, b->f, e));  // s_h = gelu(h1)
    fm_gate_residual_forward(b->xmid, mod + 5 * D, ld, b->f, out, B, T, D);
    return FM_OK;
}

int fm_dit_forward(fm_dit *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    const int B = m->batch, D = m->cfg.width, S = m->cfg.size, C = m->cfg.in_ch, p = m->cfg.patch;
    const long T = (long)m->tokens, M = B * T;
    m->forward_done = 0;
    memcpy(m->t, t, (size_t)B * sizeof(float));
    memcpy(m->y, y, (size_t)B * sizeof(int32_t));

    /* c = t_embed(t) + y_embed(y); sc = SiLU(c) feeds every adaLN */
    FM_TRY(fm_time_embed_forward(&m->temb, m->t, m->tf, e));
    FM_TRY(fm_linear_forward(&m->t0, m->tf, m->t1, e));
    fm_silu_forward(m->t1, m->t1s, (long)B * D);
    FM_TRY(fm_linear_forward(&m->t2, m->t1s, m->c, e));
    FM_TRY(fm_class_embed_forward(&m->yemb, m->y, m->ye, e));
    fm_acc(m->c, m->ye, (long)B * D);
    fm_silu_forward(m->c, m->sc, (long)B * D);

    /* tokens + position embedding */
    if (p > 1)
        fm_patchify(x, m->tok, B, S, S, C, p);  // [B, T, P]
    else
        memcpy(m->tok, x, (size_t)M * m->pdim * sizeof(float));
    float *h = m->blocks[0].x;
    FM_TRY(fm_linear_forward(&m->x_embed, m->tok, h, e));
    for (int s = 0; s < B; s++)
        fm_acc(h + (long)s * T * D, m->pos, T * D);

    for (int i = 0; i < m->cfg.depth; i++)
        FM_TRY(block_forward(m, &m->blocks[i], i + 1 < m->cfg.depth ? m->blocks[i + 1].x : m->xout, e));

    /* final layer */
    FM_TRY(fm_linear_forward(&m->final_ada, m->sc, m->fmod, e));
    FM_TRY(fm_layernorm_forward(&m->final_ln, m->xout, m->s_n, e));
    fm_modulate_forward(m->s_n, m->fmod, m->fmod + D, 2L * D, m->mfin, B, T, D);
    if (p > 1) {
        FM_TRY(fm_linear_forward(&m->final_linear, m->mfin, m->otok, e));
        fm_unpatchify(m->otok, out, B, S, S, C, p);
    } else {
        FM_TRY(fm_linear_forward(&m->final_linear, m->mfin, out, e));
    }
    m->forward_done = 1;
    return FM_OK;
}

/* ---- backward --------------------------------------------------------------- */

static int hook(fm_dit *m, int first, int n, fm_err *e)
{
    if (m->hook)
        FM_TRY(m->hook(m->hook_ctx, first, n, e));
    return FM_OK;
}

/* One block, given g = dL/d(block output) in s_g: leaves dL/d(block input) in
 * s_g, writes the block's parameter gradients and adds its share of dL/dSiLU(c)
 * to dsc. */
static int block_backward(fm_dit *m, fm_dit_block *b, fm_err *e)
{
    const int B = m->batch, D = m->cfg.width;
    const long T = (long)m->tokens, M = B * T, ld = 6L * D, n = M * D, nh = M * (long)m->hidden;
    const float *mod = b->mod;
    float *dmod = m->dmod, *g = m->s_g, *sn = m->s_n, *sm = m->s_m, *sh = m->s_h, *sd = m->s_d;

    /* MLP half: out = xmid + gate2 * mlp2(gelu(mlp0(modulate(ln2(xmid))))) */
    fm_gate_residual_backward(b->f, mod + 5 * D, ld, g, sd, dmod + 5 * D, B, T, D);  // sd = df
    /* Under bf16 the linears keep the rounded copies of their forward inputs
     * (fm_linear_keeps_x): the recomputations that only rebuild such an input
     * are skipped. */
    if (!fm_linear_keeps_x(&b->mlp2, sh))
        fm_gelu_forward(b->h1, sh, nh);                                     // recompute
    FM_TRY(fm_linear_backward(&b->mlp2, sh, sd, sh, e));                    // sh = d gelu out
    FM_TRY(fm_layernorm_apply(&b->ln2, b->xmid, sn, e));                    // recompute
    if (!fm_linear_keeps_x(&b->mlp0, sm))
        fm_modulate_forward(sn, mod + 3 * D, mod + 4 * D, ld, sm, B, T, D);
    FM_TRY(fm_linear_backward_gelu(&b->mlp0, sm, b->h1, sh, sm, e));        // through the GELU: sm = dm2
    fm_modulate_backward(sn, mod + 4 * D, sm, ld, sm, dmod + 3 * D, dmod + 4 * D, B, T, D);
    FM_TRY(fm_layernorm_backward(&b->ln2, b->xmid, sm, sm, e));
    fm_acc(g, sm, n);                                                       // g = d xmid

    /* attention half: xmid = x + gate1 * attn(modulate(ln1(x))) */
    fm_gate_residual_backward(b->a, mod + 2 * D, ld, g, sd, dmod + 2 * D, B, T, D);  // sd = da
    FM_TRY(fm_layernorm_apply(&b->ln1, b->x, sn, e));                       // recompute
    if (!fm_attention_keeps_x(&b->attn, sm))
        fm_modulate_forward(sn, mod, mod + D, ld, sm, B, T, D);
    FM_TRY(fm_attention_backward(&b->attn, sm, sd, sm, e));                 // sm = dm1
    fm_modulate_backward(sn, mod + D, sm, ld, sm, dmod, dmod + D, B, T, D);
    FM_TRY(fm_layernorm_backward(&b->ln1, b->x, sm, sm, e));
    fm_acc(g, sm, n);                                                       // g = d x

    FM_TRY(fm_linear_backward(&b->ada, m->sc, dmod, m->dpart, e));
    fm_acc(m->dsc, m->dpart, (long)B * D);
    return FM_OK;
}

int fm_dit_backward(fm_dit *m, const float *dout, fm_err *e)
{
    if (!m->forward_done)
        return fm_fail(e, FM_ERR_INTERNAL, "dit backward: no forward to differentiate");
    const int B = m->batch, D = m->cfg.width, S = m->cfg.size, C = m->cfg.in_ch, p = m->cfg.patch;
    const long T = (long)m->tokens;
    const float *dtok = dout;  // [B, T, P]
    if (p > 1) {
        fm_patchify(dout, m->otok, B, S, S, C, p);
        dtok = m->otok;
    }

    /* final layer: out = final_linear(modulate(final_ln(xout), fmod)) */
    FM_TRY(fm_linear_backward(&m->final_linear, m->mfin, dtok, m->s_m, e));
    FM_TRY(fm_layernorm_apply(&m->final_ln, m->xout, m->s_n, e));  // recompute
    fm_modulate_backward(m->s_n, m->fmod + D, m->s_m, 2L * D, m->s_m, m->dfmod, m->dfmod + D, B, T, D);
    FM_TRY(fm_layernorm_backward(&m->final_ln, m->xout, m->s_m, m->s_g, e));
    FM_TRY(fm_linear_backward(&m->final_ada, m->sc, m->dfmod, m->dsc, e));
    FM_TRY(hook(m, m->final_first, m->final_n, e));

    for (int i = m->cfg.depth - 1; i >= 0; i--) {
        FM_TRY(block_backward(m, &m->blocks[i], e));
        FM_TRY(hook(m, m->blocks[i].first_param, m->blocks[i].n_params, e));
    }

    /* the position embedding is fixed: s_g is the gradient of x_embed's output */
    FM_TRY(fm_linear_backward(&m->x_embed, m->tok, m->s_g, NULL, e));
    FM_TRY(hook(m, m->x_first, m->x_n, e));

    /* conditioning: dsc -> dc -> y_embed, t_embed.2, SiLU, t_embed.0 */
    fm_silu_backward(m->c, m->dsc, m->dc, (long)B * D);
    FM_TRY(fm_class_embed_backward(&m->yemb, m->y, m->dc, e));
    FM_TRY(fm_linear_backward(&m->t2, m->t1s, m->dc, m->dt1, e));
    fm_silu_backward(m->t1, m->dt1, m->dt1, (long)B * D);
    FM_TRY(fm_linear_backward(&m->t0, m->tf, m->dt1, NULL, e));
    FM_TRY(hook(m, m->cond_first, m->cond_n, e));
    return FM_OK;
}

/* ---- the rest ------------------------------------------------------------- */

/* The layers in the order forward first calls them, named as the profile
 * names them: scopes "cond", "embed", "blocks.{i}", "final". */
static void walk(fm_dit *m, fm_prof_visit visit, void *ctx)
{
    visit(ctx, "cond", "time_embed", "embedding", &m->temb.prof);
    visit(ctx, "cond", "t_embed.0", "linear", &m->t0.prof);
    visit(ctx, "cond", "t_embed.2", "linear", &m->t2.prof);
    visit(ctx, "cond", "y_embed", "embedding", &m->yemb.prof);
    visit(ctx, "embed", "x_embed", "linear", &m->x_embed.prof);
    for (int i = 0; i < m->cfg.depth; i++) {
        fm_dit_block *b = &m->blocks[i];
        char s[24];
        snprintf(s, sizeof s, "blocks.%d", i);
        visit(ctx, s, "adaLN", "linear", &b->ada.prof);
        visit(ctx, s, "ln1", "layernorm", &b->ln1.prof);
        visit(ctx, s, "attn", "attention", &b->attn.prof);
        visit(ctx, s, "ln2", "layernorm", &b->ln2.prof);
        visit(ctx, s, "mlp.0", "linear", &b->mlp0.prof);
        visit(ctx, s, "mlp.2", "linear", &b->mlp2.prof);
    }
    visit(ctx, "final", "adaLN", "linear", &m->final_ada.prof);
    visit(ctx, "final", "ln", "layernorm", &m->final_ln.prof);
    visit(ctx, "final", "linear", "linear", &m->final_linear.prof);
}

void fm_dit_set_grad_hook(fm_dit *m, fm_dit_grad_hook fn, void *ctx)
{
    m->hook = fn;
    m->hook_ctx = ctx;
}

double fm_dit_flops(const fm_dit *m) { return m->flops; }

size_t fm_dit_activation_bytes(const fm_dit *m) { return m->arena.used; }

void fm_dit_free(fm_dit *m)
{
    if (m->blocks)
        for (int i = 0; i < m->cfg.depth; i++) {
            fm_linear_free(&m->blocks[i].ada);
            fm_attention_free(&m->blocks[i].attn);
            fm_linear_free(&m->blocks[i].mlp0);
            fm_linear_free(&m->blocks[i].mlp2);
        }
    fm_linear_free(&m->x_embed);
    fm_linear_free(&m->t0);
    fm_linear_free(&m->t2);
    fm_linear_free(&m->final_ada);
    fm_linear_free(&m->final_linear);
    free(m->blocks);
    fm_arena_free(&m->arena);
    memset(m, 0, sizeof *m);
}

/* ---- the model interface (flowmodel.h) ------------------------------------ */

static int ops_forward(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    return fm_dit_forward(m, x, t, y, out, e);
}
static int ops_backward(void *m, const float *dout, fm_err *e) { return fm_dit_backward(m, dout, e); }
static void ops_set_grad_hook(void *m, fm_flow_grad_hook fn, void *ctx) { fm_dit_set_grad_hook(m, fn, ctx); }
static void ops_walk(void *m, fm_prof_visit visit, void *ctx) { walk(m, visit, ctx); }
static double ops_flops(const void *m) { return fm_dit_flops(m); }
static size_t ops_activation_bytes(const void *m) { return fm_dit_activation_bytes(m); }
static void ops_free(void *m) { fm_dit_free(m); }

const fm_flow_model_ops fm_dit_ops = {
    .name = "dit",
    .forward = ops_forward,
    .backward = ops_backward,
    .set_grad_hook = ops_set_grad_hook,
    .walk = ops_walk,
    .flops = ops_flops,
    .activation_bytes = ops_activation_bytes,
    .free = ops_free,
};
