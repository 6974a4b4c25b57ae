/* font.h - a small built-in bitmap font (DejaVu Sans Mono at 11 px, 7 x 13
 * pixel cells, printable ASCII) for the labels of sample grids. */
#ifndef FM_FONT_H
#define FM_FONT_H

#include <stdint.h>

/* Width and height in pixels of s drawn on one line. */
int fm_font_width(const char *s);
int fm_font_height(void);

/* Draw s with its top-left corner at (x, y) into pix ([H, W, c] bytes),
 * darkening towards 0 (ink) from the background by each glyph's coverage;
 * pixels outside the image are skipped, characters outside ASCII 32..126
 * draw as '?'. */
void fm_font_draw(uint8_t *pix, int W, int H, int c, int x, int y, const char *s);

#endif
