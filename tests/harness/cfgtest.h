/* cfgtest.h - what the tests of the configuration (io/test_config,
 * models/test_build) share: the shipped configs, loading a config from text,
 * and the check of a usage error's exact message. Run from the repository
 * root (tests/run.sh does): the configs are read from configs/. */
#ifndef FM_CFGTEST_H
#define FM_CFGTEST_H

#include <string.h>

#include "fm/config.h"
#include "test.h"

/* Every file in configs/. */
static const char *const config_files[] = { "configs/ldm.yaml", "configs/tiny.yaml", "configs/pixel.yaml",
                                            "configs/dit.yaml", "configs/scaling.yaml" };

/* c from text, named "t.yaml" in messages. */
static inline int load_text(fm_config *c, const char *text, fm_err *e)
{
    return fm_config_load_string(c, text, strlen(text), "t.yaml", e);
}

/* rc must be FM_ERR_USAGE and e->msg exactly `want`. */
#define CHECK_ERR(rc, e, want)                                                                           \
    do {                                                                                                 \
        int rc_ = (rc);                                                                                  \
        CHECK(rc_ == FM_ERR_USAGE, "code %d, message \"%s\"", rc_, (e)->msg);                           \
        CHECK(strcmp((e)->msg, (want)) == 0, "message\n    got  \"%s\"\n    want \"%s\"", (e)->msg, (want)); \
    } while (0)

#endif
