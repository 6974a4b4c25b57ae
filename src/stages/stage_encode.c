/* stage_encode.c - the frozen VAE encoder maps the training set to latents.
 *
 * Writes RUN/latents.safetensors: "latents" [N, s, s, C] (the encoder means,
 * unscaled), "labels" [N] (as F32), "scale" [1] = 1 / std of all latent values,
 * the factor the flow stage multiplies latents by (and generation divides by).
 * Rank 0 reads the vae checkpoint (and an existing latents file) and
 * broadcasts the weights (the decision). Ranks encode interleaved chunks; the
 * results are summed to every rank (each value is written by exactly one
 * rank, so the sum is exact). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/ckpt.h"
#include "fm/batchsplit.h"
#include "fm/build.h"
#include "fm/latents.h"
#include "fm/log.h"
#include "fm/pipeline.h"
#include "fm/safetensors.h"
#include "fm/signals.h"
#include "fm/timer.h"
#include "fm/vae.h"

/* The latents file is valid (fm_latents_check) and of the config's shape. */
static int latents_ok(const char *path, int n, int side, int ch)
{
    fm_st_file f;
    fm_err e;
    fm_latents l;
    if (fm_st_read(path, &f, &e) != FM_OK)
        return 0;
    int ok = fm_latents_check(&f, path, side, ch, &l, &e) == FM_OK && l.n == n;
    fm_st_free(&f);
    return ok;
}

int fm_stage_encode(fm_pipeline *P, fm_err *e)
{
    const fm_config *c = P->cfg;
    char path[4200];
    fm_run_path(P, path, sizeof path, FM_LATENTS_FILE);
    int side, ch;
    fm_build_flow_shape(c, &side, &ch);
    if (!c->flow.latent) {
        fm_info("encode: skipped (flow.latent is false: the flow trains on pixels)");
        return FM_OK;
    }
    const int n = P->train->n, D = side * side * ch, XD = 32 * 32;
    /* rank 0 reads the file and decides for every rank */
    int done = P->world->rank == 0 && latents_ok(path, n, side, ch);
    FM_TRY(fm_world_max_int(P->world, &done, e));
    if (done) {
        fm_info("encode: done (%s)", path);
        return FM_OK;
    }
    int B = c->encode.batch_size / P->world->size;
    fm_params p;
    fm_vae_encoder enc = { 0 };
    fm_vae_decoder dec = { 0 };
    float *lat = NULL, *xb = NULL, *mu = NULL, *labels = NULL;
    FM_TRY(fm_build_vae_params(&p, e));
    fm_vae_cfg vc;
    fm_build_vae_cfg(c, &vc);
    /* the same table as the vae stage's: encoder then decoder */
    int rc = fm_vae_encoder_init(&enc, &P->dnn, &p, &vc, B, 0, e);
    if (rc == FM_OK)
        rc = fm_vae_decoder_init(&dec, &P->dnn, &p, &vc, 1, 0, e);
    if (rc != FM_OK)
        goto out;
    /* rank 0 reads the vae checkpoint, the others receive its weights */
    fm_ckpt_group grp = { "", &p, p.data };
    if (P->world->rank == 0) {
        rc = fm_ckpt_load_latest(c->run.out, "vae", &grp, 1, NULL, 0, NULL, e);
        if (rc == FM_CKPT_NONE)
            rc = fm_fail(e, FM_ERR_DATA, "%s/ckpt: no vae checkpoint to encode with: run the vae stage first",
                         c->run.out);
    }
    int bad = rc;
    int arc = fm_world_max_int(P->world, &bad, e);
    if (rc == FM_OK && arc != FM_OK)
        rc = arc;
    else if (rc == FM_OK && bad != FM_OK)
        rc = fm_fail(e, bad, "encode: rank 0 could not load the vae checkpoint (its message says why)");
    if (rc == FM_OK)
        rc = fm_world_bcast(P->world, p.data, p.numel, e);
    if (rc != FM_OK)
        goto out;
    lat = calloc((size_t)n * D, sizeof(float));
    xb = malloc((size_t)B * XD * sizeof(float));
    mu = malloc((size_t)B * D * sizeof(float));
    labels = malloc((size_t)n * sizeof(float));
    if (!lat || !xb || !mu || !labels) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "out of memory for %d latents", n);
        goto out;
    }
    double t0 = fm_now();
    int chunks = (n + B - 1) / B;
    for (int k = P->world->rank; k < chunks && rc == FM_OK; k += P->world->size) {
        int first = k * B, rows = n - first < B ? n - first : B;
        memcpy(xb, P->train->images + (size_t)first * XD, (size_t)rows * XD * sizeof(float));
        for (int r = rows; r < B; r++) /* pad the last chunk with its first row */
            memcpy(xb + (size_t)r * XD, xb, XD * sizeof(float));
        rc = fm_vae_encode_mean(&enc, xb, mu, e);
        if (rc == FM_OK)
            memcpy(lat + (size_t)first * D, mu, (size_t)rows * D * sizeof(float));
        if (rc == FM_OK && fm_stop_requested()) /* nothing to save: the stage is redone when resumed */
            rc = fm_fail(e, FM_PREEMPTED, "encode: stopped by signal %d (chunk %d of %d): run the same command "
                         "again (or let Slurm requeue the job) to encode again", fm_stop_requested(), k, chunks);
    }
    /* every rank learns whether every rank encoded its chunks before they sum them */
    rc = fm_batches_agree(P->world, rc, "encode", e);
    if (rc == FM_OK)
        rc = fm_world_allreduce_sum(P->world, lat, (size_t)n * D, e);
    if (rc != FM_OK)
        goto out;
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < (size_t)n * D; i++) {
        s1 += lat[i];
        s2 += (double)lat[i] * lat[i];
    }
    double mean = s1 / ((double)n * D), var = s2 / ((double)n * D) - mean * mean;
    float scale = (float)(1.0 / sqrt(var > 1e-12 ? var : 1e-12));
    for (int i = 0; i < n; i++)
        labels[i] = (float)P->train->labels[i];
    fm_info("encode: %d images -> %dx%dx%d latents in %.1fs; mean %.4f, std %.4f, scale %.4f", n, side, side, ch,
            fm_now() - t0, mean, sqrt(var), scale);
    if (P->world->rank == 0) {
        char scale_txt[32];
        snprintf(scale_txt, sizeof scale_txt, "%.9g", scale);
        fm_st_tensor t[3] = {
            { "latents", lat, FM_F32, 4, { n, side, side, ch } },
            { "labels", labels, FM_F32, 1, { n } },
            { "scale", &scale, FM_F32, 1, { 1 } },
        };
        fm_st_meta meta[] = { { "format", "fmtrain-latents-1" }, { "latent_scale", scale_txt } };
        rc = fm_st_write(path, t, 3, meta, 2, e);
    }
    /* the next stage reads the file (once per node): wait for rank 0's write */
    bad = rc;
    int rc2 = fm_world_max_int(P->world, &bad, e);
    if (rc == FM_OK && rc2 != FM_OK)
        rc = rc2;
    else if (rc == FM_OK && bad != FM_OK)
        rc = fm_fail(e, bad, "rank 0 could not write %s", path);
out:
    free(lat);
    free(xb);
    free(mu);
    free(labels);
    fm_vae_half_free(&dec);
    fm_vae_half_free(&enc);
    fm_params_free(&p);
    return rc;
}
