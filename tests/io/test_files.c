/* test_files.c - the run directory's lock, temporary files (no link
 * followed, stale ones of dead runs removed), the exit-code precedence and
 * JSON numbers. Leaves nothing behind. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm/files.h"
#include "fm/json.h"
#include "test.h"

static char dir[64];

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* A second holder (another process: flock locks belong to open files) is
 * refused with FM_ERR_USAGE naming the holder's pid; after the holder dies
 * the lock is free again. */
static int test_run_lock(void)
{
    fm_err e = { 0 };
    int pipefd[2];
    CHECK(pipe(pipefd) == 0, "pipe");
    pid_t child = fork();
    if (child == 0) { /* the holder: locks, says so, waits to be killed */
        int fd;
        char ok = fm_run_lock(dir, &fd, &e) == FM_OK ? 'y' : 'n';
        (void)!write(pipefd[1], &ok, 1);
        pause();
        _exit(0);
    }
    char ok = 0;
    CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 'y', "the holder could not lock");
    int fd = -1;
    int rc = fm_run_lock(dir, &fd, &e);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld on host ", (long)child);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    CHECK(rc == FM_ERR_USAGE && fd < 0, "a second lock: status %d", rc);
    CHECK(strstr(e.msg, pid) && strstr(e.msg, FM_RUN_LOCK_FILE), "the message does not name the holder: %s", e.msg);
    CHECK_OK(fm_run_lock(dir, &fd, &e), &e); /* the dead holder's lock is gone */
    fm_run_unlock(fd);
    close(pipefd[0]);
    close(pipefd[1]);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, FM_RUN_LOCK_FILE);
    unlink(path);
    return 0;
}

/* A link planted at the temporary name is replaced, never followed. */
static int test_tmp_no_follow(void)
{
    char path[128], tmp[256], victim[128], link_at[256];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    snprintf(link_at, sizeof link_at, "%s.tmp.%ld", path, (long)getpid());
    FILE *v = fopen(victim, "w");
    CHECK(v && fputs("keep", v) >= 0 && fclose(v) == 0, "victim");
    CHECK(symlink(victim, link_at) == 0, "symlink");
    fm_err e = { 0 };
    CHECK_OK(fm_write_text_atomic(path, "new\n", &e), &e);
    char buf[16] = "";
    v = fopen(victim, "r");
    CHECK(v && fgets(buf, sizeof buf, v), "read victim");
    fclose(v);
    CHECK(!strcmp(buf, "keep"), "the link was followed: the victim holds \"%s\"", buf);
    CHECK(!exists(link_at), "the temporary name is left");
    int fd;
    CHECK_OK(fm_tmp_open(path, tmp, sizeof tmp, &fd, &e), &e);
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "not close-on-exec");
    close(fd);
    CHECK_OK(fm_tmp_commit(tmp, path, &e), &e);
    unlink(path);
    unlink(victim);
    return 0;
}

/* A temporary of a process that no longer exists is removed; ours and a
 * live process's are kept, and so is any other file. */
static int test_stale_tmps(void)
{
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    char stale[128], mine[128], live[128], other[128];
    snprintf(stale, sizeof stale, "%s/eval.json.tmp.%ld", dir, (long)dead);
    snprintf(mine, sizeof mine, "%s/config.yaml.tmp.%ld", dir, (long)getpid());
    snprintf(live, sizeof live, "%s/x.png.tmp.%ld", dir, (long)getppid());
    snprintf(other, sizeof other, "%s/notes.tmp.txt", dir);
    const char *all[] = { stale, mine, live, other };
    for (int i = 0; i < 4; i++) {
        FILE *f = fopen(all[i], "w");
        CHECK(f && fclose(f) == 0, "create %s", all[i]);
    }
    fm_clean_stale_tmps(dir);
    CHECK(!exists(stale), "the dead run's temporary %s is left", stale);
    CHECK(exists(mine) && exists(live) && exists(other), "a live or non-temporary file was removed");
    for (int i = 1; i < 4; i++)
        unlink(all[i]);
    return 0;
}

/* status.h: OK < 75 < every real error; among errors the larger code. */
static int test_status_precedence(void)
{
    CHECK(fm_status_worst(FM_PREEMPTED, FM_ERR_IO) == FM_ERR_IO, "75 hid an I/O error");
    CHECK(fm_status_worst(FM_ERR_INTERNAL, FM_PREEMPTED) == FM_ERR_INTERNAL, "75 hid an internal error");
    CHECK(fm_status_worst(FM_OK, FM_PREEMPTED) == FM_PREEMPTED, "0 won over 75");
    CHECK(fm_status_worst(FM_ERR_DATA, FM_ERR_USAGE) == FM_ERR_DATA, "3 vs 2");
    const int codes[] = { FM_OK, FM_ERR_INTERNAL, FM_ERR_USAGE, FM_ERR_DATA, FM_ERR_IO, FM_PREEMPTED };
    for (int i = 0; i < 6; i++)
        CHECK(fm_status_of_rank(fm_status_rank(codes[i])) == codes[i], "round trip of %d", codes[i]);
    return 0;
}

/* JSON numbers: non-finite values are null, finite ones printed as asked. */
static int test_json_num(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f, "memstream");
    int w[4] = { fm_json_num(f, "%.6f", 0.5), 0, 0, 0 };
    fputc(',', f);
    w[1] = fm_json_num(f, "%.6f", NAN);
    fputc(',', f);
    w[2] = fm_json_num(f, "%g", -INFINITY);
    fputc(',', f);
    w[3] = fm_json_num(f, "%g", INFINITY);
    fclose(f);
    int ok = !strcmp(text, "0.500000,null,null,null");
    free(text);
    CHECK(ok && w[0] == 1 && !w[1] && !w[2] && !w[3], "wrote something else");
    return 0;
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof dir, "/tmp/fm-test-files.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    static const fm_test tests[] = {
        TEST(test_run_lock), TEST(test_tmp_no_follow), TEST(test_stale_tmps), TEST(test_status_precedence),
        TEST(test_json_num),
    };
    int bad = fm_test_main("files", tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
    rmdir(dir);
    return bad;
}
