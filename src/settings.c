/* settings: see settings.h. The table below is the single source of truth for flags, environment variables,
 * defaults, bounds and --help. */
#include "settings.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
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

/* Topics group the settings in --help, in this order; a row without one is listed under "Other". */
typedef enum { T_OTHER, T_REDIS, T_QUEUE, T_LIMITS, T_HTTP, T_EXEC, T_COLLECT, T_OBSERVE, T_N } setting_topic_t;

static const char *const topic_titles[T_N] = {
    [T_OTHER] = "Other", [T_REDIS] = "Redis", [T_QUEUE] = "Queue and chunks",
    [T_LIMITS] = "Concurrency and limits", [T_HTTP] = "http handler", [T_EXEC] = "exec handler",
    [T_COLLECT] = "Results and output", [T_OBSERVE] = "Observability",
};

typedef struct setting_def {
    const char *name;       /* flag without the leading "--" */
    const char *env;        /* environment variable */
    setting_type_t type;
    setting_topic_t topic;  /* its group in --help */
    size_t offset;          /* into settings_t */
    const char *def;        /* default as text; NULL: unset */
    long long min, max;     /* bounds for ST_INT */
    const char *choices;    /* for ST_STR: space-separated allowed values, or NULL */
    const char *help;
    int cmds;               /* command bits that use it */
    char short_flag;        /* -X as well, or 0 */
    char repeat_sep;        /* a repeated flag appends its value after this separator; 0: the last one wins */
    bool hidden;            /* for tests only: accepted, not in --help */
    bool secret;            /* mask the value when logging */
    bool env_only;          /* a secret that must not be given on the command line */
} setting_def_t;

#define OFF(field) offsetof(settings_t, field)

static const setting_def_t setting_defs[] = {
    {.name = "redis", .env = "REDIS_URL", .type = ST_STR, .offset = OFF(redis_url), .cmds = CMD_ALL, .secret = true,
     .topic = T_REDIS,
     .help = "Redis address: redis://[user:password@]host[:port][/db], rediss://... (TLS), unix:///path[?db=N], "
             "redis-sentinel://host:port,.../master[/db] or redis-cluster://host:port,... (rediss-sentinel://, "
             "rediss-cluster:// with TLS) (run: a private server when unset)"},
    {.name = "queue", .env = "CHUNKD_QUEUE", .type = ST_STR, .offset = OFF(queue), .def = "default", .cmds = CMD_ALL,
     .topic = T_QUEUE,
     .help = "queue name Q; keys are chunkd:{Q}:* (run: a fresh name when unset)"},
    {.name = "log-level", .env = "CHUNKD_LOG_LEVEL", .type = ST_STR, .offset = OFF(log_level), .def = "info",
     .choices = "debug info warn error", .cmds = CMD_ALL,
     .topic = T_OBSERVE,
     .help = "least severe level logged"},
    {.name = "log-format", .env = "CHUNKD_LOG_FORMAT", .type = ST_STR, .offset = OFF(log_format), .def = "text",
     .choices = "text json", .cmds = CMD_ALL,
     .topic = T_OBSERVE,
     .help = "log lines as text or as JSON objects (for cluster log collectors)"},
    {.name = "redis-timeout-ms", .env = "CHUNKD_REDIS_TIMEOUT_MS", .type = ST_INT, .offset = OFF(redis_timeout_ms),
     .def = "5000", .min = 100, .max = 600000, .cmds = CMD_ALL,
     .topic = T_REDIS,
     .help = "Redis connect and command timeout"},
    {.name = "redis-wait-ms", .env = "CHUNKD_REDIS_WAIT_MS", .type = ST_INT, .offset = OFF(redis_wait_ms), .def = "0",
     .min = 0, .max = 86400000, .cmds = CMD_WORKER,
     .topic = T_REDIS,
     .help = "at start, how long to wait for a Redis that cannot be reached (not ready meanwhile) before exiting 1 "
             "(0: forever)"},
    {.name = "redis-ca-file", .env = "CHUNKD_REDIS_CA_FILE", .type = ST_STR, .offset = OFF(redis_ca_file),
     .cmds = CMD_ALL, .topic = T_REDIS,
     .help = "rediss://: PEM file of the CA certificates that sign the Redis server's certificate (default: the "
             "system's CAs)"},
    {.name = "redis-cert-file", .env = "CHUNKD_REDIS_CERT_FILE", .type = ST_STR, .offset = OFF(redis_cert_file),
     .cmds = CMD_ALL, .topic = T_REDIS,
     .help = "rediss://: PEM client certificate for a Redis that requires one (mutual TLS; with --redis-key-file)"},
    {.name = "redis-key-file", .env = "CHUNKD_REDIS_KEY_FILE", .type = ST_STR, .offset = OFF(redis_key_file),
     .cmds = CMD_ALL, .topic = T_REDIS,
     .help = "rediss://: PEM private key of --redis-cert-file"},
    {.name = "redis-tls-insecure", .env = "CHUNKD_REDIS_TLS_INSECURE", .type = ST_BOOL,
     .offset = OFF(redis_tls_insecure), .def = "false", .cmds = CMD_ALL, .topic = T_REDIS,
     .help = "rediss://: do not verify the Redis server's certificate or name (encrypted, but anyone on the path "
             "can pose as the server; logs a warning)"},
    {.name = "redis-min-replicas", .env = "CHUNKD_REDIS_MIN_REPLICAS", .type = ST_INT,
     .offset = OFF(redis_min_replicas), .def = "0", .min = 0, .max = 100, .cmds = CMD_ENQUEUE | CMD_WORKER | CMD_RUN,
     .topic = T_REDIS,
     .help = "replicas that must acknowledge (WAIT) each enqueue batch and commit round before it counts as done, so "
             "a failover to an up-to-date replica loses none (0: off)"},
    {.name = "redis-min-replicas-timeout-ms", .env = "CHUNKD_REDIS_MIN_REPLICAS_TIMEOUT_MS", .type = ST_INT,
     .offset = OFF(redis_min_replicas_timeout_ms), .def = "5000", .min = 1, .max = 600000,
     .cmds = CMD_ENQUEUE | CMD_WORKER | CMD_RUN,
     .topic = T_REDIS,
     .help = "how long WAIT waits for --redis-min-replicas replicas before the write counts as not done"},
    {.name = "chunk-size", .env = "CHUNKD_CHUNK_SIZE", .type = ST_INT, .offset = OFF(chunk_size), .def = "100",
     .min = 1, .max = 100000, .cmds = CMD_ENQUEUE | CMD_RUN | CMD_REQUEUE,
     .topic = T_QUEUE,
     .help = "items per chunk"},
    {.name = "max-item-bytes", .env = "CHUNKD_MAX_ITEM_BYTES", .type = ST_INT, .offset = OFF(max_item_bytes),
     .def = "1048576", .min = 16, .max = 67108864, .cmds = CMD_ENQUEUE | CMD_RUN,
     .topic = T_QUEUE,
     .help = "longest input line accepted; longer lines are rejected"},
    {.name = "seal", .env = "CHUNKD_SEAL", .type = ST_BOOL, .offset = OFF(seal), .def = "true", .cmds = CMD_ENQUEUE,
     .topic = T_QUEUE,
     .help = "seal the queue when the input ends (it is complete: workers with --exit-when-empty and "
             "collect --until-done may finish); --no-seal keeps it open for more (then chunkd seal)"},
    {.name = "reopen", .env = "CHUNKD_REOPEN", .type = ST_BOOL, .offset = OFF(reopen), .def = "true",
     .cmds = CMD_ENQUEUE,
     .topic = T_QUEUE,
     .help = "add to a sealed queue (open while this enqueue runs, sealed again at its end); --no-reopen refuses "
             "it (exit 2): a Job that must not enqueue its input twice"},
    {.name = "rejects", .env = "CHUNKD_REJECTS", .type = ST_STR, .offset = OFF(rejects), .cmds = CMD_ENQUEUE | CMD_RUN,
     .topic = T_QUEUE,
     .help = "file for rejected lines (default <input>.rejected, or chunkd-rejected.jsonl for stdin)"},
    {.name = "handler", .env = "CHUNKD_HANDLER", .type = ST_STR, .offset = OFF(handler), .def = "sleep",
     .choices = "sleep echo http exec", .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "what runs each item"},
    {.name = "sleep-ms", .env = "CHUNKD_SLEEP_MS", .type = ST_INT, .offset = OFF(sleep_ms), .def = "100", .min = 0,
     .max = 86400000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "sleep handler: delay for items without a \"sleep_ms\" field"},
    {.name = "concurrency", .env = "CHUNKD_CONCURRENCY", .type = ST_INT, .offset = OFF(concurrency), .def = "1000",
     .min = 1, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "items held in flight by this process"},
    {.name = "threads", .env = "CHUNKD_THREADS", .type = ST_INT, .offset = OFF(threads), .def = "0", .min = 0,
     .max = 256, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "event-loop threads (0: the number of CPUs)"},
    {.name = "exit-when-empty", .env = "CHUNKD_EXIT_WHEN_EMPTY", .type = ST_BOOL, .offset = OFF(exit_when_empty),
     .def = "false", .cmds = CMD_WORKER,
     .topic = T_QUEUE,
     .help = "exit 0 once the queue is sealed (its input complete), pending is empty and nothing is in flight "
             "(Kubernetes Job mode); an open queue is waited for"},
    {.name = "include-item", .env = "CHUNKD_INCLUDE_ITEM", .type = ST_BOOL, .offset = OFF(include_item),
     .def = "false", .cmds = CMD_WORKER | CMD_RUN,
     .help = "each result line carries its input item as \"item\" (no join by id needed)"},
    {.name = "drain-timeout-ms", .env = "CHUNKD_DRAIN_TIMEOUT_MS", .type = ST_INT, .offset = OFF(drain_timeout_ms),
     .def = "20000", .min = 0, .max = 3600000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "on SIGTERM, how long in-flight items may take before their chunks go back"},
    {.name = "fetch-block-ms", .env = "CHUNKD_FETCH_BLOCK_MS", .type = ST_INT, .offset = OFF(fetch_block_ms),
     .def = "1000", .min = 10, .max = 60000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "longest pause between two looks at an empty queue (from 5 ms, doubling)"},
    {.name = "commit-batch", .env = "CHUNKD_COMMIT_BATCH", .type = ST_INT, .offset = OFF(commit_batch), .def = "2000",
     .min = 1, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "results per commit round trip (several chunks are pipelined)"},
    {.name = "commit-interval-ms", .env = "CHUNKD_COMMIT_INTERVAL_MS", .type = ST_INT,
     .offset = OFF(commit_interval_ms), .def = "20", .min = 0, .max = 60000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "longest a finished chunk waits for a fuller batch"},
    {.name = "lease-ms", .env = "CHUNKD_LEASE_MS", .type = ST_INT, .offset = OFF(lease_ms), .def = "10000", .min = 1000,
     .max = 600000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "a worker renews its lease every third of this; one silent this long has its chunks given back"},
    {.name = "item-timeout-ms", .env = "CHUNKD_ITEM_TIMEOUT_MS", .type = ST_INT, .offset = OFF(item_timeout_ms),
     .def = "600000", .min = 0, .max = 86400000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "an item still running after this fails with a timeout error (0: never)"},
    {.name = "checkpoint-ms", .env = "CHUNKD_CHECKPOINT_MS", .type = ST_INT, .offset = OFF(checkpoint_ms),
     .def = "1000", .min = 0, .max = 3600000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "a chunk older than this commits its finished items as they finish; a younger one commits once, when "
             "complete"},
    {.name = "max-deliveries", .env = "CHUNKD_MAX_DELIVERIES", .type = ST_INT, .offset = OFF(max_deliveries),
     .def = "5", .min = 0, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_QUEUE,
     .help = "a chunk fetched more often than this (its workers died) is not run again: its items go to dead (0: no "
             "limit)"},
    {.name = "max-chunk-bytes", .env = "CHUNKD_MAX_CHUNK_BYTES", .type = ST_INT, .offset = OFF(max_chunk_bytes),
     .def = "67108864", .min = 1024, .max = 536870912, .cmds = CMD_ENQUEUE | CMD_WORKER | CMD_RUN | CMD_REQUEUE,
     .topic = T_QUEUE,
     .help = "enqueue and requeue build no larger chunk; a worker moves a larger one to dead unread, whole (requeue-able)"},
    {.name = "max-held-bytes", .env = "CHUNKD_MAX_HELD_BYTES", .type = ST_INT, .offset = OFF(max_held_bytes),
     .def = "268435456", .min = 1048576, .max = 68719476736LL, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "fetching waits while the chunks held take more bytes than this (besides --concurrency)"},
    {.name = "max-results-backlog", .env = "CHUNKD_MAX_RESULTS_BACKLOG", .type = ST_INT,
     .offset = OFF(max_results_backlog), .def = "1000000", .min = 0, .max = 1000000000,
     .cmds = CMD_WORKER | CMD_RUN | CMD_STATUS,
     .topic = T_LIMITS,
     .help = "fetching pauses while the results stream holds more result lines than this (0: no limit)"},
    {.name = "max-results-backlog-bytes", .env = "CHUNKD_MAX_RESULTS_BACKLOG_BYTES", .type = ST_INT,
     .offset = OFF(max_results_backlog_bytes), .def = "-1", .min = -1, .max = 1LL << 50,
     .cmds = CMD_WORKER | CMD_RUN | CMD_STATUS, .topic = T_LIMITS,
     .help = "fetching pauses while the result lines in the results stream take more bytes than this (-1: half of "
             "Redis's maxmemory, or 1 GiB when it has none; 0: no limit); status says whether workers pause"},
    {.name = "rate-limit", .env = "CHUNKD_RATE_LIMIT", .type = ST_STR, .offset = OFF(rate_limit), .def = "",
     .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "calls per second (N/s) or minute (N/m) across every worker of the queue, adaptive to 429s (empty: "
             "none)"},
    {.name = "rate-burst", .env = "CHUNKD_RATE_BURST", .type = ST_INT, .offset = OFF(rate_burst), .def = "0", .min = 0,
     .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "calls --rate-limit lets through at once after a quiet spell (0: 100 ms worth, at least 1)"},
    {.name = "max-inflight-global", .env = "CHUNKD_MAX_INFLIGHT_GLOBAL", .type = ST_INT,
     .offset = OFF(max_inflight_global), .def = "0", .min = 0, .max = 1000000, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_LIMITS,
     .help = "calls in flight at once across every worker of the queue (0: no cap)"},
    {.name = "http-port", .env = "CHUNKD_HTTP_PORT", .type = ST_INT, .offset = OFF(http_port), .def = "8080", .min = 0,
     .max = 65535, .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_OBSERVE,
     .help = "port of /healthz, /readyz and /metrics (0: no HTTP server; run: none unless given)"},
    {.name = "http-addr", .env = "CHUNKD_HTTP_ADDR", .type = ST_STR, .offset = OFF(http_addr), .def = "::",
     .cmds = CMD_WORKER | CMD_RUN,
     .topic = T_OBSERVE,
     .help = "address the HTTP server listens on: IPv4 or IPv6; :: is both (0.0.0.0 on a host without IPv6)"},
    {.name = "test-stall-ms", .env = "CHUNKD_TEST_STALL_MS", .type = ST_INT, .offset = OFF(test_stall_ms), .def = "0",
     .min = 0, .max = 600000, .cmds = CMD_WORKER,
     .topic = T_OBSERVE, .hidden = true,
     .help = "for tests only: event loop 0 blocks this long after start, so /healthz must turn 503"},
    {.name = "worker-id", .env = "CHUNKD_WORKER_ID", .type = ST_STR, .offset = OFF(worker_id), .cmds = CMD_WORKER,
     .topic = T_OBSERVE,
     .help = "this worker's id (default hostname-pid-random)"},
#define HTTP (CMD_WORKER | CMD_RUN)
    {.name = "base-url", .env = "CHUNKD_BASE_URL", .type = ST_STR, .offset = OFF(base_url), .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: URL that each item's \"path\" is joined to"},
    {.name = "allow-hosts", .env = "CHUNKD_ALLOW_HOSTS", .type = ST_STR, .offset = OFF(allow_hosts), .def = "",
     .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: hosts an item's absolute \"url\" may name, comma-separated: host or [IPv6] (the scheme's "
             "default port only: 80, 443), host:port or [IPv6]:port (that port only); empty: none"},
    {.name = "http-timeout-ms", .env = "CHUNKD_HTTP_TIMEOUT_MS", .type = ST_INT, .offset = OFF(http_timeout_ms),
     .def = "30000", .min = 1, .max = 3600000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: total time of one call"},
    {.name = "connect-timeout-ms", .env = "CHUNKD_CONNECT_TIMEOUT_MS", .type = ST_INT,
     .offset = OFF(connect_timeout_ms), .def = "5000", .min = 1, .max = 600000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: time to connect"},
    {.name = "max-result-bytes", .env = "CHUNKD_MAX_RESULT_BYTES", .type = ST_INT, .offset = OFF(max_result_bytes),
     .def = "1048576", .min = 0, .max = 268435456, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: largest response body; a larger one fails the item (exec: longest reply line)"},
    {.name = "keep-headers", .env = "CHUNKD_KEEP_HEADERS", .type = ST_STR, .offset = OFF(keep_headers), .def = "",
     .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: response headers kept in results (comma-separated)"},
    {.name = "error-body-bytes", .env = "CHUNKD_ERROR_BODY_BYTES", .type = ST_INT, .offset = OFF(error_body_bytes),
     .def = "1024", .min = 0, .max = 65536, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: bytes of the response body a failed item's result keeps (its \"body\"; 0: none)"},
    {.name = "max-attempts", .env = "CHUNKD_MAX_ATTEMPTS", .type = ST_INT, .offset = OFF(max_attempts), .def = "5",
     .min = 1, .max = 100, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http and exec handlers: attempts per item, retries included"},
    {.name = "retry-base-ms", .env = "CHUNKD_RETRY_BASE_MS", .type = ST_INT, .offset = OFF(retry_base_ms), .def = "500",
     .min = 1, .max = 3600000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http and exec handlers: first retry delay (exponential backoff with full jitter)"},
    {.name = "retry-max-ms", .env = "CHUNKD_RETRY_MAX_MS", .type = ST_INT, .offset = OFF(retry_max_ms), .def = "30000",
     .min = 1, .max = 86400000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http and exec handlers: longest retry delay (http: a Retry-After header may ask for more, up to 10 "
             "minutes)"},
    {.name = "retry-statuses", .env = "CHUNKD_RETRY_STATUSES", .type = ST_STR, .offset = OFF(retry_statuses),
     .def = "429,5xx", .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: statuses retried (codes or classes like 5xx; connection errors and timeouts always are)"},
    {.name = "idempotency-key", .env = "CHUNKD_IDEMPOTENCY_KEY", .type = ST_BOOL, .offset = OFF(idempotency_key),
     .def = "true", .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: send an Idempotency-Key header derived from queue and item id"},
    {.name = "breaker-window-ms", .env = "CHUNKD_BREAKER_WINDOW_MS", .type = ST_INT, .offset = OFF(breaker_window_ms),
     .def = "10000", .min = 100, .max = 3600000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler's circuit breaker: it judges the last 100 calls made within this span"},
    {.name = "breaker-failure-percent", .env = "CHUNKD_BREAKER_FAILURE_PERCENT", .type = ST_INT,
     .offset = OFF(breaker_failure_percent), .def = "90", .min = 0, .max = 100, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "circuit breaker: % of those calls failing (connection error, timeout, 5xx) that opens it (0: no breaker)"},
    {.name = "breaker-min-calls", .env = "CHUNKD_BREAKER_MIN_CALLS", .type = ST_INT, .offset = OFF(breaker_min_calls),
     .def = "20", .min = 1, .max = 100, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "circuit breaker: calls it must have judged before it can open"},
    {.name = "breaker-probe-max-ms", .env = "CHUNKD_BREAKER_PROBE_MAX_MS", .type = ST_INT,
     .offset = OFF(breaker_probe_max_ms), .def = "1000", .min = 100, .max = 600000, .cmds = HTTP,
     .topic = T_HTTP,
     .help = "circuit breaker: longest wait between probes of an open circuit (from 100 ms, doubling)"},
    {.name = "insecure", .env = "CHUNKD_INSECURE", .type = ST_BOOL, .offset = OFF(insecure), .def = "false",
     .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: do not verify TLS certificates (logs a warning)"},
    {.name = "ca-file", .env = "CHUNKD_CA_FILE", .type = ST_STR, .offset = OFF(ca_file), .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: CA certificates to verify servers with"},
    {.name = "header-file", .env = "CHUNKD_HEADER_FILE", .type = ST_STR, .offset = OFF(header_file), .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: file of secret request headers, one \"Name: value\" per line (e.g. a Kubernetes Secret)"},
    {.name = "http-headers", .env = "CHUNKD_HTTP_HEADERS", .type = ST_STR, .offset = OFF(http_headers), .cmds = HTTP,
     .secret = true, .env_only = true,
     .topic = T_HTTP,
     .help = "http handler: secret request headers, \"Name: value\" lines (environment only, never a flag)"},
    {.name = "header", .short_flag = 'H', .repeat_sep = '\n', .env = "CHUNKD_HEADER", .type = ST_STR,
     .offset = OFF(headers), .cmds = HTTP, .topic = T_HTTP,
     .help = "http handler: a request header that is not secret, \"Name: value\" (repeatable; the environment "
             "variable takes lines); secret ones go in CHUNKD_HTTP_HEADERS or --header-file"},
    {.name = "path", .env = "CHUNKD_PATH", .type = ST_STR, .offset = OFF(path_template), .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: the path from item fields, joined to --base-url, e.g. '/users/{id}/orders' ({a.b}: a "
             "nested field); each value is percent-encoded into its segment. Items are then plain records"},
    {.name = "query", .repeat_sep = '&', .env = "CHUNKD_QUERY", .type = ST_STR, .offset = OFF(query_template),
     .cmds = HTTP, .topic = T_HTTP,
     .help = "http handler: the query from item fields, e.g. 'page={page}&q={name}' (repeatable); each value is "
             "percent-encoded"},
    {.name = "method", .env = "CHUNKD_METHOD", .type = ST_STR, .offset = OFF(method), .def = "", .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: the request method, e.g. POST (default: an item's \"method\", else GET, or POST with a "
             "body)"},
    {.name = "body-field", .env = "CHUNKD_BODY_FIELD", .type = ST_STR, .offset = OFF(body_field), .cmds = HTTP,
     .topic = T_HTTP,
     .help = "http handler: the item field sent as the body (a string as it is, other values as JSON)"},
    {.name = "body-from-item", .env = "CHUNKD_BODY_FROM_ITEM", .type = ST_BOOL, .offset = OFF(body_from_item),
     .def = "false", .cmds = HTTP, .topic = T_HTTP,
     .help = "http handler: the whole item as the JSON body (with --method POST, say)"},
    {.name = "cmd", .env = "CHUNKD_CMD", .type = ST_STR, .offset = OFF(cmd), .cmds = HTTP,
     .topic = T_EXEC,
     .help = "exec handler: command of the long-lived subprocesses, split on blanks ('...' and \"...\" group; never "
             "a shell)"},
    {.name = "procs", .env = "CHUNKD_PROCS", .type = ST_INT, .offset = OFF(procs), .def = "0", .min = 0, .max = 4096,
     .cmds = HTTP,
     .topic = T_EXEC,
     .help = "exec handler: subprocesses of this worker process, on one event loop (0: the number of CPUs)"},
    {.name = "env", .env = "CHUNKD_ENV", .type = ST_STR, .offset = OFF(env), .def = "", .cmds = HTTP,
     .topic = T_EXEC,
     .help = "exec handler: names of environment variables passed to the subprocesses (comma-separated; PATH, HOME "
             "and LANG always are)"},
    {.name = "exec-timeout-ms", .env = "CHUNKD_EXEC_TIMEOUT_MS", .type = ST_INT, .offset = OFF(exec_timeout_ms),
     .def = "60000", .min = 0, .max = 86400000, .cmds = HTTP,
     .topic = T_EXEC,
     .help = "exec handler: a subprocess silent this long on an item is killed and the item retried (0: never)"},
    {.name = "out", .env = "CHUNKD_OUT", .type = ST_STR, .offset = OFF(out), .cmds = CMD_COLLECT | CMD_RUN,
     .topic = T_COLLECT,
     .help = "result file (a directory with --rotate-lines); default stdout"},
    {.name = "rotate-lines", .env = "CHUNKD_ROTATE_LINES", .type = ST_INT, .offset = OFF(rotate_lines), .def = "0",
     .min = 0, .max = 1000000000, .cmds = CMD_COLLECT | CMD_RUN,
     .topic = T_COLLECT,
     .help = "lines per file results-NNNNNN.jsonl in the --out directory (0: one file)"},
    {.name = "until-done", .env = "CHUNKD_UNTIL_DONE", .type = ST_BOOL, .offset = OFF(until_done), .def = "false",
     .cmds = CMD_COLLECT,
     .topic = T_COLLECT,
     .help = "exit once every enqueued item has a result written"},
    {.name = "follow", .env = "CHUNKD_FOLLOW", .type = ST_BOOL, .offset = OFF(follow), .def = "false",
     .cmds = CMD_COLLECT,
     .topic = T_COLLECT,
     .help = "keep collecting until SIGTERM"},
    {.name = "last-only", .env = "CHUNKD_LAST_ONLY", .type = ST_BOOL, .offset = OFF(last_only), .def = "false",
     .cmds = CMD_COLLECT,
     .help = "with --until-done and --out FILE: at the end keep only the last line (highest seq) of each id"},
    {.name = "collect-batch", .env = "CHUNKD_COLLECT_BATCH", .type = ST_INT, .offset = OFF(collect_batch),
     .def = "1000", .min = 1, .max = 100000, .cmds = CMD_COLLECT | CMD_RUN,
     .topic = T_COLLECT,
     .help = "result lines read, written and acknowledged at a time (about: whole stream entries are read, each "
             "the lines of one commit)"},
    {.name = "consumer", .env = "CHUNKD_CONSUMER", .type = ST_STR, .offset = OFF(consumer), .def = "collector",
     .cmds = CMD_COLLECT | CMD_RUN,
     .topic = T_COLLECT,
     .help = "consumer name in the group chunkd-collect (a restarted collector with the same name re-reads its "
             "batch)"},
    {.name = "watch", .env = "CHUNKD_WATCH", .type = ST_BOOL, .offset = OFF(watch), .def = "false", .cmds = CMD_STATUS,
     .topic = T_COLLECT,
     .help = "keep showing progress until interrupted (a live screen on a terminal, else one line per interval)"},
    {.name = "interval-ms", .env = "CHUNKD_INTERVAL_MS", .type = ST_INT, .offset = OFF(interval_ms), .def = "2000",
     .min = 100, .max = 3600000, .cmds = CMD_STATUS,
     .topic = T_COLLECT,
     .help = "status --watch: time between updates"},
    {.name = "json", .env = "CHUNKD_JSON", .type = ST_BOOL, .offset = OFF(json), .def = "false", .cmds = CMD_STATUS | CMD_QUEUES | CMD_DEAD,
     .topic = T_COLLECT,
     .help = "status, queues: print JSON; dead: each record as stored, one JSON object per line"},
    {.name = "yes", .env = "CHUNKD_YES", .type = ST_BOOL, .offset = OFF(yes), .def = "false",
     .cmds = CMD_PURGE | CMD_DELETE,
     .help = "purge, delete: confirm; without it they only say what they would remove"},
    {.name = "force", .env = "CHUNKD_FORCE", .type = ST_BOOL, .offset = OFF(force), .def = "false", .cmds = CMD_DELETE,
     .help = "delete: even while workers are registered on the queue"},
    {.name = "resume", .env = "CHUNKD_RESUME", .type = ST_BOOL, .offset = OFF(resume), .def = "false", .cmds = CMD_RUN,
     .help = "run: skip the items whose id is already in --out FILE, and append to it (give the same --queue)"},
    {.name = "limit", .env = "CHUNKD_LIMIT", .type = ST_INT, .offset = OFF(limit), .def = "0", .min = 0,
     .max = 1000000000000LL, .cmds = CMD_REQUEUE | CMD_DEAD,
     .topic = T_QUEUE,
     .help = "requeue: most dead records to move; dead: most to show (0: all)"},
    {.name = "redis-server", .env = "CHUNKD_REDIS_SERVER", .type = ST_STR, .offset = OFF(redis_server),
     .def = "redis-server", .cmds = CMD_RUN,
     .topic = T_REDIS,
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

/* The edit distance between a[0..na) and b (Levenshtein), for suggesting a flag; capped names are short. */
static size_t edit_distance(const char *a, size_t na, const char *b)
{
    size_t nb = strlen(b), row[65];
    if (na > 64 || nb > 64) return SIZE_MAX;
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[nb];
}

/* Writes the error for the unknown flag name[0..len), with the closest flag of cmd when one is near (for a
 * "no-" name, the closest boolean's --no- form). */
static void unknown_flag(int cmd, const char *name, size_t len, char *err, size_t errlen)
{
    bool negated = len > 3 && strncmp(name, "no-", 3) == 0;
    const char *base = negated ? name + 3 : name;
    size_t base_len = negated ? len - 3 : len;
    const setting_def_t *best = NULL;
    size_t best_d = base_len / 3 > 2 ? base_len / 3 : 2; /* farther than this is no typo */
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_def_t *d = &setting_defs[i];
        if (!(d->cmds & cmd) || d->hidden || d->env_only || (negated && d->type != ST_BOOL)) continue;
        size_t dist = edit_distance(base, base_len, d->name);
        if (dist <= best_d && (!best || dist < best_d)) best = d, best_d = dist;
    }
    int shown = (int)(len > 64 ? 64 : len);
    if (best)
        snprintf(err, errlen, "unknown option '--%.*s': did you mean --%s%s? (see --help)", shown, name,
                 negated ? "no-" : "", best->name);
    else
        snprintf(err, errlen, "unknown option '--%.*s' (see --help)", shown, name);
}

static const setting_def_t *setting_by_short(char c)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (setting_defs[i].short_flag && setting_defs[i].short_flag == c) return &setting_defs[i];
    return NULL;
}

/* Records v as the command line's value of d in flag_value[] at its table index: a repeatable setting appends it
 * (the joined text is owned by joined[], freed by the caller), any other replaces an earlier one. */
static void flag_record(const setting_def_t *d, const char *v, const char **flag_value, char **joined)
{
    size_t i = (size_t)(d - setting_defs);
    if (d->repeat_sep && flag_value[i]) {
        char *text = xasprintf("%s%c%s", flag_value[i], d->repeat_sep, v);
        free(joined[i]);
        joined[i] = text;
        v = text;
    }
    flag_value[i] = v;
}

/* Reads the flag argv[*i] ("--name", "--name=value", "--no-name", "--name value", "-X value" or "-Xvalue" for a
 * short one; a value from the next argument advances *i) into flag_value[] at its table index. Returns 0, or -1
 * with err. */
static int settings_read_flag(int cmd, int argc, char **argv, int *i, const char **flag_value, char **joined,
                              char *err, size_t errlen)
{
    const char *arg = argv[*i];
    if (arg[1] != '-') { /* a short flag */
        const setting_def_t *d = setting_by_short(arg[1]);
        if (!d || !(d->cmds & cmd)) {
            snprintf(err, errlen, "unknown option '%.64s' (options are --name or --name=value; see --help)", arg);
            return -1;
        }
        if (arg[2]) flag_record(d, arg + 2, flag_value, joined);
        else if (*i + 1 < argc) flag_record(d, argv[++*i], flag_value, joined);
        else {
            snprintf(err, errlen, "option -%c (--%s, %s) needs a value", d->short_flag, d->name, d->env);
            return -1;
        }
        return 0;
    }
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    bool negated = false;
    const setting_def_t *d = setting_by_flag(name, len);
    if (!d && len > 3 && strncmp(name, "no-", 3) == 0) {
        d = setting_by_flag(name + 3, len - 3);
        negated = d && d->type == ST_BOOL && !eq;
        if (!negated) d = NULL;
    }
    if (!d || !(d->cmds & cmd)) {
        unknown_flag(cmd, name, len, err, errlen);
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
    flag_record(d, v, flag_value, joined);
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
                                        char **joined, char *err, size_t errlen)
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
        if (a[0] != '-' || a[1] == '\0') {
            if (s->input || !(cmd & (CMD_ENQUEUE | CMD_RUN))) return settings_unexpected(a, err, errlen);
            s->input = a;
            continue;
        }
        if (settings_read_flag(cmd, argc, argv, &i, flag_value, joined, err, errlen)) return SETTINGS_ERROR;
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
    if (s->body_field && s->body_from_item) {
        snprintf(err, errlen, "--body-field (CHUNKD_BODY_FIELD) and --body-from-item (CHUNKD_BODY_FROM_ITEM) exclude "
                              "each other");
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
    if (!s->redis_cert_file != !s->redis_key_file) {
        snprintf(err, errlen, "--redis-cert-file (CHUNKD_REDIS_CERT_FILE) and --redis-key-file "
                              "(CHUNKD_REDIS_KEY_FILE) go together");
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
    char *joined[N_SETTINGS] = {0}; /* the values of repeated flags */
    settings_rc_t rc = settings_read_argv(s, cmd, argc, argv, flag_value, joined, err, errlen);
    if (rc == SETTINGS_OK && settings_read_env(s, cmd, envp, flag_value, err, errlen)) rc = SETTINGS_ERROR;
    for (size_t i = 0; i < N_SETTINGS && rc == SETTINGS_OK; i++)
        if (flag_value[i] && setting_apply(s, &setting_defs[i], flag_value[i], "command line", err, errlen))
            rc = SETTINGS_ERROR;
    for (size_t i = 0; i < N_SETTINGS; i++) free(joined[i]);
    if (rc != SETTINGS_OK) return rc;
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

#define HELP_WIDTH 100 /* columns --help fits in */
#define HELP_INDENT 6   /* of a setting's description */

/* Prints text from column indent, broken at spaces to fit HELP_WIDTH columns (its own line breaks are spaces:
 * they were placed for another width). */
static void help_wrapped(int indent, const char *text)
{
    const int room = HELP_WIDTH - indent;
    while (*text) {
        int n = (int)strlen(text);
        if (n > room) {
            n = room;
            while (n > 0 && text[n] != ' ' && text[n] != '\n') n--;
            if (n == 0) n = room; /* one word longer than a line */
        }
        char line[HELP_WIDTH + 1];
        snprintf(line, sizeof line, "%.*s", n, text);
        for (char *p = line; (p = strchr(p, '\n')) != NULL;) *p = ' ';
        printf("%*s%s\n", indent, "", line);
        text += n;
        while (*text == ' ' || *text == '\n') text++;
    }
}

/* One setting: its flag (with its short and --no- forms), its variable, default and bounds, then its help. */
static void help_setting(const setting_def_t *d)
{
    char head[256], extra[160] = "";
    const char *arg = d->type == ST_INT ? " N" : d->type == ST_STR ? " S" : "";
    if (d->env_only)
        snprintf(head, sizeof head, "  %s (environment only)", d->env);
    else if (d->short_flag)
        snprintf(head, sizeof head, "  -%c, --%s%s  (%s)", d->short_flag, d->name, arg, d->env);
    else if (d->type == ST_BOOL)
        snprintf(head, sizeof head, "  --%s, --no-%s  (%s)", d->name, d->name, d->env);
    else
        snprintf(head, sizeof head, "  --%s%s  (%s)", d->name, arg, d->env);
    if (d->type == ST_INT)
        snprintf(extra, sizeof extra, "default %s, from %lld to %lld", d->def, d->min, d->max);
    else if (d->choices)
        snprintf(extra, sizeof extra, "default %s, one of: %s", d->def, d->choices);
    else if (d->def && d->def[0])
        snprintf(extra, sizeof extra, "default %s", d->def);
    if (extra[0] && strlen(head) + strlen(extra) + 2 <= HELP_WIDTH)
        printf("%s  %s\n", head, extra);
    else if (extra[0])
        printf("%s\n%*s%s\n", head, HELP_INDENT, "", extra);
    else
        printf("%s\n", head);
    help_wrapped(HELP_INDENT, d->help);
}

void settings_help(int cmd, const char *cmd_name, const char *usage, const char *summary)
{
    printf("usage: chunkd %s %s\n\n", cmd_name, usage);
    help_wrapped(0, summary);
    for (int t = 1; t <= T_N; t++) {
        setting_topic_t topic = t == T_N ? T_OTHER : (setting_topic_t)t; /* "Other" last */
        bool titled = false;
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const setting_def_t *d = &setting_defs[i];
            if (!(d->cmds & cmd) || d->hidden || d->topic != topic) continue;
            if (!titled) printf("\n%s:\n", topic_titles[topic]);
            titled = true;
            help_setting(d);
        }
    }
    printf("\nEvery flag --foo-bar is also the environment variable CHUNKD_FOO_BAR; a flag wins.\n");
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
