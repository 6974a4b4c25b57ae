/* files.h - small file-system helpers shared by the stages and the trainer. */
#ifndef FM_FILES_H
#define FM_FILES_H

#include "fm/status.h"

/* Write text to path atomically (a temporary file beside it, fsync, rename);
 * FM_ERR_IO naming the file. */
int fm_write_text_atomic(const char *path, const char *text, fm_err *e);
/* mkdir -p (FM_ERR_IO naming the directory). */
int fm_mkdir_p(const char *dir, fm_err *e);

#endif
