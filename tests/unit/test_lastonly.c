/* Unit tests of src/lastonly.c: the last line (highest seq) of each id is kept, in the file's order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lastonly.h"

/* Writes text to a new temporary file, rewrites it with lastonly_rewrite (which must succeed), checks the counts
 * and returns the file's new text in buf. */
static void rewrite_text(const char *text, long long want_kept, long long want_dropped, char *buf, size_t buflen)
{
    char path[] = "/tmp/chunkd-lastonly-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    long long kept = 0, dropped = 0;
    char err[256];
    assert_int_equal(lastonly_rewrite(path, &kept, &dropped, err, sizeof err), 0);
    assert_int_equal(kept, want_kept);
    assert_int_equal(dropped, want_dropped);
    f = fopen(path, "r");
    size_t n = fread(buf, 1, buflen - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
}

static void test_keeps_highest_seq_per_id(void **state)
{
    (void)state;
    char buf[1024];
    rewrite_text("{\"id\":1,\"ok\":false,\"seq\":\"100-0\"}\n"
                 "{\"id\":\"a\",\"ok\":true,\"seq\":\"100-1\"}\n"
                 "{\"id\":2,\"ok\":true,\"seq\":\"99-5\"}\n"
                 "not json\n"
                 "{\"id\":1,\"ok\":true,\"seq\":\"100-10\"}\n"
                 "{\"id\":2,\"ok\":false,\"seq\":\"99-4\"}\n",
                 4, 2, buf, sizeof buf);
    assert_string_equal(buf, "{\"id\":\"a\",\"ok\":true,\"seq\":\"100-1\"}\n"
                             "{\"id\":2,\"ok\":true,\"seq\":\"99-5\"}\n"
                             "not json\n"
                             "{\"id\":1,\"ok\":true,\"seq\":\"100-10\"}\n");
}

/* Seqs of three numbers (line i of entry ms-n) and of two (entries of older workers, i taken as 0) compare number
 * by number. */
static void test_seq_with_line_index(void **state)
{
    (void)state;
    char buf[1024];
    rewrite_text("{\"id\":1,\"ok\":true,\"seq\":\"100-0-7\"}\n"
                 "{\"id\":1,\"ok\":false,\"seq\":\"100-0-6\"}\n"
                 "{\"id\":2,\"ok\":false,\"seq\":\"100-0\"}\n"
                 "{\"id\":2,\"ok\":true,\"seq\":\"100-0-1\"}\n"
                 "{\"id\":3,\"ok\":true,\"seq\":\"100-1\"}\n"
                 "{\"id\":3,\"ok\":false,\"seq\":\"100-0-99\"}\n",
                 3, 3, buf, sizeof buf);
    assert_string_equal(buf, "{\"id\":1,\"ok\":true,\"seq\":\"100-0-7\"}\n"
                             "{\"id\":2,\"ok\":true,\"seq\":\"100-0-1\"}\n"
                             "{\"id\":3,\"ok\":true,\"seq\":\"100-1\"}\n");
}

static void test_missing_file_is_an_error(void **state)
{
    (void)state;
    long long kept, dropped;
    char err[256];
    assert_int_equal(lastonly_rewrite("/nonexistent/x.jsonl", &kept, &dropped, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.jsonl"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keeps_highest_seq_per_id),
        cmocka_unit_test(test_seq_with_line_index),
        cmocka_unit_test(test_missing_file_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
