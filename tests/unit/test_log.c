/* Unit tests of log: control bytes in a text line are escaped, so text from outside cannot forge or hide lines. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static void escapes_control_bytes(void **state)
{
    (void)state;
    char out[256];
    log_text_escape(out, sizeof out, "a\x1b[2Jb\rc\nd\te\x7f" "f\x01");
    assert_string_equal(out, "a\\x1b[2Jb\\x0dc\\x0ad\\x09e\\x7ff\\x01");
    /* C1 controls in UTF-8 (U+009B is a CSI) are escaped; other UTF-8 and backslashes pass as they are. */
    log_text_escape(out, sizeof out, "x\xc2\x9b" "2J \xc3\xa9 \xc2\xa0 \\n");
    assert_string_equal(out, "x\\xc2\\x9b2J \xc3\xa9 \xc2\xa0 \\n");
}

static void truncates_at_a_whole_escape(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(log_text_escape(out, sizeof out, "ab\x1b\x1b"), 6);
    assert_string_equal(out, "ab\\x1b");
    assert_int_equal(log_text_escape(out, sizeof out, "abcdefghij"), 7);
    assert_string_equal(out, "abcdefg");
    assert_int_equal(log_text_escape(out, 1, "abc"), 0);
    assert_string_equal(out, "");
}

/* Runs LOG with stderr on a pipe and returns what was written. */
static void logged(char *out, size_t cap, const char *msg)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    LOG(LL_WARN, "stderr: %s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t n = read(fds[0], out, cap - 1);
    close(fds[0]);
    assert_true(n > 0);
    out[n] = '\0';
}

static void a_text_line_has_one_newline(void **state)
{
    (void)state;
    char out[1024];
    log_set_json(false);
    logged(out, sizeof out, "\x1b[2Jhidden\rfake 2026-01-01T00:00:00.000Z info  ok\nnext");
    const char *msg = strstr(out, " warn  stderr: ");
    assert_non_null(msg);
    assert_string_equal(msg, " warn  stderr: \\x1b[2Jhidden\\x0dfake 2026-01-01T00:00:00.000Z info  ok\\x0anext\n");
    for (const char *p = out; *p; p++) assert_true((unsigned char)*p >= 0x20 || (*p == '\n' && p[1] == '\0'));
    /* JSON lines escape as JSON does. */
    log_set_json(true);
    logged(out, sizeof out, "\x1b\r\x7f\xc2\x9b\xc3\xa9\"");
    log_set_json(false);
    assert_non_null(strstr(out, "\"msg\":\"stderr: \\u001b\\u000d\\u007f\\u009b\xc3\xa9\\\"\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_control_bytes),
        cmocka_unit_test(truncates_at_a_whole_escape),
        cmocka_unit_test(a_text_line_has_one_newline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
