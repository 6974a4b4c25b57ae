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

/* Grad-ready hook: called during backward each time the gradients of
 * p->items[first .. +n) are final, e.g. fm_gradsync_ready (gradsync.h); a
 * non-OK status aborts backward with it. (fm_unet_grad_hook, fm_dit_grad_hook
 * are the same type.) */
typedef int (*fm_flow_grad_hook)(void *ctx, int first, int n, fm_err *e);

/* The model interface: a const table of functions that each architecture
 * fills (fm_unet_ops in unet.c, fm_dit_ops in dit.c); m is that
 * architecture's model (an fm_unet or fm_dit). The contracts are those of
 * the fm_flow_model_* functions below, plus:
 *   walk  visits every layer that times itself (profile.h) with its scope,
 *         name, kind and site pointer, in the order forward first calls them;
 *         layers inside a visited layer (attention's projections) are not
 *         visited: the outer one is timed as a whole. */
typedef struct fm_flow_model_ops {
    const char *name; /* "unet", "dit" */
    int (*forward)(void *m, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);
    int (*backward)(void *m, const float *dout, fm_err *e);
    void (*set_grad_hook)(void *m, fm_flow_grad_hook fn, void *ctx);
    void (*walk)(void *m, fm_prof_visit visit, void *ctx);
    double (*flops)(const void *m);
    size_t (*activation_bytes)(const void *m);
    void (*free)(void *m);
} fm_flow_model_ops;

extern const fm_flow_model_ops fm_unet_ops, fm_dit_ops;

typedef struct fm_flow_model {
    int kind; /* fm_flow_arch: selects the ops and the member of m */
    int side, ch, batch;
    long dim; /* side * side * ch: values per sample */
    union {
        fm_unet unet;
        fm_dit dit;
    } m;
    fm_profile *prof;       /* the attached table (fm_flow_model_set_profile), NULL = off */
    fm_flow_grad_hook hook; /* the caller's hook, called through a timing wrapper */
    void *hook_ctx;
} fm_flow_model;

/* Parameter tensors and floats (padded) the model of this cfg registers,
 * for sizing an fm_params. */
int fm_flow_model_size(const fm_flow_model_cfg *c, int *tensors, size_t *numel, size_t *count, fm_err *e);

/* The arena bytes and padded parameter floats of fm_flow_model_init at batch,
 * measured without building it (sizing.h). */
int fm_flow_model_measure(const fm_flow_model_cfg *c, int batch, size_t *arena, size_t *params, fm_err *e);

/* Register the parameters in p and build for batches of `batch`. */
int fm_flow_model_init(fm_flow_model *f, const fm_flow_model_cfg *c, fm_dnn *d, fm_params *p, int batch,
                       fm_err *e);
int fm_flow_model_forward(fm_flow_model *f, const float *x, const float *t, const int32_t *y, float *out, fm_err *e);
/* Overwrites every parameter gradient from dout = dL/du. */
int fm_flow_model_backward(fm_flow_model *f, const float *dout, fm_err *e);
/* Install the grad-ready hook (fm_flow_grad_hook); fn = NULL removes it. */
void fm_flow_model_set_grad_hook(fm_flow_model *f, fm_flow_grad_hook fn, void *ctx);
/* Time forward and backward into prof (profile.h; NULL = off, the default):
 * walks the model's layers and attaches each to its site in prof (detaches
 * them for NULL; setting the table already set does nothing). Each layer then
 * times its own calls; what the model does between layers (residual adds,
 * SiLU, concatenations, modulate, GELU, copies) is one entry per call, scope
 * "other", kind "elementwise": the call's wall time less the layers' (and
 * the grad hook's, "grad_hook", kind "hook"). Numerics are unchanged. The
 * table must stay until the model is detached (set NULL) or freed. */
void fm_flow_model_set_profile(fm_flow_model *f, fm_profile *prof);
/* Forward FLOPs of one batch. */
double fm_flow_model_flops(const fm_flow_model *f);
size_t fm_flow_model_activation_bytes(const fm_flow_model *f);
void fm_flow_model_free(fm_flow_model *f);

/* The velocity callback for samplers (include/fm/sampler.h); ctx is an
 * fm_flow_model built for n rows. */
int fm_flow_model_velocity(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u, fm_err *e);

#endif
