/* files.c - atomic text writes and mkdir -p (see files.h). */
#include "fm/files.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Write text to path atomically: a temporary file, fsync, rename. */
int fm_write_text_atomic(const char *path, const char *text, fm_err *e)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return fm_fail(e, FM_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return fm_fail(e, FM_ERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    return FM_OK;
}
