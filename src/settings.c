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
#include <unistd.h>

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

#define OFF(field) offsetof(settings_t, field)

static const setting_def_t setting_defs[] = {
    {.name = "redis", .env = "REDIS_URL", .type = ST_STR, .offset = OFF(redis_url), .cmds = CMD_ALL, .secret = true,
     .help = "Redis address: redis://[user:password@]host[:port][/db] or unix:///path[?db=N] (run: a private server "
             "when unset)"},
    {.name = "queue", .env = "CHUNKD_QUEUE", .type = ST_STR, .offset = OFF(queue), .def = "default", .cmds = CMD_ALL,
     .help = "queue name Q; keys are chunkd:{Q}:* (run: a fresh name when unset)"},
    {.name = "log-level", .env = "CHUNKD_LOG_LEVEL", .type = ST_STR, .offset = OFF(log_level), .def = "info",
     .choices = "debug info warn error", .cmds = CMD_ALL,
     .help = "least severe level logged"},
    {.name = "log-format", .env = "CHUNKD_LOG_FORMAT", .type = ST_STR, .offset = OFF(log_format), .def = "text",
     .choices = "text json", .cmds = CMD_ALL,
     .help = "log lines as text or as JSON objects (for cluster log collectors)"},
    {.name = "redis-timeout-ms", .env = "CHUNKD_REDIS_TIMEOUT_MS", .type = ST_INT, .offset = OFF(redis_timeout_ms),
     .def = "5000", .min = 100, .max = 600000, .cmds = CMD_ALL,
     .help = "Redis connect and command timeout"},
    {.name = "redis-wait-ms", .env = "CHUNKD_REDIS_WAIT_MS", .type = ST_INT, .offset = OFF(redis_wait_ms), .def = "0",
     .min = 0, .max = 86400000, .cmds = CMD_WORKER,
     .help = "at start, how long to wait for a Redis that cannot be reached (not ready meanwhile) before exiting 1 "
             "(0: forever)"},
    {.name = "chunk-size", .env = "CHUNKD_CHUNK_SIZE", .type = ST_INT, .offset = OFF(chunk_size), .def = "100",
     .min = 1, .max = 100000, .cmds = CMD_ENQUEUE | CMD_RUN | CMD_REQUEUE,
     .help = "items per chunk"},
    {.name = "max-item-bytes", .env = "CHUNKD_MAX_ITEM_BYTES", .type = ST_INT, .offset = OFF(max_item_bytes),
     .def = "1048576", .min = 16, .max = 67108864, .cmds = CMD_ENQUEUE | CMD_RUN,
     .help = "longest input line accepted; longer lines are rejected"},
    {.name = "rejects", .env = "CHUNKD_REJECTS", .type = ST_STR, .offset = OFF(rejects), .cmds = CMD_ENQUEUE | CMD_RUN,
     .help = "file for rejected lines (default <input>.rejected, or chunkd-rejected.jsonl for stdin)"},
    {.name = "handler", .env = "CHUNKD_HANDLER", .type = ST_STR, .offset = OFF(handler), .def = "sleep",
     .choices = "sleep echo http exec", .cmds = CMD_WORKER | CMD_RUN,
     .help = "what runs each item"},
    {.name = "sleep-ms", .env = "CHUNKD_SLEEP_MS", .type = ST_INT, .offset = OFF(sleep_ms), .def = "100", .min = 0,
     .max = 86400000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "sleep handler: delay for items without a \"sleep_ms\" field"},
    {.name = "concurrency", .env = "CHUNKD_CONCURRENCY", .type = ST_INT, .offset = OFF(concurrency), .def = "1000",
     .min = 1, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "items held in flight by this process"},
    {.name = "threads", .env = "CHUNKD_THREADS", .type = ST_INT, .offset = OFF(threads), .def = "0", .min = 0,
     .max = 256, .cmds = CMD_WORKER | CMD_RUN,
     .help = "event-loop threads (0: the number of CPUs)"},
    {.name = "exit-when-empty", .env = "CHUNKD_EXIT_WHEN_EMPTY", .type = ST_BOOL, .offset = OFF(exit_when_empty),
     .def = "false", .cmds = CMD_WORKER,
     .help = "exit 0 once pending is empty and nothing is in flight (Kubernetes Job mode)"},
    {.name = "include-item", .env = "CHUNKD_INCLUDE_ITEM", .type = ST_BOOL, .offset = OFF(include_item),
     .def = "false", .cmds = CMD_WORKER | CMD_RUN,
     .help = "each result line carries its input item as \"item\" (no join by id needed)"},
    {.name = "drain-timeout-ms", .env = "CHUNKD_DRAIN_TIMEOUT_MS", .type = ST_INT, .offset = OFF(drain_timeout_ms),
     .def = "20000", .min = 0, .max = 3600000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "on SIGTERM, how long in-flight items may take before their chunks go back"},
    {.name = "fetch-block-ms", .env = "CHUNKD_FETCH_BLOCK_MS", .type = ST_INT, .offset = OFF(fetch_block_ms),
     .def = "1000", .min = 10, .max = 60000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "longest pause between two looks at an empty queue (from 5 ms, doubling)"},
    {.name = "commit-batch", .env = "CHUNKD_COMMIT_BATCH", .type = ST_INT, .offset = OFF(commit_batch), .def = "2000",
     .min = 1, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "results per commit round trip (several chunks are pipelined)"},
    {.name = "commit-interval-ms", .env = "CHUNKD_COMMIT_INTERVAL_MS", .type = ST_INT,
     .offset = OFF(commit_interval_ms), .def = "20", .min = 0, .max = 60000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "longest a finished chunk waits for a fuller batch"},
    {.name = "lease-ms", .env = "CHUNKD_LEASE_MS", .type = ST_INT, .offset = OFF(lease_ms), .def = "10000", .min = 1000,
     .max = 600000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "a worker renews its lease every third of this; one silent this long has its chunks given back"},
    {.name = "item-timeout-ms", .env = "CHUNKD_ITEM_TIMEOUT_MS", .type = ST_INT, .offset = OFF(item_timeout_ms),
     .def = "600000", .min = 0, .max = 86400000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "an item still running after this fails with a timeout error (0: never)"},
    {.name = "checkpoint-ms", .env = "CHUNKD_CHECKPOINT_MS", .type = ST_INT, .offset = OFF(checkpoint_ms),
     .def = "1000", .min = 0, .max = 3600000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "a chunk older than this commits its finished items as they finish; a younger one commits once, when "
             "complete"},
    {.name = "max-deliveries", .env = "CHUNKD_MAX_DELIVERIES", .type = ST_INT, .offset = OFF(max_deliveries),
     .def = "5", .min = 0, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "a chunk fetched more often than this (its workers died) is not run again: its items go to dead (0: no "
             "limit)"},
    {.name = "max-chunk-bytes", .env = "CHUNKD_MAX_CHUNK_BYTES", .type = ST_INT, .offset = OFF(max_chunk_bytes),
     .def = "67108864", .min = 1024, .max = 536870912, .cmds = CMD_ENQUEUE | CMD_WORKER | CMD_RUN | CMD_REQUEUE,
     .help = "enqueue and requeue build no larger chunk; a worker moves a larger one to dead unread, whole (requeue-able)"},
    {.name = "max-held-bytes", .env = "CHUNKD_MAX_HELD_BYTES", .type = ST_INT, .offset = OFF(max_held_bytes),
     .def = "268435456", .min = 1048576, .max = 68719476736LL, .cmds = CMD_WORKER | CMD_RUN,
     .help = "fetching waits while the chunks held take more bytes than this (besides --concurrency)"},
    {.name = "max-results-backlog", .env = "CHUNKD_MAX_RESULTS_BACKLOG", .type = ST_INT,
     .offset = OFF(max_results_backlog), .def = "1000000", .min = 0, .max = 1000000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "fetching pauses while the results stream holds more entries than this (0: no limit)"},
    {.name = "rate-limit", .env = "CHUNKD_RATE_LIMIT", .type = ST_STR, .offset = OFF(rate_limit), .def = "",
     .cmds = CMD_WORKER | CMD_RUN,
     .help = "calls per second (N/s) or minute (N/m) across every worker of the queue, adaptive to 429s (empty: "
             "none)"},
    {.name = "rate-burst", .env = "CHUNKD_RATE_BURST", .type = ST_INT, .offset = OFF(rate_burst), .def = "0", .min = 0,
     .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "calls --rate-limit lets through at once after a quiet spell (0: 100 ms worth, at least 1)"},
    {.name = "max-inflight-global", .env = "CHUNKD_MAX_INFLIGHT_GLOBAL", .type = ST_INT,
     .offset = OFF(max_inflight_global), .def = "0", .min = 0, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .help = "calls in flight at once across every worker of the queue (0: no cap)"},
    {.name = "http-port", .env = "CHUNKD_HTTP_PORT", .type = ST_INT, .offset = OFF(http_port), .def = "8080", .min = 0,
     .max = 65535, .cmds = CMD_WORKER | CMD_RUN,
     .help = "port of /healthz, /readyz and /metrics (0: no HTTP server; run: none unless given)"},
    {.name = "http-addr", .env = "CHUNKD_HTTP_ADDR", .type = ST_STR, .offset = OFF(http_addr), .def = "0.0.0.0",
     .cmds = CMD_WORKER | CMD_RUN,
     .help = "IPv4 address the HTTP server listens on"},
    {.name = "test-stall-ms", .env = "CHUNKD_TEST_STALL_MS", .type = ST_INT, .offset = OFF(test_stall_ms), .def = "0",
     .min = 0, .max = 600000, .cmds = CMD_WORKER,
     .help = "for tests only: event loop 0 blocks this long after start, so /healthz must turn 503"},
    {.name = "worker-id", .env = "CHUNKD_WORKER_ID", .type = ST_STR, .offset = OFF(worker_id), .cmds = CMD_WORKER,
     .help = "this worker's id (default hostname-pid-random)"},
#define HTTP (CMD_WORKER | CMD_RUN)
    {.name = "base-url", .env = "CHUNKD_BASE_URL", .type = ST_STR, .offset = OFF(base_url), .cmds = HTTP,
     .help = "http handler: URL that each item's \"path\" is joined to"},
    {.name = "allow-hosts", .env = "CHUNKD_ALLOW_HOSTS", .type = ST_STR, .offset = OFF(allow_hosts), .def = "",
     .cmds = HTTP,
     .help = "http handler: hosts an item's absolute \"url\" may name, comma-separated: host or [IPv6] (the scheme's "
             "default port only: 80, 443), host:port or [IPv6]:port (that port only); empty: none"},
    {.name = "http-timeout-ms", .env = "CHUNKD_HTTP_TIMEOUT_MS", .type = ST_INT, .offset = OFF(http_timeout_ms),
     .def = "30000", .min = 1, .max = 3600000, .cmds = HTTP,
     .help = "http handler: total time of one call"},
    {.name = "connect-timeout-ms", .env = "CHUNKD_CONNECT_TIMEOUT_MS", .type = ST_INT,
     .offset = OFF(connect_timeout_ms), .def = "5000", .min = 1, .max = 600000, .cmds = HTTP,
     .help = "http handler: time to connect"},
    {.name = "max-result-bytes", .env = "CHUNKD_MAX_RESULT_BYTES", .type = ST_INT, .offset = OFF(max_result_bytes),
     .def = "1048576", .min = 0, .max = 268435456, .cmds = HTTP,
     .help = "http handler: largest response body; a larger one fails the item (exec: longest reply line)"},
    {.name = "keep-headers", .env = "CHUNKD_KEEP_HEADERS", .type = ST_STR, .offset = OFF(keep_headers), .def = "",
     .cmds = HTTP,
     .help = "http handler: response headers kept in results (comma-separated)"},
    {.name = "error-body-bytes", .env = "CHUNKD_ERROR_BODY_BYTES", .type = ST_INT, .offset = OFF(error_body_bytes),
     .def = "1024", .min = 0, .max = 65536, .cmds = HTTP,
     .help = "http handler: bytes of the response body a failed item's result keeps (its \"body\"; 0: none)"},
    {.name = "max-attempts", .env = "CHUNKD_MAX_ATTEMPTS", .type = ST_INT, .offset = OFF(max_attempts), .def = "5",
     .min = 1, .max = 100, .cmds = HTTP,
     .help = "http and exec handlers: attempts per item, retries included"},
    {.name = "retry-base-ms", .env = "CHUNKD_RETRY_BASE_MS", .type = ST_INT, .offset = OFF(retry_base_ms), .def = "500",
     .min = 1, .max = 3600000, .cmds = HTTP,
     .help = "http and exec handlers: first retry delay (exponential backoff with full jitter)"},
    {.name = "retry-max-ms", .env = "CHUNKD_RETRY_MAX_MS", .type = ST_INT, .offset = OFF(retry_max_ms), .def = "30000",
     .min = 1, .max = 86400000, .cmds = HTTP,
     .help = "http and exec handlers: longest retry delay (http: a Retry-After header may ask for more, up to 10 "
             "minutes)"},
    {.name = "retry-statuses", .env = "CHUNKD_RETRY_STATUSES", .type = ST_STR, .offset = OFF(retry_statuses),
     .def = "429,5xx", .cmds = HTTP,
     .help = "http handler: statuses retried (codes or classes like 5xx; connection errors and timeouts always are)"},
    {.name = "idempotency-key", .env = "CHUNKD_IDEMPOTENCY_KEY", .type = ST_BOOL, .offset = OFF(idempotency_key),
     .def = "true", .cmds = HTTP,
     .help = "http handler: send an Idempotency-Key header derived from queue and item id"},
    {.name = "breaker-window-ms", .env = "CHUNKD_BREAKER_WINDOW_MS", .type = ST_INT, .offset = OFF(breaker_window_ms),
     .def = "10000", .min = 100, .max = 3600000, .cmds = HTTP,
     .help = "http handler's circuit breaker: it judges the last 100 calls made within this span"},
    {.name = "breaker-failure-percent", .env = "CHUNKD_BREAKER_FAILURE_PERCENT", .type = ST_INT,
     .offset = OFF(breaker_failure_percent), .def = "90", .min = 0, .max = 100, .cmds = HTTP,
     .help = "circuit breaker: % of those calls failing (connection error, timeout, 5xx) that opens it (0: no breaker)"},
    {.name = "breaker-min-calls", .env = "CHUNKD_BREAKER_MIN_CALLS", .type = ST_INT, .offset = OFF(breaker_min_calls),
     .def = "20", .min = 1, .max = 100, .cmds = HTTP,
     .help = "circuit breaker: calls it must have judged before it can open"},
    {.name = "breaker-probe-max-ms", .env = "CHUNKD_BREAKER_PROBE_MAX_MS", .type = ST_INT,
     .offset = OFF(breaker_probe_max_ms), .def = "1000", .min = 100, .max = 600000, .cmds = HTTP,
     .help = "circuit breaker: longest wait between probes of an open circuit (from 100 ms, doubling)"},
    {.name = "insecure", .env = "CHUNKD_INSECURE", .type = ST_BOOL, .offset = OFF(insecure), .def = "false",
     .cmds = HTTP,
     .help = "http handler: do not verify TLS certificates (logs a warning)"},
    {.name = "ca-file", .env = "CHUNKD_CA_FILE", .type = ST_STR, .offset = OFF(ca_file), .cmds = HTTP,
     .help = "http handler: CA certificates to verify servers with"},
    {.name = "header-file", .env = "CHUNKD_HEADER_FILE", .type = ST_STR, .offset = OFF(header_file), .cmds = HTTP,
     .help = "http handler: file of secret request headers, one \"Name: value\" per line (e.g. a Kubernetes Secret)"},
    {.name = "http-headers", .env = "CHUNKD_HTTP_HEADERS", .type = ST_STR, .offset = OFF(http_headers), .cmds = HTTP,
     .secret = true, .env_only = true,
     .help = "http handler: secret request headers, \"Name: value\" lines (environment only, never a flag)"},
    {.name = "cmd", .env = "CHUNKD_CMD", .type = ST_STR, .offset = OFF(cmd), .cmds = HTTP,
     .help = "exec handler: command of the long-lived subprocesses, split on blanks ('...' and \"...\" group; never "
             "a shell)"},
    {.name = "procs", .env = "CHUNKD_PROCS", .type = ST_INT, .offset = OFF(procs), .def = "0", .min = 0, .max = 4096,
     .cmds = HTTP,
     .help = "exec handler: subprocesses of this worker process, on one event loop (0: the number of CPUs)"},
    {.name = "env", .env = "CHUNKD_ENV", .type = ST_STR, .offset = OFF(env), .def = "", .cmds = HTTP,
     .help = "exec handler: names of environment variables passed to the subprocesses (comma-separated; PATH, HOME "
             "and LANG always are)"},
    {.name = "exec-timeout-ms", .env = "CHUNKD_EXEC_TIMEOUT_MS", .type = ST_INT, .offset = OFF(exec_timeout_ms),
     .def = "60000", .min = 0, .max = 86400000, .cmds = HTTP,
     .help = "exec handler: a subprocess silent this long on an item is killed and the item retried (0: never)"},
    {.name = "out", .env = "CHUNKD_OUT", .type = ST_STR, .offset = OFF(out), .cmds = CMD_COLLECT | CMD_RUN,
     .help = "result file (a directory with --rotate-lines); default stdout"},
    {.name = "rotate-lines", .env = "CHUNKD_ROTATE_LINES", .type = ST_INT, .offset = OFF(rotate_lines), .def = "0",
     .min = 0, .max = 1000000000, .cmds = CMD_COLLECT | CMD_RUN,
     .help = "lines per file results-NNNNNN.jsonl in the --out directory (0: one file)"},
    {.name = "until-done", .env = "CHUNKD_UNTIL_DONE", .type = ST_BOOL, .offset = OFF(until_done), .def = "false",
     .cmds = CMD_COLLECT,
     .help = "exit once every enqueued item has a result written"},
    {.name = "follow", .env = "CHUNKD_FOLLOW", .type = ST_BOOL, .offset = OFF(follow), .def = "false",
     .cmds = CMD_COLLECT,
     .help = "keep collecting until SIGTERM"},
    {.name = "last-only", .env = "CHUNKD_LAST_ONLY", .type = ST_BOOL, .offset = OFF(last_only), .def = "false",
     .cmds = CMD_COLLECT,
     .help = "with --until-done and --out FILE: at the end keep only the last line (highest seq) of each id"},
    {.name = "collect-batch", .env = "CHUNKD_COLLECT_BATCH", .type = ST_INT, .offset = OFF(collect_batch),
     .def = "1000", .min = 1, .max = 100000, .cmds = CMD_COLLECT | CMD_RUN,
     .help = "stream entries read, written and acknowledged at a time"},
    {.name = "consumer", .env = "CHUNKD_CONSUMER", .type = ST_STR, .offset = OFF(consumer), .def = "collector",
     .cmds = CMD_COLLECT | CMD_RUN,
     .help = "consumer name in the group chunkd-collect (a restarted collector with the same name re-reads its "
             "batch)"},
    {.name = "watch", .env = "CHUNKD_WATCH", .type = ST_BOOL, .offset = OFF(watch), .def = "false", .cmds = CMD_STATUS,
     .help = "keep showing progress until interrupted (a live screen on a terminal, else one line per interval)"},
    {.name = "interval-ms", .env = "CHUNKD_INTERVAL_MS", .type = ST_INT, .offset = OFF(interval_ms), .def = "2000",
     .min = 100, .max = 3600000, .cmds = CMD_STATUS,
     .help = "status --watch: time between updates"},
    {.name = "json", .env = "CHUNKD_JSON", .type = ST_BOOL, .offset = OFF(json), .def = "false", .cmds = CMD_STATUS | CMD_DEAD,
     .help = "status: print one JSON object; dead: each record as stored, one JSON object per line"},
    {.name = "limit", .env = "CHUNKD_LIMIT", .type = ST_INT, .offset = OFF(limit), .def = "0", .min = 0,
     .max = 1000000000000LL, .cmds = CMD_REQUEUE | CMD_DEAD,
     .help = "requeue: most dead records to move; dead: most to show (0: all)"},
    {.name = "redis-server", .env = "CHUNKD_REDIS_SERVER", .type = ST_STR, .offset = OFF(redis_server),
     .def = "redis-server", .cmds = CMD_RUN,
     .help = "redis-server binary for the private server"},
};

#define N_SETTINGS (sizeof setting_defs / sizeof setting_defs[0])

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

/* Sets one setting from text, as setting_set() does, and notes the settings whose being given at all matters. */
static int setting_apply(settings_t *s, const setting_def_t *d, const char *v, const char *source, char *err,
                         size_t errlen)
{
    if (setting_set(s, d, v, source, err, errlen)) return -1;
    if (d->offset == OFF(queue)) s->queue_set = true;
    if (d->offset == OFF(http_port)) s->http_port_set = true;
    return 0;
}

/* Every setting's default. */
static int settings_defaults(settings_t *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (setting_defs[i].def && setting_set(s, &setting_defs[i], setting_defs[i].def, "default", err, errlen))
            return -1;
    return 0;
}

/* Reads the flag argv[*i] ("--name", "--name=value", "--no-name" or "--name value", which advances *i) into
 * flag_value[] at its table index. Returns 0, or -1 with err. */
static int settings_read_flag(int cmd, int argc, char **argv, int *i, const char **flag_value, char *err,
                              size_t errlen)
{
    const char *name = argv[*i] + 2, *eq = strchr(name, '=');
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
        return -1;
    }
    if (d->env_only) {
        snprintf(err, errlen, "--%s holds secrets and is not accepted on the command line: set %s or use "
                 "--header-file", d->name, d->env);
        return -1;
    }
    const char *v;
    if (negated) v = "false";
    else if (eq) v = eq + 1;
    else if (d->type == ST_BOOL) v = "true";
    else if (*i + 1 < argc) v = argv[++*i];
    else {
        snprintf(err, errlen, "option --%s (%s) needs a value", d->name, d->env);
        return -1;
    }
    flag_value[d - setting_defs] = v;
    return 0;
}

static settings_rc_t settings_unexpected(const char *arg, char *err, size_t errlen)
{
    snprintf(err, errlen, "unexpected argument '%.64s' (see --help)", arg);
    return SETTINGS_ERROR;
}

/* Reads the command line (argv[0] is the subcommand): each flag's text into flag_value[], applied later; the
 * positional FILE (enqueue and run only) into s->input. Returns SETTINGS_OK, SETTINGS_HELP, or SETTINGS_ERROR with
 * err. */
static settings_rc_t settings_read_argv(settings_t *s, int cmd, int argc, char **argv, const char **flag_value,
                                        char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return SETTINGS_HELP;
        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc && (s->input || i + 2 < argc || !(cmd & (CMD_ENQUEUE | CMD_RUN))))
                return settings_unexpected(argv[argc - 1], err, errlen);
            if (i + 1 < argc) s->input = argv[i + 1];
            break;
        }
        if (a[0] == '-' && a[1] != '\0' && a[1] != '-') {
            snprintf(err, errlen, "unknown option '%.64s' (options are --name or --name=value; see --help)", a);
            return SETTINGS_ERROR;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (s->input || !(cmd & (CMD_ENQUEUE | CMD_RUN))) return settings_unexpected(a, err, errlen);
            s->input = a;
            continue;
        }
        if (settings_read_flag(cmd, argc, argv, &i, flag_value, err, errlen)) return SETTINGS_ERROR;
    }
    return SETTINGS_OK;
}

/* Applies the environment's known variables of this command, except those a flag replaces (not even checked);
 * warns about unknown CHUNKD_* ones. */
static int settings_read_env(settings_t *s, int cmd, char **envp, const char *const *flag_value, char *err,
                             size_t errlen)
{
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t len = (size_t)(eq - *e);
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const setting_def_t *d = &setting_defs[i];
            if (!(d->cmds & cmd) || flag_value[i] || strlen(d->env) != len || strncmp(d->env, *e, len) != 0)
                continue;
            if (setting_apply(s, d, eq + 1, "environment", err, errlen)) return -1;
        }
        if (len > 7 && strncmp(*e, "CHUNKD_", 7) == 0 && !env_known(*e, len))
            LOG(LL_WARN, "ignoring unknown environment variable %.*s", (int)len, *e);
    }
    return 0;
}

/* Checks across settings, once all are read. */
static int settings_check(const settings_t *s, char *err, size_t errlen)
{
    if (s->queue[0] == '\0' || strpbrk(s->queue, "{}") || strlen(s->queue) > 200) {
        snprintf(err, errlen, "invalid value for --queue (CHUNKD_QUEUE): 1 to 200 characters without '{' or '}'");
        return -1;
    }
    if (s->until_done && s->follow) {
        snprintf(err, errlen, "--until-done (CHUNKD_UNTIL_DONE) and --follow (CHUNKD_FOLLOW) exclude each other");
        return -1;
    }
    if (s->last_only && (!s->until_done || !s->out || strcmp(s->out, "-") == 0 || s->rotate_lines > 0)) {
        snprintf(err, errlen, "--last-only (CHUNKD_LAST_ONLY) needs --until-done and --out FILE (one file, no "
                              "--rotate-lines)");
        return -1;
    }
    if (s->rotate_lines > 0 && !s->out) {
        snprintf(err, errlen, "--rotate-lines (CHUNKD_ROTATE_LINES) needs --out DIRECTORY");
        return -1;
    }
    if (s->base_url && strncmp(s->base_url, "http://", 7) != 0 && strncmp(s->base_url, "https://", 8) != 0) {
        snprintf(err, errlen, "invalid value for --base-url (CHUNKD_BASE_URL): must start with http:// or https://");
        return -1;
    }
    if (strcmp(s->handler, "http") == 0 && !s->base_url && !s->allow_hosts[0]) {
        snprintf(err, errlen, "--handler http needs --base-url (CHUNKD_BASE_URL), or --allow-hosts for items with an "
                              "absolute \"url\"");
        return -1;
    }
    if (strcmp(s->handler, "exec") == 0 && (!s->cmd || !s->cmd[0])) {
        snprintf(err, errlen, "--handler exec needs --cmd (CHUNKD_CMD), the command of its subprocesses");
        return -1;
    }
    double per_s;
    if (s->rate_limit && s->rate_limit[0] && ratelimit_parse_rate(s->rate_limit, &per_s)) {
        snprintf(err, errlen, "invalid value '%.64s' for --rate-limit (CHUNKD_RATE_LIMIT): expected N/s or N/m with "
                 "N > 0, e.g. 200/s or 30/m", s->rate_limit);
        return -1;
    }
    if (s->retry_max_ms < s->retry_base_ms) {
        snprintf(err, errlen, "--retry-max-ms (CHUNKD_RETRY_MAX_MS) must not be less than --retry-base-ms");
        return -1;
    }
    if (s->redis_url) {
        redis_url_t url;
        char uerr[256];
        if (redis_url_parse(s->redis_url, &url, uerr, sizeof uerr)) {
            snprintf(err, errlen, "invalid value for --redis (REDIS_URL): %s", uerr);
            return -1;
        }
    }
    return 0;
}

settings_rc_t settings_parse(settings_t *s, int cmd, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (settings_defaults(s, err, errlen)) return SETTINGS_ERROR;
    /* Flags are read first and applied last, so that a flag wins over the environment and an environment value
     * that a flag replaces is not even checked. */
    const char *flag_value[N_SETTINGS] = {0};
    settings_rc_t rc = settings_read_argv(s, cmd, argc, argv, flag_value, err, errlen);
    if (rc != SETTINGS_OK) return rc;
    if (settings_read_env(s, cmd, envp, flag_value, err, errlen)) return SETTINGS_ERROR;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (flag_value[i] && setting_apply(s, &setting_defs[i], flag_value[i], "command line", err, errlen))
            return SETTINGS_ERROR;
    return settings_check(s, err, errlen) ? SETTINGS_ERROR : SETTINGS_OK;
}

void settings_apply_log(const settings_t *s)
{
    log_level_parse(s->log_level, &log_min_level);
    log_set_json(strcmp(s->log_format, "json") == 0);
}

bool settings_env_is_secret(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (setting_defs[i].secret && strcmp(setting_defs[i].env, name) == 0) return true;
    return false;
}

void settings_env_scrub(void)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_def_t *d = &setting_defs[i];
        if (!d->secret) continue;
        size_t len = strlen(d->env);
        /* The strings environ points to at start are the kernel's copy, which /proc/<pid>/environ shows: wiped
         * in place, since unsetenv() only drops the pointers. */
        for (char **e = environ; *e; e++)
            if (strncmp(*e, d->env, len) == 0 && (*e)[len] == '=') memset(*e + len + 1, 0, strlen(*e + len + 1));
        unsetenv(d->env);
    }
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
