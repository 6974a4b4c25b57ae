/* png.h - sample grids as 8-bit PNG files (libpng), and a reader for tests
 * and tools. */
#ifndef FM_PNG_H
#define FM_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "fm/status.h"

/* Value of the separating lines and of unused cells (white). */
#define FM_PNG_PAD_VALUE 255

/* Write n images as a grid of rows x cols cells to path.
 * images: [n, h, w, c] fp32 in [-1, 1] (clamped; NaN -> -1), c = 1 (gray)
 * or 3 (RGB); image i goes to row i / cols, column i % cols; cells past n
 * stay blank. Each cell is upscaled by `scale` (nearest neighbour, >= 1) and
 * cells are separated, and the grid surrounded, by `pad` output pixels:
 * width = cols * w * scale + (cols + 1) * pad, likewise height.
 * Pixel value = round((x + 1) / 2 * 255). Written to a temporary file,
 * fsync'd and renamed, so `path` is never half-written.
 * Bad arguments -> FM_ERR_INTERNAL; I/O errors -> FM_ERR_IO naming the path. */
int fm_png_write_grid(const char *path, const float *images, int n, int h, int w, int c, int rows, int cols,
                      int pad, int scale, fm_err *e);

/* fm_png_write_grid with a header strip of text above the grid (header;
 * NULL: none) and a label left of each row (row_labels[rows], right-aligned;
 * NULL or a NULL entry: none), in the built-in font (font.h). */
int fm_png_write_grid_labelled(const char *path, const float *images, int n, int h, int w, int c, int rows, int cols,
                               int pad, int scale, const char *header, const char *const *row_labels, fm_err *e);

/* out[i] <- the PNG byte of x[i] (round((x + 1) / 2 * 255), clamped). */
void fm_png_to_bytes(const float *x, uint8_t *out, size_t n);

/* An 8-bit image read back: [height, width, channels] bytes. */
typedef struct fm_png_image {
    int width, height, channels;  /* channels 1 (gray) or 3 (RGB) */
    uint8_t *pixels;
} fm_png_image;

/* Read path as 8-bit gray (channels = 1) or RGB (channels = 3); any PNG is
 * converted by libpng. Errors -> FM_ERR_DATA naming the path. */
int fm_png_read(const char *path, int channels, fm_png_image *img, fm_err *e);
void fm_png_image_free(fm_png_image *img);

#endif
