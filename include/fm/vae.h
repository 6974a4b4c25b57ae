/* vae.h - the convolutional VAE: 32x32x1 images <-> 8x8x4 latents (default).
 *
 * Activations are fp32 NHWC. With L = number of levels and channels ch[0..L):
 *
 *   encoder  x [B, S, S, in_ch]
 *     conv_in 3x3 -> ch[0]
 *     level i = 0..L-1 (resolution S >> i): res_blocks ResBlocks -> ch[i]
 *                                           (the first one from ch[i-1]),
 *                    then, except at i = L-1, downsample: 3x3 conv stride 2,
 *                    pad 1, ch[i] -> ch[i]
 *     out_norm (GroupNorm + SiLU), out_conv 3x3 -> 2 latent_ch = (mu, logvar)
 *   latents  [B, S >> (L-1), S >> (L-1), latent_ch]; logvar is clamped to
 *            [-30, 20] (zero gradient outside, torch.clamp's rule)
 *   decoder  z [B, s, s, latent_ch]
 *     conv_in 3x3 -> ch[L-1]
 *     level i = L-1..0: res_blocks ResBlocks -> ch[i] (the first one from
 *                       ch[i+1], or ch[L-1] at the bottom), then, except at
 *                       i = 0, upsample: nearest x2 then 3x3 conv ch[i] -> ch[i]
 *     out_norm (GroupNorm + SiLU), out_conv 3x3 -> in_ch (no output activation)
 *   ResBlock GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, + skip (1x1 conv
 *            with bias when the channels change, else identity)
 *
 * Every GroupNorm has min(groups, C) groups and eps 1e-5; every conv has a bias.
 * Parameter names are the twin's state dict (tests/parity/twin_vae.py):
 *   encoder.conv_in, encoder.down.{i}.res.{j}.{norm1,conv1,norm2,conv2,skip},
 *   encoder.down.{i}.downsample, encoder.out_norm, encoder.out_conv,
 *   decoder.conv_in, decoder.up.{i}.res.{j}.{...}, decoder.up.{i}.upsample,
 *   decoder.out_norm, decoder.out_conv      (+ ".weight" / ".bias")
 * Decoder levels are indexed by resolution like the encoder's (up.{L-1} runs
 * first) and registered in index order, as the twin's state dict lists them.
 *
 * The encoder and decoder are separate objects, each built for one batch size
 * and each owning its buffers, so the encode stage can build only an encoder
 * and sampling only a decoder, at any batch size. Each registers its
 * parameters contiguously (offsets p_first .. p_first + p_numel of the
 * fm_params), in the same order and with the same names in every instance:
 * weights copy between instances by name or as one block. */
#ifndef FM_VAE_H
#define FM_VAE_H

#include <stdint.h>

#include "fm/arena.h"
#include "fm/conv.h"
#include "fm/dnn.h"
#include "fm/groupnorm.h"
#include "fm/params.h"
#include "fm/status.h"
#include "fm/upconv.h"

#define FM_VAE_MAX_LEVELS 4
#define FM_VAE_MAX_RES 4
#define FM_VAE_LOGVAR_MIN (-30.0f)
#define FM_VAE_LOGVAR_MAX 20.0f
#define FM_VAE_GN_EPS 1e-5f

typedef enum { FM_VAE_LOSS_L2 = 0, FM_VAE_LOSS_L1 = 1 } fm_vae_recon;

typedef struct fm_vae_cfg {
    int in_ch;                          /* image channels (1) */
    int size;                           /* image height = width (32) */
    int levels;                         /* number of entries of channels (3) */
    int channels[FM_VAE_MAX_LEVELS];    /* per level ({32, 64, 128}) */
    int res_blocks;                     /* ResBlocks per level (>= 1) */
    int latent_ch;                      /* latent channels (4) */
    int groups;                         /* GroupNorm groups, capped at C (8) */
    fm_vae_recon recon;                 /* reconstruction loss: L2 (mean squared) or L1 */
    float kl_weight;                    /* beta of the KL term */
} fm_vae_cfg;

/* The defaults above (kl_weight 1e-4, L2). */
fm_vae_cfg fm_vae_cfg_default(void);

/* Latent height = width: size >> (levels - 1). */
int fm_vae_latent_hw(const fm_vae_cfg *c);

/* Check cfg: 1 to FM_VAE_MAX_LEVELS levels, 1 to FM_VAE_MAX_RES ResBlocks,
 * size divisible by 2^(levels-1), every width divisible by its GroupNorm
 * group count, kl_weight finite and >= 0. FM_ERR_USAGE whose message starts
 * with the config key of the field at fault ("vae.groups: ..."; build.c adds
 * where the key was set). The init functions run it too. */
int fm_vae_cfg_check(const fm_vae_cfg *cfg, fm_err *e);

/* One ResBlock; internal, exposed only so the structs below have a size. */
typedef struct fm_vae_res {
    int n, h, w, cin, cout;
    fm_groupnorm norm1, norm2;        /* both with fused SiLU */
    fm_conv2d conv1, conv2, skip;     /* skip used only when cin != cout */
    int has_skip;
    float *h1, *c1, *h2, *y;          /* saved activations: [n,h,w,cin], then [n,h,w,cout] x 3 */
} fm_vae_res;

/* One level: its ResBlocks and the resampling conv (encoder: downsample after
 * the blocks; decoder: upsample after the blocks). */
typedef struct fm_vae_level {
    int h, ch;                        /* resolution and channels of this level */
    fm_vae_res res[FM_VAE_MAX_RES];
    int has_resample;
    fm_conv2d resample;               /* encoder: the stride-2 3x3 conv */
    fm_upconv upsample;               /* decoder: nearest x2 + 3x3 conv, fused */
    float *out;                       /* resample output */
} fm_vae_level;

/* An encoder or a decoder: conv_in, the levels, out_norm (GroupNorm + SiLU)
 * and out_conv, every buffer from one arena. The two are mirror images: the
 * encoder runs its levels from 0 (full size) down, each downsampling with a
 * stride-2 conv after its blocks; the decoder runs them from the last (latent
 * size) up, each upsampling with an upconv. Shapes below: encoder, decoder. */
typedef struct fm_vae_half {
    fm_vae_cfg cfg;
    int n, lat;                       /* batch size; latent height = width */
    int decoder;                      /* 0: an encoder, 1: a decoder */
    fm_arena arena;                   /* every buffer of this instance */
    fm_conv2d conv_in, out_conv;
    fm_vae_level lv[FM_VAE_MAX_LEVELS];
    fm_groupnorm out_norm;
    float *h0;                        /* conv_in output [n, S, S, ch0], [n, lat, lat, ch_last] */
    float *hn;                        /* out_norm output [n, lat, lat, ch_last], [n, S, S, ch0] */
    float *out;                       /* out_conv output: the moments [n, lat, lat, 2 latent_ch] = (mu, raw
                                       * logvar), the reconstruction xhat [n, S, S, in_ch] */
    float *tmp;                       /* forward scratch (skip branches), the largest activation */
    float *g[4];                      /* backward scratch, each the largest activation (train only) */
    float *dz;                        /* decoder: gradient of the input z [n, lat, lat, latent_ch] (train
                                       * only); encoder: NULL (no input gradient) */
    size_t p_first, p_numel;          /* parameter range in the fm_params */
    int train;
} fm_vae_half;

typedef fm_vae_half fm_vae_encoder;
typedef fm_vae_half fm_vae_decoder;

/* Build an encoder for batches of n: registers "encoder.*" in p (PyTorch
 * default init), creates every primitive and allocates every buffer (from one
 * arena, sized exactly by running the same set-up on a measuring arena first,
 * arena.h; the same for the decoder and fm_vae). train = 0 skips the backward
 * scratch. Bad configs give FM_ERR_USAGE. */
int fm_vae_encoder_init(fm_vae_encoder *m, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, int train,
                        fm_err *e);
/* The arena bytes and padded parameter floats of fm_vae_encoder_init (decoder 0)
 * or fm_vae_decoder_init (decoder 1), measured without building it (sizing.h). */
int fm_vae_half_measure(const fm_vae_cfg *cfg, int n, int train, int decoder, size_t *arena, size_t *params,
                        fm_err *e);
/* Build a decoder for batches of n: registers "decoder.*" in p. */
int fm_vae_decoder_init(fm_vae_decoder *m, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, int train,
                        fm_err *e);

/* in -> m->out: an encoder's x [n, S, S, in_ch] to the moments [n, lat, lat,
 * 2 latent_ch] (raw, unclamped), a decoder's z [n, lat, lat, latent_ch] to
 * xhat [n, S, S, in_ch]. */
int fm_vae_half_forward(fm_vae_half *m, const float *in, fm_err *e);
/* From in (as given to the last forward) and dout, the gradient of m->out:
 * overwrites every parameter gradient of m, and a decoder's m->dz. Needs
 * train. */
int fm_vae_half_backward(fm_vae_half *m, const float *in, const float *dout, fm_err *e);
/* Frees m and zeroes it; a zeroed m (never built, or after a failed init) is
 * fine. The same for fm_vae. */
void fm_vae_half_free(fm_vae_half *m);

/* Inference: mu [n, lat, lat, latent_ch] of x [n, S, S, in_ch]. */
int fm_vae_encode_mean(fm_vae_encoder *m, const float *x, float *mu, fm_err *e);
/* Inference: xhat [n, S, S, in_ch] = decoder(z [n, lat, lat, latent_ch]). */
int fm_vae_decode(fm_vae_decoder *m, const float *z, float *xhat, fm_err *e);

/* The training model: encoder, reparameterisation, decoder and loss. */
typedef struct fm_vae {
    fm_vae_cfg cfg;
    int n, lat;
    long nlat;                        /* n * lat * lat * latent_ch */
    fm_vae_encoder enc;
    fm_vae_decoder dec;
    fm_arena arena;
    float *mu, *logvar;               /* [n, lat, lat, latent_ch]; logvar clamped */
    float *eps, *z;                   /* the noise of the last forward, z = mu + exp(logvar / 2) eps */
    float *dmu, *dlogvar, *dmoments, *dxhat;
} fm_vae;

typedef struct fm_vae_loss {
    double total;                     /* recon + kl_weight * kl */
    double recon;                     /* mean over pixels of (x - xhat)^2 or |x - xhat| */
    double kl;                        /* mean over batch and latent elements of KL(N(mu, s^2) || N(0, 1)) */
} fm_vae_loss;

/* Noise stream of training step `step` (a tag in the high bits keeps it apart
 * from the other stages' streams for the same seed and step). */
static inline uint64_t fm_vae_noise_stream(uint64_t step) { return 0x5641450000000000ull ^ step; }

/* Build encoder + decoder (encoder parameters first) for batches of n. */
int fm_vae_init(fm_vae *v, fm_dnn *d, fm_params *p, const fm_vae_cfg *cfg, int n, fm_err *e);

/* Forward of one training batch x [n, S, S, in_ch] whose row 0 is sample
 * number `first` of the global batch of step `step`. Row i's noise is
 * fm_fill_normal(eps_i, D, seed, fm_vae_noise_stream(step), (first + i) * D)
 * with D = lat * lat * latent_ch: it depends on the sample's global index, not
 * on how the batch is split. Fills *loss (and v->mu, logvar, eps, z, dec.out = xhat). */
int fm_vae_forward(fm_vae *v, const float *x, uint64_t seed, uint64_t step, uint64_t first, fm_vae_loss *loss,
                   fm_err *e);

/* Backward of loss->total from the last forward on x: OVERWRITES every
 * parameter gradient (encoder and decoder). */
int fm_vae_backward(fm_vae *v, const float *x, fm_err *e);

/* Forward + backward FLOPs of one step (convolutions only). */
double fm_vae_flops(const fm_vae *v);

void fm_vae_free(fm_vae *v);

#endif
