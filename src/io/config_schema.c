/* config_schema.c - what a valid configuration is: the key table (one line
 * per key) and the cross-key checks of the configuration itself. The YAML
 * loader is in config.c; the models check their own architectures
 * (build.h: fm_build_validate). */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/config.h"
#include "fm/dataset.h"
#include "fm/log.h"

const char *const fm_stage_names[] = { "vae", "encode", "guide", "flow", "reflow", "sample", "eval", NULL };
const char *const fm_precision_names[] = { "fp32", "bf16", "auto", NULL };
const char *const fm_recon_names[] = { "l2", "l1", NULL };
const char *const fm_model_names[] = { "unet", "dit", NULL };
const char *const fm_path_names[] = { "linear", "cosine", NULL };
const char *const fm_tdist_names[] = { "uniform", "logit_normal", NULL };
const char *const fm_sampler_names[] = { "euler", "heun", "sde", NULL };
const char *const fm_target_names[] = { "velocity", "x1", "eps", "v", NULL };
const char *const fm_cfg_schedule_names[] = { "constant", "linear", "cosine", NULL };
const char *const fm_weights_names[] = { "flow", "reflow", NULL };
const char *const fm_batch_names[] = { "global", "per_rank", NULL };
const char *const fm_lr_scale_names[] = { "none", "linear", "sqrt", NULL };
const char *const fm_hier_names[] = { "auto", "on", "off", NULL };
const char *const fm_comm_sched_names[] = { "auto", "slice", "rt", "nice", "none", NULL };

_Static_assert(FM_CFG_IMAGE_SIDE == FM_MNIST_PADDED, "image side");

#define OFF(field) offsetof(fm_config, field)
#define BIG 1e9   /* "no real upper limit" for counts of steps */
#define INT_(k, f, d, lo, hi, doc) { k, FM_T_INT, OFF(f), d, lo, hi, 0, 0, NULL, doc }
#define FLT_(k, f, d, lo, hi, doc) { k, FM_T_FLOAT, OFF(f), d, lo, hi, 0, 0, NULL, doc }
#define POS_(k, f, d, hi, doc) { k, FM_T_FLOAT, OFF(f), d, 0, hi, 0, FM_CFG_LO_OPEN, NULL, doc }
#define BOOL_(k, f, d, doc) { k, FM_T_BOOL, OFF(f), d, 0, 1, 0, 0, NULL, doc }
#define STR_(k, f, d, doc) { k, FM_T_STRING, OFF(f), d, 1, FM_CFG_STR_MAX - 1, 0, 0, NULL, doc }
#define ENUM_(k, f, d, names, doc) { k, FM_T_ENUM, OFF(f), d, 0, 0, 0, 0, names, doc }
#define INTS_(k, f, d, lo, hi, min_n, doc) { k, FM_T_INTS, OFF(f), d, lo, hi, min_n, 0, NULL, doc }
#define FLTS_(k, f, d, lo, hi, min_n, doc) { k, FM_T_FLOATS, OFF(f), d, lo, hi, min_n, 0, NULL, doc }
#define ENUMS_(k, f, d, names, min_n, doc) { k, FM_T_ENUMS, OFF(f), d, 0, 0, min_n, 0, names, doc }

/* The optimisation keys of a trained stage (fm_train_config). */
#define TRAIN_KEYS(S, D_STEPS, D_BATCH, D_LR, D_MINR, D_WARM, D_CKPT)                                                     \
    INT_(#S ".steps", S.train.steps, D_STEPS, 1, BIG, "optimiser steps of the stage"),                         \
    INT_(#S ".batch_size", S.train.batch_size, D_BATCH, 1, 1 << 20, "global batch size, split evenly over the ranks"), \
    POS_(#S ".lr", S.train.lr, D_LR, 10, "peak learning rate (after warm-up; cosine decay follows)"),          \
    FLT_(#S ".min_lr_ratio", S.train.min_lr_ratio, D_MINR, 0, 1, "final learning rate as a fraction of " #S ".lr"), \
    INT_(#S ".warmup", S.train.warmup, D_WARM, 0, BIG, "linear warm-up steps (at most " #S ".steps)"),         \
    FLT_(#S ".weight_decay", S.train.weight_decay, "0", 0, 10, "AdamW decoupled weight decay (not on biases and norms)"), \
    FLT_(#S ".beta1", S.train.beta1, "0.9", 0, 0.9999, "AdamW first-moment decay"),                         \
    FLT_(#S ".beta2", S.train.beta2, "0.999", 0, 0.999999, "AdamW second-moment decay"),                    \
    FLT_(#S ".grad_clip", S.train.grad_clip, "1", 0, 1e6, "clip the global gradient norm to this; 0 = off"), \
    INT_(#S ".ckpt_every", S.train.ckpt_every, D_CKPT, 1, BIG, "checkpoint every K steps (and at the last step)")

static const fm_cfg_key keys[] = {
    /* run: the job as a whole */
    STR_("run.out", run.out, "runs/default", "run directory (runs/default without a config file); --out sets it"),
    INT_("run.seed", run.seed, "0", 0, INT_MAX, "seed of every random draw (init, data order, noise)"),
    ENUMS_("run.stages", run.stages, "[vae, encode, flow, sample, eval]", fm_stage_names, 1,
           "stages to run, in pipeline order; each resumes from its own checkpoints"),
    INT_("run.log_every", run.log_every, "10", 1, BIG, "metrics line every K steps"),
    INT_("run.profile_steps", run.profile_steps, "0", 0, BIG,
         "per-layer profile of N flow steps after 3 warm-up steps of the run: tables on stderr and in "
         "profile-flow.txt and .json of the run directory; 0 = off; --profile sets 20"),
    INT_("run.schedule_steps", run.schedule_steps, "0", 0, 100000,
         "record the schedule of N flow steps after 3 warm-up steps (phase and per-bucket times of every step, for "
         "jobs/simulate) in schedule-flow.json of the run directory; 0 = off; --dump-schedule sets 20"),
    INT_("run.ckpt_keep", run.ckpt_keep, "3", 1, 1000, "keep the newest K checkpoints of each stage"),
    INT_("run.threads", run.threads, "0", 0, 1024, "OpenMP threads per rank; 0 = OMP_NUM_THREADS"),
    ENUM_("run.precision", run.precision, "auto", fm_precision_names, "operands of every convolution and matrix product: bf16 rounds them "
          "(AVX512-BF16 kernels) and accumulates in fp32; weights, gradients, optimiser, norms and loss stay fp32; "
          "auto = bf16 when every rank's CPU has AVX512-BF16, else fp32"),
    INT_("run.max_bad_steps", run.max_bad_steps, "20", 1, 1000000,
         "stop after this many consecutive steps with a non-finite loss or gradient (each is skipped)"),
    FLT_("run.memory_limit_gb", run.memory_limit_gb, "0", 0, 1e6,
         "refuse at start-up a configuration whose largest stage would take more than this many GB on one rank "
         "(models, optimiser state, data and grids, measured from the models' set-up); 0 = the machine's memory"),
    FLT_("run.peak_gflops", run.peak_gflops, "0", 0, 1e9,
         "GFLOP/s one rank can reach (make bench prints it as peak_gflops): the mfu of metrics.jsonl and the "
         "progress line is achieved / this; 0 = measured once at start in the run's precision (rank 0, the best of ten "
         "oneDNN 1024^3 sgemm calls, or bf16 matmuls under bf16, on the run's threads, logged)"),
    INTS_("run.fault_nan_steps", run.fault_nan_steps, "[]", 0, BIG, 0,
          "fault injection, for tests: steps (of every trained stage) whose gradient rank 0 makes NaN"),
    /* data: Fashion-MNIST IDX files */
    STR_("data.dir", data.dir, "/usr/share/datasets/fashion-mnist", "folder of the IDX .gz files (train-*, t10k-*)"),
    INT_("data.train_limit", data.train_limit, "0", 0, BIG, "use the first N training images; 0 = all"),
    INT_("data.test_limit", data.test_limit, "0", 0, BIG, "use the first N test images; 0 = all"),
    /* vae: the autoencoder of the latent space */
    TRAIN_KEYS(vae, "800", "128", "1e-3", "0.1", "50", "250"),
    INTS_("vae.channels", vae.channels, "[16, 32, 64]", 1, 4096, 1,
          "width per level, at most 4 levels; each level after the first halves the side (32 -> 8 with 3)"),
    INT_("vae.res_blocks", vae.res_blocks, "1", 1, FM_CFG_VAE_MAX_RES, "ResBlocks per level"),
    INT_("vae.groups", vae.groups, "8", 1, 4096, "GroupNorm groups, capped at the width (min(groups, C) must divide C)"),
    INT_("vae.latent_channels", vae.latent_channels, "4", 1, 256, "channels of the latent"),
    FLT_("vae.kl_weight", vae.kl_weight, "1e-4", 0, 1000, "beta: weight of KL(N(mu, sigma^2) || N(0, I)), both terms per-element means"),
    ENUM_("vae.loss", vae.loss, "l2", fm_recon_names, "reconstruction loss"),
    /* encode: the frozen encoder turns the training set into latents */
    INT_("encode.batch_size", encode.batch_size, "256", 1, 1 << 20, "global batch size of the encoder pass"),
    /* flow: the flow-matching model */
    ENUM_("flow.model", flow.model, "unet", fm_model_names, "architecture of u_theta(x_t, t, y)"),
    BOOL_("flow.latent", flow.latent, "true", "train on VAE latents (true) or on 32x32 pixels (false)"),
    TRAIN_KEYS(flow, "3000", "128", "1e-3", "0.2", "200", "500"),
    INT_("flow.sample_every", flow.sample_every, "1000", 0, BIG, "EMA sample grid every K steps; 0 = never"),
    FLT_("flow.cfg_dropout", flow.cfg_dropout, "0.1", 0, 1, "eta: probability that the label is replaced by the null label"),
    ENUM_("flow.path", flow.path, "linear", fm_path_names, "probability path: linear (alpha=t, beta=1-t) or cosine"),
    ENUM_("flow.t_dist", flow.t_dist, "uniform", fm_tdist_names, "training time distribution"),
    FLT_("flow.t_mean", flow.t_mean, "0", -10, 10, "logit-normal location m: t = sigmoid(m + s n)"),
    FLT_("flow.t_std", flow.t_std, "1", 0, 10, "logit-normal scale s"),
    ENUM_("flow.target", flow.target, "velocity", fm_target_names,
          "what the network predicts and the loss compares: velocity u, x1 (the data), eps (the noise) or v = "
          "alpha_t eps - beta_t x1; the samplers convert it to the velocity (docs/targets.md)"),
    FLTS_("flow.ema_decay", flow.ema_decay, "0.999", 0, 1, 1,
          "decay of the EMA of the weights; a list (e.g. [0.999, 0.9999]) keeps one EMA per rate, all updated each "
          "step and checkpointed (the first as ema.*, the others as ema@<rate>.*), each selectable by sample.ema"),
    BOOL_("flow.ema_warmup", flow.ema_warmup, "true", "EMA decay min(ema_decay, (1+k)/(10+k)) at update k: a rate r applies only from update (10r-1)/(1-r) on "
          "(0.999: 8990), before that every rate is the warm-up curve's (the run says so; two such rates warn)"),
    POS_("flow.bucket_mb", flow.bucket_mb, "25", 4096, "gradient allreduce bucket size in MiB"),
    INT_("flow.accum_steps", flow.accum_steps, "1", 1, 1024,
         "micro-batches of flow.batch_size per optimiser step, gradients summed: the effective batch is "
         "batch_size x accum_steps"),
    /* reflow: rectified flow, a copy of the flow fine-tuned on its own (noise, sample) couplings */
    TRAIN_KEYS(reflow, "400", "128", "5e-4", "0.5", "20", "100"),
    INT_("reflow.pairs", reflow.pairs, "3072", 1, 10000000,
         "(noise, sample) couplings drawn from the flow's EMA weights, classes i mod 10 (reflow-pairs.safetensors)"),
    FLT_("reflow.cfg", reflow.cfg, "3", 0, 100, "guidance scale w of the couplings"),
    ENUM_("reflow.sampler", reflow.sampler, "euler", fm_sampler_names, "integrator of the couplings"),
    INT_("reflow.sampler_steps", reflow.sampler_steps, "12", 1, 100000, "integration steps of the couplings"),
    FLT_("reflow.cfg_dropout", reflow.cfg_dropout, "0.1", 0, 1,
         "probability that a coupling's label is replaced by the null label while fine-tuning"),
    FLT_("reflow.ema_decay", reflow.ema_decay, "0.999", 0, 1, "decay of the EMA of the reflowed weights"),
    /* unet: the default flow model */
    INTS_("unet.channels", unet.channels, "[64, 128]", 1, 4096, 1, "width per level, at most 8 levels; each level after the first halves the side; [0] even"),
    INT_("unet.res_blocks", unet.res_blocks, "1", 1, 16, "ResBlocks per level"),
    INTS_("unet.attn_res", unet.attn_res, "[4]", 1, 1024, 0, "sides of the levels with self-attention (the middle always has it)"),
    INT_("unet.heads", unet.heads, "4", 1, 256, "attention heads (must divide the width of each attention level)"),
    INT_("unet.groups", unet.groups, "8", 1, 4096, "GroupNorm groups, capped at the width (min(groups, C) must divide C)"),
    INT_("unet.emb_dim", unet.emb_dim, "256", 1, 8192, "width of the (t, y) embedding"),
    /* guide: the noise-conditioned latent classifier of classifier guidance */
    TRAIN_KEYS(guide, "600", "128", "2e-3", "0.1", "30", "600"),
    INT_("guide.width", guide.width, "16", 1, 4096, "first conv's channels of the latent classifier (then 2w, 4w, 4w)"),
    INT_("guide.time_dim", guide.time_dim, "8", 2, 1024, "time-embedding channels concatenated to the latent (even)"),
    /* dit: the transformer flow model */
    INT_("dit.width", dit.width, "256", 1, 8192, "token width"),
    INT_("dit.depth", dit.depth, "6", 1, 128, "transformer blocks"),
    INT_("dit.heads", dit.heads, "4", 1, 256, "attention heads (must divide dit.width)"),
    INT_("dit.patch", dit.patch, "2", 1, 32, "patch side (must divide the input side)"),
    POS_("dit.mlp_ratio", dit.mlp_ratio, "4", 16, "MLP hidden width / dit.width"),
    /* sample: grids from the trained flow */
    FLTS_("sample.cfg", sample.cfg, "[1, 3, 5]", 0, 100, 1, "guidance scales w, one grid each (1 = conditional, 0 = unconditional)"),
    FLTS_("sample.cfg_interval", sample.cfg_interval, "[0, 1]", 0, 1, 2,
          "[t_lo, t_hi]: guidance only for t in this interval (t = 0 noise, 1 data), w = 1 outside, where only the "
          "conditional branch runs"),
    ENUM_("sample.cfg_schedule", sample.cfg_schedule, "constant", fm_cfg_schedule_names,
          "w over the interval: constant, or ramped from 1 at t_lo to w at t_hi, linear or cosine"),
    ENUM_("sample.sampler", sample.sampler, "heun", fm_sampler_names, "ODE/SDE integrator"),
    INT_("sample.steps", sample.steps, "10", 1, 100000, "integration steps from noise to data"),
    INT_("sample.per_class", sample.per_class, "8", 1, 1500,
         "samples per class (columns of a grid; at most 1500: a grid's PNG is at most 100000 pixels wide)"),
    FLT_("sample.sde_sigma", sample.sde_sigma, "0.5", 0, 100, "sde sampler noise: sigma_t = sde_sigma * beta_t (0 = Euler)"),
    FLT_("sample.classifier_scale", sample.classifier_scale, "0", 0, 100,
         "classifier guidance s with the guide stage's classifier, added to the CFG velocity (0 = off)"),
    STR_("sample.ema", sample.ema, "true",
         "weights to sample with: true (the EMA of the first flow.ema_decay), false (the trained weights) or a rate "
         "of flow.ema_decay (e.g. 0.9999); fmtrain sample --ema RATE|raw sets it"),
    ENUM_("sample.weights", sample.weights, "flow", fm_weights_names,
          "the model of the sample grids and eval's by_cfg: the flow's, or the reflowed copy's (reflow stage)"),
    /* eval: classifier accuracy and Frechet distance of generated samples */
    INT_("eval.classifier_steps", eval.classifier_steps, "2000", 1, BIG, "training steps of the evaluation classifier"),
    INT_("eval.classifier_batch_size", eval.classifier_batch_size, "128", 1, 1 << 20, "global batch size of the classifier"),
    POS_("eval.classifier_lr", eval.classifier_lr, "6e-3", 10, "learning rate of the classifier"),
    INT_("eval.samples_per_class", eval.samples_per_class, "200", 1, 10000,
         "generated samples per class and guidance scale (at most 10000: rank 0 keeps 128 classifier features of "
         "every sample, 1.3 GB at 16 scales)"),
    INT_("eval.batch_size", eval.batch_size, "256", 1, 1 << 20, "global batch size of generation and feature extraction"),
    INTS_("eval.table_steps", eval.table_steps, "[]", 1, 100000, 0,
          "quality-vs-cost table in eval.json: sampler steps of its rows, for the flow and (if trained) the reflowed "
          "weights at each eval.table_cfg; [] = no table"),
    FLTS_("eval.table_cfg", eval.table_cfg, "[3]", 0, 100, 1, "the table's guidance scales w"),
    ENUM_("eval.table_sampler", eval.table_sampler, "euler", fm_sampler_names, "the table's integrator"),
    FLTS_("eval.table_interval", eval.table_interval, "[0, 1]", 0, 1, 2,
          "[t_lo, t_hi]: besides plain CFG, the table's rows with CFG only in this interval (method interval); "
          "[0, 1] = no such rows"),
    FLT_("eval.table_classifier_scale", eval.table_classifier_scale, "0", 0, 100,
         "s > 0: the table's rows with classifier guidance s (method classifier, and both with a table interval; "
         "needs the guide stage's checkpoint); 0 = no such rows"),
    /* dist: data parallelism over the MPI ranks */
    BOOL_("dist.zero", dist.zero, "false", "ZeRO-1: each rank keeps and updates a 1/ranks shard of AdamW and EMA"),
    ENUM_("dist.batch", dist.batch, "global", fm_batch_names, "what every *.batch_size counts: the global batch, or the batch of one rank (weak scaling)"),
    ENUM_("dist.lr_scale", dist.lr_scale, "none", fm_lr_scale_names, "with per_rank batches: learning rates times ranks (linear) or sqrt(ranks)"),
    POS_("dist.timeout", dist.timeout, "600", 1e6, "seconds a rank waits for another in a collective before it stops the job"),
    ENUM_("dist.hierarchical", dist.hierarchical, "auto", fm_hier_names,
          "gradients reduced inside each node, then across nodes by one ring per local rank (auto: with >1 node of >1 rank)"),
    ENUM_("dist.comm_sched", dist.comm_sched, "auto", fm_comm_sched_names,
          "how the gradient communication thread gets a core from the compute threads: rt (SCHED_FIFO: root or "
          "RLIMIT_RTPRIO), slice (short EEVDF slice, Linux >= 6.12), nice (compute threads at nice +5), none; auto = "
          "rt, else slice, else none, and none when the model fits one bucket (nothing to overlap)"),
};

_Static_assert(sizeof keys / sizeof keys[0] <= FM_CFG_MAX_KEYS, "raise FM_CFG_MAX_KEYS");

const fm_cfg_key *fm_config_keys(int *n)
{
    *n = (int)(sizeof keys / sizeof keys[0]);
    return keys;
}

int fm_config_key_index(const char *name)
{
    for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]); i++)
        if (strcmp(keys[i].name, name) == 0)
            return i;
    return -1;
}

bool fm_config_has_stage(const fm_config *c, fm_stage s)
{
    for (int i = 0; i < c->run.stages.n; i++)
        if (c->run.stages.v[i] == (int)s)
            return true;
    return false;
}

/* ---- cross-key checks ---- */

/* FM_ERR_USAGE "<where key was set>: <key>: <message>". */
static int fail_at(const fm_config *c, const char *key, fm_err *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(const fm_config *c, const char *key, fm_err *e, const char *fmt, ...)
{
    char where[FM_CFG_STR_MAX + 64], msg[512];
    fm_config_where(c, key, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fm_fail(e, FM_ERR_USAGE, "%s: %s: %s", where, key, msg);
}

static int check_stages(const fm_config *c, fm_err *e)
{
    const fm_ilist *s = &c->run.stages;
    for (int i = 0; i < s->n; i++)
        for (int j = 0; j < i; j++) {
            if (s->v[j] == s->v[i])
                return fail_at(c, "run.stages", e, "%s is listed twice", fm_stage_names[s->v[i]]);
            if (s->v[j] > s->v[i])
                return fail_at(c, "run.stages", e,
                               "%s must come before %s; stages run in the order vae, encode, guide, flow, reflow, sample, eval",
                               fm_stage_names[s->v[i]], fm_stage_names[s->v[j]]);
        }
    if (!c->flow.latent)
        for (int i = 0; i < s->n; i++)
            if (s->v[i] == FM_STAGE_VAE || s->v[i] == FM_STAGE_ENCODE)
                return fail_at(c, "run.stages", e, "%s is not used when flow.latent is false (the flow trains on pixels)",
                               fm_stage_names[s->v[i]]);
    return FM_OK;
}

static int check_train(const fm_config *c, const char *stage, const fm_train_config *t, fm_err *e)
{
    char key[64];
    snprintf(key, sizeof key, "%s.warmup", stage);
    if (t->warmup > t->steps)
        return fail_at(c, key, e, "%d is more than %s.steps = %d", t->warmup, stage, t->steps);
    return FM_OK;
}

/* Values the key table admits that a stage could not use: refused here, before anything runs. */
static int check_usable(const fm_config *c, fm_err *e)
{
    const double bucket = c->flow.bucket_mb * 1048576.0; /* bytes, as the trainer computes them */
    if ((size_t)bucket < sizeof(float))
        return fail_at(c, "flow.bucket_mb", e, "%g MiB is less than one 4-byte gradient value (use at least 4e-06)",
                       c->flow.bucket_mb);
    if (fm_config_has_stage(c, FM_STAGE_REFLOW) && strcmp(fm_path_names[c->flow.path], "linear") != 0)
        return fail_at(c, "flow.path", e, "%s: the reflow stage fine-tunes on straight paths: use linear",
                       fm_path_names[c->flow.path]);
    if (fm_config_has_stage(c, FM_STAGE_EVAL)) { /* Fréchet statistics of the test set and as many training images */
        if (c->data.test_limit == 1)
            return fail_at(c, "data.test_limit", e,
                           "1 test image: the eval stage's Fréchet distances need at least 2 (0 = all)");
        if (c->data.train_limit == 1)
            return fail_at(c, "data.train_limit", e,
                           "1 training image: the eval stage's Fréchet distance floor needs at least 2 (0 = all)");
    }
    const fm_flist *iv = &c->sample.cfg_interval;
    if (iv->n != 2 || !(iv->v[0] <= iv->v[1]))
        return fail_at(c, "sample.cfg_interval", e, "must be two times [t_lo, t_hi] with t_lo <= t_hi, e.g. [0.2, 0.8]");
    iv = &c->eval.table_interval;
    if (iv->n != 2 || !(iv->v[0] <= iv->v[1]))
        return fail_at(c, "eval.table_interval", e, "must be two times [t_lo, t_hi] with t_lo <= t_hi, e.g. [0.2, 0.8]");
    return FM_OK;
}

/* flow.ema_decay: distinct rates; sample.ema: true, false or one of them. */
static int check_ema(const fm_config *c, fm_err *e)
{
    const fm_flist *d = &c->flow.ema_decay;
    for (int i = 0; i < d->n; i++)
        for (int j = 0; j < i; j++)
            if (d->v[i] == d->v[j])
                return fail_at(c, "flow.ema_decay", e, "%g is listed twice", d->v[i]);
    const char *s = c->sample.ema;
    if (!strcmp(s, "true") || !strcmp(s, "false"))
        return FM_OK;
    char *end = NULL;
    double r = strtod(s, &end);
    if (end == s || *end || !(r >= 0 && r <= 1))
        return fail_at(c, "sample.ema", e, "\"%s\" is not true, false or an EMA rate in [0, 1]", s);
    for (int i = 0; i < d->n; i++)
        if (d->v[i] == r)
            return FM_OK;
    char list[256];
    fm_config_format_rates(d, list, sizeof list);
    return fail_at(c, "sample.ema", e, "rate %s is not one of flow.ema_decay = %s", s, list);
}

int fm_config_sample_ema(const fm_config *c, double *rate)
{
    const char *s = c->sample.ema;
    if (!strcmp(s, "false"))
        return 0;
    *rate = !strcmp(s, "true") ? c->flow.ema_decay.v[0] : strtod(s, NULL);
    return 1;
}

void fm_config_weights_label(const fm_config *c, char *out, size_t cap)
{
    double rate = 0;
    if (fm_config_sample_ema(c, &rate))
        snprintf(out, cap, "EMA %.10g", rate);
    else
        snprintf(out, cap, "raw weights");
}

void fm_config_format_rates(const fm_flist *d, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < d->n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%.10g", i ? ", " : "", d->v[i]);
    if (k < cap)
        snprintf(out + k, cap - k, "]");
}

int fm_config_validate(const fm_config *c, fm_err *e)
{
    FM_TRY(check_ema(c, e));
    FM_TRY(check_stages(c, e));
    FM_TRY(check_usable(c, e));
    if (c->flow.latent) /* the vae keys count even if the vae stage is not run */
        FM_TRY(check_train(c, "vae", &c->vae.train, e));
    FM_TRY(check_train(c, "guide", &c->guide.train, e));
    if (c->guide.time_dim % 2)
        return fail_at(c, "guide.time_dim", e, "%d is odd: the time embedding is cos and sin pairs", c->guide.time_dim);
    FM_TRY(check_train(c, "reflow", &c->reflow.train, e));
    return check_train(c, "flow", &c->flow.train, e);
}

int fm_config_check_world(const fm_config *c, int world_size, fm_err *e)
{
    struct {
        fm_stage stage;
        const char *key;
        int batch;
    } b[] = {
        { FM_STAGE_VAE, "vae.batch_size", c->vae.train.batch_size },
        { FM_STAGE_ENCODE, "encode.batch_size", c->encode.batch_size },
        { FM_STAGE_GUIDE, "guide.batch_size", c->guide.train.batch_size },
        { FM_STAGE_FLOW, "flow.batch_size", c->flow.train.batch_size },
        { FM_STAGE_REFLOW, "reflow.batch_size", c->reflow.train.batch_size },
        { FM_STAGE_EVAL, "eval.classifier_batch_size", c->eval.classifier_batch_size },
        { FM_STAGE_EVAL, "eval.batch_size", c->eval.batch_size },
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0] && c->dist.batch == FM_BATCH_GLOBAL; i++)
        if (fm_config_has_stage(c, b[i].stage) && b[i].batch % world_size != 0)
            return fail_at(c, b[i].key, e,
                           "%d does not split evenly over %d ranks (batch sizes are global): use a multiple of %d, "
                           "or set dist.batch: per_rank to give the batch of one rank",
                           b[i].batch, world_size, world_size);
    return FM_OK;
}

int fm_config_apply_world(fm_config *c, int world_size, fm_err *e)
{
    if (c->dist.batch == FM_BATCH_GLOBAL || world_size == 1)
        return FM_OK;
    struct {
        const char *key;
        int *batch;
    } b[] = {
        { "vae.batch_size", &c->vae.train.batch_size },   { "encode.batch_size", &c->encode.batch_size },
        { "flow.batch_size", &c->flow.train.batch_size }, { "guide.batch_size", &c->guide.train.batch_size },
        { "eval.classifier_batch_size", &c->eval.classifier_batch_size },
        { "reflow.batch_size", &c->reflow.train.batch_size },
        { "eval.batch_size", &c->eval.batch_size },
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        if ((long long)*b[i].batch * world_size > (1 << 20))
            return fail_at(c, b[i].key, e, "%d per rank x %d ranks exceeds the largest global batch, %d", *b[i].batch,
                           world_size, 1 << 20);
        *b[i].batch *= world_size;
    }
    const double k = c->dist.lr_scale == FM_LR_SCALE_LINEAR ? (double)world_size
                     : c->dist.lr_scale == FM_LR_SCALE_SQRT ? sqrt((double)world_size)
                                                            : 1.0;
    c->vae.train.lr *= k;
    c->flow.train.lr *= k;
    c->guide.train.lr *= k;
    c->reflow.train.lr *= k;
    c->eval.classifier_lr *= k;
    fm_info("dist.batch: per_rank on %d ranks: global batches vae %d, encode %d, flow %d, classifier %d, eval %d; "
            "learning rates x%.4g (dist.lr_scale: %s): vae %g, flow %g, classifier %g",
            world_size, c->vae.train.batch_size, c->encode.batch_size, c->flow.train.batch_size,
            c->eval.classifier_batch_size, c->eval.batch_size, k, fm_lr_scale_names[c->dist.lr_scale],
            c->vae.train.lr, c->flow.train.lr, c->eval.classifier_lr);
    return FM_OK;
}
