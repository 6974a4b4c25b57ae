/* test_classifier.c - the eval CNN: parameter names and shapes, features and
 * logits against a naive pool + head, a gradient check of the training loss,
 * bad configs, and a timing line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/classifier.h"
#include "fm/rng.h"
#include "fm/timer.h"
#include "gradcheck.h"
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
    fm_dnn d;
    fm_params p;
    fm_classifier m;
    const fm_classifier_cfg c = fm_classifier_cfg_default();
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 64, 1 << 20, 3, &e), &e);
    CHECK_OK(fm_classifier_init(&m, &d, &p, &c, 2, 0, &e), &e);
    static const struct { const char *name; int64_t s0, s1; } want[] = {
        { "features.0.weight", 32, 1 },   { "features.0.bias", 32, 0 },   { "features.1.weight", 32, 0 },
        { "features.1.bias", 32, 0 },     { "features.3.weight", 64, 32 }, { "features.4.weight", 64, 0 },
        { "features.6.weight", 128, 64 }, { "features.7.bias", 128, 0 },  { "features.9.weight", 128, 128 },
        { "features.10.weight", 128, 0 }, { "head.weight", 10, 2048 },     { "head.bias", 10, 0 },
    };
    CHECK(p.n == 18, "%d tensors, expected 18", p.n);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        fm_param *t = fm_params_find(&p, want[i].name);
        CHECK(t, "missing %s", want[i].name);
        CHECK(t->w.shape[0] == want[i].s0 && (!want[i].s1 || t->w.shape[1] == want[i].s1), "%s: shape", want[i].name);
    }
    CHECK(m.hw[0] == 32 && m.hw[1] == 16 && m.hw[2] == 8 && m.hw[3] == 4 && m.nfeat == 128, "stage sizes %d %d %d %d",
          m.hw[0], m.hw[1], m.hw[2], m.hw[3]);
    long count = 0;
    for (int i = 0; i < p.n; i++)
        count += (long)fm_tensor_numel(&p.items[i].w);
    fprintf(stderr, "  default classifier: %d tensors, %ld parameters\n", p.n, count);
    int32_t y[2] = { 0, 1 };
    CHECK(fm_classifier_backward(&m, NULL, y, &e) == FM_ERR_INTERNAL, "backward without train accepted");
    fm_classifier_free(&m);
    fm_params_free(&p);
    fm_dnn_free(&d);
    return 0;
}

/* features = mean over pixels of the last stage, logits = W flat + b with
 * flat the last stage's map flattened in NHWC order. */
static int test_classifier_head_reference(void)
{
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p;
    fm_classifier m;
    const fm_classifier_cfg c = tiny_cfg();
    const int B = 3, K = c.num_classes;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 64, 1 << 20, 3, &e), &e);
    CHECK_OK(fm_classifier_init(&m, &d, &p, &c, B, 1, &e), &e);
    float x[3 * 256];
    fill_images(x, 3 * 256, 1);
    const float *logits, *feat;
    CHECK_OK(fm_classifier_forward(&m, x, &logits, &feat, &e), &e);
    CHECK(logits == m.logits && feat == m.features, "returned pointers");
    const int F = m.nfeat, hw = m.hw[3] * m.hw[3];
    float rf[3 * 16], rl[3 * 5]; /* F = 16, K = 5 */
    const float *W = fm_params_find(&p, "head.weight")->w.data, *bias = fm_params_find(&p, "head.bias")->w.data;
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
    fm_params_free(&p);
    fm_dnn_free(&d);
    return 0;
}

typedef struct cls_ctx {
    fm_classifier m;
    fm_params p;
    float *x;
    int32_t *y;
    double ref;
    float out[1], dout[1];
} cls_ctx;

static int cls_fwd(void *p, fm_err *e)
{
    cls_ctx *c = p;
    double l;
    FM_TRY(fm_classifier_forward(&c->m, c->x, NULL, NULL, e));
    FM_TRY(fm_classifier_loss(&c->m, c->y, &l, NULL, e));
    c->out[0] = (float)(l - c->ref);
    return FM_OK;
}

static int cls_bwd(void *p, fm_err *e)
{
    cls_ctx *c = p;
    FM_TRY(fm_classifier_backward(&c->m, c->x, c->y, e));
    for (size_t i = 0; i < c->p.numel; i++)
        c->p.grad[i] *= c->dout[0];
    return FM_OK;
}

static int test_classifier_gradcheck(void)
{
    static const char *vars[] = { "features.0.weight", "features.0.bias", "features.4.weight", "features.4.bias",
                                  "features.6.weight", "features.9.weight", "features.10.weight", "head.weight",
                                  "head.bias" };
    fm_err e = { 0 };
    fm_dnn d;
    static cls_ctx c;
    const fm_classifier_cfg cfg = tiny_cfg();
    const int B = 3;
    int32_t y[3];
    float x[3 * 256];
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&c.p, 64, 1 << 20, 3, &e), &e);
    CHECK_OK(fm_classifier_init(&c.m, &d, &c.p, &cfg, B, 1, &e), &e);
    perturb_norms(&c.p);
    fill_images(x, 3 * 256, 2);
    fill_labels(y, B, cfg.num_classes, 2);
    c.x = x;
    c.y = y;
    c.ref = 0;
    CHECK_OK(cls_fwd(&c, &e), &e);
    c.ref = c.out[0];
    fm_gc_op op = { .name = "classifier", .ctx = &c, .forward = cls_fwd, .backward = cls_bwd, .out = c.out,
                    .dout = c.dout, .out_n = 1, .nvars = (int)(sizeof vars / sizeof *vars) };
    for (int i = 0; i < op.nvars; i++) {
        fm_param *t = fm_params_find(&c.p, vars[i]);
        CHECK(t, "missing %s", vars[i]);
        op.vars[i] = (fm_gc_var){ vars[i], t->w.data, t->g.data, (long)fm_tensor_numel(&t->w) };
    }
    /* fp32 model, loss difference in fp32: eps = 1e-2, tol = 2e-2; 20 entries per
     * tensor (a stride that is not a multiple of 9 visits every kernel tap) */
    int rc = fm_gradcheck(&op, 1e-2, 2e-2, 20, &e);
    fm_classifier_free(&c.m);
    fm_params_free(&c.p);
    fm_dnn_free(&d);
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
    fm_dnn d;
    fm_params p;
    fm_classifier m;
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 64, 1 << 20, 3, &e), &e);
    fm_classifier_cfg c = tiny_cfg();
    c.width = 3; /* 3 channels in 2 groups */
    CHECK(fm_classifier_init(&m, &d, &p, &c, 2, 1, &e) == FM_ERR_USAGE, "width 3 with 2 groups accepted");
    fprintf(stderr, "  %s\n", e.msg);
    c = tiny_cfg();
    c.num_classes = 0;
    CHECK(fm_classifier_init(&m, &d, &p, &c, 2, 1, &e) == FM_ERR_USAGE, "0 classes accepted");
    CHECK(p.n == 0, "a rejected config registered parameters");
    fm_params_free(&p);
    fm_dnn_free(&d);
    return 0;
}

/* Forward + backward time of the default classifier (not asserted). Batch
 * from FM_BENCH_CLS_B (default 32; the report quotes 256). */
static int test_classifier_timing(void)
{
    const char *env = getenv("FM_BENCH_CLS_B");
    const int B = env ? atoi(env) : 32;
    CHECK(B > 0, "FM_BENCH_CLS_B = %s", env);
    fm_err e = { 0 };
    fm_dnn d;
    fm_params p;
    fm_classifier m;
    const fm_classifier_cfg c = fm_classifier_cfg_default();
    CHECK_OK(fm_dnn_init(&d, &e), &e);
    CHECK_OK(fm_params_init(&p, 64, 1 << 20, 3, &e), &e);
    CHECK_OK(fm_classifier_init(&m, &d, &p, &c, B, 1, &e), &e);
    const long nx = (long)B * c.size * c.size;
    float *x = malloc((size_t)nx * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    fill_images(x, nx, 3);
    fill_labels(y, B, c.num_classes, 3);
    double best = 1e30, loss = 0;
    for (int it = 0; it < 4; it++) {
        double t0 = fm_now();
        CHECK_OK(fm_classifier_forward(&m, x, NULL, NULL, &e), &e);
        CHECK_OK(fm_classifier_loss(&m, y, &loss, NULL, &e), &e);
        CHECK_OK(fm_classifier_backward(&m, x, y, &e), &e);
        double dt = fm_now() - t0;
        best = it > 0 && dt < best ? dt : best;
    }
    long count = 0;
    for (int i = 0; i < p.n; i++)
        count += (long)fm_tensor_numel(&p.items[i].w);
    const double fl = fm_classifier_flops(&m);
    fprintf(stderr,
            "  classifier default: %ld parameters; B = %d: forward+backward %.1f ms (%.3f ms/image, %.2f GFLOP, "
            "%.1f GFLOP/s); arena %.1f of %.1f MiB\n",
            count, B, best * 1e3, best * 1e3 / B, fl * 1e-9, fl / best * 1e-9, m.arena.peak / 1048576.0,
            m.arena.cap / 1048576.0);
    CHECK(isfinite(loss), "loss %g", loss);
    free(x);
    free(y);
    fm_classifier_free(&m);
    fm_params_free(&p);
    fm_dnn_free(&d);
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
