/* Fuzz target: the exec handler's protocol on untrusted text: exec_proto_parse_reply() on a line a subprocess wrote
 * (its "result" is cut out of the line as written, by a scanner of our own) and exec_proto_request() on an item.
 *
 * Beyond "no crash, no leak, no undefined behaviour" it checks what the worker relies on: a result's text is the
 * reply's "result" member, valid JSON equal to what jansson reads there, and the result line built from it
 * (result_encode) is one line holding that value; an error or garbage reply always has its text; a request is one line, a JSON
 * object with the item's id and the item. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_proto.h"
#include "result.h"

#define FUZZ_NAME "fuzz_exec_proto"
#include "fuzz.h"

static void check_reply(const char *line, size_t len, const json_t *id)
{
    char *out;
    size_t out_len;
    char why[512] = "";
    exec_reply_t rc = exec_proto_parse_reply(line, len, id, &out, &out_len, why, sizeof why);
    if (rc == EXEC_REPLY_RESULT) {
        CHECK(out != NULL, "result without text");
        json_t *got = json_loadb(out, out_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        CHECK(got != NULL, "result text is not JSON: %.*s", (int)out_len, out);
        json_t *msg = json_loadb(line, len, 0, NULL);
        CHECK(msg && json_equal(got, json_object_get(msg, "result")), "result text %.*s is not the reply's result",
              (int)out_len, out);
        size_t line_len;
        char *result_line = result_encode("7", true, out, out_len, NULL, 0, NULL, 0, 1, 1, &line_len);
        CHECK(!memchr(result_line, '\n', line_len) && !memchr(result_line, '\r', line_len),
              "result line has a line break: %.*s", (int)line_len, result_line);
        json_t *back = json_loadb(result_line, line_len, 0, NULL);
        CHECK(back && json_equal(json_object_get(back, "result"), got), "result line does not hold the result: %.*s",
              (int)line_len, result_line);
        json_decref(back);
        free(result_line);
        json_decref(got);
        json_decref(msg);
    } else if (rc == EXEC_REPLY_ERROR) {
        CHECK(out != NULL && strlen(out) == out_len, "error reply without its text");
    } else {
        CHECK(rc == EXEC_REPLY_GARBAGE && out == NULL && why[0], "garbage without a reason (rc %d)", (int)rc);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    /* The handler splits stdout on "\n": a reply line never holds one. */
    if (!memchr(data, '\n', size)) {
        json_t *ids[] = {json_integer(7), json_string("a")};
        for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
            check_reply(text, size, ids[k]);
            json_decref(ids[k]);
        }
    }

    /* The same bytes as an item (the worker only runs items that are valid JSON). */
    json_t *value = json_loadb(text, size, JSON_DECODE_ANY, NULL);
    if (value) {
        char *copy = malloc(size + 1);
        memcpy(copy, data, size);
        copy[size] = '\0';
        size_t len;
        char *req = exec_proto_request("7", copy, size, value, &len);
        CHECK(len > 0 && req[len - 1] == '\n' && !memchr(req, '\n', len - 1), "request is not one line");
        json_t *msg = json_loadb(req, len - 1, 0, NULL);
        CHECK(msg && json_is_object(msg), "request is not a JSON object: %.*s", (int)len, req);
        CHECK(json_integer_value(json_object_get(msg, "id")) == 7, "request lost the id");
        CHECK(json_equal(json_object_get(msg, "item"), value), "request's item is not the item");
        json_decref(msg);
        free(req);
        free(copy);
        json_decref(value);
    }
    return 0;
}
