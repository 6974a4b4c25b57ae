/* classifier.h - the small CNN that scores generated images for `eval`.
 *
 * x [B, S, S, in_ch] (S = 32 by default), with w = cfg.width:
 *   features.0  conv3x3 in_ch -> w          features.1  GroupNorm (+ SiLU)   S x S
 *   features.3  conv3x3 s2 w -> 2w          features.4  GroupNorm (+ SiLU)   S/2
 *   features.6  conv3x3 s2 2w -> 4w         features.7  GroupNorm (+ SiLU)   S/4
 *   features.9  conv3x3 s2 4w -> 4w         features.10 GroupNorm (+ SiLU)   S/8
 *   head        linear (S/8)^2 * 4w -> num_classes logits, on the last map
 *               flattened in NHWC order (h, w, c)
 *   global average pool of the last map -> features [B, 4w] (the Frechet
 *               features; not on the path of the loss)
 * The flattened head keeps where things are (a collar, a heel), which the
 * pooled features lose: on Fashion-MNIST it lifts test accuracy by about a
 * point at the same cost. Convs have biases and padding 1; GroupNorm has
 * min(groups, C) groups and eps 1e-5. Parameter names are the state dict of
 * the twin, an nn.Sequential `features` (conv, GN, SiLU x 4) and a Linear
 * `head` (tests/parity/twin_classifier.py). Activations are fp32 NHWC. */
#ifndef FM_CLASSIFIER_H
#define FM_CLASSIFIER_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/conv.h"
#include "fm/dnn.h"
#include "fm/groupnorm.h"
#include "fm/linear.h"
#include "fm/params.h"
#include "fm/status.h"

#define FM_CLS_STAGES 4

typedef struct fm_classifier_cfg {
    int in_ch;        /* image channels (1) */
    int size;         /* image height = width (32) */
    int width;        /* channels of the first conv; then 2w, 4w, 4w (32) */
    int num_classes;  /* (10) */
    int groups;       /* GroupNorm groups, capped at C (8) */
} fm_classifier_cfg;

fm_classifier_cfg fm_classifier_cfg_default(void);

typedef struct fm_classifier {
    fm_classifier_cfg cfg;
    int n;                            /* batch size */
    int nfeat;                        /* feature width 4w */
    int hw[FM_CLS_STAGES], ch[FM_CLS_STAGES];  /* output size and channels of each stage */
    fm_arena arena;                   /* every buffer of this instance */
    fm_conv2d conv[FM_CLS_STAGES];
    fm_groupnorm norm[FM_CLS_STAGES]; /* with fused SiLU */
    fm_linear head;
    float *c[FM_CLS_STAGES];          /* conv outputs [n, hw, hw, ch] */
    float *h[FM_CLS_STAGES];          /* GroupNorm + SiLU outputs */
    float *features;                  /* [n, nfeat] */
    float *logits;                    /* [n, num_classes] */
    float *dlogits, *g[2];            /* backward buffers (train only) */
    int train;
} fm_classifier;

/* Build for batches of n: registers the parameters in p (PyTorch default
 * init), creates every primitive and allocates every buffer (from one arena,
 * sized exactly by running the same set-up on a measuring arena first,
 * arena.h). train = 0 skips the backward buffers. Bad configs give
 * FM_ERR_USAGE. */
int fm_classifier_init(fm_classifier *m, fm_dnn *d, fm_params *p, const fm_classifier_cfg *cfg, int n, int train,
                       fm_err *e);
/* Its arena bytes and padded parameter floats, measured without building it (sizing.h). */
int fm_classifier_measure(const fm_classifier_cfg *cfg, int n, int train, size_t *arena, size_t *params, fm_err *e);

/* x [n, S, S, in_ch] -> m->logits [n, num_classes] and m->features [n, 4w];
 * logits and features (either may be NULL) receive those pointers. */
int fm_classifier_forward(fm_classifier *m, const float *x, const float **logits, const float **features,
                          fm_err *e);

/* Mean cross-entropy of the last forward's logits against labels [n] (and the
 * number of correct argmax predictions when correct is non-NULL). */
int fm_classifier_loss(const fm_classifier *m, const int32_t *labels, double *loss, int *correct, fm_err *e);

/* Backward of that loss from the last forward on x: OVERWRITES every
 * parameter gradient. Needs train. */
int fm_classifier_backward(fm_classifier *m, const float *x, const int32_t *labels, fm_err *e);
/* Backward from a given gradient of the last forward's logits (dlogits
 * [n, num_classes]; may be m->dlogits): every parameter gradient is
 * OVERWRITTEN as above, and dx [n, S, S, in_ch] <- dL/dx unless dx is NULL
 * (the input gradient that classifier guidance needs). Needs train. */
int fm_classifier_backward_logits(fm_classifier *m, const float *x, const float *dlogits, float *dx, fm_err *e);

/* Forward + backward FLOPs of one step (convolutions and the head). */
double fm_classifier_flops(const fm_classifier *m);

/* Frees m and zeroes it; a zeroed m (never built, or after a failed init) is fine. */
void fm_classifier_free(fm_classifier *m);

#endif
