/* dynbuf: see dynbuf.h. */
#include "dynbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define DYNBUF_TRIM_SLACK ((size_t)4096) /* unused bytes that dynbuf_take gives back */

void dynbuf_init(dynbuf_t *b, size_t cap)
{
    b->data = NULL;
    b->len = b->alloc = 0;
    b->cap = cap;
}

void dynbuf_free(dynbuf_t *b)
{
    free(b->data);
    dynbuf_init(b, b->cap);
}

void dynbuf_reset(dynbuf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

static int dynbuf_reserve(dynbuf_t *b, size_t extra)
{
    if (extra > b->cap || b->len > b->cap - extra) return -1;
    size_t need = b->len + extra + 1;
    if (b->data && need <= b->alloc) return 0;
    size_t n = b->alloc ? b->alloc : 64;
    while (n < need) n *= 2;
    b->data = xrealloc(b->data, n);
    b->alloc = n;
    return 0;
}

int dynbuf_add(dynbuf_t *b, const void *data, size_t len)
{
    if (dynbuf_reserve(b, len)) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int dynbuf_addstr(dynbuf_t *b, const char *s)
{
    return dynbuf_add(b, s, strlen(s));
}

int dynbuf_add_int(dynbuf_t *b, long long v)
{
    char digits[24];
    size_t n = sizeof digits;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[--n] = '-';
    return dynbuf_add(b, digits + n, sizeof digits - n);
}

int dynbuf_printf(dynbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || dynbuf_reserve(b, (size_t)n)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    size_t n;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) n = 2, cp = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0) n = 3, cp = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0) n = 4, cp = s[0] & 0x07;
    else return 0;
    if (n > len) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

int dynbuf_add_json_string(dynbuf_t *b, const char *s, size_t len)
{
    size_t start_len = b->len;
    const unsigned char *u = (const unsigned char *)s;
    if (dynbuf_add(b, "\"", 1)) return -1;
    for (size_t i = 0; i < len;) {
        size_t run = i;
        /* Copy runs of bytes that need no escaping in one append. */
        while (run < len && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\') run++;
        if (run > i && dynbuf_add(b, s + i, run - i)) goto toobig;
        i = run;
        if (i >= len) break;
        unsigned char c = u[i];
        int rc;
        if (c == '"') rc = dynbuf_add(b, "\\\"", 2);
        else if (c == '\\') rc = dynbuf_add(b, "\\\\", 2);
        else if (c == '\n') rc = dynbuf_add(b, "\\n", 2);
        else if (c == '\r') rc = dynbuf_add(b, "\\r", 2);
        else if (c == '\t') rc = dynbuf_add(b, "\\t", 2);
        else if (c < 0x20) rc = dynbuf_printf(b, "\\u%04x", c);
        else {
            size_t n = utf8_seq_len(u + i, len - i);
            if (n == 0) {
                rc = dynbuf_add(b, "\\ufffd", 6);
                n = 1;
            } else {
                rc = dynbuf_add(b, s + i, n);
            }
            if (rc) goto toobig;
            i += n;
            continue;
        }
        if (rc) goto toobig;
        i++;
    }
    if (dynbuf_add(b, "\"", 1)) goto toobig;
    return 0;
toobig:
    b->len = start_len;
    if (b->data) b->data[b->len] = '\0';
    return -1;
}

char *dynbuf_take(dynbuf_t *b, size_t *len)
{
    if (!b->data) dynbuf_add(b, "", 0);
    /* Doubling leaves up to half of a buffer unused: a large one is cut to its size before it is kept (a result
     * line of a 600 KB item would otherwise hold 1 MB). */
    if (b->alloc - b->len - 1 >= DYNBUF_TRIM_SLACK) {
        b->data = xrealloc(b->data, b->len + 1);
        b->alloc = b->len + 1;
    }
    char *p = b->data;
    if (len) *len = b->len;
    dynbuf_init(b, b->cap);
    return p;
}
