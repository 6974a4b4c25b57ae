/* sbuf.c - a bounded string builder (sbuf.h). */
#include "fm/sbuf.h"

#include <stdarg.h>
#include <stdio.h>

void fm_sbuf_printf(fm_sbuf *b, const char *fmt, ...)
{
    if (b->len + 1 >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}
