/* Unit tests of result: result lines and dead-list records. Every line is checked by parsing it with jansson. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dynbuf.h"
#include "result.h"

/* Parses line[0..len) as one JSON object; fails the test otherwise. Checks there is no newline and that len is
 * the string's length. */
static json_t *parse_line(const char *line, size_t len)
{
    assert_non_null(line);
    assert_int_equal(strlen(line), len);
    assert_null(memchr(line, '\n', len));
    json_error_t jerr;
    json_t *v = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) fail_msg("not valid JSON (%s at %d): %s", jerr.text, jerr.position, line);
    assert_true(json_is_object(v));
    return v;
}

static void assert_int_field(json_t *o, const char *key, long long expected)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("field %s is not an integer", key);
    assert_int_equal(json_integer_value(v), expected);
}

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) fail_msg("field %s is not a string", key);
    return json_string_value(v);
}

static void test_ok_line(void **state)
{
    (void)state;
    const char *res = "{\"b\":1.10,\"a\":[1e3]}";
    size_t len = 0;
    char *line = result_encode("\"item-7\"", true, res, strlen(res), NULL, 0, NULL, 0, 1, 103, &len);
    json_t *o = parse_line(line, len);
    assert_string_equal(str_field(o, "id"), "item-7");
    assert_true(json_is_true(json_object_get(o, "ok")));
    assert_true(json_is_object(json_object_get(o, "result")));
    assert_null(json_object_get(o, "error"));
    assert_int_field(o, "attempts", 1);
    assert_int_field(o, "ms", 103);
    assert_int_equal(json_object_size(o), 5);
    /* The result's text goes into the line as it is: number formatting and key order are kept. */
    assert_non_null(strstr(line, "\"result\":{\"b\":1.10,\"a\":[1e3]}"));
    assert_string_equal(line, "{\"id\":\"item-7\",\"ok\":true,\"result\":{\"b\":1.10,\"a\":[1e3]},"
                              "\"attempts\":1,\"ms\":103}");
    json_decref(o);
    free(line);
}

static void test_ok_line_result_line_breaks_become_spaces(void **state)
{
    (void)state;
    /* A handler's result as written (an exec reply) may hold raw CR/LF as whitespace; a string's escaped \n stays. */
    const char *res = "{\"a\":[1,\r\n2]\r,\n\"s\":\"x\\ny\"}";
    size_t len = 0;
    char *line = result_encode("1", true, res, strlen(res), NULL, 0, NULL, 0, 1, 5, &len);
    assert_null(memchr(line, '\n', len));
    assert_null(memchr(line, '\r', len));
    json_t *o = parse_line(line, len);
    json_t *want = json_loads("{\"a\":[1,2],\"s\":\"x\\ny\"}", 0, NULL);
    assert_true(json_equal(json_object_get(o, "result"), want));
    json_decref(want);
    json_decref(o);
    free(line);
}

static void test_ok_line_integer_id_and_scalar_result(void **state)
{
    (void)state;
    size_t len = 0;
    /* Only result_len bytes of the result are used. */
    char *line = result_encode("42", true, "nullXYZ", 4, "ignored", 0, NULL, 0, 3, 0, &len);
    json_t *o = parse_line(line, len);
    assert_int_field(o, "id", 42);
    assert_true(json_is_true(json_object_get(o, "ok")));
    assert_true(json_is_null(json_object_get(o, "result")));
    assert_null(json_object_get(o, "error"));
    assert_int_field(o, "attempts", 3);
    assert_int_field(o, "ms", 0);
    json_decref(o);
    free(line);
}

static void test_large_ms(void **state)
{
    (void)state;
    size_t len = 0;
    char *line = result_encode("1", true, "1", 1, NULL, 0, NULL, 0, 2147483647, INT64_C(90000000000), &len);
    json_t *o = parse_line(line, len);
    assert_int_field(o, "attempts", 2147483647);
    assert_int_field(o, "ms", 90000000000LL);
    json_decref(o);
    free(line);
}

static void test_error_line(void **state)
{
    (void)state;
    size_t len = 0;
    char *line = result_encode("\"x\"", false, NULL, 0, "handler timed out", 0, NULL, 0, 2, 5000, &len);
    json_t *o = parse_line(line, len);
    assert_string_equal(str_field(o, "id"), "x");
    assert_true(json_is_false(json_object_get(o, "ok")));
    assert_string_equal(str_field(o, "error"), "handler timed out");
    assert_null(json_object_get(o, "result"));
    assert_int_field(o, "attempts", 2);
    assert_int_field(o, "ms", 5000);
    assert_int_equal(json_object_size(o), 5);
    json_decref(o);
    free(line);
}

static void test_error_null_still_an_error(void **state)
{
    (void)state;
    size_t len = 0;
    char *line = result_encode("1", false, NULL, 0, NULL, 0, NULL, 0, 1, 1, &len);
    json_t *o = parse_line(line, len);
    assert_true(json_is_false(json_object_get(o, "ok")));
    assert_true(strlen(str_field(o, "error")) > 0);
    json_decref(o);
    free(line);
}

static void test_error_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *error;
        const char *expected; /* the error as parsed back */
    } cases[] = {
        {"say \"hi\"", "say \"hi\""},
        {"back\\slash", "back\\slash"},
        {"line1\nline2\r\n\tend", "line1\nline2\r\n\tend"},
        {"bell\x07 esc\x1b del\x7f", "bell\x07 esc\x1b del\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac"},
        {"bad \xff\xfe utf8 \xc3", "bad \xef\xbf\xbd\xef\xbf\xbd utf8 \xef\xbf\xbd"}, /* each bad byte: U+FFFD */
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 0;
        char *line = result_encode("1", false, NULL, 0, cases[i].error, 0, NULL, 0, 1, 1, &len);
        json_t *o = parse_line(line, len);
        const char *got = str_field(o, "error");
        if (strcmp(got, cases[i].expected) != 0) fail_msg("case %zu: error came back as %s", i, got);
        json_decref(o);
        free(line);
    }
}

static void test_error_cut_at_max(void **state)
{
    (void)state;
    char error[RESULT_ERROR_MAX * 3];
    memset(error, 'e', sizeof error - 1);
    error[sizeof error - 1] = '\0';
    size_t len = 0;
    char *line = result_encode("1", false, NULL, 0, error, 0, NULL, 0, 1, 1, &len);
    json_t *o = parse_line(line, len);
    const char *got = str_field(o, "error");
    assert_int_equal(strlen(got), RESULT_ERROR_MAX);
    assert_memory_equal(got, error, RESULT_ERROR_MAX);
    assert_int_field(o, "attempts", 1);
    json_decref(o);
    free(line);

    /* Exactly the maximum is kept whole. */
    error[RESULT_ERROR_MAX] = '\0';
    line = result_encode("1", false, NULL, 0, error, 0, NULL, 0, 1, 1, &len);
    o = parse_line(line, len);
    assert_int_equal(strlen(str_field(o, "error")), RESULT_ERROR_MAX);
    json_decref(o);
    free(line);
}

static void test_error_cut_inside_utf8_still_valid(void **state)
{
    (void)state;
    /* A two-byte character straddles the cut: the line must stay valid JSON. */
    char error[RESULT_ERROR_MAX + 8];
    memset(error, 'a', RESULT_ERROR_MAX - 1);
    memcpy(error + RESULT_ERROR_MAX - 1, "\xc3\xa9zzz", 6);
    size_t len = 0;
    char *line = result_encode("1", false, NULL, 0, error, 0, NULL, 0, 1, 1, &len);
    json_t *o = parse_line(line, len);
    const char *got = str_field(o, "error");
    assert_memory_equal(got, error, RESULT_ERROR_MAX - 1);
    assert_null(strchr(got, 'z'));
    json_decref(o);
    free(line);
}

static void test_error_control_chars_cut_valid(void **state)
{
    (void)state;
    /* Escapes make the line longer than the error, but the cut counts the error's own bytes. */
    char error[RESULT_ERROR_MAX + 100];
    memset(error, '\n', sizeof error - 1);
    error[sizeof error - 1] = '\0';
    size_t len = 0;
    char *line = result_encode("1", false, NULL, 0, error, 0, NULL, 0, 1, 1, &len);
    json_t *o = parse_line(line, len);
    assert_int_equal(strlen(str_field(o, "error")), RESULT_ERROR_MAX);
    json_decref(o);
    free(line);
}

static void test_dead_record_json_item(void **state)
{
    (void)state;
    const char *item = "{\"id\":\"k\",\"n\":1.50}";
    size_t len = 0;
    char *rec = result_dead_record("\"k\"", item, strlen(item), true, "boom \"quoted\"\n", 3, "abc-1", &len);
    json_t *o = parse_line(rec, len);
    assert_string_equal(str_field(o, "id"), "k");
    json_t *it = json_object_get(o, "item");
    assert_true(json_is_object(it));
    assert_string_equal(json_string_value(json_object_get(it, "id")), "k");
    assert_null(json_object_get(o, "raw"));
    assert_string_equal(str_field(o, "error"), "boom \"quoted\"\n");
    assert_int_field(o, "attempts", 3);
    assert_string_equal(str_field(o, "chunk"), "abc-1");
    assert_int_equal(json_object_size(o), 5);
    /* The item's text is kept exactly. */
    assert_non_null(strstr(rec, "\"item\":{\"id\":\"k\",\"n\":1.50}"));
    json_decref(o);
    free(rec);
}

static void test_dead_record_raw_item(void **state)
{
    (void)state;
    const char raw[] = "{not json \"at\" all\\\n\x01\xff";
    size_t len = 0;
    char *rec = result_dead_record("17", raw, sizeof raw - 1, false, "item is not valid JSON", 0, "c\"x", &len);
    json_t *o = parse_line(rec, len);
    assert_int_field(o, "id", 17);
    assert_null(json_object_get(o, "item"));
    const char *got = str_field(o, "raw");
    assert_string_equal(got, "{not json \"at\" all\\\n\x01\xef\xbf\xbd");
    assert_string_equal(str_field(o, "error"), "item is not valid JSON");
    assert_int_field(o, "attempts", 0);
    assert_string_equal(str_field(o, "chunk"), "c\"x");
    json_decref(o);
    free(rec);
}

static void test_dead_record_error_cut(void **state)
{
    (void)state;
    char error[RESULT_ERROR_MAX + 500];
    memset(error, 'x', sizeof error - 1);
    error[sizeof error - 1] = '\0';
    size_t len = 0;
    char *rec = result_dead_record("1", "[1]", 3, true, error, 1, "c", &len);
    json_t *o = parse_line(rec, len);
    assert_int_equal(strlen(str_field(o, "error")), RESULT_ERROR_MAX);
    assert_true(json_is_array(json_object_get(o, "item")));
    json_decref(o);
    free(rec);

    rec = result_dead_record("1", "[1]", 3, true, NULL, 1, "c", &len);
    o = parse_line(rec, len);
    assert_true(strlen(str_field(o, "error")) > 0);
    json_decref(o);
    free(rec);
}

static void test_error_line_with_status(void **state)
{
    (void)state;
    size_t len = 0;
    char *line = result_encode("1", false, NULL, 0, "HTTP 503", 503, NULL, 0, 5, 10, &len);
    json_t *o = parse_line(line, len);
    assert_int_field(o, "status", 503);
    assert_int_field(o, "attempts", 5);
    assert_null(json_object_get(o, "body"));
    json_decref(o);
    free(line);
    /* A failure keeps the excerpt of the response body it was given, as a string (any bytes), after "status". */
    line = result_encode("1", false, NULL, 0, "HTTP 500", 500, "{\"e\":\n1}\xff", 9, 2, 10, &len);
    o = parse_line(line, len);
    assert_int_field(o, "status", 500);
    assert_string_equal(str_field(o, "body"), "{\"e\":\n1}\xef\xbf\xbd");
    assert_true(strstr(line, "\"status\":500,\"body\":") != NULL);
    json_decref(o);
    free(line);
    /* A success never carries "status" at the top level: it belongs to the handler's result. */
    line = result_encode("1", true, "{}", 2, NULL, 200, NULL, 0, 1, 10, &len);
    o = parse_line(line, len);
    assert_null(json_object_get(o, "status"));
    json_decref(o);
    free(line);
}

static void test_dead_item_round_trip_keeps_bytes(void **state)
{
    (void)state;
    const char *item = "{\"b\":1.10,\"a\":[1e3,\"x,\\\"item\\\":}\"]}";
    size_t len = 0, text_len = 0;
    char *rec = result_dead_record("\"k,\\\"item\\\":2\"", item, strlen(item), true, "HTTP 500", 5, "c-1", &len);
    json_t *id = NULL;
    char *text = NULL;
    assert_int_equal(result_dead_item(rec, len, &id, &text, &text_len), 0);
    assert_string_equal(json_string_value(id), "k,\"item\":2");
    assert_int_equal(text_len, strlen(item));
    assert_memory_equal(text, item, text_len);
    json_decref(id);
    free(text);
    free(rec);
}

static void test_dead_item_scalar_and_raw(void **state)
{
    (void)state;
    size_t len = 0, text_len = 0;
    json_t *id = NULL;
    char *text = NULL;
    char *rec = result_dead_record("3", "42", 2, true, "e", 1, "c", &len);
    assert_int_equal(result_dead_item(rec, len, &id, &text, &text_len), 0);
    assert_int_equal(json_integer_value(id), 3);
    assert_string_equal(text, "42");
    json_decref(id);
    free(text);
    free(rec);
    rec = result_dead_record("4", "not json", 8, false, "e", 1, "c", &len);
    assert_int_equal(result_dead_item(rec, len, &id, &text, &text_len), 0);
    assert_string_equal(text, "not json");
    json_decref(id);
    free(text);
    free(rec);
}

static void test_dead_item_rejects_chunk_records(void **state)
{
    (void)state;
    json_t *id = NULL;
    char *text = NULL;
    size_t text_len = 0;
    const char *chunk_rec = "{\"error\":\"chunk is not valid JSON\",\"raw\":\"garbage\"}";
    assert_int_equal(result_dead_item(chunk_rec, strlen(chunk_rec), &id, &text, &text_len), -1);
    assert_int_equal(result_dead_item("nope", 4, &id, &text, &text_len), -1);
    /* Built by hand with spaces: the item is re-encoded, still the same value. */
    const char *hand = "{\"id\": 1, \"item\": {\"x\": 1}, \"error\": \"e\"}";
    assert_int_equal(result_dead_item(hand, strlen(hand), &id, &text, &text_len), 0);
    assert_string_equal(text, "{\"x\":1}");
    json_decref(id);
    free(text);
}

/* Found by fuzzing: an item enqueued with space around it (valid JSON) came back from the dead list re-encoded
 * (1.50 became 1.5) or without its trailing space. */
static void test_dead_item_keeps_surrounding_space(void **state)
{
    (void)state;
    static const char *const items[] = {"  {\"a\":1.50} ", "\t[1e3]", "1.50 ", " \"s\"", "{\"x\":\"}\"}  "};
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        size_t len = 0, text_len = 0;
        char *rec = result_dead_record("7", items[i], strlen(items[i]), true, "e", 1, "c", &len);
        json_t *id = NULL;
        char *text = NULL;
        assert_int_equal(result_dead_item(rec, len, &id, &text, &text_len), 0);
        if (text_len != strlen(items[i]) || memcmp(text, items[i], text_len) != 0)
            fail_msg("item '%s' read back as '%.*s'", items[i], (int)text_len, text);
        json_decref(id);
        free(text);
        free(rec);
    }
}

/* Found by fuzzing: the record is counted bytes (a Redis reply), but it was searched with strstr(), which reads to
 * a NUL that need not be there. */
static void test_dead_item_reads_only_len_bytes(void **state)
{
    (void)state;
    static const char record[] = "{\"item\":1.50,\"id\":1,\"error\":\"e\"}";
    size_t len = sizeof record - 1;
    char *exact = malloc(len); /* no NUL after it */
    memcpy(exact, record, len);
    json_t *id = NULL;
    char *text = NULL;
    size_t text_len = 0;
    assert_int_equal(result_dead_item(exact, len, &id, &text, &text_len), 0);
    assert_int_equal(json_integer_value(id), 1);
    assert_string_equal(text, "1.5"); /* no ',"item":' to copy from: re-encoded */
    json_decref(id);
    free(text);
    free(exact);
}

/* result_add_compact_json must print exactly what jansson's json_loadb + json_dumps(JSON_COMPACT) print, or
 * decline and leave the buffer alone. text_is_fast: whether it should take the text (the subset). */
static void assert_compact_like_jansson(const char *text, size_t len, bool text_is_fast)
{
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    dynbuf_addstr(&b, "<");
    int rc = result_add_compact_json(&b, text, len);
    if (rc) {
        if (text_is_fast) fail_msg("declined: %.*s", (int)len, text);
        assert_int_equal(b.len, 1);
        dynbuf_free(&b);
        return;
    }
    if (!text_is_fast) fail_msg("took text outside the subset: %.*s", (int)len, text);
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    char *want = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!want) fail_msg("jansson cannot parse what was taken: %.*s", (int)len, text);
    assert_string_equal(b.data + 1, want);
    free(want);
    json_decref(v);
    dynbuf_free(&b);
}

static void test_compact_json_subset(void **state)
{
    (void)state;
    const char *fast[] = {"{\"ok\":true}\n", "{\"b\":1,\"a\":2}", " [1, 2 ,3] ", "\"a\\\"b\\\\c\\n\\t\\r\\b\\f\"",
                          "0", "-1", "123456789012345678", "{\"a\":{\"a\":1},\"b\":{\"a\":2}}", "[]", "{ }",
                          "{\"k\" : \"v\" , \"n\" : [ true , false , null ] }", "\"a b\""};
    const char *slow[] = {"\"\\/\"", "\"\\u0041\"", "-0", "01", "1.5", "1e3", "1234567890123456789",
                          "{\"a\":1,\"a\":2}", "tru", "nulls", "", "  ", "[1,]", "{\"a\":1,}", "\"\\x\"",
                          "\"caf\xc3\xa9\"", "[\"a\" \"b\"]", "{\"a\"}", "1 2", "-", "\"a\tb\"", "\"\x7f\"",
                          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++) assert_compact_like_jansson(fast[i], strlen(fast[i]), true);
    for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++) assert_compact_like_jansson(slow[i], strlen(slow[i]), false);
    assert_compact_like_jansson("\"a\0b\"", 5, false);
}

/* Random texts from JSON's alphabet, and random JSON values with random whitespace: whatever is taken must match
 * jansson byte for byte. */
static void compact_gen(char *out, size_t *o, int depth)
{
    static const char *const atoms[] = {"0", "-0", "1", "-12", "007", "1.0", "2e5", "123456789012345678",
                                        "9999999999999999999", "true", "false", "null", "\"\"", "\"b\\\"c\"",
                                        "\"\\b\\f\\n\\r\\t\"", "\"\\/\"", "\"\\u00e9\"", "\"\x01\"",
                                        "\"\xc3\xa9\""};
    static const char *const keys[] = {"\"a\"", "\"b\"", "\"a\\n\"", "\"\\\"\""};
    static const char space[] = " \t\n\r";
    if (rand() % 4 == 0) out[(*o)++] = space[rand() % 4];
    int r = rand() % 10;
    if (*o < 3000 && depth < 40 && r < 4) {
        bool object = r < 2;
        out[(*o)++] = object ? '{' : '[';
        for (int i = 0, n = rand() % 4; i < n; i++) {
            if (i) out[(*o)++] = ',';
            if (object) {
                const char *k = keys[rand() % 4];
                memcpy(out + *o, k, strlen(k));
                *o += strlen(k);
                out[(*o)++] = ':';
            }
            compact_gen(out, o, depth + 1);
        }
        out[(*o)++] = object ? '}' : ']';
    } else {
        const char *a = atoms[rand() % (int)(sizeof atoms / sizeof atoms[0])];
        memcpy(out + *o, a, strlen(a));
        *o += strlen(a);
    }
    if (rand() % 4 == 0) out[(*o)++] = space[rand() % 4];
}

static void assert_compact_agrees(const char *text, size_t len)
{
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    if (result_add_compact_json(&b, text, len) == 0) {
        json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        char *want = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (!want || strcmp(want, b.data) != 0)
            fail_msg("%.*s: printed %s, jansson %s", (int)len, text, b.data, want ? want : "(invalid)");
        free(want);
        json_decref(v);
    } else {
        assert_int_equal(b.len, 0);
    }
    dynbuf_free(&b);
}

static void test_compact_json_random(void **state)
{
    (void)state;
    srand(1);
    static const char alphabet[] = "{}[]\":,0123-.eEtrufalsn \\\n/bx";
    char text[8192];
    for (int i = 0; i < 200000; i++) {
        size_t n = (size_t)(rand() % 24);
        for (size_t j = 0; j < n; j++) text[j] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        assert_compact_agrees(text, n);
    }
    for (int i = 0; i < 50000; i++) {
        size_t n = 0;
        compact_gen(text, &n, 0);
        assert_compact_agrees(text, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_line),
        cmocka_unit_test(test_ok_line_result_line_breaks_become_spaces),
        cmocka_unit_test(test_ok_line_integer_id_and_scalar_result),
        cmocka_unit_test(test_large_ms),
        cmocka_unit_test(test_error_line),
        cmocka_unit_test(test_error_null_still_an_error),
        cmocka_unit_test(test_error_escaping),
        cmocka_unit_test(test_error_cut_at_max),
        cmocka_unit_test(test_error_cut_inside_utf8_still_valid),
        cmocka_unit_test(test_error_control_chars_cut_valid),
        cmocka_unit_test(test_dead_record_json_item),
        cmocka_unit_test(test_dead_record_raw_item),
        cmocka_unit_test(test_dead_record_error_cut),
        cmocka_unit_test(test_error_line_with_status),
        cmocka_unit_test(test_dead_item_round_trip_keeps_bytes),
        cmocka_unit_test(test_dead_item_scalar_and_raw),
        cmocka_unit_test(test_dead_item_rejects_chunk_records),
        cmocka_unit_test(test_dead_item_keeps_surrounding_space),
        cmocka_unit_test(test_dead_item_reads_only_len_bytes),
        cmocka_unit_test(test_compact_json_subset),
        cmocka_unit_test(test_compact_json_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
