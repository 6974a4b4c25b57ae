/* test_config.c - the typed configuration: defaults, the files in configs/,
 * dump -> load round trips, overrides, and one test per kind of error with
 * its exact "file:line:col: key: ..." message. Run from the repository root
 * (tests/run.sh does): it reads configs/ and docs/config.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtest.h"

/* Dump c to memory, load it back, compare. */
static int round_trip(const fm_config *c, fm_err *e)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL, "open_memstream");
    CHECK_OK(fm_config_dump(c, f, e), e);
    fclose(f);
    fm_config back;
    int rc = fm_config_load_string(&back, text, len, "dump.yaml", e);
    if (rc != FM_OK)
        fprintf(stderr, "  dump that failed to load:\n%s\n", text);
    free(text);
    CHECK_OK(rc, e);
    CHECK(fm_config_equal(c, &back), "round trip changed the configuration");
    return 0;
}

static int test_defaults(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    CHECK(!strcmp(c.run.out, "runs/default"), "run.out %s", c.run.out);
    CHECK(!strcmp(c.data.dir, "/usr/share/datasets/fashion-mnist"), "data.dir %s", c.data.dir);
    CHECK(c.run.stages.n == 5, "stages %d", c.run.stages.n);
    static const int want[5] = { FM_STAGE_VAE, FM_STAGE_ENCODE, FM_STAGE_FLOW, FM_STAGE_SAMPLE, FM_STAGE_EVAL };
    for (int i = 0; i < 5; i++) /* reflow is not a default stage */
        CHECK(c.run.stages.v[i] == want[i], "stage %d is %d", i, c.run.stages.v[i]);
    CHECK(c.sample.classifier_scale == 0 && c.guide.time_dim == 8, "classifier guidance is off by default");
    CHECK(c.run.ckpt_keep == 3 && c.run.precision == FM_PRECISION_AUTO, "run");
    CHECK(c.sample.sampler == 1 /* heun */ && c.sample.steps == 10 && c.flow.train.steps == 3000, "the recipe");
    CHECK(c.vae.latent_channels == 4 && c.vae.channels.n == 3 && c.vae.channels.v[2] == 64, "vae");
    CHECK(c.flow.train.lr == 1e-3 && c.flow.model == FM_MODEL_UNET && c.flow.latent, "flow");
    CHECK(c.flow.cfg_dropout == 0.1 && c.flow.train.beta2 == 0.999, "flow");
    CHECK(c.sample.cfg.n == 3 && c.sample.cfg.v[2] == 5.0, "sample.cfg");
    CHECK(c.unet.attn_res.n == 1 && c.unet.attn_res.v[0] == 4, "unet.attn_res");
    CHECK_OK(fm_config_validate(&c, &e), &e);
    CHECK_OK(fm_config_check_world(&c, 1, &e), &e);
    CHECK_OK(fm_config_check_world(&c, 2, &e), &e);
    CHECK(round_trip(&c, &e) == 0, "round trip");
    return 0;
}

static int test_config_files_load(void)
{
    fm_err e = { 0 };
    for (size_t i = 0; i < sizeof config_files / sizeof config_files[0]; i++) {
        fm_config c;
        CHECK_OK(fm_config_load(&c, config_files[i], &e), &e);
        CHECK_OK(fm_config_validate(&c, &e), &e);
        CHECK_OK(fm_config_check_world(&c, 1, &e), &e);
        char want[64];
        const char *stem = strrchr(config_files[i], '/') + 1;
        snprintf(want, sizeof want, "runs/%.*s", (int)(strchr(stem, '.') - stem), stem);
        CHECK(!strcmp(c.run.out, want), "%s: run.out %s, want %s", config_files[i], c.run.out, want);
        CHECK(round_trip(&c, &e) == 0, "%s round trip", config_files[i]);
    }
    fm_config c;
    CHECK_OK(fm_config_load(&c, "configs/pixel.yaml", &e), &e);
    CHECK(!c.flow.latent && !fm_config_has_stage(&c, FM_STAGE_VAE) && !fm_config_has_stage(&c, FM_STAGE_ENCODE),
          "pixel.yaml trains on pixels");
    CHECK_OK(fm_config_load(&c, "configs/dit.yaml", &e), &e);
    CHECK(c.flow.model == FM_MODEL_DIT, "dit.yaml model");
    CHECK_OK(fm_config_load(&c, "configs/scaling.yaml", &e), &e);
    CHECK(c.run.stages.n == 1 && c.run.stages.v[0] == FM_STAGE_FLOW, "scaling.yaml is flow-only");
    return 0;
}

/* ldm.yaml is the default job: its values are the table's defaults, and it
 * and tiny.yaml set every key explicitly. */
static int test_ldm_is_default_and_complete(void)
{
    fm_err e = { 0 };
    fm_config ldm, def;
    CHECK_OK(fm_config_load(&ldm, "configs/ldm.yaml", &e), &e);
    CHECK_OK(fm_config_defaults(&def, &e), &e);
    snprintf(def.run.out, sizeof def.run.out, "runs/ldm");
    CHECK(fm_config_equal(&ldm, &def), "configs/ldm.yaml differs from the table defaults");
    int n;
    const fm_cfg_key *k = fm_config_keys(&n);
    const char *files[] = { "configs/ldm.yaml", "configs/tiny.yaml" };
    for (int f = 0; f < 2; f++) {
        fm_config c;
        CHECK_OK(fm_config_load(&c, files[f], &e), &e);
        for (int i = 0; i < n; i++)
            CHECK(c.origin[i].how == FM_CFG_FROM_FILE && c.origin[i].line > 0, "%s does not set %s", files[f],
                  k[i].name);
    }
    return 0;
}

static int test_types_and_forms(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(load_text(&c,
                       "run:\n"
                       "  stages:\n"
                       "    - flow\n"
                       "    - sample\n"
                       "  out: \"/tmp/a \\\"b\\\"\"\n"
                       "flow.lr: .5e-3\n" /* dotted key at the top level */
                       "flow:\n"
                       "  latent: False\n"
                       "  t_mean: -1\n"
                       "sample:\n"
                       "  cfg: 2\n" /* a scalar is a one-element list */
                       "unet:\n"
                       "  channels: [32, 64, 128]\n"
                       "  attn_res: []\n"
                       "eval:\n",
                       &e),
             &e);
    CHECK(c.run.stages.n == 2 && c.run.stages.v[0] == FM_STAGE_FLOW && c.run.stages.v[1] == FM_STAGE_SAMPLE,
          "block list");
    CHECK(!strcmp(c.run.out, "/tmp/a \"b\""), "run.out %s", c.run.out);
    CHECK(c.flow.train.lr == 0.5e-3 && !c.flow.latent && c.flow.t_mean == -1, "flow");
    CHECK(c.sample.cfg.n == 1 && c.sample.cfg.v[0] == 2, "scalar as list");
    CHECK(c.unet.channels.n == 3 && c.unet.attn_res.n == 0, "unet lists");
    CHECK(c.origin[fm_config_key_index("flow.lr")].line == 6, "origin line of flow.lr");
    CHECK_OK(fm_config_validate(&c, &e), &e);
    CHECK(round_trip(&c, &e) == 0, "round trip");

    /* an empty file is all defaults, with run.out from its name */
    CHECK_OK(fm_config_load_string(&c, "", 0, "dir/empty.yaml", &e), &e);
    CHECK(!strcmp(c.run.out, "runs/empty"), "run.out %s", c.run.out);
    CHECK_OK(load_text(&c, "# only a comment\n", &e), &e);
    return 0;
}

static int yaml_line(const char *path, const char *section, const char *key);

static int test_overrides(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_load(&c, "configs/tiny.yaml", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.steps=40", &e), &e);
    CHECK_OK(fm_config_set(&c, "run.seed=3", &e), &e);
    CHECK_OK(fm_config_set(&c, "sample.cfg=[0, 1.5,7]", &e), &e);
    CHECK_OK(fm_config_set(&c, "run.stages=[flow, sample]", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.path=cosine", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.ema_warmup=false", &e), &e);
    CHECK_OK(fm_config_set(&c, "data.dir=/tmp/x: y #z", &e), &e); /* strings verbatim */
    CHECK_OK(fm_config_set_out(&c, "/tmp/r", &e), &e);
    CHECK(c.flow.train.steps == 40 && c.run.seed == 3, "ints");
    CHECK(c.sample.cfg.n == 3 && c.sample.cfg.v[1] == 1.5 && c.sample.cfg.v[2] == 7, "float list");
    CHECK(c.run.stages.n == 2 && c.flow.path == 1 && !c.flow.ema_warmup, "enums");
    CHECK(!strcmp(c.data.dir, "/tmp/x: y #z"), "data.dir %s", c.data.dir);
    CHECK(!strcmp(c.run.out, "/tmp/r"), "run.out %s", c.run.out);
    CHECK_OK(fm_config_validate(&c, &e), &e);
    CHECK(round_trip(&c, &e) == 0, "round trip");
    char where[256];
    fm_config_where(&c, "flow.steps", where, sizeof where);
    CHECK(!strcmp(where, "--set flow.steps=40"), "where %s", where);
    fm_config_where(&c, "flow.lr", where, sizeof where);
    char want[64];
    snprintf(want, sizeof want, "configs/tiny.yaml:%d:7", yaml_line("configs/tiny.yaml", "flow", "lr"));
    CHECK(!strcmp(where, want), "where %s, expected %s", where, want); /* flow: lr: of tiny.yaml */
    return 0;
}

/* The line of "  <key>:" inside section "<section>:" of a YAML file, or 0. */
static int yaml_line(const char *path, const char *section, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512], want_s[64], want_k[64];
    snprintf(want_s, sizeof want_s, "%s:", section);
    snprintf(want_k, sizeof want_k, "  %s:", key);
    int n = 0, in = 0, found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        n++;
        if (line[0] != ' ' && line[0] != '#' && line[0] != '\n')
            in = !strncmp(line, want_s, strlen(want_s));
        else if (in && !strncmp(line, want_k, strlen(want_k)))
            found = n;
    }
    fclose(f);
    return found;
}

/* Strings with quotes, backslashes, control characters and UTF-8, and
 * floats that need 17 digits, survive dump -> load. */
static int test_round_trip_hard_values(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    CHECK_OK(fm_config_set(&c, "run.out=/tmp/a\"b\\c\td 'é' [x]: #y", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.lr=0.1", &e), &e);
    CHECK_OK(fm_config_set(&c, "vae.lr=3.0000000000000004e-4", &e), &e);
    CHECK_OK(fm_config_set(&c, "vae.kl_weight=1e-300", &e), &e);
    CHECK_OK(fm_config_set(&c, "sample.cfg=[0.30000000000000004, 1e2, 0]", &e), &e);
    CHECK(c.vae.train.lr == 3.0000000000000004e-4, "parse");
    CHECK(round_trip(&c, &e) == 0, "round trip");
    return 0;
}

/* ---- errors: one test per kind, exact messages ---- */

static int test_err_unknown_key(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "flow:\n  steps: 10\n  lrr: 1e-3\n", &e), &e,
              "t.yaml:3:3: flow.lrr: unknown key (did you mean flow.lr?)");
    CHECK_ERR(load_text(&c, "run:\n  seed: 1\nflow.lrr: 1\n", &e), &e,
              "t.yaml:3:1: flow.lrr: unknown key (did you mean flow.lr?)");
    CHECK_ERR(load_text(&c, "flw:\n  lr: 1\n", &e), &e, "t.yaml:1:1: flw: unknown section (did you mean flow?)");
    CHECK_ERR(load_text(&c, "flow:\n  channels: [1]\n", &e), &e,
              "t.yaml:2:3: flow.channels: unknown key (did you mean vae.channels?)");
    CHECK_ERR(load_text(&c, "zzzzzzzz: 1\n", &e), &e, "t.yaml:1:1: zzzzzzzz: unknown section");
    return 0;
}

static int test_err_wrong_type(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "flow:\n  lr: fast\n", &e), &e, "t.yaml:2:7: flow.lr: expected a number, got \"fast\"");
    CHECK_ERR(load_text(&c, "flow:\n  steps: 1.5\n", &e), &e,
              "t.yaml:2:10: flow.steps: expected an integer, got \"1.5\"");
    CHECK_ERR(load_text(&c, "flow:\n  steps: \"10\"\n", &e), &e,
              "t.yaml:2:10: flow.steps: expected an integer, got the quoted string \"10\"");
    CHECK_ERR(load_text(&c, "flow:\n  latent: yes\n", &e), &e,
              "t.yaml:2:11: flow.latent: expected true or false, got \"yes\"");
    CHECK_ERR(load_text(&c, "flow:\n  lr:\n", &e), &e, "t.yaml:2:6: flow.lr: expected a number, got nothing");
    CHECK_ERR(load_text(&c, "flow:\n  lr: [1]\n", &e), &e, "t.yaml:2:7: flow.lr: expected a number, got a list");
    CHECK_ERR(load_text(&c, "data:\n  dir: [a]\n", &e), &e, "t.yaml:2:8: data.dir: expected a string, got a list");
    CHECK_ERR(load_text(&c, "unet:\n  channels: {a: 1}\n", &e), &e,
              "t.yaml:2:13: unet.channels: expected a list of integers, got a mapping");
    CHECK_ERR(load_text(&c, "flow:\n  lr: .inf\n", &e), &e, "t.yaml:2:7: flow.lr: expected a number, got \".inf\"");
    return 0;
}

static int test_err_out_of_range(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "flow:\n  cfg_dropout: 1.5\n", &e), &e,
              "t.yaml:2:16: flow.cfg_dropout: 1.5 is out of range [0, 1]");
    CHECK_ERR(load_text(&c, "flow:\n  lr: 0\n", &e), &e, "t.yaml:2:7: flow.lr: 0 is out of range (0, 10]");
    CHECK_ERR(load_text(&c, "run:\n  ckpt_keep: 0\n", &e), &e, "t.yaml:2:14: run.ckpt_keep: 0 is out of range [1, 1000]");
    CHECK_ERR(load_text(&c, "run:\n  seed: 99999999999999999999\n", &e), &e,
              "t.yaml:2:9: run.seed: 99999999999999999999 is out of range [0, 2147483647]");
    CHECK_ERR(load_text(&c, "data:\n  dir: \"\"\n", &e), &e, "t.yaml:2:8: data.dir: must not be empty");
    return 0;
}

static int test_err_bad_enum(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "flow:\n  path: quadratic\n", &e), &e,
              "t.yaml:2:9: flow.path: expected one of linear, cosine, got \"quadratic\"");
    CHECK_ERR(load_text(&c, "sample:\n  sampler: rk4\n", &e), &e,
              "t.yaml:2:12: sample.sampler: expected one of euler, heun, sde, got \"rk4\"");
    return 0;
}

static int test_err_malformed_yaml(void)
{
    fm_err e = { 0 };
    fm_config c;
    int rc = load_text(&c, "flow:\n  lr: [1, 2\n  steps: 3\n", &e);
    CHECK(rc == FM_ERR_USAGE, "code %d", rc);
    CHECK(!strncmp(e.msg, "t.yaml:", 7) && strstr(e.msg, ": malformed YAML: "), "message %s", e.msg);
    rc = load_text(&c, "flow:\n  lr: 1\n bad: 2\n", &e);
    CHECK(rc == FM_ERR_USAGE && !strncmp(e.msg, "t.yaml:3:", 9) && strstr(e.msg, "malformed YAML: "), "message %s",
          e.msg);
    rc = load_text(&c, "a: \"unterminated\n", &e);
    CHECK(rc == FM_ERR_USAGE && strstr(e.msg, "malformed YAML: "), "message %s", e.msg);
    CHECK_ERR(load_text(&c, "[1, 2]\n", &e), &e,
              "t.yaml:1:1: expected a mapping of sections (run:, data:, ...), got a list");
    CHECK_ERR(load_text(&c, "flow:\n  lr: 1\n---\nflow:\n  lr: 2\n", &e), &e,
              "t.yaml:3:1: expected one YAML document, found a second");
    CHECK_ERR(load_text(&c, "flow: 3\n", &e), &e, "t.yaml:1:7: flow: expected a mapping of flow.* keys, got \"3\"");
    CHECK_ERR(load_text(&c, "flow:\n  - lr\n", &e), &e, "t.yaml:2:3: flow: expected a mapping of flow.* keys, got a list");
    return 0;
}

static int test_err_duplicate_key(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "flow:\n  lr: 1e-3\n  steps: 4\n  lr: 2e-3\n", &e), &e,
              "t.yaml:4:3: flow.lr: duplicate key (first set at line 2)");
    CHECK_ERR(load_text(&c, "flow:\n  lr: 1e-3\nflow.lr: 2e-3\n", &e), &e,
              "t.yaml:3:1: flow.lr: duplicate key (first set at line 2)");
    CHECK_ERR(load_text(&c, "flow:\n  lr: 1e-3\nrun:\n  seed: 1\nflow:\n  steps: 3\n", &e), &e,
              "t.yaml:5:1: flow: duplicate section (first at line 1)");
    return 0;
}

static int test_err_bad_list_element(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(load_text(&c, "unet:\n  channels: [64, x, 128]\n", &e), &e,
              "t.yaml:2:18: unet.channels[1]: expected an integer, got \"x\"");
    CHECK_ERR(load_text(&c, "run:\n  stages:\n    - vae\n    - train\n", &e), &e,
              "t.yaml:4:7: run.stages[1]: expected one of vae, encode, guide, flow, reflow, sample, eval, got \"train\"");
    CHECK_ERR(load_text(&c, "sample:\n  cfg: [1, -2]\n", &e), &e, "t.yaml:2:12: sample.cfg[1]: -2 is out of range [0, 100]");
    CHECK_ERR(load_text(&c, "sample:\n  cfg: [1, [2]]\n", &e), &e,
              "t.yaml:2:12: sample.cfg[1]: expected a number, got a list");
    CHECK_ERR(load_text(&c, "run:\n  stages: []\n", &e), &e,
              "t.yaml:2:11: run.stages: expected at least 1 element, got 0");
    CHECK_ERR(load_text(&c, "unet:\n  channels: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]\n", &e), &e,
              "t.yaml:2:13: unet.channels: at most 16 elements, got 17");
    return 0;
}

static int test_err_set_syntax(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    CHECK_ERR(fm_config_set(&c, "flowlr", &e), &e, "--set flowlr: expected section.key=value");
    CHECK_ERR(fm_config_set(&c, "=3", &e), &e, "--set =3: expected section.key=value");
    int rc = fm_config_set(&c, "sample.cfg=[1, 2", &e);
    CHECK(rc == FM_ERR_USAGE && !strncmp(e.msg, "--set sample.cfg=[1, 2: sample.cfg: malformed value: ", 53),
          "message %s", e.msg);
    return 0;
}

static int test_err_set_unknown_key(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    CHECK_ERR(fm_config_set(&c, "flow.lrr=1", &e), &e, "--set flow.lrr=1: flow.lrr: unknown key (did you mean flow.lr?)");
    CHECK_ERR(fm_config_set(&c, "lr=1", &e), &e, "--set lr=1: lr: unknown key (did you mean vae.lr?)");
    return 0;
}

static int test_err_set_wrong_type(void)
{
    fm_err e = { 0 };
    fm_config c, before;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    before = c;
    CHECK_ERR(fm_config_set(&c, "flow.lr=fast", &e), &e, "--set flow.lr=fast: flow.lr: expected a number, got \"fast\"");
    CHECK_ERR(fm_config_set(&c, "flow.steps=", &e), &e, "--set flow.steps=: flow.steps: expected an integer, got nothing");
    CHECK_ERR(fm_config_set(&c, "flow.cfg_dropout=2", &e), &e, "--set flow.cfg_dropout=2: flow.cfg_dropout: 2 is out of range [0, 1]");
    CHECK_ERR(fm_config_set(&c, "unet.channels=[64, big]", &e), &e,
              "--set unet.channels=[64, big]: unet.channels[1]: expected an integer, got \"big\"");
    CHECK_ERR(fm_config_set(&c, "flow.model=a: b", &e), &e,
              "--set flow.model=a: b: flow.model: expected one of unet, dit, got a mapping");
    CHECK_ERR(fm_config_set_out(&c, "", &e), &e, "--out : run.out: must not be empty");
    CHECK(fm_config_equal(&c, &before), "a failed override changed the configuration");
    return 0;
}

static int test_err_missing_file(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_ERR(fm_config_load(&c, "/nonexistent/x.yaml", &e), &e,
              "/nonexistent/x.yaml: cannot open config file: No such file or directory");
    int rc = fm_config_load(&c, "configs", &e);
    CHECK(rc == FM_ERR_USAGE && strstr(e.msg, "configs: the config is not a regular file"), "directory: %d %s", rc, e.msg);
    return 0;
}

/* Cross-key checks name the key and where it was set (the architectures'
 * checks are the models', tests/models/test_build.c). */
static int test_err_cross_checks(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(load_text(&c, "run:\n  stages: [flow, vae]\n", &e), &e);
    CHECK_ERR(fm_config_validate(&c, &e), &e,
              "t.yaml:2:11: run.stages: vae must come before flow; stages run in the order vae, encode, guide, flow, reflow, sample, eval");
    CHECK_OK(load_text(&c, "run:\n  stages: [flow, flow]\n", &e), &e);
    CHECK_ERR(fm_config_validate(&c, &e), &e, "t.yaml:2:11: run.stages: flow is listed twice");
    CHECK_OK(load_text(&c, "flow:\n  latent: false\n", &e), &e);
    CHECK_ERR(fm_config_validate(&c, &e), &e,
              "t.yaml: run.stages: vae is not used when flow.latent is false (the flow trains on pixels)");
    CHECK_OK(load_text(&c, "flow:\n  steps: 100\n", &e), &e);
    CHECK_ERR(fm_config_validate(&c, &e), &e, "t.yaml: flow.warmup: 200 is more than flow.steps = 100");
    CHECK_OK(fm_config_set(&c, "flow.warmup=0", &e), &e);
    CHECK_OK(fm_config_validate(&c, &e), &e);
    CHECK_ERR(fm_config_check_world(&c, 3, &e), &e,
              "t.yaml: vae.batch_size: 128 does not split evenly over 3 ranks (batch sizes are global): use a "
              "multiple of 3, or set dist.batch: per_rank to give the batch of one rank");
    return 0;
}

/* dist.batch: per_rank: every batch times the ranks, learning rates by
 * dist.lr_scale; global batches too large are refused naming the key. */
static int test_per_rank_batches(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(load_text(&c, "dist:\n  batch: per_rank\n  lr_scale: linear\nflow:\n  batch_size: 5\n  lr: 1e-3\n", &e), &e);
    CHECK_OK(fm_config_check_world(&c, 3, &e), &e); /* per-rank batches always split */
    fm_config g = c;
    CHECK_OK(fm_config_apply_world(&g, 3, &e), &e);
    CHECK(g.flow.train.batch_size == 15 && g.vae.train.batch_size == 3 * c.vae.train.batch_size,
          "global batches %d, %d", g.flow.train.batch_size, g.vae.train.batch_size);
    CHECK(fabs(g.flow.train.lr - 3e-3) < 1e-12 && fabs(g.eval.classifier_lr - 3 * c.eval.classifier_lr) < 1e-12,
          "linear lr %g", g.flow.train.lr);
    CHECK_OK(fm_config_set(&c, "dist.lr_scale=sqrt", &e), &e);
    g = c;
    CHECK_OK(fm_config_apply_world(&g, 4, &e), &e);
    CHECK(fabs(g.flow.train.lr - 2e-3) < 1e-12 && g.flow.train.batch_size == 20, "sqrt lr %g", g.flow.train.lr);
    g = c;
    CHECK_OK(fm_config_apply_world(&g, 1, &e), &e);
    CHECK(g.flow.train.batch_size == 5 && g.flow.train.lr == 1e-3, "one rank changed the config");
    CHECK_OK(fm_config_set(&c, "flow.batch_size=600000", &e), &e);
    g = c;
    CHECK_ERR(fm_config_apply_world(&g, 2, &e), &e,
              "--set flow.batch_size=600000: flow.batch_size: 600000 per rank x 2 ranks exceeds the largest global "
              "batch, 1048576");
    CHECK_OK(fm_config_set(&c, "dist.batch=global", &e), &e);
    g = c;
    CHECK_OK(fm_config_apply_world(&g, 2, &e), &e);
    CHECK(g.flow.train.batch_size == 600000 && g.flow.train.lr == 1e-3, "global mode changed the config");
    return 0;
}

/* docs/config.md holds the reference generated from the table, verbatim. */
static int test_docs_cover_every_key(void)
{
    fm_err e = { 0 };
    char *ref = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&ref, &len);
    CHECK_OK(fm_config_reference(f, &e), &e);
    fclose(f);
    FILE *d = fopen("docs/config.md", "rb");
    CHECK(d != NULL, "cannot open docs/config.md (run from the repository root)");
    char *doc = malloc(1 << 20);
    size_t n = fread(doc, 1, (1 << 20) - 1, d);
    fclose(d);
    doc[n] = '\0';
    int ok = strstr(doc, ref) != NULL;
    if (!ok) { /* name the first row that is missing or stale */
        for (char *line = strtok(ref, "\n"); line; line = strtok(NULL, "\n"))
            if (!strstr(doc, line)) {
                fprintf(stderr, "  docs/config.md lacks: %s\n", line);
                break;
            }
        fprintf(stderr, "  regenerate the reference with: ./fmtrain --keys\n");
    }
    free(doc);
    free(ref);
    CHECK(ok, "docs/config.md does not contain the reference of every key");
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_defaults),
        TEST(test_config_files_load),
        TEST(test_ldm_is_default_and_complete),
        TEST(test_types_and_forms),
        TEST(test_overrides),
        TEST(test_round_trip_hard_values),
        TEST(test_err_unknown_key),
        TEST(test_err_wrong_type),
        TEST(test_err_out_of_range),
        TEST(test_err_bad_enum),
        TEST(test_err_malformed_yaml),
        TEST(test_err_duplicate_key),
        TEST(test_err_bad_list_element),
        TEST(test_err_set_syntax),
        TEST(test_err_set_unknown_key),
        TEST(test_err_set_wrong_type),
        TEST(test_err_missing_file),
        TEST(test_err_cross_checks), TEST(test_per_rank_batches),
        TEST(test_docs_cover_every_key),
    };
    return fm_test_main("config", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
