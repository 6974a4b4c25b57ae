/* test_build.c - the configuration turned into models (build.h): the flow's
 * input shape, the cfgs, parameter tables, and fm_build_validate, whose
 * architecture errors are the models' own checks placed where the key at
 * fault was set ("file:line:col: key: ..."). Run from the repository root
 * (tests/run.sh does): it reads configs/. */
#include <stdio.h>
#include <string.h>

#include "cfgtest.h"
#include "fm/build.h"

static int test_shapes_and_cfgs(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(fm_config_defaults(&c, &e), &e);
    int side, ch;
    fm_build_flow_shape(&c, &side, &ch);
    CHECK(side == 8 && ch == 4, "flow input %dx%dx%d", side, side, ch);
    fm_vae_cfg v;
    fm_build_vae_cfg(&c, &v);
    CHECK(v.size == 32 && v.in_ch == 1 && v.levels == 3 && v.channels[2] == 64 && v.latent_ch == 4 &&
              fm_vae_latent_hw(&v) == 8, "vae cfg");
    fm_flow_model_cfg f;
    fm_build_flow_cfg(&c, &f);
    CHECK(f.kind == FM_FLOW_UNET && f.unet.size == 8 && f.unet.in_ch == 4 && f.unet.levels == 2 &&
              f.unet.channels[1] == 128 && f.unet.n_attn == 1 && f.unet.attn_res[0] == 4 &&
              f.unet.num_classes == FM_NUM_CLASSES, "unet cfg");
    CHECK_OK(fm_config_set(&c, "flow.latent=false", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.model=dit", &e), &e);
    fm_build_flow_shape(&c, &side, &ch);
    CHECK(side == 32 && ch == 1, "pixel flow input %dx%dx%d", side, side, ch);
    fm_build_flow_cfg(&c, &f);
    CHECK(f.kind == FM_FLOW_DIT && f.dit.size == 32 && f.dit.in_ch == 1 && f.dit.width == 256, "dit cfg");
    fm_params p;
    CHECK_OK(fm_build_flow_params(&p, &c, &e), &e);
    int tensors = 0;
    size_t numel = 0;
    CHECK_OK(fm_flow_model_size(&f, &tensors, &numel, NULL, &e), &e);
    CHECK(p.cap == tensors && p.seed == (uint64_t)c.run.seed, "flow params");
    fm_params_free(&p);
    return 0;
}

static int test_config_files_validate(void)
{
    fm_err e = { 0 };
    for (size_t i = 0; i < sizeof config_files / sizeof config_files[0]; i++) {
        fm_config c;
        CHECK_OK(fm_config_load(&c, config_files[i], &e), &e);
        CHECK_OK(fm_build_validate(&c, &e), &e);
    }
    return 0;
}

/* The models' checks name the key; fm_build_validate places it. */
static int test_err_architecture(void)
{
    fm_err e = { 0 };
    fm_config c;
    CHECK_OK(load_text(&c, "unet:\n  channels: [64, 100]\n  groups: 8\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:3:11: unet.groups: 8 does not divide unet.channels[1] = 100 (GroupNorm groups)");
    CHECK_OK(load_text(&c, "unet:\n  heads: 3\n  groups: 1\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:2:10: unet.heads: 3 does not divide unet.channels[1] = 128 (a level with attention)");
    CHECK_OK(load_text(&c, "unet:\n  attn_res: [16]\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:2:13: unet.attn_res: 16 is not the side of a U-Net level (levels: 8, 4)");
    CHECK_OK(load_text(&c, "unet:\n  channels: [8, 8, 8, 8, 8]\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:2:13: unet.channels: 5 levels halve the 8x8 flow input 4 times (at most 4 levels fit)");
    CHECK_OK(load_text(&c, "unet:\n  channels: [15, 16]\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:2:13: unet.channels: unet.channels[0] = 15 must be even (sinusoidal time features)");
    /* a concatenation the level widths do not show: 16 + 8 channels into 16 groups */
    CHECK_OK(load_text(&c, "unet:\n  channels: [8, 16]\n  groups: 16\n  attn_res: []\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:3:11: unet.groups: 16 does not divide the 24 channels of up.1.res.1 input (GroupNorm groups)");
    CHECK_OK(load_text(&c, "vae:\n  channels: [16, 32, 64, 64, 64]\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "t.yaml:2:13: vae.channels: 5 levels, at most 4 (the side halves after each level but the last)");
    CHECK_OK(load_text(&c, "vae:\n  groups: 3\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e, "t.yaml:2:11: vae.groups: 3 does not divide vae.channels[0] = 16 (GroupNorm groups)");
    /* the configuration's own checks come first */
    CHECK_OK(load_text(&c, "flow:\n  steps: 100\nunet:\n  groups: 3\n", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e, "t.yaml: flow.warmup: 200 is more than flow.steps = 100");
    CHECK_OK(fm_config_set(&c, "flow.warmup=0", &e), &e);
    CHECK_OK(fm_config_set(&c, "unet.groups=8", &e), &e);
    CHECK_OK(fm_config_set(&c, "flow.model=dit", &e), &e);
    CHECK_OK(fm_config_set(&c, "dit.heads=3", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e, "--set dit.heads=3: dit.heads: 3 does not divide dit.width = 256");
    CHECK_OK(fm_config_set(&c, "dit.heads=4", &e), &e);
    CHECK_OK(fm_config_set(&c, "dit.patch=3", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "--set dit.patch=3: dit.patch: 3 does not divide the side of the 8x8 flow input");
    CHECK_OK(fm_config_set(&c, "dit.patch=4", &e), &e);
    CHECK_OK(fm_config_set(&c, "dit.width=18", &e), &e);
    CHECK_OK(fm_config_set(&c, "dit.heads=2", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "--set dit.width=18: dit.width: 18 is not a multiple of 4 (2-D sin-cos position embedding)");
    CHECK_OK(fm_config_set(&c, "dit.width=20", &e), &e);
    CHECK_OK(fm_config_set(&c, "dit.mlp_ratio=1.01", &e), &e);
    CHECK_ERR(fm_build_validate(&c, &e), &e,
              "--set dit.mlp_ratio=1.01: dit.mlp_ratio: 1.01 * dit.width = 20.2 is not a whole number of channels");
    CHECK_OK(fm_config_set(&c, "dit.mlp_ratio=1.5", &e), &e);
    CHECK_OK(fm_build_validate(&c, &e), &e);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_shapes_and_cfgs),
        TEST(test_config_files_validate),
        TEST(test_err_architecture),
    };
    return fm_test_main("build", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
