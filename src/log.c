/* log: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

log_level_t log_min_level = LL_INFO;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name, log_level_t *out)
{
    for (int i = LL_DEBUG; i <= LL_ERROR; i++) {
        if (strcmp(name, log_level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000L, log_level_names[level]);
    if (m > 0) n += (size_t)m;
    va_list ap;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0) n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_mask_userinfo(const char *text, char *out, size_t outlen)
{
    const char *scheme = strstr(text, "://");
    const char *host_end = scheme ? scheme + 3 + strcspn(scheme + 3, "/?#") : NULL;
    const char *at = NULL;
    if (scheme)
        for (const char *p = scheme + 3; p < host_end; p++)
            if (*p == '@') at = p;
    if (!at) {
        snprintf(out, outlen, "%s", text);
        return;
    }
    snprintf(out, outlen, "%.*s***%s", (int)(scheme + 3 - text), text, at);
}
