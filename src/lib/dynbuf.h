/* dynbuf: a growable byte buffer with a hard size cap (after curl's dynbuf).
 *
 * Appends past the cap fail with -1 and leave the buffer as it was, so callers can report "too large" instead of
 * truncating silently. The content is always NUL-terminated. */
#ifndef CHUNKD_DYNBUF_H
#define CHUNKD_DYNBUF_H

#include <stddef.h>

typedef struct dynbuf {
    char *data;    /* owned; NULL until the first append */
    size_t len;    /* bytes used, without the terminating NUL */
    size_t alloc;  /* bytes allocated */
    size_t cap;    /* most bytes len may reach */
} dynbuf_t;

void dynbuf_init(dynbuf_t *b, size_t cap);
void dynbuf_free(dynbuf_t *b);
void dynbuf_reset(dynbuf_t *b);
int dynbuf_add(dynbuf_t *b, const void *data, size_t len);
int dynbuf_addstr(dynbuf_t *b, const char *s);
/* Appends v in decimal (without printf's cost). */
int dynbuf_add_int(dynbuf_t *b, long long v);
int dynbuf_printf(dynbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..len) as a quoted JSON string; invalid UTF-8 bytes become U+FFFD. */
int dynbuf_add_json_string(dynbuf_t *b, const char *s, size_t len);
/* Returns the content and hands its ownership to the caller; the buffer is left empty. */
char *dynbuf_take(dynbuf_t *b, size_t *len);

#endif
