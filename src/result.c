/* result: see result.h. */
#include "result.h"

#include <string.h>

#include "dynbuf.h"
#include "xalloc.h"

static void add_error(dynbuf_t *b, const char *error)
{
    size_t n = strlen(error);
    dynbuf_add_json_string(b, error, n > RESULT_ERROR_MAX ? RESULT_ERROR_MAX : n);
}

/* Appends valid JSON text on one line. Valid JSON holds raw CR or LF only as whitespace between tokens (in strings
 * they are escaped): spaces instead, so a handler's result text (an exec reply as written) or an item can never
 * split the line. */
static void add_json_one_line(dynbuf_t *b, const char *text, size_t len)
{
    size_t at = b->len;
    dynbuf_add(b, text, len);
    for (char *p = b->data ? b->data + at : NULL; p && p < b->data + b->len; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

char *result_encode(const char *id_json, bool ok, const char *result_json, size_t result_len, const char *error,
                    int status, const char *body, size_t body_len, int attempts, int64_t ms, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"id\":");
    dynbuf_addstr(&b, id_json);
    if (ok) {
        dynbuf_addstr(&b, ",\"ok\":true,\"result\":");
        add_json_one_line(&b, result_json, result_len);
    } else {
        dynbuf_addstr(&b, ",\"ok\":false,\"error\":");
        add_error(&b, error ? error : "unknown error");
        if (status > 0) {
            dynbuf_addstr(&b, ",\"status\":");
            dynbuf_add_int(&b, status);
        }
        if (body) {
            dynbuf_addstr(&b, ",\"body\":");
            dynbuf_add_json_string(&b, body, body_len);
        }
    }
    dynbuf_addstr(&b, ",\"attempts\":");
    dynbuf_add_int(&b, attempts);
    dynbuf_addstr(&b, ",\"ms\":");
    dynbuf_add_int(&b, ms);
    dynbuf_addstr(&b, "}");
    return dynbuf_take(&b, len);
}

void result_add_item(char **line, size_t *len, const char *item_text, size_t item_len, bool item_is_json)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_add(&b, *line, *len - 1); /* without its closing brace */
    if (item_is_json) {
        dynbuf_addstr(&b, ",\"item\":");
        add_json_one_line(&b, item_text, item_len);
    } else {
        dynbuf_addstr(&b, ",\"item_raw\":");
        dynbuf_add_json_string(&b, item_text, item_len);
    }
    dynbuf_addstr(&b, "}");
    free(*line);
    *line = dynbuf_take(&b, len);
}

/* ---- compact JSON without jansson (see result.h) ---- */

#define COMPACT_KEYS_MAX 256 /* keys of all open objects together; more: leave it to jansson */

typedef struct compact_scan {
    const char *s;
    size_t len, i;
    bool spaces;                         /* whitespace seen between tokens */
    size_t key_start[COMPACT_KEYS_MAX];  /* raw spellings of the keys of the open objects, for duplicates */
    size_t key_len[COMPACT_KEYS_MAX];
    size_t n_keys;
} compact_scan_t;

static void compact_skip_space(compact_scan_t *c)
{
    while (c->i < c->len && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r')) {
        c->i++;
        c->spaces = true;
    }
}

/* A string at c->i. Every character of the subset has one spelling (printable ASCII, or one of jansson's short
 * escapes), so equal spellings are equal strings. */
static bool compact_string(compact_scan_t *c)
{
    if (c->i >= c->len || c->s[c->i] != '"') return false;
    for (c->i++; c->i < c->len; c->i++) {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') {
            c->i++;
            return true;
        }
        if (ch < 0x20 || ch > 0x7e) return false;
        if (ch == '\\') {
            if (++c->i >= c->len || !strchr("\"\\bfnrt", c->s[c->i]) || c->s[c->i] == '\0') return false;
        }
    }
    return false;
}

static bool compact_number(compact_scan_t *c)
{
    size_t start = c->i;
    if (c->s[c->i] == '-') c->i++;
    size_t digits = c->i;
    while (c->i < c->len && c->s[c->i] >= '0' && c->s[c->i] <= '9') c->i++;
    size_t n = c->i - digits;
    if (n == 0 || n > 18 || (n > 1 && c->s[digits] == '0')) return false;
    if (n == 1 && c->s[digits] == '0' && digits > start) return false; /* -0 is printed as 0 */
    /* A fraction or exponent makes a real, which jansson prints its own way. */
    return c->i >= c->len || !strchr(".eE", c->s[c->i]) || c->s[c->i] == '\0';
}

static bool compact_literal(compact_scan_t *c, const char *word)
{
    size_t n = strlen(word);
    if (c->len - c->i < n || memcmp(c->s + c->i, word, n) != 0) return false;
    c->i += n;
    return true;
}

static bool compact_value(compact_scan_t *c, int depth);

static bool compact_container(compact_scan_t *c, int depth)
{
    if (depth >= RESULT_COMPACT_DEPTH_MAX) return false;
    bool object = c->s[c->i] == '{';
    char close = object ? '}' : ']';
    size_t keys_base = c->n_keys;
    c->i++;
    compact_skip_space(c);
    if (c->i < c->len && c->s[c->i] == close) {
        c->i++;
        return true;
    }
    for (;;) {
        if (object) {
            size_t k = c->i;
            if (!compact_string(c)) return false;
            size_t klen = c->i - k;
            for (size_t j = keys_base; j < c->n_keys; j++)
                if (c->key_len[j] == klen && memcmp(c->s + c->key_start[j], c->s + k, klen) == 0) return false;
            if (c->n_keys == COMPACT_KEYS_MAX) return false;
            c->key_start[c->n_keys] = k;
            c->key_len[c->n_keys++] = klen;
            compact_skip_space(c);
            if (c->i >= c->len || c->s[c->i] != ':') return false;
            c->i++;
            compact_skip_space(c);
        }
        if (!compact_value(c, depth + 1)) return false;
        compact_skip_space(c);
        if (c->i >= c->len) return false;
        if (c->s[c->i] == close) {
            c->i++;
            c->n_keys = keys_base;
            return true;
        }
        if (c->s[c->i] != ',') return false;
        c->i++;
        compact_skip_space(c);
    }
}

static bool compact_value(compact_scan_t *c, int depth)
{
    if (c->i >= c->len) return false;
    switch (c->s[c->i]) {
    case '{':
    case '[': return compact_container(c, depth);
    case '"': return compact_string(c);
    case 't': return compact_literal(c, "true");
    case 'f': return compact_literal(c, "false");
    case 'n': return compact_literal(c, "null");
    default: return compact_number(c);
    }
}

int result_add_compact_json(dynbuf_t *b, const char *text, size_t len)
{
    compact_scan_t c;
    c.s = text;
    c.len = len;
    c.i = c.n_keys = 0;
    compact_skip_space(&c);
    size_t first = c.i;
    c.spaces = false;
    bool ok = compact_value(&c, 0);
    size_t last = c.i;
    bool spaces_inside = c.spaces;
    compact_skip_space(&c);
    if (!ok || c.i != len) return -1;
    if (!spaces_inside) return dynbuf_add(b, text + first, last - first);
    size_t start_len = b->len;
    bool in_string = false;
    for (size_t i = first; i < last; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\') {
                if (dynbuf_add(b, text + i, 2)) goto toobig;
                i++;
                continue;
            }
            if (ch == '"') in_string = false;
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            continue;
        } else if (ch == '"') {
            in_string = true;
        }
        if (dynbuf_add(b, &ch, 1)) goto toobig;
    }
    return 0;
toobig:
    b->len = start_len;
    if (b->data) b->data[b->len] = '\0';
    return -1;
}

char *result_dead_record(const char *id_json, const char *item_text, size_t item_len, bool item_is_json,
                         const char *error, int attempts, const char *chunk_id, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"id\":");
    dynbuf_addstr(&b, id_json);
    if (item_is_json) {
        dynbuf_addstr(&b, ",\"item\":");
        dynbuf_add(&b, item_text, item_len);
    } else {
        dynbuf_addstr(&b, ",\"raw\":");
        dynbuf_add_json_string(&b, item_text, item_len);
    }
    dynbuf_addstr(&b, ",\"error\":");
    add_error(&b, error ? error : "unknown error");
    dynbuf_printf(&b, ",\"attempts\":%d,\"chunk\":", attempts);
    dynbuf_add_json_string(&b, chunk_id, strlen(chunk_id));
    dynbuf_addstr(&b, "}");
    return dynbuf_take(&b, len);
}

static bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Length of the JSON value at the start of s[0..len) with the whitespace before and after it (an item's text may
 * have both), or 0 if it does not end. It only matches brackets and strings; the caller validates the span. */
static size_t json_value_span(const char *s, size_t len)
{
    size_t depth = 0, i = 0, end = 0;
    bool in_string = false;
    while (i < len && json_space(s[i])) i++;
    for (; i < len && !end; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') {
                in_string = false;
                if (depth == 0) end = i + 1;
            }
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0) end = i; /* the end of an enclosing value: a scalar ended here */
            else if (--depth == 0) end = i + 1;
        } else if (depth == 0 && (c == ',' || json_space(c))) {
            end = i; /* end of a number, true, false or null */
        }
    }
    if (!end) return 0;
    while (end < len && json_space(s[end])) end++;
    return end;
}

int result_dead_item(const char *record, size_t len, json_t **id, char **text, size_t *text_len)
{
    json_t *root = json_loadb(record, len, JSON_ALLOW_NUL, NULL);
    json_t *jid = json_object_get(root, "id"), *item = json_object_get(root, "item"), *raw = json_object_get(root, "raw");
    if (!(json_is_string(jid) || json_is_integer(jid)) || (!item && !json_is_string(raw))) {
        json_decref(root);
        return -1;
    }
    *id = json_incref(jid);
    if (!item) {
        *text_len = json_string_length(raw);
        *text = xstrndup(json_string_value(raw), *text_len);
        json_decref(root);
        return 0;
    }
    /* Prefer the item's bytes as written in the record, so numbers keep their form; re-encode only if the record
     * was built some other way. */
    *text = NULL;
    static const char key_text[] = ",\"item\":";
    const char *key = memmem(record, len, key_text, sizeof key_text - 1);
    if (key) {
        const char *start = key + sizeof key_text - 1;
        size_t span = json_value_span(start, len - (size_t)(start - record));
        json_t *check = span ? json_loadb(start, span, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
        if (check && json_equal(check, item)) {
            *text = xstrndup(start, span);
            *text_len = span;
        }
        json_decref(check);
    }
    if (!*text) {
        *text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!*text) *text = xstrdup("null");
        *text_len = strlen(*text);
    }
    json_decref(root);
    return 0;
}

int result_dead_chunk_raw(const char *record, size_t len, char **raw, size_t *raw_len)
{
    json_t *root = json_loadb(record, len, JSON_ALLOW_NUL, NULL);
    json_t *text = json_object_get(root, "raw");
    int rc = -1;
    if (json_is_object(root) && !json_object_get(root, "id") && json_is_string(text)) {
        *raw_len = json_string_length(text);
        *raw = xstrndup(json_string_value(text), *raw_len);
        rc = 0;
    }
    json_decref(root);
    return rc;
}
