/* config.h - the typed run configuration: YAML file + --set overrides.
 *
 * Every key lives in ONE table (src/io/config_schema.c): its name
 * ("flow.lr"), type, place in fm_config, default, allowed range and doc.
 * Adding a key is one line there plus a field here. The loader (libyaml)
 * knows nothing but that table.
 *
 * Errors are FM_ERR_USAGE with the message
 *     <file>:<line>:<col>: <key>: <what is wrong>
 * (line and column 1-based; for an override the prefix is
 * "--set <assignment>"). Loading stops at the FIRST error, in document order.
 *
 * Typical use:
 *     fm_config c;
 *     fm_config_load(&c, "configs/tiny.yaml", e);     defaults + file
 *     fm_config_set(&c, "flow.steps=40", e);          each --set, in order
 *     fm_build_validate(&c, e);                       cross-key checks, then the
 *                                                     models' own (build.h)
 *     fm_config_check_world(&c, world_size, e);       batch sizes vs ranks
 * Nothing is created or written by any of these. This layer knows no model:
 * build.h turns a configuration into models. */
#ifndef FM_CONFIG_H
#define FM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "fm/status.h"

#define FM_CFG_STR_MAX 1024  /* bytes of a string value, including the NUL */
#define FM_CFG_LIST_MAX 16   /* elements of a list value */
#define FM_CFG_MAX_KEYS 128  /* capacity of the per-key origin table */

/* Images are padded from 28x28 to 32x32 (dataset.h); the flow input side is
 * 32 in pixel space, the VAE's latent side in latent space (build.h). */
#define FM_CFG_IMAGE_SIDE 32
/* Upper end of vae.res_blocks: FM_VAE_MAX_RES (vae.h; build.c asserts it). */
#define FM_CFG_VAE_MAX_RES 4

typedef struct fm_ilist {
    int n;
    int v[FM_CFG_LIST_MAX];
} fm_ilist;

typedef struct fm_flist {
    int n;
    double v[FM_CFG_LIST_MAX];
} fm_flist;

/* Enumerations. Their values are the index of the name in the matching
 * fm_*_names array (the YAML spelling). Path, time distribution and sampler
 * use the values of fm_path_kind / fm_time_kind (path.h) and
 * fm_sampler_kind (sampler.h; stages/generate.c asserts that they agree), the
 * model kind those of fm_flow_arch (flowmodel.h) and the reconstruction loss
 * those of fm_vae_recon (vae.h; models/build.c asserts those). */
typedef enum fm_stage {
    FM_STAGE_VAE,
    FM_STAGE_ENCODE,
    FM_STAGE_GUIDE,
    FM_STAGE_FLOW,
    FM_STAGE_REFLOW,
    FM_STAGE_SAMPLE,
    FM_STAGE_EVAL,
    FM_STAGE_COUNT
} fm_stage;
typedef enum fm_precision { FM_PRECISION_FP32, FM_PRECISION_BF16, FM_PRECISION_AUTO } fm_precision;
typedef enum fm_recon_loss { FM_RECON_L2, FM_RECON_L1 } fm_recon_loss;
typedef enum fm_model_kind { FM_MODEL_UNET, FM_MODEL_DIT } fm_model_kind;

extern const char *const fm_stage_names[];     /* vae encode guide flow reflow sample eval */
extern const char *const fm_precision_names[]; /* fp32 bf16 auto */
extern const char *const fm_recon_names[];     /* l2 l1 */
extern const char *const fm_model_names[];     /* unet dit */
extern const char *const fm_path_names[];      /* linear cosine */
extern const char *const fm_tdist_names[];     /* uniform logit_normal */
extern const char *const fm_sampler_names[];   /* euler heun sde */
extern const char *const fm_target_names[];    /* velocity x1 eps v */
extern const char *const fm_cfg_schedule_names[]; /* constant linear cosine */
extern const char *const fm_weights_names[];   /* flow reflow */
extern const char *const fm_batch_names[];     /* global per_rank */
extern const char *const fm_lr_scale_names[];  /* none linear sqrt */
extern const char *const fm_hier_names[];      /* auto on off */
extern const char *const fm_comm_sched_names[]; /* auto slice rt nice none (fm_comm_sched, commsched.h) */

typedef enum fm_weights_kind { FM_WEIGHTS_FLOW, FM_WEIGHTS_REFLOW } fm_weights_kind;
typedef enum fm_batch_mode { FM_BATCH_GLOBAL, FM_BATCH_PER_RANK } fm_batch_mode;
typedef enum fm_lr_scale { FM_LR_SCALE_NONE, FM_LR_SCALE_LINEAR, FM_LR_SCALE_SQRT } fm_lr_scale;

/* The optimisation settings shared by the trained stages (vae, flow).
 * Keys: <stage>.steps, <stage>.batch_size, ... (no "train." in the key). */
typedef struct fm_train_config {
    int steps;           /* optimiser steps of the stage */
    int batch_size;      /* GLOBAL batch: split evenly over the ranks */
    double lr;           /* peak learning rate (schedule.h: warm-up, cosine decay) */
    double min_lr_ratio; /* final lr / peak lr */
    int warmup;          /* linear warm-up steps, <= steps */
    double weight_decay; /* AdamW decoupled weight decay */
    double beta1, beta2; /* AdamW moment decays */
    double grad_clip;    /* max global gradient norm; 0 = no clipping */
    int ckpt_every;      /* checkpoint every K steps (and at the end) */
} fm_train_config;

typedef struct fm_config {
    struct {
        char out[FM_CFG_STR_MAX]; /* run directory */
        int seed;
        fm_ilist stages;          /* fm_stage values, in pipeline order */
        int log_every;            /* metrics line every K steps */
        int profile_steps;        /* flow steps to profile per layer (0 = off) */
        int schedule_steps;       /* flow steps whose schedule goes to schedule-flow.json (0 = off) */
        int ckpt_keep;            /* keep the newest K checkpoints per stage */
        int threads;              /* OpenMP threads per rank; 0 = OMP_NUM_THREADS */
        int precision;            /* fm_precision */
        int max_bad_steps;        /* consecutive non-finite steps before giving up */
        double peak_gflops;       /* GFLOP/s one rank can reach: mfu's denominator; 0 = unknown */
        fm_ilist fault_nan_steps; /* test-only fault injection: steps with a NaN gradient */
        double memory_limit_gb;   /* a rank's planned memory per stage at most this; 0 = physical memory */
    } run;
    struct {
        char dir[FM_CFG_STR_MAX]; /* folder of the IDX .gz files */
        int train_limit;          /* first N training images; 0 = all */
        int test_limit;           /* first N test images; 0 = all */
    } data;
    struct {
        fm_train_config train;
        fm_ilist channels;        /* width per encoder level; each level halves the side */
        int res_blocks;           /* ResBlocks per level */
        int groups;               /* GroupNorm groups */
        int latent_channels;
        double kl_weight;         /* beta of the KL term */
        int loss;                 /* fm_recon_loss */
    } vae;
    struct {
        int batch_size;           /* global */
    } encode;
    struct {
        fm_train_config train;
        int width;                /* first conv's channels of the latent classifier (guide.h) */
        int time_dim;             /* its time-embedding channels */
    } guide;
    struct {
        fm_train_config train;
        int model;                /* fm_model_kind */
        bool latent;              /* train on VAE latents (true) or on pixels */
        int sample_every;         /* EMA sample grid every K steps; 0 = never */
        double cfg_dropout;       /* eta: P(y -> null) */
        int path;                 /* fm_path_kind */
        int t_dist;               /* fm_time_kind */
        int target;               /* fm_target_kind: what the network predicts */
        double t_mean, t_std;     /* logit-normal m, s */
        fm_flist ema_decay;       /* one EMA per rate, all updated each step; [0]: the "ema." tensors */
        bool ema_warmup;          /* ema.h: decay min(d, (1+k)/(10+k)) */
        double bucket_mb;         /* gradient allreduce bucket size, MiB */
        int accum_steps;          /* micro-batches of batch_size per optimiser step */
    } flow;
    struct {
        fm_train_config train;    /* the fine-tuning of the copy on the straight paths */
        int pairs;                /* (noise, sample) couplings drawn from the flow model */
        double cfg;               /* guidance scale w of the couplings */
        int sampler;              /* fm_sampler_kind of the couplings */
        int sampler_steps;        /* integration steps of the couplings */
        double cfg_dropout;       /* P(y -> null) while fine-tuning */
        double ema_decay;
    } reflow;
    struct {
        fm_ilist channels;        /* width per level; levels after the first halve the side */
        int res_blocks;
        fm_ilist attn_res;        /* sides (e.g. 4 for 4x4) with self-attention */
        int heads;
        int groups;
        int emb_dim;              /* (t, y) embedding width */
    } unet;
    struct {
        int width, depth, heads, patch;
        double mlp_ratio;
    } dit;
    struct {
        fm_flist cfg;             /* guidance scales w, one grid each */
        fm_flist cfg_interval;    /* [t_lo, t_hi]: guidance only there */
        int cfg_schedule;         /* fm_cfg_schedule: w over the interval */
        int sampler;              /* fm_sampler_kind */
        int steps;
        int per_class;            /* samples per class in a grid */
        double sde_sigma;         /* sde: sigma_t = sde_sigma * beta_t */
        double classifier_scale;  /* classifier guidance s (cguide.h; the guide stage's classifier); 0 = off */
        char ema[FM_CFG_STR_MAX]; /* weights to sample: "true", "false" or a rate (fm_config_sample_ema) */
        int weights;              /* fm_weights_kind: the flow's or the reflowed model's */
    } sample;
    struct {
        int classifier_steps;
        int classifier_batch_size; /* global */
        double classifier_lr;
        int samples_per_class;     /* generated per class and guidance scale */
        int batch_size;            /* global: generation and feature extraction */
        fm_ilist table_steps;      /* quality-vs-cost table: sampler steps of its rows; [] = no table */
        fm_flist table_cfg;        /* the table's guidance scales */
        int table_sampler;         /* fm_sampler_kind of the table */
        fm_flist table_interval;   /* [t_lo, t_hi] of the table's interval rows; [0, 1] = none */
        double table_classifier_scale; /* s of the table's classifier-guidance rows; 0 = none */
    } eval;
    struct {
        bool zero;                 /* ZeRO-1: optimiser and EMA state sharded over the ranks */
        int batch;                 /* fm_batch_mode: what the *.batch_size keys count */
        int lr_scale;              /* fm_lr_scale: learning rates for per-rank batches on several ranks */
        double timeout;            /* s: the longest wait for another rank */
        int hierarchical;          /* fm_gs_hier (gradsync.h, in fm_hier_names order): node-aware reduction */
        int comm_sched;            /* fm_comm_sched (commsched.h): the communication thread's scheduling */
    } dist;

    /* Where each key got its value (indexed like the key table); used by
     * error messages, not part of the configuration's value. */
    struct fm_cfg_origin {
        int how;               /* FM_CFG_FROM_* */
        int line, col;         /* file: 1-based position of the value */
        int key_line, key_col; /* file: 1-based position of the key */
    } origin[FM_CFG_MAX_KEYS];
    char file[FM_CFG_STR_MAX]; /* the config file name, "" if none */
} fm_config;

/* ---- the key table ---- */

typedef enum fm_cfg_type {
    FM_T_INT,    /* int */
    FM_T_FLOAT,  /* double */
    FM_T_BOOL,   /* bool */
    FM_T_STRING, /* char[FM_CFG_STR_MAX]; lo/hi bound the length */
    FM_T_ENUM,   /* int: index into names */
    FM_T_INTS,   /* fm_ilist; lo/hi bound each element */
    FM_T_FLOATS, /* fm_flist; lo/hi bound each element */
    FM_T_ENUMS   /* fm_ilist of indexes into names */
} fm_cfg_type;

enum {
    FM_CFG_LO_OPEN = 1 /* lower bound excluded: (lo, hi] */
};

/* Where a key got its value. */
enum { FM_CFG_FROM_DEFAULT, FM_CFG_FROM_FILE, FM_CFG_FROM_SET, FM_CFG_FROM_OUT };

typedef struct fm_cfg_key {
    const char *name;          /* "section.key" */
    fm_cfg_type type;
    size_t off;                /* offsetof(fm_config, ...) */
    const char *def;           /* default, as YAML text ("1e-3", "[64, 128]") */
    double lo, hi;             /* range of numbers / list elements / string length */
    int min_n;                 /* lists: fewest elements */
    unsigned flags;            /* FM_CFG_LO_OPEN */
    const char *const *names;  /* enum spellings, NULL-terminated */
    const char *doc;           /* one line: meaning and units */
} fm_cfg_key;

/* The table, in document order (sections run, data, vae, encode, flow,
 * unet, dit, sample, eval). */
const fm_cfg_key *fm_config_keys(int *n);
/* Index of a key in the table, or -1. */
int fm_config_key_index(const char *name);

/* ---- load, override, check ---- */

/* All defaults; run.out = "runs/default". Cannot fail on a correct table
 * (FM_ERR_INTERNAL naming the key otherwise). */
int fm_config_defaults(fm_config *c, fm_err *e);

/* Defaults, run.out = "runs/<file stem>", then every key of the YAML file.
 * A missing or unreadable file -> FM_ERR_USAGE naming it. Does not run the
 * cross-key checks (overrides come first): call fm_config_validate. */
int fm_config_load(fm_config *c, const char *path, fm_err *e);

/* The same from text in memory; `name` is used in messages and for the
 * run.out stem (e.g. the config saved in a checkpoint). */
int fm_config_load_string(fm_config *c, const char *text, size_t len, const char *name, fm_err *e);

/* Apply one override "section.key=value". The value is a YAML scalar or
 * flow sequence ("[1, 3, 5]"), typed like the file; string keys take the
 * text after '=' verbatim. Errors name the assignment:
 * "--set flow.lr=fast: flow.lr: expected a number, got "fast"". */
int fm_config_set(fm_config *c, const char *assignment, fm_err *e);

/* --out DIR: run.out = dir verbatim. */
int fm_config_set_out(fm_config *c, const char *dir, fm_err *e);

/* Cross-key checks of the configuration itself (stage order, stages a pixel
 * flow does not use, warm-up <= steps). Errors name the keys and carry the
 * position of the first one. The architectures (widths divisible by groups
 * and heads, resolutions, ...) are the models' to check: fm_build_validate
 * (build.h) runs this and then those. */
int fm_config_validate(const fm_config *c, fm_err *e);

/* Every global batch size of the configured stages must split evenly over
 * world_size ranks (with dist.batch: global; per-rank batches always do). */
int fm_config_check_world(const fm_config *c, int world_size, fm_err *e);

/* The configuration the stages run with on world_size ranks: with
 * dist.batch: per_rank every *.batch_size is multiplied by world_size (the
 * global batch) and every learning rate by world_size (dist.lr_scale:
 * linear) or its square root (sqrt); with dist.batch: global, nothing
 * changes. Logs what it changed. FM_ERR_USAGE naming the key when a global
 * batch would exceed 2^20. c itself stays what the user gave (config.yaml
 * and the checkpoints record that). */
int fm_config_apply_world(fm_config *c, int world_size, fm_err *e);

/* ---- output ---- */

/* Write the configuration as YAML that fm_config_load reads back to an equal
 * configuration (fm_config_equal). Returns FM_ERR_IO if writing fails. */
int fm_config_dump(const fm_config *c, FILE *f, fm_err *e);

/* 1 if every key has the same value in a and b (origins are ignored). */
int fm_config_equal(const fm_config *a, const fm_config *b);

/* 1 if key number ki (fm_config_keys order) has the same value in a and b. */
int fm_config_key_equal(const fm_config *a, const fm_config *b, int ki);

/* The value of key number ki in c as YAML text (as fm_config_dump writes it). */
void fm_config_format(const fm_config *c, int ki, char *buf, size_t n);

/* dst's key number ki (value and origin) = src's. */
void fm_config_copy_key(fm_config *dst, const fm_config *src, int ki);

/* The reference of every key as Markdown tables, one per section
 * (docs/config.md embeds this text). */
int fm_config_reference(FILE *f, fm_err *e);

/* ---- queries ---- */

bool fm_config_has_stage(const fm_config *c, fm_stage s);
/* The weights sample.ema selects: 0 = the raw (trained) weights, 1 = an EMA,
 * its decay in *rate (the first of flow.ema_decay for "true"). sample.ema
 * was checked by fm_config_validate. */
int fm_config_sample_ema(const fm_config *c, double *rate);
/* "EMA 0.999" or "raw weights": what sample.ema selects, for labels and logs. */
void fm_config_weights_label(const fm_config *c, char *out, size_t cap);
/* A list of EMA rates as "[0.999, 0.9999]" (%.10g each). */
void fm_config_format_rates(const fm_flist *d, char *out, size_t cap);
/* Where `key` got its value, as a message prefix: "tiny.yaml:12:3",
 * "--set flow.lr=0.001", "--out DIR", or (a default) the file name, or
 * "defaults" without a file. */
void fm_config_where(const fm_config *c, const char *key, char *buf, size_t n);
#endif
