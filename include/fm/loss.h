/* loss.h - mean squared error, the flow-matching (and VAE reconstruction) loss.
 *
 * loss = mean over all n elements of (pred - target)^2, matching
 * F.mse_loss(pred, target) with reduction='mean'. Flat arrays, any shape. */
#ifndef FM_LOSS_H
#define FM_LOSS_H

/* Returns the loss. Squares are summed in double over fixed blocks in a fixed
 * order, so the value does not depend on the number of threads. */
double fm_mse_forward(const float *pred, const float *target, long n);

/* dpred[i] = scale * 2 (pred[i] - target[i]) / n, where scale is the upstream
 * gradient dL/dloss (1 for a plain loss). Overwrites dpred; dpred may equal
 * pred. */
void fm_mse_backward(const float *pred, const float *target, long n, float scale, float *dpred);

#endif
