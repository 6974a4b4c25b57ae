/* target.h - what the flow network predicts (flow.target) and its conversion
 * to the velocity the samplers integrate.
 *
 * Convention (DESIGN.md §2, path.h): x_t = alpha_t z + beta_t eps, z the data
 * (t = 1), eps the noise (t = 0), u = dalpha_t z + dbeta_t eps, and
 * gamma_t = dalpha beta - dbeta alpha > 0. The training target of a pair:
 *   velocity: u                              (the default)
 *   x1:       z                              (data prediction)
 *   eps:      eps                            (noise prediction)
 *   v:        alpha_t eps - beta_t z         (Salimans & Ho's v, signal coefficient
 *                                             times noise minus noise coefficient times data)
 * Every target is affine in (z, eps), so with x = x_t the velocity is affine
 * in the prediction p:  u = cx x + cp p  with
 *   velocity: cx = 0,                                  cp = 1
 *   x1:       cx = dbeta / beta,                       cp = gamma / beta
 *   eps:      cx = dalpha / alpha,                     cp = -gamma / alpha
 *   v:        cx = (alpha dalpha + beta dbeta) / (alpha^2 + beta^2),
 *             cp = -gamma / (alpha^2 + beta^2)
 * x1 divides by beta (0 at t = 1), eps by alpha (0 at t = 0); v never
 * divides by zero (alpha^2 + beta^2 >= 1/2). The samplers therefore evaluate
 * the network of x1 at min(t, 1 - FM_TARGET_T_EDGE) and that of eps at
 * max(t, FM_TARGET_T_EDGE) (fm_target_time), with the coefficients at the same
 * time; velocity and v are evaluated at t itself. docs/targets.md derives
 * these and the loss weighting cp^2 under which each target's loss equals the
 * velocity loss (fmtrain trains every target unweighted: see there). */
#ifndef FM_TARGET_H
#define FM_TARGET_H

#include "fm/path.h"

typedef enum fm_target_kind {
    FM_TARGET_VELOCITY = 0,
    FM_TARGET_X1 = 1,
    FM_TARGET_EPS = 2,
    FM_TARGET_V = 3
} fm_target_kind;

/* The distance from the singular end at which x1 and eps are evaluated. */
#define FM_TARGET_T_EDGE 0.01

/* "velocity" / "x1" / "eps" / "v" (the config reads flow.target by its own table). */
const char *fm_target_name(fm_target_kind k);

/* The time at which the network of target k is evaluated for time t (t itself
 * unless t is within FM_TARGET_T_EDGE of k's singular end). */
double fm_target_time(fm_target_kind k, double t);

/* u = cx x + cp p at time t (t must be away from the singular end: pass
 * fm_target_time's value). */
typedef struct fm_target_coef {
    double cx, cp;
} fm_target_coef;
fm_target_coef fm_target_coefs(fm_target_kind k, fm_path_kind path, double t);

/* The training target of one row at time t from its data z and noise eps, in
 * place of the velocity u = dalpha z + dbeta eps: out [d] (out may alias eps). */
void fm_target_of_pair(fm_target_kind k, fm_path_kind path, double t, const float *z, const float *eps, long d,
                       float *out);

/* u [n] <- cx x + cp p for a prediction p [n] at points x [n] (u may alias p,
 * not x). Velocity: a plain copy when u != p. */
void fm_target_to_velocity(fm_target_kind k, fm_path_kind path, double t, const float *x, const float *p, long n,
                           float *u);

#endif
