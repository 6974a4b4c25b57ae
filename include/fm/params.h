/* params.h - all parameters of a model in one arena, with a table of named views.
 *
 * Values live in one contiguous fp32 block and gradients in a second block of
 * the same layout, so the optimiser, EMA, gradient allreduce and checkpoints
 * each make one pass over one array. Names follow the PyTorch state dict of
 * the model's twin (e.g. "down.1.res.0.conv1.weight"), and shapes keep PyTorch's
 * layouts, so a checkpoint maps 1:1 onto `model.load_state_dict`. */
#ifndef FM_PARAMS_H
#define FM_PARAMS_H

#include <stdint.h>

#include "fm/status.h"
#include "fm/tensor.h"

#define FM_PARAM_NAME 96

/* A run of an arena-shaped array: floats [off, off + count). */
typedef struct fm_span {
    size_t off, count;
} fm_span;

typedef struct fm_param {
    char name[FM_PARAM_NAME];
    fm_tensor w;      /* value view */
    fm_tensor g;      /* gradient view, same shape */
    size_t offset;    /* element offset of this tensor in data/grad */
} fm_param;

typedef struct fm_params {
    fm_param *items;
    int n, cap;
    float *data, *grad;  /* [numel] each, 64-byte aligned, every tensor 16-float aligned; NULL when counting */
    size_t numel, numel_cap;
    size_t values;       /* parameters registered: numel without the per-tensor padding */
    uint64_t seed;       /* for the initialisers */
} fm_params;

int fm_params_init(fm_params *p, int max_tensors, size_t max_numel, uint64_t seed, fm_err *e);

/* A counting table: fm_params_add registers names and shapes as on a real
 * table (n, numel and values count exactly what the same registrations take
 * there; a name registered twice is still an error) but holds no values:
 * every view's data is NULL and the initialisers below leave it alone. A
 * model's own init run on it sizes the real table (fm_params_init(n, numel)).
 * At most FM_PARAMS_COUNT_MAX tensors. */
#define FM_PARAMS_COUNT_MAX 32768
int fm_params_init_count(fm_params *p, fm_err *e);
static inline int fm_params_counting(const fm_params *p) { return p->data == NULL; }

void fm_params_free(fm_params *p);

/* Register a tensor named name (printf-style) of the given shape; returns the
 * new entry in *out. Values start at zero. */
int fm_params_add(fm_params *p, fm_param **out, int ndim, const int64_t *shape, fm_err *e,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

fm_param *fm_params_find(const fm_params *p, const char *name);

/* PyTorch's default initialisers, drawn from Philox keyed by (seed, name):
 * uniform(-bound, bound). On a counting table's views (data NULL) these and
 * fm_param_fill do nothing. */
void fm_param_init_uniform(const fm_params *p, fm_param *t, float bound);
/* N(0, std^2), keyed the same way (torch.nn.Embedding uses std = 1). */
void fm_param_init_normal(const fm_params *p, fm_param *t, float std);
void fm_param_fill(fm_param *t, float v);

void fm_params_zero_grad(fm_params *p);

#endif
