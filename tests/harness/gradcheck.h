/* gradcheck.h - one finite-difference gradient checker every layer registers with.
 *
 * The checker draws a fixed random R shaped like the op's output, takes the
 * scalar L = sum(out * R) (accumulated in double), runs forward + backward
 * with dout = R, and compares each variable's analytic dL/dx against the
 * central difference (L(x+eps) - L(x-eps)) / 2eps at up to max_checks
 * entries per variable (all of them when the variable is small).
 *
 * Error per entry: |analytic - numeric| / max(|analytic|, |numeric|, s), where
 * s = 0.1 * max|analytic| over the variable keeps near-zero entries from
 * dividing by nothing. The check passes when the worst entry is <= tol. */
#ifndef FM_GRADCHECK_H
#define FM_GRADCHECK_H

#include "fm/status.h"

#define FM_GC_MAX_VARS 12

typedef struct fm_gc_var {
    const char *name;
    float *x;   /* the variable (perturbed in place, restored after) */
    float *dx;  /* where backward writes dL/dx */
    long n;
} fm_gc_var;

typedef struct fm_gc_op {
    const char *name;
    void *ctx;
    int (*forward)(void *ctx, fm_err *e);  /* reads the vars, writes out */
    int (*backward)(void *ctx, fm_err *e); /* reads dout, writes every var's dx */
    float *out, *dout;
    long out_n;
    fm_gc_var vars[FM_GC_MAX_VARS];
    int nvars;
} fm_gc_op;

/* Returns FM_OK if every variable passes; otherwise FM_ERR_INTERNAL with the
 * worst entry in e. Prints one line per variable to stderr. */
int fm_gradcheck(const fm_gc_op *op, double eps, double tol, int max_checks, fm_err *e);

#endif
