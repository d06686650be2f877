/* Unit tests of exec_proto: --cmd splitting, --env names, request lines and reply parsing (no processes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exec_proto.h"

/* Splits cmd and checks the arguments against the NULL-terminated list want. */
static void expect_argv(const char *cmd, const char *const *want)
{
    char err[256] = "";
    int argc = -1;
    char **argv = exec_proto_split_argv(cmd, &argc, err, sizeof err);
    assert_non_null(argv);
    int n = 0;
    while (want[n]) {
        assert_non_null(argv[n]);
        assert_string_equal(argv[n], want[n]);
        n++;
    }
    assert_int_equal(argc, n);
    assert_null(argv[n]);
    exec_proto_argv_free(argv);
}

static void expect_split_error(const char *cmd, const char *reason)
{
    char err[256] = "";
    int argc = -1;
    assert_null(exec_proto_split_argv(cmd, &argc, err, sizeof err));
    assert_non_null(strstr(err, reason));
}

static void test_split_plain(void **state)
{
    (void)state;
    expect_argv("python3 fn.py", (const char *[]){"python3", "fn.py", NULL});
    expect_argv("  python3\t -u  fn.py \n", (const char *[]){"python3", "-u", "fn.py", NULL});
    expect_argv("/bin/cat", (const char *[]){"/bin/cat", NULL});
}

static void test_split_quotes(void **state)
{
    (void)state;
    expect_argv("python3 -c 'import sys; print(1)'", (const char *[]){"python3", "-c", "import sys; print(1)", NULL});
    expect_argv("run \"a b\" 'c \"d\"' \"it's\"", (const char *[]){"run", "a b", "c \"d\"", "it's", NULL});
    /* Pieces next to each other join; empty quotes are an empty argument. */
    expect_argv("a\"b c\"d 'x'y", (const char *[]){"ab cd", "xy", NULL});
    expect_argv("cmd '' \"\"", (const char *[]){"cmd", "", "", NULL});
    /* No escapes, variables or globbing: what is written is what is passed. */
    expect_argv("echo \\n $HOME *.py ; rm", (const char *[]){"echo", "\\n", "$HOME", "*.py", ";", "rm", NULL});
}

static void test_split_errors(void **state)
{
    (void)state;
    expect_split_error("", "empty");
    expect_split_error("   \t ", "empty");
    expect_split_error("python3 -c 'oops", "unterminated single quote");
    expect_split_error("python3 \"oops", "unterminated double quote");
    char many[EXEC_ARGV_MAX * 2 + 16] = "";
    for (int i = 0; i <= EXEC_ARGV_MAX; i++) strcat(many, "a ");
    expect_split_error(many, "more than");
}

static void test_env_names(void **state)
{
    (void)state;
    char err[256];
    size_t n = 99;
    char **names = exec_proto_env_names("FOO, BAR_2 ,,_x", &n, err, sizeof err);
    assert_non_null(names);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "FOO");
    assert_string_equal(names[1], "BAR_2");
    assert_string_equal(names[2], "_x");
    assert_null(names[3]);
    exec_proto_argv_free(names);
    names = exec_proto_env_names("", &n, err, sizeof err);
    assert_non_null(names);
    assert_int_equal(n, 0);
    assert_null(names[0]);
    exec_proto_argv_free(names);
    assert_null(exec_proto_env_names("FOO,2BAD", &n, err, sizeof err));
    assert_non_null(strstr(err, "'2BAD'"));
    assert_null(exec_proto_env_names("A=1", &n, err, sizeof err));
    assert_null(exec_proto_env_names("A B", &n, err, sizeof err));
}

static void test_request(void **state)
{
    (void)state;
    size_t len;
    char *r = exec_proto_request("\"a\"", "{\"x\":1.10}", 10, NULL, &len);
    assert_string_equal(r, "{\"id\":\"a\",\"item\":{\"x\":1.10}}\n");
    assert_int_equal(len, strlen(r));
    free(r);
    /* An item whose text spans lines is written compactly, so the request stays one line. */
    json_t *v = json_loads("{\"x\": [1,\n 2]}", 0, NULL);
    r = exec_proto_request("7", "{\"x\": [1,\n 2]}", 14, v, &len);
    assert_string_equal(r, "{\"id\":7,\"item\":{\"x\":[1,2]}}\n");
    free(r);
    json_decref(v);
}

/* Parses line as the reply to the item with id want (JSON text) and checks the outcome. */
static void expect_reply(const char *line, const char *want, exec_reply_t rc, const char *out_or_why)
{
    json_t *id = json_loads(want, JSON_DECODE_ANY, NULL);
    char *out = NULL, why[256] = "";
    size_t out_len = 0;
    assert_int_equal(exec_proto_parse_reply(line, strlen(line), id, &out, &out_len, why, sizeof why), rc);
    if (rc == EXEC_REPLY_GARBAGE) {
        assert_null(out);
        if (!strstr(why, out_or_why)) fail_msg("why \"%s\" lacks \"%s\"", why, out_or_why);
    } else {
        assert_non_null(out);
        assert_string_equal(out, out_or_why);
        assert_int_equal(out_len, strlen(out));
    }
    free(out);
    json_decref(id);
}

static void test_reply_result(void **state)
{
    (void)state;
    /* The result's text is kept as written: number formatting, spacing inside, key order. */
    expect_reply("{\"id\": 7, \"result\": {\"b\": 1.10, \"a\": [1e3, \"x,}\"]}}", "7", EXEC_REPLY_RESULT,
                 "{\"b\": 1.10, \"a\": [1e3, \"x,}\"]}");
    expect_reply("{\"result\":0.1,\"id\":\"k\"}", "\"k\"", EXEC_REPLY_RESULT, "0.1");
    expect_reply("{\"id\":\"k\",\"result\":\"a\\\"b\"}\r", "\"k\"", EXEC_REPLY_RESULT, "\"a\\\"b\"");
    expect_reply("{\"id\":1,\"result\":null,\"extra\":{\"result\":2}}", "1", EXEC_REPLY_RESULT, "null");
    /* A duplicate key: the last one wins, as in the parser. */
    expect_reply("{\"id\":1,\"result\":1,\"result\":2}", "1", EXEC_REPLY_RESULT, "2");
    /* A key spelled with an escape still works (re-encoded). */
    expect_reply("{\"id\":1,\"r\\u0065sult\":[true]}", "1", EXEC_REPLY_RESULT, "[true]");
}

static void test_reply_error(void **state)
{
    (void)state;
    expect_reply("{\"id\":1,\"error\":\"ValueError('x')\"}", "1", EXEC_REPLY_ERROR, "ValueError('x')");
    expect_reply("{\"id\":1,\"error\":{\"code\":3}}", "1", EXEC_REPLY_ERROR, "{\"code\":3}");
}

static void test_reply_garbage(void **state)
{
    (void)state;
    expect_reply("hello", "1", EXEC_REPLY_GARBAGE, "not JSON");
    expect_reply("", "1", EXEC_REPLY_GARBAGE, "not JSON");
    expect_reply("[1,2]", "1", EXEC_REPLY_GARBAGE, "not a JSON object");
    expect_reply("{\"id\":2,\"result\":1}", "1", EXEC_REPLY_GARBAGE, "answered id 2 while item 1");
    expect_reply("{\"id\":\"1\",\"result\":1}", "1", EXEC_REPLY_GARBAGE, "answered id \"1\" while item 1");
    expect_reply("{\"result\":1}", "1", EXEC_REPLY_GARBAGE, "answered id (none)");
    expect_reply("{\"id\":1}", "1", EXEC_REPLY_GARBAGE, "neither");
    expect_reply("{\"id\":1,\"result\":1,\"error\":\"x\"}", "1", EXEC_REPLY_GARBAGE, "both");
    expect_reply("{\"id\":1,\"result\":1} {}", "1", EXEC_REPLY_GARBAGE, "not JSON");
    expect_reply("{\"id\":1,\"result\":\"\xff\"}", "1", EXEC_REPLY_GARBAGE, "not JSON");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_plain),   cmocka_unit_test(test_split_quotes), cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_env_names),     cmocka_unit_test(test_request),      cmocka_unit_test(test_reply_result),
        cmocka_unit_test(test_reply_error),   cmocka_unit_test(test_reply_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
