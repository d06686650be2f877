/* proctab: see proctab.h. Each process's /proc/<pid>/stat is read in one read() of at most PROCTAB_STAT_BYTES:
 * the fields it needs (pid, command name in parentheses of at most 16 bytes, state, parent) come first. */
#include "proctab.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xalloc.h"

#define PROCTAB_STAT_BYTES 256

bool proctab_is_ours(void)
{
    char link[32];
    ssize_t n = readlink("/proc/self", link, sizeof link - 1);
    if (n <= 0) return false;
    link[n] = '\0';
    return strtol(link, NULL, 10) == (long)getpid();
}

int proctab_read(proctab_t *t)
{
    t->n = 0;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[64], buf[PROCTAB_STAT_BYTES];
        snprintf(path, sizeof path, "%s/stat", e->d_name);
        int fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) continue;
        buf[len] = '\0';
        const char *close_paren = strrchr(buf, ')'); /* the command name may hold anything, ')' too */
        char state;
        int ppid;
        if (!close_paren || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 256;
            t->v = xrealloc(t->v, t->cap * sizeof *t->v);
        }
        t->v[t->n++] = (proctab_entry_t){.pid = (pid_t)strtol(e->d_name, NULL, 10), .ppid = ppid, .state = state};
    }
    closedir(d);
    return 0;
}

void proctab_free(proctab_t *t)
{
    free(t->v);
    *t = (proctab_t){0};
}

bool proctab_exited(const proctab_entry_t *e) { return e->state == 'Z' || e->state == 'X'; }
