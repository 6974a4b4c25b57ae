/* path.h - Gaussian probability paths, time sampling and the CFM training batch.
 *
 * Convention (DESIGN.md §2): time runs from noise t = 0 to data t = 1.
 * Conditional path p_t(x|z) = N(alpha_t z, beta_t^2 I), alpha_0 = beta_1 = 0,
 * alpha_1 = beta_0 = 1:
 *   linear (rectified flow / CondOT): alpha_t = t,           beta_t = 1 - t
 *   cosine:                          alpha_t = sin(pi t/2),  beta_t = cos(pi t/2)
 * Training pair: x_t = alpha_t z + beta_t eps, target u = dalpha_t z + dbeta_t eps.
 *
 * Random numbers (Philox, include/fm/rng.h) are pure functions of
 * (seed, stream, index), with
 *   stream = FM_FLOW_STREAM_BASE + step * FM_FLOW_NPURPOSE + purpose
 *   purpose FM_FLOW_TIME:  t of row i          at index gidx[i]
 *   purpose FM_FLOW_NOISE: eps of row i, elem j at index gidx[i] * D + j
 *   purpose FM_FLOW_DROP:  CFG label dropout    at index gidx[i]
 * where gidx[i] is the row's global sample index (include/fm/loader.h). Nothing
 * depends on the rank count or on how a batch is split, and a resumed run
 * redraws exactly the same numbers from (seed, step, gidx). */
#ifndef FM_PATH_H
#define FM_PATH_H

#include <stdint.h>

#include "fm/status.h"

typedef enum fm_path_kind { FM_PATH_LINEAR = 0, FM_PATH_COSINE = 1 } fm_path_kind;

/* The four path coefficients at one time. */
typedef struct fm_path_coef {
    double alpha, beta;   /* alpha_t, beta_t */
    double dalpha, dbeta; /* their time derivatives */
} fm_path_coef;

double fm_path_alpha(fm_path_kind k, double t);
double fm_path_beta(fm_path_kind k, double t);
double fm_path_dalpha(fm_path_kind k, double t);
double fm_path_dbeta(fm_path_kind k, double t);
fm_path_coef fm_path_coefs(fm_path_kind k, double t);

/* gamma_t = dalpha beta - dbeta alpha (> 0 on [0, 1]: 1 for linear, pi/2 for
 * cosine). The score denominator of DESIGN.md §2 is
 * dalpha beta^2 - dbeta beta alpha = beta_t * gamma_t. */
double fm_path_gamma(fm_path_kind k, double t);

/* "linear" / "cosine" (the config reads flow.path by its own table). */
const char *fm_path_name(fm_path_kind k);

/* x_t = alpha_t z + beta_t eps and u = dalpha_t z + dbeta_t eps for one row
 * at time t: z, eps, xt, u [d]. */
void fm_path_interp(fm_path_kind k, double t, const float *z, const float *eps, long d, float *xt, float *u);

/* The score of the marginal p_t from its velocity, for Gaussian paths:
 * s = (u - a x)/b with a = dalpha/alpha, b = (dalpha beta^2 - dbeta beta alpha)/alpha,
 * written s = (alpha u - dalpha x) / (beta gamma): finite at t = 0 (s = -x there),
 * singular only at t = 1 (beta = 0). x, u, s [n]. Requires t < 1. */
void fm_path_score(fm_path_kind k, double t, const float *x, const float *u, long n, float *s);

/* ---- time sampling ---- */

typedef enum fm_time_kind { FM_TIME_UNIFORM = 0, FM_TIME_LOGIT_NORMAL = 1 } fm_time_kind;

typedef struct fm_time_dist {
    fm_time_kind kind;
    float m, s; /* logit-normal: t = sigmoid(m + s n), n ~ N(0, 1) */
} fm_time_dist;

/* "uniform" / "logit_normal" (the config reads flow.t_dist by its own table). */
const char *fm_time_name(fm_time_kind k);

/* Philox streams of the flow stage (see the top of this file). */
#define FM_FLOW_STREAM_BASE 0x464c4f5700000000ull /* "FLOW" */
enum { FM_FLOW_TIME = 0, FM_FLOW_NOISE = 1, FM_FLOW_DROP = 2, FM_FLOW_NPURPOSE = 4 };
static inline uint64_t fm_flow_stream(uint64_t step, int purpose)
{
    return FM_FLOW_STREAM_BASE + step * FM_FLOW_NPURPOSE + (uint64_t)purpose;
}

/* t of one sample: uniform in [0, 1) or logit-normal in (0, 1) (it may round
 * to 0 or 1 in float for extreme draws). */
float fm_time_draw(const fm_time_dist *d, uint64_t seed, uint64_t step, uint64_t gidx);

/* t[i] = fm_time_draw(d, seed, step, gidx[i]) for i < n. */
void fm_time_sample(const fm_time_dist *d, uint64_t seed, uint64_t step, const uint64_t *gidx, int n, float *t);

/* ---- CFM training batch ---- */

typedef struct fm_cfm_cfg {
    fm_path_kind path;
    fm_time_dist time;
    float cfg_dropout; /* eta: probability that y is replaced by the null label */
    int num_classes;   /* the null label is num_classes */
    int target;        /* fm_target_kind (target.h): what u holds; 0 = the velocity */
} fm_cfm_cfg;

/* Build the guided CFM batch of B rows of D values, no allocation:
 *   in:  z [B, D] clean data, y [B] labels in [0, num_classes) (NULL: all null),
 *        gidx [B] global sample indices of the rows, seed, step
 *   out: t [B], xt [B, D] = alpha_t z + beta_t eps, u [B, D] = dalpha_t z + dbeta_t eps
 *        (or the target of c->target: fm_target_of_pair),
 *        y_out [B]: y, or num_classes with probability cfg_dropout (y_out may be y).
 * eps ~ N(0, I), t and the dropout draw follow the stream layout at the top of
 * this file, so row i depends only on (seed, step, gidx[i], z[i], y[i]).
 * Fails (FM_ERR_DATA) on a label outside [0, num_classes], FM_ERR_USAGE on a bad cfg. */
int fm_cfm_batch(const fm_cfm_cfg *c, const float *z, const int32_t *y, const uint64_t *gidx, int B, long D,
                 uint64_t seed, uint64_t step, float *t, float *xt, float *u, int32_t *y_out, fm_err *e);

/* The same batch on given couplings (reflow): pairs [B, 2D], row i the sample
 * z = x1 (D values) then its noise eps = x0 (D values); t and the label
 * dropout are drawn as by fm_cfm_batch, nothing else. */
int fm_cfm_pairs(const fm_cfm_cfg *c, const float *pairs, const int32_t *y, const uint64_t *gidx, int B, long D,
                 uint64_t seed, uint64_t step, float *t, float *xt, float *u, int32_t *y_out, fm_err *e);

#endif
