/* fuzz_config.c - libFuzzer harness for the YAML config loader.
 *
 * Input: the bytes of a config file. fm_config_load_string must return a
 * status for any input (never crash, leak or read out of bounds). When it
 * accepts the file, the loaded config must also survive the rest of the
 * user-facing path: fm_config_validate, fm_config_where for every key, and a
 * round trip fm_config_dump -> fm_config_load_string that gives back an equal
 * config (fm_config_equal), which is how a checkpoint's config is read back.
 * The same bytes, NUL-terminated, are also tried as a --set assignment. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_config *c = malloc(2 * sizeof *c);
    if (!c)
        return 0;
    fm_config *back = c + 1;
    fm_err e = { 0 };
    if (fm_config_load_string(c, (const char *)data, size, "fuzz.yaml", &e) == FM_OK) {
        fm_config_validate(c, &e);
        int n;
        const fm_cfg_key *keys = fm_config_keys(&n);
        char where[FM_CFG_STR_MAX + 128];
        for (int i = 0; i < n; i++)
            fm_config_where(c, keys[i].name, where, sizeof where);
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        if (mem) {
            int rc = fm_config_dump(c, mem, &e);
            fclose(mem);
            if (rc == FM_OK) {
                if (fm_config_load_string(back, text, len, "dumped.yaml", &e) != FM_OK) {
                    fprintf(stderr, "dumped config does not load back: %s\n---\n%s---\n", e.msg, text);
                    abort();
                }
                if (!fm_config_equal(c, back)) {
                    fprintf(stderr, "dumped config loads back different:\n%s---\n", text);
                    abort();
                }
            }
            free(text);
        }
    }
    /* as an override: "section.key=value" */
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        fm_config_defaults(c, &e);
        fm_config_set(c, s, &e);
        free(s);
    }
    free(c);
    return 0;
}
