/* ckpt.c - checkpoint save (with keep-last-K pruning) and verified load with
 * fallback to the previous checkpoint. */
#include "fm/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/log.h"

/* Longest tensor name: safetensors.c keys each CRC as "crc32c.<name>" in a
 * 160-byte buffer. */
#define NAME_MAX_LEN 150

/* ---- helpers -------------------------------------------------------------- */

static int tensor_name(char *buf, size_t n, const char *prefix, const char *name, fm_err *e)
{
    int len = snprintf(buf, n, "%s%s", prefix, name);
    if (len < 0 || (size_t)len >= n || len > NAME_MAX_LEN)
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint tensor name too long: %s%s", prefix, name);
    return FM_OK;
}

static size_t shape_numel(int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

/* 1 if every value is finite. data may be unaligned (a file buffer). */
static int all_finite(const void *data, size_t n)
{
    const unsigned char *p = data;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        bad |= !(fabsf(v) <= 3.40282347e38f);
    }
    return !bad;
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static int valid_stage(const char *stage)
{
    size_t n = strlen(stage);
    if (n == 0 || n >= sizeof((fm_ckpt *)0)->stage)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = stage[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static int reserved_key(const char *k)
{
    return strcmp(k, "format") == 0 || strcmp(k, "stage") == 0 || strcmp(k, "step") == 0 ||
           strncmp(k, "group:", 6) == 0 || strncmp(k, "crc32c.", 7) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Parse a whole string as a decimal int64. */
static int parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

/* ---- write ---------------------------------------------------------------- */

int fm_ckpt_write(const char *path, const char *stage, int64_t step, const fm_ckpt_group *groups, int ngroups,
                  const fm_ckpt_extra *extra, int nextra, const fm_st_meta *meta, int nmeta, fm_err *e)
{
    if (!valid_stage(stage))
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint stage name \"%s\" is not [A-Za-z0-9_]+", stage);
    if (step < 0)
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint step %" PRId64 " is negative", step);
    for (int i = 0; i < nmeta; i++)
        if (reserved_key(meta[i].key))
            return fm_fail(e, FM_ERR_INTERNAL, "checkpoint metadata key \"%s\" is reserved", meta[i].key);
    int nt = nextra;
    for (int g = 0; g < ngroups; g++)
        nt += groups[g].table->n;
    int nm = nmeta + 3 + ngroups;
    fm_st_tensor *t = calloc((size_t)nt + 1, sizeof *t);
    char *names = calloc((size_t)nt + 1, NAME_MAX_LEN + 1);
    const char **sorted = calloc((size_t)nt + 1, sizeof *sorted);
    fm_st_meta *m = calloc((size_t)nm, sizeof *m);
    char *gkeys = calloc((size_t)ngroups + 1, 2 * 96);
    int rc = FM_OK;
    if (!t || !names || !sorted || !m || !gkeys) {
        rc = fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory building the checkpoint", path);
        goto out;
    }
    int k = 0;
    for (int g = 0; g < ngroups && rc == FM_OK; g++) {
        const fm_params *p = groups[g].table;
        for (int i = 0; i < p->n && rc == FM_OK; i++, k++) {
            const fm_param *q = &p->items[i];
            char *nm_k = names + (size_t)k * (NAME_MAX_LEN + 1);
            if ((rc = tensor_name(nm_k, NAME_MAX_LEN + 1, groups[g].prefix, q->name, e)) != FM_OK)
                break;
            t[k] = (fm_st_tensor){ .name = nm_k, .data = groups[g].base + q->offset, .dtype = FM_F32,
                                   .ndim = q->w.ndim };
            memcpy(t[k].shape, q->w.shape, sizeof t[k].shape);
        }
    }
    for (int i = 0; i < nextra && rc == FM_OK; i++, k++) {
        if (strlen(extra[i].name) > NAME_MAX_LEN || extra[i].ndim < 0 || extra[i].ndim > FM_MAX_DIMS ||
            !extra[i].data) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "checkpoint extra tensor %s: bad name, rank or data", extra[i].name);
            break;
        }
        t[k] = (fm_st_tensor){ .name = extra[i].name, .data = extra[i].data, .dtype = FM_F32,
                               .ndim = extra[i].ndim };
        memcpy(t[k].shape, extra[i].shape, sizeof t[k].shape);
    }
    if (rc != FM_OK)
        goto out;
    /* names unique; values finite: a non-finite checkpoint is never written */
    for (int i = 0; i < nt; i++)
        sorted[i] = t[i].name;
    qsort(sorted, (size_t)nt, sizeof *sorted, cmp_str);
    for (int i = 1; i < nt; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: checkpoint tensor %s appears twice", path, sorted[i]);
            goto out;
        }
    for (int i = 0; i < nt; i++)
        if (!all_finite(t[i].data, shape_numel(t[i].ndim, t[i].shape))) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "%s: not written: tensor %s holds NaN or Inf (step %" PRId64 ")",
                         path, t[i].name, step);
            goto out;
        }
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    int j = 0;
    m[j++] = (fm_st_meta){ "format", FM_CKPT_FORMAT };
    m[j++] = (fm_st_meta){ "stage", stage };
    m[j++] = (fm_st_meta){ "step", stepbuf };
    for (int g = 0; g < ngroups; g++) {
        char *key = gkeys + (size_t)g * 2 * 96, *val = key + 96;
        if (snprintf(key, 96, "group:%s", groups[g].prefix) >= 96) {
            rc = fm_fail(e, FM_ERR_INTERNAL, "checkpoint group prefix too long: %s", groups[g].prefix);
            goto out;
        }
        snprintf(val, 96, "%d", groups[g].table->n);
        m[j++] = (fm_st_meta){ key, val };
    }
    for (int i = 0; i < nmeta; i++)
        m[j++] = meta[i];
    rc = fm_st_write(path, t, nt, m, j, e);
out:
    free(t);
    free(names);
    free(sorted);
    free(m);
    free(gkeys);
    return rc;
}

/* ---- listing and pruning ----------------------------------------------------- */

typedef struct entry {
    int64_t step;
    char name[256];
} entry;

static int cmp_entry_desc(const void *a, const void *b)
{
    int64_t x = ((const entry *)a)->step, y = ((const entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Step of d_name if it is exactly "<stage>-<step %08>.safetensors"
 * (temporary files and other stages do not match). */
static int match_ckpt(const char *d_name, const char *stage, int64_t *step)
{
    size_t sl = strlen(stage);
    if (strncmp(d_name, stage, sl) != 0 || d_name[sl] != '-')
        return 0;
    const char *digits = d_name + sl + 1;
    int64_t s = 0;
    int nd = 0;
    for (; digits[nd] >= '0' && digits[nd] <= '9'; nd++) {
        if (s > (INT64_MAX - 9) / 10)
            return 0;
        s = s * 10 + (digits[nd] - '0');
    }
    char want[256];
    snprintf(want, sizeof want, "%s-%08" PRId64 ".safetensors", stage, s);
    if (nd == 0 || strcmp(want, d_name) != 0)
        return 0;
    *step = s;
    return 1;
}

/* "<stage>-<digits>.safetensors.tmp.<pid>" left by a writer other than us. */
static int match_stale_tmp(const char *d_name, const char *stage)
{
    size_t sl = strlen(stage);
    if (strncmp(d_name, stage, sl) != 0 || d_name[sl] != '-')
        return 0;
    const char *tmp = strstr(d_name, ".safetensors.tmp.");
    if (!tmp)
        return 0;
    char stem[256];
    size_t stem_len = (size_t)(tmp - d_name) + strlen(".safetensors");
    if (stem_len >= sizeof stem)
        return 0;
    memcpy(stem, d_name, stem_len);
    stem[stem_len] = '\0';
    int64_t step, pid;
    return match_ckpt(stem, stage, &step) && parse_int64(tmp + strlen(".safetensors.tmp."), &pid) &&
           pid != (int64_t)getpid();
}

/* The stage's checkpoints in dir, newest first. *out = NULL, *n = 0 if the
 * directory does not exist. */
static int list_ckpts(const char *dir, const char *stage, entry **out, int *n, fm_err *e)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return FM_OK;
        return fm_fail(e, FM_ERR_DATA, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        if (!match_ckpt(de->d_name, stage, &step))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            entry *grown = realloc(*out, (size_t)cap * sizeof **out);
            if (!grown) {
                closedir(d);
                free(*out);
                *out = NULL;
                *n = 0;
                return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory listing checkpoints", dir);
            }
            *out = grown;
        }
        (*out)[*n].step = step;
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", de->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, (size_t)*n, sizeof **out, cmp_entry_desc);
    return FM_OK;
}

/* Keep `keep` (the one just written plus keep - 1 newest others), delete the
 * rest and stale temporary files of the stage. Failures are warnings: the
 * new checkpoint is already safe. */
static void prune(const char *dir, const char *stage, int64_t written, int keep)
{
    entry *list;
    int n;
    fm_err e = { 0 };
    if (list_ckpts(dir, stage, &list, &n, &e) != FM_OK) {
        fm_warn("cannot prune old checkpoints: %s", e.msg);
        return;
    }
    int kept = 1; /* the one just written */
    for (int i = 0; i < n; i++) {
        if (list[i].step == written)
            continue;
        if (keep <= 0 || kept < keep) {
            kept++;
            continue;
        }
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, list[i].name);
        if (unlink(path) != 0)
            fm_warn("cannot delete old checkpoint %s: %s", path, strerror(errno));
    }
    free(list);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!match_stale_tmp(de->d_name, stage))
            continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0)
            fm_warn("cannot delete stale temporary file %s: %s", path, strerror(errno));
    }
    if (d)
        closedir(d);
}

/* mkdir -p */
static int make_dirs(const char *dir, fm_err *e)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return fm_fail(e, FM_ERR_IO, "directory path too long: %s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return fm_fail(e, FM_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        if (stat(buf, &st) != 0)
            return fm_fail(e, FM_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return fm_fail(e, FM_ERR_IO, "cannot create directory %s: a file of that name exists", buf);
        *p = c;
        if (c == '\0')
            return FM_OK;
    }
}

int fm_ckpt_save(const char *run_dir, const char *stage, int64_t step, const fm_ckpt_group *groups, int ngroups,
                 const fm_ckpt_extra *extra, int nextra, const fm_st_meta *meta, int nmeta, int keep_last,
                 char *out_path, int out_len, fm_err *e)
{
    if (!valid_stage(stage))
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint stage name \"%s\" is not [A-Za-z0-9_]+", stage);
    if (!*run_dir)
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint run directory is empty");
    char dir[4096], path[4096];
    if (snprintf(dir, sizeof dir, "%s/ckpt", run_dir) >= (int)sizeof dir ||
        snprintf(path, sizeof path, "%s/%s-%08" PRId64 ".safetensors", dir, stage, step) >= (int)sizeof path)
        return fm_fail(e, FM_ERR_IO, "run directory path too long: %s", run_dir);
    FM_TRY(make_dirs(dir, e));
    int rc = fm_ckpt_write(path, stage, step, groups, ngroups, extra, nextra, meta, nmeta, e);
    if (rc == FM_ERR_IO)
        return fm_err_prefix(e, "cannot write checkpoint %s", path);
    if (rc != FM_OK)
        return rc;
    prune(dir, stage, step, keep_last);
    if (out_path && out_len > 0)
        snprintf(out_path, (size_t)out_len, "%s", path);
    return FM_OK;
}

/* ---- load ------------------------------------------------------------------ */

/* Check one expected tensor: exists, fp32, exact shape, finite values. */
static const fm_st_tensor *check_tensor(const fm_st_file *f, const char *path, const char *name, int ndim,
                                        const int64_t *shape, fm_err *e)
{
    const fm_st_tensor *t = fm_st_get(f, name);
    char want[96], got[96];
    if (!t) {
        fm_fail(e, FM_ERR_DATA, "%s: tensor %s is missing (a checkpoint of a different model?)", path, name);
        return NULL;
    }
    int same = t->dtype == FM_F32 && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        fm_fail(e, FM_ERR_DATA, "%s: tensor %s: expected F32 shape %s, found %s%s (a checkpoint of a different model?)",
                path, name, shape_str(ndim, shape, want, sizeof want), t->dtype == FM_F32 ? "" : "BF16 ",
                shape_str(t->ndim, t->shape, got, sizeof got));
        return NULL;
    }
    if (!all_finite(t->data, shape_numel(ndim, shape))) {
        fm_fail(e, FM_ERR_DATA, "%s: tensor %s holds NaN or Inf", path, name);
        return NULL;
    }
    return t;
}

/* The tensors of group g (verified to be in f) to g->base. */
static void copy_group(const fm_st_file *f, const fm_ckpt_group *g)
{
    char name[NAME_MAX_LEN + 1];
    const fm_params *p = g->table;
    for (int i = 0; i < p->n; i++) {
        tensor_name(name, sizeof name, g->prefix, p->items[i].name, NULL);
        const fm_st_tensor *t = fm_st_get(f, name);
        memcpy(g->base + p->items[i].offset, t->data, shape_numel(t->ndim, t->shape) * sizeof(float));
    }
}

/* Verify everything expected of the file, then (only then) copy it out. */
static int verify_and_copy(const fm_st_file *f, const char *path, const fm_ckpt_group *groups, int ngroups,
                           const fm_ckpt_extra *extra, int nextra, fm_err *e)
{
    char name[NAME_MAX_LEN + 1];
    for (int g = 0; g < ngroups; g++) {
        const fm_params *p = groups[g].table;
        char key[128];
        snprintf(key, sizeof key, "group:%s", groups[g].prefix);
        const char *cnt = fm_st_meta_get(f, key);
        int64_t have;
        if (!cnt || !parse_int64(cnt, &have))
            return fm_fail(e, FM_ERR_DATA, "%s: no tensor group \"%s\" in the checkpoint", path, groups[g].prefix);
        if (have != p->n)
            return fm_fail(e, FM_ERR_DATA,
                           "%s: group \"%s\" has %" PRId64 " tensors, the model has %d (a checkpoint of a different model?)",
                           path, groups[g].prefix, have, p->n);
        for (int i = 0; i < p->n; i++) {
            FM_TRY(tensor_name(name, sizeof name, groups[g].prefix, p->items[i].name, e));
            if (!check_tensor(f, path, name, p->items[i].w.ndim, p->items[i].w.shape, e))
                return FM_ERR_DATA;
        }
    }
    for (int i = 0; i < nextra; i++)
        if (!check_tensor(f, path, extra[i].name, extra[i].ndim, extra[i].shape, e))
            return FM_ERR_DATA;
    /* the whole file is verified: copy */
    for (int g = 0; g < ngroups; g++)
        if (groups[g].base)
            copy_group(f, &groups[g]);
    for (int i = 0; i < nextra; i++) {
        const fm_st_tensor *t = fm_st_get(f, extra[i].name);
        if (extra[i].data)
            memcpy(extra[i].data, t->data, shape_numel(t->ndim, t->shape) * sizeof(float));
    }
    return FM_OK;
}

/* Read + verify one file; want_stage / want_step (if set) must match its
 * metadata. On success c holds the file. */
static int load_one(const char *path, const char *want_stage, int64_t want_step, const fm_ckpt_group *groups,
                    int ngroups, const fm_ckpt_extra *extra, int nextra, fm_ckpt *c, fm_err *e)
{
    memset(c, 0, sizeof *c);
    FM_TRY(fm_st_read(path, &c->file, e));
    const char *fmt = fm_st_meta_get(&c->file, "format");
    const char *stage = fm_st_meta_get(&c->file, "stage");
    int rc = FM_OK;
    if (!fmt || strcmp(fmt, FM_CKPT_FORMAT) != 0)
        rc = fm_fail(e, FM_ERR_DATA, "%s: not an fmtrain checkpoint (format \"%s\", expected \"%s\")", path,
                     fmt ? fmt : "(none)", FM_CKPT_FORMAT);
    else if (!stage || !valid_stage(stage) || !parse_int64(fm_st_meta_get(&c->file, "step"), &c->step))
        rc = fm_fail(e, FM_ERR_DATA, "%s: missing or malformed stage/step metadata", path);
    else if (c->step < 0)
        rc = fm_fail(e, FM_ERR_DATA, "%s: metadata step: %" PRId64 " is negative", path, c->step);
    else if (want_stage && strcmp(stage, want_stage) != 0)
        rc = fm_fail(e, FM_ERR_DATA, "%s: a checkpoint of stage %s, expected %s", path, stage, want_stage);
    else if (want_step >= 0 && c->step != want_step)
        rc = fm_fail(e, FM_ERR_DATA, "%s: metadata says step %" PRId64 ", the file name step %" PRId64, path,
                     c->step, want_step);
    if (rc == FM_OK)
        rc = verify_and_copy(&c->file, path, groups, ngroups, extra, nextra, e);
    if (rc != FM_OK) {
        fm_st_free(&c->file);
        return rc;
    }
    if (!c->file.meta_checked)
        fm_warn("%s: written without a metadata checksum (by an older fmtrain?): its metadata is range-checked only",
                path);
    snprintf(c->stage, sizeof c->stage, "%s", stage);
    snprintf(c->path, sizeof c->path, "%s", path);
    return FM_OK;
}

static void hand_over(fm_ckpt *c, fm_ckpt *out)
{
    if (out)
        *out = *c;
    else
        fm_st_free(&c->file);
}

int fm_ckpt_load_file(const char *path, const fm_ckpt_group *groups, int ngroups, const fm_ckpt_extra *extra,
                      int nextra, fm_ckpt *out, fm_err *e)
{
    fm_ckpt c;
    FM_TRY(load_one(path, NULL, -1, groups, ngroups, extra, nextra, &c, e));
    hand_over(&c, out);
    return FM_OK;
}

int fm_ckpt_load_latest(const char *run_dir, const char *stage, const fm_ckpt_group *groups, int ngroups,
                        const fm_ckpt_extra *extra, int nextra, fm_ckpt *out, fm_err *e)
{
    if (!valid_stage(stage))
        return fm_fail(e, FM_ERR_INTERNAL, "checkpoint stage name \"%s\" is not [A-Za-z0-9_]+", stage);
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/ckpt", run_dir) >= (int)sizeof dir - 300)
        return fm_fail(e, FM_ERR_DATA, "run directory path too long: %s", run_dir);
    entry *list;
    int n;
    FM_TRY(list_ckpts(dir, stage, &list, &n, e));
    if (n == 0)
        return fm_fail(e, FM_CKPT_NONE, "no checkpoint of stage %s in %s", stage, dir);
    char newest_err[sizeof e->msg] = "";
    fm_err le = { 0 };
    for (int i = 0; i < n; i++) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, list[i].name);
        fm_ckpt c;
        if (load_one(path, stage, list[i].step, groups, ngroups, extra, nextra, &c, &le) == FM_OK) {
            if (i > 0)
                fm_warn("resuming from %s, an older checkpoint (%d newer one%s rejected)", path, i, i > 1 ? "s" : "");
            free(list);
            hand_over(&c, out);
            return FM_OK;
        }
        if (i == 0)
            memcpy(newest_err, le.msg, sizeof newest_err);
        fm_warn("checkpoint rejected: %s%s", le.msg,
                i + 1 < n ? "; falling back to the previous checkpoint" : "; no older checkpoint left");
    }
    free(list);
    return fm_fail(e, FM_ERR_DATA, "no valid checkpoint of stage %s in %s: all %d rejected; newest: %s", stage, dir,
                   n, newest_err);
}

/* ---- accessors ------------------------------------------------------------- */

const char *fm_ckpt_meta(const fm_ckpt *c, const char *key) { return fm_st_meta_get(&c->file, key); }

int fm_ckpt_meta_int(const fm_ckpt *c, const char *key, int64_t *out, fm_err *e)
{
    const char *s = fm_ckpt_meta(c, key);
    if (!s)
        return fm_fail(e, FM_ERR_DATA, "%s: metadata %s is missing", c->path, key);
    if (!parse_int64(s, out))
        return fm_fail(e, FM_ERR_DATA, "%s: metadata %s: expected an integer, got \"%s\"", c->path, key, s);
    return FM_OK;
}

int fm_ckpt_meta_int_range(const fm_ckpt *c, const char *key, int64_t lo, int64_t hi, int64_t *out, fm_err *e)
{
    FM_TRY(fm_ckpt_meta_int(c, key, out, e));
    if (*out < lo || *out > hi)
        return fm_fail(e, FM_ERR_DATA, "%s: metadata %s: %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]", c->path,
                       key, *out, lo, hi);
    return FM_OK;
}

int fm_ckpt_meta_double(const fm_ckpt *c, const char *key, double *out, fm_err *e)
{
    const char *s = fm_ckpt_meta(c, key);
    if (!s)
        return fm_fail(e, FM_ERR_DATA, "%s: metadata %s is missing", c->path, key);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno)
        return fm_fail(e, FM_ERR_DATA, "%s: metadata %s: expected a number, got \"%s\"", c->path, key, s);
    *out = v;
    return FM_OK;
}

const fm_st_tensor *fm_ckpt_tensor(const fm_ckpt *c, const char *name) { return fm_st_get(&c->file, name); }

int fm_ckpt_copy_group(const fm_ckpt *c, const fm_ckpt_group *g, fm_err *e)
{
    FM_TRY(verify_and_copy(&c->file, c->path, g, 1, NULL, 0, e));
    return FM_OK;
}

void fm_ckpt_close(fm_ckpt *c)
{
    fm_st_free(&c->file);
    c->path[0] = '\0';
    c->stage[0] = '\0';
}
