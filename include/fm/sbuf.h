/* sbuf.h - a bounded string builder: printf-style appends into a fixed
 * buffer, always NUL-terminated; what does not fit is dropped. */
#ifndef FM_SBUF_H
#define FM_SBUF_H

#include <stddef.h>

typedef struct fm_sbuf {
    char *p;
    size_t cap, len; /* p[cap]; len chars written so far */
} fm_sbuf;

/* Appends; p[cap] must hold a NUL-terminated string of length len (e.g. an
 * empty buffer with p[0] = '\0' and len 0, or one just written by this). */
void fm_sbuf_printf(fm_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
