/* fuzz_latents.c - libFuzzer harness for the latents file's checks
 * (latents.h), behind the safetensors reader.
 *
 * Input: the bytes of a latents file, written to an in-memory file (memfd)
 * and read through /proc/self/fd with fm_st_read, then checked by
 * fm_latents_check twice: for any sample shape, and for the [2, 2, 1]
 * samples of the seeds (the flow stage's call). On success its contract is
 * checked: n >= 1, dim = the product of the sample shape, the latents' and
 * labels' bytes inside the file, scale finite and > 0; fm_latents_copy then
 * fills x [n, dim] and y [n], and every y is a class 0..9. Nothing may crash,
 * leak or read out of bounds. The seeds in corpus/latents are written by
 * tests/fuzz/make_seeds.py. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/latents.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const fm_st_file *f, const fm_latents *l)
{
    const fm_st_tensor *t = l->latents;
    size_t dim = 1;
    for (int d = 1; d < t->ndim; d++)
        dim *= (size_t)t->shape[d];
    const char *end = f->buf + f->size, *lp = t->data, *yp = l->labels->data;
    if (l->n < 1 || dim != (size_t)l->dim || !(l->scale > 0.0f) || !isfinite(l->scale) ||
        (size_t)(end - lp) < (size_t)l->n * dim * sizeof(float) || (size_t)(end - yp) < (size_t)l->n * sizeof(float)) {
        fprintf(stderr, "fm_latents_check accepted n %d, dim %ld, scale %g outside its contract\n", l->n, l->dim,
                l->scale);
        abort();
    }
    float *x = malloc((size_t)l->n * dim * sizeof *x + 1);
    int32_t *y = malloc((size_t)l->n * sizeof *y);
    if (x && y) {
        fm_latents_copy(l, x, y);
        for (int i = 0; i < l->n; i++)
            if (y[i] < 0 || y[i] > 9) {
                fprintf(stderr, "fm_latents_copy gave label %d\n", (int)y[i]);
                abort();
            }
    }
    free(x);
    free(y);
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
        fm_latents l;
        if (fm_latents_check(&f, path, 0, 0, &l, &e) == FM_OK)
            check(&f, &l);
        if (fm_latents_check(&f, path, 2, 1, &l, &e) == FM_OK) {
            if (l.dim != 4)
                abort();
            check(&f, &l);
        }
        fm_st_free(&f);
    }
    close(fd);
    return 0;
}
