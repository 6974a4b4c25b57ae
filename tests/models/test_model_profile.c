/* test_model_profile.c - per-layer profiling of the flow models (profile.h):
 * with a table set, the U-Net and the DiT give bitwise the same output and
 * parameter gradients as without; the FLOPs accounted to the forward phase
 * equal the model's own forward count (every matrix product is timed); every
 * block appears as a scope in both phases; clearing the table stops the
 * accounting. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dit.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/rng.h"
#include "fm/unet.h"
#include "test.h"

#define B 3

/* The model under test, behind two function pointers so both architectures
 * share the checks. */
typedef struct subject {
    void *m;
    int (*fwd)(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);
    int (*bwd)(void *m, const float *dout, fm_err *e);
    void (*set)(void *m, fm_profile *p);
    double flops;
    long nx;
} subject;

static int unet_fwd(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    return fm_unet_forward(m, x, t, y, out, e);
}
static int unet_bwd(void *m, const float *dout, fm_err *e) { return fm_unet_backward(m, dout, e); }
static void unet_set(void *m, fm_profile *p) { fm_unet_set_profile(m, p); }
static int dit_fwd(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e)
{
    return fm_dit_forward(m, x, t, y, out, e);
}
static int dit_bwd(void *m, const float *dout, fm_err *e) { return fm_dit_backward(m, dout, e); }
static void dit_set(void *m, fm_profile *p) { fm_dit_set_profile(m, p); }

/* Every parameter redrawn small and non-zero, so the zero-initialised layers
 * carry signal too. */
static void perturb(fm_params *p)
{
    fm_fill_normal(p->data, (long)p->numel, 5, 0, 0);
    for (size_t i = 0; i < p->numel; i++)
        p->data[i] *= 0.2f;
}

/* Run forward + backward; out and a copy of every gradient. */
static int run(subject *s, const float *x, const float *t, const int32_t *y, const float *dout, float *out,
               fm_params *p, float *grad, fm_err *e)
{
    FM_TRY(s->fwd(s->m, x, t, y, out, e));
    FM_TRY(s->bwd(s->m, dout, e));
    memcpy(grad, p->grad, p->numel * sizeof(float));
    return FM_OK;
}

/* The shared checks. scopes: names that must appear in both phases. */
static int check_subject(subject *s, fm_params *p, const char *const *scopes, int nscopes)
{
    fm_err e = { 0 };
    float *x = malloc((size_t)s->nx * sizeof *x), *dout = malloc((size_t)s->nx * sizeof *dout);
    float *out0 = malloc((size_t)s->nx * sizeof *out0), *out1 = malloc((size_t)s->nx * sizeof *out1);
    float *g0 = malloc(p->numel * sizeof *g0), *g1 = malloc(p->numel * sizeof *g1);
    float t[B] = { 0.1f, 0.5f, 0.9f };
    int32_t y[B] = { 0, 7, 10 };
    CHECK(x && dout && out0 && out1 && g0 && g1, "out of memory");
    fm_fill_normal(x, s->nx, 1, 0, 0);
    fm_fill_normal(dout, s->nx, 1, 1, 0);
    perturb(p);
    fm_profile prof;
    CHECK_OK(fm_profile_init(&prof, 1024, &e), &e);

    CHECK_OK(run(s, x, t, y, dout, out0, p, g0, &e), &e);
    s->set(s->m, &prof);
    CHECK_OK(run(s, x, t, y, dout, out1, p, g1, &e), &e);
    CHECK(memcmp(out0, out1, (size_t)s->nx * sizeof *out0) == 0, "output differs with profiling on");
    CHECK(memcmp(g0, g1, p->numel * sizeof *g0) == 0, "gradients differ with profiling on");
    CHECK(prof.dropped == 0 && prof.n > 0, "%d entries, %lld dropped", prof.n, (long long)prof.dropped);

    const double ff = fm_profile_flops(&prof, FM_PROF_FWD), fb = fm_profile_flops(&prof, FM_PROF_BWD);
    CHECK(fabs(ff - s->flops) <= 1e-9 * s->flops, "forward FLOPs accounted %.6g, model counts %.6g", ff, s->flops);
    CHECK(fb > 1.5 * ff && fb <= 2.0 * ff + 1, "backward FLOPs %.6g vs forward %.6g", fb, ff);
    CHECK(fm_profile_seconds(&prof, FM_PROF_FWD) > 0 && fm_profile_seconds(&prof, FM_PROF_BWD) > 0, "no time");
    for (int k = 0; k < nscopes; k++)
        for (int ph = FM_PROF_FWD; ph <= FM_PROF_BWD; ph++) {
            int found = 0;
            for (int i = 0; i < prof.n; i++)
                found |= prof.e[i].phase == ph && strcmp(prof.e[i].scope, scopes[k]) == 0;
            CHECK(found, "scope %s missing in phase %s", scopes[k], fm_profile_phase_name(ph));
        }
    for (int i = 0; i < prof.n; i++)
        CHECK(prof.e[i].calls == 1 || strcmp(prof.e[i].layer, "pos") == 0, "%s.%s %s: %lld calls in one step",
              prof.e[i].scope, prof.e[i].layer, fm_profile_phase_name(prof.e[i].phase),
              (long long)prof.e[i].calls);
    fm_profile_print(&prof, FM_PROFILE_BY_KIND, 1, 0, 0, stdout, &e);

    /* off again: the table is left alone */
    s->set(s->m, NULL);
    const int n = prof.n;
    const double sec = fm_profile_seconds(&prof, -1);
    CHECK_OK(run(s, x, t, y, dout, out1, p, g1, &e), &e);
    CHECK(prof.n == n && fm_profile_seconds(&prof, -1) == sec, "accounted with profiling off");
    CHECK(memcmp(out0, out1, (size_t)s->nx * sizeof *out0) == 0, "output differs after profiling");

    fm_profile_free(&prof);
    free(x), free(dout), free(out0), free(out1), free(g0), free(g1);
    return 0;
}

static int test_unet(void)
{
    fm_err e = { 0 };
    const fm_unet_cfg cfg = { .in_ch = 2, .size = 8, .levels = 2, .channels = { 8, 16 }, .res_blocks = 1,
                              .n_attn = 1, .attn_res = { 4 }, .heads = 2, .groups = 4, .emb_dim = 16,
                              .num_classes = 10 };
    fm_dnn d;
    fm_params p;
    fm_unet u;
    int tensors;
    size_t padded;
    CHECK_OK(fm_unet_param_count(&cfg, &tensors, &padded, NULL, &e), &e);
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, tensors, padded, 3, &e), &e);
    CHECK_OK(fm_unet_init(&u, &d, &p, &cfg, B, &e), &e);
    subject s = { &u, unet_fwd, unet_bwd, unet_set, fm_unet_flops(&u), (long)B * 8 * 8 * 2 };
    const char *scopes[64];
    int ns = 0;
    scopes[ns++] = "cond";
    scopes[ns++] = "conv_in";
    scopes[ns++] = "out";
    for (int i = 0; i < u.nblocks && ns < 64; i++)
        scopes[ns++] = u.blocks[i].name;
    int rc = check_subject(&s, &p, scopes, ns);
    fm_unet_free(&u);
    fm_params_free(&p);
    fm_dnn_free(&d);
    return rc;
}

static int test_dit(void)
{
    fm_err e = { 0 };
    for (int patch = 1; patch <= 2; patch++) {
        const fm_dit_cfg cfg = { .in_ch = 2, .size = 4, .patch = patch, .width = 16, .depth = 2, .heads = 2,
                                 .mlp_ratio = 4, .num_classes = 10, .t_freq = 32 };
        fm_dnn d;
        fm_params p;
        fm_dit m;
        int tensors;
        size_t padded;
        CHECK_OK(fm_dit_param_count(&cfg, &tensors, &padded, NULL, &e), &e);
        CHECK_OK(fm_dnn_init(&d, &e), &e);
        CHECK_OK(fm_params_init(&p, tensors, padded, 3, &e), &e);
        CHECK_OK(fm_dit_init(&m, &d, &p, &cfg, B, &e), &e);
        subject s = { &m, dit_fwd, dit_bwd, dit_set, fm_dit_flops(&m), (long)B * 4 * 4 * 2 };
        const char *scopes[] = { "cond", "embed", "blocks.0", "blocks.1", "final" };
        int rc = check_subject(&s, &p, scopes, 5);
        fm_dit_free(&m);
        fm_params_free(&p);
        fm_dnn_free(&d);
        if (rc)
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = { TEST(test_unet), TEST(test_dit) };
    return fm_test_main("models/profile", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
