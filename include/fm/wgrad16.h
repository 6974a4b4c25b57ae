/* wgrad16.h - bf16 weight gradients of a convolution on NHWC maps, by
 * AVX512-BF16 dot products over pairs of images.
 *
 * dW[o][c][ky][kx] = sum over n, i, j of dy[n][i][j][o] * x[n][i*s+ky-pt][j*s+kx-pl][c]
 * (taps outside x are zero). oneDNN 2.6's bf16 backward-weights kernel
 * (jit_bf16) runs at 300-390 GFLOP/s on the U-Net's 4x4 and 8x8 maps where
 * its forward runs at 470-520, and it multiplies the zero padding: 31 % of
 * the taps of a 3x3 convolution on a 4x4 map. This kernel pairs the sum over
 * n instead of over pixels: both operands are repacked so that images 2m and
 * 2m+1 of each pixel and channel are adjacent ("pair-packed": [ceil(N/2), H,
 * W, C, 2] bf16, the odd image of the last pair zero when N is odd), one
 * VDPBF16PS then adds the products of both images, and a tap only visits the
 * output pixels whose input pixel exists: no padding is multiplied. The
 * accumulation is fp32. Each register tile (6 output channels x 64 input
 * channels x one tap) is summed by one thread over the whole batch, so the
 * result does not depend on the thread count. A task (one tap, one block of
 * input channels, up to 16 tiles of output channels) walks the batch in
 * chunks of image pairs whose x block fits in L1 (24 KB) and runs every tile
 * on a chunk before the next, keeping the tiles' sums between chunks: the x
 * block is read from L1 by each tile instead of from L2 or L3 (20-40 % faster
 * on the U-Net's maps), and each sum adds its terms in the same order as one
 * pass over the whole batch, so the bits are the same.
 *
 * Needs AVX512-BF16 (fm_wgrad16_available) and Cin a multiple of 16; any
 * Cout, kernel size, stride and padding. */
#ifndef FM_WGRAD16_H
#define FM_WGRAD16_H

#include <stddef.h>
#include <stdint.h>

#include "fm/arena.h"
#include "fm/status.h"

typedef struct fm_wgrad16 {
    int64_t n, h, w, cin;      /* x [n, h, w, cin] */
    int64_t ho, wo, cout;      /* dy [n, ho, wo, cout] */
    int64_t kh, kw, stride;    /* kernel and stride */
    int64_t pad_t, pad_l;      /* zero padding before row 0 and column 0 */
} fm_wgrad16;

/* A layer's buffers for the kernel, from its arena: the pair-packed x, the
 * pair-packed dy of each of its ndy output maps (dy_len elements apart) and,
 * with a bias, the per-thread partial bias sums of fm_wgrad16_pack_f32.
 * xp NULL: the layer does not use the kernel. */
typedef struct fm_wgrad16_bufs {
    uint16_t *xp, *dyp;
    size_t dy_len;
    float *part;  /* [threads, Cout]; NULL without bias */
    int threads;
} fm_wgrad16_bufs;

/* Take b's buffers for geometry g (ndy output maps, bias or not) from a. */
int fm_wgrad16_bufs_init(fm_wgrad16_bufs *b, fm_arena *a, const fm_wgrad16 *g, int ndy, int bias, fm_err *e);

/* 1 when this CPU runs the kernel (AVX512-BF16) and g's shape suits it
 * (Cin % 16 == 0, sizes >= 1); else 0 (use oneDNN). */
int fm_wgrad16_usable(const fm_wgrad16 *g);

/* Elements (uint16_t) of a pair-packed map of n images of hw pixels and c channels. */
size_t fm_wgrad16_packed_len(int64_t n, int64_t hw, int64_t c);

/* Pair-pack bf16 NHWC src [n, hw, c] into dst. The pack and run functions
 * need the CPU fm_wgrad16_usable checks for. */
void fm_wgrad16_pack_bf16(uint16_t *dst, const uint16_t *src, int64_t n, int64_t hw, int64_t c);

/* Pair-pack fp32 NHWC src [n, hw, c] into dst, rounding to bf16 as
 * fm_f32_to_bf16 does; plain (may be NULL) also receives the plain NHWC
 * bf16 rounding of src (the operand of backward-data). With db (may be
 * NULL), ADD the fp32 column sums of src (over its n * hw rows: a bias
 * gradient) into db [c], through per-thread partial sums in part
 * ([threads, c] floats; at most `threads` threads run) added in thread
 * order, so the result is the same on every run with the same thread count. */
void fm_wgrad16_pack_f32(uint16_t *dst, uint16_t *plain, const float *src, int64_t n, int64_t hw, int64_t c,
                         float *db, float *part, int threads);

/* dw [Cout, Cin, kh, kw] (OIHW, overwritten) from pair-packed x (xp) and dy
 * (dyp). */
void fm_wgrad16_run(const fm_wgrad16 *g, const uint16_t *xp, const uint16_t *dyp, float *dw);

#endif
