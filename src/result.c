/* result: see result.h. */
#include "result.h"

#include <string.h>

#include "dynbuf.h"

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
