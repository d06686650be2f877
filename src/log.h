/* log: one line per event on stderr, with time and level.
 *
 * LOG() checks the level before formatting anything, so a disabled debug line costs one comparison. Lines are
 * capped at LOG_LINE_MAX bytes and written with a single write(2), so lines from different threads never
 * interleave. Never call from a signal handler. */
#ifndef CHUNKD_LOG_H
#define CHUNKD_LOG_H

#include <stddef.h>

#define LOG_LINE_MAX 4096

typedef enum { LL_DEBUG = 0, LL_INFO, LL_WARN, LL_ERROR } log_level_t;

extern log_level_t log_min_level;

/* Returns 0 and sets *out for "debug", "info", "warn" or "error"; -1 otherwise. */
int log_level_parse(const char *name, log_level_t *out);
/* Copies text to out, replacing the user:password of a URL ("scheme://user:pw@host") with "***", for logging. */
void log_mask_userinfo(const char *text, char *out, size_t outlen);
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG(level, ...)                                                                                               \
    do {                                                                                                              \
        if ((level) >= log_min_level) log_write((level), __VA_ARGS__);                                                \
    } while (0)

#endif
