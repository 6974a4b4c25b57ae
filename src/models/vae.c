/* vae.c - the VAE: encoder, decoder, reparameterisation and loss (see vae.h).
 *
 * Backward runs down the model with two ping-pong gradient buffers (cur, oth)
 * and two temporaries inside a ResBlock, all as large as the largest
 * activation; every activation the backward pass reads is kept from forward. */
#include "fm/vae.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fm/loss.h"
#include "fm/residual.h"
#include "fm/rng.h"
#include "fm/sizing.h"
#include "fm/tensorops.h"

fm_vae_cfg fm_vae_cfg_default(void)
{
    fm_vae_cfg c = { .in_ch = 1, .size = 32, .levels = 3, .channels = { 32, 64, 128 }, .res_blocks = 1,
                     .latent_ch = 4, .groups = 8, .recon = FM_VAE_LOSS_L2, .kl_weight = 1e-4f };
    return c;
}

int fm_vae_latent_hw(const fm_vae_cfg *c) { return c->size >> (c->levels - 1); }

static int gn_groups(const fm_vae_cfg *c, int ch) { return ch < c->groups ? ch : c->groups; }

int fm_vae_cfg_check(const fm_vae_cfg *c, fm_err *e)
{
    if (c->levels < 1)
        return fm_fail(e, FM_ERR_USAGE, "vae.channels: %d levels, expected 1 to %d", c->levels, FM_VAE_MAX_LEVELS);
    if (c->levels > FM_VAE_MAX_LEVELS)
        return fm_fail(e, FM_ERR_USAGE, "vae.channels: %d levels, at most %d (the side halves after each level but the last)",
                       c->levels, FM_VAE_MAX_LEVELS);
    for (int i = 0; i < c->levels; i++) {
        int ch = c->channels[i];
        if (ch < 1)
            return fm_fail(e, FM_ERR_USAGE, "vae.channels[%d]: %d, expected > 0", i, ch);
        if (c->groups >= 1 && ch % gn_groups(c, ch))
            return fm_fail(e, FM_ERR_USAGE, "vae.groups: %d does not divide vae.channels[%d] = %d (GroupNorm groups)",
                           gn_groups(c, ch), i, ch);
    }
    if (c->res_blocks < 1 || c->res_blocks > FM_VAE_MAX_RES)
        return fm_fail(e, FM_ERR_USAGE, "vae.res_blocks: must be in [1, %d], got %d", FM_VAE_MAX_RES, c->res_blocks);
    if (c->in_ch < 1 || c->latent_ch < 1 || c->groups < 1)
        return fm_fail(e, FM_ERR_USAGE, "vae: in_ch (%d), latent_ch (%d) and groups (%d) must be >= 1", c->in_ch,
                       c->latent_ch, c->groups);
    const int f = 1 << (c->levels - 1);
    if (c->size < f || c->size % f)
        return fm_fail(e, FM_ERR_USAGE, "vae: image size %d is not a multiple of %d (%d levels)", c->size, f,
                       c->levels);
    if (!(c->kl_weight >= 0.0f && c->kl_weight < INFINITY))
        return fm_fail(e, FM_ERR_USAGE, "vae.kl_weight: must be finite and >= 0, got %g", (double)c->kl_weight);
    if (c->recon != FM_VAE_LOSS_L2 && c->recon != FM_VAE_LOSS_L1)
        return fm_fail(e, FM_ERR_USAGE, "vae.loss: unknown reconstruction loss %d", (int)c->recon);
    return FM_OK;
}

static int check_cfg(const fm_vae_cfg *c, int n, fm_err *e)
{
    FM_TRY(fm_vae_cfg_check(c, e));
    if (n < 1)
        return fm_fail(e, FM_ERR_USAGE, "vae: batch %d must be >= 1", n);
    return FM_OK;
}

/* printf into a parameter-name buffer; a name that does not fit is an error. */
static int fmt_name(char *out, fm_err *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmt_name(char *out, fm_err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(out, FM_PARAM_NAME, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= FM_PARAM_NAME)
        return fm_fail(e, FM_ERR_INTERNAL, "vae: parameter name too long: %s...", out);
    return FM_OK;
}

static const char BUFS[] = "vae buffers"; /* what the arena takes are named in errors */

static void track(long *mx, long v)
{
    if (v > *mx)
        *mx = v;
}

/* ---- ResBlock ---- */

static int res_init(fm_vae_res *r, fm_dnn *d, fm_params *p, fm_arena *a, const fm_vae_cfg *c, const char *name,
                    int n, int hw, int cin, int cout, long *mx, fm_err *e)
{
    char nm[FM_PARAM_NAME];
    r->n = n, r->h = r->w = hw, r->cin = cin, r->cout = cout;
    FM_TRY(fmt_name(nm, e, "%s.norm1", name));
    FM_TRY(fm_groupnorm_init(&r->norm1, p, a, nm, gn_groups(c, cin), FM_VAE_GN_EPS, FM_GN_SILU, n, hw, hw, cin, e));
    FM_TRY(fmt_name(nm, e, "%s.conv1", name));
    FM_TRY(fm_conv2d_init(&r->conv1, d, p, a, nm, cin, cout, 3, 1, 1, 1, n, hw, hw, e));
    FM_TRY(fmt_name(nm, e, "%s.norm2", name));
    FM_TRY(fm_groupnorm_init(&r->norm2, p, a, nm, gn_groups(c, cout), FM_VAE_GN_EPS, FM_GN_SILU, n, hw, hw, cout,
                             e));
    FM_TRY(fmt_name(nm, e, "%s.conv2", name));
    FM_TRY(fm_conv2d_init(&r->conv2, d, p, a, nm, cout, cout, 3, 1, 1, 1, n, hw, hw, e));
    r->has_skip = cin != cout;
    if (r->has_skip) {
        FM_TRY(fmt_name(nm, e, "%s.skip", name));
        FM_TRY(fm_conv2d_init(&r->skip, d, p, a, nm, cin, cout, 1, 1, 0, 1, n, hw, hw, e));
    }
    const long pix = (long)n * hw * hw;
    FM_TRY(fm_arena_take(a, (size_t)(pix * cin), sizeof(float), &r->h1, BUFS, e));
    FM_TRY(fm_arena_take(a, (size_t)(pix * cout), sizeof(float), &r->c1, BUFS, e));
    FM_TRY(fm_arena_take(a, (size_t)(pix * cout), sizeof(float), &r->h2, BUFS, e));
    FM_TRY(fm_arena_take(a, (size_t)(pix * cout), sizeof(float), &r->y, BUFS, e));
    track(mx, pix * (cin > cout ? cin : cout));
    return FM_OK;
}

/* r->y [n, h, w, cout] = conv2(silu(gn2(conv1(silu(gn1(x)))))) + skip(x);
 * tmp holds the skip branch. */
static int res_forward(fm_vae_res *r, const float *x, float *tmp, fm_err *e)
{
    FM_TRY(fm_groupnorm_forward(&r->norm1, x, r->h1, e));
    FM_TRY(fm_conv2d_forward(&r->conv1, r->h1, r->c1, e));
    FM_TRY(fm_groupnorm_forward(&r->norm2, r->c1, r->h2, e));
    FM_TRY(fm_conv2d_forward(&r->conv2, r->h2, r->y, e));
    const long ny = (long)r->n * r->h * r->w * r->cout;
    return fm_residual_forward(r->has_skip ? &r->skip : NULL, x, tmp, r->y, ny, e);
}

/* From dy [n, h, w, cout]: overwrites dx [n, h, w, cin] (must differ from dy)
 * and the block's parameter gradients; t1, t2 are scratch. */
static int res_backward(fm_vae_res *r, const float *x, const float *dy, float *dx, float *t1, float *t2, fm_err *e)
{
    FM_TRY(fm_conv2d_backward(&r->conv2, r->h2, dy, t1, e));  // t1 = dh2
    FM_TRY(fm_groupnorm_backward(&r->norm2, r->c1, t1, t1, e));  // t1 = dc1
    FM_TRY(fm_conv2d_backward(&r->conv1, r->h1, t1, t2, e));  // t2 = dh1 [.., cin]
    FM_TRY(fm_groupnorm_backward(&r->norm1, x, t2, dx, e));
    const long nx = (long)r->n * r->h * r->w * r->cin;
    return fm_residual_backward(r->has_skip ? &r->skip : NULL, x, dy, t2, dx, nx, e);
}

static void res_free(fm_vae_res *r)
{
    fm_conv2d_free(&r->conv1);
    fm_conv2d_free(&r->conv2);
    fm_conv2d_free(&r->skip);
}

static double res_flops(const fm_vae_res *r)
{
    double f = 0;
    const fm_conv2d *cs[3] = { &r->conv1, &r->conv2, &r->skip };
    for (int k = 0; k < (r->has_skip ? 3 : 2); k++)
        f += fm_conv2d_flops_fwd(cs[k]) + fm_conv2d_flops_bwd(cs[k], 1);
    return f;
}

static void levels_free(fm_vae_level *lv)
{
    for (int i = 0; i < FM_VAE_MAX_LEVELS; i++) {
        for (int j = 0; j < FM_VAE_MAX_RES; j++)
            res_free(&lv[i].res[j]);
        fm_conv2d_free(&lv[i].resample);
        fm_upconv_free(&lv[i].upsample);
    }
}

static double levels_flops(const fm_vae_level *lv, const fm_vae_cfg *c)
{
    double f = 0;
    for (int i = 0; i < c->levels; i++) {
        for (int j = 0; j < c->res_blocks; j++)
            f += res_flops(&lv[i].res[j]);
        if (lv[i].has_resample && lv[i].resample.weight)
            f += fm_conv2d_flops_fwd(&lv[i].resample) + fm_conv2d_flops_bwd(&lv[i].resample, 1);
        if (lv[i].has_resample && lv[i].upsample.weight)
            f += fm_upconv_flops_fwd(&lv[i].upsample) + fm_upconv_flops_bwd(&lv[i].upsample, 1);
    }
    return f;
}

static int take_grads(float *g[4], fm_arena *a, long mx, fm_err *e)
{
    for (int k = 0; k < 4; k++)
        FM_TRY(fm_arena_take(a, (size_t)mx, sizeof(float), &g[k], BUFS, e));
    return FM_OK;
}

/* ---- the encoder and the decoder ---- */

/* The set-up (sizing.h) of an encoder (decoder = 0) or a decoder of cfg for
 * batch n, with the backward buffers when train. */
typedef struct half_args {
    const fm_vae_cfg *cfg;
    int n, train, decoder;
} half_args;

static const char *side(const fm_vae_half *m) { return m->decoder ? "decoder" : "encoder"; }

/* The level run k-th (k = 0 first): the encoder runs 0 .. L-1, the decoder L-1 .. 0. */
static int level_at(const fm_vae_half *m, int k) { return m->decoder ? m->cfg.levels - 1 - k : k; }

/* The input of ResBlock j of level i: the block before it, the level run
 * before it, or conv_in's output. */
static const float *block_in(const fm_vae_half *m, int i, int j)
{
    if (j > 0)
        return m->lv[i].res[j - 1].y;
    const int before = m->decoder ? i + 1 : i - 1;
    return before >= 0 && before < m->cfg.levels ? m->lv[before].out : m->h0;
}

/* Registers "encoder.*" or "decoder.*": conv_in, the levels in index order
 * (ResBlocks, then the encoder's stride-2 downsample or the decoder's
 * upsample), out_norm and out_conv; takes every buffer. */
static int half_build(fm_vae_half *m, fm_dnn *d, fm_params *p, fm_err *e)
{
    const fm_vae_cfg *c = &m->cfg;
    const int n = m->n, S = c->size, L = c->levels, lat = m->lat, *ch = c->channels, dec = m->decoder;
    fm_arena *a = &m->arena;
    char nm[FM_PARAM_NAME];
    long mx = (long)n * S * S * c->in_ch;
    /* the encoder takes the image to level 0's width, the decoder the latent to level L-1's */
    const int first = level_at(m, 0), in_ch = dec ? c->latent_ch : c->in_ch, in_hw = dec ? lat : S;
    FM_TRY(fmt_name(nm, e, "%s.conv_in", side(m)));
    FM_TRY(fm_conv2d_init(&m->conv_in, d, p, a, nm, in_ch, ch[first], 3, 1, 1, 1, n, in_hw, in_hw, e));
    FM_TRY(fm_arena_take(a, (size_t)n * in_hw * in_hw * ch[first], sizeof(float), &m->h0, BUFS, e));
    for (int i = 0; i < L; i++) {
        fm_vae_level *lv = &m->lv[i];
        const int hw = S >> i, before = i == first ? first : dec ? i + 1 : i - 1;
        lv->h = hw;
        lv->ch = ch[i];
        for (int j = 0; j < c->res_blocks; j++) {
            FM_TRY(fmt_name(nm, e, "%s.%s.%d.res.%d", side(m), dec ? "up" : "down", i, j));
            FM_TRY(res_init(&lv->res[j], d, p, a, c, nm, n, hw, j > 0 ? ch[i] : ch[before], ch[i], &mx, e));
        }
        if (dec && i > 0) {
            const long up = (long)n * 4 * hw * hw * ch[i];
            lv->has_resample = 1;
            FM_TRY(fmt_name(nm, e, "decoder.up.%d.upsample", i));
            FM_TRY(fm_upconv_init(&lv->upsample, d, p, a, nm, ch[i], ch[i], 1, n, hw, hw, e));
            FM_TRY(fm_arena_take(a, (size_t)up, sizeof(float), &lv->out, BUFS, e));
            track(&mx, up);
        } else if (!dec && i < L - 1) {
            lv->has_resample = 1;
            FM_TRY(fmt_name(nm, e, "encoder.down.%d.downsample", i));
            FM_TRY(fm_conv2d_init(&lv->resample, d, p, a, nm, ch[i], ch[i], 3, 2, 1, 1, n, hw, hw, e));
            FM_TRY(fm_arena_take(a, (size_t)n * (hw / 2) * (hw / 2) * ch[i], sizeof(float), &lv->out, BUFS,
                                 e));
        }
    }
    /* out_norm and out_conv on the last level run: to the moments, or to the image */
    const int last = level_at(m, L - 1), out_hw = dec ? S : lat, out_ch = dec ? c->in_ch : 2 * c->latent_ch;
    FM_TRY(fmt_name(nm, e, "%s.out_norm", side(m)));
    FM_TRY(fm_groupnorm_init(&m->out_norm, p, a, nm, gn_groups(c, ch[last]), FM_VAE_GN_EPS, FM_GN_SILU, n, out_hw,
                             out_hw, ch[last], e));
    FM_TRY(fm_arena_take(a, (size_t)n * out_hw * out_hw * ch[last], sizeof(float), &m->hn, BUFS, e));
    FM_TRY(fmt_name(nm, e, "%s.out_conv", side(m)));
    FM_TRY(fm_conv2d_init(&m->out_conv, d, p, a, nm, ch[last], out_ch, 3, 1, 1, 1, n, out_hw, out_hw, e));
    FM_TRY(fm_arena_take(a, (size_t)n * out_hw * out_hw * out_ch, sizeof(float), &m->out, BUFS, e));
    FM_TRY(fm_arena_take(a, (size_t)mx, sizeof(float), &m->tmp, BUFS, e));
    if (m->train)
        FM_TRY(take_grads(m->g, a, mx, e));
    if (m->train && dec)
        FM_TRY(fm_arena_take(a, (size_t)n * lat * lat * c->latent_ch, sizeof(float), &m->dz, BUFS, e));
    return FM_OK;
}

void fm_vae_half_free(fm_vae_half *m)
{
    fm_conv2d_free(&m->conv_in);
    fm_conv2d_free(&m->out_conv);
    levels_free(m->lv);
    fm_arena_free(&m->arena);
    memset(m, 0, sizeof *m);
}

/* half_build on an arena of arena_cap bytes (FM_ARENA_MEASURE: a measuring
 * one); on failure m is freed. */
static int half_setup(void *obj, fm_dnn *d, fm_params *p, const void *args, size_t arena_cap, fm_err *e)
{
    fm_vae_half *m = obj;
    const half_args *a = args;
    FM_TRY(check_cfg(a->cfg, a->n, e));
    m->cfg = *a->cfg;
    m->n = a->n;
    m->lat = fm_vae_latent_hw(a->cfg);
    m->decoder = a->decoder;
    m->train = a->train;
    m->p_first = p->numel;
    int rc = fm_arena_init(&m->arena, arena_cap, e);
    if (rc == FM_OK)
        rc = half_build(m, d, p, e);
    if (rc != FM_OK) {
        fm_vae_half_free(m);
        return fm_err_prefix(e, "vae %s (batch %d)", side(m), a->n);
    }
    m->p_numel = p->numel - m->p_first;
    return FM_OK;
}

static const fm_arena *half_arena(const void *m) { return &((const fm_vae_half *)m)->arena; }
static void half_free_obj(void *m) { fm_vae_half_free(m); }

static const fm_sizing_ops half_sizing = { sizeof(fm_vae_half), half_setup, half_arena, half_free_obj };

static int half_init(fm_vae_half *m, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, int train, int decoder,
                     fm_err *e)
{
    const half_args args = { cfg, n, train, decoder };
    return fm_sizing_init(&half_sizing, m, d, p, &args, e);
}

int fm_vae_half_measure(const fm_vae_cfg *cfg, int n, int train, int decoder, size_t *arena, size_t *params,
                        fm_err *e)
{
    const half_args args = { cfg, n, train, decoder };
    return fm_sizing_measure(&half_sizing, &args, arena, params, NULL, NULL, e);
}

int fm_vae_half_forward(fm_vae_half *m, const float *in, fm_err *e)
{
    const fm_vae_cfg *c = &m->cfg;
    const int R = c->res_blocks;
    FM_TRY(fm_conv2d_forward(&m->conv_in, in, m->h0, e));
    for (int k = 0; k < c->levels; k++) {
        const int i = level_at(m, k);
        fm_vae_level *lv = &m->lv[i];
        for (int j = 0; j < R; j++)
            FM_TRY(res_forward(&lv->res[j], block_in(m, i, j), m->tmp, e));
        if (lv->has_resample && m->decoder)
            FM_TRY(fm_upconv_forward(&lv->upsample, lv->res[R - 1].y, lv->out, e));  // [n, 2h, 2h, ch]
        else if (lv->has_resample)
            FM_TRY(fm_conv2d_forward(&lv->resample, lv->res[R - 1].y, lv->out, e));
    }
    FM_TRY(fm_groupnorm_forward(&m->out_norm, m->lv[level_at(m, c->levels - 1)].res[R - 1].y, m->hn, e));
    return fm_conv2d_forward(&m->out_conv, m->hn, m->out, e);
}

int fm_vae_half_backward(fm_vae_half *m, const float *in, const float *dout, fm_err *e)
{
    if (!m->train)
        return fm_fail(e, FM_ERR_INTERNAL, "vae %s: backward on an instance built without train", side(m));
    const fm_vae_cfg *c = &m->cfg;
    const int R = c->res_blocks;
    float *cur = m->g[0], *oth = m->g[1], *sw;
    FM_TRY(fm_conv2d_backward(&m->out_conv, m->hn, dout, cur, e));
    FM_TRY(fm_groupnorm_backward(&m->out_norm, m->lv[level_at(m, c->levels - 1)].res[R - 1].y, cur, cur, e));
    for (int k = c->levels - 1; k >= 0; k--) {
        const int i = level_at(m, k);
        fm_vae_level *lv = &m->lv[i];
        if (lv->has_resample) {
            if (m->decoder)
                FM_TRY(fm_upconv_backward(&lv->upsample, lv->res[R - 1].y, cur, oth, e));  // oth [n, h, h, ch]
            else
                FM_TRY(fm_conv2d_backward(&lv->resample, lv->res[R - 1].y, cur, oth, e));
            sw = cur, cur = oth, oth = sw;
        }
        for (int j = R - 1; j >= 0; j--) {
            FM_TRY(res_backward(&lv->res[j], block_in(m, i, j), cur, oth, m->g[2], m->g[3], e));
            sw = cur, cur = oth, oth = sw;
        }
    }
    return fm_conv2d_backward(&m->conv_in, in, cur, m->dz, e);
}

int fm_vae_encoder_init(fm_vae_encoder *m, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, int train,
                        fm_err *e)
{
    return half_init(m, d, p, cfg, n, train, 0, e);
}

int fm_vae_decoder_init(fm_vae_decoder *m, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, int train,
                        fm_err *e)
{
    return half_init(m, d, p, cfg, n, train, 1, e);
}

int fm_vae_encode_mean(fm_vae_encoder *m, const float *x, float *mu, fm_err *e)
{
    FM_TRY(fm_vae_half_forward(m, x, e));
    const int lc = m->cfg.latent_ch;
    fm_concat_backward(m->out, lc, lc, mu, NULL, (long)m->n * m->lat * m->lat);
    return FM_OK;
}

int fm_vae_decode(fm_vae_decoder *m, const float *z, float *xhat, fm_err *e)
{
    FM_TRY(fm_vae_half_forward(m, z, e));
    if (xhat != m->out)
        memcpy(xhat, m->out, (size_t)m->n * m->cfg.size * m->cfg.size * m->cfg.in_ch * sizeof(float));
    return FM_OK;
}

/* ---- the training model ---- */

/* The training model's own buffers (v->n, v->nlat set), from v->arena. */
static int take_own(fm_vae *v, fm_err *e)
{
    const long npix = (long)v->n * v->cfg.size * v->cfg.size * v->cfg.in_ch;
    float **bufs[7] = { &v->mu, &v->logvar, &v->eps, &v->z, &v->dmu, &v->dlogvar, &v->dxhat };
    for (int k = 0; k < 7; k++)
        FM_TRY(fm_arena_take(&v->arena, (size_t)(k == 6 ? npix : v->nlat), sizeof(float), bufs[k], BUFS, e));
    return fm_arena_take(&v->arena, (size_t)(2 * v->nlat), sizeof(float), &v->dmoments, BUFS, e);
}

int fm_vae_init(fm_vae *v, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, fm_err *e)
{
    memset(v, 0, sizeof *v);
    FM_TRY(check_cfg(cfg, n, e));
    v->cfg = *cfg;
    v->n = n;
    v->lat = fm_vae_latent_hw(cfg);
    v->nlat = (long)n * v->lat * v->lat * cfg->latent_ch;
    int rc = fm_vae_encoder_init(&v->enc, d, p, cfg, n, 1, e);
    if (rc == FM_OK)
        rc = fm_vae_decoder_init(&v->dec, d, p, cfg, n, 1, e);
    /* its own buffers: sized on a measuring arena, then taken */
    if (rc == FM_OK)
        rc = fm_arena_init(&v->arena, FM_ARENA_MEASURE, e);
    if (rc == FM_OK)
        rc = take_own(v, e);
    const size_t need = v->arena.peak;
    fm_arena_free(&v->arena);
    if (rc == FM_OK)
        rc = fm_arena_init(&v->arena, need, e);
    if (rc == FM_OK)
        rc = take_own(v, e);
    if (rc != FM_OK)
        fm_vae_free(v);
    return rc;
}

void fm_vae_free(fm_vae *v)
{
    fm_vae_half_free(&v->enc);
    fm_vae_half_free(&v->dec);
    fm_arena_free(&v->arena);
    memset(v, 0, sizeof *v);
}

static double l1_forward(const float *pred, const float *target, long n)
{
    double s = 0;
    for (long i = 0; i < n; i++)
        s += fabs((double)pred[i] - (double)target[i]);
    return s / (double)n;
}

/* d|p - t| / dp = sign(p - t) (0 at p = t, as torch), times 1/n. */
static void l1_backward(const float *pred, const float *target, long n, float *dpred)
{
    const float k = (float)(1.0 / (double)n);
#pragma omp parallel for simd schedule(static) if (n >= 32768)
    for (long i = 0; i < n; i++) {
        float d = pred[i] - target[i];
        dpred[i] = d > 0 ? k : d < 0 ? -k : 0.0f;
    }
}

int fm_vae_forward(fm_vae *v, const float *x, uint64_t seed, uint64_t step, uint64_t first, fm_vae_loss *loss,
                   fm_err *e)
{
    const fm_vae_cfg *c = &v->cfg;
    const int lc = c->latent_ch;
    const long rows = (long)v->n * v->lat * v->lat, nl = v->nlat, D = nl / v->n;
    const long npix = (long)v->n * c->size * c->size * c->in_ch;
    FM_TRY(fm_vae_half_forward(&v->enc, x, e));
    fm_concat_backward(v->enc.out, lc, lc, v->mu, v->logvar, rows);  // split (mu, logvar)
    for (long i = 0; i < nl; i++)
        v->logvar[i] = fminf(fmaxf(v->logvar[i], FM_VAE_LOGVAR_MIN), FM_VAE_LOGVAR_MAX);
    const uint64_t stream = fm_vae_noise_stream(step);
    for (int i = 0; i < v->n; i++)
        fm_fill_normal(v->eps + (long)i * D, D, seed, stream, (first + (uint64_t)i) * (uint64_t)D);
    double kl = 0;
    for (long i = 0; i < nl; i++) {
        const float mu = v->mu[i], lv = v->logvar[i];
        v->z[i] = mu + expf(0.5f * lv) * v->eps[i];
        kl += 0.5 * ((double)mu * mu + exp((double)lv) - 1.0 - (double)lv);
    }
    FM_TRY(fm_vae_half_forward(&v->dec, v->z, e));
    loss->recon = c->recon == FM_VAE_LOSS_L1 ? l1_forward(v->dec.out, x, npix) : fm_mse_forward(v->dec.out, x, npix);
    loss->kl = kl / (double)nl;
    loss->total = loss->recon + (double)c->kl_weight * loss->kl;
    return FM_OK;
}

int fm_vae_backward(fm_vae *v, const float *x, fm_err *e)
{
    const fm_vae_cfg *c = &v->cfg;
    const int lc = c->latent_ch;
    const long rows = (long)v->n * v->lat * v->lat, npix = (long)v->n * c->size * c->size * c->in_ch;
    if (c->recon == FM_VAE_LOSS_L1)
        l1_backward(v->dec.out, x, npix, v->dxhat);
    else
        fm_mse_backward(v->dec.out, x, npix, 1.0f, v->dxhat);
    FM_TRY(fm_vae_half_backward(&v->dec, v->z, v->dxhat, e));
    /* z = mu + exp(lv / 2) eps;  kl = sum 0.5 (mu^2 + exp(lv) - 1 - lv) / nlat */
    const float kw = (float)((double)c->kl_weight / (double)v->nlat);
    const float *dz = v->dec.dz;
    for (long r = 0; r < rows; r++)
        for (int k = 0; k < lc; k++) {
            const long i = r * lc + k;
            const float raw = v->enc.out[r * 2 * lc + lc + k], lv = v->logvar[i];
            const float s = expf(0.5f * lv);
            v->dmu[i] = dz[i] + kw * v->mu[i];
            const float dlv = dz[i] * v->eps[i] * 0.5f * s + kw * 0.5f * (expf(lv) - 1.0f);
            v->dlogvar[i] = raw >= FM_VAE_LOGVAR_MIN && raw <= FM_VAE_LOGVAR_MAX ? dlv : 0.0f;
        }
    fm_concat_forward(v->dmu, lc, v->dlogvar, lc, v->dmoments, rows);
    return fm_vae_half_backward(&v->enc, x, v->dmoments, e);
}

double fm_vae_flops(const fm_vae *v)
{
    double f = levels_flops(v->enc.lv, &v->cfg) + levels_flops(v->dec.lv, &v->cfg);
    const fm_conv2d *cs[3] = { &v->enc.out_conv, &v->dec.conv_in, &v->dec.out_conv };
    for (int k = 0; k < 3; k++)
        f += fm_conv2d_flops_fwd(cs[k]) + fm_conv2d_flops_bwd(cs[k], 1);
    return f + fm_conv2d_flops_fwd(&v->enc.conv_in) + fm_conv2d_flops_bwd(&v->enc.conv_in, 0);
}
