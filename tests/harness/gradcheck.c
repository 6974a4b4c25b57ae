/* gradcheck.c - central-difference gradient checks. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/rng.h"

static int loss(const fm_gc_op *op, double *L, fm_err *e)
{
    FM_TRY(op->forward(op->ctx, e));
    double s = 0;
    for (long i = 0; i < op->out_n; i++)
        s += (double)op->out[i] * (double)op->dout[i];
    *L = s;
    return FM_OK;
}

int fm_gradcheck(const fm_gc_op *op, double eps, double tol, int max_checks, fm_err *e)
{
    fm_fill_normal(op->dout, op->out_n, 1234, 99, 0);
    FM_TRY(op->forward(op->ctx, e));
    FM_TRY(op->backward(op->ctx, e));
    float *ana[FM_GC_MAX_VARS] = { 0 };
    int rc = FM_OK;
    for (int v = 0; v < op->nvars; v++) {
        ana[v] = malloc((size_t)op->vars[v].n * sizeof(float));
        if (!ana[v]) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "gradcheck: out of memory");
            goto out;
        }
        memcpy(ana[v], op->vars[v].dx, (size_t)op->vars[v].n * sizeof(float));
    }
    for (int v = 0; v < op->nvars && rc == FM_OK; v++) {
        const fm_gc_var *var = &op->vars[v];
        double amax = 0;
        for (long i = 0; i < var->n; i++)
            amax = fmax(amax, fabs(ana[v][i]));
        double s = fmax(0.1 * amax, 1e-6);
        long step = var->n <= max_checks ? 1 : var->n / max_checks;
        double worst = 0;
        long worst_i = 0;
        double worst_a = 0, worst_n = 0;
        int checked = 0;
        for (long i = (step > 1 ? step / 2 : 0); i < var->n && checked < max_checks; i += step, checked++) {
            float x0 = var->x[i];
            double lp, lm;
            var->x[i] = x0 + (float)eps;
            if ((rc = loss(op, &lp, e)) != FM_OK)
                goto out;
            var->x[i] = x0 - (float)eps;
            if ((rc = loss(op, &lm, e)) != FM_OK)
                goto out;
            var->x[i] = x0;
            double num = (lp - lm) / (2 * eps), a = ana[v][i];
            double err = fabs(a - num) / fmax(fmax(fabs(a), fabs(num)), s);
            if (err > worst || isnan(err)) {
                worst = isnan(err) ? INFINITY : err;
                worst_i = i;
                worst_a = a;
                worst_n = num;
            }
        }
        fprintf(stderr, "  gradcheck %s d%s: %d entries, worst error %.2e at %ld (analytic %.6g, numeric %.6g), tol %.0e\n",
                op->name, var->name, checked, worst, worst_i, worst_a, worst_n, tol);
        if (!(worst <= tol))
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: d%s[%ld]: analytic %.6g vs numeric %.6g (error %.2e > %.0e)",
                         op->name, var->name, worst_i, worst_a, worst_n, worst, tol);
    }
out:
    for (int v = 0; v < op->nvars; v++)
        free(ana[v]);
    return rc;
}
