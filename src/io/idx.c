/* idx.c - verifying reader for gzip-compressed IDX files, and the
 * Fashion-MNIST loader built on it (scale to [-1, 1], pad 28x28 to 32x32). */
#include "fm/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

const char *const fm_class_names[FM_MNIST_CLASSES] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot" };
#include "fm/files.h"

#define GZ_CHUNK (1 << 18)      /* compressed bytes read per read() */
#define GROW_FIRST (1 << 20)    /* first payload buffer; doubles as data arrives */
#define DEFLATE_MAX_RATIO 1032u /* deflate never expands more than ~1032:1 */

#define DATA_HINT "the Debian package dataset-fashion-mnist provides /usr/share/datasets/fashion-mnist"

/* A gzip stream read straight from a file descriptor with inflate(), so that
 * truncation, corruption and bytes after the stream are all reported. */
typedef struct gz_in {
    const char *path;
    int fd;
    int zinit;             /* inflateInit2 done */
    int in_eof;            /* read() returned 0 */
    int member_end;        /* the current gzip member ended (Z_STREAM_END) */
    int done;              /* a member ended and no input is left */
    unsigned long long base; /* file offset of in[0] */
    z_stream s;
    unsigned char *in;     /* GZ_CHUNK bytes */
} gz_in;

static int read_retry(int fd, void *buf, size_t n, ssize_t *got)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    *got = r;
    return r < 0 ? -1 : 0;
}

/* Refill the input buffer when it is empty; sets in_eof at end of file. */
static int gz_refill(gz_in *g, fm_err *e)
{
    if (g->s.avail_in > 0 || g->in_eof)
        return FM_OK;
    ssize_t r;
    if (read_retry(g->fd, g->in, GZ_CHUNK, &r) != 0)
        return fm_fail(e, FM_ERR_DATA, "%s: read failed: %s", g->path, strerror(errno));
    g->base += (unsigned long long)(g->s.next_in - g->in);
    g->s.next_in = g->in;
    g->s.avail_in = (uInt)r;
    if (r == 0)
        g->in_eof = 1;
    return FM_OK;
}

/* File offset of the next compressed byte inflate will see. */
static unsigned long long gz_offset(const gz_in *g)
{
    return g->base + (unsigned long long)(g->s.next_in - g->in);
}

static void gz_close(gz_in *g)
{
    if (g->zinit)
        inflateEnd(&g->s);
    if (g->fd >= 0)
        close(g->fd);
    free(g->in);
    g->zinit = 0;
    g->fd = -1;
    g->in = NULL;
}

/* Open path, check that it is a non-empty regular file starting with the gzip
 * magic 1f 8b (zlib's gzread would pass other data through unchanged) and
 * set up inflate for gzip. *file_size is the size on disk. */
static int gz_open(gz_in *g, const char *path, off_t *file_size, fm_err *e)
{
    memset(g, 0, sizeof *g);
    g->path = path;
    FM_TRY(fm_open_regular(path, &g->fd, e));
    struct stat st;
    if (fstat(g->fd, &st) != 0)
        return fm_fail(e, FM_ERR_DATA, "%s: cannot stat: %s", path, strerror(errno));
    *file_size = st.st_size;
    if (st.st_size == 0)
        return fm_fail(e, FM_ERR_DATA, "%s: empty file (0 bytes), expected a gzip-compressed IDX file", path);
    g->in = malloc(GZ_CHUNK);
    if (!g->in)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory for the read buffer", path);

    /* the first two bytes, even if read() returns them one at a time */
    size_t have = 0;
    while (have < 2) {
        ssize_t r;
        if (read_retry(g->fd, g->in + have, GZ_CHUNK - have, &r) != 0)
            return fm_fail(e, FM_ERR_DATA, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) {
            g->in_eof = 1;
            break;
        }
        have += (size_t)r;
    }
    if (have == 0)
        return fm_fail(e, FM_ERR_DATA, "%s: empty file (0 bytes), expected a gzip-compressed IDX file", path);
    if (have < 2)
        return fm_fail(e, FM_ERR_DATA, "%s: not a gzip file: only 1 byte long", path);
    if (g->in[0] != 0x1f || g->in[1] != 0x8b) {
        if (have >= 3 && g->in[0] == 0 && g->in[1] == 0 && g->in[2] == 0x08)
            return fm_fail(e, FM_ERR_DATA, "%s: not a gzip file: starts with 00 00 08, an uncompressed IDX header "
                           "(expected the gzip magic 1f 8b; gzip the file)", path);
        return fm_fail(e, FM_ERR_DATA, "%s: not a gzip file: starts with %02x %02x, expected the gzip magic 1f 8b",
                       path, g->in[0], g->in[1]);
    }
    g->s.next_in = g->in;
    g->s.avail_in = (uInt)have;
    if (inflateInit2(&g->s, 16 + MAX_WBITS) != Z_OK) /* 16: gzip wrapper only */
        return fm_fail(e, FM_ERR_INTERNAL, "%s: inflateInit2 failed: %s", path, g->s.msg ? g->s.msg : "out of memory");
    g->zinit = 1;
    return FM_OK;
}

/* Decompress up to n bytes into buf; *got < n only at the clean end of the
 * last gzip member (whose CRC and length inflate has verified by then).
 * Concatenated gzip members are read as one stream, as gunzip does. */
static int gz_read(gz_in *g, void *buf, size_t n, size_t *got, fm_err *e)
{
    unsigned char *out = buf;
    *got = 0;
    while (*got < n && !g->done) {
        FM_TRY(gz_refill(g, e));
        if (g->s.avail_in == 0) {
            if (g->member_end) {
                g->done = 1;
                break;
            }
            return fm_fail(e, FM_ERR_DATA, "%s: truncated gzip stream: the compressed data ends after %llu bytes "
                           "without the end of the stream (file cut short?)", g->path, gz_offset(g));
        }
        if (g->member_end) {
            /* more input after a member: it must be another gzip member */
            if (g->s.next_in[0] != 0x1f)
                return fm_fail(e, FM_ERR_DATA, "%s: unexpected bytes after the end of the gzip stream at offset %llu",
                               g->path, gz_offset(g));
            inflateReset(&g->s);
            g->member_end = 0;
        }
        size_t want = n - *got;
        if (want > (1u << 30))
            want = 1u << 30;
        g->s.next_out = out + *got;
        g->s.avail_out = (uInt)want;
        int rc = inflate(&g->s, Z_NO_FLUSH);
        *got += want - g->s.avail_out;
        switch (rc) {
        case Z_STREAM_END:
            g->member_end = 1;
            break;
        case Z_OK:
        case Z_BUF_ERROR: /* needs more input: the loop refills or reports truncation */
            break;
        case Z_MEM_ERROR:
            return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory in inflate", g->path);
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            return fm_fail(e, FM_ERR_DATA, "%s: corrupt gzip data: %s", g->path,
                           g->s.msg ? g->s.msg : zError(rc));
        }
    }
    return FM_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *payload_name(int ndim)
{
    return ndim == 3 ? "pixel data" : ndim == 1 ? "label data" : "item data";
}

/* Header: magic and dimensions; fills out->ndim, dims, size. */
static int read_header(gz_in *g, int expect_ndim, off_t file_size, fm_idx *out, fm_err *e)
{
    const char *path = g->path;
    unsigned char h[4 * (1 + FM_IDX_MAX_DIMS)];
    size_t got;
    FM_TRY(gz_read(g, h, 4, &got, e));
    if (got == 0)
        return fm_fail(e, FM_ERR_DATA, "%s: the gzip stream decompresses to 0 bytes, expected an IDX file", path);
    if (got < 4)
        return fm_fail(e, FM_ERR_DATA, "%s: truncated: the IDX magic needs 4 bytes, got %zu", path, got);
    uint32_t magic = be32(h), want_magic = 0x00000800u | (uint32_t)expect_ndim;
    if (h[0] != 0 || h[1] != 0)
        return fm_fail(e, FM_ERR_DATA, "%s: bad magic 0x%08x: not an IDX file (expected 0x%08x)", path, magic, want_magic);
    if (h[2] != 0x08)
        return fm_fail(e, FM_ERR_DATA, "%s: bad magic 0x%08x: data type 0x%02x, expected 0x08 (unsigned byte)",
                       path, magic, h[2]);
    if (h[3] != expect_ndim)
        return fm_fail(e, FM_ERR_DATA, "%s: bad magic 0x%08x: %d dimension%s, expected %d (magic 0x%08x)",
                       path, magic, h[3], h[3] == 1 ? "" : "s", expect_ndim, want_magic);

    size_t hbytes = 4 * (size_t)expect_ndim;
    FM_TRY(gz_read(g, h + 4, hbytes, &got, e));
    if (got < hbytes)
        return fm_fail(e, FM_ERR_DATA, "%s: truncated: the header needs %zu bytes of dimensions, got %zu",
                       path, hbytes, got);
    out->ndim = expect_ndim;
    /* every dimension in 1..INT32_MAX, and the product under FM_IDX_MAX_BYTES,
     * checked without overflow: size stays <= FM_IDX_MAX_BYTES < 2^31 and a
     * dimension < 2^31, so their product fits in 64 bits */
    uint64_t size = 1;
    for (int d = 0; d < expect_ndim; d++) {
        uint32_t v = be32(h + 4 + 4 * d);
        if (v == 0)
            return fm_fail(e, FM_ERR_DATA, "%s: dimension %d is 0, every dimension must be > 0", path, d);
        if (v > INT32_MAX)
            return fm_fail(e, FM_ERR_DATA, "%s: dimension %d is %u, more than the limit %d", path, d, v, INT32_MAX);
        out->dims[d] = (int)v;
        size *= v;
        if (size > FM_IDX_MAX_BYTES)
            return fm_fail(e, FM_ERR_DATA, "%s: header claims more than %zu bytes of %s (dimension %d is %u), "
                           "over the %zu-byte limit", path, (size_t)FM_IDX_MAX_BYTES, payload_name(expect_ndim),
                           d, v, (size_t)FM_IDX_MAX_BYTES);
    }
    /* deflate expands at most ~1032:1, so a small file cannot hold a large claim */
    uint64_t total = size + 4 + hbytes;
    if (file_size > 0 && total / DEFLATE_MAX_RATIO > (uint64_t)file_size)
        return fm_fail(e, FM_ERR_DATA, "%s: header claims %llu bytes of %s, more than a %lld-byte gzip file can hold "
                       "(at most %llu)", path, (unsigned long long)size, payload_name(expect_ndim),
                       (long long)file_size, (unsigned long long)file_size * DEFLATE_MAX_RATIO);
    out->size = (size_t)size;
    return FM_OK;
}

/* Payload: exactly out->size bytes, then the end of the stream. */
static int read_payload(gz_in *g, fm_idx *out, fm_err *e)
{
    const char *what = payload_name(out->ndim);
    size_t need = out->size, cap = need < GROW_FIRST ? need : GROW_FIRST, have = 0;
    out->data = malloc(cap);
    if (!out->data)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory for %zu bytes", g->path, cap);
    while (have < need) {
        if (have == cap) {
            size_t ncap = cap > need / 2 ? need : 2 * cap;
            uint8_t *p = realloc(out->data, ncap);
            if (!p)
                return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory for %zu bytes", g->path, ncap);
            out->data = p;
            cap = ncap;
        }
        size_t ask = cap - have, got;
        FM_TRY(gz_read(g, out->data + have, ask, &got, e));
        have += got;
        if (got < ask)
            break; /* end of stream */
    }
    if (have < need)
        return fm_fail(e, FM_ERR_DATA, "%s: truncated: expected %zu bytes of %s, got %zu", g->path, need, what, have);

    /* must end here; reading on also makes inflate verify the CRC and length */
    unsigned char extra[4096];
    size_t got, more = 0;
    FM_TRY(gz_read(g, extra, sizeof extra, &got, e));
    if (got > 0) {
        more = got;
        while (got == sizeof extra && more < ((size_t)1 << 24)) { /* count up to 16 MiB, no further */
            FM_TRY(gz_read(g, extra, sizeof extra, &got, e));
            more += got;
        }
        return fm_fail(e, FM_ERR_DATA, "%s: trailing data: %s%zu bytes after the expected %zu bytes of %s",
                       g->path, got == sizeof extra ? "at least " : "", more, need, what);
    }
    return FM_OK;
}

int fm_idx_read(const char *path, int expect_ndim, fm_idx *out, fm_err *e)
{
    memset(out, 0, sizeof *out);
    if (expect_ndim < 1 || expect_ndim > FM_IDX_MAX_DIMS)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: fm_idx_read: expect_ndim %d not in 1..%d", path, expect_ndim,
                       FM_IDX_MAX_DIMS);
    gz_in g;
    off_t file_size = 0;
    int rc = gz_open(&g, path, &file_size, e);
    if (rc == FM_OK)
        rc = read_header(&g, expect_ndim, file_size, out, e);
    if (rc == FM_OK)
        rc = read_payload(&g, out, e);
    gz_close(&g);
    if (rc != FM_OK)
        fm_idx_free(out);
    return rc;
}

void fm_idx_free(fm_idx *x)
{
    if (!x)
        return;
    free(x->data);
    memset(x, 0, sizeof *x);
}

/* ---- Fashion-MNIST ---- */

/* Read one of the split's files, adding the data.dir hint when it is missing. */
static int read_split_file(const char *dir, const char *path, int ndim, fm_idx *out, fm_err *e)
{
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return fm_fail(e, FM_ERR_DATA, "%s: cannot open: %s (data.dir in the config points to %s; " DATA_HINT ")",
                       path, strerror(ENOENT), dir);
    return fm_idx_read(path, ndim, out, e);
}

/* [n, 28, 28] bytes -> [n, 32, 32, 1] floats x/127.5 - 1, border -1. */
static void scale_pad(const uint8_t *src, int n, float *dst)
{
    enum { S = FM_MNIST_SIDE, P = FM_MNIST_PAD, D = FM_MNIST_PADDED };
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = (float)v / 127.5f - 1.0f;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const uint8_t *s = src + (size_t)i * S * S; // [28, 28]
        float *d = dst + (size_t)i * D * D;         // [32, 32, 1]
        for (int k = 0; k < P * D; k++)
            d[k] = -1.0f;
        for (int r = 0; r < S; r++) {
            float *row = d + (size_t)(r + P) * D;
            for (int c = 0; c < P; c++)
                row[c] = row[P + S + c] = -1.0f;
            for (int c = 0; c < S; c++)
                row[P + c] = lut[s[r * S + c]];
        }
        for (int k = (P + S) * D; k < D * D; k++)
            d[k] = -1.0f;
    }
}

int fm_mnist_read(const char *dir, const char *split, int limit, fm_mnist_raw *raw, fm_err *e)
{
    memset(raw, 0, sizeof *raw);
    if (!dir || !split || (strcmp(split, "train") != 0 && strcmp(split, "t10k") != 0))
        return fm_fail(e, FM_ERR_USAGE, "fm_mnist_load: split must be \"train\" or \"t10k\", got \"%s\"",
                       split ? split : "(null)");
    struct stat st;
    if (stat(dir, &st) != 0)
        return fm_fail(e, FM_ERR_DATA, "%s: cannot open data directory: %s (data.dir in the config points here; "
                       DATA_HINT ")", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fm_fail(e, FM_ERR_DATA, "%s: not a directory (data.dir in the config points here; " DATA_HINT ")", dir);

    char ipath[PATH_MAX], lpath[PATH_MAX];
    int ni = snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", dir, split);
    int nl = snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", dir, split);
    if (ni < 0 || ni >= (int)sizeof ipath || nl < 0 || nl >= (int)sizeof lpath)
        return fm_fail(e, FM_ERR_DATA, "%s: data directory path too long (data.dir in the config points here)", dir);

    fm_idx *img = &raw->img, *lab = &raw->lab;
    int rc = read_split_file(dir, ipath, 3, img, e);
    if (rc != FM_OK)
        return rc;
    rc = read_split_file(dir, lpath, 1, lab, e);
    if (rc != FM_OK)
        goto fail;
    if (img->dims[1] != FM_MNIST_SIDE || img->dims[2] != FM_MNIST_SIDE) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: images are %dx%d, expected %dx%d", ipath, img->dims[1], img->dims[2],
                     FM_MNIST_SIDE, FM_MNIST_SIDE);
        goto fail;
    }
    if (img->dims[0] != lab->dims[0]) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: holds %d images but %s holds %d labels", ipath, img->dims[0], lpath,
                     lab->dims[0]);
        goto fail;
    }
    for (int i = 0; i < lab->dims[0]; i++) {
        if (lab->data[i] >= FM_MNIST_CLASSES) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: label %d at index %d out of range 0..%d", lpath, lab->data[i], i,
                         FM_MNIST_CLASSES - 1);
            goto fail;
        }
    }
    raw->n = img->dims[0];
    if (limit > 0 && limit < raw->n)
        raw->n = limit;
    return FM_OK;
fail:
    fm_mnist_raw_free(raw);
    return rc;
}

void fm_mnist_decode(const fm_mnist_raw *raw, float *images, int32_t *labels)
{
    scale_pad(raw->img.data, raw->n, images);
    for (int i = 0; i < raw->n; i++)
        labels[i] = raw->lab.data[i];
}

void fm_mnist_raw_free(fm_mnist_raw *raw)
{
    if (!raw)
        return;
    fm_idx_free(&raw->img);
    fm_idx_free(&raw->lab);
    raw->n = 0;
}

int fm_mnist_load(const char *dir, const char *split, int limit, fm_dataset *out, fm_err *e)
{
    memset(out, 0, sizeof *out);
    fm_mnist_raw raw;
    FM_TRY(fm_mnist_read(dir, split, limit, &raw, e));
    int rc = FM_OK, n = raw.n;
    size_t npix = (size_t)n * FM_MNIST_PADDED * FM_MNIST_PADDED;
    out->images = malloc(npix * sizeof *out->images);
    out->labels = malloc((size_t)n * sizeof *out->labels);
    if (!out->images || !out->labels) {
        fm_dataset_free(out);
        rc = fm_fail(e, FM_ERR_INTERNAL, "%s/%s-images-idx3-ubyte.gz: out of memory for %d images", dir, split, n);
    } else {
        fm_mnist_decode(&raw, out->images, out->labels);
        out->n = n;
        out->h = out->w = FM_MNIST_PADDED;
    }
    fm_mnist_raw_free(&raw);
    return rc;
}

void fm_dataset_free(fm_dataset *d)
{
    if (!d)
        return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
