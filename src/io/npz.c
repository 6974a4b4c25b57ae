/* npz.c - NumPy .npz archives, stored zip members written as a stream. */
#include "fm/npz.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define ZIP_DOS_DATE 0x21 /* 1980-01-01: no clock in the archive, so equal inputs give equal files */

static void le16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int put(fm_npz *z, const void *p, size_t n, fm_err *e)
{
    if (fwrite(p, 1, n, z->fp) != n)
        return fm_fail(e, FM_ERR_IO, "%s: write failed: %s", z->tmp, strerror(errno));
    return FM_OK;
}

/* The fields a local and a central header share, in the same order from
 * "version needed" on: version, flags, method (stored), time, date, crc,
 * sizes, name length, extra length. */
static void member_fields(const fm_npz *z, int k, uint8_t *p)
{
    le16(p, 20);
    le16(p + 8, ZIP_DOS_DATE);
    le32(p + 10, z->m[k].crc);
    le32(p + 14, (uint32_t)z->m[k].size);
    le32(p + 18, (uint32_t)z->m[k].size);
    le16(p + 22, (unsigned)strlen(z->m[k].name));
}

/* The 30-byte local header of member k (crc and sizes as known so far). */
static void local_header(const fm_npz *z, int k, uint8_t h[30])
{
    memset(h, 0, 30);
    le32(h, 0x04034b50);
    member_fields(z, k, h + 4);
}

int fm_npz_open(fm_npz *z, const char *path, fm_err *e)
{
    memset(z, 0, sizeof *z);
    if (snprintf(z->path, sizeof z->path, "%s", path) >= (int)sizeof z->path)
        return fm_fail(e, FM_ERR_USAGE, "%s: path too long", path);
    snprintf(z->tmp, sizeof z->tmp, "%s.tmp.%ld", path, (long)getpid());
    z->fp = fopen(z->tmp, "wb");
    if (!z->fp)
        return fm_fail(e, FM_ERR_IO, "%s: cannot create: %s", z->tmp, strerror(errno));
    return FM_OK;
}

int fm_npz_write(fm_npz *z, const void *data, size_t bytes, fm_err *e)
{
    if (z->n == 0 || bytes > z->expect)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: %zu bytes beyond the array's shape", z->path, bytes);
    FM_TRY(put(z, data, bytes, e));
    z->m[z->n - 1].crc = (uint32_t)crc32(z->m[z->n - 1].crc, data, (uInt)bytes);
    z->m[z->n - 1].size += bytes;
    z->expect -= bytes;
    return FM_OK;
}

int fm_npz_begin(fm_npz *z, const char *name, const char *descr, int ndim, const int64_t *shape, fm_err *e)
{
    if (z->n == FM_NPZ_MAX_ARRAYS || ndim < 0 || ndim > 8 || strlen(name) > 50)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: array %s: too many arrays, dimensions or too long a name", z->path,
                       name);
    int k = z->n;
    snprintf(z->m[k].name, sizeof z->m[k].name, "%s.npy", name);
    long off = ftell(z->fp);
    if (off < 0)
        return fm_fail(e, FM_ERR_IO, "%s: %s", z->tmp, strerror(errno));
    z->m[k].offset = (uint64_t)off;
    uint8_t h[30];
    local_header(z, k, h);
    FM_TRY(put(z, h, sizeof h, e));
    FM_TRY(put(z, z->m[k].name, strlen(z->m[k].name), e));
    /* the .npy header: magic, version 1.0, length, a dict padded to 64 bytes */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    uint64_t items = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%" PRId64 "%s", i ? ", " : "", shape[i], ndim == 1 ? "," : "");
        items *= (uint64_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    while ((10 + n + 1) % 64)
        dict[n++] = ' ';
    dict[n++] = '\n';
    uint8_t pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0 };
    le16(pre + 8, (unsigned)n);
    z->n++;
    z->expect = 10 + (uint64_t)n;
    FM_TRY(fm_npz_write(z, pre, sizeof pre, e));
    FM_TRY(fm_npz_write(z, dict, (size_t)n, e));
    int size = 0; /* bytes per item, from the descr ("|u1" -> 1, "<f4" -> 4) */
    sscanf(descr + 2, "%d", &size);
    z->expect = items * (uint64_t)(size > 0 ? size : 1);
    if (z->m[k].offset + z->m[k].size + z->expect >= 0xFFFFFFFFull)
        return fm_fail(e, FM_ERR_USAGE, "%s: more than 4 GiB: write fewer samples per file", z->path);
    return FM_OK;
}

int fm_npz_end(fm_npz *z, fm_err *e)
{
    int k = z->n - 1;
    if (k < 0 || z->expect)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: array %s ended %" PRIu64 " bytes short", z->path,
                       k < 0 ? "?" : z->m[k].name, z->expect);
    long end = ftell(z->fp);
    uint8_t h[30];
    local_header(z, k, h);
    if (end < 0 || fseek(z->fp, (long)z->m[k].offset, SEEK_SET) != 0)
        return fm_fail(e, FM_ERR_IO, "%s: seek failed: %s", z->tmp, strerror(errno));
    FM_TRY(put(z, h, sizeof h, e));
    if (fseek(z->fp, end, SEEK_SET) != 0)
        return fm_fail(e, FM_ERR_IO, "%s: seek failed: %s", z->tmp, strerror(errno));
    return FM_OK;
}

int fm_npz_close(fm_npz *z, fm_err *e)
{
    long cd = ftell(z->fp);
    int rc = cd < 0 ? fm_fail(e, FM_ERR_IO, "%s: %s", z->tmp, strerror(errno)) : FM_OK;
    for (int k = 0; rc == FM_OK && k < z->n; k++) {
        uint8_t h[46];
        memset(h, 0, sizeof h);
        le32(h, 0x02014b50);
        le16(h + 4, 20); /* made by */
        member_fields(z, k, h + 6);
        le32(h + 42, (uint32_t)z->m[k].offset);
        rc = put(z, h, sizeof h, e);
        if (rc == FM_OK)
            rc = put(z, z->m[k].name, strlen(z->m[k].name), e);
    }
    long cd_end = ftell(z->fp);
    if (rc == FM_OK) {
        uint8_t h[22];
        memset(h, 0, sizeof h);
        le32(h, 0x06054b50);
        le16(h + 8, (unsigned)z->n);
        le16(h + 10, (unsigned)z->n);
        le32(h + 12, (uint32_t)(cd_end - cd));
        le32(h + 16, (uint32_t)cd);
        rc = put(z, h, sizeof h, e);
    }
    if (rc == FM_OK && (fflush(z->fp) != 0 || fsync(fileno(z->fp)) != 0))
        rc = fm_fail(e, FM_ERR_IO, "%s: write failed: %s", z->tmp, strerror(errno));
    if (fclose(z->fp) != 0 && rc == FM_OK)
        rc = fm_fail(e, FM_ERR_IO, "%s: close failed: %s", z->tmp, strerror(errno));
    z->fp = NULL;
    if (rc == FM_OK && rename(z->tmp, z->path) != 0)
        rc = fm_fail(e, FM_ERR_IO, "%s: rename to %s failed: %s", z->tmp, z->path, strerror(errno));
    if (rc != FM_OK)
        unlink(z->tmp);
    return rc;
}

void fm_npz_abort(fm_npz *z)
{
    if (z->fp) {
        fclose(z->fp);
        z->fp = NULL;
        unlink(z->tmp);
    }
}
