/* flowmodel.h - the velocity model u_theta(x, t, y) of the flow stage, whichever
 * architecture its cfg names (U-Net or DiT; build.h makes the cfg from the run
 * configuration's flow.model, unet.* and dit.*). Both architectures take
 * x [B, side, side, ch] NHWC, t [B], y [B] (the null label is num_classes) and
 * give u of x's shape. */
#ifndef FM_FLOWMODEL_H
#define FM_FLOWMODEL_H

#include "fm/dit.h"
#include "fm/profile.h"
#include "fm/unet.h"

#define FM_NUM_CLASSES 10

typedef enum fm_flow_arch { FM_FLOW_UNET, FM_FLOW_DIT } fm_flow_arch;

/* The architecture and its configuration. */
typedef struct fm_flow_model_cfg {
    int kind;         /* fm_flow_arch */
    fm_unet_cfg unet; /* used when kind is FM_FLOW_UNET */
    fm_dit_cfg dit;   /* used when kind is FM_FLOW_DIT */
} fm_flow_model_cfg;

typedef struct fm_flow_model {
    int kind; /* fm_flow_arch */
    int side, ch, batch;
    long dim; /* side * side * ch: values per sample */
    union {
        fm_unet unet;
        fm_dit dit;
    } m;
} fm_flow_model;

/* Parameter tensors and floats (padded) the model of this cfg registers,
 * for sizing an fm_params. */
int fm_flow_model_size(const fm_flow_model_cfg *c, int *tensors, size_t *numel, size_t *count, fm_err *e);

/* Register the parameters in p and build for batches of `batch`. */
int fm_flow_model_init(fm_flow_model *f, const fm_flow_model_cfg *c, fm_dnn *d, fm_params *p, int batch,
                       fm_err *e);
int fm_flow_model_forward(fm_flow_model *f, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);
/* Overwrites every parameter gradient from dout = dL/du. */
int fm_flow_model_backward(fm_flow_model *f, const float *dout, fm_err *e);
/* Grad-ready hook (the type of fm_unet_grad_hook and fm_dit_grad_hook):
 * called during backward each time the gradients of p->items[first .. +n)
 * are final, e.g. fm_gradsync_ready (gradsync.h). fn = NULL removes it. */
typedef int (*fm_flow_grad_hook)(void *ctx, int first, int n, fm_err *e);
void fm_flow_model_set_grad_hook(fm_flow_model *f, fm_flow_grad_hook fn, void *ctx);
/* Time every layer call of forward and backward into prof (NULL = off, the
 * default): fm_unet_set_profile or fm_dit_set_profile (profile.h). Numerics
 * are unchanged; the table must outlive its use. */
void fm_flow_model_set_profile(fm_flow_model *f, fm_profile *prof);
/* Forward FLOPs of one batch. */
double fm_flow_model_flops(const fm_flow_model *f);
size_t fm_flow_model_activation_bytes(const fm_flow_model *f);
void fm_flow_model_free(fm_flow_model *f);

/* The velocity callback for samplers (include/fm/sampler.h); ctx is an
 * fm_flow_model built for n rows. */
int fm_flow_model_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e);

#endif
