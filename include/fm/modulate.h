/* modulate.h - the adaLN helpers of a DiT block, over tokens [B, T, C]:
 *
 *   modulate:        y[b, t, :] = x[b, t, :] * (1 + scale[b, :]) + shift[b, :]
 *   gated residual:  y[b, t, :] = x[b, t, :] + gate[b, :] * h[b, t, :]
 *
 * The per-sample vectors are rows of a larger matrix: the adaLN linear writes
 * (shift, scale, gate, ...) side by side in one [B, k*C] output, so row b of a
 * vector starts at v + b*ld (ld = k*C; ld = C for a plain [B, C] array). Their
 * gradients are written the same way, into the matching rows of the gradient
 * of that output.
 *
 * Backward sums over the T tokens of each sample run in a fixed order (in
 * double), so results do not depend on the thread count. No parameters and no
 * saved state: plain functions. */
#ifndef FM_MODULATE_H
#define FM_MODULATE_H

/* y [B, T, C] = x * (1 + scale[b]) + shift[b]. y may equal x. */
void fm_modulate_forward(const float *x, const float *shift, const float *scale, long ld, float *y, int b, long t,
                         int c);

/* Given the forward input x and dy [B, T, C]: OVERWRITE dshift[b, :] = sum_t dy,
 * dscale[b, :] = sum_t dy * x (rows at stride ld) and dx = dy * (1 + scale[b])
 * (skipped when dx is NULL; dx may equal dy or x). */
void fm_modulate_backward(const float *x, const float *scale, const float *dy, long ld, float *dx, float *dshift,
                          float *dscale, int b, long t, int c);

/* y [B, T, C] = x + gate[b] * h. y may equal x (the residual stream updated
 * in place); it must not overlap h unless equal to it. */
void fm_gate_residual_forward(const float *x, const float *gate, long ld, const float *h, float *y, int b, long t,
                              int c);

/* Given h (the forward's branch input) and dy [B, T, C]: OVERWRITE
 * dgate[b, :] = sum_t dy * h (rows at stride ld) and dh = dy * gate[b]
 * (skipped when dh is NULL; dh may equal dy or h). The gradient of x is dy
 * itself (the identity path): the caller passes dy on. */
void fm_gate_residual_backward(const float *h, const float *gate, long ld, const float *dy, float *dh, float *dgate,
                               int b, long t, int c);

#endif
