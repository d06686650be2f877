/* sink: where result lines go: stdout, one file, or numbered files of N lines in a directory
 * (results-000001.jsonl, ...). A restarted collector continues after the highest existing number instead of
 * overwriting. sink_flush() pushes written lines to disk (fdatasync for files); the collector acknowledges only after it. */
#ifndef CHUNKD_SINK_H
#define CHUNKD_SINK_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sink sink_t;

/* path NULL or "-": stdout. rotate_lines > 0: path is a directory (created if missing). A single file is
 * appended to when append is true (collect: a restarted collector never destroys lines), else truncated (run: a
 * new job). Returns NULL with a reason in err. */
sink_t *sink_open(const char *path, long long rotate_lines, bool append, char *err, size_t errlen);
/* Writes one line (a newline is added). Returns 0, or -1 with errno set. */
int sink_write(sink_t *s, const char *line, size_t len);
/* Writes one line made of line[0..len) then tail (a string, may be NULL), and a newline. Returns as sink_write. */
int sink_write_tail(sink_t *s, const char *line, size_t len, const char *tail);
int sink_flush(sink_t *s);
/* Flushes and closes. Returns 0, or -1 if the last flush or close failed. */
int sink_close(sink_t *s);
/* Where lines go, for messages. */
const char *sink_where(const sink_t *s);

#endif
