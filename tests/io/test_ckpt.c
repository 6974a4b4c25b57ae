/* test_ckpt.c - checkpoint round trip, keep-last-K, fallback on corrupt or
 * foreign checkpoints, I/O failures (as root: a run dir below a regular file,
 * RLIMIT_FSIZE for a full disk), NaN refusal. Leaves nothing behind. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/ckpt.h"
#include "fm/rng.h"
#include "test.h"

/* ---- a toy model: weights, EMA, Adam moments, two extras ------------------- */

typedef struct toy {
    fm_params p;
    float *ema, *m, *v;
    float scale[1], counters[2];
    fm_ckpt_group g[4];
    fm_ckpt_extra x[2];
} toy;

/* variant 0: the reference model; 1: conv.weight [4, 3, 3, 3];
 * 2: one more tensor; 3: lin.weight [5, 6] (the last tensor differs) */
static int toy_init(toy *t, int variant, fm_err *e)
{
    memset(t, 0, sizeof *t);
    FM_TRY(fm_params_init(&t->p, 8, 4096, 1, e));
    int64_t conv[4] = { variant == 1 ? 4 : 8, 3, 3, 3 }, bias[1] = { 8 }, lin[2] = { 5, variant == 3 ? 6 : 7 },
            norm[1] = { 8 };
    FM_TRY(fm_params_add(&t->p, NULL, 4, conv, e, "conv.weight"));
    FM_TRY(fm_params_add(&t->p, NULL, 1, bias, e, "conv.bias"));
    FM_TRY(fm_params_add(&t->p, NULL, 1, norm, e, "norm.weight"));
    if (variant == 2)
        FM_TRY(fm_params_add(&t->p, NULL, 1, norm, e, "extra.weight"));
    FM_TRY(fm_params_add(&t->p, NULL, 2, lin, e, "lin.weight"));
    size_t n = t->p.numel;
    t->ema = calloc(n, sizeof(float));
    t->m = calloc(n, sizeof(float));
    t->v = calloc(n, sizeof(float));
    if (!t->ema || !t->m || !t->v)
        return fm_fail(e, FM_ERR_INTERNAL, "out of memory");
    const char *pre[4] = { "", "ema.", "adam.m.", "adam.v." };
    float *base[4] = { t->p.data, t->ema, t->m, t->v };
    for (int i = 0; i < 4; i++)
        t->g[i] = (fm_ckpt_group){ pre[i], &t->p, base[i] };
    t->x[0] = (fm_ckpt_extra){ "latent_scale", t->scale, 1, { 1 } };
    t->x[1] = (fm_ckpt_extra){ "counters", t->counters, 1, { 2 } };
    return FM_OK;
}

/* Fill every tensor (not the padding) with values keyed by version. */
static void toy_fill(toy *t, uint64_t version)
{
    float *base[4] = { t->p.data, t->ema, t->m, t->v };
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < t->p.n; i++) {
            fm_param *q = &t->p.items[i];
            fm_fill_normal(base[g] + q->offset, (long)fm_tensor_numel(&q->w), version, (uint64_t)(g * 16 + i), 0);
        }
    t->scale[0] = 0.18215f * (float)version;
    t->counters[0] = (float)version;
    t->counters[1] = 7.0f;
}

/* Fill all four arrays (padding included) with a sentinel. */
static void toy_sentinel(toy *t)
{
    float *base[4] = { t->p.data, t->ema, t->m, t->v };
    for (int g = 0; g < 4; g++)
        for (size_t i = 0; i < t->p.numel; i++)
            base[g][i] = -12345.0f;
    t->scale[0] = t->counters[0] = t->counters[1] = -12345.0f;
}

static int toy_is_sentinel(const toy *t)
{
    const float *base[4] = { t->p.data, t->ema, t->m, t->v };
    for (int g = 0; g < 4; g++)
        for (size_t i = 0; i < t->p.numel; i++)
            if (base[g][i] != -12345.0f)
                return 0;
    return t->scale[0] == -12345.0f && t->counters[0] == -12345.0f && t->counters[1] == -12345.0f;
}

/* Bitwise equality of every tensor (not the padding) of group g. */
static int group_equal(const toy *a, const toy *b, int g)
{
    for (int i = 0; i < a->p.n; i++) {
        const fm_param *q = &a->p.items[i];
        if (memcmp(a->g[g].base + q->offset, b->g[g].base + q->offset, (size_t)fm_tensor_numel(&q->w) * sizeof(float)))
            return 0;
    }
    return 1;
}

/* Bitwise equality of every tensor and extra. */
static int toy_equal(const toy *a, const toy *b)
{
    for (int g = 0; g < 4; g++)
        if (!group_equal(a, b, g))
            return 0;
    return memcmp(a->scale, b->scale, sizeof a->scale) == 0 && memcmp(a->counters, b->counters, sizeof a->counters) == 0;
}

static void toy_free(toy *t)
{
    fm_params_free(&t->p);
    free(t->ema);
    free(t->m);
    free(t->v);
}

/* ---- file helpers --------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Entries of dir other than . and .. (0 if it does not exist). */
static int count_files(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static char *ckpt_path(char *buf, size_t n, const char *run, const char *stage, long step)
{
    snprintf(buf, n, "%s/ckpt/%s-%08ld.safetensors", run, stage, step);
    return buf;
}

/* Save toy t (filled with version = step) as stage/step. */
static int save(const char *run, toy *t, const char *stage, long step, int keep, fm_err *e)
{
    toy_fill(t, (uint64_t)step);
    fm_st_meta meta[2] = { { "seed", "3" }, { "model", "toy" } };
    return fm_ckpt_save(run, stage, step, t->g, 4, t->x, 2, meta, 2, keep, NULL, 0, e);
}

/* Capture stderr (the warnings) into a file while a load runs. */
typedef struct capture {
    char path[64];
    int saved;
} capture;

static void capture_begin(capture *c)
{
    snprintf(c->path, sizeof c->path, "/tmp/fm_ckpt_log_XXXXXX");
    int fd = mkstemp(c->path);
    fflush(stderr);
    c->saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Restore stderr, copy what was captured to out and echo it. */
static void capture_end(capture *c, char *out, size_t n)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    FILE *f = fopen(c->path, "r");
    size_t k = f ? fread(out, 1, n - 1, f) : 0;
    out[k] = '\0';
    if (f)
        fclose(f);
    unlink(c->path);
    fprintf(stderr, "%s", out);
}

static void flip_byte(const char *path, long from_end)
{
    FILE *fp = fopen(path, "r+b");
    fseek(fp, -from_end, SEEK_END);
    int c = fgetc(fp);
    fseek(fp, -from_end, SEEK_END);
    fputc(c ^ 0x01, fp);
    fclose(fp);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- tests ------------------------------------------------------------------ */

static int test_roundtrip_bitwise(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", path[4200], got[4200];
    CHECK(mkdtemp(run), "mkdtemp");
    toy a, b;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    CHECK_OK(toy_init(&b, 0, &e), &e);
    toy_fill(&a, 100);
    a.ema[3] = -0.0f; /* sign of zero survives */
    const char *cfg = "run:\n  seed: 3\n  out: \"/tmp/r\"\nflow:\n  lr: 3.0e-4 # \\ comment\n";
    fm_st_meta meta[7] = { { "config", cfg },      { "seed", "3" },           { "world_size", "2" },
                           { "data.epoch", "4" },  { "data.offset", "1536" }, { "optimizer.step", "100" },
                           { "model", "unet" } };
    CHECK_OK(fm_ckpt_save(run, "flow", 100, a.g, 4, a.x, 2, meta, 7, 3, got, sizeof got, &e), &e);
    CHECK(strcmp(got, ckpt_path(path, sizeof path, run, "flow", 100)) == 0, "path %s", got);
    toy_sentinel(&b);
    fm_ckpt c;
    CHECK_OK(fm_ckpt_load_latest(run, "flow", b.g, 4, b.x, 2, &c, &e), &e);
    CHECK(toy_equal(&a, &b), "loaded values differ");
    CHECK(signbit(b.ema[3]), "-0.0 lost");
    CHECK(b.p.data[b.p.items[0].offset + 216] == -12345.0f, "padding after conv.weight was written");
    CHECK(c.step == 100 && strcmp(c.stage, "flow") == 0 && strcmp(c.path, path) == 0, "step %lld stage %s path %s",
          (long long)c.step, c.stage, c.path);
    for (int i = 0; i < 7; i++)
        CHECK(fm_ckpt_meta(&c, meta[i].key) && strcmp(fm_ckpt_meta(&c, meta[i].key), meta[i].value) == 0,
              "metadata %s", meta[i].key);
    CHECK(strcmp(fm_ckpt_meta(&c, "format"), FM_CKPT_FORMAT) == 0, "format");
    CHECK(strcmp(fm_ckpt_meta(&c, "group:adam.v."), "4") == 0, "group count");
    int64_t ws;
    double off;
    CHECK_OK(fm_ckpt_meta_int(&c, "world_size", &ws, &e), &e);
    CHECK_OK(fm_ckpt_meta_double(&c, "data.offset", &off, &e), &e);
    CHECK(ws == 2 && off == 1536, "parsed %lld %g", (long long)ws, off);
    CHECK(fm_ckpt_meta_int(&c, "model", &ws, &e) == FM_ERR_DATA && strstr(e.msg, "model") && strstr(e.msg, path),
          "non-integer accepted: %s", e.msg);
    CHECK(fm_ckpt_meta_int(&c, "nope", &ws, &e) == FM_ERR_DATA && strstr(e.msg, "missing"), "%s", e.msg);
    const fm_st_tensor *ls = fm_ckpt_tensor(&c, "latent_scale");
    CHECK(ls && ls->ndim == 1 && memcmp(ls->data, a.scale, 4) == 0, "extra tensor via fm_ckpt_tensor");
    fm_ckpt_close(&c);

    /* a subset of groups (what `fmtrain sample` loads), one file, no out */
    toy_sentinel(&b);
    fm_ckpt_extra only_scale = { "latent_scale", b.scale, 1, { 1 } };
    CHECK_OK(fm_ckpt_load_file(path, b.g, 2, &only_scale, 1, NULL, &e), &e);
    CHECK(group_equal(&a, &b, 0) && group_equal(&a, &b, 1) && b.m[0] == -12345.0f && b.counters[0] == -12345.0f && b.scale[0] == a.scale[0],
          "subset load");
    /* an extra that must exist but is not copied */
    fm_ckpt_extra check_only = { "counters", NULL, 1, { 2 } }, missing = { "rng", NULL, 1, { 4 } };
    CHECK_OK(fm_ckpt_load_file(path, NULL, 0, &check_only, 1, NULL, &e), &e);
    CHECK(fm_ckpt_load_file(path, NULL, 0, &missing, 1, NULL, &e) == FM_ERR_DATA && strstr(e.msg, "rng") &&
              strstr(e.msg, "missing"),
          "missing extra: %s", e.msg);
    toy_free(&a);
    toy_free(&b);
    rm_rf(run);
    CHECK(!exists(run), "left %s behind", run);
    return 0;
}

static int test_keep_last_k(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", path[4200], dir[4200];
    CHECK(mkdtemp(run), "mkdtemp");
    snprintf(dir, sizeof dir, "%s/ckpt", run);
    toy a;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    CHECK_OK(save(run, &a, "vae", 1, 1, &e), &e);
    for (long s = 1; s <= 5; s++)
        CHECK_OK(save(run, &a, "flow", s * 100, 3, &e), &e);
    for (long s = 1; s <= 5; s++)
        CHECK(exists(ckpt_path(path, sizeof path, run, "flow", s * 100)) == (s >= 3), "step %ld kept=%d", s * 100,
              exists(path));
    CHECK(exists(ckpt_path(path, sizeof path, run, "vae", 1)), "another stage was pruned");
    /* a stale temporary file of a crashed writer is removed; other files are not */
    char stale[4300], other[4300];
    snprintf(stale, sizeof stale, "%s/flow-00000600.safetensors.tmp.999999999", dir);
    snprintf(other, sizeof other, "%s/notes.txt", dir);
    fclose(fopen(stale, "w"));
    fclose(fopen(other, "w"));
    /* re-saving an older step (a resume) keeps it plus the 2 newest others */
    CHECK_OK(save(run, &a, "flow", 200, 3, &e), &e);
    CHECK(exists(ckpt_path(path, sizeof path, run, "flow", 200)) &&
              exists(ckpt_path(path, sizeof path, run, "flow", 500)) &&
              exists(ckpt_path(path, sizeof path, run, "flow", 400)) &&
              !exists(ckpt_path(path, sizeof path, run, "flow", 300)),
          "resave pruning");
    CHECK(!exists(stale) && exists(other), "stale tmp %d, other file %d", exists(stale), exists(other));
    /* K = 1 keeps only the new one; K = 0 keeps all */
    CHECK_OK(save(run, &a, "flow", 600, 1, &e), &e);
    CHECK(count_files(dir) == 3, "%d files after K=1 (want flow-600, vae-1, notes)", count_files(dir));
    CHECK_OK(save(run, &a, "flow", 700, 0, &e), &e);
    CHECK_OK(save(run, &a, "flow", 123456789, 0, &e), &e); /* 9 digits: sorts numerically */
    CHECK(count_files(dir) == 5, "%d files after K=0", count_files(dir));
    toy b;
    CHECK_OK(toy_init(&b, 0, &e), &e);
    fm_ckpt c;
    CHECK_OK(fm_ckpt_load_latest(run, "flow", b.g, 4, b.x, 2, &c, &e), &e);
    CHECK(c.step == 123456789 && toy_equal(&a, &b), "latest is step %lld", (long long)c.step);
    fm_ckpt_close(&c);
    toy_free(&a);
    toy_free(&b);
    rm_rf(run);
    return 0;
}

/* Save steps 10 and 20 with toy variant 0, damage 20 with `damage`, expect
 * a load of step 10 and a warning containing each of `want`. */
static int fallback_case(void (*damage)(const char *run, const char *path), const char *const *want, int nwant)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", path[4200], log[8192];
    CHECK(mkdtemp(run), "mkdtemp");
    toy a, b, ref;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    CHECK_OK(toy_init(&b, 0, &e), &e);
    CHECK_OK(toy_init(&ref, 0, &e), &e);
    CHECK_OK(save(run, &a, "flow", 10, 5, &e), &e);
    CHECK_OK(save(run, &a, "flow", 20, 5, &e), &e);
    toy_fill(&ref, 10);
    damage(run, ckpt_path(path, sizeof path, run, "flow", 20));
    toy_sentinel(&b);
    fm_ckpt c;
    capture cap;
    capture_begin(&cap);
    int rc = fm_ckpt_load_latest(run, "flow", b.g, 4, b.x, 2, &c, &e);
    capture_end(&cap, log, sizeof log);
    CHECK_OK(rc, &e);
    CHECK(c.step == 10 && toy_equal(&ref, &b), "loaded step %lld", (long long)c.step);
    fm_ckpt_close(&c);
    CHECK(strstr(log, path) && strstr(log, "falling back"), "warning does not name %s", path);
    for (int i = 0; i < nwant; i++)
        CHECK(strstr(log, want[i]), "warning lacks \"%s\"", want[i]);
    toy_free(&a);
    toy_free(&b);
    toy_free(&ref);
    rm_rf(run);
    return 0;
}

static void damage_truncate(const char *run, const char *path)
{
    (void)run;
    if (truncate(path, file_size(path) - 100) != 0)
        perror("truncate");
}

static void damage_flip(const char *run, const char *path)
{
    (void)run;
    flip_byte(path, file_size(path) / 3); /* inside the tensor data */
}

/* overwrite with a checkpoint of another model (conv.weight [4, 3, 3, 3]) */
static void damage_other_shape(const char *run, const char *path)
{
    (void)path;
    fm_err e = { 0 };
    toy o;
    if (toy_init(&o, 1, &e) != FM_OK || save(run, &o, "flow", 20, 5, &e) != FM_OK)
        fprintf(stderr, "damage_other_shape: %s\n", e.msg);
    toy_free(&o);
}

/* overwrite with a checkpoint of a larger model (one more tensor) */
static void damage_more_tensors(const char *run, const char *path)
{
    (void)path;
    fm_err e = { 0 };
    toy o;
    if (toy_init(&o, 2, &e) != FM_OK || save(run, &o, "flow", 20, 5, &e) != FM_OK)
        fprintf(stderr, "damage_more_tensors: %s\n", e.msg);
    toy_free(&o);
}

static int test_fallback_truncated(void)
{
    const char *want[] = { "truncated" };
    return fallback_case(damage_truncate, want, 1);
}

static int test_fallback_flipped_byte(void)
{
    const char *want[] = { "CRC32C mismatch" };
    return fallback_case(damage_flip, want, 1);
}

static int test_fallback_other_shape(void)
{
    const char *want[] = { "conv.weight", "expected F32 shape [8, 3, 3, 3], found [4, 3, 3, 3]" };
    return fallback_case(damage_other_shape, want, 2);
}

static int test_fallback_larger_model(void)
{
    const char *want[] = { "has 5 tensors, the model has 4" };
    return fallback_case(damage_more_tensors, want, 1);
}

/* Every file bad -> FM_ERR_DATA and the caller's buffers untouched, even
 * when the first tensors of a file would have matched. */
static int test_all_corrupt(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", p1[4200], p2[4200], log[8192];
    CHECK(mkdtemp(run), "mkdtemp");
    toy a, last, b;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    CHECK_OK(toy_init(&last, 3, &e), &e);
    CHECK_OK(toy_init(&b, 0, &e), &e);
    CHECK_OK(save(run, &last, "flow", 10, 5, &e), &e); /* lin.weight [5, 6]: the last tensor differs */
    CHECK_OK(save(run, &a, "flow", 20, 5, &e), &e);
    flip_byte(ckpt_path(p2, sizeof p2, run, "flow", 20), 4);
    ckpt_path(p1, sizeof p1, run, "flow", 10);
    toy_sentinel(&b);
    capture cap;
    capture_begin(&cap);
    int rc = fm_ckpt_load_latest(run, "flow", b.g, 4, b.x, 2, NULL, &e);
    capture_end(&cap, log, sizeof log);
    CHECK(rc == FM_ERR_DATA && strstr(e.msg, "no valid checkpoint") && strstr(e.msg, "all 2 rejected"),
          "rc %d: %s", rc, e.msg);
    CHECK(strstr(log, p1) && strstr(log, p2) && strstr(log, "lin.weight"), "warnings do not name both files");
    CHECK(toy_is_sentinel(&b), "buffers written by a rejected load");
    /* a single file: load_file fails the same way, buffers untouched */
    CHECK(fm_ckpt_load_file(p1, b.g, 4, b.x, 2, NULL, &e) == FM_ERR_DATA && strstr(e.msg, p1) &&
              strstr(e.msg, "[5, 7], found [5, 6]"),
          "%s", e.msg);
    CHECK(toy_is_sentinel(&b), "buffers written by a rejected load_file");
    /* a safetensors file that is not a checkpoint */
    float one = 1;
    fm_st_tensor t = { "x", &one, FM_F32, 1, { 1 } };
    CHECK_OK(fm_st_write(p1, &t, 1, NULL, 0, &e), &e);
    CHECK(fm_ckpt_load_file(p1, NULL, 0, NULL, 0, NULL, &e) == FM_ERR_DATA && strstr(e.msg, "not an fmtrain"),
          "%s", e.msg);
    toy_free(&a);
    toy_free(&last);
    toy_free(&b);
    rm_rf(run);
    return 0;
}

static int test_no_checkpoint(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX";
    CHECK(mkdtemp(run), "mkdtemp");
    toy a;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    toy_sentinel(&a);
    CHECK(fm_ckpt_load_latest(run, "flow", a.g, 4, a.x, 2, NULL, &e) == FM_CKPT_NONE && strstr(e.msg, "no checkpoint"),
          "no ckpt dir: %s", e.msg);
    CHECK_OK(save(run, &a, "vae", 5, 2, &e), &e);
    toy_sentinel(&a);
    CHECK(fm_ckpt_load_latest(run, "flow", a.g, 4, a.x, 2, NULL, &e) == FM_CKPT_NONE, "other stage only: %s", e.msg);
    CHECK(toy_is_sentinel(&a), "buffers written");
    toy_free(&a);
    rm_rf(run);
    return 0;
}

static int test_unwritable(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", bad[4200], path[4200], tmp[4300];
    CHECK(mkdtemp(run), "mkdtemp");
    toy a, b, ref;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    CHECK_OK(toy_init(&b, 0, &e), &e);
    CHECK_OK(toy_init(&ref, 0, &e), &e);
    /* a run directory below a regular file: mkdir fails even as root */
    snprintf(bad, sizeof bad, "%s/file", run);
    fclose(fopen(bad, "w"));
    snprintf(bad, sizeof bad, "%s/file/sub", run);
    CHECK(save(bad, &a, "flow", 1, 2, &e) == FM_ERR_IO && strstr(e.msg, "cannot create directory") &&
              strstr(e.msg, "/file"),
          "under a file: %s", e.msg);
    /* disk full: RLIMIT_FSIZE stops writes as root too (EFBIG) */
    CHECK_OK(save(run, &a, "flow", 10, 2, &e), &e);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 2048;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = save(run, &a, "flow", 20, 1, &e);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    CHECK(rc == FM_ERR_IO && strstr(e.msg, "cannot write checkpoint") && strstr(e.msg, "flow-00000020"),
          "disk full: rc %d: %s", rc, e.msg);
    fprintf(stderr, "  disk full message: %s\n", e.msg);
    snprintf(tmp, sizeof tmp, "%s/ckpt", run);
    CHECK(!exists(ckpt_path(path, sizeof path, run, "flow", 20)) && count_files(tmp) == 1,
          "%d files in ckpt/ after a failed write", count_files(tmp));
    toy_fill(&ref, 10);
    fm_ckpt c;
    CHECK_OK(fm_ckpt_load_latest(run, "flow", b.g, 4, b.x, 2, &c, &e), &e);
    CHECK(c.step == 10 && toy_equal(&ref, &b), "previous checkpoint damaged");
    fm_ckpt_close(&c);
    /* RUN/ckpt is a file */
    char run2[] = "/tmp/fm_ckpt_XXXXXX";
    CHECK(mkdtemp(run2), "mkdtemp");
    snprintf(tmp, sizeof tmp, "%s/ckpt", run2);
    fclose(fopen(tmp, "w"));
    CHECK(save(run2, &a, "flow", 1, 2, &e) == FM_ERR_IO && strstr(e.msg, tmp), "ckpt is a file: %s", e.msg);
    toy_free(&a);
    toy_free(&b);
    toy_free(&ref);
    rm_rf(run);
    rm_rf(run2);
    return 0;
}

static int test_nonfinite_refused(void)
{
    fm_err e = { 0 };
    char run[] = "/tmp/fm_ckpt_XXXXXX", dir[4200];
    CHECK(mkdtemp(run), "mkdtemp");
    snprintf(dir, sizeof dir, "%s/ckpt", run);
    toy a;
    CHECK_OK(toy_init(&a, 0, &e), &e);
    toy_fill(&a, 1);
    a.ema[a.p.items[2].offset + 5] = NAN;
    CHECK(fm_ckpt_save(run, "flow", 1, a.g, 4, a.x, 2, NULL, 0, 2, NULL, 0, &e) == FM_ERR_INTERNAL &&
              strstr(e.msg, "ema.norm.weight") && strstr(e.msg, "NaN"),
          "NaN: %s", e.msg);
    toy_fill(&a, 1);
    a.scale[0] = -INFINITY;
    CHECK(fm_ckpt_save(run, "flow", 1, a.g, 4, a.x, 2, NULL, 0, 2, NULL, 0, &e) == FM_ERR_INTERNAL &&
              strstr(e.msg, "latent_scale"),
          "Inf: %s", e.msg);
    CHECK(count_files(dir) == 0, "a file was written");
    /* reserved metadata, duplicate names, bad stage */
    toy_fill(&a, 1);
    fm_st_meta m = { "step", "9" };
    CHECK(fm_ckpt_save(run, "flow", 1, a.g, 4, a.x, 2, &m, 1, 2, NULL, 0, &e) == FM_ERR_INTERNAL &&
              strstr(e.msg, "reserved"),
          "%s", e.msg);
    fm_ckpt_extra dup = { "ema.conv.bias", a.scale, 1, { 1 } };
    CHECK(fm_ckpt_save(run, "flow", 1, a.g, 4, &dup, 1, NULL, 0, 2, NULL, 0, &e) == FM_ERR_INTERNAL &&
              strstr(e.msg, "twice"),
          "%s", e.msg);
    CHECK(fm_ckpt_save(run, "fl-ow", 1, a.g, 4, a.x, 2, NULL, 0, 2, NULL, 0, &e) == FM_ERR_INTERNAL, "%s", e.msg);
    CHECK(count_files(dir) == 0, "a file was written");
    toy_free(&a);
    rm_rf(run);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_roundtrip_bitwise),    TEST(test_keep_last_k),          TEST(test_fallback_truncated),
        TEST(test_fallback_flipped_byte), TEST(test_fallback_other_shape), TEST(test_fallback_larger_model),
        TEST(test_all_corrupt),          TEST(test_no_checkpoint),        TEST(test_unwritable),
        TEST(test_nonfinite_refused),
    };
    return fm_test_main("io/ckpt", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
