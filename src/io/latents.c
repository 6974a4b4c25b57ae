/* latents.c - the latents file's checks and its conversion to a training set
 * (see latents.h). */
#include "fm/latents.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int bad(fm_err *e, const char *path, const char *field, const char *what)
{
    return fm_fail(e, FM_ERR_DATA, "%s: %s: %s: delete it to re-encode", path, field, what);
}

/* The tensor called name: present, F32, ndim dimensions. */
static int get(const fm_st_file *f, const char *path, const char *name, int ndim, const fm_st_tensor **t, fm_err *e)
{
    char what[64];
    *t = fm_st_get(f, name);
    if (!*t)
        return bad(e, path, name, "missing (not a latents file?)");
    if ((*t)->dtype != FM_F32)
        return bad(e, path, name, "dtype BF16, expected F32");
    if ((*t)->ndim != ndim) {
        snprintf(what, sizeof what, "%d dimensions, expected %d", (*t)->ndim, ndim);
        return bad(e, path, name, what);
    }
    return FM_OK;
}

int fm_latents_check(const fm_st_file *f, const char *path, int side, int ch, fm_latents *out, fm_err *e)
{
    const fm_st_tensor *l, *y, *s;
    FM_TRY(get(f, path, "latents", 4, &l, e));
    FM_TRY(get(f, path, "labels", 1, &y, e));
    FM_TRY(get(f, path, "scale", 1, &s, e));
    char what[160];
    int64_t per = 1;
    for (int d = 1; d < 4; d++)
        if (__builtin_mul_overflow(per, l->shape[d], &per))
            return bad(e, path, "latents", "shape too large");
    if (l->shape[0] < 1 || l->shape[0] > INT_MAX || per < 1) {
        snprintf(what, sizeof what, "shape [%lld, %lld, %lld, %lld]: no samples, too many or empty ones",
                 (long long)l->shape[0], (long long)l->shape[1], (long long)l->shape[2], (long long)l->shape[3]);
        return bad(e, path, "latents", what);
    }
    if (side > 0 && (l->shape[1] != side || l->shape[2] != side || l->shape[3] != ch))
        return fm_fail(e, FM_ERR_DATA,
                       "%s: latents: samples of shape [%lld, %lld, %lld], this config's latents are [%d, %d, %d] "
                       "(not the latents of this config): delete it to re-encode",
                       path, (long long)l->shape[1], (long long)l->shape[2], (long long)l->shape[3], side, side, ch);
    if (y->shape[0] != l->shape[0]) {
        snprintf(what, sizeof what, "%lld labels for %lld latents", (long long)y->shape[0], (long long)l->shape[0]);
        return bad(e, path, "labels", what);
    }
    if (s->shape[0] != 1) {
        snprintf(what, sizeof what, "%lld values, expected 1", (long long)s->shape[0]);
        return bad(e, path, "scale", what);
    }
    float scale;
    memcpy(&scale, s->data, sizeof scale);
    if (!(scale > 0.0f) || !isfinite(scale)) {
        snprintf(what, sizeof what, "%g is not a finite number > 0", scale);
        return bad(e, path, "scale", what);
    }
    for (int64_t i = 0; i < y->shape[0]; i++) {
        float v;
        memcpy(&v, (const char *)y->data + i * sizeof v, sizeof v);
        if (!(v >= 0.0f && v <= FM_LATENTS_CLASSES - 1) || v != floorf(v)) {
            snprintf(what, sizeof what, "entry %lld is %g, not a class index 0..%d", (long long)i, v,
                     FM_LATENTS_CLASSES - 1);
            return bad(e, path, "labels", what);
        }
    }
    *out = (fm_latents){ l, y, (int)l->shape[0], (long)per, scale };
    return FM_OK;
}

void fm_latents_copy(const fm_latents *l, float *x, int32_t *y)
{
    const char *src = l->latents->data;
    for (size_t i = 0; i < (size_t)l->n * (size_t)l->dim; i++) {
        float v;
        memcpy(&v, src + i * sizeof v, sizeof v);
        x[i] = v * l->scale;
    }
    for (int i = 0; i < l->n; i++) {
        float v;
        memcpy(&v, (const char *)l->labels->data + (size_t)i * sizeof v, sizeof v);
        y[i] = (int32_t)v; /* a whole number in [0, 9]: fm_latents_check */
    }
}
