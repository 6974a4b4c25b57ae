/* make_ckpt_seeds.c - writes the checkpoint seeds of corpus/ckpt with the
 * real writer (fm_ckpt_write, fm_st_write) for the small model of
 * fuzz_ckpt.c. Not part of any build; to regenerate:
 *   clang -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -o /tmp/mk tests/fuzz/make_ckpt_seeds.c \
 *     tests/fuzz/fuzz_model.c src/io/ckpt.c src/io/safetensors.c src/core/{crc32c,params,status,log,tensor,rng,arena}.c \
 *     -lcjson -lm && /tmp/mk tests/fuzz/corpus/ckpt
 * The hand-made seeds (size overflow, metadata that is not an object) are
 * written by tests/fuzz/make_seeds.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/ckpt.h"

int fuzz_ckpt_model(fm_params *p, fm_err *e);

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    fm_err e = { 0 };
    fm_params p;
    if (fuzz_ckpt_model(&p, &e) != FM_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    float *ema = malloc(p.numel * sizeof *ema);
    for (size_t i = 0; i < p.numel; i++) {
        p.data[i] = 0.01f * (float)i - 0.3f;
        ema[i] = 0.5f * p.data[i];
    }
    float scale = 1.25f;
    fm_ckpt_group g[2] = { { "", &p, p.data }, { "ema.", &p, ema } };
    fm_ckpt_extra x = { "latent_scale", &scale, 1, { 1 } };
    fm_st_meta meta[] = { { "config", "run:\n  seed: 1\n" }, { "adam_step", "3" }, { "world_size", "2" } };
    char path[4096];
    int rc = FM_OK;
    snprintf(path, sizeof path, "%s/full.safetensors", argv[1]);
    rc |= fm_ckpt_write(path, "flow", 3, g, 2, &x, 1, meta, 3, &e);
    snprintf(path, sizeof path, "%s/weights_only.safetensors", argv[1]);
    rc |= fm_ckpt_write(path, "vae", 12, g, 1, NULL, 0, meta, 1, &e);
    /* a bare safetensors file with a zero-size tensor and a BF16 tensor */
    uint16_t bf[3] = { 0x3f80, 0x4000, 0x7f80 };
    fm_st_tensor t[2] = { { .name = "empty", .data = bf, .dtype = FM_F32, .ndim = 2, .shape = { 0, 5 } },
                          { .name = "half", .data = bf, .dtype = FM_BF16, .ndim = 1, .shape = { 3 } } };
    fm_st_meta m2[] = { { "format", FM_CKPT_FORMAT }, { "stage", "flow" }, { "step", "7" } };
    snprintf(path, sizeof path, "%s/bare.safetensors", argv[1]);
    rc |= fm_st_write(path, t, 2, m2, 3, &e);
    if (rc != FM_OK)
        fprintf(stderr, "%s\n", e.msg);
    free(ema);
    fm_params_free(&p);
    return rc != FM_OK;
}
