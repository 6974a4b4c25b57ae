/* fuzz_idx.c - libFuzzer harness for the gzip-compressed IDX reader.
 *
 * Input: one mode byte, then a file. Mode bit 0 set: the rest is gzip-
 * compressed here first, so the fuzzer can reach the IDX header and payload
 * checks behind a valid gzip stream; clear: the rest is the file as it is
 * (gzip layer: truncation, corruption, concatenated members, trailing bytes).
 * (mode >> 1) % 4 + 1 = the number of dimensions asked for. The file is an
 * in-memory file (memfd) read through /proc/self/fd. fm_idx_read must
 * return a status for any input; on success size = product of dims and
 * every byte of data is readable. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "fm/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* gzip (RFC 1952) of in[0..n) into a malloc'd buffer. */
static uint8_t *gzip(const uint8_t *in, size_t n, size_t *out_n)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&s, (uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (!out) {
        deflateEnd(&s);
        return NULL;
    }
    s.next_in = (Bytef *)(uintptr_t)in;
    s.avail_in = (uInt)n;
    s.next_out = out;
    s.avail_out = (uInt)cap;
    int rc = deflate(&s, Z_FINISH);
    *out_n = cap - s.avail_out;
    deflateEnd(&s);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0];
    int ndim = (mode >> 1) % 4 + 1;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    uint8_t *packed = NULL;
    if (mode & 1) {
        packed = gzip(body, n, &n);
        if (!packed)
            return 0;
        body = packed;
    }
    int fd = memfd_create("fuzz_idx", MFD_CLOEXEC);
    if (fd < 0) {
        free(packed);
        return 0;
    }
    if (write_all(fd, body, n) == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        fm_idx x;
        fm_err e = { 0 };
        if (fm_idx_read(path, ndim, &x, &e) == FM_OK) {
            size_t want = 1;
            for (int d = 0; d < x.ndim; d++)
                want *= (size_t)x.dims[d];
            if (x.ndim != ndim || want != x.size || x.size > FM_IDX_MAX_BYTES) {
                fprintf(stderr, "fm_idx_read: ndim %d (asked %d), size %zu, product of dims %zu\n", x.ndim, ndim,
                        x.size, want);
                abort();
            }
            unsigned sum = 0;
            for (size_t i = 0; i < x.size; i++) /* ASan: every byte must be inside the buffer */
                sum += x.data[i];
            (void)sum;
            fm_idx_free(&x);
        }
    }
    close(fd);
    free(packed);
    return 0;
}
