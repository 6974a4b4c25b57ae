/* safetensors.h - read and write the safetensors layout:
 * 8-byte little-endian header length, a JSON header (padded with spaces to a
 * multiple of 8), then raw little-endian tensors. PyTorch, numpy and the
 * `safetensors` package read it. fmtrain adds to __metadata__ one entry
 * "crc32c.<tensor name>" (8 hex digits) per tensor, and FM_ST_META_CRC, the
 * CRC32C of every other metadata pair (sorted by key, each as key NUL value
 * NUL), checked on every load. A file without FM_ST_META_CRC (written before
 * it existed, or by another tool) is still read, its metadata unchecked:
 * f->meta_checked says which; callers validate every value they use either way.
 *
 * Writes are atomic: a temporary file in the same directory is written,
 * fsync'd and renamed over the target, and the directory is fsync'd, so a crash
 * or a full disk never leaves a half-written file under the final name. */
#ifndef FM_SAFETENSORS_H
#define FM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "fm/status.h"
#include "fm/tensor.h"

#define FM_ST_META_CRC "crc32c.__metadata__"

typedef struct fm_st_tensor {
    const char *name;
    const void *data;        /* fp32 (F32) or bf16 (BF16) values */
    fm_dtype dtype;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
} fm_st_tensor;

typedef struct fm_st_meta {
    const char *key;
    const char *value;
} fm_st_meta;

/* Write nt tensors and nm metadata pairs to path. I/O errors -> FM_ERR_IO. */
int fm_st_write(const char *path, const fm_st_tensor *t, int nt, const fm_st_meta *m, int nm, fm_err *e);

/* A loaded file: the whole file in memory, views into it. */
typedef struct fm_st_file {
    char *buf;               /* whole file */
    size_t size;
    int n;
    fm_st_tensor *t;         /* n entries; names and data point into buf/names */
    char **names;
    int nmeta;
    char **meta_keys, **meta_vals;
    int meta_checked;        /* 1: the metadata matched its FM_ST_META_CRC */
} fm_st_file;

/* Read and verify path: header syntax, offsets inside the file, sizes that
 * match dtype x shape, no two tensors overlapping, no name twice (tensors or
 * metadata), every tensor's CRC32C and the metadata's. Any failure ->
 * FM_ERR_DATA naming the file and what is wrong. */
int fm_st_read(const char *path, fm_st_file *f, fm_err *e);
void fm_st_free(fm_st_file *f);
const fm_st_tensor *fm_st_get(const fm_st_file *f, const char *name);
const char *fm_st_meta_get(const fm_st_file *f, const char *key);

#endif
