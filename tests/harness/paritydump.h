/* paritydump.h - what the C dumpers of the PyTorch parity tests
 * (tests/models/parity_*.c, read by tests/parity/fmparity.py) share: a list of
 * named F32 tensors copied into one arena, written as one safetensors file
 * with the parameter order as metadata. */
#ifndef FM_PARITYDUMP_H
#define FM_PARITYDUMP_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/params.h"
#include "fm/safetensors.h"
#include "fm/status.h"

#define FM_PDUMP_MAX 64

typedef struct fm_pdump {
    const char *who; /* the dumper's name, for messages */
    fm_st_tensor t[FM_PDUMP_MAX];
    int n;
    char *order;     /* "name,name,...": the parameter order (fm_pdump_params) */
    fm_arena a;
} fm_pdump;

/* Zeroed d with an arena of `bytes`. */
int fm_pdump_init(fm_pdump *d, const char *who, size_t bytes, fm_err *e);
void fm_pdump_free(fm_pdump *d);
/* Record a copy of the floats at src [shape] under a copy of name. */
int fm_pdump_put(fm_pdump *d, const char *name, const float *src, int ndim, const int64_t *shape, fm_err *e);
/* Every parameter of p under its name, its gradient under "grad.<name>",
 * and d->order. */
int fm_pdump_params(fm_pdump *d, const fm_params *p, fm_err *e);
/* The eval CNN's GroupNorm affine parameters (features.{1,4,7,10}) moved off
 * their 1/0 init: 1 (weight) or 0 (bias) + 0.3 N(0, 1) from (seed, 1000 + i). */
void fm_pdump_perturb_norms(fm_params *p, uint64_t seed);
/* The file at path (metadata param_order). */
int fm_pdump_write(const fm_pdump *d, const char *path, fm_err *e);

#endif
