/* unet.c - the U-Net velocity model: a plan of blocks built from the config,
 * forward along the plan, backward along it in reverse (see unet.h). */
#include "fm/unet.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/act.h"
#include "fm/flowmodel.h"
#include "fm/log.h"
#include "fm/normconv.h"
#include "fm/residual.h"
#include "fm/sizing.h"
#include "fm/tensorops.h"

/* ---- the plan: blocks in execution order, a pure function of cfg --------- */

static int attn_at(const fm_unet_cfg *cfg, int side)
{
    for (int i = 0; i < cfg->n_attn; i++)
        if (cfg->attn_res[i] == side)
            return 1;
    return 0;
}

/* GroupNorm groups for a width: min(groups, c). */
static int gn_groups(const fm_unet_cfg *cfg, int c) { return cfg->groups < c ? cfg->groups : c; }

typedef struct plan {
    int nblocks, nres, nattn, nconv, nskips;
    fm_unet_block *b;      /* [nblocks] when non-NULL */
    int *skip_ch, *skip_side;  /* [nskips] when non-NULL */
} plan;

static void plan_add(plan *pl, int kind, int group, int side, int cin, int cout, int skip_in, const char *name)
{
    if (pl->b) {
        fm_unet_block *b = &pl->b[pl->nblocks];
        memset(b, 0, sizeof *b);
        b->kind = kind;
        b->group = group;
        b->side = side;
        b->cin = cin;
        b->cout = cout;
        b->skip_in = skip_in;
        b->skip_out = -1;
        b->layer = kind == FM_UNET_RES ? pl->nres : kind == FM_UNET_ATTN ? pl->nattn : pl->nconv;
        snprintf(b->name, sizeof b->name, "%s", name);
    }
    pl->nblocks++;
    if (kind == FM_UNET_RES)
        pl->nres++;
    else if (kind == FM_UNET_ATTN)
        pl->nattn++;
    else
        pl->nconv++;
}

/* The latest block's output becomes skip number nskips. */
static void plan_push(plan *pl, int ch, int side)
{
    if (pl->b)
        pl->b[pl->nblocks - 1].skip_out = pl->nskips;
    if (pl->skip_ch) {
        pl->skip_ch[pl->nskips] = ch;
        pl->skip_side[pl->nskips] = side;
    }
    pl->nskips++;
}

/* Walk the architecture; with pl->b == NULL it only counts. Skip 0 is
 * conv_in's output. skip_ch/skip_side must be given when b is. */
static void make_plan(const fm_unet_cfg *cfg, plan *pl)
{
    const int L = cfg->levels, R = cfg->res_blocks;
    int ch = cfg->channels[0], side = cfg->size, top;  /* top: skips not yet popped */
    char nm[48];
    pl->nblocks = pl->nres = pl->nattn = pl->nconv = 0;
    pl->nskips = 1;
    if (pl->skip_ch) {
        pl->skip_ch[0] = ch;
        pl->skip_side[0] = side;
    }
    for (int i = 0; i < L; i++) {
        side = cfg->size >> i;
        for (int j = 0; j < R; j++) {
            snprintf(nm, sizeof nm, "down.%d.res.%d", i, j);
            plan_add(pl, FM_UNET_RES, i, side, ch, cfg->channels[i], -1, nm);
            ch = cfg->channels[i];
            if (attn_at(cfg, side)) {
                snprintf(nm, sizeof nm, "down.%d.attn.%d", i, j);
                plan_add(pl, FM_UNET_ATTN, i, side, ch, ch, -1, nm);
            }
            plan_push(pl, ch, side);
        }
        if (i < L - 1) {
            snprintf(nm, sizeof nm, "down.%d.downsample", i);
            plan_add(pl, FM_UNET_DOWN, i, side, ch, ch, -1, nm);
            plan_push(pl, ch, side / 2);
        }
    }
    top = pl->nskips;
    plan_add(pl, FM_UNET_RES, L, side, ch, ch, -1, "mid.0");
    plan_add(pl, FM_UNET_ATTN, L, side, ch, ch, -1, "mid.1");
    plan_add(pl, FM_UNET_RES, L, side, ch, ch, -1, "mid.2");
    for (int i = L - 1; i >= 0; i--) {
        side = cfg->size >> i;
        for (int j = 0; j <= R; j++) {
            const int k = --top;
            const int sch = pl->skip_ch ? pl->skip_ch[k] : 0;
            snprintf(nm, sizeof nm, "up.%d.res.%d", i, j);
            plan_add(pl, FM_UNET_RES, L + 1 + i, side, ch + sch, cfg->channels[i], k, nm);
            ch = cfg->channels[i];
            if (attn_at(cfg, side)) {
                snprintf(nm, sizeof nm, "up.%d.attn.%d", i, j);
                plan_add(pl, FM_UNET_ATTN, L + 1 + i, side, ch, ch, -1, nm);
            }
        }
        if (i > 0) {
            snprintf(nm, sizeof nm, "up.%d.upsample", i);
            plan_add(pl, FM_UNET_UP, L + 1 + i, side, ch, ch, -1, nm);
        }
    }
}

/* Output side of a block. */
static int out_side(const fm_unet_block *b)
{
    return b->kind == FM_UNET_DOWN ? b->side / 2 : b->kind == FM_UNET_UP ? b->side * 2 : b->side;
}

/* ---- config check --------------------------------------------------------- */

static int check_gn(const fm_unet_cfg *cfg, int c, const char *what, fm_err *e)
{
    const int g = gn_groups(cfg, c);
    if (c % g)
        return fm_fail(e, FM_ERR_USAGE, "unet.groups: %d does not divide the %d channels of %s (GroupNorm groups)", g,
                       c, what);
    return FM_OK;
}

/* The sides of the levels, "8, 4" (for messages). */
static void level_sides(const fm_unet_cfg *cfg, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int l = 0; l < cfg->levels; l++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", l ? ", " : "", cfg->size >> l);
}

/* The level-wise checks, each naming the config key of the field at fault. */
static int check_levels(const fm_unet_cfg *cfg, fm_err *e)
{
    const int *ch = cfg->channels;
    if (cfg->in_ch < 1 || cfg->size < 1)
        return fm_fail(e, FM_ERR_USAGE, "unet: bad input %dx%dx%d", cfg->size, cfg->size, cfg->in_ch);
    if (cfg->levels < 1)
        return fm_fail(e, FM_ERR_USAGE, "unet.channels: %d levels, expected 1 to %d", cfg->levels,
                       FM_UNET_MAX_LEVELS);
    if (cfg->levels > FM_UNET_MAX_LEVELS)
        return fm_fail(e, FM_ERR_USAGE, "unet.channels: %d levels, at most %d", cfg->levels, FM_UNET_MAX_LEVELS);
    int fit = 1; /* levels whose sides halve the input exactly */
    while (fit < 30 && (cfg->size >> fit) >= 1 && cfg->size % (1 << fit) == 0)
        fit++;
    if (cfg->levels > fit)
        return fm_fail(e, FM_ERR_USAGE,
                       "unet.channels: %d levels halve the %dx%d flow input %d times (at most %d levels fit)",
                       cfg->levels, cfg->size, cfg->size, cfg->levels - 1, fit);
    for (int i = 0; i < cfg->levels; i++)
        if (ch[i] < 1)
            return fm_fail(e, FM_ERR_USAGE, "unet.channels[%d]: %d, expected > 0", i, ch[i]);
    if (cfg->heads < 1 || cfg->groups < 1 || cfg->emb_dim < 1 || cfg->num_classes < 1)
        return fm_fail(e, FM_ERR_USAGE, "unet: heads %d, groups %d, emb_dim %d, classes %d: all must be > 0",
                       cfg->heads, cfg->groups, cfg->emb_dim, cfg->num_classes);
    if (ch[0] % 2)
        return fm_fail(e, FM_ERR_USAGE, "unet.channels: unet.channels[0] = %d must be even (sinusoidal time features)",
                       ch[0]);
    for (int i = 0; i < cfg->levels; i++)
        if (ch[i] % gn_groups(cfg, ch[i]))
            return fm_fail(e, FM_ERR_USAGE, "unet.groups: %d does not divide unet.channels[%d] = %d (GroupNorm groups)",
                           gn_groups(cfg, ch[i]), i, ch[i]);
    if (cfg->res_blocks < 1)
        return fm_fail(e, FM_ERR_USAGE, "unet.res_blocks: %d, expected > 0", cfg->res_blocks);
    if (cfg->n_attn < 0 || cfg->n_attn > FM_UNET_MAX_LEVELS)
        return fm_fail(e, FM_ERR_USAGE, "unet.attn_res: %d entries, at most %d", cfg->n_attn, FM_UNET_MAX_LEVELS);
    for (int a = 0; a < cfg->n_attn; a++) {
        int found = -1;
        for (int l = 0; l < cfg->levels; l++)
            if (cfg->size >> l == cfg->attn_res[a])
                found = l;
        if (found < 0) {
            char sides[128];
            level_sides(cfg, sides, sizeof sides);
            return fm_fail(e, FM_ERR_USAGE, "unet.attn_res: %d is not the side of a U-Net level (levels: %s)",
                           cfg->attn_res[a], sides);
        }
        if (ch[found] % cfg->heads)
            return fm_fail(e, FM_ERR_USAGE,
                           "unet.heads: %d does not divide unet.channels[%d] = %d (a level with attention)",
                           cfg->heads, found, ch[found]);
    }
    const int deepest = cfg->levels - 1;
    if (ch[deepest] % cfg->heads)
        return fm_fail(e, FM_ERR_USAGE, "unet.heads: %d does not divide unet.channels[%d] = %d (the middle has attention)",
                       cfg->heads, deepest, ch[deepest]);
    return FM_OK;
}

int fm_unet_cfg_check(const fm_unet_cfg *cfg, fm_err *e)
{
    FM_TRY(check_levels(cfg, e));
    /* the widths of the blocks: an up-path ResBlock's input is a concatenation */
    plan pl = { 0 };
    make_plan(cfg, &pl);
    int *sch = malloc(2 * (size_t)pl.nskips * sizeof(int));
    fm_unet_block *b = malloc((size_t)pl.nblocks * sizeof *b);
    int rc = FM_OK;
    if (!sch || !b) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "unet: out of memory");
        goto out;
    }
    pl.b = b;
    pl.skip_ch = sch;
    pl.skip_side = sch + pl.nskips;
    make_plan(cfg, &pl);
    for (int i = 0; i < pl.nblocks && rc == FM_OK; i++) {
        char what[80];
        snprintf(what, sizeof what, "%s input", b[i].name);
        if (b[i].kind == FM_UNET_RES) {
            rc = check_gn(cfg, b[i].cin, what, e);
            if (rc == FM_OK) {
                snprintf(what, sizeof what, "%s output", b[i].name);
                rc = check_gn(cfg, b[i].cout, what, e);
            }
        } else if (b[i].kind == FM_UNET_ATTN) {
            rc = check_gn(cfg, b[i].cin, what, e);
            if (rc == FM_OK && b[i].cin % cfg->heads)
                rc = fm_fail(e, FM_ERR_USAGE, "unet.heads: %d does not divide the %d channels of %s", cfg->heads,
                             b[i].cin, b[i].name);
        }
    }
    if (rc == FM_OK)
        rc = check_gn(cfg, cfg->channels[0], "out_norm", e);
out:
    free(sch);
    free(b);
    return rc;
}

/* ---- set-up -------------------------------------------------------------- */

static int init_res(fm_unet *u, fm_unet_block *b, fm_err *e)
{
    fm_unet_res *r = &u->res[b->layer];
    const int B = u->batch, s = b->side, ci = b->cin, co = b->cout;
    fm_params *p = u->p;
    fm_arena *a = &u->arena;
    char nm[FM_PARAM_NAME];
    snprintf(nm, sizeof nm, "%s.norm1", b->name);
    FM_TRY(fm_groupnorm_init(&r->norm1, p, a, nm, gn_groups(&u->cfg, ci), FM_UNET_GN_EPS, FM_GN_SILU, B, s, s, ci,
                             e));
    snprintf(nm, sizeof nm, "%s.conv1", b->name);
    FM_TRY(fm_conv2d_init(&r->conv1, u->d, p, a, nm, ci, co, 3, 1, 1, 1, B, s, s, e));
    snprintf(nm, sizeof nm, "%s.emb_proj", b->name);
    FM_TRY(fm_linear_init(&r->emb_proj, u->d, p, a, nm, u->cfg.emb_dim, 2 * co, 1, B, e));
    snprintf(nm, sizeof nm, "%s.norm2", b->name);
    FM_TRY(fm_groupnorm_init(&r->norm2, p, a, nm, gn_groups(&u->cfg, co), FM_UNET_GN_EPS, FM_GN_SILU, B, s, s, co,
                             e));
    snprintf(nm, sizeof nm, "%s.conv2", b->name);
    FM_TRY(fm_conv2d_init(&r->conv2, u->d, p, a, nm, co, co, 3, 1, 1, 1, B, s, s, e));
    fm_param_fill(r->conv2.weight, 0.0f); /* zero_module: the block starts as its skip path */
    fm_param_fill(r->conv2.bias, 0.0f);
    r->has_skip = ci != co;
    if (r->has_skip) {
        snprintf(nm, sizeof nm, "%s.skip", b->name);
        FM_TRY(fm_conv2d_init(&r->skip, u->d, p, a, nm, ci, co, 1, 1, 0, 1, B, s, s, e));
    }
    const size_t n = (size_t)B * s * s * co;
    FM_TRY(fm_arena_take(&u->arena, n, sizeof(float), &r->h1, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * co, sizeof(float), &r->scale, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * co, sizeof(float), &r->shift, "unet", e));
    u->flops += fm_conv2d_flops_fwd(&r->conv1) + fm_conv2d_flops_fwd(&r->conv2) +
                fm_linear_flops_fwd(&r->emb_proj) + (r->has_skip ? fm_conv2d_flops_fwd(&r->skip) : 0);
    return FM_OK;
}

static int init_attn(fm_unet *u, fm_unet_block *b, fm_err *e)
{
    fm_unet_attn *l = &u->attn[b->layer];
    const int B = u->batch, s = b->side, c = b->cin;
    char nm[FM_PARAM_NAME];
    snprintf(nm, sizeof nm, "%s.norm", b->name);
    FM_TRY(fm_groupnorm_init(&l->norm, u->p, &u->arena, nm, gn_groups(&u->cfg, c), FM_UNET_GN_EPS, 0, B, s, s, c,
                             e));
    snprintf(nm, sizeof nm, "%s.attn", b->name);
    FM_TRY(fm_attention_init(&l->attn, u->d, u->p, &u->arena, nm, c, u->cfg.heads, B, (int64_t)s * s, e));
    u->flops += fm_attention_flops_fwd(&l->attn);
    return FM_OK;
}

/* Down: 3x3 stride 2 on the block's side; up: nearest x2 then 3x3, fused. */
static int init_updown(fm_unet *u, fm_unet_block *b, fm_err *e)
{
    if (b->kind == FM_UNET_UP) {
        fm_upconv *l = &u->upconv[b->layer];
        FM_TRY(fm_upconv_init(l, u->d, u->p, &u->arena, b->name, b->cin, b->cout, 1, u->batch, b->side, b->side, e));
        u->flops += fm_upconv_flops_fwd(l);
        return FM_OK;
    }
    fm_conv2d *l = &u->conv[b->layer];
    FM_TRY(fm_conv2d_init(l, u->d, u->p, &u->arena, b->name, b->cin, b->cout, 3, 2, 1, 1, u->batch, b->side,
                          b->side, e));
    u->flops += fm_conv2d_flops_fwd(l);
    return FM_OK;
}

static int init_block(fm_unet *u, fm_unet_block *b, fm_err *e)
{
    b->first_param = u->p->n;
    int rc = b->kind == FM_UNET_RES    ? init_res(u, b, e)
             : b->kind == FM_UNET_ATTN ? init_attn(u, b, e)
                                       : init_updown(u, b, e);
    b->n_params = u->p->n - b->first_param;
    if (rc == FM_OK)
        rc = fm_arena_take(&u->arena, (size_t)u->batch * out_side(b) * out_side(b) * b->cout, sizeof(float),
                           &b->out, "unet", e);
    return rc;
}

/* Every block, in the twin's state-dict order: per group (down levels, mid,
 * up levels 0 .. L-1), the ResBlocks, then the AttnBlocks, then the
 * down/upsample conv (ModuleLists res, attn, then the conv); mid in order. */
static int init_blocks(fm_unet *u, fm_err *e)
{
    const int L = u->cfg.levels;
    for (int g = 0; g <= 2 * L; g++) {
        for (int pass = 0; pass < 3; pass++)
            for (int i = 0; i < u->nblocks; i++) {
                fm_unet_block *b = &u->blocks[i];
                if (b->group != g)
                    continue;
                const int kp = b->kind == FM_UNET_RES ? 0 : b->kind == FM_UNET_ATTN ? 1 : 2;
                if (g == L ? pass == 0 : kp == pass)
                    FM_TRY(init_block(u, b, e));
            }
    }
    return FM_OK;
}

static int init_cond(fm_unet *u, fm_err *e)
{
    const int B = u->batch, E = u->cfg.emb_dim, ch0 = u->cfg.channels[0];
    u->cond_first_param = u->p->n;
    FM_TRY(fm_time_embed_init(&u->temb, &u->arena, B, ch0, FM_UNET_T_SCALE, e));
    FM_TRY(fm_linear_init(&u->time_mlp0, u->d, u->p, &u->arena, "time_mlp.0", ch0, E, 1, B, e));
    FM_TRY(fm_linear_init(&u->time_mlp2, u->d, u->p, &u->arena, "time_mlp.2", E, E, 1, B, e));
    FM_TRY(fm_class_embed_init(&u->class_emb, u->p, "class_emb", B, u->cfg.num_classes, E, e));
    u->cond_n_params = u->p->n - u->cond_first_param;
    u->flops += fm_linear_flops_fwd(&u->time_mlp0) + fm_linear_flops_fwd(&u->time_mlp2);
    float **bufs[] = { &u->sin, &u->t1, &u->t1s, &u->tproj, &u->yemb, &u->pre, &u->c, &u->dc, &u->dcpart, &u->dpre };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        FM_TRY(fm_arena_take(&u->arena, (size_t)B * (i == 0 ? ch0 : E), sizeof(float), bufs[i], "unet", e));
    return FM_OK;
}

/* Every layer and buffer, from u->arena. */
static int build(fm_unet *u, fm_err *e)
{
    const fm_unet_cfg *cfg = &u->cfg;
    const int B = u->batch, S = cfg->size, ch0 = cfg->channels[0];
    FM_TRY(init_cond(u, e));
    u->conv_in_first_param = u->p->n;
    FM_TRY(fm_conv2d_init(&u->conv_in, u->d, u->p, &u->arena, "conv_in", cfg->in_ch, ch0, 3, 1, 1, 1, B, S, S, e));
    FM_TRY(init_blocks(u, e));
    u->out_first_param = u->p->n;
    FM_TRY(fm_groupnorm_init(&u->out_norm, u->p, &u->arena, "out_norm", gn_groups(cfg, ch0), FM_UNET_GN_EPS,
                             FM_GN_SILU, B, S, S, ch0, e));
    FM_TRY(fm_conv2d_init(&u->out_conv, u->d, u->p, &u->arena, "out_conv", ch0, cfg->in_ch, 3, 1, 1, 1, B, S, S,
                          e));
    fm_param_fill(u->out_conv.weight, 0.0f); /* zero_module: the model starts at u = 0 */
    fm_param_fill(u->out_conv.bias, 0.0f);
    u->flops += fm_conv2d_flops_fwd(&u->conv_in) + fm_conv2d_flops_fwd(&u->out_conv);

    int cmax = 0;
    for (int i = 0; i < cfg->levels; i++)
        cmax = cfg->channels[i] > cmax ? cfg->channels[i] : cmax;
    const size_t nx = (size_t)B * S * S * cfg->in_ch;
    FM_TRY(fm_arena_take(&u->arena, nx, sizeof(float), &u->x, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B, sizeof(float), &u->t, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B, sizeof(int32_t), &u->y, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * S * S * ch0, sizeof(float), &u->h0, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * 2 * cmax, sizeof(float), &u->ep, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * cmax, sizeof(float), &u->dscale, "unet", e));
    FM_TRY(fm_arena_take(&u->arena, (size_t)B * cmax, sizeof(float), &u->dshift, "unet", e));
    float **scr[] = { &u->sa, &u->sb, &u->t1buf, &u->g0, &u->g1 };
    for (size_t i = 0; i < sizeof scr / sizeof *scr; i++)
        FM_TRY(fm_arena_take(&u->arena, u->max_numel, sizeof(float), scr[i], "unet", e));

    /* skips: where each activation lives, and a gradient buffer for each */
    u->skip[0] = u->h0;
    for (int i = 0; i < u->nblocks; i++)
        if (u->blocks[i].skip_out >= 0)
            u->skip[u->blocks[i].skip_out] = u->blocks[i].out;
    for (int k = 0; k < u->nskips; k++)
        FM_TRY(fm_arena_take(&u->arena, (size_t)B * u->skip_side[k] * u->skip_side[k] * u->skip_ch[k],
                             sizeof(float), &u->dskip[k], "unet", e));
    return FM_OK;
}

/* The set-up (sizing.h) of a U-Net of cfg for batch. */
typedef struct unet_args {
    const fm_unet_cfg *cfg;
    int batch;
} unet_args;

/* fm_unet_init on an arena of arena_cap bytes (FM_ARENA_MEASURE: a measuring
 * one); on failure u is freed. */
static int setup(void *obj, fm_dnn *d, fm_params *p, const void *args, size_t arena_cap, fm_err *e)
{
    fm_unet *u = obj;
    const fm_unet_cfg *cfg = ((const unet_args *)args)->cfg;
    const int batch = ((const unet_args *)args)->batch;
    memset(u, 0, sizeof *u);
    FM_TRY(fm_unet_cfg_check(cfg, e));
    if (batch < 1)
        return fm_fail(e, FM_ERR_USAGE, "unet: batch size %d, expected > 0", batch);
    u->cfg = *cfg;
    u->d = d;
    u->p = p;
    u->batch = batch;

    plan pl = { 0 };
    make_plan(cfg, &pl);
    u->nblocks = pl.nblocks;
    u->nres = pl.nres;
    u->nattn = pl.nattn;
    u->nconv = pl.nconv;
    u->nskips = pl.nskips;
    u->blocks = calloc((size_t)pl.nblocks, sizeof *u->blocks);
    u->res = calloc((size_t)(pl.nres ? pl.nres : 1), sizeof *u->res);
    u->attn = calloc((size_t)(pl.nattn ? pl.nattn : 1), sizeof *u->attn);
    u->conv = calloc((size_t)(pl.nconv ? pl.nconv : 1), sizeof *u->conv);
    u->upconv = calloc((size_t)(pl.nconv ? pl.nconv : 1), sizeof *u->upconv);
    u->skip = calloc((size_t)pl.nskips, sizeof *u->skip);
    u->dskip = calloc((size_t)pl.nskips, sizeof *u->dskip);
    u->skip_ch = calloc(2 * (size_t)pl.nskips, sizeof *u->skip_ch);
    if (!u->blocks || !u->res || !u->attn || !u->conv || !u->upconv || !u->skip || !u->dskip || !u->skip_ch) {
        fm_unet_free(u);
        return fm_fail(e, FM_ERR_INTERNAL, "unet: out of memory for %d blocks", pl.nblocks);
    }
    u->skip_side = u->skip_ch + pl.nskips;
    pl.b = u->blocks;
    pl.skip_ch = u->skip_ch;
    pl.skip_side = u->skip_side;
    make_plan(cfg, &pl);

    /* the largest activation any scratch buffer must hold */
    size_t mx = (size_t)batch * cfg->size * cfg->size * (size_t)(cfg->channels[0] > cfg->in_ch ? cfg->channels[0]
                                                                                              : cfg->in_ch);
    for (int i = 0; i < u->nblocks; i++) {
        const fm_unet_block *b = &u->blocks[i];
        const size_t s = (size_t)(b->kind == FM_UNET_UP ? 2 * b->side : b->side);
        const size_t c = (size_t)(b->cin > b->cout ? b->cin : b->cout);
        if ((size_t)batch * s * s * c > mx)
            mx = (size_t)batch * s * s * c;
    }
    u->max_numel = mx;

    int rc = fm_arena_init(&u->arena, arena_cap, e);
    if (rc == FM_OK)
        rc = build(u, e);
    if (rc != FM_OK)
        fm_unet_free(u);
    return rc;
}

static const fm_arena *arena_of(const void *u) { return &((const fm_unet *)u)->arena; }
static void release(void *u) { fm_unet_free(u); }
static const fm_sizing_ops sizing = { sizeof(fm_unet), setup, arena_of, release };

int fm_unet_init(fm_unet *u, fm_dnn *d, fm_params *p, const fm_unet_cfg *cfg, int batch, fm_err *e)
{
    const unet_args args = { cfg, batch };
    FM_TRY(fm_sizing_init(&sizing, u, d, p, &args, e));
    fm_debug("unet: %d blocks, %d skips, batch %d, arena %.1f MiB in use of %.1f MiB reserved, %.3g GFLOP forward",
             u->nblocks, u->nskips, batch, (double)u->arena.used / (1 << 20), (double)u->arena.cap / (1 << 20),
             u->flops * 1e-9);
    return FM_OK;
}

int fm_unet_measure(const fm_unet_cfg *cfg, int batch, size_t *arena, size_t *params, fm_err *e)
{
    const unet_args args = { cfg, batch };
    return fm_sizing_measure(&sizing, &args, arena, params, NULL, NULL, e);
}

int fm_unet_param_count(const fm_unet_cfg *cfg, int *tensors, size_t *padded, size_t *total, fm_err *e)
{
    const unet_args args = { cfg, 1 }; /* the parameters do not depend on the batch */
    return fm_sizing_param_count(&sizing, &args, tensors, padded, total, e);
}

/* ---- forward ------------------------------------------------------------- */
/* Every layer times itself when the model's walk (below) attached it to a
 * profile (profile.h): the model code holds no timers. */

static int res_forward(fm_unet *u, fm_unet_res *r, const fm_unet_block *b, const float *x, fm_err *e)
{
    const int B = u->batch, co = b->cout;
    const long n = (long)B * b->side * b->side * co;
    float *a = u->sb;  // the GroupNorm+SiLU outputs (normconv.h) [B, s, s, C]
    FM_TRY(fm_normconv_forward(&r->norm1, &r->conv1, x, NULL, NULL, a, r->h1, e));  // conv1(silu(norm1(x))) [B, s, s, Cout]
    FM_TRY(fm_linear_forward(&r->emb_proj, u->c, u->ep, e));                       // [B, 2 Cout]
    fm_concat_backward(u->ep, co, co, r->scale, r->shift, B);                      // halves: scale, shift [B, Cout]
    FM_TRY(fm_normconv_forward(&r->norm2, &r->conv2, r->h1, r->scale, r->shift, a, b->out, e));
    return fm_residual_forward(r->has_skip ? &r->skip : NULL, x, a, b->out, n, e);
}

static int attn_forward(fm_unet *u, fm_unet_attn *l, const fm_unet_block *b, const float *x, fm_err *e)
{
    FM_TRY(fm_groupnorm_forward(&l->norm, x, u->sb, e));  // [B, T, C]
    FM_TRY(fm_attention_forward(&l->attn, u->sb, b->out, e));
    fm_acc(b->out, x, (long)u->batch * b->side * b->side * b->cin);
    return FM_OK;
}

static int block_forward(fm_unet *u, const fm_unet_block *b, const float *x, fm_err *e)
{
    if (b->kind == FM_UNET_RES)
        return res_forward(u, &u->res[b->layer], b, x, e);
    if (b->kind == FM_UNET_ATTN)
        return attn_forward(u, &u->attn[b->layer], b, x, e);
    if (b->kind == FM_UNET_DOWN)
        return fm_conv2d_forward(&u->conv[b->layer], x, b->out, e);
    return fm_upconv_forward(&u->upconv[b->layer], x, b->out, e);  // [B, s, s, C] -> [B, 2s, 2s, C]
}

/* The input of block i: the previous output, concatenated with a skip for
 * up-path ResBlocks (built in u->sa). */
static const float *block_input(fm_unet *u, int i)
{
    const fm_unet_block *b = &u->blocks[i];
    const float *prev = i == 0 ? u->h0 : u->blocks[i - 1].out;
    if (b->skip_in < 0)
        return prev;
    const int k = b->skip_in, sch = u->skip_ch[k];
    fm_concat_forward(prev, b->cin - sch, u->skip[k], sch, u->sa, (long)u->batch * b->side * b->side);
    return u->sa;
}

static int cond_forward(fm_unet *u, fm_err *e)
{
    const long be = (long)u->batch * u->cfg.emb_dim;
    FM_TRY(fm_time_embed_forward(&u->temb, u->t, u->sin, e));  // [B, ch0]
    FM_TRY(fm_linear_forward(&u->time_mlp0, u->sin, u->t1, e));  // [B, E]
    fm_silu_forward(u->t1, u->t1s, be);
    FM_TRY(fm_linear_forward(&u->time_mlp2, u->t1s, u->tproj, e));
    FM_TRY(fm_class_embed_forward(&u->class_emb, u->y, u->yemb, e));
    fm_add(u->tproj, u->yemb, u->pre, be);
    fm_silu_forward(u->pre, u->c, be);
    return FM_OK;
}

int fm_unet_forward(fm_unet *u, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    const fm_unet_cfg *cfg = &u->cfg;
    const int B = u->batch, S = cfg->size;
    u->forward_done = 0;
    memcpy(u->x, x, (size_t)B * S * S * cfg->in_ch * sizeof(float));
    memcpy(u->t, t, (size_t)B * sizeof(float));
    memcpy(u->y, y, (size_t)B * sizeof(int32_t));
    FM_TRY(cond_forward(u, e));
    FM_TRY(fm_conv2d_forward(&u->conv_in, u->x, u->h0, e));  // [B, S, S, ch0]
    for (int i = 0; i < u->nblocks; i++)
        FM_TRY(block_forward(u, &u->blocks[i], block_input(u, i), e));
    const float *h = u->blocks[u->nblocks - 1].out;  // [B, S, S, ch0]
    FM_TRY(fm_normconv_forward(&u->out_norm, &u->out_conv, h, NULL, NULL, u->sb, out, e));  // [B, S, S, in]
    u->forward_done = 1;
    return FM_OK;
}

/* ---- backward ------------------------------------------------------------ */
/* Each block's backward takes its input x (as in forward), dout and writes dx
 * (another buffer, the size of x). Scratch: sb holds a recomputed layer
 * input, t1buf an intermediate gradient. The GroupNorm+SiLU outputs that feed
 * a convolution or attention are not stored: backward recomputes them from
 * the saved statistics, except under bf16, where the consumer keeps the bf16
 * copy of its forward input and does not read them (normconv.h,
 * fm_attention_keeps_x). */

static int res_backward(fm_unet *u, fm_unet_res *r, const fm_unet_block *b, const float *x, const float *dout,
                        float *dx, fm_err *e)
{
    const int B = u->batch, co = b->cout;
    float *a = u->sb, *t = u->t1buf;
    FM_TRY(fm_normconv_backward_conv(&r->norm2, &r->conv2, r->h1, a, dout, t, e));  // t = d(conv2 input)
    FM_TRY(fm_groupnorm_backward_ada(&r->norm2, r->h1, r->scale, r->shift, t, t, u->dscale, u->dshift, e));
    fm_concat_forward(u->dscale, co, u->dshift, co, u->ep, B);  // [B, 2 Cout]
    FM_TRY(fm_linear_backward(&r->emb_proj, u->c, u->ep, u->dcpart, e));
    fm_acc(u->dc, u->dcpart, (long)B * u->cfg.emb_dim);  // c feeds every block
    FM_TRY(fm_normconv_backward_conv(&r->norm1, &r->conv1, x, a, t, dx, e));  // dx = d(conv1 input)
    FM_TRY(fm_groupnorm_backward(&r->norm1, x, dx, dx, e));
    const long n = (long)B * b->side * b->side * b->cin;
    return fm_residual_backward(r->has_skip ? &r->skip : NULL, x, dout, t, dx, n, e);
}

static int attn_backward(fm_unet *u, fm_unet_attn *l, const fm_unet_block *b, const float *x, const float *dout,
                         float *dx, fm_err *e)
{
    if (!fm_attention_keeps_x(&l->attn, u->sb))
        FM_TRY(fm_groupnorm_reforward(&l->norm, x, u->sb, e));
    FM_TRY(fm_attention_backward(&l->attn, u->sb, dout, u->t1buf, e));
    FM_TRY(fm_groupnorm_backward(&l->norm, x, u->t1buf, dx, e));
    fm_acc(dx, dout, (long)u->batch * b->side * b->side * b->cin);
    return FM_OK;
}

static int block_backward(fm_unet *u, const fm_unet_block *b, const float *x, const float *dout, float *dx,
                          fm_err *e)
{
    if (b->kind == FM_UNET_RES)
        return res_backward(u, &u->res[b->layer], b, x, dout, dx, e);
    if (b->kind == FM_UNET_ATTN)
        return attn_backward(u, &u->attn[b->layer], b, x, dout, dx, e);
    if (b->kind == FM_UNET_DOWN)
        return fm_conv2d_backward(&u->conv[b->layer], x, dout, dx, e);
    return fm_upconv_backward(&u->upconv[b->layer], x, dout, dx, e);
}

static int hook(fm_unet *u, int first, int n, fm_err *e)
{
    if (u->hook && n > 0)
        FM_TRY(u->hook(u->hook_ctx, first, n, e));
    return FM_OK;
}

/* From dc = dL/dc: the gradients of time_mlp and class_emb. */
static int cond_backward(fm_unet *u, fm_err *e)
{
    const long be = (long)u->batch * u->cfg.emb_dim;
    fm_silu_backward(u->pre, u->dc, u->dpre, be);  // d(temb + yemb)
    FM_TRY(fm_class_embed_backward(&u->class_emb, u->y, u->dpre, e));
    FM_TRY(fm_linear_backward(&u->time_mlp2, u->t1s, u->dpre, u->dcpart, e));  // d t1s
    fm_silu_backward(u->t1, u->dcpart, u->dcpart, be);
    FM_TRY(fm_linear_backward(&u->time_mlp0, u->sin, u->dcpart, NULL, e));
    return FM_OK;
}

int fm_unet_backward(fm_unet *u, const float *dout, fm_err *e)
{
    if (!u->forward_done)
        return fm_fail(e, FM_ERR_INTERNAL, "unet: backward without a completed forward");
    const fm_unet_cfg *cfg = &u->cfg;
    const int B = u->batch, S = cfg->size;
    memset(u->dc, 0, (size_t)B * cfg->emb_dim * sizeof(float));

    /* out: back through out_conv (on silu(out_norm(h)), recomputed) and out_norm */
    const float *h = u->blocks[u->nblocks - 1].out;
    float *cur = u->g0, *other = u->g1;  // cur: gradient of the current activation
    FM_TRY(fm_normconv_backward_conv(&u->out_norm, &u->out_conv, h, u->sb, dout, u->t1buf, e));
    FM_TRY(fm_groupnorm_backward(&u->out_norm, h, u->t1buf, cur, e));
    FM_TRY(hook(u, u->out_first_param, 4, e)); // out_norm and out_conv weight and bias

    for (int i = u->nblocks - 1; i >= 0; i--) {
        const fm_unet_block *b = &u->blocks[i];
        const long n = (long)B * out_side(b) * out_side(b) * b->cout;
        if (b->skip_out >= 0)
            fm_acc(cur, u->dskip[b->skip_out], n);  // plus what the up path took from it
        const float *x = block_input(u, i);       // the concatenation recomputed
        FM_TRY(block_backward(u, b, x, cur, other, e));
        if (b->skip_in >= 0) {
            const int k = b->skip_in, sch = u->skip_ch[k];
            fm_concat_backward(other, b->cin - sch, sch, cur, u->dskip[k], (long)B * b->side * b->side);
        } else {
            float *tmp = cur;
            cur = other;
            other = tmp;
        }
        FM_TRY(hook(u, b->first_param, b->n_params, e));
    }
    fm_acc(cur, u->dskip[0], (long)B * S * S * cfg->channels[0]);
    FM_TRY(fm_conv2d_backward(&u->conv_in, u->x, cur, NULL, e));
    FM_TRY(hook(u, u->conv_in_first_param, 2, e));
    FM_TRY(cond_backward(u, e));
    FM_TRY(hook(u, u->cond_first_param, u->cond_n_params, e));
    return FM_OK;
}

/* ---- the rest ------------------------------------------------------------ */

/* The layers in the order forward first calls them, named as the profile
 * names them: scope = block name (or "cond", "conv_in", "out"), layer = the
 * sub-layer ("norm1", "conv1", ...; "conv" for conv_in and the down/upsample
 * convolutions). */
static void walk(fm_unet *u, fm_prof_visit visit, void *ctx)
{
    visit(ctx, "cond", "time_embed", "embedding", &u->temb.prof);
    visit(ctx, "cond", "time_mlp.0", "linear", &u->time_mlp0.prof);
    visit(ctx, "cond", "time_mlp.2", "linear", &u->time_mlp2.prof);
    visit(ctx, "cond", "class_emb", "embedding", &u->class_emb.prof);
    visit(ctx, "conv_in", "conv", "conv", &u->conv_in.prof);
    for (int i = 0; i < u->nblocks; i++) {
        const fm_unet_block *b = &u->blocks[i];
        const char *s = b->name;
        if (b->kind == FM_UNET_RES) {
            fm_unet_res *r = &u->res[b->layer];
            visit(ctx, s, "norm1", "groupnorm", &r->norm1.prof);
            visit(ctx, s, "conv1", "conv", &r->conv1.prof);
            visit(ctx, s, "emb_proj", "linear", &r->emb_proj.prof);
            visit(ctx, s, "norm2", "groupnorm", &r->norm2.prof);
            visit(ctx, s, "conv2", "conv", &r->conv2.prof);
            if (r->has_skip)
                visit(ctx, s, "skip", "conv", &r->skip.prof);
        } else if (b->kind == FM_UNET_ATTN) {
            visit(ctx, s, "norm", "groupnorm", &u->attn[b->layer].norm.prof);
            visit(ctx, s, "attn", "attention", &u->attn[b->layer].attn.prof);
        } else if (b->kind == FM_UNET_DOWN) {
            visit(ctx, s, "conv", "conv", &u->conv[b->layer].prof);
        } else {
            visit(ctx, s, "conv", "conv", &u->upconv[b->layer].prof);
        }
    }
    visit(ctx, "out", "out_norm", "groupnorm", &u->out_norm.prof);
    visit(ctx, "out", "out_conv", "conv", &u->out_conv.prof);
}

void fm_unet_set_grad_hook(fm_unet *u, fm_unet_grad_hook fn, void *ctx)
{
    u->hook = fn;
    u->hook_ctx = ctx;
}

double fm_unet_flops(const fm_unet *u) { return u->flops; }

size_t fm_unet_activation_bytes(const fm_unet *u) { return u->arena.used; }

void fm_unet_free(fm_unet *u)
{
    for (int i = 0; u->res && i < u->nres; i++) {
        fm_conv2d_free(&u->res[i].conv1);
        fm_conv2d_free(&u->res[i].conv2);
        fm_conv2d_free(&u->res[i].skip);
        fm_linear_free(&u->res[i].emb_proj);
    }
    for (int i = 0; u->attn && i < u->nattn; i++)
        fm_attention_free(&u->attn[i].attn);
    for (int i = 0; u->conv && i < u->nconv; i++)
        fm_conv2d_free(&u->conv[i]);
    for (int i = 0; u->upconv && i < u->nconv; i++)
        fm_upconv_free(&u->upconv[i]);
    fm_linear_free(&u->time_mlp0);
    fm_linear_free(&u->time_mlp2);
    fm_conv2d_free(&u->conv_in);
    fm_conv2d_free(&u->out_conv);
    free(u->blocks);
    free(u->res);
    free(u->attn);
    free(u->conv);
    free(u->upconv);
    free(u->skip);
    free(u->dskip);
    free(u->skip_ch);
    fm_arena_free(&u->arena);
    memset(u, 0, sizeof *u);
}

/* ---- the model interface (flowmodel.h) ------------------------------------ */

static int ops_forward(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    return fm_unet_forward(m, x, t, y, out, e);
}
static int ops_backward(void *m, const float *dout, fm_err *e) { return fm_unet_backward(m, dout, e); }
static void ops_set_grad_hook(void *m, fm_flow_grad_hook fn, void *ctx) { fm_unet_set_grad_hook(m, fn, ctx); }
static void ops_walk(void *m, fm_prof_visit visit, void *ctx) { walk(m, visit, ctx); }
static double ops_flops(const void *m) { return fm_unet_flops(m); }
static size_t ops_activation_bytes(const void *m) { return fm_unet_activation_bytes(m); }
static void ops_free(void *m) { fm_unet_free(m); }

const fm_flow_model_ops fm_unet_ops = {
    .name = "unet",
    .forward = ops_forward,
    .backward = ops_backward,
    .set_grad_hook = ops_set_grad_hook,
    .walk = ops_walk,
    .flops = ops_flops,
    .activation_bytes = ops_activation_bytes,
    .free = ops_free,
};
