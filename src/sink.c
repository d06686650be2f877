/* sink: see sink.h. */
#include "sink.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#include "xalloc.h"

struct sink {
    FILE *f;                 /* current file; stdout when to_stdout */
    bool to_stdout;
    char *path;              /* file, or directory when rotating */
    long long rotate_lines;  /* 0: no rotation */
    long long lines_in_file; /* lines written to the current rotated file */
    unsigned long file_no;   /* number of the current rotated file */
    char where[4200];
};

/* Highest NNNNNN among results-NNNNNN.jsonl in dir, or 0. */
static unsigned long sink_highest(const char *dir)
{
    unsigned long best = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long n;
        char tail[16];
        if (sscanf(e->d_name, "results-%lu.%15s", &n, tail) == 2 && strcmp(tail, "jsonl") == 0 && n > best) best = n;
    }
    closedir(d);
    return best;
}

/* A collector killed in the middle of a write can leave a partial last line. Its stream entries were not
 * acknowledged, so they are written again; cut the partial line first so the next line does not glue onto it.
 * Returns 0, or -1 with errno set. */
static int sink_repair_tail(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st)) goto out;
    off_t end = st.st_size, keep = 0;
    char buf[4096];
    while (end > 0) {
        size_t n = end < (off_t)sizeof buf ? (size_t)end : sizeof buf;
        if (pread(fd, buf, n, end - (off_t)n) != (ssize_t)n) goto out;
        size_t i = n;
        while (i > 0 && buf[i - 1] != '\n') i--;
        if (i > 0) {
            keep = end - (off_t)n + (off_t)i;
            break;
        }
        end -= (off_t)n;
    }
    if (keep < st.st_size) {
        if (ftruncate(fd, keep)) goto out;
        LOG(LL_WARN, "%s ended with a partial line (%lld bytes, from an interrupted collector); removed it, its "
                     "results are written again", path, (long long)(st.st_size - keep));
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

static int sink_open_next(sink_t *s)
{
    if (s->f && fclose(s->f)) {
        s->f = NULL;
        return -1;
    }
    s->file_no++;
    snprintf(s->where, sizeof s->where, "%s/results-%06lu.jsonl", s->path, s->file_no);
    s->f = fopen(s->where, "wx");
    s->lines_in_file = 0;
    return s->f ? 0 : -1;
}

sink_t *sink_open(const char *path, long long rotate_lines, bool append, char *err, size_t errlen)
{
    sink_t *s = xcalloc(1, sizeof *s);
    s->rotate_lines = rotate_lines;
    if (!path || strcmp(path, "-") == 0) {
        s->to_stdout = true;
        s->f = stdout;
        snprintf(s->where, sizeof s->where, "stdout");
        return s;
    }
    s->path = xstrdup(path);
    if (rotate_lines > 0) {
        if (mkdir(path, 0777) && errno != EEXIST) {
            snprintf(err, errlen, "cannot create output directory %s: %s", path, strerror(errno));
            goto fail;
        }
        s->file_no = sink_highest(path);
        if (s->file_no) {
            snprintf(s->where, sizeof s->where, "%s/results-%06lu.jsonl", path, s->file_no);
            if (sink_repair_tail(s->where)) {
                snprintf(err, errlen, "cannot repair %s: %s", s->where, strerror(errno));
                goto fail;
            }
        }
        if (sink_open_next(s)) {
            snprintf(err, errlen, "cannot create %s: %s", s->where, strerror(errno));
            goto fail;
        }
        return s;
    }
    if (append && sink_repair_tail(path)) {
        snprintf(err, errlen, "cannot repair output file %s: %s", path, strerror(errno));
        goto fail;
    }
    s->f = fopen(path, append ? "a" : "w");
    if (!s->f) {
        snprintf(err, errlen, "cannot open output file %s: %s", path, strerror(errno));
        goto fail;
    }
    snprintf(s->where, sizeof s->where, "%s", path);
    return s;
fail:
    free(s->path);
    free(s);
    return NULL;
}

int sink_write(sink_t *s, const char *line, size_t len) { return sink_write_tail(s, line, len, NULL); }

int sink_write_tail(sink_t *s, const char *line, size_t len, const char *tail)
{
    if (s->rotate_lines > 0 && s->lines_in_file >= s->rotate_lines && sink_open_next(s)) return -1;
    if (fwrite(line, 1, len, s->f) != len || (tail && fputs(tail, s->f) == EOF) || putc('\n', s->f) == EOF) return -1;
    s->lines_in_file++;
    return 0;
}

int sink_flush(sink_t *s)
{
    if (!s->f || fflush(s->f)) return s->f ? -1 : 0;
    /* On disk before the collector acknowledges and deletes the entries: a host crash then loses nothing. */
    if (!s->to_stdout && fdatasync(fileno(s->f)) && errno != EINVAL && errno != EROFS) return -1;
    return 0;
}

int sink_close(sink_t *s)
{
    if (!s) return 0;
    int rc = sink_flush(s);
    if (s->f && !s->to_stdout && fclose(s->f)) rc = -1;
    free(s->path);
    free(s);
    return rc;
}

const char *sink_where(const sink_t *s)
{
    return s->rotate_lines > 0 ? s->path : s->where;
}
