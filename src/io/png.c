/* png.c - sample grids to 8-bit PNG (libpng simplified API), and a reader. */
#include "fm/png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/files.h"
#include "fm/font.h"

/* Largest grid side in pixels (libpng's default read limit is 1e6). */
#define MAX_SIDE 100000

/* [-1, 1] -> 0..255, clamped; NaN -> 0. */
static uint8_t to_byte(float x)
{
    x = fminf(fmaxf(x, -1.0f), 1.0f);
    return (uint8_t)((x + 1.0f) * 127.5f + 0.5f);
}

void fm_png_to_bytes(const float *x, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = to_byte(x[i]);
}

/* Render the grid into pix ([H, W, c] bytes). */
static void render(uint8_t *pix, int64_t H, int64_t W, const float *images, int n, int h, int w, int c, int cols,
                   int pad, int scale)
{
    memset(pix, FM_PNG_PAD_VALUE, (size_t)(H * W * c));
    for (int i = 0; i < n; i++) {
        int64_t y0 = pad + (int64_t)(i / cols) * (h * scale + pad);
        int64_t x0 = pad + (int64_t)(i % cols) * (w * scale + pad);
        const float *img = images + (size_t)i * h * w * c; // [h, w, c]
        for (int64_t y = 0; y < (int64_t)h * scale; y++) {
            const float *src = img + (size_t)(y / scale) * w * c;
            uint8_t *dst = pix + ((y0 + y) * W + x0) * c;
            for (int64_t x = 0; x < (int64_t)w * scale; x++)
                for (int k = 0; k < c; k++)
                    dst[x * c + k] = to_byte(src[(x / scale) * c + k]);
        }
    }
}

/* Check a grid's arguments and compute its size in pixels. */
static int grid_size(const char *path, int n, int h, int w, int c, int rows, int cols, int pad, int scale,
                     const float *images, int64_t *W, int64_t *H, fm_err *e)
{
    if (n < 0 || h <= 0 || w <= 0 || (c != 1 && c != 3) || rows <= 0 || cols <= 0 || pad < 0 || scale < 1 ||
        (int64_t)rows * cols < n || (n > 0 && !images))
        return fm_fail(e, FM_ERR_INTERNAL,
                       "%s: bad grid: %d images [%d, %d, %d] in %d x %d cells, pad %d, scale %d", path, n, h, w, c,
                       rows, cols, pad, scale);
    *W = (int64_t)cols * w * scale + (int64_t)(cols + 1) * pad;
    *H = (int64_t)rows * h * scale + (int64_t)(rows + 1) * pad;
    return FM_OK;
}

/* pix ([H, W, c] bytes) to path through a temporary file, fsync'd and
 * renamed; frees pix. */
static int write_pixels(const char *path, uint8_t *pix, int64_t W, int64_t H, int c, fm_err *e)
{
    char tmp[4200];
    int fd;
    int orc = fm_tmp_open(path, tmp, sizeof tmp, &fd, e);
    if (orc != FM_OK) {
        free(pix);
        return orc;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int err = errno;
        close(fd);
        unlink(tmp);
        free(pix);
        return fm_fail(e, FM_ERR_IO, "%s: cannot create: %s", tmp, strerror(err));
    }
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)W;
    im.height = (png_uint_32)H;
    im.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    int rc = FM_OK;
    if (!png_image_write_to_stdio(&im, fp, 0, pix, (png_int_32)(W * c), NULL))
        rc = fm_fail(e, FM_ERR_IO, "%s: cannot write png: %s", tmp, im.message);
    png_image_free(&im);
    free(pix);
    if (rc == FM_OK && (fflush(fp) != 0 || fsync(fileno(fp)) != 0))
        rc = fm_fail(e, FM_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fclose(fp) != 0 && rc == FM_OK)
        rc = fm_fail(e, FM_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc != FM_OK) {
        unlink(tmp);
        return rc;
    }
    return fm_tmp_commit(tmp, path, e);
}

/* A blank canvas of W x H x c bytes, or an error naming path. */
static int canvas(const char *path, int64_t W, int64_t H, int c, uint8_t **pix, fm_err *e)
{
    if (W > MAX_SIDE || H > MAX_SIDE)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: grid of %lld x %lld pixels is too large", path, (long long)W,
                       (long long)H);
    *pix = malloc((size_t)(H * W * c));
    if (!*pix)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory for a %lld x %lld grid", path, (long long)W,
                       (long long)H);
    return FM_OK;
}

int fm_png_write_grid(const char *path, const float *images, int n, int h, int w, int c, int rows, int cols,
                      int pad, int scale, fm_err *e)
{
    int64_t W, H;
    uint8_t *pix;
    FM_TRY(grid_size(path, n, h, w, c, rows, cols, pad, scale, images, &W, &H, e));
    FM_TRY(canvas(path, W, H, c, &pix, e));
    render(pix, H, W, images, n, h, w, c, cols, pad, scale);
    return write_pixels(path, pix, W, H, c, e);
}

int fm_png_write_grid_labelled(const char *path, const float *images, int n, int h, int w, int c, int rows, int cols,
                               int pad, int scale, const char *header, const char *const *row_labels, fm_err *e)
{
    int64_t GW, GH;
    FM_TRY(grid_size(path, n, h, w, c, rows, cols, pad, scale, images, &GW, &GH, e));
    const int margin = 4, fh = fm_font_height();
    int left = 0;
    for (int r = 0; row_labels && r < rows; r++)
        if (row_labels[r] && fm_font_width(row_labels[r]) + 2 * margin > left)
            left = fm_font_width(row_labels[r]) + 2 * margin;
    const int top = header ? fh + 2 * margin : 0;
    int64_t W = GW + left, H = GH + top;
    if (header && left + 2 * margin + fm_font_width(header) > W) /* room for the whole header */
        W = left + 2 * margin + fm_font_width(header);
    uint8_t *pix, *grid;
    FM_TRY(canvas(path, W, H, c, &pix, e));
    if (canvas(path, GW, GH, c, &grid, e) != FM_OK) {
        free(pix);
        return FM_ERR_INTERNAL;
    }
    render(grid, GH, GW, images, n, h, w, c, cols, pad, scale);
    memset(pix, FM_PNG_PAD_VALUE, (size_t)(H * W * c));
    for (int64_t y = 0; y < GH; y++)
        memcpy(pix + ((y + top) * W + left) * c, grid + y * GW * c, (size_t)(GW * c)); /* blank on the right */
    free(grid);
    if (header)
        fm_font_draw(pix, (int)W, (int)H, c, left + margin, margin, header);
    for (int r = 0; row_labels && r < rows; r++)
        if (row_labels[r]) /* right-aligned, centred on the row */
            fm_font_draw(pix, (int)W, (int)H, c, left - margin - fm_font_width(row_labels[r]),
                         top + pad + r * (h * scale + pad) + (h * scale - fh) / 2, row_labels[r]);
    return write_pixels(path, pix, W, H, c, e);
}

int fm_png_read(const char *path, int channels, fm_png_image *img, fm_err *e)
{
    memset(img, 0, sizeof *img);
    if (channels != 1 && channels != 3)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: cannot read as %d channels (1 or 3)", path, channels);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path))
        return fm_fail(e, FM_ERR_DATA, "%s: cannot read png: %s", path, im.message);
    im.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    size_t bytes = PNG_IMAGE_SIZE(im);
    img->pixels = malloc(bytes);
    if (!img->pixels) {
        png_image_free(&im);
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory (%zu bytes)", path, bytes);
    }
    if (!png_image_finish_read(&im, NULL, img->pixels, 0, NULL)) {
        fm_png_image_free(img);
        png_image_free(&im);
        return fm_fail(e, FM_ERR_DATA, "%s: cannot read png: %s", path, im.message);
    }
    img->width = (int)im.width;
    img->height = (int)im.height;
    img->channels = channels;
    png_image_free(&im);
    return FM_OK;
}

void fm_png_image_free(fm_png_image *img)
{
    free(img->pixels);
    memset(img, 0, sizeof *img);
}
