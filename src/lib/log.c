/* log: see log.h. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

log_level_t log_min_level = LL_INFO;
static bool log_json;
static const char *log_queue, *log_worker;
static pthread_mutex_t log_limit_mu = PTHREAD_MUTEX_INITIALIZER;

void log_set_json(bool json) { log_json = json; }

void log_set_context(const char *queue, const char *worker)
{
    log_queue = queue;
    log_worker = worker;
}

bool log_limit_allow(log_limit_t *limit, unsigned *suppressed)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    bool allow;
    pthread_mutex_lock(&log_limit_mu);
    if (limit->window_start_ms == 0 || now - limit->window_start_ms >= LOG_LIMIT_WINDOW_MS) {
        *suppressed = limit->suppressed;
        limit->suppressed = 0;
        limit->window_start_ms = now;
        allow = true;
    } else {
        limit->suppressed++;
        allow = false;
    }
    pthread_mutex_unlock(&log_limit_mu);
    return allow;
}

/* Appends s as the inside of a JSON string (quotes, backslashes and control characters escaped: C0, DEL and the
 * C1 controls in UTF-8, as in log_text_escape). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == 0xc2 && (unsigned char)s[1] >= 0x80 && (unsigned char)s[1] <= 0x9f)
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", (unsigned char)*++s);
        else if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c == '\n') out[n++] = '\\', out[n++] = 'n';
        else if (c < 0x20 || c == 0x7f) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = '\0';
    return n;
}

size_t log_text_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (cap == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        /* C0 controls and DEL; C1 controls as UTF-8 (U+0080 to U+009F: 0xc2 0x80-0x9f, U+009B is a CSI). */
        bool c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
        if (*p >= 0x20 && *p != 0x7f && !c1) {
            if (n + 1 >= cap) break;
            out[n++] = (char)*p;
            continue;
        }
        size_t len = c1 ? 8 : 4;
        if (n + len >= cap) break;
        for (const unsigned char *b = p; b < p + (c1 ? 2 : 1); b++) {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[*b >> 4];
            out[n++] = hex[*b & 15];
        }
        p += c1;
    }
    out[n] = '\0';
    return n;
}

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
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * 2], stamp[64];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int len;
    if (log_json) {
        char esc[LOG_LINE_MAX + 64];
        json_escape(esc, sizeof esc, msg);
        len = snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"", stamp,
                       log_level_names[level], esc);
        if (log_queue && len > 0 && (size_t)len < sizeof line) {
            json_escape(esc, sizeof esc, log_queue);
            len += snprintf(line + len, sizeof line - (size_t)len, ",\"queue\":\"%s\"", esc);
        }
        if (log_worker && len > 0 && (size_t)len < sizeof line) {
            json_escape(esc, sizeof esc, log_worker);
            len += snprintf(line + len, sizeof line - (size_t)len, ",\"worker\":\"%s\"", esc);
        }
        if (len > 0 && (size_t)len < sizeof line - 2) len += snprintf(line + len, sizeof line - (size_t)len, "}");
    } else {
        /* Text from outside (a subprocess's stderr, an API's error, an item id) cannot move the cursor, clear the
         * terminal or fake a line: every control byte of the message is written as \xHH. */
        char esc[LOG_LINE_MAX + 64];
        log_text_escape(esc, sizeof esc, msg);
        len = snprintf(line, sizeof line, "%s %-5s %s", stamp, log_level_names[level], esc);
    }
    if (len < 0) return;
    size_t out = (size_t)len < sizeof line - 1 ? (size_t)len : sizeof line - 2;
    line[out++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, out);
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
