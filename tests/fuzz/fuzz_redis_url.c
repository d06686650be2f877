/* Fuzz target: redis_url_parse() and redis_url_mask() on untrusted text (a --redis flag or REDIS_URL).
 *
 * Beyond "no crash, no leak, no undefined behaviour" it checks what callers rely on: a parsed URL has a host or an
 * absolute socket path and values in range, and its masked form (written to logs) is one line of printable ASCII
 * that parses back to the same address with the password replaced by "***". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_url.h"

#define FUZZ_NAME "fuzz_redis_url"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The URL is a C string (argv or environ): the input up to its first NUL. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    redis_url_t u;
    char err[256];
    char masked[1024];
    redis_url_mask(text, masked, sizeof masked);
    for (const char *p = masked; *p; p++)
        CHECK(*p >= 0x20 && *p < 0x7f, "masked form has byte 0x%02x: %s", (unsigned char)*p, masked);

    if (redis_url_parse(text, &u, err, sizeof err) == 0) {
        CHECK(u.db >= 0 && u.db <= 100000, "db %d", u.db);
        if (u.is_unix) {
            CHECK(u.path[0] == '/', "socket path '%s'", u.path);
        } else {
            CHECK(u.host[0] != '\0', "empty host");
            CHECK(u.port >= 1 && u.port <= 65535, "port %d", u.port);
        }
        redis_url_t back;
        CHECK(redis_url_parse(masked, &back, err, sizeof err) == 0, "masked form '%s' does not parse: %s", masked, err);
        CHECK(back.is_unix == u.is_unix && back.port == u.port && back.db == u.db, "masked form '%s' differs", masked);
        CHECK(strcmp(back.host, u.host) == 0 && strcmp(back.path, u.path) == 0 && strcmp(back.user, u.user) == 0,
              "masked form '%s' names another address", masked);
        CHECK(strcmp(back.password, u.password[0] ? "***" : "") == 0, "masked form '%s' shows a password", masked);
    } else {
        CHECK(strlen(err) < sizeof err, "error not terminated");
        CHECK(strcmp(masked, "<invalid redis url>") == 0, "invalid url masked as '%s'", masked);
    }
    free(text);
    return 0;
}
