/* test_profile.c - the per-layer timer table: accounting by key, capacity
 * overflow, reset, grouping by entry / scope / kind, the printers, and the
 * sites layers time themselves through. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/profile.h"
#include "test.h"

static int test_add_find(void)
{
    fm_err e = { 0 };
    fm_profile p;
    CHECK_OK(fm_profile_init(&p, 8, &e), &e);
    fm_profile_add(&p, "down.0.res.0", "conv1", "conv", FM_PROF_FWD, 0.5, 100);
    fm_profile_add(&p, "down.0.res.0", "conv1", "conv", FM_PROF_FWD, 0.25, 50);
    fm_profile_add(&p, "down.0.res.0", "conv1", "conv", FM_PROF_BWD, 1.0, 200);
    fm_profile_add(&p, "down.0.res.0", "norm1", "groupnorm", FM_PROF_FWD, 0.125, 0);
    fm_profile_add(&p, NULL, "adamw", "adamw", FM_PROF_STEP, 0.0625, 0);
    CHECK(p.n == 4, "%d entries", p.n);
    const fm_profile_entry *en = fm_profile_find(&p, "down.0.res.0", "conv1", FM_PROF_FWD);
    CHECK(en && en->calls == 2 && en->seconds == 0.75 && en->min_s == 0.25 && en->flops == 150, "conv1 fwd");
    CHECK(strcmp(en->kind, "conv") == 0, "kind %s", en->kind);
    en = fm_profile_find(&p, "", "adamw", FM_PROF_STEP);
    CHECK(en && en->calls == 1, "NULL scope is the empty scope");
    CHECK(!fm_profile_find(&p, "down.0.res.0", "conv2", FM_PROF_FWD), "absent key found");
    CHECK(fm_profile_seconds(&p, -1) == 1.9375, "total %g", fm_profile_seconds(&p, -1));
    CHECK(fm_profile_seconds(&p, FM_PROF_FWD) == 0.875, "fwd %g", fm_profile_seconds(&p, FM_PROF_FWD));
    CHECK(fm_profile_flops(&p, FM_PROF_BWD) == 200, "bwd flops");
    fm_profile_reset(&p);
    CHECK(p.n == 0 && !fm_profile_find(&p, "down.0.res.0", "conv1", FM_PROF_FWD), "reset");
    fm_profile_add(&p, "a", "b", "c", FM_PROF_FWD, 1, 0);
    CHECK(p.n == 1 && fm_profile_find(&p, "a", "b", FM_PROF_FWD)->calls == 1, "after reset");
    fm_profile_free(&p);
    fm_profile_add(&p, "a", "b", "c", FM_PROF_FWD, 1, 0); /* a freed table ignores calls */
    CHECK(fm_profile_init(&p, 0, &e) == FM_ERR_USAGE, "capacity 0 accepted");
    return 0;
}

/* Many keys through a small table: the first cap are kept, the rest counted. */
static int test_capacity(void)
{
    fm_err e = { 0 };
    fm_profile p;
    CHECK_OK(fm_profile_init(&p, 50, &e), &e);
    char scope[32];
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < 80; i++) {
            snprintf(scope, sizeof scope, "blocks.%d", i);
            fm_profile_add(&p, scope, "attn", "attention", i % 2, 1e-3, 1e6);
        }
    CHECK(p.n == 50, "%d entries", p.n);
    CHECK(p.dropped == 3 * 30, "%lld dropped", (long long)p.dropped);
    for (int i = 0; i < 50; i++) {
        snprintf(scope, sizeof scope, "blocks.%d", i);
        const fm_profile_entry *en = fm_profile_find(&p, scope, "attn", i % 2);
        CHECK(en && en->calls == 3 && en - p.e == i, "entry %d", i);
    }
    /* long names are truncated consistently: still one entry */
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    fm_profile_reset(&p);
    fm_profile_add(&p, longname, longname, longname, FM_PROF_FWD, 1, 0);
    fm_profile_add(&p, longname, longname, longname, FM_PROF_FWD, 1, 0);
    CHECK(p.n == 1 && p.e[0].calls == 2 && strlen(p.e[0].scope) == FM_PROF_SCOPE - 1, "long names");
    fm_profile_free(&p);
    return 0;
}

static int test_rows_and_print(void)
{
    fm_err e = { 0 };
    fm_profile p;
    CHECK_OK(fm_profile_init(&p, 16, &e), &e);
    fm_profile_add(&p, "mid.0", "conv1", "conv", FM_PROF_FWD, 0.2, 4e9);
    fm_profile_add(&p, "mid.0", "conv2", "conv", FM_PROF_FWD, 0.3, 6e9);
    fm_profile_add(&p, "mid.0", "norm1", "groupnorm", FM_PROF_FWD, 0.1, 0);
    fm_profile_add(&p, "mid.1", "attn", "attention", FM_PROF_FWD, 0.7, 3e9);
    fm_profile_add(&p, "mid.0", "conv1", "conv", FM_PROF_BWD, 0.8, 8e9);
    fm_profile_row *r;
    int n = fm_profile_rows(&p, FM_PROFILE_BY_SCOPE, &r);
    CHECK(n == 3, "%d scope rows", n);
    CHECK(strcmp(r[0].name, "mid.0 bwd") == 0 && strcmp(r[1].name, "mid.1 fwd") == 0, "order %s %s", r[0].name,
          r[1].name);
    CHECK(strcmp(r[2].name, "mid.0 fwd") == 0 && r[2].calls == 3 && r[2].flops == 1e10, "sum %s", r[2].name);
    CHECK(strcmp(r[2].kind, "mixed") == 0, "kind %s", r[2].kind);
    CHECK(r[0].best_s == 0.8, "best %g", r[0].best_s);
    free(r);
    n = fm_profile_rows(&p, FM_PROFILE_BY_KIND, &r);
    CHECK(n == 4 && strcmp(r[0].name, "conv bwd") == 0 && strcmp(r[2].name, "conv fwd") == 0, "kind rows");
    CHECK(r[2].seconds == 0.5, "conv fwd %g", r[2].seconds);
    free(r);
    n = fm_profile_rows(&p, FM_PROFILE_BY_ENTRY, &r);
    CHECK(n == 5 && strcmp(r[0].name, "mid.0.conv1 bwd") == 0, "entry rows %d %s", n, r[0].name);
    free(r);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f, "open_memstream");
    CHECK_OK(fm_profile_print(&p, FM_PROFILE_BY_KIND, 2, 4.0, 2, f, &e), &e);
    CHECK_OK(fm_profile_json(&p, FM_PROFILE_BY_SCOPE, 2, 4.0, f, &e), &e);
    fclose(f);
    /* conv bwd: 0.8 s over 2 steps = 400 ms, 20 % of 4 s, 10 GFLOP/s */
    CHECK(strstr(buf, "conv bwd") && strstr(buf, "400.000") && strstr(buf, "20.0%") && strstr(buf, "10.0"),
          "table:\n%s", buf);
    CHECK(strstr(buf, "(2 more)"), "rest line:\n%s", buf);
    CHECK(strstr(buf, "{\"name\": \"mid.0 bwd\", \"kind\": \"conv\", \"phase\": \"bwd\", \"calls\": 0.5, "
                      "\"ms_per_step\": 400, \"share\": 0.2, \"gflops\": 10, \"best_ms_per_step\": 400, "
                      "\"best_gflops\": 10}"),
          "json:\n%s", buf);
    free(buf);
    fm_profile_free(&p);
    return 0;
}

/* Sites: one per (scope, layer), found again on a second attach, kept by
 * reset; REDO calls go to "<layer>.recompute" of backward; the phase sums
 * follow; a full site table gives NULL and counts it. */
static int test_sites(void)
{
    fm_err e = { 0 };
    fm_profile p;
    CHECK_OK(fm_profile_init(&p, 3, &e), &e);
    fm_prof_site *a = fm_profile_site(&p, "mid.0", "norm1", "groupnorm");
    fm_prof_site *b = fm_profile_site(&p, "mid.0", "conv1", "conv");
    CHECK(a && b && a != b && p.nsite == 2, "two sites");
    CHECK(fm_profile_site(&p, "mid.0", "norm1", "other") == a && p.nsite == 2, "the same names, another site");
    fm_prof_site_add(a, FM_PROF_FWD, 0.5, 0);
    fm_prof_site_add(a, FM_PROF_REDO, 0.25, 0);
    fm_prof_site_add(b, FM_PROF_BWD, 1.0, 10);
    const fm_profile_entry *en = fm_profile_find(&p, "mid.0", "norm1.recompute", FM_PROF_BWD);
    CHECK(en && en->calls == 1 && en->seconds == 0.25 && strcmp(en->kind, "groupnorm") == 0, "recompute entry");
    CHECK(fm_profile_find(&p, "mid.0", "norm1", FM_PROF_FWD)->seconds == 0.5, "forward entry");
    CHECK(p.phase_s[FM_PROF_FWD] == 0.5 && p.phase_s[FM_PROF_BWD] == 1.25, "phase sums %g %g",
          p.phase_s[FM_PROF_FWD], p.phase_s[FM_PROF_BWD]);
    fm_profile_reset(&p);
    CHECK(p.n == 0 && p.nsite == 2 && p.phase_s[FM_PROF_BWD] == 0, "reset keeps the sites only");
    CHECK(fm_profile_site(&p, "mid.0", "conv1", "conv") == b, "site lost by reset");
    CHECK(fm_profile_site(&p, "mid.1", "attn", "attention") != NULL, "third site");
    CHECK(fm_profile_site(&p, "mid.2", "conv1", "conv") == NULL && p.dropped == 1, "a fourth site in a table of 3");
    const fm_prof_site *none = NULL;
    const double t0 = FM_PROF_START(none);
    FM_PROF_END(none, FM_PROF_FWD, t0, 1.0); /* a NULL site: nothing */
    CHECK(t0 == 0.0 && p.n == 0, "NULL site accounted");
    fm_profile_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    const fm_test tests[] = { TEST(test_add_find), TEST(test_capacity), TEST(test_rows_and_print),
                              TEST(test_sites) };
    return fm_test_main("core/profile", tests, (int)(sizeof tests / sizeof *tests), argc, argv);
}
