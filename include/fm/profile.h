/* profile.h - a per-layer timer table: where a training step's time goes.
 *
 * A model (or a benchmark, or the trainer) that is given a table accounts each
 * timed call to an entry keyed by (scope, layer, phase):
 *   scope  the block, e.g. "down.1.res.0", "blocks.3", "cond", "step"
 *   layer  the layer inside it, e.g. "conv1", "norm2", "attn", "adamw"
 *   phase  FM_PROF_FWD, FM_PROF_BWD or FM_PROF_STEP (optimiser, EMA, data, ...)
 * and a kind, the operation type ("conv", "groupnorm", "attention", ...) that
 * the summary by kind adds up. Every entry sums calls, seconds and FLOPs.
 *
 * The table has a fixed capacity chosen at init, its only allocation:
 * accounting never allocates and never fails. A call with a new key once the
 * table is full is counted in `dropped` and otherwise ignored. Keys are
 * compared on at most the field sizes below (longer strings are truncated when
 * copied). Not thread-safe: account from the thread that drives the model
 * (the layers parallelise inside their calls, which return synchronised).
 *
 * Layers time themselves through a site (below): a model's walk names every
 * layer (scope, layer, kind), and the table gives each a site the layer keeps
 * a pointer to. Code that is not a layer (the trainer's step, a benchmark)
 * accounts to the table directly. Timing a call costs nothing but a NULL test
 * when the table pointer is NULL:
 *     double t0 = FM_PROF_START(prof);
 *     ... the call ...
 *     FM_PROF_STOP(prof, t0, "down.1.res.0", "conv1", "conv", FM_PROF_FWD, flops);
 * (flops is not evaluated when prof is NULL), or in one line for a call that
 * returns an int status (propagated with FM_TRY):
 *     FM_PROF_CALL(prof, scope, "conv1", "conv", FM_PROF_FWD, flops, fm_conv2d_forward(...));
 * and FM_PROF_VOID for a statement with no status. */
#ifndef FM_PROFILE_H
#define FM_PROFILE_H

#include <stdint.h>
#include <stdio.h>

#include "fm/status.h"
#include "fm/timer.h"

#define FM_PROF_SCOPE 48 /* field sizes, NUL included */
#define FM_PROF_LAYER 32
#define FM_PROF_KIND 24

typedef enum fm_prof_phase {
    FM_PROF_FWD = 0,
    FM_PROF_BWD = 1,
    FM_PROF_STEP = 2,
    FM_PROF_REDO = 3 /* sites only: a forward recomputed inside backward, accounted to
                      * FM_PROF_BWD as layer "<layer>.recompute" (never an entry's phase) */
} fm_prof_phase;

typedef struct fm_profile_entry {
    char scope[FM_PROF_SCOPE];
    char layer[FM_PROF_LAYER];
    char kind[FM_PROF_KIND];
    int phase;      /* fm_prof_phase */
    int64_t calls;
    double seconds; /* summed wall time */
    double min_s;   /* fastest single call: calls * min_s estimates the time on a quiet machine */
    double flops;   /* summed floating-point operations (0 = not counted) */
} fm_profile_entry;

typedef struct fm_profile fm_profile;

/* Where one layer accounts its calls: the table and the layer's names. Made
 * by fm_profile_site and owned by the table; a layer holds a pointer to its
 * site (NULL = not profiled, the default) and times each call itself:
 *     const double t0 = FM_PROF_START(l->prof);
 *     ... the work ...
 *     FM_PROF_END(l->prof, FM_PROF_FWD, t0, flops);
 * (flops is not evaluated when the site is NULL). */
typedef struct fm_prof_site {
    fm_profile *table;
    char scope[FM_PROF_SCOPE];
    char layer[FM_PROF_LAYER];
    char redo[FM_PROF_LAYER]; /* the layer name of FM_PROF_REDO calls: "<layer>.recompute" */
    char kind[FM_PROF_KIND];
} fm_prof_site;

struct fm_profile {
    fm_profile_entry *e;  /* [cap], the first n in use, in order of first use */
    int n, cap;
    int *slot;            /* [nslot] open-addressing hash of entry indexes, -1 = empty */
    int nslot;            /* a power of two >= 2 cap */
    int64_t dropped;      /* calls (and sites) not accounted because the table was full */
    double phase_s[3];    /* seconds accounted per phase since init or reset (FM_PROF_FWD .. STEP) */
    fm_prof_site *site;   /* [cap], the first nsite in use; kept by fm_profile_reset */
    int nsite;
};

/* A model's walk calls this for every layer that times itself, with the
 * layer's scope ("down.1.res.0", "blocks.3", "cond"), name ("conv1") and kind
 * ("conv"), and the layer's site pointer, which the visitor may set (attach
 * a table's site, or NULL to detach). The strings live only for the call. */
typedef void (*fm_prof_visit)(void *ctx, const char *scope, const char *layer, const char *kind,
                              fm_prof_site **site);

/* Allocate a table for up to cap entries (cap >= 1; FM_ERR_USAGE otherwise,
 * FM_ERR_INTERNAL when out of memory). */
int fm_profile_init(fm_profile *p, int cap, fm_err *e);

/* Free the table and its sites (detach every layer first); safe on a zeroed or
 * failed one. */
void fm_profile_free(fm_profile *p);

/* Forget every entry (e.g. after warm-up steps); keeps the capacity and the
 * sites. */
void fm_profile_reset(fm_profile *p);

/* The site of (scope, layer) in p, made with this kind on first use (the same
 * site for the same names, so attaching again finds it); NULL when p already
 * holds cap sites (counted in dropped: that layer is not timed). A linear
 * search: for attaching, off the step path. */
fm_prof_site *fm_profile_site(fm_profile *p, const char *scope, const char *layer, const char *kind);

/* Account one call of a site's layer: phase FM_PROF_FWD or FM_PROF_BWD to the
 * entry of (scope, layer, phase), FM_PROF_REDO to (scope, redo, FM_PROF_BWD). */
void fm_prof_site_add(const fm_prof_site *s, int phase, double seconds, double flops);

/* Account one call of `seconds` and `flops` to the entry of (scope, layer,
 * phase), making it (with this kind) on first use. NULL strings count as "". */
void fm_profile_add(fm_profile *p, const char *scope, const char *layer, const char *kind, int phase,
                    double seconds, double flops);

/* The entry of (scope, layer, phase), or NULL. */
const fm_profile_entry *fm_profile_find(const fm_profile *p, const char *scope, const char *layer, int phase);

/* Seconds summed over the entries, of one phase (phase >= 0) or all (-1). */
double fm_profile_seconds(const fm_profile *p, int phase);

/* FLOPs summed over the entries, of one phase (phase >= 0) or all (-1). */
double fm_profile_flops(const fm_profile *p, int phase);

/* "fwd", "bwd", "step". */
const char *fm_profile_phase_name(int phase);

/* How fm_profile_print and fm_profile_json group the entries. */
typedef enum fm_profile_by {
    FM_PROFILE_BY_ENTRY, /* one row per entry: "scope.layer phase" */
    FM_PROFILE_BY_SCOPE, /* sums per (scope, phase): "down.1.res.0 bwd" */
    FM_PROFILE_BY_KIND   /* sums per (kind, phase): "conv bwd" */
} fm_profile_by;         /* (rows of FM_PROF_STEP carry no phase word: "step.adamw") */

/* A grouped row, as the printers make them. */
typedef struct fm_profile_row {
    char name[FM_PROF_SCOPE + FM_PROF_LAYER + 8];
    char kind[FM_PROF_KIND];
    int phase;
    int64_t calls;
    double seconds, flops;
    double best_s;  /* sum of calls * min_s over the row's entries */
} fm_profile_row;

/* The rows of grouping `by`, sorted by time (largest first), in a malloc'd
 * array the caller frees (*rows = NULL when there are none). Returns the
 * number of rows, or -1 when out of memory. Not for the step path. */
int fm_profile_rows(const fm_profile *p, fm_profile_by by, fm_profile_row **rows);

/* Print the rows of grouping `by` to f as an aligned text table, sorted by
 * time: name, calls, ms per step, share, GFLOP/s ("-" when no FLOPs are
 * counted), then the same two from the fastest call of each entry ("best ms",
 * "best GFLOP/s": robust to other load on the machine). Sums are divided by
 * `steps` (>= 1). share is of total_s (the
 * measured step time over the same steps; <= 0: the table's own sum). At most
 * max_rows rows (<= 0: all), then one line summing the rest. FM_ERR_INTERNAL
 * when out of memory, FM_ERR_IO when writing fails. */
int fm_profile_print(const fm_profile *p, fm_profile_by by, int steps, double total_s, int max_rows, FILE *f,
                     fm_err *e);

/* The same rows as a JSON array of objects {"name", "kind", "phase", "calls",
 * "ms_per_step", "share", "gflops", "best_ms_per_step", "best_gflops"}
 * (the gflops null without FLOPs); every row. */
int fm_profile_json(const fm_profile *p, fm_profile_by by, int steps, double total_s, FILE *f, fm_err *e);

/* ---- timing macros: no cost beyond a NULL test when prof is NULL ---------- */

#define FM_PROF_START(prof) ((prof) ? fm_now() : 0.0)

#define FM_PROF_STOP(prof, t0, scope, layer, kind, phase, flops)                              \
    do {                                                                                      \
        if (prof)                                                                             \
            fm_profile_add((prof), (scope), (layer), (kind), (phase), fm_now() - (t0), (flops)); \
    } while (0)

/* Close a site's call opened by FM_PROF_START(site) (see fm_prof_site). */
#define FM_PROF_END(site, phase, t0, flops)                                  \
    do {                                                                     \
        if (site)                                                            \
            fm_prof_site_add((site), (phase), fm_now() - (t0), (flops));     \
    } while (0)

/* A layer timing itself: `call` (an int status, FM_TRY'd) accounted to its
 * site (NULL: only the test) with `flops` (evaluated only when timed). */
#define FM_PROF_SITE_CALL(site, phase, flops, call)         \
    do {                                                    \
        const double t0_ = FM_PROF_START(site);             \
        FM_TRY(call);                                       \
        FM_PROF_END((site), (phase), t0_, (flops));         \
    } while (0)

/* Time `call`, an expression returning an int status (FM_TRY'd). */
#define FM_PROF_CALL(prof, scope, layer, kind, phase, flops, call)                \
    do {                                                                          \
        const double fm_prof_t0_ = FM_PROF_START(prof);                           \
        FM_TRY(call);                                                             \
        FM_PROF_STOP(prof, fm_prof_t0_, scope, layer, kind, phase, flops);        \
    } while (0)

/* Time `stmt`, a statement without a status. */
#define FM_PROF_VOID(prof, scope, layer, kind, phase, flops, stmt)                \
    do {                                                                          \
        const double fm_prof_t0_ = FM_PROF_START(prof);                           \
        stmt;                                                                     \
        FM_PROF_STOP(prof, fm_prof_t0_, scope, layer, kind, phase, flops);        \
    } while (0)

#endif
