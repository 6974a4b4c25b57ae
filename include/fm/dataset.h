/* dataset.h - Fashion-MNIST from gzip-compressed IDX files.
 *
 * IDX layout (big-endian): magic 00 00 <type> <ndim>, then ndim uint32
 * dimensions, then the items, row-major. fmtrain reads only unsigned-byte
 * files (type 0x08): images 0x00000803 [N, rows, cols], labels 0x00000801 [N].
 *
 * The reader trusts nothing in the file: it checks the gzip magic, every
 * header field, that the claimed size is possible for the file's compressed
 * size and under FM_IDX_MAX_BYTES before allocating anything, grows its buffer
 * only as decompressed data actually arrives, verifies the gzip CRC and length,
 * and rejects truncated data and trailing bytes. */
#ifndef FM_DATASET_H
#define FM_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "fm/status.h"

#define FM_IDX_MAX_DIMS 4
#define FM_IDX_MAX_BYTES ((size_t)1 << 31) /* largest payload accepted: 2 GiB */

#define FM_MNIST_SIDE 28                   /* rows = cols in the IDX files */
#define FM_MNIST_PAD 2                     /* border added on each side */
#define FM_MNIST_PADDED (FM_MNIST_SIDE + 2 * FM_MNIST_PAD) /* 32 */
#define FM_MNIST_CLASSES 10

/* Fashion-MNIST's class names by label: "T-shirt/top", "Trouser", ... "Ankle boot". */
extern const char *const fm_class_names[FM_MNIST_CLASSES];

/* One IDX file in memory. */
typedef struct fm_idx {
    int ndim;
    int dims[FM_IDX_MAX_DIMS]; /* each in 1..INT32_MAX */
    size_t size;               /* product of dims = bytes in data */
    uint8_t *data;             /* [dims[0], ..., dims[ndim-1]] row-major */
} fm_idx;

/* Read the gzip-compressed unsigned-byte IDX file at path, which must have
 * exactly expect_ndim (1..FM_IDX_MAX_DIMS) dimensions. On success out owns a
 * malloc'd buffer (free with fm_idx_free). Any problem with the file ->
 * FM_ERR_DATA with "<path>: <what is wrong>"; out is then left empty. */
int fm_idx_read(const char *path, int expect_ndim, fm_idx *out, fm_err *e);
void fm_idx_free(fm_idx *x);

typedef struct fm_dataset {
    int n;            /* images */
    int h, w;         /* 32, 32 after padding */
    float *images;    /* [n, 32, 32, 1] NHWC, values in [-1, 1]: x/127.5 - 1, zero-padded border = -1 (2 px each side) */
    int32_t *labels;  /* [n], in 0..9 */
} fm_dataset;

/* split: "train" or "t10k". Reads <dir>/<split>-images-idx3-ubyte.gz and
 * <dir>/<split>-labels-idx1-ubyte.gz: 28x28 images, labels in 0..9, equal
 * counts. limit > 0 keeps only the first `limit` images (the whole files are
 * still verified). Errors -> FM_ERR_DATA with a message naming the file and
 * what is wrong (a missing directory or file also names data.dir and the
 * Debian package that provides the data); a bad split -> FM_ERR_USAGE.
 * On failure out is left empty; fm_dataset_free is safe on it either way. */
int fm_mnist_load(const char *dir, const char *split, int limit, fm_dataset *out, fm_err *e);
/* Frees images and labels: only for a dataset fm_mnist_load filled. */
void fm_dataset_free(fm_dataset *d);

/* fm_mnist_load in two halves, to decode into buffers the caller owns (a
 * block shared by the ranks of a node): fm_mnist_read reads and verifies a
 * split's two files exactly as fm_mnist_load does (same checks, same
 * messages) and keeps them undecoded; raw->n is the number of images the
 * dataset will hold (after `limit`). fm_mnist_decode then writes images
 * [n, 32, 32, 1] and labels [n] (fm_dataset's layout and values, bit for
 * bit). fm_mnist_raw_free is safe on a raw that failed or was freed. */
typedef struct fm_mnist_raw {
    fm_idx img, lab;
    int n;
} fm_mnist_raw;

int fm_mnist_read(const char *dir, const char *split, int limit, fm_mnist_raw *raw, fm_err *e);
void fm_mnist_decode(const fm_mnist_raw *raw, float *images, int32_t *labels);
void fm_mnist_raw_free(fm_mnist_raw *raw);

#endif
