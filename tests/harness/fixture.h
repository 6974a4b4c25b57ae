/* fixture.h - the shared pieces of a test that checks a fast layer (or model)
 * against a naive reference: an engine/parameter/arena set-up, activations
 * drawn from the project RNG, the comparison of every output and gradient
 * with a tolerance, the finite-difference check of every input and
 * parameter, and the timing loop behind the printed (never asserted) times.
 *
 * A layer under test is an fm_fx_layer: x -> y through forward, dy -> dx and
 * the parameter gradients through backward, and a naive reference that
 * computes the same y, dx and parameter gradients. fm_fx_check and its
 * variants poison everything the layer must write, run it, and compare; each
 * returns 0 when every compared array is within tol (max relative error, see
 * fm_rel_err with floor 1e-12) and prints one line of errors to stderr, plus
 * a line naming what is above tol when something is. */
#ifndef FM_FIXTURE_H
#define FM_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "fm/arena.h"
#include "fm/dnn.h"
#include "fm/params.h"
#include "fm/status.h"

#define FM_FX_MAX_PARAMS 8

/* ---- buffers ---- */

/* n floats ~ N(0, sd^2) from Philox (seed, stream); NULL when out of memory. */
float *fm_fx_randn(int64_t n, uint64_t seed, uint64_t stream, float sd);
/* n zero floats; NULL when out of memory. */
float *fm_fx_zeros(int64_t n);
void fm_fx_fill(float *x, int64_t n, float v);
/* x[i] = its bf16 rounding, back in fp32 (what a bf16 operand holds). */
void fm_fx_round_bf16(float *x, int64_t n);
/* oneDNN's name of p's implementation ("none" for no primitive). */
const char *fm_fx_impl(dnnl_primitive_t p);
/* Elements of all tensors of p. */
long fm_fx_param_count(const fm_params *p);

/* ---- set-up ---- */

/* One engine (bf16 operands when bf16), one parameter table
 * (fm_params_init(max_tensors, max_numel, seed)) and, when arena_bytes > 0,
 * one arena. fm_fx_env_free frees what was made (also after a failed init,
 * if v was zeroed by init). */
typedef struct fm_fx_env {
    fm_dnn d;
    fm_params p;
    fm_arena a;
} fm_fx_env;

int fm_fx_env_init(fm_fx_env *v, int bf16, int max_tensors, size_t max_numel, uint64_t seed, size_t arena_bytes,
                   fm_err *e);
void fm_fx_env_free(fm_fx_env *v);

/* Activations of one layer: x [nx] ~ N(0, 1) from (seed, stream 1), dy [ny]
 * ~ N(0, 1) from (seed, stream 2), y [ny] and dx [nx] zero. */
typedef struct fm_fx_io {
    float *x, *y, *dy, *dx;
    int64_t nx, ny;
} fm_fx_io;

int fm_fx_io_init(fm_fx_io *io, int64_t nx, int64_t ny, uint64_t seed, fm_err *e);
void fm_fx_io_free(fm_fx_io *io);

/* ---- comparison ---- */

typedef struct fm_fx_cmp {
    const char *name;
    const float *got, *want; /* got NULL: not compared (e.g. no bias) */
    int64_t n;
} fm_fx_cmp;

/* Prints "  LABEL: rel err NAME e NAME e ..." to stderr; returns 0 when
 * every error is <= tol, else 1 after a line naming the worst array. */
int fm_fx_compare(const char *label, double tol, const fm_fx_cmp *c, int n);

/* ---- a layer against its naive reference ---- */

typedef struct fm_fx_layer {
    const char *label;
    void *ctx;
    fm_fx_io *io;
    int (*forward)(void *ctx, const float *x, float *y, fm_err *e);
    /* dx may be NULL (parameter gradients only) or alias x or dy when the layer allows it */
    int (*backward)(void *ctx, const float *x, const float *dy, float *dx, fm_err *e);
    /* y, dx and dparams[i] (the gradient of params[i]) of the current
     * parameter values, x and dy; in double, written in fp32 */
    void (*reference)(void *ctx, const float *x, const float *dy, float *y, float *dx, float *const *dparams);
    fm_param *params[FM_FX_MAX_PARAMS]; /* the ones whose gradients are checked, in reference order */
    int nparams;
    float poison; /* what dx and the parameter gradients hold before backward: they must be overwritten */
} fm_fx_layer;

/* The reference results of the last fm_fx_check. */
typedef struct fm_fx_ref {
    float *y, *dx, *dp[FM_FX_MAX_PARAMS];
} fm_fx_ref;

int fm_fx_ref_init(fm_fx_ref *r, const fm_fx_layer *l);
void fm_fx_ref_free(fm_fx_ref *r);

/* forward and backward (y NaN, dx and gradients l->poison before) against
 * the reference, which is recomputed into r: y, dx and every gradient. */
int fm_fx_check(const fm_fx_layer *l, fm_fx_ref *r, double tol, const char *label);
/* backward with dx = NULL after fm_fx_check: every parameter gradient (from
 * l->poison) equals r's, and the dx buffer (set to 7) is untouched. */
int fm_fx_check_no_dx(const fm_fx_layer *l, const fm_fx_ref *r, double tol);
/* backward with dx = x (alias_dy 0) or dx = dy (alias_dy 1) after
 * fm_fx_check: that buffer then equals r's dx, and every gradient r's.
 * The aliased input is overwritten: call it last. */
int fm_fx_check_alias(const fm_fx_layer *l, const fm_fx_ref *r, double tol, int alias_dy);
/* New parameter values between two fm_fx_check calls (forward must see the
 * current weights): every matrix or kernel w[i] = -0.5 w[i] + 0.01 (i % 7),
 * every vector b[i] = 0.1 i. */
void fm_fx_reweight(const fm_fx_layer *l);

/* fm_fx_check ("LABEL round 0"), fm_fx_reweight, fm_fx_check again ("LABEL
 * round 1": forward must see the current weights), then fm_fx_check_no_dx. */
int fm_fx_check_reweighted(const fm_fx_layer *l, double tol);

/* fm_gradcheck of l on its io: the variables x and every parameter. */
int fm_fx_gradcheck(const fm_fx_layer *l, double eps, double tol, int max_checks, fm_err *e);

/* ---- a model's scalar loss ---- */

/* The training loss of a model as the output of a gradient check: out[0] =
 * loss - ref (ref = the loss at the start, so that out keeps fp32
 * precision), and backward scales p's gradient by dout[0]. */
typedef struct fm_fx_loss {
    const char *name;
    void *ctx;
    int (*loss)(void *ctx, double *l, fm_err *e); /* forward and loss at the current parameters */
    int (*backward)(void *ctx, fm_err *e);        /* p's gradient (overwritten) of that loss */
    fm_params *p;
    double ref;
    float out[1], dout[1];
} fm_fx_loss;

/* fm_gradcheck of m's loss in the parameters of p named in vars (a missing
 * name is an error), after one call of m->loss that sets m->ref. */
int fm_fx_gradcheck_loss(fm_fx_loss *m, const char *const *vars, int nvars, double eps, double tol, int max_checks,
                         fm_err *e);

/* ---- timing (printed, never asserted) ---- */

/* Seconds over the reps after warm: mean forward, mean backward, the
 * fastest forward and the fastest forward + backward. */
typedef struct fm_fx_times {
    double fwd, bwd, fwd_best, best;
} fm_fx_times;

/* forward(ctx) then backward(ctx) (NULL: none) warm + reps times; stops at
 * the first error. */
int fm_fx_time(int (*forward)(void *ctx, fm_err *e), int (*backward)(void *ctx, fm_err *e), void *ctx, int warm,
               int reps, fm_fx_times *t, fm_err *e);
/* The same for a layer on its io (x -> y, dy -> dx). */
int fm_fx_time_layer(const fm_fx_layer *l, int warm, int reps, fm_fx_times *t, fm_err *e);

#endif
