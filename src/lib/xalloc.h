/* xalloc: allocation that never returns NULL.
 *
 * A daemon that runs out of memory cannot do anything useful with a NULL pointer on every line, so, as redis's
 * zmalloc does, these functions log once and abort in one place. Everything else in chunkd can assume success. */
#ifndef CHUNKD_XALLOC_H
#define CHUNKD_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);
/* Returns a newly allocated formatted string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
