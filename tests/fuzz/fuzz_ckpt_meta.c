/* fuzz_ckpt_meta.c - libFuzzer harness for a checkpoint's metadata values.
 *
 * Input: metadata pairs, key NUL value NUL key NUL value ... (a last key
 * without a value is dropped). They are written with intact tensors (the
 * small model of fuzz_model.c: groups "" and "ema." and an extra
 * "latent_scale" [1]) by the real writer, fm_st_write, so every CRC32C and the
 * metadata checksum match and only the value checks stand between the
 * fuzzer and the loaders: fm_ckpt_load_file (format, stage, step, group
 * counts), then what the trainer and `fmtrain sample` read: adam_step in
 * [0, step] (fm_ckpt_meta_int_range) and the config (fm_config_load_string
 * with the key table's checks). The file goes to /dev/shm (tmpfs: its fsync
 * costs nothing). Nothing may crash, leak or read out of bounds; an accepted
 * adam_step must lie in [0, step]. Seeds: corpus/ckpt_meta (make_seeds.py). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/ckpt.h"
#include "fm/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_ckpt_model(fm_params *p, fm_err *e);

#define MAX_PAIRS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1); /* NUL-terminated copy: the last string ends */
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fm_st_meta m[MAX_PAIRS];
    int nm = 0;
    for (size_t i = 0; i < size && nm < MAX_PAIRS;) {
        const char *k = text + i;
        i += strlen(k) + 1;
        if (i > size)
            break;
        const char *v = text + i;
        i += strlen(v) + 1;
        m[nm++] = (fm_st_meta){ k, v };
    }
    fm_err e = { 0 };
    fm_params p;
    if (fuzz_ckpt_model(&p, &e) != FM_OK) {
        free(text);
        return 0;
    }
    float *ema = calloc(p.numel, sizeof *ema), scale = 1.25f;
    for (size_t i = 0; i < p.numel; i++)
        p.data[i] = 0.01f * (float)(i % 97);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/fuzz_ckpt_meta-%ld.safetensors", (long)getpid());
    fm_st_tensor t[2 * 3 + 1];
    char names[3][64];
    int nt = 0;
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < p.n; i++) {
            const fm_param *q = &p.items[i];
            if (g)
                snprintf(names[i], sizeof names[i], "ema.%s", q->name);
            t[nt] = (fm_st_tensor){ .name = g ? names[i] : q->name, .data = (g ? ema : p.data) + q->offset,
                                    .dtype = FM_F32, .ndim = q->w.ndim };
            memcpy(t[nt++].shape, q->w.shape, sizeof t[0].shape);
        }
    t[nt++] = (fm_st_tensor){ .name = "latent_scale", .data = &scale, .dtype = FM_F32, .ndim = 1, .shape = { 1 } };
    if (ema && p.n == 3 && fm_st_write(path, t, nt, m, nm, &e) == FM_OK) {
        float *w = calloc(p.numel, sizeof *w), *we = calloc(p.numel, sizeof *we), s = 0;
        fm_ckpt_group grp[2] = { { "", &p, w }, { "ema.", &p, we } };
        fm_ckpt_extra x = { "latent_scale", &s, 1, { 1 } };
        fm_ckpt ck;
        if (w && we && fm_ckpt_load_file(path, grp, 2, &x, 1, &ck, &e) == FM_OK) {
            int64_t a;
            if (fm_ckpt_meta_int_range(&ck, "adam_step", 0, ck.step, &a, &e) == FM_OK && (a < 0 || a > ck.step))
                abort();
            const char *cfg = fm_ckpt_meta(&ck, "config");
            fm_config c;
            if (cfg && fm_config_load_string(&c, cfg, strlen(cfg), ck.path, &e) == FM_OK)
                fm_config_validate(&c, &e);
            fm_ckpt_close(&ck);
        }
        free(w);
        free(we);
        unlink(path);
    }
    free(ema);
    fm_params_free(&p);
    free(text);
    return 0;
}
