/* guide.h - the noise-conditioned latent classifier of classifier guidance.
 *
 * p_t(y | x_t) on latents x_t [n, S, S, C] at flow time t: the sinusoidal
 * time embedding of t (embed.h, width time_dim, scale FM_GUIDE_T_SCALE) is
 * broadcast over the S x S positions and concatenated to the latent's
 * channels, and the eval CNN of classifier.h (in_ch = C + time_dim) maps that
 * to num_classes logits. Parameters are the CNN's ("features.*", "head.*").
 *
 * Training: fm_guide_forward, fm_guide_loss, fm_guide_backward (the mean
 * cross-entropy's parameter gradients). Guidance: fm_guide_grad_logp gives
 * grad_x log softmax(f(x, t))_y per row through the CNN's input gradient. */
#ifndef FM_GUIDE_H
#define FM_GUIDE_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/classifier.h"
#include "fm/dnn.h"
#include "fm/embed.h"
#include "fm/params.h"
#include "fm/status.h"

#define FM_GUIDE_T_SCALE 1000.0

typedef struct fm_guide_cfg {
    int channels;    /* latent channels C */
    int size;        /* latent height = width S (>= 8) */
    int width;       /* first conv's channels; then 2w, 4w, 4w */
    int time_dim;    /* time-embedding channels (even, >= 2) */
    int num_classes; /* 10 */
    int groups;      /* GroupNorm groups, capped at the channels */
} fm_guide_cfg;

typedef struct fm_guide {
    fm_guide_cfg cfg;
    int n;
    long cin;             /* C + time_dim */
    fm_classifier cls;    /* the CNN on [n, S, S, cin] */
    fm_time_embed temb;
    fm_arena arena;       /* the buffers below */
    float *in;            /* [n, S, S, cin] the CNN's input of the last forward */
    float *tf;            /* [n, time_dim] */
    float *din;           /* [n, S, S, cin] its input gradient */
    float *dlogits;       /* [n, num_classes] */
} fm_guide;

/* Build for batches of n (parameters registered in p); train = 0 builds no
 * backward at all (then fm_guide_grad_logp is unavailable). */
int fm_guide_init(fm_guide *g, fm_dnn *d, fm_params *p, const fm_guide_cfg *cfg, int n, int train, fm_err *e);
void fm_guide_free(fm_guide *g);
/* Arena bytes and padded parameter floats of a training instance, measured (sizing.h). */
int fm_guide_measure(const fm_guide_cfg *cfg, int n, size_t *arena, size_t *params, fm_err *e);

/* x [n, S, S, C], t [n] -> *logits [n, num_classes] (g's buffer). */
int fm_guide_forward(fm_guide *g, const float *x, const float *t, const float **logits, fm_err *e);
/* Mean cross-entropy of the last forward against labels (and correct count). */
int fm_guide_loss(const fm_guide *g, const int32_t *labels, double *loss, int *correct, fm_err *e);
/* That loss's parameter gradients (overwritten) from the last forward. */
int fm_guide_backward(fm_guide *g, const int32_t *labels, fm_err *e);

/* grad [n, S, S, C] <- grad_x log softmax(f(x, t))_{y_i} for each row i;
 * rows whose label is outside [0, num_classes) (the null label) get 0.
 * logp (may be NULL) [n] <- log softmax(f)_{y_i} (0 for those rows).
 * Runs a forward and a backward (the parameter gradients are overwritten). */
int fm_guide_grad_logp(fm_guide *g, const float *x, const float *t, const int32_t *y, float *grad, float *logp,
                       fm_err *e);

#endif
