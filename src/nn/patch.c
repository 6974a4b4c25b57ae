/* patch.c - patchify / unpatchify between NHWC maps and DiT tokens (see patch.h). */
#include "fm/patch.h"

#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

int fm_patch_check(int h, int w, int c, int p, fm_err *e)
{
    if (p < 1 || h < 1 || w < 1 || c < 1 || h % p || w % p)
        return fm_fail(e, FM_ERR_USAGE, "patchify: a %dx%dx%d map does not split into %dx%d patches", h, w, c, p, p);
    return FM_OK;
}

/* Element offset in x [B, H, W, C] of row dy of token k (a run of p*C
 * contiguous floats, the same run as tok[k, dy*p*C ...]). */
static inline long map_offset(long k, int dy, int h, int w, int c, int p)
{
    const long hp = h / p, wp = w / p;
    const long s = k / (hp * wp), i = (k / wp) % hp, j = k % wp;
    return ((s * h + i * p + dy) * w + j * p) * c;
}

void fm_patchify(const float *x, float *tok, int b, int h, int w, int c, int p)
{
    const long pc = (long)p * c, n_tok = (long)b * (h / p) * (w / p);
#pragma omp parallel for schedule(static) if (n_tok * p * pc >= PAR_MIN)
    for (long k = 0; k < n_tok; k++)
        for (int dy = 0; dy < p; dy++)
            memcpy(tok + (k * p + dy) * pc, x + map_offset(k, dy, h, w, c, p), (size_t)pc * sizeof(float));
}

void fm_unpatchify(const float *tok, float *x, int b, int h, int w, int c, int p)
{
    const long pc = (long)p * c, n_tok = (long)b * (h / p) * (w / p);
#pragma omp parallel for schedule(static) if (n_tok * p * pc >= PAR_MIN)
    for (long k = 0; k < n_tok; k++)
        for (int dy = 0; dy < p; dy++)
            memcpy(x + map_offset(k, dy, h, w, c, p), tok + (k * p + dy) * pc, (size_t)pc * sizeof(float));
}
