/* safetensors.c - atomic safetensors writer and verifying reader. */
#include "fm/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/crc32c.h"
#include "fm/files.h"

static const char *dtype_name(fm_dtype t) { return t == FM_BF16 ? "BF16" : "F32"; }

static size_t tensor_bytes(const fm_st_tensor *t)
{
    size_t n = fm_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* CRC32C of the metadata object: every pair but FM_ST_META_CRC itself, sorted
 * by key, each as key NUL value NUL, so the order in the file does not count.
 * A value that is not a string counts as "" (the reader refuses it anyway).
 * *ok = 0 when out of memory. */
static uint32_t meta_crc(const cJSON *meta, int *ok)
{
    int n = 0;
    for (const cJSON *m = meta ? meta->child : NULL; m; m = m->next)
        n++;
    const char **kv = calloc((size_t)n + 1, 2 * sizeof *kv); /* [n][key, value] */
    *ok = kv != NULL;
    if (!kv)
        return 0;
    int k = 0;
    for (const cJSON *m = meta ? meta->child : NULL; m; m = m->next)
        if (m->string && strcmp(m->string, FM_ST_META_CRC) != 0) {
            kv[2 * k] = m->string;
            kv[2 * k++ + 1] = cJSON_IsString(m) ? m->valuestring : "";
        }
    qsort(kv, (size_t)k, 2 * sizeof *kv, cmp_cstr); /* a pair sorts by its first pointer, the key */
    uint32_t crc = 0;
    for (int i = 0; i < 2 * k; i++)
        crc = fm_crc32c(crc, kv[i], strlen(kv[i]) + 1);
    free(kv);
    return crc;
}

static int write_all(int fd, const void *buf, size_t n, const char *path, fm_err *e)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fm_fail(e, FM_ERR_IO, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return FM_OK;
}

static char *build_header(const fm_st_tensor *t, int nt, const fm_st_meta *m, int nm, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    for (int i = 0; i < nm; i++)
        cJSON_AddStringToObject(meta, m[i].key, m[i].value);
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        size_t nb = tensor_bytes(&t[i]);
        char key[160], crc[16];
        snprintf(key, sizeof key, "crc32c.%s", t[i].name);
        snprintf(crc, sizeof crc, "%08x", fm_crc32c(0, t[i].data, nb));
        cJSON_AddStringToObject(meta, key, crc);
        cJSON *o = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(o, "dtype", dtype_name(t[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t[i].ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    int ok;
    char mcrc[16];
    snprintf(mcrc, sizeof mcrc, "%08x", meta_crc(meta, &ok));
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(meta, FM_ST_META_CRC, mcrc);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s)
        return NULL;
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    char *out = malloc(padded + 1);
    if (out) {
        memcpy(out, s, n);
        memset(out + n, ' ', padded - n);
        out[padded] = '\0';
        *len = padded;
    }
    free(s);
    return out;
}

int fm_st_write(const char *path, const fm_st_tensor *t, int nt, const fm_st_meta *m, int nm, fm_err *e)
{
    size_t hlen = 0;
    char *hdr = build_header(t, nt, m, nm, &hlen);
    if (!hdr)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: cannot build the safetensors header (out of memory)", path);
    char tmp[4200];
    int fd;
    int orc = fm_tmp_open(path, tmp, sizeof tmp, &fd, e);
    if (orc != FM_OK) {
        free(hdr);
        return orc;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int rc = write_all(fd, len8, 8, tmp, e);
    if (rc == FM_OK)
        rc = write_all(fd, hdr, hlen, tmp, e);
    for (int i = 0; i < nt && rc == FM_OK; i++)
        rc = write_all(fd, t[i].data, tensor_bytes(&t[i]), tmp, e);
    free(hdr);
    if (rc == FM_OK && fsync(fd) != 0)
        rc = fm_fail(e, FM_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == FM_OK)
        rc = fm_fail(e, FM_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc != FM_OK) {
        unlink(tmp);
        return rc;
    }
    return fm_tmp_commit(tmp, path, e);
}

void fm_st_free(fm_st_file *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->names[i]);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->names);
    free(f->t);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

static int read_file(const char *path, char **buf, size_t *size, fm_err *e)
{
    int fd;
    FM_TRY(fm_open_regular(path, &fd, e));
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        close(fd);
        return fm_fail(e, FM_ERR_DATA, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fclose(fp);
        return fm_fail(e, FM_ERR_DATA, "%s: cannot stat: %s", path, strerror(errno));
    }
    *size = (size_t)st.st_size;
    *buf = malloc(*size + 1);
    if (!*buf) {
        fclose(fp);
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory reading %zu bytes", path, *size);
    }
    size_t got = fread(*buf, 1, *size, fp);
    fclose(fp);
    if (got != *size) {
        free(*buf);
        *buf = NULL;
        return fm_fail(e, FM_ERR_DATA, "%s: short read (%zu of %zu bytes)", path, got, *size);
    }
    return FM_OK;
}

static int parse_tensor(const char *path, cJSON *o, fm_st_tensor *t, size_t data_len, const char *data,
                        fm_err *e)
{
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(o, "dtype");
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "shape");
    cJSON *of = cJSON_GetObjectItemCaseSensitive(o, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: malformed header entry", path, t->name);
    if (strcmp(dt->valuestring, "F32") == 0)
        t->dtype = FM_F32;
    else if (strcmp(dt->valuestring, "BF16") == 0)
        t->dtype = FM_BF16;
    else
        return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: unsupported dtype %s", path, t->name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > FM_MAX_DIMS)
        return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: %d dimensions (at most %d)", path, t->name, nd, FM_MAX_DIMS);
    t->ndim = nd;
    size_t need = fm_dtype_size(t->dtype); /* bytes of the shape, without overflow */
    for (int d = 0; d < nd; d++) {
        cJSON *v = cJSON_GetArrayItem(sh, d);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e12 ||
            v->valuedouble != (double)(int64_t)v->valuedouble)
            return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: bad shape", path, t->name);
        t->shape[d] = (int64_t)v->valuedouble;
        if (__builtin_mul_overflow(need, (size_t)t->shape[d], &need))
            return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: shape too large", path, t->name);
    }
    cJSON *b = cJSON_GetArrayItem(of, 0), *en = cJSON_GetArrayItem(of, 1);
    if (!cJSON_IsNumber(b) || !cJSON_IsNumber(en) || b->valuedouble < 0 || en->valuedouble < b->valuedouble ||
        en->valuedouble > (double)data_len)
        return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: data offsets outside the file (truncated?)", path, t->name);
    size_t beg = (size_t)b->valuedouble, end = (size_t)en->valuedouble;
    if (end - beg != need)
        return fm_fail(e, FM_ERR_DATA, "%s: tensor %s: %zu bytes stored, shape needs %zu", path, t->name,
                       end - beg, need);
    t->data = data + beg;
    return FM_OK;
}

static int cmp_range(const void *a, const void *b)
{
    const size_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1];
}

/* No two tensors share a byte (empty tensors share none). */
static int check_overlap(const fm_st_file *f, const char *path, const char *data, fm_err *e)
{
    size_t *r = malloc(((size_t)f->n + 1) * 3 * sizeof *r); /* [n][begin, end, index] */
    if (!r)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
    int k = 0;
    for (int i = 0; i < f->n; i++) {
        size_t beg = (size_t)((const char *)f->t[i].data - data), nb = tensor_bytes(&f->t[i]);
        if (nb == 0)
            continue;
        r[3 * k] = beg;
        r[3 * k + 1] = beg + nb;
        r[3 * k++ + 2] = (size_t)i;
    }
    qsort(r, (size_t)k, 3 * sizeof *r, cmp_range);
    int rc = FM_OK;
    for (int i = 1; i < k && rc == FM_OK; i++)
        if (r[3 * i] < r[3 * (i - 1) + 1])
            rc = fm_fail(e, FM_ERR_DATA, "%s: tensors %s and %s overlap (data_offsets [%zu, %zu) and [%zu, %zu))",
                         path, f->t[r[3 * (i - 1) + 2]].name, f->t[r[3 * i + 2]].name, r[3 * (i - 1)],
                         r[3 * (i - 1) + 1], r[3 * i], r[3 * i + 1]);
    free(r);
    return rc;
}

int fm_st_read(const char *path, fm_st_file *f, fm_err *e)
{
    memset(f, 0, sizeof *f);
    FM_TRY(read_file(path, &f->buf, &f->size, e));
    int rc = FM_OK;
    cJSON *root = NULL;
    uint64_t hlen = 0;
    if (f->size < 8) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: truncated: %zu bytes, no header", path, f->size);
        goto out;
    }
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)(unsigned char)f->buf[i] << (8 * i);
    if (hlen > f->size - 8) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: truncated: header of %llu bytes in a %zu-byte file", path,
                     (unsigned long long)hlen, f->size);
        goto out;
    }
    root = cJSON_ParseWithLength(f->buf + 8, (size_t)hlen);
    if (!cJSON_IsObject(root)) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: header is not valid JSON", path);
        goto out;
    }
    const char *data = f->buf + 8 + hlen;
    size_t data_len = f->size - 8 - hlen;
    int count = cJSON_GetArraySize(root);
    f->t = calloc((size_t)count + 1, sizeof *f->t);
    f->names = calloc((size_t)count + 1, sizeof *f->names);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    if (meta && !cJSON_IsObject(meta)) {
        rc = fm_fail(e, FM_ERR_DATA, "%s: __metadata__ is not a JSON object", path);
        goto out;
    }
    int nmeta = meta ? cJSON_GetArraySize(meta) : 0;
    f->meta_keys = calloc((size_t)nmeta + 1, sizeof(char *));
    f->meta_vals = calloc((size_t)nmeta + 1, sizeof(char *));
    if (!f->t || !f->names || !f->meta_keys || !f->meta_vals) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
        goto out;
    }
    for (cJSON *m = meta ? meta->child : NULL; m; m = m->next) {
        if (!cJSON_IsString(m)) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: metadata %s is not a string", path, m->string);
            goto out;
        }
        if (fm_st_meta_get(f, m->string)) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: metadata %s appears twice", path, m->string);
            goto out;
        }
        f->meta_keys[f->nmeta] = strdup(m->string);
        f->meta_vals[f->nmeta++] = strdup(m->valuestring);
        if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1]) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
            goto out;
        }
    }
    const char *stored = fm_st_meta_get(f, FM_ST_META_CRC);
    if (stored) {
        int ok;
        char got[16];
        snprintf(got, sizeof got, "%08x", meta_crc(meta, &ok));
        if (!ok) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
            goto out;
        }
        if (strcmp(got, stored) != 0) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: metadata: CRC32C mismatch (stored %s, computed %s): file is corrupt",
                         path, stored, got);
            goto out;
        }
        f->meta_checked = 1;
    }
    for (cJSON *o = root->child; o; o = o->next) {
        if (strcmp(o->string, "__metadata__") == 0)
            continue;
        if (fm_st_get(f, o->string)) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: tensor %s appears twice", path, o->string);
            goto out;
        }
        fm_st_tensor *t = &f->t[f->n];
        f->names[f->n] = strdup(o->string);
        t->name = f->names[f->n];
        f->n++;
        if (!t->name) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
            goto out;
        }
        if ((rc = parse_tensor(path, o, t, data_len, data, e)) != FM_OK)
            goto out;
        char key[160];
        snprintf(key, sizeof key, "crc32c.%s", t->name);
        const char *want = fm_st_meta_get(f, key);
        if (!want) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: tensor %s has no crc32c entry", path, t->name);
            goto out;
        }
        char got[16];
        snprintf(got, sizeof got, "%08x", fm_crc32c(0, t->data, tensor_bytes(t)));
        if (strcmp(got, want) != 0) {
            rc = fm_fail(e, FM_ERR_DATA, "%s: tensor %s: CRC32C mismatch (stored %s, computed %s): file is corrupt",
                         path, t->name, want, got);
            goto out;
        }
    }
    if (rc == FM_OK)
        rc = check_overlap(f, path, data, e);
out:
    cJSON_Delete(root);
    if (rc != FM_OK)
        fm_st_free(f);
    return rc;
}

const fm_st_tensor *fm_st_get(const fm_st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    return NULL;
}

const char *fm_st_meta_get(const fm_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}
