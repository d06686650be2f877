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

char *result_encode(const char *id_json, bool ok, const char *result_json, size_t result_len, const char *error,
                    int status, int attempts, int64_t ms, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"id\":");
    dynbuf_addstr(&b, id_json);
    if (ok) {
        dynbuf_addstr(&b, ",\"ok\":true,\"result\":");
        dynbuf_add(&b, result_json, result_len);
    } else {
        dynbuf_addstr(&b, ",\"ok\":false,\"error\":");
        add_error(&b, error ? error : "unknown error");
        if (status > 0) dynbuf_printf(&b, ",\"status\":%d", status);
    }
    dynbuf_printf(&b, ",\"attempts\":%d,\"ms\":%lld}", attempts, (long long)ms);
    return dynbuf_take(&b, len);
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
