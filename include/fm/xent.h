/* xent.h - softmax cross-entropy with integer labels, mean over the batch.
 *
 * logits [n, k], labels [n] in [0, k):
 *   loss = mean over rows i of (logsumexp(logits[i, :]) - logits[i, labels[i]])
 * matching F.cross_entropy(logits, labels) with reduction='mean'. Every row is
 * shifted by its maximum before exp, so extreme logits (|x| ~ 1e30) give
 * finite values; sums run in double. No saved state: backward recomputes the
 * softmax. */
#ifndef FM_XENT_H
#define FM_XENT_H

#include <stdint.h>

#include "fm/status.h"

/* *loss = the mean cross-entropy. When correct is non-NULL, *correct = the
 * number of rows whose argmax (first maximum) equals the label. A label
 * outside [0, k) is FM_ERR_DATA naming the row. */
int fm_xent_forward(const float *logits, const int32_t *labels, int n, int k, double *loss, int *correct,
                    fm_err *e);

/* dlogits[i, j] = scale * (softmax(logits[i, :])[j] - [j == labels[i]]) / n,
 * where scale is the upstream gradient dL/dloss (1 for a plain loss).
 * Overwrites dlogits; dlogits may equal logits. Labels as in forward. */
int fm_xent_backward(const float *logits, const int32_t *labels, int n, int k, float scale, float *dlogits,
                     fm_err *e);

#endif
