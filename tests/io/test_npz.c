/* test_npz.c - the .npz writer: an archive of two arrays written in pieces
 * has the zip structure numpy expects (local headers with the right CRC and
 * sizes, the .npy header padded to 64 bytes, central directory, end record),
 * and misuse (bytes beyond the shape, an array ended short) is an error that
 * leaves no file behind. numpy itself reads such files in tests/cli/test_results.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fm/npz.h"
#include "test.h"

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static unsigned rd16(const uint8_t *p) { return p[0] | p[1] << 8; }

static int test_two_arrays(void)
{
    fm_err e = { 0 };
    char path[64];
    snprintf(path, sizeof path, "/tmp/fm_npz_%ld.npz", (long)getpid());
    fm_npz z;
    uint8_t img[3 * 4 * 5];
    for (int i = 0; i < 60; i++)
        img[i] = (uint8_t)(7 * i);
    int64_t lab[3] = { 2, -1, 9 };
    CHECK_OK(fm_npz_open(&z, path, &e), &e);
    CHECK_OK(fm_npz_begin(&z, "images", "|u1", 3, (const int64_t[]){ 3, 4, 5 }, &e), &e);
    CHECK_OK(fm_npz_write(&z, img, 25, &e), &e); /* in pieces */
    CHECK_OK(fm_npz_write(&z, img + 25, 35, &e), &e);
    CHECK_OK(fm_npz_end(&z, &e), &e);
    CHECK_OK(fm_npz_begin(&z, "labels", "<i8", 1, (const int64_t[]){ 3 }, &e), &e);
    CHECK_OK(fm_npz_write(&z, lab, sizeof lab, &e), &e);
    CHECK_OK(fm_npz_end(&z, &e), &e);
    CHECK_OK(fm_npz_close(&z, &e), &e);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "no file");
    static uint8_t b[4096];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    unlink(path);
    /* end record -> central directory -> local headers */
    const uint8_t *end = b + n - 22;
    CHECK(rd32(end) == 0x06054b50 && rd16(end + 8) == 2 && rd16(end + 10) == 2, "end record");
    const uint8_t *cd = b + rd32(end + 16);
    const char *names[2] = { "images.npy", "labels.npy" };
    const void *data[2] = { img, lab };
    const size_t bytes[2] = { sizeof img, sizeof lab };
    const char *dict[2] = { "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5), }",
                            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }" };
    for (int k = 0; k < 2; k++) {
        CHECK(rd32(cd) == 0x02014b50 && rd16(cd + 10) == 0, "central header %d: stored", k);
        unsigned nl = rd16(cd + 28);
        CHECK(nl == strlen(names[k]) && !memcmp(cd + 46, names[k], nl), "central name %d", k);
        const uint8_t *lh = b + rd32(cd + 42);
        CHECK(rd32(lh) == 0x04034b50 && rd32(lh + 14) == rd32(cd + 16) && rd32(lh + 18) == rd32(cd + 20),
              "local header %d agrees with the directory", k);
        const uint8_t *m = lh + 30 + nl;
        uint32_t size = rd32(lh + 18);
        CHECK((uint32_t)crc32(0, m, size) == rd32(lh + 14), "crc of member %d", k);
        unsigned hl = rd16(m + 8);
        CHECK(!memcmp(m, "\x93NUMPY\x01\x00", 8) && (10 + hl) % 64 == 0 && m[10 + hl - 1] == '\n', "npy header %d",
              k);
        CHECK(!memcmp(m + 10, dict[k], strlen(dict[k])), "npy dict %d: %.*s", k, (int)hl, (const char *)m + 10);
        CHECK(size == 10 + hl + bytes[k] && !memcmp(m + 10 + hl, data[k], bytes[k]), "data of member %d", k);
        cd += 46 + nl;
    }
    return 0;
}

static int test_misuse(void)
{
    fm_err e = { 0 };
    char path[64];
    snprintf(path, sizeof path, "/tmp/fm_npz_misuse_%ld.npz", (long)getpid());
    fm_npz z;
    uint8_t x[8] = { 0 };
    CHECK_OK(fm_npz_open(&z, path, &e), &e);
    CHECK_OK(fm_npz_begin(&z, "a", "|u1", 1, (const int64_t[]){ 4 }, &e), &e);
    CHECK(fm_npz_write(&z, x, 8, &e) == FM_ERR_INTERNAL, "8 bytes into a [4] array accepted");
    CHECK_OK(fm_npz_write(&z, x, 3, &e), &e);
    CHECK(fm_npz_end(&z, &e) == FM_ERR_INTERNAL && strstr(e.msg, "1 bytes short"), "short array: %s", e.msg);
    fm_npz_abort(&z);
    CHECK(access(path, F_OK) != 0, "a file left behind");
    CHECK(fm_npz_open(&z, "/nonexistent-dir/x.npz", &e) == FM_ERR_IO && strstr(e.msg, "/nonexistent-dir/x.npz"),
          "%s", e.msg);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_two_arrays),
        TEST(test_misuse),
    };
    return fm_test_main("io/npz", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
