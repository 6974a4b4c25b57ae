/* xent.c - softmax cross-entropy forward and backward (see xent.h). */
#include "fm/xent.h"

#include <math.h>

static int check_labels(const int32_t *labels, int n, int k, fm_err *e)
{
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return fm_fail(e, FM_ERR_DATA, "cross-entropy: label %d of row %d is outside [0, %d)", (int)labels[i],
                           i, k);
    return FM_OK;
}

/* Row maximum (first index of it in *arg) and log sum exp(x - max), in double. */
static double row_lse(const float *x, int k, double *max, int *arg)
{
    int a = 0;
    for (int j = 1; j < k; j++)
        if (x[j] > x[a])
            a = j;
    double m = x[a], s = 0;
    for (int j = 0; j < k; j++)
        s += exp((double)x[j] - m);  /* every term in (0, 1], the max term is 1 */
    *max = m;
    *arg = a;
    return log(s);
}

int fm_xent_forward(const float *logits, const int32_t *labels, int n, int k, double *loss, int *correct,
                    fm_err *e)
{
    if (n <= 0 || k <= 0)
        return fm_fail(e, FM_ERR_INTERNAL, "cross-entropy: bad shape [%d, %d]", n, k);
    FM_TRY(check_labels(labels, n, k, e));
    double sum = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *x = logits + (long)i * k;  // [k]
        double m;
        int arg;
        double lse = row_lse(x, k, &m, &arg);
        sum += lse - ((double)x[labels[i]] - m);  /* -log softmax[label], >= 0 */
        hits += arg == labels[i];
    }
    *loss = sum / n;
    if (correct)
        *correct = hits;
    return FM_OK;
}

int fm_xent_backward(const float *logits, const int32_t *labels, int n, int k, float scale, float *dlogits,
                     fm_err *e)
{
    if (n <= 0 || k <= 0)
        return fm_fail(e, FM_ERR_INTERNAL, "cross-entropy: bad shape [%d, %d]", n, k);
    FM_TRY(check_labels(labels, n, k, e));
    const double g = (double)scale / n;
    for (int i = 0; i < n; i++) {
        const float *x = logits + (long)i * k;  // [k]
        float *d = dlogits + (long)i * k;        // [k], may equal x
        double m;
        int arg;
        double lse = row_lse(x, k, &m, &arg);
        for (int j = 0; j < k; j++) {
            double p = exp((double)x[j] - m - lse);
            d[j] = (float)(g * (p - (j == labels[i])));
        }
    }
    return FM_OK;
}
