/* linereader: reads lines from a FILE with a cap on how much of one line is kept.
 *
 * A line longer than the cap is still read to its end (so the next line starts in the right place) but only its
 * first cap bytes are kept and it is flagged, so one huge line cannot exhaust memory. A final line without a
 * newline counts. A trailing '\r' is removed. */
#ifndef CHUNKD_LINEREADER_H
#define CHUNKD_LINEREADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct linereader {
    FILE *in;           /* borrowed */
    size_t cap;         /* most bytes of a line kept */
    char *buf;          /* owned, cap + 2 bytes */
    long long line_no;  /* 1-based number of the line last returned */
} linereader_t;

void linereader_init(linereader_t *r, FILE *in, size_t cap);
void linereader_free(linereader_t *r);
/* Returns 1 with the next line in *line (borrowed until the next call, NUL-terminated), its kept length in *len,
 * its full length in *full_len (> *len when cut); 0 at end of input; -1 on a read error (errno set). */
int linereader_next(linereader_t *r, const char **line, size_t *len, size_t *full_len);

#endif
