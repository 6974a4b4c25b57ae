/* test_png.c - sample grids: size, pixel values against a naive reference,
 * gray and RGB, upscaling, and errors. Leaves nothing behind. */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/png.h"
#include "fm/rng.h"
#include "test.h"

/* The expected byte of output pixel (Y, X, k), written pixel by pixel from
 * the definition in png.h (double arithmetic, lround). */
static int ref_pixel(const float *img, int n, int h, int w, int c, int rows, int cols, int pad, int scale, int Y,
                     int X, int k)
{
    int ch = h * scale, cw = w * scale;
    int r = (Y - pad) / (ch + pad), yy = (Y - pad) % (ch + pad);
    int q = (X - pad) / (cw + pad), xx = (X - pad) % (cw + pad);
    if (Y < pad || X < pad || yy >= ch || xx >= cw || r >= rows || q >= cols)
        return 255; /* separator or border */
    int i = r * cols + q;
    if (i >= n)
        return 255; /* unused cell */
    double v = img[(((size_t)i * h + yy / scale) * w + xx / scale) * c + k];
    if (isnan(v))
        v = -1;
    v = v < -1 ? -1 : v > 1 ? 1 : v;
    return (int)lround((v + 1) / 2 * 255);
}

static int check_grid(int n, int h, int w, int c, int rows, int cols, int pad, int scale)
{
    fm_err e = { 0 };
    char path[] = "/tmp/fm_png_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    size_t count = (size_t)n * h * w * c;
    float *img = malloc(count * sizeof *img);
    fm_fill_uniform(img, (long)count, 5, (uint64_t)(h * 100 + c), 0);
    for (size_t i = 0; i < count; i++)
        img[i] = img[i] * 2.4f - 1.2f; /* some values outside [-1, 1] */
    img[0] = -1.0f;
    img[1] = 1.0f;
    img[2] = 0.0f;
    img[3] = NAN;
    img[4] = 7.0f;
    CHECK_OK(fm_png_write_grid(path, img, n, h, w, c, rows, cols, pad, scale, &e), &e);
    /* the file is an 8-bit PNG of the documented size and color type */
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    CHECK(png_image_begin_read_from_file(&im, path), "libpng: %s", im.message);
    int W = cols * w * scale + (cols + 1) * pad, H = rows * h * scale + (rows + 1) * pad;
    CHECK((int)im.width == W && (int)im.height == H, "size %ux%u, want %dx%d", im.width, im.height, W, H);
    CHECK(((im.format & PNG_FORMAT_FLAG_COLOR) != 0) == (c == 3) && !(im.format & PNG_FORMAT_FLAG_ALPHA),
          "format %x", im.format);
    png_image_free(&im);
    fm_png_image r;
    CHECK_OK(fm_png_read(path, c, &r, &e), &e);
    CHECK(r.width == W && r.height == H && r.channels == c, "read back %dx%dx%d", r.width, r.height, r.channels);
    long bad = 0;
    int seen0 = 0, seen255 = 0, seen128 = 0;
    for (int Y = 0; Y < H; Y++)
        for (int X = 0; X < W; X++)
            for (int k = 0; k < c; k++) {
                int got = r.pixels[((size_t)Y * W + X) * c + k];
                int want = ref_pixel(img, n, h, w, c, rows, cols, pad, scale, Y, X, k);
                if (got != want && bad++ < 5)
                    fprintf(stderr, "  pixel (%d, %d, %d): %d, want %d\n", Y, X, k, got, want);
                seen0 |= got == 0;
                seen128 |= got == 128;
                seen255 |= got == 255;
            }
    CHECK(bad == 0, "%ld of %d pixels differ", bad, W * H * c);
    CHECK(seen0 && seen128 && seen255, "value coverage");
    /* the first image's first pixels: -1 -> 0, 1 -> 255, 0 -> 128, NaN -> 0, 7 -> 255 */
    if (c == 1) {
        const uint8_t *p = r.pixels + (size_t)pad * W + pad;
        CHECK(p[0] == 0 && p[scale] == 255 && p[2 * scale] == 128 && p[3 * scale] == 0, "anchors %d %d %d %d", p[0],
              p[scale], p[2 * scale], p[3 * scale]);
    }
    fm_png_image_free(&r);
    free(img);
    unlink(path);
    return 0;
}

static int test_gray_grid(void) { return check_grid(5, 6, 7, 1, 2, 3, 1, 1); }
static int test_gray_grid_upscaled(void) { return check_grid(10, 32, 32, 1, 2, 5, 2, 2); }
static int test_rgb_grid(void) { return check_grid(4, 5, 5, 3, 2, 2, 3, 3); }
static int test_single_no_pad(void) { return check_grid(1, 4, 9, 1, 1, 1, 0, 1); }

static int test_replaces_and_errors(void)
{
    fm_err e = { 0 };
    char dir[] = "/tmp/fm_png_XXXXXX", path[256], tmp[300];
    CHECK(mkdtemp(dir), "mkdtemp");
    snprintf(path, sizeof path, "%s/grid.png", dir);
    float img[2 * 4 * 4] = { 0 };
    CHECK_OK(fm_png_write_grid(path, img, 2, 4, 4, 1, 1, 2, 1, 1, &e), &e);
    CHECK_OK(fm_png_write_grid(path, img, 1, 4, 4, 1, 1, 1, 0, 1, &e), &e); /* replaced atomically */
    fm_png_image r;
    CHECK_OK(fm_png_read(path, 1, &r, &e), &e);
    CHECK(r.width == 4 && r.height == 4 && r.pixels[0] == 128, "replaced: %dx%d", r.width, r.height);
    fm_png_image_free(&r);
    /* unwritable (a directory below a regular file): FM_ERR_IO naming the path */
    snprintf(tmp, sizeof tmp, "%s/sub/grid.png", path);
    CHECK(fm_png_write_grid(tmp, img, 1, 4, 4, 1, 1, 1, 0, 1, &e) == FM_ERR_IO && strstr(e.msg, tmp), "%s", e.msg);
    CHECK(fm_png_write_grid(path, img, 3, 4, 4, 1, 1, 2, 0, 1, &e) == FM_ERR_INTERNAL, "3 images in 2 cells");
    CHECK(fm_png_write_grid(path, img, 1, 4, 4, 2, 1, 1, 0, 1, &e) == FM_ERR_INTERNAL, "2 channels");
    CHECK(fm_png_read(tmp, 1, &r, &e) == FM_ERR_DATA && strstr(e.msg, tmp), "read missing: %s", e.msg);
    /* no temporary file left behind */
    int nfiles = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        nfiles += de->d_name[0] != '.';
    if (d)
        closedir(d);
    CHECK(nfiles == 1, "%d files in %s", nfiles, dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_test tests[] = {
        TEST(test_gray_grid), TEST(test_gray_grid_upscaled), TEST(test_rgb_grid),
        TEST(test_single_no_pad), TEST(test_replaces_and_errors),
    };
    return fm_test_main("io/png", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
