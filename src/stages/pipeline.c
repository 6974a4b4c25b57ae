/* pipeline.c - run directory set-up and the stage sequence. */
#include "fm/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "fm/config_guard.h"
#include "fm/files.h"
#include "fm/log.h"
#include "fm/peak.h"

void fm_run_path(const fm_pipeline *P, char *path, size_t n, const char *name)
{
    snprintf(path, n, "%s/%s", P->cfg->run.out, name);
}

/* config.yaml: the resolved config, checked against the one the run
 * directory records (config_guard.h). The recorded text also replaces
 * P->config_text, which the checkpoints carry. */
static int write_config(fm_pipeline *P, fm_err *e)
{
    fm_config *rec = malloc(sizeof *rec);
    if (!rec)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the configuration");
    int rc = fm_config_guard(P->given, rec, e);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = rc == FM_OK ? open_memstream(&text, &len) : NULL;
    if (rc == FM_OK && !mem)
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for the config text");
    if (mem) {
        rc = fm_config_dump(rec, mem, e);
        fclose(mem);
    }
    free(rec);
    if (rc == FM_OK) {
        free(P->config_text);
        P->config_text = text;
        char path[4096];
        fm_run_path(P, path, sizeof path, "config.yaml");
        return fm_write_text_atomic(path, P->config_text, e);
    }
    free(text);
    return rc;
}

static int setup(fm_pipeline *P, fm_err *e)
{
    int rc = FM_OK;
    if (P->world->rank == 0) {
        char dir[4200];
        rc = fm_mkdir_p(P->cfg->run.out, e);
        if (rc == FM_OK) /* only rank 0 locks: the ranks may be on several hosts, and it alone writes here */
            rc = fm_run_lock(P->cfg->run.out, &P->lock_fd, e);
        if (rc == FM_OK) { /* under the lock, a temporary file whose writer is gone is a dead run's */
            fm_clean_stale_tmps(P->cfg->run.out);
            static const char *const sub[] = { "ckpt", "samples" };
            for (int k = 0; k < 2; k++) {
                fm_run_path(P, dir, sizeof dir, sub[k]);
                fm_clean_stale_tmps(dir);
            }
        }
        fm_run_path(P, dir, sizeof dir, "samples");
        if (rc == FM_OK)
            rc = fm_mkdir_p(dir, e);
        if (rc == FM_OK && !P->force_eval) /* `fmtrain eval` keeps the run's own config.yaml */
            rc = write_config(P, e);
        if (rc == FM_OK) {
            fm_run_path(P, dir, sizeof dir, "metrics.jsonl");
            rc = fm_metrics_open(&P->metrics, dir, e);
        }
    }
    /* every rank learns whether rank 0 could set up the run directory */
    int bad = rc != FM_OK ? rc : 0;
    FM_TRY(fm_world_max_int(P->world, &bad, e));
    if (bad && rc == FM_OK)
        return fm_fail(e, bad, "rank 0 could not set up the run directory %s", P->cfg->run.out);
    return rc;
}

/* Whether the stages train a model (vae, guide, flow, reflow, or eval's classifier): the
 * runs whose metrics carry an mfu. */
static int trains(const fm_config *cfg)
{
    for (int i = 0; i < cfg->run.stages.n; i++) {
        const int s = cfg->run.stages.v[i];
        if (s == FM_STAGE_VAE || s == FM_STAGE_GUIDE || s == FM_STAGE_FLOW || s == FM_STAGE_REFLOW ||
            s == FM_STAGE_EVAL)
            return 1;
    }
    return 0;
}

fm_precision fm_precision_here(fm_precision p, int warn)
{
    const int has = fm_dnn_cpu_has_bf16();
    if (p == FM_PRECISION_AUTO)
        return has ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
    if (p == FM_PRECISION_BF16 && !has && warn)
        fm_warn("run.precision: bf16: this CPU has no AVX512-BF16 instructions: oneDNN will emulate bf16 "
                "(or use reference kernels), which is likely slower than fp32; set run.precision: fp32 or auto");
    return p;
}

/* run.precision -> P->dnn.bf16 for every model's convolutions and matrix
 * products. auto is bf16 only when every rank's CPU has AVX512-BF16 (one
 * max-reduction of "lacks it", so the ranks never train in two precisions);
 * the choice is logged and written back, so the logged config says it. */
static int resolve_precision(fm_pipeline *P, fm_config *eff, fm_err *e)
{
    if (eff->run.precision == FM_PRECISION_AUTO) {
        int lacks = fm_precision_here(FM_PRECISION_AUTO, 0) != FM_PRECISION_BF16;
        int rc = fm_world_max_int(P->world, &lacks, e);
        if (rc != FM_OK)
            return rc;
        eff->run.precision = lacks ? FM_PRECISION_FP32 : FM_PRECISION_BF16;
        if (P->world->rank == 0)
            fm_info("run.precision: auto: %s (%s)", lacks ? "fp32" : "bf16",
                    lacks ? "a rank's CPU has no AVX512-BF16 instructions" : "every rank's CPU has AVX512-BF16");
    } else
        fm_precision_here(eff->run.precision, P->world->rank == 0); /* bf16 without AVX512-BF16: a warning */
    P->dnn.bf16 = eff->run.precision == FM_PRECISION_BF16;
    return FM_OK;
}

int fm_pipeline_run(const fm_config *cfg, const fm_dataset *train, const fm_dataset *test, const fm_world *w,
                    int force_eval, fm_err *e)
{
    fm_pipeline P;
    memset(&P, 0, sizeof P);
    fm_config *eff = malloc(sizeof *eff); /* the stages' configuration on this many ranks */
    if (!eff)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the configuration");
    *eff = *cfg;
    int arc = fm_config_apply_world(eff, w->size, e);
    if (arc != FM_OK) {
        free(eff);
        return arc;
    }
    P.cfg = eff;
    P.given = cfg;
    P.world = w;
    P.train = train;
    P.test = test;
    P.force_eval = force_eval;
    P.lock_fd = -1;
    size_t len = 0;
    FILE *mem = open_memstream(&P.config_text, &len);
    if (!mem)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for the config text");
    int rc = fm_config_dump(cfg, mem, e);
    fclose(mem);
    if (rc == FM_OK)
        rc = fm_dnn_init(&P.dnn, e);
    if (rc == FM_OK)
        rc = resolve_precision(&P, eff, e);
    if (rc == FM_OK)
        rc = setup(&P, e);
    if (rc == FM_OK && w->rank == 0 && eff->run.peak_gflops == 0 && trains(cfg)) {
        /* mfu's denominator, measured once in the run's precision: the other
         * ranks wait at their next collective meanwhile */
        double peak = 0;
        const int bf16 = eff->run.precision == FM_PRECISION_BF16;
        const int prc = bf16 ? fm_peak_matmul_bf16(1024, 10, &peak, e) : fm_peak_sgemm(1024, 10, &peak, e);
        if (prc == FM_OK && peak > 0) {
            eff->run.peak_gflops = peak;
            fm_info("peak: %.1f GFLOP/s measured on rank 0 (oneDNN %s 1024^3 on %d thread%s): the mfu "
                    "denominator (set run.peak_gflops to fix it)", peak, bf16 ? "bf16 matmul" : "sgemm",
                    omp_get_max_threads(), omp_get_max_threads() > 1 ? "s" : "");
        } else {
            fm_warn("peak: could not measure the %s peak (%s): no mfu (set run.peak_gflops)", bf16 ? "bf16" : "fp32",
                    e->msg);
        }
    }
    static int (*const stage_fn[FM_STAGE_COUNT])(fm_pipeline *, fm_err *) = {
        [FM_STAGE_VAE] = fm_stage_vae,     [FM_STAGE_ENCODE] = fm_stage_encode, [FM_STAGE_GUIDE] = fm_stage_guide, [FM_STAGE_FLOW] = fm_stage_flow,
        [FM_STAGE_REFLOW] = fm_stage_reflow,
        [FM_STAGE_SAMPLE] = fm_stage_sample, [FM_STAGE_EVAL] = fm_stage_eval,
    };
    for (int i = 0; rc == FM_OK && i < cfg->run.stages.n; i++) {
        int s = cfg->run.stages.v[i];
        fm_info("stage %s", fm_stage_names[s]);
        rc = stage_fn[s](&P, e);
        if (rc != FM_OK && rc != FM_PREEMPTED)
            fm_err_prefix(e, "stage %s", fm_stage_names[s]);
    }
    fm_err closing;
    if (fm_metrics_close(&P.metrics, &closing) != FM_OK && rc == FM_OK) {
        *e = closing;
        rc = closing.code;
    }
    if (P.dnn.engine)
        fm_dnn_free(&P.dnn);
    fm_run_unlock(P.lock_fd);
    free(P.config_text);
    free(eff);
    if (rc == FM_OK)
        fm_info("done: %s", cfg->run.out);
    return rc;
}
