/* test_metrics.c - metrics.jsonl lines parse as JSON (cJSON), numbers keep
 * their value, NaN/Inf become null, appending on resume, repair of a
 * partial last line, write errors; the progress line and ETA format. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/metrics.h"
#include "test.h"

/* Read path's lines and parse each; returns the number of lines, -1 if one
 * does not parse (or does not end in a newline). */
static int parse_lines(const char *path, cJSON **out, int max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[16384];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        cJSON *j = len && line[len - 1] == '\n' ? cJSON_Parse(line) : NULL;
        if (!cJSON_IsObject(j) || n == max) {
            fprintf(stderr, "  line %d does not parse: %s", n + 1, line);
            cJSON_Delete(j);
            n = -1;
            break;
        }
        out[n++] = j;
    }
    fclose(f);
    return n;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -999;
}

static int test_lines_parse_and_append(void)
{
    fm_err e = { 0 };
    char path[] = "/tmp/fm_metrics_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    fm_metrics m;
    CHECK_OK(fm_metrics_open(&m, path, &e), &e);
    const char *keys[] = { "loss", "lr", "grad_norm", "images_per_s", "step_ms", "hidden_frac", "tokens", "odd \"key\"\n" };
    float loss = 0.412345678f;
    double vals[8] = { loss, 3e-4, NAN, 512.25, 1e-30, -INFINITY, 123456789012.0, -0.5 };
    CHECK_OK(fm_metrics_log(&m, "flow", 1200, 8, keys, vals, &e), &e);
    double v2[2] = { 1.0 / 3.0, INFINITY };
    CHECK_OK(fm_metrics_log(&m, "vae", 0, 2, keys, v2, &e), &e);
    CHECK_OK(fm_metrics_close(&m, &e), &e);
    /* resume: appended, not truncated */
    CHECK_OK(fm_metrics_open(&m, path, &e), &e);
    CHECK_OK(fm_metrics_log(&m, "flow", 1201, 0, NULL, NULL, &e), &e);
    CHECK_OK(fm_metrics_close(&m, &e), &e);
    cJSON *j[8];
    int n = parse_lines(path, j, 8);
    CHECK(n == 3, "%d lines", n);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j[0], "stage");
    CHECK(cJSON_IsString(st) && strcmp(st->valuestring, "flow") == 0 && num(j[0], "step") == 1200, "stage/step");
    CHECK((float)num(j[0], "loss") == loss, "loss %.17g does not round-trip to float %.9g", num(j[0], "loss"), loss);
    CHECK(num(j[0], "lr") == 3e-4 && num(j[0], "images_per_s") == 512.25 && num(j[0], "step_ms") == 1e-30 &&
              num(j[0], "tokens") == 123456789012.0 && num(j[0], "odd \"key\"\n") == -0.5,
          "numbers");
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j[0], "grad_norm")) &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j[0], "hidden_frac")),
          "NaN / -Inf not null");
    CHECK(fabs(num(j[1], "loss") - 1.0 / 3.0) < 1e-9 && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j[1], "lr")),
          "second line");
    CHECK(num(j[2], "step") == 1201 && cJSON_GetArraySize(j[2]) == 4, "appended line");
    /* every line ends with the UTC time and the seconds since open */
    for (int i = 0; i < n; i++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j[i], "time");
        CHECK(cJSON_IsString(t) && strlen(t->valuestring) == 24 && t->valuestring[10] == 'T' &&
                  t->valuestring[23] == 'Z' && strncmp(t->valuestring, "20", 2) == 0,
              "line %d: time not ISO 8601 UTC", i);
        CHECK(num(j[i], "elapsed_s") >= 0 && num(j[i], "elapsed_s") < 60, "line %d: elapsed_s %g", i,
              num(j[i], "elapsed_s"));
    }
    for (int i = 0; i < n; i++)
        cJSON_Delete(j[i]);
    unlink(path);
    return 0;
}

static int test_partial_line_repaired(void)
{
    fm_err e = { 0 };
    char path[] = "/tmp/fm_metrics_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    const char *old = "{\"stage\":\"flow\",\"step\":1}\n{\"stage\":\"flow\",\"st"; /* crashed mid-line */
    CHECK(write(fd, old, strlen(old)) == (ssize_t)strlen(old), "write");
    close(fd);
    fm_metrics m;
    CHECK_OK(fm_metrics_open(&m, path, &e), &e);
    const char *k = "loss";
    double v = 0.25;
    CHECK_OK(fm_metrics_log(&m, "flow", 2, 1, &k, &v, &e), &e);
    CHECK_OK(fm_metrics_close(&m, &e), &e);
    FILE *f = fopen(path, "r");
    char line[256];
    int n = 0, ok_last = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        cJSON *j = cJSON_Parse(line);
        ok_last = cJSON_IsObject(j) && num(j, "step") == 2 && num(j, "loss") == 0.25;
        cJSON_Delete(j);
    }
    fclose(f);
    CHECK(n == 3 && ok_last, "%d lines, last parses %d", n, ok_last);
    unlink(path);
    return 0;
}

static int test_errors(void)
{
    fm_err e = { 0 };
    fm_metrics m = { 0 };
    const char *k = "loss";
    double v = 1;
    CHECK_OK(fm_metrics_log(&m, "flow", 1, 1, &k, &v, &e), &e); /* not open: a no-op (ranks > 0) */
    CHECK(fm_metrics_open(&m, "/nonexistent-dir/metrics.jsonl", &e) == FM_ERR_IO &&
              strstr(e.msg, "/nonexistent-dir/metrics.jsonl"),
          "%s", e.msg);
    /* a full disk */
    CHECK_OK(fm_metrics_open(&m, "/dev/full", &e), &e);
    CHECK(fm_metrics_log(&m, "flow", 1, 1, &k, &v, &e) == FM_ERR_IO && strstr(e.msg, "/dev/full"), "%s", e.msg);
    fm_metrics_close(&m, &e);
    /* a line longer than the buffer */
    char path[] = "/tmp/fm_metrics_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    enum { N = 1000 };
    const char *keys[N];
    double vals[N];
    for (int i = 0; i < N; i++) {
        keys[i] = "a_rather_long_metric_name";
        vals[i] = i;
    }
    CHECK_OK(fm_metrics_open(&m, path, &e), &e);
    CHECK(fm_metrics_log(&m, "flow", 1, N, keys, vals, &e) == FM_ERR_INTERNAL, "overflow not reported");
    CHECK_OK(fm_metrics_close(&m, &e), &e);
    FILE *f = fopen(path, "r");
    CHECK(f && fgetc(f) == EOF, "a partial line was written");
    fclose(f);
    unlink(path);
    return 0;
}

static int test_progress_line(void)
{
    char buf[256], d[32];
    fm_progress p = { .stage = "flow", .step = 1200, .total = 6000, .loss = 0.41234, .images_per_s = 512.3,
                      .mfu = 0.414, .eta_s = 192.2, .stage_i = 3, .stage_n = 5, .run_eta_s = 580 };
    fm_progress_format(buf, sizeof buf, &p);
    CHECK(strcmp(buf, "flow  step 1200/6000  loss 0.4123  512 img/s  MFU 41%  ETA 3m12s  stage 3/5, run ETA 9m40s") ==
              0,
          "got \"%s\"", buf);
    p.mfu = NAN; /* unknown peak: no MFU; no stage list: no run part */
    p.stage_n = 0;
    fm_progress_format(buf, sizeof buf, &p);
    CHECK(strcmp(buf, "flow  step 1200/6000  loss 0.4123  512 img/s  ETA 3m12s") == 0, "got \"%s\"", buf);
    const struct {
        double s;
        const char *want;
    } cases[] = { { 0, "0s" },        { 45.4, "45s" },      { 59.6, "1m00s" }, { 192, "3m12s" },
                  { 3599, "59m59s" }, { 3600, "1h00m" },    { 7530, "2h05m" }, { 90000, "25h00m" },
                  { -1, "?" },        { NAN, "?" },         { INFINITY, "?" } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(strcmp(fm_format_duration(cases[i].s, d, sizeof d), cases[i].want) == 0, "%g s -> %s, want %s",
              cases[i].s, d, cases[i].want);
    fm_progress q = { .stage = "flow", .step = 1, .total = 10, .loss = NAN, .mfu = INFINITY, .eta_s = INFINITY,
                      .stage_i = 1, .stage_n = 1, .run_eta_s = NAN };
    fm_progress_format(buf, 8, &q); /* short buffer, odd numbers: must not crash */
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_lines_parse_and_append),
        TEST(test_partial_line_repaired),
        TEST(test_errors),
        TEST(test_progress_line),
    };
    return fm_test_main("io/metrics", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
