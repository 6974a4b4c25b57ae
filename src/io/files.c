/* files.c - atomic writes, temporary files, mkdir -p and the run directory's
 * lock (see files.h). */
#include "fm/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/log.h"

int fm_mkdir_p(const char *dir, fm_err *e)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return fm_fail(e, FM_ERR_IO, "%s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return fm_fail(e, FM_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
            struct stat st;
            if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
                return fm_fail(e, FM_ERR_IO, "cannot create directory %s: a file of that name exists", buf);
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return FM_OK;
}

/* Write text to path atomically: a temporary file, fsync, rename, and the
 * directory synced. */
int fm_write_text_atomic(const char *path, const char *text, fm_err *e)
{
    char tmp[4300];
    int fd;
    FM_TRY(fm_tmp_open(path, tmp, sizeof tmp, &fd, e));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return fm_fail(e, FM_ERR_IO, "cannot write %s: %s", tmp, strerror(err));
    }
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok) {
        int err = errno;
        unlink(tmp);
        return fm_fail(e, FM_ERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    return fm_tmp_commit(tmp, path, e);
}

/* ---- temporary files: "<path>.tmp.<pid>" beside their target ---- */

int fm_tmp_open(const char *path, char *tmp, size_t n, int *fd, fm_err *e)
{
    if (snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid()) >= (int)n)
        return fm_fail(e, FM_ERR_IO, "%s: path too long", path);
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    *fd = open(tmp, flags, 0644);
    if (*fd < 0 && errno == EEXIST && unlink(tmp) == 0) /* ours from an earlier attempt, or a planted link: */
        *fd = open(tmp, flags, 0644);                    /* removed (never followed), then made anew */
    if (*fd < 0)
        return fm_fail(e, FM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    return FM_OK;
}

int fm_fsync_dir_of(const char *path, fm_err *e)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return fm_fail(e, FM_ERR_IO, "%s: path too long", path);
    const char *d = dirname(dir);
    int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return fm_fail(e, FM_ERR_IO, "cannot open directory %s to sync it: %s", d, strerror(errno));
    int rc = FM_OK;
    if (fsync(dfd) != 0 && errno != EINVAL) /* EINVAL: a file system that cannot sync directories */
        rc = fm_fail(e, FM_ERR_IO, "cannot sync directory %s: %s", d, strerror(errno));
    close(dfd);
    return rc;
}

int fm_tmp_commit(const char *tmp, const char *path, fm_err *e)
{
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return fm_fail(e, FM_ERR_IO, "%s: rename to %s failed: %s", tmp, path, strerror(err));
    }
    return fm_fsync_dir_of(path, e);
}

/* "<anything>.tmp.<pid>": the pid, or 0 when d_name is not a temporary. */
static long tmp_pid(const char *d_name)
{
    const char *t = strstr(d_name, ".tmp.");
    while (t && strstr(t + 1, ".tmp."))
        t = strstr(t + 1, ".tmp.");
    if (!t || !t[5])
        return 0;
    char *end;
    errno = 0;
    long pid = strtol(t + 5, &end, 10);
    return *end || errno || pid <= 0 ? 0 : pid;
}

void fm_clean_stale_tmps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        long pid = tmp_pid(de->d_name);
        if (!pid || pid == (long)getpid() || (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue; /* not a temporary, ours, or its writer is alive */
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) == 0)
            fm_info("removed %s, a temporary file of a run that ended without finishing it", path);
        else
            fm_warn("cannot remove the stale temporary file %s: %s", path, strerror(errno));
    }
    closedir(d);
}

int fm_open_regular(const char *path, int *fd, fm_err *e)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer forever */
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (*fd < 0)
        return fm_fail(e, FM_ERR_DATA, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = FM_OK;
    if (fstat(*fd, &st) != 0)
        rc = fm_fail(e, FM_ERR_DATA, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = fm_fail(e, FM_ERR_DATA, "%s: is %s, not a regular file: give the path of a file", path,
                     S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
    else if (fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) & ~O_NONBLOCK) != 0)
        rc = fm_fail(e, FM_ERR_DATA, "%s: cannot read: %s", path, strerror(errno));
    if (rc != FM_OK) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

/* ---- the run directory's lock ---- */

int fm_run_lock(const char *dir, int *fd, fm_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, FM_RUN_LOCK_FILE);
    *fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (*fd < 0)
        return fm_fail(e, FM_ERR_IO, "cannot open the lock file %s: %s", path, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char who[300] = "";
        ssize_t got = err == EWOULDBLOCK ? pread(*fd, who, sizeof who - 1, 0) : -1;
        close(*fd);
        *fd = -1;
        if (err != EWOULDBLOCK)
            return fm_fail(e, FM_ERR_IO, "cannot lock %s: %s", path, strerror(err));
        who[got > 0 ? got : 0] = '\0';
        who[strcspn(who, "\n")] = '\0';
        long pid = 0;
        char host[256] = "?";
        if (sscanf(who, "pid %ld host %255s", &pid, host) < 1)
            pid = 0;
        return fm_fail(e, FM_ERR_USAGE,
                       "%s is in use by another fmtrain (pid %ld on host %s, lock file %s): wait until it ends, "
                       "or give this run another directory (--out)",
                       dir, pid, host, path);
    }
    char host[256] = "unknown";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    char line[400];
    int n = snprintf(line, sizeof line, "pid %ld host %s\n", (long)getpid(), host);
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, line, (size_t)n, 0) != n) {
        int err = errno;
        close(*fd);
        *fd = -1;
        return fm_fail(e, FM_ERR_IO, "cannot write the lock file %s: %s", path, strerror(err));
    }
    return FM_OK;
}

void fm_run_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* the kernel drops the flock (it does as well when the process dies) */
}
