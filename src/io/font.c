/* font.c - the built-in bitmap font of grid labels. */
#include "fm/font.h"

#include <string.h>

#include "font_glyphs.h"

int fm_font_width(const char *s) { return (int)strlen(s) * GLYPH_W; }
int fm_font_height(void) { return GLYPH_H; }

void fm_font_draw(uint8_t *pix, int W, int H, int c, int x, int y, const char *s)
{
    for (; *s; s++, x += GLYPH_W) {
        int ch = (unsigned char)*s;
        const unsigned char *g = fm_font_glyphs[(ch >= 32 && ch <= 126 ? ch : '?') - 32];
        for (int gy = 0; gy < GLYPH_H; gy++)
            for (int gx = 0; gx < GLYPH_W; gx++) {
                int px = x + gx, py = y + gy, a = g[gy * GLYPH_W + gx];
                if (a == 0 || px < 0 || py < 0 || px >= W || py >= H)
                    continue;
                for (int k = 0; k < c; k++) {
                    uint8_t *d = pix + ((size_t)py * W + px) * c + k;
                    *d = (uint8_t)(*d * (255 - a) / 255);
                }
            }
    }
}
