/* log: one line per event on stderr, with time and level.
 *
 * LOG() checks the level before formatting anything, so a disabled debug line costs one comparison. Lines are
 * capped at LOG_LINE_MAX bytes and written with a single write(2), so lines from different threads never
 * interleave. Never call from a signal handler. Text lines carry no control byte but their final newline (each is
 * written as \xHH, see log_text_escape); JSON lines escape them as JSON does. */
#ifndef CHUNKD_LOG_H
#define CHUNKD_LOG_H

#include <stdbool.h>
#include <stddef.h>

#define LOG_LINE_MAX 4096

typedef enum { LL_DEBUG = 0, LL_INFO, LL_WARN, LL_ERROR } log_level_t;

extern log_level_t log_min_level;

/* Lines as text (default) or as one JSON object each: {"time":..,"level":..,"msg":..,"queue":..,"worker":..}. */
void log_set_json(bool json);
/* Fields added to every JSON line (borrowed strings that outlive logging; NULL to leave out). */
void log_set_context(const char *queue, const char *worker);

/* One call site's state for LOG_LIMITED. */
typedef struct log_limit {
    long long window_start_ms;
    unsigned suppressed;
} log_limit_t;

/* Returns true when a line from this call site may be written now (at most one per LOG_LIMIT_WINDOW_MS); sets
 * *suppressed to how many were dropped since the last one written. Thread-safe. */
bool log_limit_allow(log_limit_t *limit, unsigned *suppressed);
#define LOG_LIMIT_WINDOW_MS 5000

/* Returns 0 and sets *out for "debug", "info", "warn" or "error"; -1 otherwise. */
int log_level_parse(const char *name, log_level_t *out);
/* Copies s to out (cap bytes with the NUL, truncated at a whole character or escape), every control byte written
 * as \xHH: C0 controls (ESC, CR, LF, TAB, ...), DEL, and the C1 controls in UTF-8 (0xc2 0x80-0x9f, as \xc2\x9b).
 * Returns the length written. */
size_t log_text_escape(char *out, size_t cap, const char *s);
/* Copies text to out, replacing the user:password of a URL ("scheme://user:pw@host") with "***", for logging. */
void log_mask_userinfo(const char *text, char *out, size_t outlen);
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* LOG for errors that can repeat many times a second (Redis down, an API failing): at most one line per call site
 * every LOG_LIMIT_WINDOW_MS, followed by a count of the lines suppressed. */
#define LOG_LIMITED(level, fmt, ...)                                                                                 \
    do {                                                                                                              \
        static log_limit_t log_limit_;                                                                                \
        unsigned log_suppressed_;                                                                                     \
        if ((level) >= log_min_level && log_limit_allow(&log_limit_, &log_suppressed_)) {                             \
            if (log_suppressed_)                                                                                      \
                log_write((level), fmt " (%u similar lines suppressed)", __VA_ARGS__, log_suppressed_);               \
            else                                                                                                      \
                log_write((level), fmt, __VA_ARGS__);                                                                 \
        }                                                                                                             \
    } while (0)

#define LOG(level, ...)                                                                                               \
    do {                                                                                                              \
        if ((level) >= log_min_level) log_write((level), __VA_ARGS__);                                                \
    } while (0)

#endif
