/* json.h - numbers in the JSON files fmtrain writes (eval.json, the profile
 * and schedule JSON; metrics.jsonl has its own writer, which does the same).
 * JSON has no NaN or infinity: a non-finite value is written as null, so
 * every file stays valid JSON for a strict parser. */
#ifndef FM_JSON_H
#define FM_JSON_H

#include <stdio.h>

/* Write v with the printf format fmt (one double conversion), or null when v
 * is not finite. Returns 1 when v was written, 0 when null was (the caller
 * may warn, naming what was lost). */
int fm_json_num(FILE *f, const char *fmt, double v);

#endif
