/* profile.c - the per-layer timer table (see profile.h). */
#include "fm/profile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/json.h"

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* FNV-1a over at most max-1 bytes of s (the part a field keeps). */
static uint64_t hash_str(uint64_t h, const char *s, size_t max)
{
    for (size_t i = 0; i + 1 < max && s[i]; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    h ^= 0xff; /* separator: ("ab", "c") and ("a", "bc") differ */
    return h * 1099511628211ull;
}

static uint64_t key_hash(const char *scope, const char *layer, int phase)
{
    uint64_t h = 14695981039346656037ull;
    h = hash_str(h, scope, FM_PROF_SCOPE);
    h = hash_str(h, layer, FM_PROF_LAYER);
    h ^= (uint64_t)(unsigned)phase;
    return h * 1099511628211ull;
}

static int same_key(const fm_profile_entry *en, const char *scope, const char *layer, int phase)
{
    return en->phase == phase && strncmp(en->scope, scope, FM_PROF_SCOPE - 1) == 0 &&
           strncmp(en->layer, layer, FM_PROF_LAYER - 1) == 0;
}

static void copy_field(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);
    if (len > n - 1)
        len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

int fm_profile_init(fm_profile *p, int cap, fm_err *e)
{
    memset(p, 0, sizeof *p);
    if (cap < 1 || cap > (1 << 24))
        return fm_fail(e, FM_ERR_USAGE, "profile: capacity %d, expected 1 to %d", cap, 1 << 24);
    int nslot = 2;
    while (nslot < 2 * cap)
        nslot *= 2;
    p->e = calloc((size_t)cap, sizeof *p->e);
    p->slot = malloc((size_t)nslot * sizeof *p->slot);
    p->site = calloc((size_t)cap, sizeof *p->site);
    if (!p->e || !p->slot || !p->site) {
        fm_profile_free(p);
        return fm_fail(e, FM_ERR_INTERNAL, "profile: out of memory for %d entries", cap);
    }
    p->cap = cap;
    p->nslot = nslot;
    fm_profile_reset(p);
    return FM_OK;
}

void fm_profile_free(fm_profile *p)
{
    free(p->e);
    free(p->slot);
    free(p->site);
    memset(p, 0, sizeof *p);
}

void fm_profile_reset(fm_profile *p)
{
    p->n = 0;
    p->dropped = 0;
    for (int i = 0; i < 3; i++)
        p->phase_s[i] = 0;
    for (int i = 0; i < p->nslot; i++)
        p->slot[i] = -1;
}

/* The hash slot holding the key, or the empty slot where it would go. */
static int probe(const fm_profile *p, const char *scope, const char *layer, int phase)
{
    const unsigned mask = (unsigned)p->nslot - 1;
    unsigned s = (unsigned)key_hash(scope, layer, phase) & mask;
    while (p->slot[s] >= 0 && !same_key(&p->e[p->slot[s]], scope, layer, phase))
        s = (s + 1) & mask; /* never full: nslot >= 2 cap */
    return (int)s;
}

void fm_profile_add(fm_profile *p, const char *scope, const char *layer, const char *kind, int phase,
                    double seconds, double flops)
{
    if (!p || !p->slot)
        return;
    scope = str_or_empty(scope);
    layer = str_or_empty(layer);
    const int s = probe(p, scope, layer, phase);
    fm_profile_entry *en;
    if (p->slot[s] >= 0) {
        en = &p->e[p->slot[s]];
    } else {
        if (p->n == p->cap) {
            p->dropped++;
            return;
        }
        en = &p->e[p->n];
        memset(en, 0, sizeof *en);
        copy_field(en->scope, scope, sizeof en->scope);
        copy_field(en->layer, layer, sizeof en->layer);
        copy_field(en->kind, str_or_empty(kind), sizeof en->kind);
        en->phase = phase;
        p->slot[s] = p->n++;
    }
    if (en->calls == 0 || seconds < en->min_s)
        en->min_s = seconds;
    en->calls++;
    en->seconds += seconds;
    en->flops += flops;
    if (phase >= 0 && phase < 3)
        p->phase_s[phase] += seconds;
}

fm_prof_site *fm_profile_site(fm_profile *p, const char *scope, const char *layer, const char *kind)
{
    scope = str_or_empty(scope);
    layer = str_or_empty(layer);
    for (int i = 0; i < p->nsite; i++)
        if (strncmp(p->site[i].scope, scope, FM_PROF_SCOPE - 1) == 0 &&
            strncmp(p->site[i].layer, layer, FM_PROF_LAYER - 1) == 0)
            return &p->site[i];
    if (p->nsite == p->cap) {
        p->dropped++;
        return NULL;
    }
    fm_prof_site *s = &p->site[p->nsite++];
    memset(s, 0, sizeof *s);
    s->table = p;
    copy_field(s->scope, scope, sizeof s->scope);
    copy_field(s->layer, layer, sizeof s->layer);
    copy_field(s->kind, str_or_empty(kind), sizeof s->kind);
    static const char suffix[] = ".recompute"; /* the layer name shortened to fit it */
    copy_field(s->redo, s->layer, sizeof s->redo - (sizeof suffix - 1));
    memcpy(s->redo + strlen(s->redo), suffix, sizeof suffix);
    return s;
}

void fm_prof_site_add(const fm_prof_site *s, int phase, double seconds, double flops)
{
    if (phase == FM_PROF_REDO)
        fm_profile_add(s->table, s->scope, s->redo, s->kind, FM_PROF_BWD, seconds, flops);
    else
        fm_profile_add(s->table, s->scope, s->layer, s->kind, phase, seconds, flops);
}

const fm_profile_entry *fm_profile_find(const fm_profile *p, const char *scope, const char *layer, int phase)
{
    if (!p || !p->slot)
        return NULL;
    const int s = probe(p, str_or_empty(scope), str_or_empty(layer), phase);
    return p->slot[s] >= 0 ? &p->e[p->slot[s]] : NULL;
}

/* The sum of the entries' flops (flops = 1) or seconds (0) over phase (< 0:
 * every phase), in entry order. */
static double phase_total(const fm_profile *p, int phase, int flops)
{
    double s = 0;
    for (int i = 0; i < p->n; i++)
        if (phase < 0 || p->e[i].phase == phase)
            s += flops ? p->e[i].flops : p->e[i].seconds;
    return s;
}

double fm_profile_seconds(const fm_profile *p, int phase) { return phase_total(p, phase, 0); }

double fm_profile_flops(const fm_profile *p, int phase) { return phase_total(p, phase, 1); }

const char *fm_profile_phase_name(int phase)
{
    return phase == FM_PROF_FWD ? "fwd" : phase == FM_PROF_BWD ? "bwd" : "step";
}

/* ---- grouped rows ---------------------------------------------------------- */

static void row_name(const fm_profile_entry *en, fm_profile_by by, char *out, size_t n)
{
    /* the phase is spelled out for forward and backward only */
    const int step = en->phase == FM_PROF_STEP;
    const char *sp = step ? "" : " ", *ph = step ? "" : fm_profile_phase_name(en->phase);
    if (by == FM_PROFILE_BY_SCOPE)
        snprintf(out, n, "%s%s%s", en->scope, sp, ph);
    else if (by == FM_PROFILE_BY_KIND)
        snprintf(out, n, "%s%s%s", en->kind, sp, ph);
    else if (en->layer[0] && en->scope[0])
        snprintf(out, n, "%s.%s%s%s", en->scope, en->layer, sp, ph);
    else
        snprintf(out, n, "%s%s%s%s", en->scope, en->layer, sp, ph);
}

static int by_time(const void *a, const void *b)
{
    const fm_profile_row *x = a, *y = b;
    if (x->seconds != y->seconds)
        return x->seconds < y->seconds ? 1 : -1;
    return strcmp(x->name, y->name);
}

int fm_profile_rows(const fm_profile *p, fm_profile_by by, fm_profile_row **rows)
{
    *rows = NULL;
    if (p->n == 0)
        return 0;
    fm_profile_row *r = calloc((size_t)p->n, sizeof *r);
    if (!r)
        return -1;
    int n = 0;
    for (int i = 0; i < p->n; i++) {
        const fm_profile_entry *en = &p->e[i];
        char name[sizeof r->name];
        row_name(en, by, name, sizeof name);
        int k = 0; /* linear search: grouping is off the step path and n is small */
        while (k < n && strcmp(r[k].name, name) != 0)
            k++;
        if (k == n) {
            memcpy(r[k].name, name, sizeof name);
            memcpy(r[k].kind, en->kind, sizeof r[k].kind);
            r[k].phase = en->phase;
            n++;
        } else if (strcmp(r[k].kind, en->kind) != 0) {
            snprintf(r[k].kind, sizeof r[k].kind, "mixed");
        }
        r[k].calls += en->calls;
        r[k].seconds += en->seconds;
        r[k].flops += en->flops;
        r[k].best_s += (double)en->calls * en->min_s;
    }
    qsort(r, (size_t)n, sizeof *r, by_time);
    *rows = r;
    return n;
}

/* "%.1f" of flops / seconds in GFLOP/s, or "-". */
static void gflops_str(char *out, size_t n, double flops, double seconds)
{
    if (flops > 0 && seconds > 0)
        snprintf(out, n, "%.1f", flops / seconds * 1e-9);
    else
        snprintf(out, n, "-");
}

static void print_row(FILE *f, const char *name, double calls, double seconds, double best, double flops, int steps,
                      double total)
{
    char gf[32], bgf[32];
    gflops_str(gf, sizeof gf, flops, seconds);
    gflops_str(bgf, sizeof bgf, flops, best);
    fprintf(f, "%-40s %6.0f %9.3f %6.1f%% %8s %9.3f %8s\n", name, calls / steps, 1e3 * seconds / steps,
            100.0 * seconds / total, gf, 1e3 * best / steps, bgf);
}

/* What the table and the JSON are made of: the n rows of p by `by` (r, to be
 * freed), steps at least 1, the seconds of every entry (sum) and what the
 * shares are of (total: total_s, or sum when total_s is not positive). */
typedef struct report {
    fm_profile_row *r;
    int n, steps;
    double sum, total;
} report;

static int report_init(report *t, const fm_profile *p, fm_profile_by by, int steps, double total_s, fm_err *e)
{
    t->n = fm_profile_rows(p, by, &t->r);
    if (t->n < 0)
        return fm_fail(e, FM_ERR_INTERNAL, "profile: out of memory for %d rows", p->n);
    t->steps = steps < 1 ? 1 : steps;
    t->sum = fm_profile_seconds(p, -1);
    t->total = total_s > 0 ? total_s : t->sum;
    return FM_OK;
}

int fm_profile_print(const fm_profile *p, fm_profile_by by, int steps, double total_s, int max_rows, FILE *f,
                     fm_err *e)
{
    report t;
    FM_TRY(report_init(&t, p, by, steps, total_s, e));
    const fm_profile_row *r = t.r;
    const int n = t.n;
    const char *head = by == FM_PROFILE_BY_KIND ? "kind" : by == FM_PROFILE_BY_SCOPE ? "block" : "layer";
    fprintf(f, "%-40s %6s %9s %7s %8s %9s %8s\n", head, "calls", "ms/step", "share", "GFLOP/s", "best ms",
            "best GF/s");
    const int shown = max_rows > 0 && max_rows < n ? max_rows : n;
    for (int i = 0; i < shown; i++)
        print_row(f, r[i].name, (double)r[i].calls, r[i].seconds, r[i].best_s, r[i].flops, t.steps, t.total);
    double rest[4] = { 0 }, all_best = 0; /* calls, seconds, best, flops of the rows not shown */
    for (int i = 0; i < n; i++) {
        all_best += r[i].best_s;
        if (i >= shown) {
            rest[0] += (double)r[i].calls;
            rest[1] += r[i].seconds;
            rest[2] += r[i].best_s;
            rest[3] += r[i].flops;
        }
    }
    if (shown < n) {
        char name[64];
        snprintf(name, sizeof name, "(%d more)", n - shown);
        print_row(f, name, rest[0], rest[1], rest[2], rest[3], t.steps, t.total);
    }
    fprintf(f, "%-40s %6s %9.3f %6.1f%% %8s %9.3f\n", "sum of the rows", "", 1e3 * t.sum / t.steps,
            100.0 * t.sum / t.total, "", 1e3 * all_best / t.steps);
    if (p->dropped)
        fprintf(f, "(%lld calls not accounted: the table of %d entries was full)\n", (long long)p->dropped, p->cap);
    free(t.r);
    if (ferror(f))
        return fm_fail(e, FM_ERR_IO, "profile: writing the table failed");
    return FM_OK;
}

/* JSON string body: the names here are identifiers, but escape anyway. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int fm_profile_json(const fm_profile *p, fm_profile_by by, int steps, double total_s, FILE *f, fm_err *e)
{
    report t;
    FM_TRY(report_init(&t, p, by, steps, total_s, e));
    const fm_profile_row *r = t.r;
    const int n = t.n;
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        fputs(i ? ", {\"name\": " : "{\"name\": ", f);
        json_str(f, r[i].name);
        fputs(", \"kind\": ", f);
        json_str(f, r[i].kind);
        fprintf(f, ", \"phase\": \"%s\", \"calls\": ", fm_profile_phase_name(r[i].phase));
        fm_json_num(f, "%.6g", (double)r[i].calls / t.steps);
        fputs(", \"ms_per_step\": ", f);
        fm_json_num(f, "%.6g", 1e3 * r[i].seconds / t.steps);
        fputs(", \"share\": ", f);
        fm_json_num(f, "%.6g", t.total > 0 ? r[i].seconds / t.total : 0.0);
        fputs(", \"gflops\": ", f);
        fm_json_num(f, "%.6g", r[i].flops > 0 && r[i].seconds > 0 ? r[i].flops / r[i].seconds * 1e-9 : NAN);
        fputs(", \"best_ms_per_step\": ", f);
        fm_json_num(f, "%.6g", 1e3 * r[i].best_s / t.steps);
        fputs(", \"best_gflops\": ", f);
        fm_json_num(f, "%.6g", r[i].flops > 0 && r[i].best_s > 0 ? r[i].flops / r[i].best_s * 1e-9 : NAN);
        fputc('}', f);
    }
    fputc(']', f);
    free(t.r);
    if (ferror(f))
        return fm_fail(e, FM_ERR_IO, "profile: writing the JSON failed");
    return FM_OK;
}
