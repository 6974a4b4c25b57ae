/* test_classifier.c - the eval CNN: parameter names and shapes, features and
 * logits against a naive pool + head, a gradient check of the training loss,
 * bad configs, and a timing line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/classifier.h"
#include "fm/rng.h"
#include "fixture.h"
#include "test.h"

/* 16x16x1 images (stages 16, 8, 4, 2), widths 4, 8, 16, 16, five classes. */
static fm_classifier_cfg tiny_cfg(void)
{
    fm_classifier_cfg c = fm_classifier_cfg_default();
    c.size = 16;
    c.width = 4;
    c.num_classes = 5;
    c.groups = 2;
    return c;
}

static void fill_images(float *x, long n, uint64_t stream)
{
    fm_fill_uniform(x, n, 6, stream, 0);
    for (long i = 0; i < n; i++)
        x[i] = 2.0f * x[i] - 1.0f;
}

static void fill_labels(int32_t *y, int n, int k, uint64_t stream)
{
    for (int i = 0; i < n; i++)
        y[i] = (int32_t)fm_rand_below((uint32_t)k, 6, stream, (uint64_t)i);
}

static void perturb_norms(fm_params *p)
{
    static const char *norms[] = { "features.1", "features.4", "features.7", "features.10" };
    for (int i = 0; i < 4; i++) {
        char nm[64];
        for (int wb = 0; wb < 2; wb++) {
            snprintf(nm, sizeof nm, "%s.%s", norms[i], wb ? "bias" : "weight");
            fm_param *t = fm_params_find(p, nm);
            const long n = (long)fm_tensor_numel(&t->w);
            fm_fill_normal(t->w.data, n, 8, (uint64_t)(2 * i + wb), 0);
            for (long k = 0; k < n; k++)
                fm_f32(&t->w)[k] = (wb ? 0.0f : 1.0f) + 0.2f * fm_f32(&t->w)[k];
        }
    }
}

static int test_classifier_names(void)
{
    fm_err e = { 0 };
    fm_fx_env v;
    fm_classifier m;
    const fm_classifier_cfg c = fm_classifier_cfg_default();
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK_OK(fm_classifier_init(&m, &v.d, &v.p, &c, 2, 0, &e), &e);
    static const struct { const char *name; int64_t s0, s1; } want[] = {
        { "features.0.weight", 32, 1 },   { "features.0.bias", 32, 0 },   { "features.1.weight", 32, 0 },
        { "features.1.bias", 32, 0 },     { "features.3.weight", 64, 32 }, { "features.4.weight", 64, 0 },
        { "features.6.weight", 128, 64 }, { "features.7.bias", 128, 0 },  { "features.9.weight", 128, 128 },
        { "features.10.weight", 128, 0 }, { "head.weight", 10, 2048 },     { "head.bias", 10, 0 },
    };
    CHECK(v.p.n == 18, "%d tensors, expected 18", v.p.n);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        fm_param *t = fm_params_find(&v.p, want[i].name);
        CHECK(t, "missing %s", want[i].name);
        CHECK(t->w.shape[0] == want[i].s0 && (!want[i].s1 || t->w.shape[1] == want[i].s1), "%s: shape", want[i].name);
    }
    CHECK(m.hw[0] == 32 && m.hw[1] == 16 && m.hw[2] == 8 && m.hw[3] == 4 && m.nfeat == 128, "stage sizes %d %d %d %d",
          m.hw[0], m.hw[1], m.hw[2], m.hw[3]);
    fprintf(stderr, "  default classifier: %d tensors, %ld parameters\n", v.p.n, fm_fx_param_count(&v.p));
    int32_t y[2] = { 0, 1 };
    CHECK(fm_classifier_backward(&m, NULL, y, &e) == FM_ERR_INTERNAL, "backward without train accepted");
    fm_classifier_free(&m);
    fm_fx_env_free(&v);
    return 0;
}

/* features = mean over pixels of the last stage, logits = W flat + b with
 * flat the last stage's map flattened in NHWC order. */
static int test_classifier_head_reference(void)
{
    fm_err e = { 0 };
    fm_fx_env v;
    fm_classifier m;
    const fm_classifier_cfg c = tiny_cfg();
    const int B = 3, K = c.num_classes;
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK_OK(fm_classifier_init(&m, &v.d, &v.p, &c, B, 1, &e), &e);
    float x[3 * 256];
    fill_images(x, 3 * 256, 1);
    const float *logits, *feat;
    CHECK_OK(fm_classifier_forward(&m, x, &logits, &feat, &e), &e);
    CHECK(logits == m.logits && feat == m.features, "returned pointers");
    const int F = m.nfeat, hw = m.hw[3] * m.hw[3];
    float rf[3 * 16], rl[3 * 5]; /* F = 16, K = 5 */
    const float *W = fm_params_find(&v.p, "head.weight")->w.data, *bias = fm_params_find(&v.p, "head.bias")->w.data;
    for (int i = 0; i < B; i++) {
        for (int f = 0; f < F; f++) {
            double s = 0;
            for (int q = 0; q < hw; q++)
                s += m.h[3][((long)i * hw + q) * F + f];
            rf[i * F + f] = (float)(s / hw);
        }
        for (int k = 0; k < K; k++) {
            double s = bias[k];
            for (int f = 0; f < hw * F; f++)
                s += (double)W[k * hw * F + f] * m.h[3][(long)i * hw * F + f];
            rl[i * K + k] = (float)s;
        }
    }
    double ef = fm_rel_err(feat, rf, (long)B * F, 1e-6), el = fm_rel_err(logits, rl, (long)B * K, 1e-6);
    fprintf(stderr, "  features vs naive pool %.2e, logits vs naive head %.2e\n", ef, el);
    CHECK(ef < 1e-6 && el < 1e-5, "features %.2e logits %.2e", ef, el);
    int32_t y[3];
    fill_labels(y, B, K, 1);
    double loss;
    int correct;
    CHECK_OK(fm_classifier_loss(&m, y, &loss, &correct, &e), &e);
    CHECK(isfinite(loss) && loss > 0 && correct >= 0 && correct <= B, "loss %g, correct %d", loss, correct);
    fm_classifier_free(&m);
    fm_fx_env_free(&v);
    return 0;
}

typedef struct cls_ctx {
    fm_classifier m;
    const float *x;
    const int32_t *y;
} cls_ctx;

static int cls_loss(void *p, double *l, fm_err *e)
{
    cls_ctx *c = p;
    FM_TRY(fm_classifier_forward(&c->m, c->x, NULL, NULL, e));
    return fm_classifier_loss(&c->m, c->y, l, NULL, e);
}

static int cls_bwd(void *p, fm_err *e)
{
    cls_ctx *c = p;
    return fm_classifier_backward(&c->m, c->x, c->y, e);
}

static int test_classifier_gradcheck(void)
{
    static const char *vars[] = { "features.0.weight", "features.0.bias", "features.4.weight", "features.4.bias",
                                  "features.6.weight", "features.9.weight", "features.10.weight", "head.weight",
                                  "head.bias" };
    fm_err e = { 0 };
    fm_fx_env v;
    static cls_ctx c;
    const fm_classifier_cfg cfg = tiny_cfg();
    const int B = 3;
    int32_t y[3];
    float x[3 * 256];
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK_OK(fm_classifier_init(&c.m, &v.d, &v.p, &cfg, B, 1, &e), &e);
    perturb_norms(&v.p);
    fill_images(x, 3 * 256, 2);
    fill_labels(y, B, cfg.num_classes, 2);
    c.x = x;
    c.y = y;
    fm_fx_loss m = { .name = "classifier", .ctx = &c, .loss = cls_loss, .backward = cls_bwd, .p = &v.p };
    /* fp32 model, loss difference in fp32: eps = 1e-2, tol = 2e-2; 20 entries per
     * tensor (a stride that is not a multiple of 9 visits every kernel tap) */
    int rc = fm_fx_gradcheck_loss(&m, vars, (int)(sizeof vars / sizeof *vars), 1e-2, 2e-2, 20, &e);
    fm_classifier_free(&c.m);
    fm_fx_env_free(&v);
    CHECK_OK(rc, &e);
    return 0;
}

/* The arena init reserved is exactly what the model took: capacity = bytes
 * used, rounded up only to fm_arena_init's 2 MiB granule for large arenas. */
static int arena_exact(const fm_arena *a)
{
    const size_t huge = (size_t)2 << 20;
    return a->used == a->peak && a->used > 0 &&
           (a->cap == a->used || (a->used >= huge && a->cap % huge == 0 && a->cap - a->used < huge));
}

/* The arena is sized by measuring the classifier's own set-up: exactly what
 * it takes, fp32 and bf16, with and without training buffers. */
static int test_classifier_arena_exact(void)
{
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int train = 0; train < 2; train++) {
            fm_err e = { 0 };
            const fm_classifier_cfg c = tiny_cfg();
            fm_dnn d;
            fm_params p;
            fm_classifier m;
            CHECK_OK(fm_dnn_init(&d, &e), &e);
            d.bf16 = bf16;
            CHECK_OK(fm_params_init(&p, 64, 1 << 20, 3, &e), &e);
            int rc = fm_classifier_init(&m, &d, &p, &c, 3 + 60 * train, train, &e);
            const fm_arena a = m.arena;
            fm_classifier_free(&m);
            fm_params_free(&p);
            fm_dnn_free(&d);
            CHECK_OK(rc, &e);
            CHECK(arena_exact(&a), "%s train %d: %zu used, %zu reserved", bf16 ? "bf16" : "fp32", train, a.used,
                  a.cap);
        }
    return 0;
}

static int test_classifier_bad_cfg(void)
{
    fm_err e = { 0 };
    fm_fx_env v;
    fm_classifier m;
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    fm_classifier_cfg c = tiny_cfg();
    c.width = 3; /* 3 channels in 2 groups */
    CHECK(fm_classifier_init(&m, &v.d, &v.p, &c, 2, 1, &e) == FM_ERR_USAGE, "width 3 with 2 groups accepted");
    fprintf(stderr, "  %s\n", e.msg);
    c = tiny_cfg();
    c.num_classes = 0;
    CHECK(fm_classifier_init(&m, &v.d, &v.p, &c, 2, 1, &e) == FM_ERR_USAGE, "0 classes accepted");
    CHECK(v.p.n == 0, "a rejected config registered parameters");
    fm_fx_env_free(&v);
    return 0;
}

/* Forward + backward time of the default classifier (not asserted). Batch
 * from FM_BENCH_CLS_B (default 32; the report quotes 256). */
static int cls_fwd(void *p, fm_err *e)
{
    double l;
    return cls_loss(p, &l, e);
}

static int test_classifier_timing(void)
{
    const char *env = getenv("FM_BENCH_CLS_B");
    const int B = env ? atoi(env) : 32;
    CHECK(B > 0, "FM_BENCH_CLS_B = %s", env);
    fm_err e = { 0 };
    fm_fx_env v;
    cls_ctx c;
    const fm_classifier_cfg cfg = fm_classifier_cfg_default();
    CHECK_OK(fm_fx_env_init(&v, 0, 64, 1 << 20, 3, 0, &e), &e);
    CHECK_OK(fm_classifier_init(&c.m, &v.d, &v.p, &cfg, B, 1, &e), &e);
    const long nx = (long)B * cfg.size * cfg.size;
    float *x = malloc((size_t)nx * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    fill_images(x, nx, 3);
    fill_labels(y, B, cfg.num_classes, 3);
    c.x = x, c.y = y;
    fm_fx_times t;
    double loss = 0;
    CHECK_OK(fm_fx_time(cls_fwd, cls_bwd, &c, 1, 3, &t, &e), &e); /* the first is a warm-up */
    CHECK_OK(cls_loss(&c, &loss, &e), &e);
    const double fl = fm_classifier_flops(&c.m), best = t.best;
    fprintf(stderr,
            "  classifier default: %ld parameters; B = %d: forward+backward %.1f ms (%.3f ms/image, %.2f GFLOP, "
            "%.1f GFLOP/s); arena %.1f of %.1f MiB\n",
            fm_fx_param_count(&v.p), B, best * 1e3, best * 1e3 / B, fl * 1e-9, fl / best * 1e-9,
            c.m.arena.peak / 1048576.0, c.m.arena.cap / 1048576.0);
    CHECK(isfinite(loss), "loss %g", loss);
    free(x);
    free(y);
    fm_classifier_free(&c.m);
    fm_fx_env_free(&v);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = {
        TEST(test_classifier_names),   TEST(test_classifier_head_reference), TEST(test_classifier_gradcheck),
        TEST(test_classifier_bad_cfg), TEST(test_classifier_arena_exact), TEST(test_classifier_timing),
    };
    return fm_test_main("models/classifier", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
