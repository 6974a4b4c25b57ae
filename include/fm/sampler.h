/* sampler.h - ODE/SDE samplers with classifier-free guidance, model-agnostic.
 *
 * Integrates from noise x_0 ~ N(0, I) at t = 0 to a sample at t = 1 on the
 * uniform grid t_k = k/steps, h = 1/steps, with the guided velocity
 *   u~(x, t | y) = (1 - w) u(x, t | null) + w u(x, t | y)
 * (w = 1: conditional, w = 0: unconditional, w > 1: pushed towards class y
 * and away from the others). Both branches run as ONE model call on 2B rows:
 * rows [0, B) are x with labels y, rows [B, 2B) the same x with the null
 * label. The callback is called with n = 2B (a fixed shape), except with
 * half_calls: where the weight w(t) below is exactly 1 or 0 only the branch
 * that counts runs, as one call on n = B rows (labels y, or null for w = 0).
 *
 * Guidance interval and schedule: the weight used at time t is
 *   w(t) = 1                           for t outside [cfg_lo, cfg_hi] (cfg_interval set)
 *   w(t) = 1 + (w - 1) ramp(r)         inside, r = (t - lo) / (hi - lo) (1 if hi = lo),
 * with ramp = 1 (constant), r (linear) or (1 - cos(pi r)) / 2 (cosine), and
 * lo, hi = 0, 1 without an interval: guidance grows from none at lo to w at hi.
 * Constant without an interval (the zero default) is w everywhere.
 *
 * Targets (target.h): the model predicts cfg.target; the guided prediction
 * is converted to the velocity with the path's coefficients, the model being
 * evaluated at fm_target_time(target, t) (t itself for velocity and v).
 *
 * With cfg.cguide (cguide.h) every evaluation adds s c(t) grad_x log p_t(y | x)
 * from a noise-conditioned classifier to u~ (classifier guidance, with CFG).
 *
 * Kinds (NFE = model calls of 2B rows):
 *   euler: x += h u~(x, t_k)                                            NFE = steps
 *   heun:  k1 = u~(x, t_k), xp = x + h k1, k2 = u~(xp, t_{k+1}),
 *          x += h/2 (k1 + k2)  (2nd order; with heun_euler_last the last
 *          step is plain Euler, so t = 1 is never evaluated)           NFE = 2 steps (- 1)
 *   sde:   Euler-Maruyama for dX = [u~ + sigma_t^2/2 s~] dt + sigma_t dW,
 *          with the score from the velocity (Gaussian paths, fm_path_score)
 *          s~ = (alpha u~ - dalpha x) / (beta gamma), gamma = dalpha beta - dbeta alpha,
 *          and sigma_t = sde_sigma * beta_t. This choice makes the drift
 *          correction sigma_t^2/2 s~ = sde_sigma^2 beta (alpha u~ - dalpha x) / (2 gamma)
 *          finite on all of [0, 1] (the score alone blows up like 1/beta at
 *          t = 1) and turns the noise off as t -> 1. Per step:
 *          x += h [u~ + sigma_t^2/2 s~](x, t_k) + sigma_{t_k} sqrt(h) xi_k   NFE = steps
 *          For the exact velocity every sde_sigma >= 0 gives the same
 *          marginals p_t as the ODE; sde_sigma = 0 is Euler.
 *
 * Random numbers (Philox): sample i of the run has global index g = first + i;
 *   initial noise x_0[i, j]: stream FM_SAMPLE_STREAM_BASE,         index g * D + j
 *   SDE noise xi_k[i, j]:   stream FM_SAMPLE_STREAM_BASE + 1 + k, index g * D + j
 * so samples split across ranks (different `first`) reproduce a single run. */
#ifndef FM_SAMPLER_H
#define FM_SAMPLER_H

#include <stdint.h>

#include "fm/path.h"
#include "fm/status.h"

/* The model: u [n, D] = u_theta(x [n, D], t [n], y [n]); returns FM_OK or fills e. */
typedef int (*fm_velocity_fn)(void *ctx, const float *x, const float *t, const int32_t *y, int n, float *u,
                              fm_err *e);

typedef enum fm_sampler_kind { FM_SAMPLER_EULER = 0, FM_SAMPLER_HEUN = 1, FM_SAMPLER_SDE = 2 } fm_sampler_kind;

typedef enum fm_cfg_schedule { FM_CFG_CONSTANT = 0, FM_CFG_LINEAR = 1, FM_CFG_COSINE = 2 } fm_cfg_schedule;

typedef struct fm_sampler_cfg {
    fm_sampler_kind kind;
    fm_path_kind path;
    int steps;           /* >= 1 */
    float sde_sigma;     /* sde: sigma_t = sde_sigma * beta_t, >= 0 */
    int heun_euler_last; /* heun: make the last step Euler (no evaluation at t = 1) */
    int null_label;      /* the null label (= num_classes) */
    const struct fm_cguide *cguide; /* classifier guidance (cguide.h) added to u~ at every evaluation; NULL = off */
    int target;          /* fm_target_kind (target.h): what the model predicts; 0 = velocity */
    int cfg_interval;    /* guidance only for t in [cfg_lo, cfg_hi] (w = 1 outside); 0 = everywhere */
    double cfg_lo, cfg_hi;
    int cfg_schedule;    /* fm_cfg_schedule: w over the interval */
    int half_calls;      /* the model accepts n = B: skip the unused branch where w(t) is 1 or 0 */
} fm_sampler_cfg;

typedef struct fm_sampler {
    fm_sampler_cfg cfg;
    int B;
    long D;
    float *x2;   /* [2B, D] model input: x duplicated; one block holds every buffer */
    float *u2;   /* [2B, D] model output */
    float *t2;   /* [2B] */
    int32_t *y2; /* [2B] labels: y then null */
    float *k1;   /* [B, D] heun: first slope */
    float *x1;   /* [B, D] heun: the Euler predictor */
    /* counts, for the cost of a sampling method (eval's table): rows of B
     * sampled by fm_sample, model rows evaluated, classifier-guidance rows */
    int64_t sampled, model_rows, guide_rows;
} fm_sampler;

#define FM_SAMPLE_STREAM_BASE 0x53414d5000000000ull /* "SAMP" */

/* Validate cfg and take all buffers for B samples of D values (the only
 * allocation). FM_ERR_USAGE names a bad setting. */
int fm_sampler_init(fm_sampler *s, const fm_sampler_cfg *cfg, int B, long D, fm_err *e);
void fm_sampler_free(fm_sampler *s);

/* "euler" / "heun" / "sde" (the config reads sample.sampler by its own table). */
const char *fm_sampler_name(fm_sampler_kind k);

/* Model calls (each on 2B rows) that one fm_sample makes. */
int fm_sampler_nfe(const fm_sampler_cfg *cfg);

/* x [B, D] <- the initial noise N(0, I) of samples first .. first+B-1. */
void fm_sample_noise(float *x, int B, long D, uint64_t seed, uint64_t first);

/* The guidance weight w(t) for the scale w (see the top of this file). */
float fm_guidance_weight(const fm_sampler_cfg *cfg, float w, double t);

/* out [B, D] <- the guided velocity at (x [B, D], t): the model's prediction
 * (1 - w(t)) p(x, t | null) + w(t) p(x, t | y), converted from cfg.target to
 * the velocity; labels y are in s->y2 (fm_sample sets them). One model call
 * (2B rows, or B with half_calls where w(t) is 1 or 0). out may alias x. Every
 * sampler step goes through this function. */
int fm_guided_velocity(fm_sampler *s, fm_velocity_fn f, void *ctx, const float *x, double t, float w, float *out,
                       fm_err *e);

/* Integrate x_inout [B, D] (in: x_0, usually from fm_sample_noise; out: the
 * samples at t = 1) with labels y [B] (NULL: all null) and guidance w.
 * seed/first key the SDE noise (unused by euler/heun). No allocation.
 * A failing model call is returned with the time prefixed to its message.
 * A preemption request (signals.h) seen before a step returns FM_PREEMPTED
 * (x_inout is then partly integrated). */
int fm_sample(fm_sampler *s, fm_velocity_fn f, void *ctx, const int32_t *y, float w, uint64_t seed, uint64_t first,
              float *x_inout, fm_err *e);

#endif
