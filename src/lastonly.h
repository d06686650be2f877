/* lastonly: collect --last-only: keeps, of the result lines of one file, only the last line of each id.
 *
 * "Last" is the highest "seq" (the results stream entry id the collector adds, "<ms>-<n>", compared as two
 * numbers): after a requeue an id has a failure line and then its success line, and only the later one counts.
 * Lines without an id or a seq (not result lines, or written by an older collector) are all kept. The file is
 * rewritten through a temporary file in the same directory and renamed over it, so a crash leaves either the old
 * or the new file whole. It is read whole into memory (the lines and one entry per id). */
#ifndef CHUNKD_LASTONLY_H
#define CHUNKD_LASTONLY_H

#include <stddef.h>

/* Rewrites path keeping the last line of each id. Returns 0 and sets *kept and *dropped (lines), or -1 with the
 * reason in err (the file is then unchanged). */
int lastonly_rewrite(const char *path, long long *kept, long long *dropped, char *err, size_t errlen);

#endif
