/* sample_files.h - where `fmtrain sample --n/--per-class` puts its samples:
 * a folder of PNG files, one per sample, and/or one .npz of arrays, filled
 * batch by batch from fm_generator_samples (generate.h).
 *
 *   DIR/<index, 6 digits>-c<class>-<name>.png   e.g. 000123-c3-dress.png:
 *       32 x 32 8-bit gray, the bytes of the run's grids (fm_png_to_bytes)
 *   FILE.npz: images uint8 [n, 32, 32], labels int64 [n]   (numpy.load)
 *
 * A sample's pixels are the same in both. */
#ifndef FM_SAMPLE_FILES_H
#define FM_SAMPLE_FILES_H

#include <stdint.h>

#include "fm/npz.h"
#include "fm/status.h"

typedef struct fm_sample_files {
    const char *dir;      /* NULL: no PNG files */
    fm_npz npz;
    int has_npz;
    int64_t n;            /* samples to come in all */
    int64_t *labels;      /* [n] kept until close (8 bytes a sample) */
    uint8_t *bytes;       /* one batch of images as bytes */
    int cap;              /* samples bytes holds */
} fm_sample_files;

/* Create dir (and its parents; it may exist) and/or start npz_path (either may
 * be NULL) for n samples of batches of at most batch. */
int fm_sample_files_open(fm_sample_files *f, const char *dir, const char *npz_path, int64_t n, int batch, fm_err *e);
/* An fm_sample_sink (ctx = the fm_sample_files). */
int fm_sample_files_add(void *ctx, int64_t first, int count, const float *images, const int32_t *labels, fm_err *e);
/* Finish the .npz (the labels array and the directory); frees. */
int fm_sample_files_close(fm_sample_files *f, fm_err *e);
/* After an error: drop the unfinished .npz; frees. */
void fm_sample_files_abort(fm_sample_files *f);

#endif
