/* patch.h - patchify an NHWC map into DiT tokens and back.
 *
 * x [B, H, W, C] with H and W multiples of the patch side p ->
 * tokens [B, T, P], T = (H/p)(W/p), P = p*p*C:
 *   token (i, j) (patch row i, patch column j) is number i*(W/p) + j (row-major),
 *   its feature (dy, dx, ch) is number (dy*p + dx)*C + ch, i.e.
 *   tok[b, i*(W/p) + j, (dy*p + dx)*C + ch] = x[b, i*p + dy, j*p + dx, ch].
 * (In PyTorch on an NHWC tensor: x.reshape(B, H/p, p, W/p, p, C)
 *  .permute(0, 1, 3, 2, 4, 5).reshape(B, T, P).)
 * Both directions are permutations of the same values, so the backward of
 * patchify is unpatchify of the gradient and the backward of unpatchify is
 * patchify of the gradient. With p = 1 both are plain copies. */
#ifndef FM_PATCH_H
#define FM_PATCH_H

#include "fm/status.h"

/* FM_OK when h and w are positive multiples of p >= 1 and c >= 1, else
 * FM_ERR_USAGE naming the sizes. */
int fm_patch_check(int h, int w, int c, int p, fm_err *e);

/* tok [B, T, P] = patchify(x [B, H, W, C]). tok must not overlap x. */
void fm_patchify(const float *x, float *tok, int b, int h, int w, int c, int p);

/* x [B, H, W, C] = unpatchify(tok [B, T, P]), the inverse of fm_patchify.
 * x must not overlap tok. */
void fm_unpatchify(const float *tok, float *x, int b, int h, int w, int c, int p);

#endif
