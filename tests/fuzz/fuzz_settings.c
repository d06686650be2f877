/* Fuzz target: settings_parse() on untrusted command lines and environments.
 *
 * The input is one byte that picks the subcommand, then tokens separated by NUL or newline. A token that looks like
 * an environment entry (NAME=value with NAME in [A-Z0-9_]) goes to envp, every other one to argv. Beyond "no crash,
 * no leak, no undefined behaviour, no exit" it checks that an error message is set on SETTINGS_ERROR and that a
 * successful parse obeys the table's cross-checks and formats its "effective settings" line in any buffer. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "settings.h"

#define FUZZ_NAME "fuzz_settings"
#include "fuzz.h"

#define MAX_TOKENS 64

static const struct {
    const char *name;
    int bit;
} commands[] = {{"enqueue", CMD_ENQUEUE}, {"worker", CMD_WORKER},   {"collect", CMD_COLLECT}, {"status", CMD_STATUS},
                {"run", CMD_RUN},         {"requeue", CMD_REQUEUE}, {"recover", CMD_RECOVER}};

static int is_env_entry(const char *t)
{
    const char *eq = strchr(t, '=');
    if (!eq || eq == t) return 0;
    for (const char *p = t; p < eq; p++)
        if (!(isupper((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const char *name = commands[data[0] % 7].name;
    int cmd = commands[data[0] % 7].bit;

    /* One copy of the tokens, each NUL-terminated. */
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    char *argv[MAX_TOKENS + 2], *envp[MAX_TOKENS + 1];
    int argc = 0, envc = 0;
    argv[argc++] = (char *)name;
    for (char *t = buf; t < buf + size - 1 && argc + envc < MAX_TOKENS;) {
        size_t n = strcspn(t, "\n");
        t[n] = '\0';
        if (is_env_entry(t)) envp[envc++] = t;
        else argv[argc++] = t;
        t += n + 1;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;

    /* Quiet: the warning about unknown CHUNKD_* variables is checked against this level before it is formatted. */
    log_min_level = LL_ERROR;
    settings_t s;
    char err[1024];
    err[0] = '\0';
    settings_rc_t rc = settings_parse(&s, cmd, argc, argv, envp, err, sizeof err);
    if (rc == SETTINGS_ERROR) {
        CHECK(err[0] != '\0' && strlen(err) < sizeof err, "no error message");
    } else if (rc == SETTINGS_OK) {
        CHECK(s.queue && s.queue[0] && !strpbrk(s.queue, "{}") && strlen(s.queue) <= 200, "queue");
        CHECK(s.handler && s.log_level && s.log_format, "defaults");
        CHECK(!(s.until_done && s.follow), "until-done and follow");
        CHECK(s.retry_max_ms >= s.retry_base_ms, "retry bounds");
        CHECK(!s.input || (cmd & (CMD_ENQUEUE | CMD_RUN)), "input for %s", name);
        /* The "effective settings" line, in a full-size buffer and in one that cuts it. */
        char line[LOG_LINE_MAX];
        settings_format_effective(&s, cmd, line, sizeof line);
        CHECK(strlen(line) < sizeof line, "effective settings line");
        settings_format_effective(&s, cmd, line, 1 + (size_t)data[0] % 64);
        CHECK(strlen(line) <= (size_t)data[0] % 64, "cut effective settings line");
    }
    settings_free(&s);
    free(buf);
    return 0;
}
