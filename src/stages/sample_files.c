/* sample_files.c - samples into a folder of PNGs and/or an .npz. */
#include "fm/sample_files.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/dataset.h"
#include "fm/files.h"
#include "fm/png.h"

#define SIDE FM_MNIST_PADDED

int fm_sample_files_open(fm_sample_files *f, const char *dir, const char *npz_path, int64_t n, int batch, fm_err *e)
{
    memset(f, 0, sizeof *f);
    f->dir = dir;
    f->n = n;
    f->cap = batch;
    f->bytes = malloc((size_t)batch * SIDE * SIDE);
    f->labels = npz_path ? malloc((size_t)n * sizeof *f->labels) : NULL;
    if (!f->bytes || (npz_path && !f->labels)) {
        fm_sample_files_abort(f);
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory for %" PRId64 " samples", n);
    }
    int rc = dir ? fm_mkdir_p(dir, e) : FM_OK;
    if (rc == FM_OK && npz_path) {
        const int64_t shape[3] = { n, SIDE, SIDE };
        rc = fm_npz_open(&f->npz, npz_path, e);
        f->has_npz = rc == FM_OK;
        if (rc == FM_OK)
            rc = fm_npz_begin(&f->npz, "images", "|u1", 3, shape, e);
    }
    if (rc != FM_OK)
        fm_sample_files_abort(f);
    return rc;
}

int fm_sample_files_add(void *ctx, int64_t first, int count, const float *images, const int32_t *labels, fm_err *e)
{
    fm_sample_files *f = ctx;
    if (count > f->cap || first + count > f->n)
        return fm_fail(e, FM_ERR_INTERNAL, "samples %" PRId64 "+%d beyond the %" PRId64 " expected", first, count,
                       f->n);
    fm_png_to_bytes(images, f->bytes, (size_t)count * SIDE * SIDE);
    for (int i = 0; f->dir && i < count; i++) {
        char name[64], path[4200];
        snprintf(name, sizeof name, "%s", fm_class_names[labels[i]]);
        for (char *s = name; *s; s++) /* "T-shirt/top" -> "t-shirt-top", "Ankle boot" -> "ankle-boot" */
            *s = isalnum((unsigned char)*s) ? (char)tolower((unsigned char)*s) : '-';
        snprintf(path, sizeof path, "%s/%06" PRId64 "-c%d-%s.png", f->dir, first + i, labels[i], name);
        FM_TRY(fm_png_write_grid(path, images + (size_t)i * SIDE * SIDE, 1, SIDE, SIDE, 1, 1, 1, 0, 1, e));
    }
    if (f->has_npz) {
        FM_TRY(fm_npz_write(&f->npz, f->bytes, (size_t)count * SIDE * SIDE, e));
        for (int i = 0; i < count; i++)
            f->labels[first + i] = labels[i];
    }
    return FM_OK;
}

int fm_sample_files_close(fm_sample_files *f, fm_err *e)
{
    int rc = FM_OK;
    if (f->has_npz) {
        rc = fm_npz_end(&f->npz, e);
        if (rc == FM_OK)
            rc = fm_npz_begin(&f->npz, "labels", "<i8", 1, &f->n, e);
        if (rc == FM_OK)
            rc = fm_npz_write(&f->npz, f->labels, (size_t)f->n * sizeof *f->labels, e);
        if (rc == FM_OK)
            rc = fm_npz_end(&f->npz, e);
        if (rc == FM_OK) {
            rc = fm_npz_close(&f->npz, e);
            f->has_npz = 0;
        }
    }
    fm_sample_files_abort(f);
    return rc;
}

void fm_sample_files_abort(fm_sample_files *f)
{
    if (f->has_npz)
        fm_npz_abort(&f->npz);
    f->has_npz = 0;
    free(f->labels);
    free(f->bytes);
    f->labels = NULL;
    f->bytes = NULL;
}
