/* tensor.c - tensor views. */
#include "fm/tensor.h"

#include <stdio.h>
#include <string.h>

size_t fm_dtype_size(fm_dtype t) { return t == FM_BF16 ? 2 : 4; }

int64_t fm_tensor_numel(const fm_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t fm_tensor_bytes(const fm_tensor *t) { return (size_t)fm_tensor_numel(t) * fm_dtype_size(t->dtype); }

int fm_tensor_alloc(fm_tensor *t, fm_arena *a, fm_dtype dt, fm_layout lay, int ndim,
                    const int64_t *shape, fm_err *e)
{
    if (ndim < 1 || ndim > FM_MAX_DIMS)
        return fm_fail(e, FM_ERR_INTERNAL, "tensor: %d dimensions (1..%d allowed)", ndim, FM_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    t->dtype = dt;
    t->layout = lay;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return fm_fail(e, FM_ERR_INTERNAL, "tensor: dimension %d is %lld", i, (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    return fm_arena_alloc_or(a, fm_tensor_bytes(t), &t->data, e);
}

int fm_tensor_nhwc(fm_tensor *t, fm_arena *a, int64_t n, int64_t h, int64_t w, int64_t c, fm_err *e)
{
    int64_t s[4] = { n, h, w, c };
    return fm_tensor_alloc(t, a, FM_F32, FM_LAYOUT_NHWC, 4, s, e);
}

const char *fm_shape_str(const fm_tensor *t, char *buf, int len)
{
    int off = snprintf(buf, (size_t)len, "[");
    for (int i = 0; i < t->ndim && off < len; i++)
        off += snprintf(buf + off, (size_t)(len - off), i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (off < len)
        snprintf(buf + off, (size_t)(len - off), "]");
    return buf;
}

uint16_t fm_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float fm_bf16_to_f32(uint16_t x)
{
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void fm_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; i++)
        dst[i] = fm_bf16_round(src[i]);
}

void fm_bf16_copy_from(fm_bf16_copy *c, const float *x, int reuse)
{
    if (!reuse || x != c->of) /* the copy of another buffer: round this one */
        fm_f32_to_bf16_n(c->buf, x, c->n);
    c->of = x;
}
