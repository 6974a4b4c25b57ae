/* fmtrain.c - the command line: argument parsing and the stage pipeline.
 *
 *   fmtrain CONFIG [--out DIR] [--set section.key=value]... [--profile[=N]] [--dump-schedule[=N]] [--dry-run]
 *   fmtrain sample CKPT [--class c] [--cfg w] [--steps n] [--sampler s] [--seed s] -o FILE.png
 *   fmtrain eval RUN_DIR
 *   fmtrain --help | --version | --keys
 *
 * CONFIG is validated (config, overrides, rank count, data) before anything
 * is created; then the stages run (src/stages/pipeline.c). With --dry-run the
 * resolved config and the plan are printed and nothing is created. The exit
 * status is the fm status (status.h). Every rank runs the same checks; rank 0
 * prints, and all ranks exit with the worst status. The dataset is held once
 * per node, in a block node rank 0 reads and decodes (see load_data). */
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fm/build.h"
#include "fm/ckpt.h"
#include "fm/config.h"
#include "fm/crc32c.h"
#include "fm/dataset.h"
#include "fm/generate.h"
#include "fm/log.h"
#include "fm/commsched.h"
#include "fm/pipeline.h"
#include "fm/sample_files.h"
#include "fm/shared.h"
#include "fm/signals.h"
#include "fm/status.h"
#include "fm/version.h"
#include "fm/world.h"

#define MAX_OVERRIDES 256
#define PROFILE_DEFAULT_STEPS 20 /* --profile without =N */

static const char usage_text[] =
    "usage: fmtrain CONFIG [--out DIR] [--set section.key=value]... [--profile[=N]] [--dump-schedule[=N]]\n"
    "               [--dry-run]\n"
    "       fmtrain sample CKPT [--class c] [--cfg w] [--classifier-scale s] [--steps n] [--sampler euler|heun|sde]\n"
    "               [--seed s] [--vae VAE_CKPT] [--ema RATE|raw] [-o FILE.png] [--n N | --per-class K]\n"
    "               [--out-dir DIR] [--npz FILE.npz]\n"
    "       fmtrain eval RUN_DIR\n"
    "       fmtrain plot RUN_DIR [-o FILE.png]\n"
    "       fmtrain --help | --version | --keys\n";

static const char help_text[] =
    "\n"
    "Trains a class-conditional latent flow-matching model on Fashion-MNIST: the stages\n"
    "vae -> encode -> flow [-> reflow] -> sample -> eval listed in run.stages of CONFIG\n"
    "(YAML, see docs/config.md). Each stage resumes from its own checkpoints in the run\n"
    "directory.\n"
    "Run data-parallel with: mpirun -np N fmtrain CONFIG (batch sizes are global).\n"
    "\n"
    "options:\n"
    "  --out DIR                 run directory (sets run.out; default runs/<config file stem>)\n"
    "  --set section.key=value   override one config key; repeatable, applied in order;\n"
    "                            the value is YAML (e.g. --set sample.cfg=[1,3,5])\n"
    "  --profile[=N]             time every layer and update phase of N flow steps (default 20)\n"
    "                            after 3 warm-up steps, then train on; tables to stderr and to\n"
    "                            RUN/profile-flow.txt and .json (= --set run.profile_steps=N)\n"
    "  --dump-schedule[=N]       record phase and per-bucket gradient-reduction times of N flow\n"
    "                            steps (default 20) into RUN/schedule-flow.json, the input of\n"
    "                            jobs/simulate (= --set run.schedule_steps=N)\n"
    "  --dry-run                 validate config and data, print the resolved config and the\n"
    "                            plan, create nothing\n"
    "  --keys                    print every config key: type, default, range, meaning\n"
    "  -h, --help                print this help\n"
    "  --version                 print the version, git revision, compiler, oneDNN version and ISA,\n"
    "                            MPI library, OpenMP threads and binding (every run logs it first)\n"
    "\n"
    "sample: draw a grid from checkpoint CKPT (rows = classes, or only --class c) with\n"
    "guidance scale w (default: the first w > 1 of the run's sample.cfg), n sampler steps\n"
    "and seed s into FILE.png, labelled with class names, w and step. --n N (classes in\n"
    "turn, or all --class c) or --per-class K samples go one PNG per sample into --out-dir\n"
    "DIR and/or into --npz FILE.npz (images uint8 [N, 32, 32], labels int64 [N]), drawn in\n"
    "batches of eval.batch_size. --vae: the VAE checkpoint when CKPT is not in its run's ckpt/.\n"
    "--ema: the EMA of that decay (one of the run's flow.ema_decay) or raw (the trained\n"
    "weights) instead of the run's sample.ema.\n"
    "--classifier-scale s: classifier guidance with the run's guide checkpoint (default:\n"
    "the run's sample.classifier_scale; 0 = off). Sampling uses the run's run.precision\n"
    "(auto: bf16 when this CPU has AVX512-BF16), as the run's own grids and eval did.\n"
    "eval: score the samples of a finished run directory.\n"
    "plot: one PNG report of a run directory (RUN_DIR/report.png; scripts/plot_run.py).\n"
    "\n"
    "exit status: 0 done, 1 internal error, 2 bad usage or config, 3 bad data,\n"
    "4 I/O error, 75 preempted (checkpoint written, requeue me).\n";

typedef enum { CMD_TRAIN, CMD_SAMPLE, CMD_EVAL, CMD_PLOT, CMD_HELP, CMD_VERSION, CMD_KEYS } cmd_kind;

typedef struct override {
    int is_out; /* 1: --out DIR, 0: --set key=value */
    const char *text;
} override;

typedef struct args {
    cmd_kind cmd;
    const char *config;                  /* train */
    override ovr[MAX_OVERRIDES];
    int novr;
    const char *ckpt, *png;              /* sample (png: also plot's -o) */
    const char *out_dir, *npz, *vae;     /* sample: NULL = not given */
    const char *ema;                     /* sample --ema RATE|raw: NULL = the checkpoint's sample.ema */
    int n_samples, per_class;            /* sample: -1 = not given */
    int cls, steps, seed, sampler;       /* -1 = not given */
    double cfg;                          /* < 0 = not given */
    double cscale;                       /* --classifier-scale: < 0 = not given */
    const char *run_dir;                 /* eval */
    int dry_run;                         /* train: validate and print the plan only */
    char profile_set[64];                /* "run.profile_steps=N" of --profile, an override's text */
    char schedule_set[64];               /* "run.schedule_steps=N" of --dump-schedule */
} args;

static int usage_fail(fm_err *e, const char *fmt, const char *arg)
{
    char what[256];
    snprintf(what, sizeof what, fmt, arg);
    return fm_fail(e, FM_ERR_USAGE, "%s\nTry 'fmtrain --help' for more information.", what);
}

/* The value of option argv[*i] ("--opt VALUE" or "--opt=VALUE"), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, fm_err *e, int *rc)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *rc = usage_fail(e, "option '%s' needs a value", name);
        return NULL;
    }
    return argv[++*i];
}

static int parse_int_opt(const char *cmd, const char *opt, const char *v, int lo, int hi, int *out, fm_err *e)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno)
        return fm_fail(e, FM_ERR_USAGE, "fmtrain %s: %s: expected an integer, got \"%s\"", cmd, opt, v);
    if (x < lo || x > hi)
        return fm_fail(e, FM_ERR_USAGE, "fmtrain %s: %s: %s is out of range [%d, %d]", cmd, opt, v, lo, hi);
    *out = (int)x;
    return FM_OK;
}

static int parse_sample_args(int argc, char **argv, args *a, fm_err *e)
{
    for (int i = 2; i < argc; i++) {
        int rc = FM_OK;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--class", e, &rc)))
            FM_TRY(parse_int_opt("sample", "--class", v, 0, FM_MNIST_CLASSES - 1, &a->cls, e));
        else if ((v = opt_value(argc, argv, &i, "--steps", e, &rc)))
            FM_TRY(parse_int_opt("sample", "--steps", v, 1, 100000, &a->steps, e));
        else if ((v = opt_value(argc, argv, &i, "--seed", e, &rc)))
            FM_TRY(parse_int_opt("sample", "--seed", v, 0, INT_MAX, &a->seed, e));
        else if ((v = opt_value(argc, argv, &i, "--cfg", e, &rc))) {
            char *end;
            a->cfg = strtod(v, &end);
            if (!*v || *end || !(a->cfg >= 0 && a->cfg <= 100))
                return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: --cfg: expected a guidance scale in [0, 100], got \"%s\"",
                               v);
        } else if ((v = opt_value(argc, argv, &i, "--classifier-scale", e, &rc))) {
            char *end;
            a->cscale = strtod(v, &end);
            if (!*v || *end || !(a->cscale >= 0 && a->cscale <= 100))
                return fm_fail(e, FM_ERR_USAGE,
                               "fmtrain sample: --classifier-scale: expected a classifier guidance scale in [0, 100], "
                               "got \"%s\"", v);
        } else if ((v = opt_value(argc, argv, &i, "--sampler", e, &rc))) {
            a->sampler = -1;
            for (int k = 0; fm_sampler_names[k]; k++)
                if (!strcmp(v, fm_sampler_names[k]))
                    a->sampler = k;
            if (a->sampler < 0)
                return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: --sampler: expected one of euler, heun, sde, got \"%s\"",
                               v);
        } else if ((v = opt_value(argc, argv, &i, "-o", e, &rc)) || (v = opt_value(argc, argv, &i, "--output", e, &rc))) {
            a->png = v;
        } else if ((v = opt_value(argc, argv, &i, "--n", e, &rc))) {
            FM_TRY(parse_int_opt("sample", "--n", v, 1, 1000000, &a->n_samples, e));
        } else if ((v = opt_value(argc, argv, &i, "--per-class", e, &rc))) {
            FM_TRY(parse_int_opt("sample", "--per-class", v, 1, 100000, &a->per_class, e));
        } else if ((v = opt_value(argc, argv, &i, "--out-dir", e, &rc))) {
            a->out_dir = v;
        } else if ((v = opt_value(argc, argv, &i, "--npz", e, &rc))) {
            a->npz = v;
        } else if ((v = opt_value(argc, argv, &i, "--vae", e, &rc))) {
            a->vae = v;
        } else if ((v = opt_value(argc, argv, &i, "--ema", e, &rc))) {
            char *end;
            double r = strtod(v, &end);
            if (strcmp(v, "raw") != 0 && (!*v || *end || !(r >= 0 && r <= 1)))
                return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: --ema: expected an EMA rate in [0, 1] or raw, got "
                               "\"%s\"", v);
            a->ema = v;
        } else if (rc != FM_OK) {
            return rc;
        } else if (argv[i][0] == '-') {
            return usage_fail(e, "fmtrain sample: unknown option '%s'", argv[i]);
        } else if (!a->ckpt) {
            a->ckpt = argv[i];
        } else {
            return usage_fail(e, "fmtrain sample: unexpected argument '%s'", argv[i]);
        }
        if (rc != FM_OK)
            return rc;
    }
    if (!a->ckpt)
        return usage_fail(e, "fmtrain sample: missing the checkpoint%s", "");
    if (!a->png && !a->out_dir && !a->npz)
        return usage_fail(e, "fmtrain sample: missing -o FILE.png (a grid), --out-dir DIR or --npz FILE.npz%s", "");
    size_t n = a->png ? strlen(a->png) : 0;
    if (a->png && (n < 5 || strcmp(a->png + n - 4, ".png") != 0))
        return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: -o %s: the output must be a .png file", a->png);
    n = a->npz ? strlen(a->npz) : 0;
    if (a->npz && (n < 5 || strcmp(a->npz + n - 4, ".npz") != 0))
        return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: --npz %s: the output must be a .npz file", a->npz);
    if (a->n_samples > 0 && a->per_class > 0)
        return usage_fail(e, "fmtrain sample: give --n or --per-class, not both%s", "");
    if (a->n_samples > 0 && !a->out_dir && !a->npz)
        return usage_fail(e, "fmtrain sample: --n needs --out-dir DIR or --npz FILE.npz (the grid has a row per class)%s",
                          "");
    if ((a->out_dir || a->npz) && a->n_samples < 0 && a->per_class < 0)
        return usage_fail(e, "fmtrain sample: --out-dir and --npz need --n N or --per-class K%s", "");
    const char *files[2] = { a->ckpt, a->vae };
    for (int k = 0; k < 2 && files[k]; k++) {
        struct stat st; /* stat, not open: opening a FIFO would wait for a writer */
        if (stat(files[k], &st) != 0)
            return fm_fail(e, FM_ERR_USAGE, "fmtrain sample: %s: cannot open checkpoint: %s", files[k],
                           strerror(errno));
        if (!S_ISREG(st.st_mode))
            return fm_fail(e, FM_ERR_DATA, "fmtrain sample: %s: the checkpoint is not a regular file", files[k]);
    }
    return FM_OK;
}

/* fmtrain plot RUN_DIR [-o FILE.png] */
static int parse_plot_args(int argc, char **argv, args *a, fm_err *e)
{
    for (int i = 2; i < argc; i++) {
        int rc = FM_OK;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "-o", e, &rc)))
            a->png = v;
        else if (rc != FM_OK)
            return rc;
        else if (argv[i][0] == '-')
            return usage_fail(e, "fmtrain plot: unknown option '%s'", argv[i]);
        else if (a->run_dir)
            return usage_fail(e, "fmtrain plot: unexpected argument '%s'", argv[i]);
        else
            a->run_dir = argv[i];
    }
    if (!a->run_dir)
        return usage_fail(e, "fmtrain plot: missing the run directory%s", "");
    return FM_OK;
}

static int parse_eval_args(int argc, char **argv, args *a, fm_err *e)
{
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] == '-')
            return usage_fail(e, "fmtrain eval: unknown option '%s'", argv[i]);
        if (a->run_dir)
            return usage_fail(e, "fmtrain eval: unexpected argument '%s'", argv[i]);
        a->run_dir = argv[i];
    }
    if (!a->run_dir)
        return usage_fail(e, "fmtrain eval: missing the run directory%s", "");
    struct stat st;
    if (stat(a->run_dir, &st) != 0)
        return fm_fail(e, FM_ERR_USAGE, "fmtrain eval: %s: %s", a->run_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fm_fail(e, FM_ERR_USAGE, "fmtrain eval: %s: not a run directory", a->run_dir);
    return FM_OK;
}

/* arg is FLAG or FLAG=... */
static int window_flag(const char *arg, const char *flag)
{
    const size_t n = strlen(flag);
    return !strncmp(arg, flag, n) && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_args(int argc, char **argv, args *a, fm_err *e)
{
    memset(a, 0, sizeof *a);
    a->cls = a->steps = a->seed = a->sampler = -1;
    a->cfg = -1;
    a->cscale = -1;
    a->n_samples = a->per_class = -1;
    for (int i = 2; i < argc && (!strcmp(argv[1], "sample") || !strcmp(argv[1], "eval") || !strcmp(argv[1], "plot"));
         i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            a->cmd = CMD_HELP;
            return FM_OK;
        }
    if (argc >= 2 && !strcmp(argv[1], "sample")) {
        a->cmd = CMD_SAMPLE;
        return parse_sample_args(argc, argv, a, e);
    }
    if (argc >= 2 && !strcmp(argv[1], "eval")) {
        a->cmd = CMD_EVAL;
        return parse_eval_args(argc, argv, a, e);
    }
    if (argc >= 2 && !strcmp(argv[1], "plot")) {
        a->cmd = CMD_PLOT;
        return parse_plot_args(argc, argv, a, e);
    }
    a->cmd = CMD_TRAIN;
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v;
        int rc = FM_OK;
        if (!only_positional && (!strcmp(arg, "--help") || !strcmp(arg, "-h"))) {
            a->cmd = CMD_HELP;
            return FM_OK;
        }
        if (!only_positional && !strcmp(arg, "--version")) {
            a->cmd = CMD_VERSION;
            return FM_OK;
        }
        if (!only_positional && !strcmp(arg, "--keys")) {
            a->cmd = CMD_KEYS;
            return FM_OK;
        }
        if (!only_positional && !strcmp(arg, "--dry-run")) {
            a->dry_run = 1;
            continue;
        }
        if (!only_positional && (window_flag(arg, "--profile") || window_flag(arg, "--dump-schedule"))) {
            const int profile = window_flag(arg, "--profile");
            const size_t fl = strlen(profile ? "--profile" : "--dump-schedule");
            int steps = PROFILE_DEFAULT_STEPS;
            if (arg[fl] == '=') {
                char *end;
                errno = 0;
                long n = strtol(arg + fl + 1, &end, 10);
                if (!arg[fl + 1] || *end || errno || n < 0 || n > (profile ? 1000000000 : 100000))
                    return usage_fail(e, profile ? "--profile=N: expected a number of steps (0 = off), got '%s'"
                                                 : "--dump-schedule=N: expected a number of steps (0 = off, at most "
                                                   "100000), got '%s'",
                                      arg + fl + 1);
                steps = (int)n;
            } else if (i + 1 < argc && argv[i + 1][0] && strspn(argv[i + 1], "0123456789") == strlen(argv[i + 1])) {
                return usage_fail(e, profile ? "--profile takes its number of steps after '=': --profile=%s"
                                             : "--dump-schedule takes its number of steps after '=': --dump-schedule=%s",
                                  argv[i + 1]);
            }
            if (a->novr == MAX_OVERRIDES)
                return usage_fail(e, "more than %s --set/--out options", "256");
            char *text = profile ? a->profile_set : a->schedule_set;
            snprintf(text, sizeof a->profile_set, "run.%s_steps=%d", profile ? "profile" : "schedule", steps);
            a->ovr[a->novr].is_out = 0;
            a->ovr[a->novr++].text = text;
            continue;
        }
        if (!only_positional && !strcmp(arg, "--")) {
            only_positional = 1;
            continue;
        }
        int is_out = 0;
        if (!only_positional && ((v = opt_value(argc, argv, &i, "--set", e, &rc)) ||
                                 (rc == FM_OK && (is_out = 1, v = opt_value(argc, argv, &i, "--out", e, &rc))))) {
            if (a->novr == MAX_OVERRIDES)
                return usage_fail(e, "more than %s --set/--out options", "256");
            a->ovr[a->novr].is_out = is_out;
            a->ovr[a->novr++].text = v;
            continue;
        }
        if (rc != FM_OK)
            return rc;
        if (!only_positional && arg[0] == '-' && arg[1] != '\0')
            return usage_fail(e, "unknown option '%s'", arg);
        if (a->config)
            return usage_fail(e, "unexpected argument '%s' (one CONFIG file only)", arg);
        a->config = arg;
    }
    if (!a->config)
        return usage_fail(e, "missing the CONFIG file%s", "");
    return FM_OK;
}

/* The resolved configuration, as YAML with the plan in comments. */
static void print_plan(const fm_config *c, const fm_dataset *train, const fm_dataset *test, int world, FILE *f)
{
    int side, ch;
    fm_build_flow_shape(c, &side, &ch);
    fprintf(f, "# would run:");
    for (int i = 0; i < c->run.stages.n; i++) {
        fprintf(f, "%s", i ? " ->" : "");
        switch ((fm_stage)c->run.stages.v[i]) {
        case FM_STAGE_VAE:
            fprintf(f, " vae (%d steps, batch %d, %dx%dx1 -> %dx%dx%d latents)", c->vae.train.steps,
                    c->vae.train.batch_size, FM_CFG_IMAGE_SIDE, FM_CFG_IMAGE_SIDE, side, side, ch);
            break;
        case FM_STAGE_ENCODE:
            fprintf(f, " encode (%d images, batch %d)", train->n, c->encode.batch_size);
            break;
        case FM_STAGE_GUIDE:
            fprintf(f, " guide (latent classifier on %dx%dx%d, %d steps, batch %d)", side, side, ch,
                    c->guide.train.steps, c->guide.train.batch_size);
            break;
        case FM_STAGE_FLOW:
            fprintf(f, " flow (%s on %dx%dx%d %s, %d steps, batch %d, %s path, cfg dropout %g)",
                    fm_model_names[c->flow.model], side, side, ch, c->flow.latent ? "latents" : "pixels",
                    c->flow.train.steps, c->flow.train.batch_size * c->flow.accum_steps, fm_path_names[c->flow.path], c->flow.cfg_dropout);
            break;
        case FM_STAGE_REFLOW:
            fprintf(f, " reflow (%d couplings at w = %g by %s in %d steps, %d steps, batch %d)", c->reflow.pairs,
                    c->reflow.cfg, fm_sampler_names[c->reflow.sampler], c->reflow.sampler_steps, c->reflow.train.steps,
                    c->reflow.train.batch_size);
            break;
        case FM_STAGE_SAMPLE:
            fprintf(f, " sample (%s, %d steps, %d per class, cfg [", fm_sampler_names[c->sample.sampler],
                    c->sample.steps, c->sample.per_class);
            for (int k = 0; k < c->sample.cfg.n; k++)
                fprintf(f, "%s%g", k ? ", " : "", c->sample.cfg.v[k]);
            fprintf(f, "])");
            break;
        case FM_STAGE_EVAL:
            fprintf(f, " eval (classifier %d steps, %d samples per class and scale, %d test images)",
                    c->eval.classifier_steps, c->eval.samples_per_class, test->n);
            break;
        case FM_STAGE_COUNT:
            break;
        }
    }
    fprintf(f, "\n# data: %d training and %d test images of %dx%d from %s\n", train->n, test->n, train->h, train->w,
            c->data.dir);
    fprintf(f, "# world: %d rank%s x %d OpenMP thread%s\n", world, world == 1 ? "" : "s", omp_get_max_threads(),
            omp_get_max_threads() == 1 ? "" : "s");
    const fm_precision here = fm_precision_here(FM_PRECISION_AUTO, 0);
    if (c->run.precision == FM_PRECISION_AUTO)
        fprintf(f, "# precision: auto is %s on this CPU (%s AVX512-BF16; at start the ranks agree: fp32 if any lacks "
                "it)\n", fm_precision_names[here], here == FM_PRECISION_BF16 ? "it has" : "it has no");
    fprintf(f, "# dry run: nothing was run, and %s was not created\n", c->run.out);
}

/* --dry-run: what dist.comm_sched puts in force here (tried on a thread of
 * its own), as a plan line; an explicit policy the system refuses fails as
 * the run would, when it has more than one rank (one rank has no
 * communication thread). */
static int print_comm_sched(const fm_config *c, int world, FILE *f, fm_err *e)
{
    fm_comm_sched_state st;
    int rc = fm_comm_sched_probe(c->dist.comm_sched, &st, e);
    if (rc != FM_OK && world > 1)
        return rc;
    char what[sizeof e->msg + 32];
    if (rc != FM_OK)
        snprintf(what, sizeof what, "%s (unused on one rank)", e->msg);
    else
        fm_comm_sched_describe(&st, what, (int)sizeof what);
    fprintf(f, "# dist.comm_sched: %s%s%s\n", c->dist.comm_sched == FM_COMM_SCHED_AUTO ? "auto: " : "", what,
            c->dist.comm_sched == FM_COMM_SCHED_AUTO ? " (none when the gradient is one bucket)" : "");
    return FM_OK;
}

/* ---- the dataset, once per node ---- */

/* The dataset's block: this header, then the training images and labels,
 * then the test images and labels, each part 64-byte aligned. */
typedef struct data_head {
    int32_t n_train, n_test;
} data_head;

#define DATA_ALIGN 64
#define IMG_FLOATS ((size_t)FM_MNIST_PADDED * FM_MNIST_PADDED)

static size_t align_up(size_t n) { return (n + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN; }

/* Offsets of the four parts in the block; returns its size. */
static size_t data_layout(int n_train, int n_test, size_t off[4])
{
    size_t at = align_up(sizeof(data_head));
    const size_t part[4] = { (size_t)n_train * IMG_FLOATS * sizeof(float), (size_t)n_train * sizeof(int32_t),
                             (size_t)n_test * IMG_FLOATS * sizeof(float), (size_t)n_test * sizeof(int32_t) };
    for (int k = 0; k < 4; k++) {
        off[k] = at;
        at += align_up(part[k]);
    }
    return at;
}

/* What node rank 0 reads (fm_shared_filler's ctx). */
typedef struct data_reader {
    const fm_config *c;
    fm_mnist_raw train, test;
} data_reader;

static int data_size(void *ctx, size_t *bytes, fm_err *e)
{
    data_reader *r = ctx;
    FM_TRY(fm_mnist_read(r->c->data.dir, "train", r->c->data.train_limit, &r->train, e));
    FM_TRY(fm_mnist_read(r->c->data.dir, "t10k", r->c->data.test_limit, &r->test, e));
    size_t off[4];
    *bytes = data_layout(r->train.n, r->test.n, off);
    return FM_OK;
}

static int data_fill(void *ctx, void *base, size_t bytes, fm_err *e)
{
    (void)bytes;
    (void)e;
    data_reader *r = ctx;
    char *b = base;
    size_t off[4];
    data_layout(r->train.n, r->test.n, off);
    data_head h = { r->train.n, r->test.n };
    memcpy(b, &h, sizeof h);
    fm_mnist_decode(&r->train, (float *)(b + off[0]), (int32_t *)(b + off[1]));
    fm_mnist_decode(&r->test, (float *)(b + off[2]), (int32_t *)(b + off[3]));
    fm_mnist_raw_free(&r->train);
    fm_mnist_raw_free(&r->test);
    return FM_OK;
}

/* The training and test sets as views into one block per node. */
typedef struct data {
    fm_node node;
    fm_shared block;
    fm_dataset train, test;
} data;

/* Rank 0 logs, for every rank (for the first 16 and a summary beyond), the
 * bytes of data it sees in a node-shared block and the bytes it holds
 * privately. Collective. */
static int log_data(const data *d, const fm_world *w, fm_err *e)
{
    const double mine[3] = { (double)d->node.rank, (double)d->node.size, d->block.in_window ? 1.0 : 0.0 };
    double *all = malloc((size_t)w->size * 3 * sizeof *all);
    if (!all)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d ranks' data figures", w->size);
    int rc = fm_world_allgather(w, mine, 3, all, e);
    if (rc == FM_OK && w->rank == 0) {
        const double mib = d->block.bytes / 1048576.0;
        int nodes = 0, shown = w->size <= 16 ? w->size : 1;
        for (int r = 0; r < w->size; r++) {
            const int nrank = (int)all[3 * r], nsize = (int)all[3 * r + 1], win = all[3 * r + 2] != 0.0;
            nodes += nrank == 0;
            if (r >= shown)
                continue;
            char who[32] = "";
            if (r > 0)
                snprintf(who, sizeof who, "rank %d: ", r);
            if (win)
                fm_info("data: %s%.1f MiB in a node-shared block (node rank %d of %d %s it), 0.0 MiB private", who,
                        mib, nrank, nsize, nrank == 0 ? "holds" : "maps");
            else
                fm_info("data: %s%.1f MiB private (the only rank of its node)", who, mib);
        }
        if (w->size > 1)
            fm_info("data: %d rank%s on %d node%s: %.1f MiB in all (one copy per node), where a copy per rank "
                    "would take %.1f MiB",
                    w->size, w->size == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s", nodes * mib, w->size * mib);
    }
    free(all);
    return rc;
}

/* Load the training and test sets of c once per node: node rank 0 reads and
 * decodes them into a node-shared block, the other ranks map it. Collective;
 * every rank returns the same status (a data file that fails on one node
 * stops every rank with its message). */
static int load_data(const fm_config *c, const fm_world *w, data *d, fm_err *e)
{
    memset(d, 0, sizeof *d);
    FM_TRY(fm_node_init(&d->node, w, e));
    data_reader r;
    memset(&r, 0, sizeof r);
    r.c = c;
    const fm_shared_filler f = { data_size, data_fill, &r };
    int rc = fm_shared_load(&d->node, &f, "the dataset", &d->block, e);
    fm_mnist_raw_free(&r.train);
    fm_mnist_raw_free(&r.test);
    if (rc != FM_OK) {
        fm_node_free(&d->node);
        return rc;
    }
    const char *b = d->block.base;
    data_head h;
    memcpy(&h, b, sizeof h);
    size_t off[4];
    data_layout(h.n_train, h.n_test, off);
    d->train = (fm_dataset){ h.n_train, FM_MNIST_PADDED, FM_MNIST_PADDED, (float *)(b + off[0]),
                             (int32_t *)(b + off[1]) };
    d->test = (fm_dataset){ h.n_test, FM_MNIST_PADDED, FM_MNIST_PADDED, (float *)(b + off[2]),
                            (int32_t *)(b + off[3]) };
    /* each node read the files on its own: every rank must hold what rank 0 holds */
    const double mine[4] = { h.n_train, h.n_test, fm_crc32c(0, d->train.labels, (size_t)h.n_train * sizeof(int32_t)),
                             fm_crc32c(0, d->test.labels, (size_t)h.n_test * sizeof(int32_t)) };
    int differs;
    rc = fm_world_same(w, mine, 4, &differs, e);
    if (rc == FM_OK && differs >= 0)
        rc = fm_fail(e, FM_ERR_DATA, "rank %d read other data than rank 0 from %s (other image counts or labels): "
                     "every node must see the same data.dir", differs, c->data.dir);
    return rc == FM_OK ? log_data(d, w, e) : rc;
}

/* ok: every rank ends the run here with success (the block's window is then
 * freed collectively; after an error it stays mapped until exit). */
static void free_data(data *d, int ok)
{
    fm_shared_free(&d->node, &d->block, ok);
    fm_node_free(&d->node);
    memset(&d->train, 0, sizeof d->train);
    memset(&d->test, 0, sizeof d->test);
}

/* The --version report, one log line each (rank 0 logs): the top of a run's log. */
static void log_version(int ranks)
{
    char text[4096];
    fm_version_text(text, sizeof text, ranks);
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        fm_info("%s", line);
    }
}

/* Validate CONFIG with its overrides, the rank count and the data; on
 * success rank 0 prints the resolved config and the plan. */
static int run_train(const args *a, fm_world *w, fm_err *e)
{
    fm_config c;
    FM_TRY(fm_config_load(&c, a->config, e));
    for (int i = 0; i < a->novr; i++) {
        if (a->ovr[i].is_out)
            FM_TRY(fm_config_set_out(&c, a->ovr[i].text, e));
        else
            FM_TRY(fm_config_set(&c, a->ovr[i].text, e));
    }
    FM_TRY(fm_build_validate(&c, e));
    FM_TRY(fm_config_check_world(&c, w->size, e));
    FM_TRY(fm_build_check_memory(&c, w->size, e));
    fm_world_set_timeout(w, c.dist.timeout);
    if (c.run.threads > 0)
        omp_set_num_threads(c.run.threads);
    log_version(w->size);

    data d;
    FM_TRY(load_data(&c, w, &d, e));
    int rc = FM_OK;
    if (a->dry_run && w->rank == 0) {
        rc = fm_config_dump(&c, stdout, e);
        if (rc == FM_OK)
            rc = print_comm_sched(&c, w->size, stdout, e);
        if (rc == FM_OK) {
            print_plan(&c, &d.train, &d.test, w->size, stdout);
            if (fflush(stdout) != 0)
                rc = fm_fail(e, FM_ERR_IO, "cannot write to standard output: %s", strerror(errno));
        }
        if (rc == FM_OK)
            fm_info("config and data are valid (dry run: nothing was run)");
    }
    if (rc == FM_OK && !a->dry_run)
        rc = fm_pipeline_run(&c, &d.train, &d.test, w, 0, e);
    free_data(&d, rc == FM_OK);
    return rc;
}

/* The run directory of a checkpoint RUN/ckpt/<name>: RUN. */
static void run_dir_of(const char *ckpt, char *out, size_t n)
{
    snprintf(out, n, "%s", ckpt);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(out, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(out, n, ".");
    }
    if (!out[0])
        snprintf(out, n, "/");
}

/* The default guidance scale of `fmtrain sample`: the first w > 1 of
 * sample.cfg (a guided one), else its first, else 1. */
static double default_guidance(const fm_config *c)
{
    for (int k = 0; k < c->sample.cfg.n; k++)
        if (c->sample.cfg.v[k] > 1)
            return c->sample.cfg.v[k];
    return c->sample.cfg.n > 0 ? c->sample.cfg.v[0] : 1.0;
}

/* fmtrain sample: a labelled grid and/or N single samples from a flow
 * checkpoint (its config is in the checkpoint; the VAE comes from --vae or
 * the newest vae checkpoint of the same run). */
static int run_sample(const args *a, const fm_world *w, fm_err *e)
{
    if (w->rank != 0)
        return FM_OK;
    fm_ckpt probe;
    FM_TRY(fm_ckpt_load_file(a->ckpt, NULL, 0, NULL, 0, &probe, e));
    const char *text = fm_ckpt_meta(&probe, "config");
    int rc = FM_OK;
    fm_config c;
    if (strcmp(probe.stage, "flow") != 0 && strcmp(probe.stage, "reflow") != 0) /* the same model and groups */
        rc = fm_fail(e, FM_ERR_USAGE, "fmtrain sample: %s is a %s checkpoint, not a flow or reflow checkpoint",
                     a->ckpt, probe.stage);
    else if (!text)
        rc = fm_fail(e, FM_ERR_DATA, "%s: the checkpoint holds no config", a->ckpt);
    else
        rc = fm_config_load_string(&c, text, strlen(text), a->ckpt, e);
    fm_ckpt_close(&probe);
    FM_TRY(rc);
    char run_dir[4096];
    run_dir_of(a->ckpt, run_dir, sizeof run_dir);
    FM_TRY(fm_config_set_out(&c, run_dir, e));
    if (a->cscale >= 0)
        c.sample.classifier_scale = a->cscale;
    c.run.stages.n = 1; /* what this command runs of the checkpoint's config */
    c.run.stages.v[0] = FM_STAGE_SAMPLE;
    if (a->ema) { /* --ema: checked against the checkpoint's flow.ema_decay like sample.ema */
        char set[64];
        snprintf(set, sizeof set, "sample.ema=%s", strcmp(a->ema, "raw") ? a->ema : "false");
        rc = fm_config_set(&c, set, e);
        if (rc == FM_OK)
            rc = fm_config_validate(&c, e);
        if (rc != FM_OK)
            fm_err_prefix(e, "fmtrain sample --ema %s", a->ema);
        FM_TRY(rc);
    }
    FM_TRY(fm_build_check_memory(&c, 1, e));
    int per = a->per_class > 0 ? a->per_class : c.sample.per_class, rows = a->cls >= 0 ? 1 : FM_NUM_CLASSES;
    int steps = a->steps > 0 ? a->steps : c.sample.steps;
    int kind = a->sampler >= 0 ? a->sampler : c.sample.sampler;
    double cfgw = a->cfg >= 0 ? a->cfg : default_guidance(&c);
    uint64_t seed = a->seed >= 0 ? (uint64_t)a->seed : (uint64_t)c.run.seed;
    /* the single samples: --n, or --per-class K of every class (of --class c) */
    int64_t n = !a->out_dir && !a->npz ? 0 : a->n_samples > 0 ? a->n_samples : (int64_t)a->per_class * rows;
    int B = 0;
    if (a->png)
        B = rows * per;
    else
        B = (int)(n < c.eval.batch_size ? n : c.eval.batch_size);
    fm_dnn d;
    FM_TRY(fm_dnn_init(&d, e));
    /* the run's precision, as its own grids and eval were drawn (auto: this CPU's) */
    const fm_precision prec = fm_precision_here(c.run.precision, 1);
    d.bf16 = prec == FM_PRECISION_BF16;
    fm_info("sampling in %s (the checkpoint's run.precision: %s)", fm_precision_names[prec],
            fm_precision_names[c.run.precision]);
    fm_generator g;
    int64_t step = 0;
    rc = fm_generator_init(&g, &c, &d, a->png ? fm_build_grid_batch(B) : B, (fm_sampler_kind)kind, steps, e);
    if (rc == FM_OK) {
        rc = fm_generator_load_files(&g, &c, a->ckpt, a->vae, &step, e);
        char header[200], weights[48], cg[32] = "";
        fm_config_weights_label(&c, weights, sizeof weights);
        if (c.sample.classifier_scale > 0)
            snprintf(cg, sizeof cg, "  s = %g", c.sample.classifier_scale);
        snprintf(header, sizeof header, "w = %g%s  step %lld  %s %d steps  seed %llu  %s", cfgw, cg, (long long)step,
                 fm_sampler_names[kind], steps, (unsigned long long)seed, weights);
        if (rc == FM_OK && a->png)
            rc = fm_generator_grid_labelled(&g, rows, per, a->cls, (float)cfgw, seed, header, a->png, e);
        if (rc == FM_OK && a->png)
            fm_info("wrote %s: %d x %d samples, %s %d steps, cfg %g, seed %llu", a->png, rows, per,
                    fm_sampler_names[kind], steps, cfgw, (unsigned long long)seed);
        if (rc == FM_OK && n > 0 && a->png) { /* the samples in batches of their own */
            fm_generator_free(&g);
            B = (int)(n < c.eval.batch_size ? n : c.eval.batch_size);
            rc = fm_generator_init(&g, &c, &d, B, (fm_sampler_kind)kind, steps, e);
            if (rc == FM_OK)
                rc = fm_generator_load_files(&g, &c, a->ckpt, a->vae, NULL, e);
        }
        fm_sample_files sf;
        if (rc == FM_OK && n > 0 && (rc = fm_sample_files_open(&sf, a->out_dir, a->npz, n, B, e)) == FM_OK) {
            rc = fm_generator_samples(&g, n, a->cls, (float)cfgw, seed, fm_sample_files_add, &sf, e);
            if (rc == FM_OK)
                rc = fm_sample_files_close(&sf, e);
            else
                fm_sample_files_abort(&sf);
            if (rc == FM_OK)
                fm_info("wrote %lld samples (%s %d steps, cfg %g, seed %llu, flow step %lld)%s%s%s%s",
                        (long long)n, fm_sampler_names[kind], steps, cfgw, (unsigned long long)seed, (long long)step,
                        a->out_dir ? ": one PNG each in " : "", a->out_dir ? a->out_dir : "",
                        a->npz ? (a->out_dir ? ", arrays in " : ": arrays in ") : "", a->npz ? a->npz : "");
        }
        fm_generator_free(&g);
    }
    fm_dnn_free(&d);
    return rc;
}

/* fmtrain plot: scripts/plot_run.py beside the binary (or installed under
 * PREFIX/share/fmtrain), with Debian's python3 and matplotlib. */
static int run_plot(const args *a, const fm_world *w, fm_err *e)
{
    if (w->rank != 0)
        return FM_OK;
    char exe[4096], script[4200];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return fm_fail(e, FM_ERR_INTERNAL, "cannot find this program's path: %s", strerror(errno));
    exe[k] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    const char *where[] = { "%s/scripts/plot_run.py", "%s/../scripts/plot_run.py", "%s/../share/fmtrain/plot_run.py" };
    int found = 0;
    for (size_t i = 0; i < sizeof where / sizeof where[0] && !found; i++) {
        snprintf(script, sizeof script, where[i], exe);
        found = access(script, R_OK) == 0;
    }
    if (!found)
        return fm_fail(e, FM_ERR_USAGE, "fmtrain plot: scripts/plot_run.py not found beside %s: run it directly: "
                       "/usr/bin/python3 scripts/plot_run.py %s", exe, a->run_dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (a->png)
            execl("/usr/bin/python3", "python3", script, a->run_dir, "-o", a->png, (char *)NULL);
        else
            execl("/usr/bin/python3", "python3", script, a->run_dir, (char *)NULL);
        fprintf(stderr, "fmtrain: error: cannot run /usr/bin/python3: %s (install python3-matplotlib)\n",
                strerror(errno));
        _exit(FM_ERR_USAGE);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return fm_fail(e, FM_ERR_INTERNAL, "fmtrain plot: cannot run %s: %s", script, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fm_fail(e, WIFEXITED(status) && WEXITSTATUS(status) <= FM_ERR_IO ? WEXITSTATUS(status) : FM_ERR_INTERNAL,
                       "fmtrain plot: %s %s failed (its message is above)", script, a->run_dir);
    return FM_OK;
}

/* fmtrain eval: recompute RUN_DIR/eval.json with the run's own config. */
static int run_eval(const args *a, fm_world *w, fm_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.yaml", a->run_dir);
    fm_config c;
    FM_TRY(fm_config_load(&c, path, e));
    FM_TRY(fm_config_set_out(&c, a->run_dir, e));
    c.run.stages.n = 1;
    c.run.stages.v[0] = FM_STAGE_EVAL;
    FM_TRY(fm_build_validate(&c, e));
    FM_TRY(fm_config_check_world(&c, w->size, e));
    FM_TRY(fm_build_check_memory(&c, w->size, e));
    fm_world_set_timeout(w, c.dist.timeout);
    data d;
    FM_TRY(load_data(&c, w, &d, e));
    int rc = fm_pipeline_run(&c, &d.train, &d.test, w, 1, e);
    free_data(&d, rc == FM_OK);
    return rc;
}

static int run(const args *a, fm_world *w, fm_err *e)
{
    switch (a->cmd) {
    case CMD_HELP:
        if (w->rank == 0)
            printf("%s%s", usage_text, help_text);
        return FM_OK;
    case CMD_VERSION:
        if (w->rank == 0) {
            char text[4096];
            fm_version_text(text, sizeof text, 0);
            printf("%s\n", text);
        }
        return FM_OK;
    case CMD_KEYS:
        return w->rank == 0 ? fm_config_reference(stdout, e) : FM_OK;
    case CMD_SAMPLE:
        return run_sample(a, w, e);
    case CMD_EVAL:
        return run_eval(a, w, e);
    case CMD_PLOT:
        return run_plot(a, w, e);
    case CMD_TRAIN:
        return run_train(a, w, e);
    }
    return fm_fail(e, FM_ERR_INTERNAL, "unknown command");
}

/* Seconds a rank that failed waits for the others at the end before it
 * aborts the job: they may be blocked in a collective it will never join
 * (e.g. rank 0 could not write a checkpoint while the others went on). */
#define AGREE_TIMEOUT_S 10.0

/* Agree on the outcome, on a communicator of its own (the other ranks may
 * still be inside a collective on MPI_COMM_WORLD): out[0] = rank 0's status,
 * out[1] = the worst in the exit-code precedence (status.h: a real error wins
 * over FM_PREEMPTED). A rank that failed waits at most AGREE_TIMEOUT_S and
 * then returns 0 (the caller aborts the job); a rank that did not fail waits
 * as long as it takes (a failed rank ends it). 1 when agreed. */
static int agree(MPI_Comm comm, int rank, int rc, int out[2])
{
    int in[2] = { rank == 0 ? rc : -1, fm_status_rank(rc) };
    MPI_Request req;
    if (MPI_Iallreduce(in, out, 2, MPI_INT, MPI_MAX, comm, &req) != MPI_SUCCESS)
        return 0;
    if (rc == FM_OK || rc == FM_PREEMPTED) {
        if (MPI_Wait(&req, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return 0;
        out[1] = fm_status_of_rank(out[1]);
        return 1;
    }
    double t0 = MPI_Wtime();
    for (;;) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return 0;
        if (done) {
            out[1] = fm_status_of_rank(out[1]);
            return 1;
        }
        if (MPI_Wtime() - t0 > AGREE_TIMEOUT_S)
            return 0;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    fm_err e = { 0 };
    fm_world w;
    /* before MPI_Init: Open MPI keeps handlers installed earlier, and a
     * SIGUSR1 that arrives before they exist would kill the rank */
    int sig_rc = fm_signals_install();
    if (fm_world_init(&w, &argc, &argv, &e) != FM_OK) {
        fprintf(stderr, "fmtrain: error: %s\n", e.msg);
        return FM_ERR_INTERNAL;
    }
    fm_log_set_rank(w.rank);
    MPI_Comm end_comm = MPI_COMM_NULL;
    if (w.size > 1 && MPI_Comm_dup(MPI_COMM_WORLD, &end_comm) != MPI_SUCCESS) {
        fprintf(stderr, "fmtrain: error: MPI_Comm_dup failed\n");
        fm_world_abort(&w, FM_ERR_INTERNAL);
        return FM_ERR_INTERNAL;
    }
    if (sig_rc != FM_OK)
        fm_warn("cannot install the SIGUSR1/SIGTERM handlers: preemption will not checkpoint");
    /* A file size limit (ulimit -f) must fail the write with EFBIG, which is
     * reported and exits 4 with the previous checkpoint intact, instead of
     * killing the process silently with SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);
    args a;
    int rc = parse_args(argc, argv, &a, &e);
    if (rc == FM_OK)
        rc = run(&a, &w, &e);

    /* Agree on the outcome: rank 0 reports its own error; another rank
     * reports only an error rank 0 did not have. All exit with the worst.
     * A rank that failed alone while the others wait in a collective for it
     * reports its error and aborts the job with its status. */
    int out[2] = { rc, rc };
    if (w.size > 1 && !agree(end_comm, w.rank, rc, out)) {
        fm_error("%s", e.msg);
        fm_error("rank %d failed while the other ranks did not reach the end within %.0f s (they wait for it in a "
                 "collective): aborting the job",
                 w.rank, AGREE_TIMEOUT_S);
        fm_world_abort(&w, rc);
        return rc;
    }
    int rc0 = out[0], worst = out[1];
    if (rc == FM_PREEMPTED && w.rank == 0)
        fm_warn("%s", e.msg);
    else if (rc != FM_OK && (w.rank == 0 || rc0 == FM_OK))
        fm_error("%s", e.msg);
    if (end_comm != MPI_COMM_NULL)
        MPI_Comm_free(&end_comm);
    fm_world_finalize(&w);
    return worst;
}
