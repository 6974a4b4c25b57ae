/* test_model_profile.c - per-layer profiling of the flow models through the
 * model interface (flowmodel.h, profile.h): with a table set, the U-Net and
 * the DiT give bitwise the same output and parameter gradients as without;
 * the FLOPs accounted to the forward phase equal the model's own forward
 * count (every matrix product is a layer that times itself); every layer the
 * walk names is accounted in forward, every scope in both phases, each once
 * per step, plus one "other" entry per phase; the grad hook is timed per
 * call; clearing the table detaches every layer and stops the accounting. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/config.h"
#include "fm/dnn.h"
#include "fm/build.h"
#include "fm/flowmodel.h"
#include "fm/params.h"
#include "fm/profile.h"
#include "fm/rng.h"
#include "test.h"

#define B 3
#define MAX_LAYERS 256

/* What a walk saw: the names, and whether every site pointer was NULL. */
typedef struct walked {
    int n, attached;
    char scope[MAX_LAYERS][FM_PROF_SCOPE], layer[MAX_LAYERS][FM_PROF_LAYER];
} walked;

static void record(void *ctx, const char *scope, const char *layer, const char *kind, fm_prof_site **site)
{
    walked *w = ctx;
    (void)kind;
    if (w->n < MAX_LAYERS) {
        snprintf(w->scope[w->n], sizeof w->scope[0], "%s", scope);
        snprintf(w->layer[w->n], sizeof w->layer[0], "%s", layer);
    }
    w->n++;
    w->attached += *site != NULL;
}

static int on_grads(void *ctx, int first, int n, fm_err *e)
{
    (void)first, (void)n, (void)e;
    ++*(int *)ctx;
    return FM_OK;
}

/* Every parameter redrawn small and non-zero, so the zero-initialised layers
 * carry signal too. */
static void perturb(fm_params *p)
{
    fm_fill_normal(p->data, (long)p->numel, 5, 0, 0);
    for (size_t i = 0; i < p->numel; i++)
        p->data[i] *= 0.2f;
}

/* Run forward + backward; out and a copy of every gradient. */
static int run(fm_flow_model *f, const float *x, const float *t, const int32_t *y, const float *dout, float *out,
               fm_params *p, float *grad, fm_err *e)
{
    FM_TRY(fm_flow_model_forward(f, x, t, y, out, e));
    FM_TRY(fm_flow_model_backward(f, dout, e));
    memcpy(grad, p->grad, p->numel * sizeof(float));
    return FM_OK;
}

static int has_entry(const fm_profile *p, const char *scope, int phase)
{
    for (int i = 0; i < p->n; i++)
        if (p->e[i].phase == phase && strcmp(p->e[i].scope, scope) == 0)
            return 1;
    return 0;
}

/* The checks, on the model of config c (flow.model and its keys set). */
static int check_model(const fm_config *c)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p;
    fm_flow_model f;
    int tensors;
    size_t padded;
    fm_flow_model_cfg fc;
    fm_build_flow_cfg(c, &fc);
    CHECK_OK(fm_flow_model_size(&fc, &tensors, &padded, NULL, &e), &e);
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, tensors, padded, 3, &e), &e);
    CHECK_OK(fm_flow_model_init(&f, &fc, &d, &p, B, &e), &e);
    const fm_flow_model_ops *ops = f.kind == FM_FLOW_DIT ? &fm_dit_ops : &fm_unet_ops;
    const long nx = B * f.dim;
    float *x = malloc((size_t)nx * sizeof *x), *dout = malloc((size_t)nx * sizeof *dout);
    float *out0 = malloc((size_t)nx * sizeof *out0), *out1 = malloc((size_t)nx * sizeof *out1);
    float *g0 = malloc(p.numel * sizeof *g0), *g1 = malloc(p.numel * sizeof *g1);
    walked *w = calloc(1, sizeof *w);
    float t[B] = { 0.1f, 0.5f, 0.9f };
    int32_t y[B] = { 0, 7, 10 };
    CHECK(x && dout && out0 && out1 && g0 && g1 && w, "out of memory");
    fm_fill_normal(x, nx, 1, 0, 0);
    fm_fill_normal(dout, nx, 1, 1, 0);
    perturb(&p);
    fm_profile prof;
    CHECK_OK(fm_profile_init(&prof, 1024, &e), &e);

    CHECK_OK(run(&f, x, t, y, dout, out0, &p, g0, &e), &e);
    fm_flow_model_set_profile(&f, &prof);
    ops->walk(&f.m, record, w);
    CHECK(w->n > 0 && w->n <= MAX_LAYERS && w->attached == w->n, "%s: %d of %d layers attached", ops->name,
          w->attached, w->n);
    CHECK(prof.nsite == w->n && prof.dropped == 0, "%d sites for %d layers", prof.nsite, w->n);
    CHECK_OK(run(&f, x, t, y, dout, out1, &p, g1, &e), &e);
    CHECK(memcmp(out0, out1, (size_t)nx * sizeof *out0) == 0, "output differs with profiling on");
    CHECK(memcmp(g0, g1, p.numel * sizeof *g0) == 0, "gradients differ with profiling on");
    CHECK(prof.dropped == 0 && prof.n > 0, "%d entries, %lld dropped", prof.n, (long long)prof.dropped);

    const double ff = fm_profile_flops(&prof, FM_PROF_FWD), fb = fm_profile_flops(&prof, FM_PROF_BWD);
    const double fl = fm_flow_model_flops(&f);
    CHECK(fabs(ff - fl) <= 1e-9 * fl, "forward FLOPs accounted %.6g, model counts %.6g", ff, fl);
    CHECK(fb > 1.5 * ff && fb <= 2.0 * ff + 1, "backward FLOPs %.6g vs forward %.6g", fb, ff);
    CHECK(fm_profile_seconds(&prof, FM_PROF_FWD) > 0 && fm_profile_seconds(&prof, FM_PROF_BWD) > 0, "no time");
    for (int i = 0; i < w->n; i++) {
        CHECK(fm_profile_find(&prof, w->scope[i], w->layer[i], FM_PROF_FWD), "%s.%s: no forward entry",
              w->scope[i], w->layer[i]);
        CHECK(has_entry(&prof, w->scope[i], FM_PROF_BWD), "scope %s: no backward entry", w->scope[i]);
    }
    for (int ph = FM_PROF_FWD; ph <= FM_PROF_BWD; ph++) {
        const fm_profile_entry *o = fm_profile_find(&prof, "other", "", ph);
        CHECK(o && o->calls == 1 && o->seconds >= 0 && strcmp(o->kind, "elementwise") == 0, "other %s",
              fm_profile_phase_name(ph));
    }
    for (int i = 0; i < prof.n; i++) {
        const fm_profile_entry *en = &prof.e[i];
        CHECK(en->calls == 1, "%s.%s %s: %lld calls in one step", en->scope, en->layer,
              fm_profile_phase_name(en->phase), (long long)en->calls);
        int named = strcmp(en->scope, "other") == 0;
        for (int k = 0; k < w->n && !named; k++) {
            const size_t ll = strlen(w->layer[k]);
            named = strcmp(en->scope, w->scope[k]) == 0 && strncmp(en->layer, w->layer[k], ll) == 0 &&
                    (en->layer[ll] == '\0' || strcmp(en->layer + ll, ".recompute") == 0);
        }
        CHECK(named, "entry %s.%s is no walked layer", en->scope, en->layer);
    }
    fm_profile_print(&prof, FM_PROFILE_BY_KIND, 1, 0, 0, stdout, &e);

    /* the grad hook, timed per call through the wrapper */
    int calls = 0;
    fm_profile_reset(&prof);
    fm_flow_model_set_grad_hook(&f, on_grads, &calls);
    CHECK_OK(run(&f, x, t, y, dout, out1, &p, g1, &e), &e);
    const fm_profile_entry *h = fm_profile_find(&prof, "grad_hook", "", FM_PROF_BWD);
    CHECK(calls > 1 && h && h->calls == calls && strcmp(h->kind, "hook") == 0, "%d hook calls, %lld timed", calls,
          h ? (long long)h->calls : -1LL);
    CHECK(memcmp(g0, g1, p.numel * sizeof *g0) == 0, "gradients differ with a hook");
    fm_flow_model_set_grad_hook(&f, NULL, NULL);

    /* off again: every layer detached, the table left alone */
    fm_flow_model_set_profile(&f, NULL);
    memset(w, 0, sizeof *w);
    ops->walk(&f.m, record, w);
    CHECK(w->attached == 0, "%d layers still attached", w->attached);
    const int n = prof.n;
    const double sec = fm_profile_seconds(&prof, -1);
    CHECK_OK(run(&f, x, t, y, dout, out1, &p, g1, &e), &e);
    CHECK(prof.n == n && fm_profile_seconds(&prof, -1) == sec, "accounted with profiling off");
    CHECK(memcmp(out0, out1, (size_t)nx * sizeof *out0) == 0, "output differs after profiling");
    CHECK(calls == h->calls, "hook called after removal");

    fm_flow_model_free(&f);
    fm_profile_free(&prof);
    fm_params_free(&p);
    fm_dnn_free(&d);
    free(x), free(dout), free(out0), free(out1), free(g0), free(g1), free(w);
    return 0;
}

/* A config whose flow input is 8x8x2 latents, with the given --set lines. */
static int config(fm_config *c, const char *const *sets, int n, fm_err *e)
{
    FM_TRY(fm_config_defaults(c, e));
    FM_TRY(fm_config_set(c, "flow.latent=true", e));
    FM_TRY(fm_config_set(c, "vae.channels=[16, 32, 32]", e));
    FM_TRY(fm_config_set(c, "vae.latent_channels=2", e));
    for (int i = 0; i < n; i++)
        FM_TRY(fm_config_set(c, sets[i], e));
    return FM_OK;
}

static int test_unet(void)
{
    fm_err e = { 0 };
    fm_config c;
    const char *sets[] = { "flow.model=unet", "unet.channels=[8, 16]", "unet.res_blocks=1", "unet.attn_res=[4]",
                           "unet.heads=2", "unet.groups=4", "unet.emb_dim=16" };
    CHECK_OK(config(&c, sets, (int)(sizeof sets / sizeof *sets), &e), &e);
    return check_model(&c);
}

static int test_dit(void)
{
    fm_err e = { 0 };
    for (int patch = 1; patch <= 2; patch++) {
        fm_config c;
        char ps[32];
        snprintf(ps, sizeof ps, "dit.patch=%d", patch);
        const char *sets[] = { "flow.model=dit", ps, "dit.width=16", "dit.depth=2", "dit.heads=2",
                               "dit.mlp_ratio=4" };
        CHECK_OK(config(&c, sets, (int)(sizeof sets / sizeof *sets), &e), &e);
        if (check_model(&c))
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = { TEST(test_unet), TEST(test_dit) };
    return fm_test_main("models/profile", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
