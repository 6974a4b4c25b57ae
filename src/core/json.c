/* json.c - a number in a JSON file, null when not finite (see json.h). */
#include "fm/json.h"

#include <math.h>

int fm_json_num(FILE *f, const char *fmt, double v)
{
    if (!isfinite(v)) {
        fputs("null", f);
        return 0;
    }
    fprintf(f, fmt, v);
    return 1;
}
