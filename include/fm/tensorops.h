/* tensorops.h - small elementwise helpers the model code composes: channel
 * concatenation, residual add, in-place accumulate/scale, per-(sample,
 * channel) broadcast add. All work on flat fp32 arrays; "rows" is the number of
 * pixels N*H*W (or tokens B*T) of an NHWC / [B, T, C] tensor. Large arrays are
 * split across OpenMP threads; results do not depend on the thread count. */
#ifndef FM_TENSOROPS_H
#define FM_TENSOROPS_H

/* y [rows, ca + cb] = cat(a [rows, ca], b [rows, cb]) along channels (a first,
 * like torch.cat((a, b), dim=1) on NCHW). y must not overlap a or b. */
void fm_concat_forward(const float *a, int ca, const float *b, int cb, float *y, long rows);

/* Split dy [rows, ca + cb] back: da [rows, ca], db [rows, cb]. Overwrites da
 * and db; either may be NULL (not needed). */
void fm_concat_backward(const float *dy, int ca, int cb, float *da, float *db, long rows);

/* y = a + b over n values. y may equal a or b. Its backward is da = db = dy
 * (use fm_add_backward, or pass dy on without a copy). */
void fm_add(const float *a, const float *b, float *y, long n);

/* da = dy and db = dy (copies); either may be NULL; either may equal dy. */
void fm_add_backward(const float *dy, float *da, float *db, long n);

/* y += x over n values (accumulate a gradient or a residual in place). */
void fm_acc(float *y, const float *x, long n);

/* y += alpha * x over n values. */
void fm_axpy(float *y, float alpha, const float *x, long n);

/* y *= s over n values. */
void fm_scale(float *y, float s, long n);

/* Broadcast add of a per-sample vector: y[i, p, c] += v[i, c] for
 * y [n, hw, c] (NHWC with hw = H*W), v [n, c]. */
void fm_add_nc(float *y, const float *v, int n, long hw, int c);

/* Its backward for v: dv[i, c] = sum over p of dy[i, p, c]. Overwrites dv
 * ([n, c]); sums are accumulated in double in a fixed order. */
void fm_add_nc_backward(const float *dy, float *dv, int n, long hw, int c);

#endif
