/* files.h - small file-system helpers shared by the stages and the trainer. */
#ifndef FM_FILES_H
#define FM_FILES_H

#include <stddef.h>

#include "fm/status.h"

/* Write text to path atomically (a temporary file beside it, fsync, rename,
 * the directory synced); FM_ERR_IO naming the file. */
int fm_write_text_atomic(const char *path, const char *text, fm_err *e);
/* mkdir -p (FM_ERR_IO naming the directory). */
int fm_mkdir_p(const char *dir, fm_err *e);


/* Temporary files: "<path>.tmp.<pid>" in the target's directory, created with
 * O_EXCL | O_NOFOLLOW | O_CLOEXEC (an existing file or link of that name is
 * removed, never followed or reused). fm_tmp_open fills tmp (n bytes) and
 * *fd. fm_tmp_commit renames tmp over path and fsyncs the directory, so the
 * new name survives a crash (on failure tmp is removed); FM_ERR_IO naming the
 * file. */
int fm_tmp_open(const char *path, char *tmp, size_t n, int *fd, fm_err *e);
int fm_tmp_commit(const char *tmp, const char *path, fm_err *e);
/* fsync the directory holding path (after a rename into it). */
int fm_fsync_dir_of(const char *path, fm_err *e);
/* Remove the temporary files ("*.tmp.<pid>") in dir whose writer is no longer
 * running on this host: a run that died while writing. Logged; failures are
 * warnings. Call while holding the run directory's lock. */
void fm_clean_stale_tmps(const char *dir);

/* Open an input file for reading (O_CLOEXEC), refusing with FM_ERR_DATA
 * naming it anything but a regular file (a FIFO, a device, a directory)
 * before it can block: a FIFO is never waited on. */
int fm_open_regular(const char *path, int *fd, fm_err *e);

/* The run directory's lock: an exclusive flock on dir/FM_RUN_LOCK_FILE,
 * which records "pid P host H" of its holder. The kernel releases it when the
 * holder exits or dies (SIGKILL included), so a killed run never blocks its
 * resumption. A second holder is refused with FM_ERR_USAGE naming the first
 * one's pid and host. *fd is the lock; fm_run_unlock releases it. */
#define FM_RUN_LOCK_FILE "fmtrain.lock"
int fm_run_lock(const char *dir, int *fd, fm_err *e);
void fm_run_unlock(int fd);

#endif
