/* test_idx.c - the gzip IDX reader and the Fashion-MNIST loader: the real
 * files (counts, label histogram, value range, border, pixel mean, bytes
 * against zlib's own gzread) and bad files crafted with zlib at run time in a
 * mkdtemp directory (nothing binary is committed). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm/dataset.h"
#include "fm/timer.h"
#include "test.h"

#define REAL_DIR "/usr/share/datasets/fashion-mnist"
#define IMG "train-images-idx3-ubyte.gz"
#define LAB "train-labels-idx1-ubyte.gz"

/* ---- helpers: temp directory, IDX bytes, gzip writers ---- */

typedef struct tmpdir {
    char path[64];
} tmpdir;

static int tmp_make(tmpdir *t)
{
    snprintf(t->path, sizeof t->path, "/tmp/fm_test_idx.XXXXXX");
    return mkdtemp(t->path) ? 0 : -1;
}

static void tmp_remove(tmpdir *t)
{
    DIR *d = opendir(t->path);
    if (!d)
        return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", t->path, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(t->path);
}

static void tmp_file(const tmpdir *t, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", t->path, name);
}

/* An IDX buffer: magic, dims (big-endian), then payload bytes of `fill`
 * (payload = product of dims + extra, clipped at 0; extra < 0 truncates). */
typedef struct buf {
    unsigned char *p;
    size_t n;
} buf;

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static buf idx_bytes(uint32_t magic, int ndim, const uint32_t *dims, long extra, unsigned seed)
{
    uint64_t items = 1;
    for (int i = 0; i < ndim; i++) {
        items *= dims[i];
        if (items > (1u << 24)) { /* a huge claim: write the header only */
            items = 0;
            break;
        }
    }
    long payload = (long)items + extra;
    if (payload < 0)
        payload = 0;
    buf b;
    b.n = 4 + 4 * (size_t)ndim + (size_t)payload;
    b.p = malloc(b.n);
    put_be32(b.p, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(b.p + 4 + 4 * i, dims[i]);
    uint32_t s = seed * 2654435761u + 1;
    for (long i = 0; i < payload; i++) {
        s = s * 1664525u + 1013904223u;
        b.p[4 + 4 * ndim + i] = (unsigned char)(s >> 24);
    }
    return b;
}

/* Labels: n bytes, value (i * 7) % 10 except bad_at (if >= 0) = bad_val. */
static buf label_bytes(uint32_t n, long extra, long bad_at, int bad_val)
{
    uint32_t dims[1] = { n };
    buf b = idx_bytes(0x00000801, 1, dims, extra, 0);
    for (size_t i = 8; i < b.n; i++)
        b.p[i] = (unsigned char)(((i - 8) * 7) % 10);
    if (bad_at >= 0)
        b.p[8 + bad_at] = (unsigned char)bad_val;
    return b;
}

/* Gzip `b` in memory (one member, default level). */
static buf gzip_bytes(buf b)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    buf z;
    z.n = deflateBound(&s, (uLong)b.n);
    z.p = malloc(z.n);
    s.next_in = b.p;
    s.avail_in = (uInt)b.n;
    s.next_out = z.p;
    s.avail_out = (uInt)z.n;
    deflate(&s, Z_FINISH);
    z.n = s.total_out;
    deflateEnd(&s);
    return z;
}

/* Unlinks first: rewriting through O_TRUNC makes ext4 flush on close (~3 ms). */
static int write_raw(const char *path, const void *p, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* gzip_bytes(b), then free b. */
static buf gzip_take(buf b)
{
    buf z = gzip_bytes(b);
    free(b.p);
    return z;
}

/* Write b gzipped to path and free b. */
static int write_gz(const char *path, buf b)
{
    buf z = gzip_bytes(b);
    int rc = write_raw(path, z.p, z.n);
    free(z.p);
    free(b.p);
    return rc;
}

static const uint32_t img_dims_ok[3] = { 3, 28, 28 };

/* A valid 3-image split in t: images from seed 1, labels 0, 7, 4. */
static int write_small_split(const tmpdir *t)
{
    char p[600];
    tmp_file(t, IMG, p, sizeof p);
    if (write_gz(p, idx_bytes(0x00000803, 3, img_dims_ok, 0, 1)) != 0)
        return -1;
    tmp_file(t, LAB, p, sizeof p);
    return write_gz(p, label_bytes(3, 0, -1, 0));
}

/* The call failed with FM_ERR_DATA, the message starts with the path and
 * contains `want` (if non-NULL). */
static int expect_data_err(int rc, const fm_err *e, const char *path, const char *want)
{
    if (rc != FM_ERR_DATA || e->code != FM_ERR_DATA) {
        fprintf(stderr, "  expected FM_ERR_DATA (3), got %d: %s\n", rc, rc ? e->msg : "(success)");
        return 1;
    }
    size_t n = strlen(path);
    if (strncmp(e->msg, path, n) != 0 || strncmp(e->msg + n, ": ", 2) != 0) {
        fprintf(stderr, "  message does not start with \"%s: \": %s\n", path, e->msg);
        return 1;
    }
    if (want && !strstr(e->msg, want)) {
        fprintf(stderr, "  message lacks \"%s\": %s\n", want, e->msg);
        return 1;
    }
    printf("  ok: %s\n", e->msg);
    return 0;
}

/* fm_idx_read on one crafted file must fail naming it; out must be empty. */
static int idx_must_fail(const char *path, int ndim, const char *want)
{
    fm_idx x;
    fm_err e = { 0 };
    int rc = fm_idx_read(path, ndim, &x, &e);
    if (x.data != NULL || x.size != 0) {
        fprintf(stderr, "  out not left empty on failure\n");
        fm_idx_free(&x);
        return 1;
    }
    return expect_data_err(rc, &e, path, want);
}

/* fm_mnist_load on a split in t must fail; the message starts with `who`. */
static int load_must_fail(const char *dir, const char *who, const char *want)
{
    fm_dataset d;
    fm_err e = { 0 };
    int rc = fm_mnist_load(dir, "train", 0, &d, &e);
    if (d.images != NULL || d.labels != NULL || d.n != 0) {
        fprintf(stderr, "  dataset not left empty on failure\n");
        fm_dataset_free(&d);
        return 1;
    }
    return expect_data_err(rc, &e, who, want);
}

/* ---- the real files ---- */

/* Counts, histogram, exact range, border, mean of the 28x28 pixels in [0,1]. */
static int check_real(const char *split, int n_want, double mean01_want)
{
    fm_dataset d;
    fm_err e = { 0 };
    double t0 = fm_now();
    CHECK_OK(fm_mnist_load(REAL_DIR, split, 0, &d, &e), &e);
    double dt = fm_now() - t0;
    printf("  %s: %d images loaded in %.3f s\n", split, d.n, dt);
    int rc = 1;
    long hist[10] = { 0 };
    CHECK(d.n == n_want && d.h == 32 && d.w == 32, "n %d h %d w %d", d.n, d.h, d.w);
    for (int i = 0; i < d.n; i++) {
        CHECK(d.labels[i] >= 0 && d.labels[i] <= 9, "label %d at %d", d.labels[i], i);
        hist[d.labels[i]]++;
    }
    for (int c = 0; c < 10; c++)
        CHECK(hist[c] == n_want / 10, "class %d has %ld images", c, hist[c]);
    float lo = 2, hi = -2;
    double sum = 0;
    long border_bad = 0, off_grid = 0;
    for (int i = 0; i < d.n; i++) {
        const float *im = d.images + (size_t)i * 32 * 32;
        for (int r = 0; r < 32; r++)
            for (int c = 0; c < 32; c++) {
                float v = im[r * 32 + c];
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
                if (r < 2 || r >= 30 || c < 2 || c >= 30) {
                    border_bad += v != -1.0f;
                } else {
                    sum += (v + 1.0) / 2.0;
                    double x = (v + 1.0) * 127.5; /* back to a byte: must be an integer */
                    off_grid += fabs(x - nearbyint(x)) > 1e-3;
                }
            }
    }
    double mean = sum / ((double)d.n * 28 * 28);
    printf("  %s: range [%g, %g], pixel mean %.4f (of x/255), border pixels != -1: %ld\n", split, lo, hi, mean,
           border_bad);
    CHECK(lo == -1.0f && hi == 1.0f, "range [%g, %g], want exactly [-1, 1]", lo, hi);
    CHECK(border_bad == 0, "%ld border pixels are not -1", border_bad);
    CHECK(off_grid == 0, "%ld pixels are not k/127.5 - 1", off_grid);
    /* Fashion-MNIST's published means: 0.2860 (train), 0.2868 (t10k) */
    CHECK(fabs(mean - mean01_want) < 0.002, "pixel mean %.4f, want %.4f", mean, mean01_want);
    rc = 0;
    fm_dataset_free(&d);
    return rc;
}

static int test_real_train(void)
{
    return check_real("train", 60000, 0.2860);
}

static int test_real_t10k(void)
{
    return check_real("t10k", 10000, 0.2868);
}

/* fm_idx_read against zlib's gzread (a different decoding path) on the real
 * files, byte for byte, and the first labels against their known values. */
static int test_real_bytes_match_gzread(void)
{
    const char *files[] = { REAL_DIR "/t10k-images-idx3-ubyte.gz", REAL_DIR "/t10k-labels-idx1-ubyte.gz",
                            REAL_DIR "/train-labels-idx1-ubyte.gz" };
    const int ndims[] = { 3, 1, 1 };
    for (int f = 0; f < 3; f++) {
        fm_idx x;
        fm_err e = { 0 };
        CHECK_OK(fm_idx_read(files[f], ndims[f], &x, &e), &e);
        size_t hdr = 4 + 4 * (size_t)ndims[f], n = hdr + x.size + 1;
        unsigned char *ref = malloc(n);
        gzFile gz = gzopen(files[f], "rb");
        CHECK(gz != NULL, "gzopen %s", files[f]);
        int got = gzread(gz, ref, (unsigned)n);
        gzclose(gz);
        int same = got == (int)(n - 1) && memcmp(ref + hdr, x.data, x.size) == 0;
        free(ref);
        size_t size = x.size;
        int first[10];
        for (int i = 0; i < 10 && ndims[f] == 1; i++)
            first[i] = x.data[i];
        fm_idx_free(&x);
        CHECK(same, "%s: %zu bytes differ from gzread (%d bytes)", files[f], size, got);
        if (f == 1) { /* t10k labels begin 9 2 1 1 6 1 4 6 5 7 */
            static const int want[10] = { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 };
            CHECK(memcmp(first, want, sizeof want) == 0, "t10k first labels %d %d %d", first[0], first[1], first[2]);
        }
        if (f == 2) { /* train labels begin 9 0 0 3 0 2 7 2 5 5 */
            static const int want[10] = { 9, 0, 0, 3, 0, 2, 7, 2, 5, 5 };
            CHECK(memcmp(first, want, sizeof want) == 0, "train first labels %d %d %d", first[0], first[1], first[2]);
        }
    }
    return 0;
}

static int test_limit(void)
{
    fm_dataset all, some;
    fm_err e = { 0 };
    CHECK_OK(fm_mnist_load(REAL_DIR, "t10k", 0, &all, &e), &e);
    CHECK_OK(fm_mnist_load(REAL_DIR, "t10k", 100, &some, &e), &e);
    int ok = some.n == 100 && memcmp(some.images, all.images, 100 * 32 * 32 * sizeof(float)) == 0 &&
             memcmp(some.labels, all.labels, 100 * sizeof(int32_t)) == 0;
    fm_dataset_free(&some);
    CHECK_OK(fm_mnist_load(REAL_DIR, "t10k", 20000, &some, &e), &e); /* more than there are: all */
    ok = ok && some.n == 10000;
    fm_dataset_free(&some);
    fm_dataset_free(&all);
    fm_dataset_free(&all); /* twice is safe */
    CHECK(ok, "limit 100 / 20000 do not give the first 100 / all images");
    return 0;
}

/* ---- crafted valid files: exact layout ---- */

/* Every pixel lands at [i, r+2, c+2] as x/127.5 - 1 (naive reference loop). */
static int test_small_layout(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    CHECK(write_small_split(&t) == 0, "write");
    fm_dataset d;
    fm_err e = { 0 };
    int rc = fm_mnist_load(t.path, "train", 0, &d, &e);
    buf ref = idx_bytes(0x00000803, 3, img_dims_ok, 0, 1);
    tmp_remove(&t);
    CHECK_OK(rc, &e);
    long bad = 0;
    for (int i = 0; i < 3; i++)
        for (int r = 0; r < 32; r++)
            for (int c = 0; c < 32; c++) {
                int inside = r >= 2 && r < 30 && c >= 2 && c < 30;
                float want = inside ? ref.p[16 + i * 784 + (r - 2) * 28 + (c - 2)] / 127.5f - 1.0f : -1.0f;
                bad += d.images[(i * 32 + r) * 32 + c] != want;
            }
    int labels_ok = d.n == 3 && d.labels[0] == 0 && d.labels[1] == 7 && d.labels[2] == 4;
    free(ref.p);
    fm_dataset_free(&d);
    CHECK(bad == 0, "%ld of %d values differ from the reference loop", bad, 3 * 1024);
    CHECK(labels_ok, "labels");
    return 0;
}

/* Concatenated gzip members decode as one stream, like gunzip. */
static int test_multi_member_ok(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    buf b = label_bytes(1000, 0, -1, 0), h = { b.p, 300 }, r = { b.p + 300, b.n - 300 };
    buf z1 = gzip_bytes(h), z2 = gzip_bytes(r);
    unsigned char *cat = malloc(z1.n + z2.n);
    memcpy(cat, z1.p, z1.n);
    memcpy(cat + z1.n, z2.p, z2.n);
    char p[600];
    tmp_file(&t, "two.gz", p, sizeof p);
    write_raw(p, cat, z1.n + z2.n);
    fm_idx x;
    fm_err e = { 0 };
    int rc = fm_idx_read(p, 1, &x, &e);
    int same = rc == FM_OK && x.size == 1000 && memcmp(x.data, b.p + 8, 1000) == 0;
    fm_idx_free(&x);
    free(cat);
    free(z1.p);
    free(z2.p);
    free(b.p);
    tmp_remove(&t);
    CHECK_OK(rc, &e);
    CHECK(same, "two-member file decoded differently");
    return 0;
}

/* ---- crafted bad files ---- */

static int test_missing_file_and_dir(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char ip[600], lp[600];
    tmp_file(&t, IMG, ip, sizeof ip);
    tmp_file(&t, LAB, lp, sizeof lp);
    int f = 0;
    f |= idx_must_fail(ip, 3, "cannot open: No such file or directory");
    f |= load_must_fail(t.path, ip, "cannot open: No such file or directory (data.dir in the config points to");
    f |= load_must_fail(t.path, ip, "the Debian package dataset-fashion-mnist provides /usr/share/datasets/fashion-mnist");
    /* images present, labels missing */
    write_gz(ip, idx_bytes(0x00000803, 3, img_dims_ok, 0, 1));
    f |= load_must_fail(t.path, lp, "cannot open: No such file or directory");
    /* a data.dir that does not exist, or is a file */
    char nodir[600];
    tmp_file(&t, "nope", nodir, sizeof nodir);
    f |= load_must_fail(nodir, nodir, "cannot open data directory: No such file or directory "
                        "(data.dir in the config points here; the Debian package dataset-fashion-mnist provides "
                        "/usr/share/datasets/fashion-mnist)");
    f |= load_must_fail(ip, ip, "not a directory (data.dir in the config points here");
    /* a directory where the file should be */
    unlink(ip);
    mkdir(ip, 0700);
    f |= idx_must_fail(ip, 3, "is a directory");
    rmdir(ip);
    tmp_remove(&t);
    /* a bad split name is a usage error */
    fm_dataset d;
    fm_err e = { 0 };
    CHECK(fm_mnist_load(REAL_DIR, "valid", 0, &d, &e) == FM_ERR_USAGE, "split \"valid\" accepted");
    return f;
}

static int test_empty_and_not_gzip(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char p[600];
    int f = 0;
    tmp_file(&t, "empty.gz", p, sizeof p);
    write_raw(p, "", 0);
    f |= idx_must_fail(p, 1, "empty file");
    tmp_file(&t, "one.gz", p, sizeof p);
    write_raw(p, "\x1f", 1);
    f |= idx_must_fail(p, 1, "not a gzip file: only 1 byte long");
    /* garbage: gzread would pass it through as if uncompressed */
    tmp_file(&t, "garbage.gz", p, sizeof p);
    write_raw(p, "hello, this is not gzip at all\n", 31);
    f |= idx_must_fail(p, 1, "not a gzip file: starts with 68 65");
    /* a valid but uncompressed IDX file */
    buf b = label_bytes(10, 0, -1, 0);
    tmp_file(&t, "raw.gz", p, sizeof p);
    write_raw(p, b.p, b.n);
    free(b.p);
    f |= idx_must_fail(p, 1, "uncompressed IDX header");
    /* valid gzip of nothing */
    tmp_file(&t, "zero.gz", p, sizeof p);
    write_gz(p, (buf){ malloc(1), 0 });
    f |= idx_must_fail(p, 1, "decompresses to 0 bytes");
    tmp_remove(&t);
    return f;
}

static int test_truncated_gzip(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    buf z = gzip_take(idx_bytes(0x00000803, 3, img_dims_ok, 0, 1));
    char p[600];
    tmp_file(&t, "cut.gz", p, sizeof p);
    int f = 0;
    /* cut in the deflate data, and cut inside the 8-byte CRC/length trailer */
    write_raw(p, z.p, z.n / 2);
    f |= idx_must_fail(p, 3, "truncated gzip stream");
    write_raw(p, z.p, z.n - 3);
    f |= idx_must_fail(p, 3, "truncated gzip stream");
    /* every strict prefix must fail with FM_ERR_DATA (runs under ASan too) */
    int wrong = 0;
    for (size_t n = 0; n < z.n; n++) {
        write_raw(p, z.p, n);
        fm_idx x;
        fm_err e = { 0 };
        int rc = fm_idx_read(p, 3, &x, &e);
        wrong += rc != FM_ERR_DATA || strncmp(e.msg, p, strlen(p)) != 0;
        fm_idx_free(&x);
    }
    printf("  %zu prefixes of a %zu-byte file: %d not rejected as bad data\n", z.n, z.n, wrong);
    free(z.p);
    tmp_remove(&t);
    CHECK(wrong == 0, "%d prefixes not rejected", wrong);
    return f;
}

static int test_corrupt_gzip(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    buf z = gzip_take(idx_bytes(0x00000803, 3, img_dims_ok, 0, 1));
    char p[600];
    tmp_file(&t, "bad.gz", p, sizeof p);
    int f = 0;
    /* a flipped payload bit the decoder survives is caught by the CRC */
    unsigned char *c = malloc(z.n);
    memcpy(c, z.p, z.n);
    c[z.n - 6] ^= 0x01; /* inside the CRC32 */
    write_raw(p, c, z.n);
    f |= idx_must_fail(p, 3, "corrupt gzip data: incorrect data check");
    /* the gzip header's compression method */
    memcpy(c, z.p, z.n);
    c[2] = 0x07;
    write_raw(p, c, z.n);
    f |= idx_must_fail(p, 3, "corrupt gzip data: unknown compression method");
    /* flip every byte in turn: must never crash, leak or read out of bounds;
     * the result is an error or (header fields zlib ignores, e.g. MTIME) OK */
    int other = 0, ok = 0, data_err = 0;
    for (size_t i = 0; i < z.n; i++) {
        memcpy(c, z.p, z.n);
        c[i] ^= 0x5a;
        write_raw(p, c, z.n);
        fm_idx x;
        fm_err e = { 0 };
        int rc = fm_idx_read(p, 3, &x, &e);
        ok += rc == FM_OK;
        data_err += rc == FM_ERR_DATA;
        other += rc != FM_OK && rc != FM_ERR_DATA;
        fm_idx_free(&x);
    }
    printf("  %zu single-byte corruptions: %d rejected, %d accepted (ignored header fields)\n", z.n, data_err, ok);
    free(c);
    free(z.p);
    tmp_remove(&t);
    CHECK(other == 0 && ok <= 10, "%d unexpected codes, %d accepted", other, ok);
    return f;
}

static int test_truncated_payload(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char p[600];
    tmp_file(&t, IMG, p, sizeof p);
    write_gz(p, idx_bytes(0x00000803, 3, img_dims_ok, -352, 1));
    int f = idx_must_fail(p, 3, "truncated: expected 2352 bytes of pixel data, got 2000");
    write_gz(p, idx_bytes(0x00000803, 3, img_dims_ok, -2352, 1)); /* header only */
    f |= idx_must_fail(p, 3, "truncated: expected 2352 bytes of pixel data, got 0");
    buf h = idx_bytes(0x00000803, 3, img_dims_ok, 0, 1);
    h.n = 10; /* cut in the dimensions */
    write_gz(p, h);
    f |= idx_must_fail(p, 3, "truncated: the header needs 12 bytes of dimensions, got 6");
    h = idx_bytes(0x00000803, 3, img_dims_ok, 0, 1);
    h.n = 3; /* cut in the magic */
    write_gz(p, h);
    f |= idx_must_fail(p, 3, "truncated: the IDX magic needs 4 bytes, got 3");
    write_gz(p, label_bytes(3, -1, -1, 0));
    f |= idx_must_fail(p, 1, "truncated: expected 3 bytes of label data, got 2");
    tmp_remove(&t);
    return f;
}

static int test_trailing_bytes(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char p[600];
    tmp_file(&t, IMG, p, sizeof p);
    write_gz(p, idx_bytes(0x00000803, 3, img_dims_ok, 5, 1));
    int f = idx_must_fail(p, 3, "trailing data: 5 bytes after the expected 2352 bytes of pixel data");
    write_gz(p, idx_bytes(0x00000803, 3, img_dims_ok, 100000, 1));
    f |= idx_must_fail(p, 3, "trailing data: 100000 bytes after");
    /* bytes after the end of the gzip stream itself */
    buf z = gzip_take(label_bytes(3, 0, -1, 0));
    unsigned char *c = malloc(z.n + 4);
    memcpy(c, z.p, z.n);
    memcpy(c + z.n, "JUNK", 4);
    write_raw(p, c, z.n + 4);
    f |= idx_must_fail(p, 1, "unexpected bytes after the end of the gzip stream");
    c[z.n] = 0x1f; /* looks like the start of a second member, but is not one */
    write_raw(p, c, z.n + 4);
    f |= idx_must_fail(p, 1, "corrupt gzip data");
    free(c);
    free(z.p);
    tmp_remove(&t);
    return f;
}

static int test_bad_header(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char p[600];
    tmp_file(&t, IMG, p, sizeof p);
    int f = 0;
    /* labels file given where images are expected: wrong ndim */
    write_gz(p, label_bytes(3, 0, -1, 0));
    f |= idx_must_fail(p, 3, "bad magic 0x00000801: 1 dimension, expected 3");
    uint32_t d2[2] = { 3, 784 };
    write_gz(p, idx_bytes(0x00000802, 2, d2, 0, 1));
    f |= idx_must_fail(p, 3, "bad magic 0x00000802: 2 dimensions, expected 3");
    write_gz(p, idx_bytes(0x12345678, 3, img_dims_ok, 0, 1));
    f |= idx_must_fail(p, 3, "bad magic 0x12345678: not an IDX file");
    write_gz(p, idx_bytes(0x00000d03, 3, img_dims_ok, 0, 1)); /* float data */
    f |= idx_must_fail(p, 3, "data type 0x0d, expected 0x08");
    /* zero dimensions */
    uint32_t z0[3] = { 0, 28, 28 }, z2[3] = { 3, 28, 0 };
    write_gz(p, idx_bytes(0x00000803, 3, z0, 0, 1));
    f |= idx_must_fail(p, 3, "dimension 0 is 0");
    write_gz(p, idx_bytes(0x00000803, 3, z2, 0, 1));
    f |= idx_must_fail(p, 3, "dimension 2 is 0");
    tmp_remove(&t);
    return f;
}

/* Claims far larger than the file are rejected before any allocation. */
static int test_huge_claims(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char p[600];
    tmp_file(&t, IMG, p, sizeof p);
    int f = 0;
    uint32_t h1[3] = { 1u << 31, 28, 28 }, h2[3] = { 0xffffffffu, 0xffffffffu, 0xffffffffu },
             h3[3] = { 1000000, 28, 28 };
    write_gz(p, idx_bytes(0x00000803, 3, h1, 0, 1));
    f |= idx_must_fail(p, 3, "dimension 0 is 2147483648, more than the limit");
    write_gz(p, idx_bytes(0x00000803, 3, h2, 0, 1));
    f |= idx_must_fail(p, 3, "dimension 0 is 4294967295");
    uint32_t h5[3] = { 1u << 30, 1u << 30, 1 };
    write_gz(p, idx_bytes(0x00000803, 3, h5, 0, 1));
    f |= idx_must_fail(p, 3, "over the 2147483648-byte limit");
    /* 784 MB claimed by a ~50-byte file: impossible for deflate */
    double t0 = fm_now();
    write_gz(p, idx_bytes(0x00000803, 3, h3, 0, 1));
    f |= idx_must_fail(p, 3, "header claims 784000000 bytes of pixel data, more than a");
    /* a claim 40x the data, possible by size (random bytes): read incrementally, truncated */
    uint32_t h6[3] = { 4000, 28, 28 };
    write_gz(p, idx_bytes(0x00000803, 3, h6, -(4000 - 100) * 784, 1));
    f |= idx_must_fail(p, 3, "truncated: expected 3136000 bytes of pixel data, got 78400");
    printf("  huge claims rejected in %.3f s\n", fm_now() - t0);
    tmp_remove(&t);
    return f;
}

static int test_image_size(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char ip[600], lp[600];
    tmp_file(&t, IMG, ip, sizeof ip);
    tmp_file(&t, LAB, lp, sizeof lp);
    uint32_t d[3] = { 3, 27, 28 };
    write_gz(ip, idx_bytes(0x00000803, 3, d, 0, 1));
    write_gz(lp, label_bytes(3, 0, -1, 0));
    int f = load_must_fail(t.path, ip, "images are 27x28, expected 28x28");
    tmp_remove(&t);
    return f;
}

static int test_label_range_and_count(void)
{
    tmpdir t;
    CHECK(tmp_make(&t) == 0, "mkdtemp");
    char ip[600], lp[600], want[1500];
    tmp_file(&t, IMG, ip, sizeof ip);
    tmp_file(&t, LAB, lp, sizeof lp);
    uint32_t d[3] = { 400, 28, 28 };
    write_gz(ip, idx_bytes(0x00000803, 3, d, 0, 1));
    write_gz(lp, label_bytes(400, 0, 345, 12));
    int f = load_must_fail(t.path, lp, "label 12 at index 345 out of range 0..9");
    write_gz(lp, label_bytes(400, 0, 399, 255));
    f |= load_must_fail(t.path, lp, "label 255 at index 399 out of range 0..9");
    /* count mismatch: names both files */
    write_gz(lp, label_bytes(399, 0, -1, 0));
    snprintf(want, sizeof want, "holds 400 images but %s holds 399 labels", lp);
    f |= load_must_fail(t.path, ip, want);
    tmp_remove(&t);
    return f;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_real_train),
        TEST(test_real_t10k),
        TEST(test_real_bytes_match_gzread),
        TEST(test_limit),
        TEST(test_small_layout),
        TEST(test_multi_member_ok),
        TEST(test_missing_file_and_dir),
        TEST(test_empty_and_not_gzip),
        TEST(test_truncated_gzip),
        TEST(test_corrupt_gzip),
        TEST(test_truncated_payload),
        TEST(test_trailing_bytes),
        TEST(test_bad_header),
        TEST(test_huge_claims),
        TEST(test_image_size),
        TEST(test_label_range_and_count),
    };
    return fm_test_main("io/idx", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
