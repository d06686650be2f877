/* settings: see settings.h. The table below is the single source of truth for flags, environment variables,
 * defaults, bounds and --help. */
#include "settings.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "ratelimit_math.h"
#include "redis_url.h"
#include "xalloc.h"

typedef enum { ST_STR, ST_INT, ST_BOOL } setting_type_t;

typedef struct setting_def {
    const char *name;       /* flag without the leading "--" */
    const char *env;        /* environment variable */
    setting_type_t type;
    size_t offset;          /* into settings_t */
    const char *def;        /* default as text; NULL: unset */
    long long min, max;     /* bounds for ST_INT */
    const char *choices;    /* for ST_STR: space-separated allowed values, or NULL */
    int cmds;               /* command bits that use it */
    bool secret;            /* mask the value when logging */
    bool env_only;          /* a secret that must not be given on the command line */
    const char *help;
} setting_def_t;

#define ALL (CMD_ENQUEUE | CMD_WORKER | CMD_COLLECT | CMD_STATUS | CMD_RUN | CMD_REQUEUE | CMD_RECOVER)
#define OFF(field) offsetof(settings_t, field)

static const setting_def_t setting_defs[] = {
    {"redis", "REDIS_URL", ST_STR, OFF(redis_url), NULL, 0, 0, NULL, ALL, true, false,
     "Redis address: redis://[user:password@]host[:port][/db] or unix:///path[?db=N] (run: a private server when unset)"},
    {"queue", "CHUNKD_QUEUE", ST_STR, OFF(queue), "default", 0, 0, NULL, ALL, false, false,
     "queue name Q; keys are chunkd:{Q}:* (run: a fresh name when unset)"},
    {"log-level", "CHUNKD_LOG_LEVEL", ST_STR, OFF(log_level), "info", 0, 0, "debug info warn error", ALL, false, false,
     "least severe level logged"},
    {"log-format", "CHUNKD_LOG_FORMAT", ST_STR, OFF(log_format), "text", 0, 0, "text json", ALL, false, false,
     "log lines as text or as JSON objects (for cluster log collectors)"},
    {"redis-timeout-ms", "CHUNKD_REDIS_TIMEOUT_MS", ST_INT, OFF(redis_timeout_ms), "5000", 100, 600000, NULL, ALL,
     false, false, "Redis connect and command timeout"},
    {"redis-wait-ms", "CHUNKD_REDIS_WAIT_MS", ST_INT, OFF(redis_wait_ms), "0", 0, 86400000, NULL, CMD_WORKER, false,
     false, "at start, how long to wait for a Redis that cannot be reached (not ready meanwhile) before exiting 1 "
            "(0: forever)"},
    {"chunk-size", "CHUNKD_CHUNK_SIZE", ST_INT, OFF(chunk_size), "100", 1, 100000, NULL, CMD_ENQUEUE | CMD_RUN | CMD_REQUEUE, false, false,
     "items per chunk"},
    {"max-item-bytes", "CHUNKD_MAX_ITEM_BYTES", ST_INT, OFF(max_item_bytes), "1048576", 16, 67108864, NULL,
     CMD_ENQUEUE | CMD_RUN, false, false, "longest input line accepted; longer lines are rejected"},
    {"rejects", "CHUNKD_REJECTS", ST_STR, OFF(rejects), NULL, 0, 0, NULL, CMD_ENQUEUE | CMD_RUN, false, false,
     "file for rejected lines (default <input>.rejected, or chunkd-rejected.jsonl for stdin)"},
    {"handler", "CHUNKD_HANDLER", ST_STR, OFF(handler), "sleep", 0, 0, "sleep echo http exec", CMD_WORKER | CMD_RUN, false, false,
     "what runs each item"},
    {"sleep-ms", "CHUNKD_SLEEP_MS", ST_INT, OFF(sleep_ms), "100", 0, 86400000, NULL, CMD_WORKER | CMD_RUN, false, false,
     "sleep handler: delay for items without a \"sleep_ms\" field"},
    {"concurrency", "CHUNKD_CONCURRENCY", ST_INT, OFF(concurrency), "1000", 1, 1000000, NULL, CMD_WORKER | CMD_RUN,
     false, false, "items held in flight by this process"},
    {"threads", "CHUNKD_THREADS", ST_INT, OFF(threads), "0", 0, 256, NULL, CMD_WORKER | CMD_RUN, false, false,
     "event-loop threads (0: the number of CPUs)"},
    {"exit-when-empty", "CHUNKD_EXIT_WHEN_EMPTY", ST_BOOL, OFF(exit_when_empty), "false", 0, 0, NULL, CMD_WORKER,
     false, false, "exit 0 once pending is empty and nothing is in flight (Kubernetes Job mode)"},
    {"drain-timeout-ms", "CHUNKD_DRAIN_TIMEOUT_MS", ST_INT, OFF(drain_timeout_ms), "20000", 0, 3600000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "on SIGTERM, how long in-flight items may take before their chunks go back"},
    {"fetch-block-ms", "CHUNKD_FETCH_BLOCK_MS", ST_INT, OFF(fetch_block_ms), "1000", 10, 60000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "longest pause between two looks at an empty queue (from 5 ms, doubling)"},
    {"commit-batch", "CHUNKD_COMMIT_BATCH", ST_INT, OFF(commit_batch), "2000", 1, 1000000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "results per commit round trip (several chunks are pipelined)"},
    {"commit-interval-ms", "CHUNKD_COMMIT_INTERVAL_MS", ST_INT, OFF(commit_interval_ms), "20", 0, 60000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "longest a finished chunk waits for a fuller batch"},
    {"lease-ms", "CHUNKD_LEASE_MS", ST_INT, OFF(lease_ms), "10000", 1000, 600000, NULL, CMD_WORKER | CMD_RUN, false,
     false, "a worker renews its lease every third of this; one silent this long has its chunks given back"},
    {"item-timeout-ms", "CHUNKD_ITEM_TIMEOUT_MS", ST_INT, OFF(item_timeout_ms), "600000", 0, 86400000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "an item still running after this fails with a timeout error (0: never)"},
    {"checkpoint-ms", "CHUNKD_CHECKPOINT_MS", ST_INT, OFF(checkpoint_ms), "1000", 0, 3600000, NULL,
     CMD_WORKER | CMD_RUN, false, false,
     "a chunk older than this commits its finished items as they finish; a younger one commits once, when complete"},
    {"max-deliveries", "CHUNKD_MAX_DELIVERIES", ST_INT, OFF(max_deliveries), "5", 0, 1000000, NULL,
     CMD_WORKER | CMD_RUN, false, false,
     "a chunk fetched more often than this (its workers died) is not run again: its items go to dead (0: no limit)"},
    {"max-chunk-bytes", "CHUNKD_MAX_CHUNK_BYTES", ST_INT, OFF(max_chunk_bytes), "67108864", 1024, 536870912, NULL,
     CMD_ENQUEUE | CMD_WORKER | CMD_RUN | CMD_REQUEUE, false, false,
     "enqueue and requeue build no larger chunk; a worker moves a larger one to dead unread, whole (requeue-able)"},
    {"max-held-bytes", "CHUNKD_MAX_HELD_BYTES", ST_INT, OFF(max_held_bytes), "268435456", 1048576, 68719476736LL,
     NULL, CMD_WORKER | CMD_RUN, false, false,
     "fetching waits while the chunks held take more bytes than this (besides --concurrency)"},
    {"max-results-backlog", "CHUNKD_MAX_RESULTS_BACKLOG", ST_INT, OFF(max_results_backlog), "1000000", 0,
     1000000000, NULL, CMD_WORKER | CMD_RUN, false, false,
     "fetching pauses while the results stream holds more entries than this (0: no limit)"},
    {"rate-limit", "CHUNKD_RATE_LIMIT", ST_STR, OFF(rate_limit), "", 0, 0, NULL, CMD_WORKER | CMD_RUN, false, false,
     "calls per second (N/s) or minute (N/m) across every worker of the queue, adaptive to 429s (empty: none)"},
    {"rate-burst", "CHUNKD_RATE_BURST", ST_INT, OFF(rate_burst), "0", 0, 1000000, NULL, CMD_WORKER | CMD_RUN, false,
     false, "calls --rate-limit lets through at once after a quiet spell (0: 100 ms worth, at least 1)"},
    {"max-inflight-global", "CHUNKD_MAX_INFLIGHT_GLOBAL", ST_INT, OFF(max_inflight_global), "0", 0, 1000000, NULL,
     CMD_WORKER | CMD_RUN, false, false, "calls in flight at once across every worker of the queue (0: no cap)"},
    {"http-port", "CHUNKD_HTTP_PORT", ST_INT, OFF(http_port), "8080", 0, 65535, NULL, CMD_WORKER | CMD_RUN, false,
     false, "port of /healthz, /readyz and /metrics (0: no HTTP server; run: none unless given)"},
    {"http-addr", "CHUNKD_HTTP_ADDR", ST_STR, OFF(http_addr), "0.0.0.0", 0, 0, NULL, CMD_WORKER | CMD_RUN, false, false,
     "IPv4 address the HTTP server listens on"},
    {"test-stall-ms", "CHUNKD_TEST_STALL_MS", ST_INT, OFF(test_stall_ms), "0", 0, 600000, NULL, CMD_WORKER, false,
     false, "for tests only: event loop 0 blocks this long after start, so /healthz must turn 503"},
    {"worker-id", "CHUNKD_WORKER_ID", ST_STR, OFF(worker_id), NULL, 0, 0, NULL, CMD_WORKER, false, false,
     "this worker's id (default hostname-pid-random)"},
#define HTTP (CMD_WORKER | CMD_RUN)
    {"base-url", "CHUNKD_BASE_URL", ST_STR, OFF(base_url), NULL, 0, 0, NULL, HTTP, false, false,
     "http handler: URL that each item's \"path\" is joined to"},
    {"allow-hosts", "CHUNKD_ALLOW_HOSTS", ST_STR, OFF(allow_hosts), "", 0, 0, NULL, HTTP, false, false,
     "http handler: hosts an item's absolute \"url\" may name (comma-separated; empty: none)"},
    {"http-timeout-ms", "CHUNKD_HTTP_TIMEOUT_MS", ST_INT, OFF(http_timeout_ms), "30000", 1, 3600000, NULL, HTTP, false,
     false, "http handler: total time of one call"},
    {"connect-timeout-ms", "CHUNKD_CONNECT_TIMEOUT_MS", ST_INT, OFF(connect_timeout_ms), "5000", 1, 600000, NULL, HTTP,
     false, false, "http handler: time to connect"},
    {"max-result-bytes", "CHUNKD_MAX_RESULT_BYTES", ST_INT, OFF(max_result_bytes), "1048576", 0, 268435456, NULL, HTTP,
     false, false, "http handler: largest response body; a larger one fails the item (exec: longest reply line)"},
    {"keep-headers", "CHUNKD_KEEP_HEADERS", ST_STR, OFF(keep_headers), "", 0, 0, NULL, HTTP, false, false,
     "http handler: response headers kept in results (comma-separated)"},
    {"error-body-bytes", "CHUNKD_ERROR_BODY_BYTES", ST_INT, OFF(error_body_bytes), "1024", 0, 65536, NULL, HTTP, false,
     false, "http handler: bytes of the response body a failed item's result keeps (its \"body\"; 0: none)"},
    {"max-attempts", "CHUNKD_MAX_ATTEMPTS", ST_INT, OFF(max_attempts), "5", 1, 100, NULL, HTTP, false, false,
     "http and exec handlers: attempts per item, retries included"},
    {"retry-base-ms", "CHUNKD_RETRY_BASE_MS", ST_INT, OFF(retry_base_ms), "500", 1, 3600000, NULL, HTTP, false, false,
     "http and exec handlers: first retry delay (exponential backoff with full jitter)"},
    {"retry-max-ms", "CHUNKD_RETRY_MAX_MS", ST_INT, OFF(retry_max_ms), "30000", 1, 86400000, NULL, HTTP, false, false,
     "http and exec handlers: longest retry delay (http: a Retry-After header may ask for more, up to 10 minutes)"},
    {"retry-statuses", "CHUNKD_RETRY_STATUSES", ST_STR, OFF(retry_statuses), "429,5xx", 0, 0, NULL, HTTP, false, false,
     "http handler: statuses retried (codes or classes like 5xx; connection errors and timeouts always are)"},
    {"idempotency-key", "CHUNKD_IDEMPOTENCY_KEY", ST_BOOL, OFF(idempotency_key), "true", 0, 0, NULL, HTTP, false, false,
     "http handler: send an Idempotency-Key header derived from queue and item id"},
    {"insecure", "CHUNKD_INSECURE", ST_BOOL, OFF(insecure), "false", 0, 0, NULL, HTTP, false, false,
     "http handler: do not verify TLS certificates (logs a warning)"},
    {"ca-file", "CHUNKD_CA_FILE", ST_STR, OFF(ca_file), NULL, 0, 0, NULL, HTTP, false, false,
     "http handler: CA certificates to verify servers with"},
    {"header-file", "CHUNKD_HEADER_FILE", ST_STR, OFF(header_file), NULL, 0, 0, NULL, HTTP, false, false,
     "http handler: file of secret request headers, one \"Name: value\" per line (e.g. a Kubernetes Secret)"},
    {"http-headers", "CHUNKD_HTTP_HEADERS", ST_STR, OFF(http_headers), NULL, 0, 0, NULL, HTTP, true, true,
     "http handler: secret request headers, \"Name: value\" lines (environment only, never a flag)"},
    {"cmd", "CHUNKD_CMD", ST_STR, OFF(cmd), NULL, 0, 0, NULL, HTTP, false, false,
     "exec handler: command of the long-lived subprocesses, split on blanks ('...' and \"...\" group; never a shell)"},
    {"procs", "CHUNKD_PROCS", ST_INT, OFF(procs), "0", 0, 4096, NULL, HTTP, false, false,
     "exec handler: subprocesses of this worker process, on one event loop (0: the number of CPUs)"},
    {"env", "CHUNKD_ENV", ST_STR, OFF(env), "", 0, 0, NULL, HTTP, false, false,
     "exec handler: names of environment variables passed to the subprocesses (comma-separated; PATH, HOME and "
     "LANG always are)"},
    {"exec-timeout-ms", "CHUNKD_EXEC_TIMEOUT_MS", ST_INT, OFF(exec_timeout_ms), "60000", 0, 86400000, NULL, HTTP,
     false, false, "exec handler: a subprocess silent this long on an item is killed and the item retried (0: never)"},
    {"out", "CHUNKD_OUT", ST_STR, OFF(out), NULL, 0, 0, NULL, CMD_COLLECT | CMD_RUN, false, false,
     "result file (a directory with --rotate-lines); default stdout"},
    {"rotate-lines", "CHUNKD_ROTATE_LINES", ST_INT, OFF(rotate_lines), "0", 0, 1000000000, NULL,
     CMD_COLLECT | CMD_RUN, false, false, "lines per file results-NNNNNN.jsonl in the --out directory (0: one file)"},
    {"until-done", "CHUNKD_UNTIL_DONE", ST_BOOL, OFF(until_done), "false", 0, 0, NULL, CMD_COLLECT, false, false,
     "exit once every enqueued item has a result written"},
    {"follow", "CHUNKD_FOLLOW", ST_BOOL, OFF(follow), "false", 0, 0, NULL, CMD_COLLECT, false, false,
     "keep collecting until SIGTERM"},
    {"collect-batch", "CHUNKD_COLLECT_BATCH", ST_INT, OFF(collect_batch), "1000", 1, 100000, NULL,
     CMD_COLLECT | CMD_RUN, false, false, "stream entries read, written and acknowledged at a time"},
    {"consumer", "CHUNKD_CONSUMER", ST_STR, OFF(consumer), "collector", 0, 0, NULL, CMD_COLLECT | CMD_RUN, false, false,
     "consumer name in the group chunkd-collect (a restarted collector with the same name re-reads its batch)"},
    {"watch", "CHUNKD_WATCH", ST_BOOL, OFF(watch), "false", 0, 0, NULL, CMD_STATUS, false, false,
     "keep showing progress until interrupted (a live screen on a terminal, else one line per interval)"},
    {"interval-ms", "CHUNKD_INTERVAL_MS", ST_INT, OFF(interval_ms), "2000", 100, 3600000, NULL, CMD_STATUS, false,
     false, "status --watch: time between updates"},
    {"json", "CHUNKD_JSON", ST_BOOL, OFF(json), "false", 0, 0, NULL, CMD_STATUS, false, false, "print one JSON object"},
    {"limit", "CHUNKD_LIMIT", ST_INT, OFF(limit), "0", 0, 1000000000000LL, NULL, CMD_REQUEUE, false, false,
     "requeue: most dead records to move (0: all)"},
    {"redis-server", "CHUNKD_REDIS_SERVER", ST_STR, OFF(redis_server), "redis-server", 0, 0, NULL, CMD_RUN, false, false,
     "redis-server binary for the private server"},
};

#define N_SETTINGS (sizeof setting_defs / sizeof setting_defs[0])

static const struct {
    const char *name;
    int bit;
} commands[] = {
    {"enqueue", CMD_ENQUEUE}, {"worker", CMD_WORKER}, {"collect", CMD_COLLECT},
    {"status", CMD_STATUS},   {"run", CMD_RUN},         {"requeue", CMD_REQUEUE},
    {"recover", CMD_RECOVER},
};

int settings_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return commands[i].bit;
    return 0;
}

static char **str_field(settings_t *s, const setting_def_t *d) { return (char **)((char *)s + d->offset); }
static long long *int_field(settings_t *s, const setting_def_t *d) { return (long long *)((char *)s + d->offset); }
static bool *bool_field(settings_t *s, const setting_def_t *d) { return (bool *)((char *)s + d->offset); }

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0) return *out = false, 0;
    }
    return -1;
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t len = strlen(v);
    for (const char *p = choices; *p;) {
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0) return true;
        p += n;
        while (*p == ' ') p++;
    }
    return false;
}

/* Sets one setting from text. source names where it came from, for the error message. */
static int setting_set(settings_t *s, const setting_def_t *d, const char *v, const char *source, char *err,
                       size_t errlen)
{
    switch (d->type) {
    case ST_STR:
        if (strlen(v) > 4096) {
            snprintf(err, errlen, "invalid value for --%s (%s, from %s): longer than 4096 bytes", d->name, d->env,
                     source);
            return -1;
        }
        if (d->choices && !choice_ok(d->choices, v)) {
            snprintf(err, errlen, "invalid value '%s' for --%s (%s, from %s): expected one of: %s", v, d->name,
                     d->env, source, d->choices);
            return -1;
        }
        free(*str_field(s, d));
        *str_field(s, d) = xstrdup(v);
        return 0;
    case ST_INT: {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end || n < d->min || n > d->max) {
            snprintf(err, errlen, "invalid value '%.64s' for --%s (%s, from %s): expected an integer from %lld to %lld",
                     v, d->name, d->env, source, d->min, d->max);
            return -1;
        }
        *int_field(s, d) = n;
        return 0;
    }
    case ST_BOOL:
        if (parse_bool(v, bool_field(s, d))) {
            snprintf(err, errlen, "invalid value '%.64s' for --%s (%s, from %s): expected true or false", v, d->name,
                     d->env, source);
            return -1;
        }
        return 0;
    }
    return -1;
}

static const setting_def_t *setting_by_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strlen(setting_defs[i].name) == len && strncmp(setting_defs[i].name, name, len) == 0)
            return &setting_defs[i];
    return NULL;
}

static bool env_known(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strlen(setting_defs[i].env) == len && strncmp(setting_defs[i].env, name, len) == 0) return true;
    return false;
}

settings_rc_t settings_parse(settings_t *s, int cmd, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (setting_defs[i].def && setting_set(s, &setting_defs[i], setting_defs[i].def, "default", err, errlen))
            return SETTINGS_ERROR;

    /* Flags are read first and applied last, so that a flag wins over the environment and an environment value
     * that a flag replaces is not even checked. */
    const char *flag_value[N_SETTINGS] = {0};
    const char *bad = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return SETTINGS_HELP;
        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc && (s->input || i + 2 < argc || !(cmd & (CMD_ENQUEUE | CMD_RUN)))) {
                bad = argv[argc - 1];
                goto extra;
            }
            if (i + 1 < argc) s->input = argv[i + 1];
            break;
        }
        if (a[0] == '-' && a[1] != '\0' && a[1] != '-') {
            snprintf(err, errlen, "unknown option '%.64s' (options are --name or --name=value; see --help)", a);
            return SETTINGS_ERROR;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (s->input || !(cmd & (CMD_ENQUEUE | CMD_RUN))) {
                bad = a;
                goto extra;
            }
            s->input = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        bool negated = false;
        const setting_def_t *d = setting_by_flag(name, len);
        if (!d && len > 3 && strncmp(name, "no-", 3) == 0) {
            d = setting_by_flag(name + 3, len - 3);
            negated = d && d->type == ST_BOOL && !eq;
            if (!negated) d = NULL;
        }
        if (!d || !(d->cmds & cmd)) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)(len > 64 ? 64 : len), name);
            return SETTINGS_ERROR;
        }
        if (d->env_only) {
            snprintf(err, errlen, "--%s holds secrets and is not accepted on the command line: set %s or use "
                     "--header-file", d->name, d->env);
            return SETTINGS_ERROR;
        }
        const char *v;
        if (negated) v = "false";
        else if (eq) v = eq + 1;
        else if (d->type == ST_BOOL) v = "true";
        else if (i + 1 < argc) v = argv[++i];
        else {
            snprintf(err, errlen, "option --%s (%s) needs a value", d->name, d->env);
            return SETTINGS_ERROR;
        }
        flag_value[d - setting_defs] = v;
    }

    /* Environment: known variables of this command apply; unknown CHUNKD_* ones are warned about. */
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t len = (size_t)(eq - *e);
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const setting_def_t *d = &setting_defs[i];
            if (!(d->cmds & cmd) || flag_value[i] || strlen(d->env) != len || strncmp(d->env, *e, len) != 0)
                continue;
            if (setting_set(s, d, eq + 1, "environment", err, errlen)) return SETTINGS_ERROR;
            if (d->offset == OFF(queue)) s->queue_set = true;
            if (d->offset == OFF(http_port)) s->http_port_set = true;
        }
        if (len > 7 && strncmp(*e, "CHUNKD_", 7) == 0 && !env_known(*e, len))
            LOG(LL_WARN, "ignoring unknown environment variable %.*s", (int)len, *e);
    }

    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (!flag_value[i]) continue;
        if (setting_set(s, &setting_defs[i], flag_value[i], "command line", err, errlen)) return SETTINGS_ERROR;
        if (setting_defs[i].offset == OFF(queue)) s->queue_set = true;
        if (setting_defs[i].offset == OFF(http_port)) s->http_port_set = true;
    }

    /* Checks across settings. */
    if (s->queue[0] == '\0' || strpbrk(s->queue, "{}") || strlen(s->queue) > 200) {
        snprintf(err, errlen, "invalid value for --queue (CHUNKD_QUEUE): 1 to 200 characters without '{' or '}'");
        return SETTINGS_ERROR;
    }
    if (s->until_done && s->follow) {
        snprintf(err, errlen, "--until-done (CHUNKD_UNTIL_DONE) and --follow (CHUNKD_FOLLOW) exclude each other");
        return SETTINGS_ERROR;
    }
    if (s->rotate_lines > 0 && !s->out) {
        snprintf(err, errlen, "--rotate-lines (CHUNKD_ROTATE_LINES) needs --out DIRECTORY");
        return SETTINGS_ERROR;
    }
    if (s->base_url && strncmp(s->base_url, "http://", 7) != 0 && strncmp(s->base_url, "https://", 8) != 0) {
        snprintf(err, errlen, "invalid value for --base-url (CHUNKD_BASE_URL): must start with http:// or https://");
        return SETTINGS_ERROR;
    }
    if (strcmp(s->handler, "http") == 0 && !s->base_url && !s->allow_hosts[0]) {
        snprintf(err, errlen, "--handler http needs --base-url (CHUNKD_BASE_URL), or --allow-hosts for items with an "
                              "absolute \"url\"");
        return SETTINGS_ERROR;
    }
    if (strcmp(s->handler, "exec") == 0 && (!s->cmd || !s->cmd[0])) {
        snprintf(err, errlen, "--handler exec needs --cmd (CHUNKD_CMD), the command of its subprocesses");
        return SETTINGS_ERROR;
    }
    double per_s;
    if (s->rate_limit && s->rate_limit[0] && ratelimit_parse_rate(s->rate_limit, &per_s)) {
        snprintf(err, errlen, "invalid value '%.64s' for --rate-limit (CHUNKD_RATE_LIMIT): expected N/s or N/m with "
                 "N > 0, e.g. 200/s or 30/m", s->rate_limit);
        return SETTINGS_ERROR;
    }
    if (s->retry_max_ms < s->retry_base_ms) {
        snprintf(err, errlen, "--retry-max-ms (CHUNKD_RETRY_MAX_MS) must not be less than --retry-base-ms");
        return SETTINGS_ERROR;
    }
    if (s->redis_url) {
        redis_url_t url;
        char uerr[256];
        if (redis_url_parse(s->redis_url, &url, uerr, sizeof uerr)) {
            snprintf(err, errlen, "invalid value for --redis (REDIS_URL): %s", uerr);
            return SETTINGS_ERROR;
        }
    }
    log_level_parse(s->log_level, &log_min_level);
    log_set_json(strcmp(s->log_format, "json") == 0);
    return SETTINGS_OK;

extra:
    snprintf(err, errlen, "unexpected argument '%.64s' (see --help)", bad);
    return SETTINGS_ERROR;
}

void settings_free(settings_t *s)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (setting_defs[i].type == ST_STR) {
            free(*str_field(s, &setting_defs[i]));
            *str_field(s, &setting_defs[i]) = NULL;
        }
}

void settings_help(int cmd, const char *cmd_name, const char *usage, const char *summary)
{
    printf("usage: chunkd %s %s\n\n%s\n\nSettings (flag, environment variable, default):\n", cmd_name, usage, summary);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_def_t *d = &setting_defs[i];
        if (!(d->cmds & cmd)) continue;
        char flag[64];
        snprintf(flag, sizeof flag, "%s%s%s", d->env_only ? "(env only) " : "--", d->env_only ? "" : d->name,
                 d->type == ST_BOOL ? "" : d->type == ST_INT ? " N" : d->env_only ? "" : " S");
        printf("  %-26s %-26s %s\n", flag, d->env, d->help);
        if (d->type == ST_INT)
            printf("  %-26s %-26s default %s, from %lld to %lld\n", "", "", d->def, d->min, d->max);
        else if (d->choices)
            printf("  %-26s %-26s default %s, one of: %s\n", "", "", d->def, d->choices);
        else if (d->def)
            printf("  %-26s %-26s default %s\n", "", "", d->def);
    }
}

void settings_format_effective(const settings_t *s, int cmd, char *line, size_t cap)
{
    size_t n = 0;
    line[0] = '\0';
    for (size_t i = 0; i < N_SETTINGS && n < cap; i++) {
        const setting_def_t *d = &setting_defs[i];
        if (!(d->cmds & cmd)) continue;
        char val[512];
        settings_t *ms = (settings_t *)s;
        switch (d->type) {
        case ST_STR: {
            const char *v = *str_field(ms, d);
            if (!v) snprintf(val, sizeof val, "-");
            else if (d->secret && d->offset == OFF(redis_url)) redis_url_mask(v, val, sizeof val);
            else if (d->secret) snprintf(val, sizeof val, "***");
            else log_mask_userinfo(v, val, sizeof val);
            break;
        }
        case ST_INT: snprintf(val, sizeof val, "%lld", *int_field(ms, d)); break;
        case ST_BOOL: snprintf(val, sizeof val, "%s", *bool_field(ms, d) ? "true" : "false"); break;
        }
        int m = snprintf(line + n, cap - n, "%s%s=%s", n ? " " : "", d->name, val);
        if (m > 0) n += (size_t)m;
    }
}

void settings_log_effective(const settings_t *s, int cmd, int level)
{
    if (level < (int)log_min_level) return;
    char line[LOG_LINE_MAX - 128];
    settings_format_effective(s, cmd, line, sizeof line);
    log_write((log_level_t)level, "settings: %s", line);
}
