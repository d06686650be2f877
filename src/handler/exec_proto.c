/* exec_proto: see exec_proto.h. */
#include "exec_proto.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynbuf.h"
#include "xalloc.h"

void exec_proto_argv_free(char **argv)
{
    if (!argv) return;
    for (char **a = argv; *a; a++) free(*a);
    free(argv);
}

char **exec_proto_split_argv(const char *cmd, int *argc, char *err, size_t errlen)
{
    char **argv = xcalloc(EXEC_ARGV_MAX + 1, sizeof(char *));
    int n = 0;
    size_t cap = strlen(cmd) + 1;
    char *arg = xmalloc(cap);
    const char *p = cmd;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        size_t len = 0;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '\'' || *p == '"') {
                char quote = *p++;
                const char *end = strchr(p, quote);
                if (!end) {
                    snprintf(err, errlen, "unterminated %s quote in the command", quote == '"' ? "double" : "single");
                    goto fail;
                }
                memcpy(arg + len, p, (size_t)(end - p));
                len += (size_t)(end - p);
                p = end + 1;
            } else {
                arg[len++] = *p++;
            }
        }
        if (n == EXEC_ARGV_MAX) {
            snprintf(err, errlen, "more than %d arguments in the command", EXEC_ARGV_MAX);
            goto fail;
        }
        argv[n++] = xstrndup(arg, len);
    }
    if (n == 0) {
        snprintf(err, errlen, "the command is empty");
        goto fail;
    }
    free(arg);
    *argc = n;
    return argv;
fail:
    free(arg);
    exec_proto_argv_free(argv);
    return NULL;
}

static bool env_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 255 || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

char **exec_proto_env_names(const char *list, size_t *n, char *err, size_t errlen)
{
    size_t count = 0;
    for (const char *p = list; *p; p++) count += *p == ',';
    char **names = xcalloc(count + 2, sizeof(char *));
    *n = 0;
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (len) {
            if (!env_name_ok(p, len)) {
                snprintf(err, errlen, "'%.*s' is not an environment variable name (letters, digits and _, not "
                         "starting with a digit)", (int)(len > 64 ? 64 : len), p);
                exec_proto_argv_free(names);
                return NULL;
            }
            names[(*n)++] = xstrndup(p, len);
        }
        p = end ? end + 1 : NULL;
    }
    return names;
}

char *exec_proto_request(const char *id_json, const char *text, size_t text_len, const json_t *value, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"id\":");
    dynbuf_addstr(&b, id_json);
    dynbuf_addstr(&b, ",\"item\":");
    char *compact = NULL;
    if (value && (memchr(text, '\n', text_len) || memchr(text, '\r', text_len)))
        compact = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (compact) dynbuf_addstr(&b, compact);
    else dynbuf_add(&b, text, text_len);
    free(compact);
    dynbuf_addstr(&b, "}\n");
    return dynbuf_take(&b, len);
}

/* ---- replies ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* p is at an opening quote of a valid JSON string: returns the position after its closing quote. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\') p++;
    return p < end ? p + 1 : end;
}

/* p is at the start of a valid JSON value: returns the position after it. */
static const char *skip_value(const char *p, const char *end)
{
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
        p++;
    return p;
}

/* The text of the last top-level member named key of the object in line (already validated as a JSON object):
 * the value exactly as the subprocess wrote it, so numbers keep their formatting. Returns false when the key only
 * appears spelled with escapes. */
static bool member_text(const char *line, size_t len, const char *key, const char **value, size_t *value_len)
{
    const char *p = line, *end = line + len;
    size_t key_len = strlen(key);
    bool found = false;
    p = skip_ws(p, end);
    if (p == end || *p != '{') return false;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p == end || *p != '"') return found;
        const char *k = p + 1;
        p = skip_string(p, end);
        bool match = (size_t)(p - 1 - k) == key_len && memcmp(k, key, key_len) == 0;
        p = skip_ws(p, end);
        if (p == end || *p != ':') return found;
        p = skip_ws(p + 1, end);
        const char *v = p;
        p = skip_value(p, end);
        if (match) {
            *value = v;
            *value_len = (size_t)(p - v);
            found = true;
        }
        p = skip_ws(p, end);
        if (p == end || *p != ',') return found;
        p++;
    }
}

exec_reply_t exec_proto_parse_reply(const char *line, size_t len, const json_t *want_id, char **out, size_t *out_len,
                                    char *why, size_t whylen)
{
    *out = NULL;
    *out_len = 0;
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, 0, &jerr);
    if (!msg) {
        snprintf(why, whylen, "wrote a line that is not JSON (%s): %.*s%s", jerr.text, (int)(len > 80 ? 80 : len), line,
                 len > 80 ? "..." : "");
        return EXEC_REPLY_GARBAGE;
    }
    exec_reply_t rc = EXEC_REPLY_GARBAGE;
    json_t *id = json_object_get(msg, "id");
    json_t *result = json_object_get(msg, "result");
    json_t *error = json_object_get(msg, "error");
    if (!json_is_object(msg)) {
        snprintf(why, whylen, "wrote a line that is not a JSON object: %.*s%s", (int)(len > 80 ? 80 : len), line,
                 len > 80 ? "..." : "");
    } else if (!id || !json_equal(id, want_id)) {
        char *got = id ? json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char *want = json_dumps(want_id, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(why, whylen, "answered id %.64s while item %.64s was in flight", got ? got : "(none)",
                 want ? want : "?");
        free(got);
        free(want);
    } else if (!result == !error) {
        snprintf(why, whylen, "wrote a reply with %s of \"result\" and \"error\"", result ? "both" : "neither");
    } else if (result) {
        const char *text;
        size_t text_len;
        if (member_text(line, len, "result", &text, &text_len)) {
            *out = xstrndup(text, text_len);
            *out_len = text_len;
        } else {
            *out = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);
            *out_len = *out ? strlen(*out) : 0;
        }
        rc = *out ? EXEC_REPLY_RESULT : EXEC_REPLY_GARBAGE;
        if (!*out) snprintf(why, whylen, "wrote a result that cannot be encoded");
    } else {
        *out = json_is_string(error) ? xstrdup(json_string_value(error)) : json_dumps(error, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!*out) *out = xstrdup("(error)");
        *out_len = strlen(*out);
        rc = EXEC_REPLY_ERROR;
    }
    json_decref(msg);
    return rc;
}
