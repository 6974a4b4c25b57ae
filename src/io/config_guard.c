/* config_guard.c - a run directory resumed with another configuration: the
 * keys that fix what its checkpoints and latents mean must not change (see
 * config_guard.h). */
#include "fm/config_guard.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/ckpt.h"
#include "fm/files.h"
#include "fm/log.h"

/* Keys a resumed run may change (a trailing '.' takes a whole section). */
static const char *const free_keys[] = {
    "run.out",          "run.stages",           "run.log_every",     "run.profile_steps", "run.schedule_steps",
    "run.ckpt_keep",    "run.threads",          "run.precision",     "run.max_bad_steps", "run.memory_limit_gb",
    "run.fault_nan_steps", "data.dir",          "data.test_limit",   "encode.batch_size",
    "guide.steps",      "guide.ckpt_every",
    "flow.steps",       "flow.ckpt_every",      "flow.sample_every", "flow.bucket_mb",
    "sample.",          "eval.classifier_steps", "eval.samples_per_class", "eval.batch_size",
    "eval.table_steps", "eval.table_cfg", "eval.table_sampler", "eval.table_interval", "eval.table_classifier_scale", "reflow.steps", "reflow.ckpt_every",
    "dist.",
};

/* What the reflow couplings were drawn with. */
static const char *const coupling_keys[] = { "reflow.pairs", "reflow.cfg", "reflow.sampler", "reflow.sampler_steps" };

/* Free until the latents exist. */
static const char *const free_before_latents[] = { "vae.steps", "vae.ckpt_every" };

/* The optimisation keys of each trained stage: unused when it does not run. */
static const char *const vae_training[] = {
    "vae.steps", "vae.batch_size", "vae.lr", "vae.min_lr_ratio", "vae.warmup", "vae.weight_decay",
    "vae.beta1", "vae.beta2", "vae.grad_clip", "vae.ckpt_every", "vae.kl_weight", "vae.loss",
};
static const char *const flow_training[] = {
    "flow.batch_size", "flow.lr", "flow.min_lr_ratio", "flow.warmup", "flow.weight_decay", "flow.beta1",
    "flow.beta2", "flow.grad_clip", "flow.cfg_dropout", "flow.t_dist", "flow.t_mean", "flow.t_std",
    "flow.ema_decay", "flow.ema_warmup", "flow.accum_steps",
};
static const char *const guide_training[] = {
    "guide.batch_size", "guide.lr", "guide.min_lr_ratio", "guide.warmup", "guide.weight_decay", "guide.beta1",
    "guide.beta2", "guide.grad_clip",
};
static const char *const reflow_training[] = { "reflow." };
static const char *const eval_training[] = { "eval.classifier_batch_size", "eval.classifier_lr" };

#define LISTED(name, list) listed((name), (list), sizeof(list) / sizeof *(list))

static int listed(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(list[i]);
        if (list[i][len - 1] == '.' ? strncmp(name, list[i], len) == 0 : strcmp(name, list[i]) == 0)
            return 1;
    }
    return 0;
}

/* 1 if this run does not use key `name`: a trained stage's optimisation key
 * when that stage does not run. */
static int unused(const char *name, const fm_config *now)
{
    return (!fm_config_has_stage(now, FM_STAGE_VAE) && LISTED(name, vae_training)) ||
           (!fm_config_has_stage(now, FM_STAGE_FLOW) && LISTED(name, flow_training)) ||
           (!fm_config_has_stage(now, FM_STAGE_GUIDE) && LISTED(name, guide_training)) ||
           (!fm_config_has_stage(now, FM_STAGE_REFLOW) && LISTED(name, reflow_training)) ||
           (!fm_config_has_stage(now, FM_STAGE_EVAL) && LISTED(name, eval_training));
}

/* What a run directory holds. */
typedef struct run_state {
    int vae, flow, classifier, guide; /* checkpoints of that stage */
    int reflow;                /* reflow checkpoints */
    int pairs;                 /* the reflow couplings */
    int latents;
} run_state;

static int starts(const char *name, const char *prefix) { return strncmp(name, prefix, strlen(prefix)) == 0; }

/* 1 if key `name` must keep its recorded value: it fixes what some of the
 * run's checkpoints or latents mean. */
static int locked(const char *name, const run_state *st)
{
    if (LISTED(name, free_keys))
        return 0;
    if (starts(name, "vae."))
        return LISTED(name, free_before_latents) ? st->latents : st->vae || st->latents;
    if (starts(name, "flow.") || starts(name, "unet.") || starts(name, "dit."))
        return st->flow;
    if (starts(name, "eval."))
        return st->classifier;
    if (LISTED(name, coupling_keys))
        return st->pairs || st->reflow;
    if (starts(name, "reflow."))
        return st->reflow;
    if (starts(name, "guide."))
        return st->guide;
    return st->vae || st->flow || st->classifier || st->guide || st->latents; /* run.seed, data.train_limit */
}

/* flow.ema_decay may gain or lose rates after its first (whose EMA is the
 * checkpoints' "ema." tensors): a rate the checkpoint lacks starts from the
 * resumed weights (trainer.h). */
static int same_first_rate(const char *name, const fm_config *old, const fm_config *now)
{
    return !strcmp(name, "flow.ema_decay") && old->flow.ema_decay.v[0] == now->flow.ema_decay.v[0];
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The checkpoints in RUN/ckpt (files "<stage>-<step>.safetensors") and the latents. */
static run_state state_of(const char *run)
{
    run_state st = { 0 };
    char path[4200];
    snprintf(path, sizeof path, "%s/latents.safetensors", run);
    st.latents = exists(path);
    snprintf(path, sizeof path, "%s/reflow-pairs.safetensors", run);
    st.pairs = exists(path);
    snprintf(path, sizeof path, "%s/ckpt", run);
    DIR *d = opendir(path);
    if (!d)
        return st;
    struct dirent *de;
    while ((de = readdir(d))) {
        st.vae |= starts(de->d_name, "vae-");
        st.flow |= starts(de->d_name, "flow-");
        st.classifier |= starts(de->d_name, "classifier-");
        st.guide |= starts(de->d_name, "guide-");
        st.reflow |= starts(de->d_name, "reflow-");
    }
    closedir(d);
    return st;
}

/* Keep the recorded path as path.N (the first free N >= 1): a second name
 * (a hard link) for it, so config.yaml itself stays in place until the new one
 * is renamed over it: a crash in between never leaves the run without a
 * recorded configuration. */
static int keep_old(const char *path, fm_err *e)
{
    char to[4300];
    for (int k = 1; k < 10000; k++) {
        snprintf(to, sizeof to, "%.4200s.%d", path, k);
        if (link(path, to) != 0) {
            if (errno == EEXIST)
                continue;
            return fm_fail(e, FM_ERR_IO, "cannot keep %s as %s: %s", path, to, strerror(errno));
        }
        fm_info("resume: the previous configuration is kept as %s", to);
        return fm_fsync_dir_of(to, e);
    }
    return fm_fail(e, FM_ERR_IO, "cannot keep %s: %s.1 to %s.9999 all exist", path, path, path);
}

/* The configuration stored in the newest readable checkpoint of the run (any
 * stage): what trained it, when config.yaml is missing. FM_CKPT_NONE when no
 * checkpoint holds one. */
static int config_of_ckpts(const char *run, fm_config *old, char *from, size_t n, fm_err *e)
{
    static const char *const stages[] = { "flow", "classifier", "guide", "vae" };
    for (size_t k = 0; k < sizeof stages / sizeof *stages; k++) {
        fm_ckpt c;
        fm_err le = { 0 };
        if (fm_ckpt_load_latest(run, stages[k], NULL, 0, NULL, 0, &c, &le) != FM_OK)
            continue;
        const char *text = fm_ckpt_meta(&c, "config");
        int rc = text ? fm_config_load_string(old, text, strlen(text), c.path, e) : FM_CKPT_NONE;
        snprintf(from, n, "%s (the configuration it was trained with)", c.path);
        fm_ckpt_close(&c);
        if (rc != FM_CKPT_NONE)
            return rc;
    }
    return FM_CKPT_NONE;
}

int fm_config_guard(const fm_config *now, fm_config *rec, fm_err *e)
{
    *rec = *now;
    const char *run = now->run.out;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    const run_state st = state_of(run);
    if (!(st.vae || st.flow || st.classifier || st.guide || st.latents))
        return FM_OK; /* nothing trained yet: nothing to protect */

    fm_config old;
    char from[4400];
    const int have_yaml = exists(path);
    if (have_yaml) {
        fm_err le = { 0 };
        snprintf(from, sizeof from, "%s", path);
        if (fm_config_load(&old, path, &le) != FM_OK)
            return fm_fail(e, FM_ERR_USAGE,
                           "%s: cannot read the configuration this run was trained with (%s); restore it, or "
                           "start a new run directory (--out)",
                           path, le.msg);
    } else { /* lost (a crash, a deletion): the checkpoints carry it too */
        fm_err le = { 0 };
        int rc = config_of_ckpts(run, &old, from, sizeof from, &le);
        if (rc == FM_CKPT_NONE)
            return FM_OK;
        if (rc != FM_OK)
            return fm_fail(e, FM_ERR_USAGE, "%s is missing and the configuration in %s cannot be read (%s): "
                           "restore config.yaml, or start a new run directory (--out)", path, from, le.msg);
        fm_info("resume: %s is missing: comparing with the configuration in %s", path, from);
    }

    int nkeys, nlocked = 0, nchanged = 0;
    const fm_cfg_key *keys = fm_config_keys(&nkeys);
    char msg[2048] = "";
    size_t used = 0;
    for (int i = 0; i < nkeys; i++) {
        if (fm_config_key_equal(&old, now, i))
            continue;
        const char *name = keys[i].name;
        if (unused(name, now)) { /* not this run's: the record keeps what trained the checkpoints */
            fm_config_copy_key(rec, &old, i);
            continue;
        }
        char was[512], is[512], where[640];
        fm_config_format(&old, i, was, sizeof was);
        fm_config_format(now, i, is, sizeof is);
        nchanged++;
        if (!locked(name, &st) || same_first_rate(name, &old, now)) {
            fm_info("resume: %s: %s -> %s", name, was, is);
            continue;
        }
        fm_config_where(now, name, where, sizeof where);
        int w = snprintf(msg + used, sizeof msg - used, "%s%s: %s recorded, %s now (%s)", nlocked ? "; " : "",
                         name, was, is, where);
        if (w > 0 && (size_t)w < sizeof msg - used)
            used += (size_t)w;
        nlocked++;
    }
    if (nlocked)
        return fm_fail(e, FM_ERR_USAGE,
                       "%s holds a run trained with another configuration (recorded in %s): %s. These keys fix "
                       "what its checkpoints%s mean: restore them, or start a new run directory (--out)",
                       run, from, msg, st.latents ? " and latents" : "");
    return nchanged && have_yaml ? keep_old(path, e) : FM_OK;
}
