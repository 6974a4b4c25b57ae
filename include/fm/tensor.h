/* tensor.h - a view of a dense array: shape, layout, dtype, data pointer.
 *
 * A tensor does not own memory; data lives in an arena. Activations use the
 * NHWC layout throughout fmtrain (channels innermost): it is what oneDNN's
 * fast convolution kernels take directly, and it makes attention tokens,
 * GroupNorm groups and linear layers contiguous. Parameters keep PyTorch's
 * layouts (conv OIHW, linear [out, in]) so checkpoints map 1:1 to a state dict. */
#ifndef FM_TENSOR_H
#define FM_TENSOR_H

#include <stdint.h>
#include <string.h>

#include "fm/arena.h"
#include "fm/status.h"

#define FM_MAX_DIMS 4

typedef enum { FM_F32 = 0, FM_BF16 = 1 } fm_dtype;
typedef enum { FM_LAYOUT_PLAIN = 0, FM_LAYOUT_NHWC = 1, FM_LAYOUT_NCHW = 2 } fm_layout;

typedef struct fm_tensor {
    void *data;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
    fm_dtype dtype;
    fm_layout layout;
} fm_tensor;

size_t fm_dtype_size(fm_dtype t);
int64_t fm_tensor_numel(const fm_tensor *t);
size_t fm_tensor_bytes(const fm_tensor *t);
static inline float *fm_f32(const fm_tensor *t) { return (float *)t->data; }

/* Make a tensor of the given shape in arena a (zero-filled). */
int fm_tensor_alloc(fm_tensor *t, fm_arena *a, fm_dtype dt, fm_layout lay, int ndim,
                    const int64_t *shape, fm_err *e);
/* Shorthand for an fp32 NHWC activation [n, h, w, c]. */
int fm_tensor_nhwc(fm_tensor *t, fm_arena *a, int64_t n, int64_t h, int64_t w, int64_t c, fm_err *e);

/* Writes "[2, 8, 8, 64]" into buf. */
const char *fm_shape_str(const fm_tensor *t, char *buf, int len);

/* bf16 <-> fp32 (round to nearest even). */
uint16_t fm_f32_to_bf16(float x);
float fm_bf16_to_f32(uint16_t x);
/* fm_f32_to_bf16, branch-free so that loops over it vectorise. */
static inline uint16_t fm_bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet = (u >> 16) | 0x40u; /* NaN stays NaN */
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}
/* dst[i] = fm_f32_to_bf16(src[i]) for i < n; threaded for large n. */
void fm_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n);

/* A layer's bf16 copy of an fp32 operand of n elements, and the buffer it was
 * last rounded from. */
typedef struct fm_bf16_copy {
    uint16_t *buf; /* [n], NULL when the layer runs in fp32 */
    const float *of;
    int64_t n;
} fm_bf16_copy;

/* Round x into c->buf, unless reuse is set and c->buf already holds x's
 * rounding (same buffer: a backward given the forward's unchanged input). */
void fm_bf16_copy_from(fm_bf16_copy *c, const float *x, int reuse);

#endif
