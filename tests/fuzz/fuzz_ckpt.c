/* fuzz_ckpt.c - libFuzzer harness for the safetensors reader and the
 * checkpoint loader.
 *
 * Input: the bytes of a checkpoint file, written to an in-memory file (memfd)
 * and read through /proc/self/fd, three ways:
 *   fm_st_read          on success its contract is checked: every tensor's
 *                       bytes (dtype size x product of the shape, without
 *                       overflow) lie inside the file buffer; each is read
 *   fm_ckpt_load_file   with no groups (what `fmtrain sample` does first) and
 *                       then into a small model's groups "" and "ema." plus an
 *                       extra tensor "latent_scale" [1], as a resume does
 *   fm_ckpt_meta_*      on a loaded checkpoint
 * Nothing may crash, leak or read out of bounds. The seeds in
 * corpus/ckpt were written by fm_ckpt_write for this same small model. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/ckpt.h"
#include "fm/params.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The small model of the seeds: fuzz_model.c. */
int fuzz_ckpt_model(fm_params *p, fm_err *e);

static void check_file(const fm_st_file *f)
{
    for (int i = 0; i < f->n; i++) {
        const fm_st_tensor *t = &f->t[i];
        size_t bytes = fm_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || __builtin_mul_overflow(bytes, (size_t)t->shape[d], &bytes)) {
                fprintf(stderr, "fm_st_read accepted tensor %s whose size overflows\n", t->name);
                abort();
            }
        const char *p = t->data;
        if (p < f->buf || p > f->buf + f->size || bytes > (size_t)(f->buf + f->size - p)) {
            fprintf(stderr, "fm_st_read accepted tensor %s of %zu bytes outside the file\n", t->name, bytes);
            abort();
        }
        unsigned sum = 0;
        for (size_t k = 0; k < bytes; k++)
            sum += (unsigned char)p[k];
        (void)sum;
    }
    for (int i = 0; i < f->nmeta; i++)
        if (!f->meta_keys[i] || !f->meta_vals[i])
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0)
        return 0;
    fm_err e = { 0 };

    fm_st_file f;
    if (fm_st_read(path, &f, &e) == FM_OK) {
        check_file(&f);
        fm_st_get(&f, "conv.weight");
        fm_st_meta_get(&f, "step");
        fm_st_free(&f);
    }

    fm_ckpt ck;
    if (fm_ckpt_load_file(path, NULL, 0, NULL, 0, &ck, &e) == FM_OK) {
        int64_t v;
        double x;
        fm_ckpt_meta_int(&ck, "adam_step", &v, &e);
        fm_ckpt_meta_double(&ck, "latent_scale", &x, &e);
        fm_ckpt_meta(&ck, "config");
        fm_ckpt_tensor(&ck, "latent_scale");
        fm_ckpt_close(&ck);
    }

    fm_params model;
    if (fuzz_ckpt_model(&model, &e) == FM_OK) {
        float *ema = calloc(model.numel, sizeof *ema);
        float scale = 0;
        fm_ckpt_group g[2] = { { "", &model, model.data }, { "ema.", &model, ema } };
        fm_ckpt_extra x = { "latent_scale", &scale, 1, { 1 } };
        if (ema && fm_ckpt_load_file(path, g, 2, &x, 1, &ck, &e) == FM_OK)
            fm_ckpt_close(&ck);
        free(ema);
        fm_params_free(&model);
    }
    close(fd);
    return 0;
}
