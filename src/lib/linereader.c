/* linereader: see linereader.h. */
#include "linereader.h"

#include <stdlib.h>

#include "xalloc.h"

void linereader_init(linereader_t *r, FILE *in, size_t cap)
{
    r->in = in;
    r->cap = cap;
    r->buf = xmalloc(cap + 2);
    r->line_no = 0;
}

void linereader_free(linereader_t *r)
{
    free(r->buf);
    r->buf = NULL;
}

int linereader_next(linereader_t *r, const char **line, size_t *len, size_t *full_len)
{
    size_t kept = 0, full = 0;
    int c, last = EOF;
    /* Keep one byte more than the cap, so that a line of exactly cap bytes followed by '\r' is not cut. */
    while ((c = getc_unlocked(r->in)) != EOF && c != '\n') {
        if (kept <= r->cap) r->buf[kept++] = (char)c;
        full++;
        last = c;
    }
    if (c == EOF) {
        if (ferror(r->in)) return -1;
        if (full == 0) return 0;
    }
    if (last == '\r') {
        full--;
        if (kept > full) kept = full;
    }
    if (kept > r->cap) kept = r->cap;
    r->buf[kept] = '\0';
    r->line_no++;
    *line = r->buf;
    *len = kept;
    *full_len = full;
    return 1;
}
