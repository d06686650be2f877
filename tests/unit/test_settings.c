/* Unit tests of settings_parse(): defaults, environment and flags, validation, and the messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "settings.h"

/* argv and envp arrays, NULL-terminated. argv[0] is the subcommand name. */
#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})
#define ENVP(...) ((char *[]){__VA_ARGS__, NULL})
#define NOENV ((char *[]){NULL})

static char err[1024];

static settings_rc_t parse(settings_t *s, int cmd, char **argv, char **envp)
{
    int argc = 0;
    while (argv[argc]) argc++;
    log_min_level = LL_INFO; /* the level its warnings are checked against: the same for each parse */
    memset(err, 0, sizeof err);
    return settings_parse(s, cmd, argc, argv, envp, err, sizeof err);
}

/* Parses and expects success; the caller checks *s, then calls settings_free(). */
static void parse_ok(settings_t *s, int cmd, char **argv, char **envp)
{
    settings_rc_t rc = parse(s, cmd, argv, envp);
    if (rc != SETTINGS_OK) {
        settings_free(s);
        fail_msg("%s: expected SETTINGS_OK, got %d (%s)", argv[0], rc, err);
    }
}

/* Parses and expects SETTINGS_ERROR with a message containing each non-NULL needle and not containing `absent`. */
static void parse_error(int cmd, char **argv, char **envp, const char *needle1, const char *needle2,
                        const char *absent)
{
    settings_t s;
    settings_rc_t rc = parse(&s, cmd, argv, envp);
    settings_free(&s);
    if (rc != SETTINGS_ERROR) fail_msg("%s %s: expected SETTINGS_ERROR, got %d", argv[0], argv[1] ? argv[1] : "", rc);
    if (err[0] == '\0') fail_msg("no error message");
    if (needle1 && !strstr(err, needle1)) fail_msg("message does not name '%s': %s", needle1, err);
    if (needle2 && !strstr(err, needle2)) fail_msg("message does not name '%s': %s", needle2, err);
    if (absent && strstr(err, absent)) fail_msg("message contains '%s': %s", absent, err);
}

/* Captures what is written to file descriptor 2 (log lines) between start and end. */
typedef struct capture {
    FILE *tmp;
    int saved;
} capture_t;

static void capture_start(capture_t *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->tmp), STDERR_FILENO) >= 0);
}

/* Returns the captured text (static buffer). */
static const char *capture_end(capture_t *c)
{
    static char text[8192];
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof text - 1 && (r = pread(fileno(c->tmp), text + n, sizeof text - 1 - n, (off_t)n)) > 0)
        n += (size_t)r;
    text[n] = '\0';
    fclose(c->tmp);
    return text;
}

/* The settings every subcommand has (CMD_ALL) apply to each command bit, one added later included; the others only
 * to the commands their rows name. */
static void test_common_settings_scope(void **state)
{
    (void)state;
    const int bits[] = {CMD_ENQUEUE, CMD_WORKER, CMD_COLLECT, CMD_STATUS, CMD_RUN, CMD_REQUEUE, CMD_RECOVER, 1 << 7};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        settings_t s;
        parse_ok(&s, bits[i], ARGV("cmd", "--queue", "q", "--log-level", "warn", "--redis-timeout-ms", "200"), NOENV);
        assert_string_equal(s.queue, "q");
        assert_int_equal(s.redis_timeout_ms, 200);
        settings_free(&s);
    }
    parse_error(1 << 7, ARGV("cmd", "--concurrency", "3"), NOENV, "unknown option '--concurrency'", NULL, NULL);
    parse_error(CMD_STATUS, ARGV("status", "--concurrency", "3"), NOENV, "unknown option '--concurrency'", NULL, NULL);
}

static void test_defaults(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker"), NOENV);
    assert_null(s.redis_url);
    assert_string_equal(s.queue, "default");
    assert_false(s.queue_set);
    assert_string_equal(s.log_level, "info");
    assert_int_equal(s.redis_timeout_ms, 5000);
    assert_string_equal(s.handler, "sleep");
    assert_int_equal(s.sleep_ms, 100);
    assert_int_equal(s.concurrency, 1000);
    assert_int_equal(s.threads, 0);
    assert_false(s.exit_when_empty);
    assert_int_equal(s.drain_timeout_ms, 20000);
    assert_int_equal(s.fetch_block_ms, 1000);
    assert_int_equal(s.commit_batch, 2000);
    assert_int_equal(s.commit_interval_ms, 20);
    assert_null(s.worker_id);
    assert_null(s.input);
    settings_free(&s);

    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue"), NOENV);
    assert_int_equal(s.chunk_size, 100);
    assert_int_equal(s.max_item_bytes, 1048576);
    assert_null(s.rejects);
    assert_null(s.input);
    settings_free(&s);

    parse_ok(&s, CMD_COLLECT, ARGV("collect"), NOENV);
    assert_null(s.out);
    assert_int_equal(s.rotate_lines, 0);
    assert_false(s.until_done);
    assert_false(s.follow);
    assert_int_equal(s.collect_batch, 1000);
    assert_string_equal(s.consumer, "collector");
    settings_free(&s);

    parse_ok(&s, CMD_STATUS, ARGV("status"), NOENV);
    assert_false(s.json);
    settings_free(&s);

    parse_ok(&s, CMD_RUN, ARGV("run"), NOENV);
    assert_string_equal(s.redis_server, "redis-server");
    assert_string_equal(s.handler, "sleep");
    assert_int_equal(s.chunk_size, 100);
    assert_null(s.out);
    settings_free(&s);

    /* A NULL environment is no environment. */
    parse_ok(&s, CMD_STATUS, ARGV("status"), NULL);
    assert_string_equal(s.queue, "default");
    settings_free(&s);
}

static void test_free_clears(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_RUN, ARGV("run", "--out", "o", "--rejects", "r", "--redis", "redis://h"), NOENV);
    settings_free(&s);
    assert_null(s.redis_url);
    assert_null(s.queue);
    assert_null(s.out);
    assert_null(s.rejects);
    settings_free(&s); /* twice is harmless */
}

static void test_environment_applies(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker"),
             ENVP("CHUNKD_CONCURRENCY=5", "CHUNKD_HANDLER=echo", "CHUNKD_EXIT_WHEN_EMPTY=yes",
                  "CHUNKD_WORKER_ID=w-1", "CHUNKD_QUEUE=jobs", "PATH=/usr/bin", "REDIS_URL=redis://r:6390/2"));
    assert_int_equal(s.concurrency, 5);
    assert_string_equal(s.handler, "echo");
    assert_true(s.exit_when_empty);
    assert_string_equal(s.worker_id, "w-1");
    assert_string_equal(s.queue, "jobs");
    assert_true(s.queue_set);
    assert_string_equal(s.redis_url, "redis://r:6390/2");
    settings_free(&s);

    /* An empty string is a value, not "unset". */
    parse_ok(&s, CMD_COLLECT, ARGV("collect"), ENVP("CHUNKD_CONSUMER="));
    assert_string_equal(s.consumer, "");
    settings_free(&s);
}

static void test_flags_win_over_environment(void **state)
{
    (void)state;
    settings_t s;
    char **env = ENVP("CHUNKD_CONCURRENCY=5", "CHUNKD_QUEUE=from-env", "CHUNKD_HANDLER=echo",
                      "CHUNKD_EXIT_WHEN_EMPTY=true", "REDIS_URL=redis://env-host");
    parse_ok(&s, CMD_WORKER,
             ARGV("worker", "--concurrency", "7", "--queue=from-flag", "--handler", "sleep", "--no-exit-when-empty",
                  "--redis", "redis://flag-host"),
             env);
    assert_int_equal(s.concurrency, 7);
    assert_string_equal(s.queue, "from-flag");
    assert_true(s.queue_set);
    assert_string_equal(s.handler, "sleep");
    assert_false(s.exit_when_empty);
    assert_string_equal(s.redis_url, "redis://flag-host");
    settings_free(&s);

    /* The environment alone still applies to the settings no flag names. */
    parse_ok(&s, CMD_WORKER, ARGV("worker", "--concurrency", "7"), env);
    assert_int_equal(s.concurrency, 7);
    assert_string_equal(s.queue, "from-env");
    assert_string_equal(s.handler, "echo");
    assert_true(s.exit_when_empty);
    settings_free(&s);

    /* An unusable REDIS_URL does not matter when --redis replaces it. */
    parse_ok(&s, CMD_STATUS, ARGV("status", "--redis", "redis://good:1"), ENVP("REDIS_URL=not a url"));
    assert_string_equal(s.redis_url, "redis://good:1");
    settings_free(&s);
}

static void test_flag_forms(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "--chunk-size=250", "--max-item-bytes", "4096", "--rejects=a=b.txt"),
             NOENV);
    assert_int_equal(s.chunk_size, 250);
    assert_int_equal(s.max_item_bytes, 4096);
    assert_string_equal(s.rejects, "a=b.txt"); /* only the first '=' separates */
    settings_free(&s);

    /* The last of a repeated flag wins. */
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "--chunk-size", "3", "--chunk-size=4"), NOENV);
    assert_int_equal(s.chunk_size, 4);
    settings_free(&s);

    /* The value after a flag is taken as it is, even when it starts with a dash. */
    parse_ok(&s, CMD_WORKER, ARGV("worker", "--worker-id", "-w-"), NOENV);
    assert_string_equal(s.worker_id, "-w-");
    settings_free(&s);

    /* An empty value with '='. */
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--consumer="), NOENV);
    assert_string_equal(s.consumer, "");
    settings_free(&s);
}

static void test_flag_needs_value(void **state)
{
    (void)state;
    parse_error(CMD_WORKER, ARGV("worker", "--concurrency"), NOENV, "--concurrency", "CHUNKD_CONCURRENCY", NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "--out"), NOENV, "--out", "CHUNKD_OUT", NULL);
}

static void test_bool_flags(void **state)
{
    (void)state;
    static const struct {
        const char *arg;
        bool expected;
    } cases[] = {
        {"--exit-when-empty", true},        {"--no-exit-when-empty", false},   {"--exit-when-empty=true", true},
        {"--exit-when-empty=false", false}, {"--exit-when-empty=1", true},     {"--exit-when-empty=0", false},
        {"--exit-when-empty=yes", true},    {"--exit-when-empty=no", false},   {"--exit-when-empty=on", true},
        {"--exit-when-empty=off", false},   {"--exit-when-empty=TRUE", true},  {"--exit-when-empty=Off", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int from_env = 0; from_env < 2; from_env++) {
            /* Against both possible environment values, so each case can fail. */
            char *env = from_env ? "CHUNKD_EXIT_WHEN_EMPTY=true" : "CHUNKD_EXIT_WHEN_EMPTY=false";
            settings_t s;
            parse_ok(&s, CMD_WORKER, ARGV("worker", (char *)cases[i].arg), ENVP(env));
            bool got = s.exit_when_empty;
            settings_free(&s);
            if (got != cases[i].expected) fail_msg("%s with %s: got %d", cases[i].arg, env, got);
        }
    }

    settings_t s;
    parse_ok(&s, CMD_STATUS, ARGV("status"), ENVP("CHUNKD_JSON=1"));
    assert_true(s.json);
    settings_free(&s);
    parse_ok(&s, CMD_STATUS, ARGV("status", "--json"), NOENV);
    assert_true(s.json);
    settings_free(&s);
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--follow"), ENVP("CHUNKD_FOLLOW=off"));
    assert_true(s.follow);
    settings_free(&s);
}

static void test_bool_invalid(void **state)
{
    (void)state;
    parse_error(CMD_WORKER, ARGV("worker", "--exit-when-empty=maybe"), NOENV, "--exit-when-empty",
                "CHUNKD_EXIT_WHEN_EMPTY", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--exit-when-empty="), NOENV, "--exit-when-empty",
                "CHUNKD_EXIT_WHEN_EMPTY", NULL);
    parse_error(CMD_STATUS, ARGV("status"), ENVP("CHUNKD_JSON=2"), "--json", "CHUNKD_JSON", NULL);
    /* --no-x takes no value, and only negates booleans. */
    parse_error(CMD_WORKER, ARGV("worker", "--no-exit-when-empty=true"), NOENV, "no-exit-when-empty", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--no-concurrency"), NOENV, "no-concurrency", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--no-"), NOENV, NULL, NULL, NULL);
}

static void test_invalid_integer(void **state)
{
    (void)state;
    static const char *const bad[] = {"abc", "10x", "", "1.5", "0x10", "99999999999999999999", "0", "1000001", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--concurrency=%s", bad[i]);
        parse_error(CMD_WORKER, ARGV("worker", flag), NOENV, "--concurrency", "CHUNKD_CONCURRENCY", NULL);
        char env[64];
        snprintf(env, sizeof env, "CHUNKD_CONCURRENCY=%s", bad[i]);
        parse_error(CMD_WORKER, ARGV("worker"), ENVP(env), "--concurrency", "CHUNKD_CONCURRENCY", NULL);
    }
    parse_error(CMD_WORKER, ARGV("worker", "--sleep-ms", "-5"), NOENV, "--sleep-ms", "CHUNKD_SLEEP_MS", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--threads", "257"), NOENV, "--threads", "CHUNKD_THREADS", NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "--chunk-size", "0"), NOENV, "--chunk-size", "CHUNKD_CHUNK_SIZE", NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue"), ENVP("CHUNKD_CHUNK_SIZE=-3"), "--chunk-size", "CHUNKD_CHUNK_SIZE",
                NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "--rotate-lines", "-1"), NOENV, "--rotate-lines",
                "CHUNKD_ROTATE_LINES", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--redis-timeout-ms", "99"), NOENV, "--redis-timeout-ms",
                "CHUNKD_REDIS_TIMEOUT_MS", NULL);
}

static void test_integer_bounds_inclusive(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker", "--concurrency", "1", "--threads", "256", "--sleep-ms", "0"), NOENV);
    assert_int_equal(s.concurrency, 1);
    assert_int_equal(s.threads, 256);
    assert_int_equal(s.sleep_ms, 0);
    settings_free(&s);
    parse_ok(&s, CMD_WORKER, ARGV("worker", "--concurrency=1000000", "--redis-timeout-ms=100"), NOENV);
    assert_int_equal(s.concurrency, 1000000);
    assert_int_equal(s.redis_timeout_ms, 100);
    settings_free(&s);
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "--max-item-bytes", "67108864", "--chunk-size", "100000"), NOENV);
    assert_int_equal(s.max_item_bytes, 67108864);
    assert_int_equal(s.chunk_size, 100000);
    settings_free(&s);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "--max-item-bytes", "67108865"), NOENV, "--max-item-bytes", NULL, NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "--max-item-bytes", "15"), NOENV, "--max-item-bytes", NULL, NULL);
}

static void test_bad_choice(void **state)
{
    (void)state;
    parse_error(CMD_WORKER, ARGV("worker", "--handler", "nope"), NOENV, "--handler", "CHUNKD_HANDLER", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--handler", "Echo"), NOENV, "--handler", "CHUNKD_HANDLER", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--handler", "ech"), NOENV, "--handler", "CHUNKD_HANDLER", NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--handler="), NOENV, "--handler", "CHUNKD_HANDLER", NULL);
    parse_error(CMD_WORKER, ARGV("worker"), ENVP("CHUNKD_HANDLER=sleep echo"), "--handler", "CHUNKD_HANDLER", NULL);
    parse_error(CMD_STATUS, ARGV("status", "--log-level", "verbose"), NOENV, "--log-level", "CHUNKD_LOG_LEVEL",
                NULL);
    parse_error(CMD_STATUS, ARGV("status"), ENVP("CHUNKD_LOG_LEVEL=warning"), "--log-level", "CHUNKD_LOG_LEVEL",
                NULL);

    settings_t s;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        char flag[32];
        snprintf(flag, sizeof flag, "--log-level=%s", levels[i]);
        parse_ok(&s, CMD_STATUS, ARGV("status", flag), NOENV);
        assert_string_equal(s.log_level, levels[i]);
        settings_free(&s);
    }
    parse_ok(&s, CMD_RUN, ARGV("run", "--handler", "echo"), NOENV);
    assert_string_equal(s.handler, "echo");
    settings_free(&s);
    log_min_level = LL_INFO;
}

static void test_string_too_long(void **state)
{
    (void)state;
    char flag[5000];
    int n = snprintf(flag, sizeof flag, "--worker-id=");
    memset(flag + n, 'w', 4097);
    flag[n + 4097] = '\0';
    parse_error(CMD_WORKER, ARGV("worker", flag), NOENV, "--worker-id", "CHUNKD_WORKER_ID", NULL);
    flag[n + 4096] = '\0';
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker", flag), NOENV);
    assert_int_equal(strlen(s.worker_id), 4096);
    settings_free(&s);
}

static void test_unknown_option(void **state)
{
    (void)state;
    parse_error(CMD_WORKER, ARGV("worker", "--no-such-flag"), NOENV, "--no-such-flag", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--no-such-flag=1"), NOENV, "--no-such-flag", NULL, "=1");
    parse_error(CMD_WORKER, ARGV("worker", "--concurrenc", "5"), NOENV, "--concurrenc", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--concurrencyy", "5"), NOENV, "--concurrencyy", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--CONCURRENCY", "5"), NOENV, NULL, NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "---concurrency", "5"), NOENV, NULL, NULL, NULL);
}

/* A typo gets the closest flag of the command; a name far from all of them gets none. */
static void test_unknown_option_suggests(void **state)
{
    (void)state;
    parse_error(CMD_WORKER, ARGV("worker", "--concurency", "5"), NOENV, "did you mean --concurrency?", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "--base_url", "http://x"), NOENV, "did you mean --base-url?", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--zzzzzz"), NOENV, "unknown option '--zzzzzz'", NULL, "did you mean");
    parse_error(CMD_WORKER, ARGV("worker", "--no-exit-when-emty"), NOENV, "did you mean --no-exit-when-empty?", NULL,
                NULL);
    /* Not a flag of this command, nor a hidden one. */
    parse_error(CMD_STATUS, ARGV("status", "--concurency", "5"), NOENV, NULL, NULL, "--concurrency");
    parse_error(CMD_WORKER, ARGV("worker", "--test-stal-ms", "5"), NOENV, NULL, NULL, "did you mean");
}

/* -H is --header; repeated, --header and --query append (lines, '&'), other flags replace. */
static void test_short_and_repeated_flags(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_RUN, ARGV("run", "-H", "A: 1", "--header", "B: 2", "-HC: 3", "--query", "a={x}", "--query",
                               "b={y}", "--path", "/p", "--path", "/u/{id}"), NOENV);
    assert_string_equal(s.headers, "A: 1\nB: 2\nC: 3");
    assert_string_equal(s.query_template, "a={x}&b={y}");
    assert_string_equal(s.path_template, "/u/{id}");
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run", "-H", "A: 1"), ENVP("CHUNKD_HEADER=Z: 9"));
    assert_string_equal(s.headers, "A: 1");
    settings_free(&s);
    parse_error(CMD_RUN, ARGV("run", "-H"), NOENV, "-H (--header, CHUNKD_HEADER) needs a value", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "-X", "1"), NOENV, "unknown option '-X'", NULL, NULL);
    parse_error(CMD_STATUS, ARGV("status", "-H", "A: 1"), NOENV, "unknown option '-H'", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "--body-field", "b", "--body-from-item"), NOENV, "exclude each other", NULL,
                NULL);
}

static void test_option_of_other_command_rejected(void **state)
{
    (void)state;
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "--concurrency", "5"), NOENV, "--concurrency", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--chunk-size", "5"), NOENV, "--chunk-size", NULL, NULL);
    parse_error(CMD_STATUS, ARGV("status", "--out", "x"), NOENV, "--out", NULL, NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "--json"), NOENV, "--json", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "--exit-when-empty"), NOENV, "--exit-when-empty", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "--no-exit-when-empty"), NOENV, "exit-when-empty", NULL, NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "--redis-server", "x"), NOENV, "--redis-server", NULL, NULL);
    parse_error(CMD_WORKER, ARGV("worker", "--follow"), NOENV, "--follow", NULL, NULL);
}

static void test_other_command_env_ignored(void **state)
{
    (void)state;
    settings_t s;
    capture_t cap;
    capture_start(&cap);
    /* Invalid values, but for settings enqueue does not have: they are neither applied nor checked. */
    settings_rc_t rc = parse(&s, CMD_ENQUEUE, ARGV("enqueue"),
                             ENVP("CHUNKD_CONCURRENCY=abc", "CHUNKD_HANDLER=nope", "CHUNKD_JSON=maybe",
                                  "CHUNKD_EXIT_WHEN_EMPTY=2", "CHUNKD_OUT=/tmp/x", "CHUNKD_ROTATE_LINES=5",
                                  "CHUNKD_WORKER_ID=w"));
    const char *log = capture_end(&cap);
    if (rc != SETTINGS_OK) {
        settings_free(&s);
        fail_msg("expected SETTINGS_OK, got %d: %s", rc, err);
    }
    assert_int_equal(s.concurrency, 1000);
    assert_string_equal(s.handler, "sleep");
    assert_false(s.json);
    assert_null(s.out);
    assert_int_equal(s.rotate_lines, 0);
    assert_null(s.worker_id);
    settings_free(&s);
    if (log[0]) fail_msg("known variables of other commands were logged about: %s", log);

    parse_ok(&s, CMD_COLLECT, ARGV("collect"), ENVP("CHUNKD_CHUNK_SIZE=7", "CHUNKD_REDIS_SERVER=/x"));
    assert_int_equal(s.chunk_size, 100);
    assert_string_equal(s.redis_server, "redis-server");
    settings_free(&s);
}

static void test_unknown_env_warns(void **state)
{
    (void)state;
    settings_t s;
    capture_t cap;
    capture_start(&cap);
    settings_rc_t rc = parse(&s, CMD_WORKER, ARGV("worker"),
                             ENVP("CHUNKD_NO_SUCH_SETTING=1", "CHUNKD_CONCURRENCY=9", "CHUNKD_QUEUEX=q"));
    const char *log = capture_end(&cap);
    if (rc != SETTINGS_OK) {
        settings_free(&s);
        fail_msg("expected SETTINGS_OK, got %d: %s", rc, err);
    }
    assert_int_equal(s.concurrency, 9);
    assert_string_equal(s.queue, "default");
    settings_free(&s);
    if (!strstr(log, "CHUNKD_NO_SUCH_SETTING")) fail_msg("no warning naming CHUNKD_NO_SUCH_SETTING: '%s'", log);
    if (!strstr(log, "CHUNKD_QUEUEX")) fail_msg("no warning naming CHUNKD_QUEUEX: '%s'", log);
    if (strstr(log, "CHUNKD_CONCURRENCY")) fail_msg("a known variable was warned about: '%s'", log);
    if (!strstr(log, "warn")) fail_msg("not logged as a warning: '%s'", log);

    /* Other variables, and entries without '=', pass silently. */
    capture_start(&cap);
    rc = parse(&s, CMD_WORKER, ARGV("worker"), ENVP("HOME=/root", "CHUNKDX=1", "NOEQUALS", "CHUNKD_", "X=CHUNKD_Y"));
    log = capture_end(&cap);
    settings_free(&s);
    assert_int_equal(rc, SETTINGS_OK);
    if (log[0]) fail_msg("unexpected log output: '%s'", log);
}

static void test_positional_input(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "items.jsonl"), NOENV);
    assert_string_equal(s.input, "items.jsonl");
    settings_free(&s);

    parse_ok(&s, CMD_RUN, ARGV("run", "-"), NOENV);
    assert_string_equal(s.input, "-");
    settings_free(&s);

    /* Flags before and after FILE. */
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "--chunk-size", "5", "in.jsonl", "--queue", "q"), NOENV);
    assert_string_equal(s.input, "in.jsonl");
    assert_int_equal(s.chunk_size, 5);
    assert_string_equal(s.queue, "q");
    settings_free(&s);

    /* After "--" a name that looks like a flag is FILE. */
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue", "--", "--odd-name"), NOENV);
    assert_string_equal(s.input, "--odd-name");
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run", "--out", "o", "--"), NOENV);
    assert_null(s.input);
    settings_free(&s);

    parse_error(CMD_WORKER, ARGV("worker", "items.jsonl"), NOENV, "items.jsonl", NULL, NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "-"), NOENV, NULL, NULL, NULL);
    parse_error(CMD_STATUS, ARGV("status", "x"), NOENV, "x", NULL, NULL);
    parse_error(CMD_STATUS, ARGV("status", "--", "x"), NOENV, "x", NULL, NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "a.jsonl", "b.jsonl"), NOENV, "b.jsonl", NULL, NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue", "a.jsonl", "--", "b.jsonl"), NOENV, "b.jsonl", NULL, NULL);
    parse_error(CMD_RUN, ARGV("run", "--", "a", "b"), NOENV, NULL, NULL, NULL);
    /* A bool flag takes no separate value: the word after it is a positional argument. */
    parse_error(CMD_COLLECT, ARGV("collect", "--follow", "true"), NOENV, "true", NULL, NULL);
}

static void test_help(void **state)
{
    (void)state;
    static const struct {
        int cmd;
        const char *name;
    } cmds[] = {{CMD_ENQUEUE, "enqueue"}, {CMD_WORKER, "worker"}, {CMD_COLLECT, "collect"},
                {CMD_STATUS, "status"},   {CMD_RUN, "run"}};
    for (size_t i = 0; i < 5; i++) {
        settings_t s;
        assert_int_equal(parse(&s, cmds[i].cmd, ARGV((char *)cmds[i].name, "--help"), NOENV), SETTINGS_HELP);
        settings_free(&s);
        assert_int_equal(parse(&s, cmds[i].cmd, ARGV((char *)cmds[i].name, "-h"), NOENV), SETTINGS_HELP);
        settings_free(&s);
        assert_int_equal(parse(&s, cmds[i].cmd, ARGV((char *)cmds[i].name, "--queue", "q", "--help"), NOENV),
                         SETTINGS_HELP);
        settings_free(&s);
    }
    /* --help wins over what would be errors later on the line. */
    settings_t s;
    assert_int_equal(parse(&s, CMD_WORKER, ARGV("worker", "--help", "--no-such-flag"), NOENV), SETTINGS_HELP);
    settings_free(&s);
    /* After "--", --help is FILE. */
    assert_int_equal(parse(&s, CMD_ENQUEUE, ARGV("enqueue", "--", "--help"), NOENV), SETTINGS_OK);
    assert_string_equal(s.input, "--help");
    settings_free(&s);
}

static void test_redis_url(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_ENQUEUE, ARGV("enqueue"), ENVP("REDIS_URL=redis://user:pw@redis:6380/1"));
    assert_string_equal(s.redis_url, "redis://user:pw@redis:6380/1");
    settings_free(&s);
    parse_ok(&s, CMD_STATUS, ARGV("status", "--redis=unix:///tmp/r.sock?db=2"), NOENV);
    assert_string_equal(s.redis_url, "unix:///tmp/r.sock?db=2");
    settings_free(&s);

    parse_error(CMD_WORKER, ARGV("worker"), ENVP("REDIS_URL=redis://u:TopSecret1@h:notaport"), "--redis",
                "REDIS_URL", "TopSecret1");
    parse_error(CMD_WORKER, ARGV("worker", "--redis", "rediss://u:TopSecret1@h:0"), NOENV, "--redis", "REDIS_URL",
                "TopSecret1");
    parse_error(CMD_RUN, ARGV("run", "--redis", "http://h"), NOENV, "--redis", "REDIS_URL", NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "--redis="), NOENV, "--redis", "REDIS_URL", NULL);
}

static void test_until_done_and_follow(void **state)
{
    (void)state;
    parse_error(CMD_COLLECT, ARGV("collect", "--until-done", "--follow"), NOENV, "--until-done", "--follow", NULL);
    parse_error(CMD_COLLECT, ARGV("collect", "--until-done"), ENVP("CHUNKD_FOLLOW=1"), "--until-done", "--follow",
                NULL);
    settings_t s;
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--until-done"), NOENV);
    assert_true(s.until_done);
    assert_false(s.follow);
    settings_free(&s);
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--follow"), NOENV);
    assert_true(s.follow);
    settings_free(&s);
    /* A flag turning one off resolves the conflict with the environment. */
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--until-done", "--no-follow"), ENVP("CHUNKD_FOLLOW=1"));
    assert_true(s.until_done);
    assert_false(s.follow);
    settings_free(&s);
}

static void test_rotate_lines_needs_out(void **state)
{
    (void)state;
    parse_error(CMD_COLLECT, ARGV("collect", "--rotate-lines", "1000"), NOENV, "--rotate-lines", "--out", NULL);
    parse_error(CMD_RUN, ARGV("run"), ENVP("CHUNKD_ROTATE_LINES=10"), "--rotate-lines", "--out", NULL);
    settings_t s;
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--rotate-lines", "1000", "--out", "dir"), NOENV);
    assert_int_equal(s.rotate_lines, 1000);
    assert_string_equal(s.out, "dir");
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run", "--rotate-lines=5"), ENVP("CHUNKD_OUT=results"));
    assert_int_equal(s.rotate_lines, 5);
    assert_string_equal(s.out, "results");
    settings_free(&s);
    parse_ok(&s, CMD_COLLECT, ARGV("collect", "--rotate-lines", "0"), NOENV);
    assert_int_equal(s.rotate_lines, 0);
    settings_free(&s);
}

static void test_queue_names(void **state)
{
    (void)state;
    static const char *const bad[] = {"--queue=a{b", "--queue=a}b", "--queue={q}", "--queue={", "--queue="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_error(CMD_WORKER, ARGV("worker", (char *)bad[i]), NOENV, "--queue", "CHUNKD_QUEUE", NULL);
    parse_error(CMD_ENQUEUE, ARGV("enqueue"), ENVP("CHUNKD_QUEUE=x}"), "--queue", "CHUNKD_QUEUE", NULL);
    parse_error(CMD_STATUS, ARGV("status"), ENVP("CHUNKD_QUEUE="), "--queue", "CHUNKD_QUEUE", NULL);

    char flag[300];
    int n = snprintf(flag, sizeof flag, "--queue=");
    memset(flag + n, 'q', 200);
    flag[n + 200] = '\0';
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker", flag), NOENV);
    assert_int_equal(strlen(s.queue), 200);
    settings_free(&s);
    flag[n + 200] = 'q';
    flag[n + 201] = '\0';
    parse_error(CMD_WORKER, ARGV("worker", flag), NOENV, "--queue", "CHUNKD_QUEUE", NULL);

    parse_ok(&s, CMD_WORKER, ARGV("worker", "--queue", "jobs:2024-01/a b"), NOENV);
    assert_string_equal(s.queue, "jobs:2024-01/a b");
    settings_free(&s);
}

static void test_queue_set(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_RUN, ARGV("run"), NOENV);
    assert_false(s.queue_set);
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run", "--queue", "default"), NOENV); /* even when equal to the default */
    assert_true(s.queue_set);
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run", "--queue=x"), NOENV);
    assert_true(s.queue_set);
    settings_free(&s);
    parse_ok(&s, CMD_RUN, ARGV("run"), ENVP("CHUNKD_QUEUE=envq"));
    assert_true(s.queue_set);
    assert_string_equal(s.queue, "envq");
    settings_free(&s);
    /* Other settings do not set it. */
    parse_ok(&s, CMD_RUN, ARGV("run", "--chunk-size", "3", "--consumer", "queue"), ENVP("CHUNKD_CONCURRENCY=4"));
    assert_false(s.queue_set);
    settings_free(&s);
}

static void test_log_effective_masks_password(void **state)
{
    (void)state;
    settings_t s;
    parse_ok(&s, CMD_WORKER, ARGV("worker", "--redis", "redis://alice:Pw0rdXyz@redis:6380/2", "--concurrency", "77"),
             NOENV);
    capture_t cap;
    capture_start(&cap);
    settings_log_effective(&s, CMD_WORKER, LL_INFO);
    const char *log = capture_end(&cap);
    settings_free(&s);
    if (strstr(log, "Pw0rd")) fail_msg("the password was logged: %s", log);
    if (!strstr(log, "alice:***@redis:6380")) fail_msg("no masked address: %s", log);
    if (!strstr(log, "concurrency=77")) fail_msg("no concurrency=77: %s", log);
    if (strstr(log, "chunk-size")) fail_msg("a setting of another command was logged: %s", log);
}

/* The secret variables leave the environment once parsed, their values wiped; the others stay. */
static void test_env_scrub(void **state)
{
    (void)state;
    assert_true(settings_env_is_secret("REDIS_URL"));
    assert_true(settings_env_is_secret("CHUNKD_HTTP_HEADERS"));
    assert_false(settings_env_is_secret("CHUNKD_QUEUE"));
    assert_false(settings_env_is_secret("PATH"));
    setenv("REDIS_URL", "redis://:s3cret@h:6379/0", 1);
    setenv("CHUNKD_HTTP_HEADERS", "Authorization: Bearer s3cret", 1);
    setenv("CHUNKD_QUEUE", "jobs", 1);
    char *url = getenv("REDIS_URL");
    settings_env_scrub();
    assert_null(getenv("REDIS_URL"));
    assert_null(getenv("CHUNKD_HTTP_HEADERS"));
    assert_string_equal(getenv("CHUNKD_QUEUE"), "jobs");
    assert_int_equal(url[0], '\0'); /* glibc keeps the string: wiped, not freed */
    unsetenv("CHUNKD_QUEUE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_settings_scope),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_free_clears),
        cmocka_unit_test(test_environment_applies),
        cmocka_unit_test(test_flags_win_over_environment),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_flag_needs_value),
        cmocka_unit_test(test_bool_flags),
        cmocka_unit_test(test_bool_invalid),
        cmocka_unit_test(test_invalid_integer),
        cmocka_unit_test(test_integer_bounds_inclusive),
        cmocka_unit_test(test_bad_choice),
        cmocka_unit_test(test_string_too_long),
        cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_unknown_option_suggests),
        cmocka_unit_test(test_short_and_repeated_flags),
        cmocka_unit_test(test_option_of_other_command_rejected),
        cmocka_unit_test(test_other_command_env_ignored),
        cmocka_unit_test(test_unknown_env_warns),
        cmocka_unit_test(test_positional_input),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_until_done_and_follow),
        cmocka_unit_test(test_rotate_lines_needs_out),
        cmocka_unit_test(test_queue_names),
        cmocka_unit_test(test_queue_set),
        cmocka_unit_test(test_log_effective_masks_password),
        cmocka_unit_test(test_env_scrub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
