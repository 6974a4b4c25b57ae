/* npz.h - NumPy .npz files (a zip archive of .npy arrays, stored, not
 * compressed) written as a stream: each array's bytes may come in pieces, so
 * a large sample set never has to be in memory at once. numpy.load reads
 * the result. Written to a temporary file, fsync'd and renamed on close, so
 * the path is never half-written; at most 4 GiB in all (no zip64).
 *
 *   fm_npz z;
 *   fm_npz_open(&z, "samples.npz", e);
 *   fm_npz_begin(&z, "images", "|u1", 3, (int64_t[]){ n, 32, 32 }, e);
 *   fm_npz_write(&z, bytes, count, e) ... ;   // row-major, in order
 *   fm_npz_end(&z, e);
 *   ... more arrays ...
 *   fm_npz_close(&z, e);                      // or fm_npz_abort(&z) on an error */
#ifndef FM_NPZ_H
#define FM_NPZ_H

#include <stdint.h>
#include <stdio.h>

#include "fm/status.h"

#define FM_NPZ_MAX_ARRAYS 8

typedef struct fm_npz {
    FILE *fp;
    char path[4096], tmp[4200];
    int n;                        /* arrays begun */
    struct {
        char name[64];            /* member name, "<array>.npy" */
        uint32_t crc;
        uint64_t size, offset;    /* bytes of the member; offset of its local header */
    } m[FM_NPZ_MAX_ARRAYS];
    uint64_t expect;              /* data bytes the current array's shape promises, still to come */
} fm_npz;

int fm_npz_open(fm_npz *z, const char *path, fm_err *e);
/* Start array `name` of dtype descr (numpy's: "|u1", "<i4", "<f4", ...) and
 * the given shape; its data must follow in full before fm_npz_end. */
int fm_npz_begin(fm_npz *z, const char *name, const char *descr, int ndim, const int64_t *shape, fm_err *e);
int fm_npz_write(fm_npz *z, const void *data, size_t bytes, fm_err *e);
int fm_npz_end(fm_npz *z, fm_err *e);
/* Write the zip directory, fsync, rename onto the path. */
int fm_npz_close(fm_npz *z, fm_err *e);
/* Drop the temporary file (after an error). */
void fm_npz_abort(fm_npz *z);

#endif
