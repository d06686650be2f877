/* settings: the one table of chunkd's settings.
 *
 * Every setting has a name (the flag --name), an environment variable (CHUNKD_NAME, or REDIS_URL for the Redis
 * address), a type, a default, bounds and a help line, and belongs to the subcommands that use it. The table drives
 * parsing, validation, --help and the "effective settings" log line. Precedence: default < environment < flag.
 * Parsing reads only its arguments (the environment is an array it is given) and writes only the settings, apart
 * from logging a warning per unknown CHUNKD_* variable, so it is unit-tested without I/O; settings_apply_log() then
 * sets the process's log level and format. */
#ifndef CHUNKD_SETTINGS_H
#define CHUNKD_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

/* Subcommands, as bits, so one setting can belong to several. main.c's table of subcommands gives each its bit. */
enum {
    CMD_ENQUEUE = 1 << 0,
    CMD_WORKER = 1 << 1,
    CMD_COLLECT = 1 << 2,
    CMD_STATUS = 1 << 3,
    CMD_RUN = 1 << 4,
    CMD_REQUEUE = 1 << 5,
    CMD_RECOVER = 1 << 6,
    CMD_QUEUES = 1 << 7,
    CMD_PURGE = 1 << 8,
    CMD_DELETE = 1 << 9,
    CMD_PAUSE = 1 << 10,
    CMD_RESUME = 1 << 11,
    CMD_DEAD = 1 << 12,
    CMD_SEAL = 1 << 13,
    CMD_ALL = ~0, /* every subcommand, a new one included: the Redis address, the queue, logging */
};

typedef struct settings {
    /* Common. */
    char *redis_url;        /* --redis / REDIS_URL; NULL when unset */
    char *queue;            /* queue name Q in chunkd:{Q}:... */
    char *log_level;        /* debug, info, warn, error */
    char *log_format;       /* text or json */
    long long redis_timeout_ms;
    long long redis_wait_ms;  /* worker: how long to wait at start for an unreachable Redis; 0: forever;
                               * SETTINGS_NO_WAIT (run sets it): not at all */
    char *redis_ca_file;      /* rediss://: PEM CAs to trust; NULL: the system's */
    char *redis_cert_file;    /* rediss://: client certificate for mutual TLS; NULL: none */
    char *redis_key_file;     /* its private key (given with redis_cert_file) */
    bool redis_tls_insecure;  /* rediss://: no verification of the server's certificate */
    long long redis_min_replicas;            /* WAIT for this many replicas after enqueue batches and commit
                                              * rounds; 0: off */
    long long redis_min_replicas_timeout_ms; /* WAIT's timeout */
    /* enqueue (and run). */
    long long chunk_size;   /* items per chunk */
    long long max_item_bytes;
    char *rejects;          /* NULL: derived from the input name */
    bool seal;              /* seal the queue once the input is read to its end */
    bool reopen;            /* add to a sealed queue (it is open while this enqueue runs); false: refuse it */
    /* worker (and run). */
    char *handler;
    long long sleep_ms;
    long long concurrency;  /* items held per process */
    long long threads;      /* event-loop threads; 0: CPU count */
    bool exit_when_empty;
    bool include_item;      /* each result line carries its item ("item") */
    long long drain_timeout_ms;
    long long fetch_block_ms;
    long long commit_batch;       /* items per commit round trip */
    long long commit_interval_ms; /* longest a finished chunk waits for its batch */
    char *worker_id;              /* NULL: hostname-pid-random */
    long long http_port;          /* health and metrics; 0: no server */
    long long lease_ms;           /* a worker silent this long is reaped */
    long long item_timeout_ms;    /* 0: none */
    long long max_deliveries;     /* 0: no limit */
    long long checkpoint_ms;      /* chunks younger than this are committed whole */
    long long max_results_backlog; /* 0: no limit */
    long long max_results_backlog_bytes; /* -1: half of Redis's maxmemory, or 1 GiB without one; 0: no limit */
    long long max_chunk_bytes;
    long long max_held_bytes;     /* chunk texts held by the window */
    long long test_stall_ms;      /* test only: loop 0 blocks this long once, to exercise /healthz */
    char *rate_limit;             /* "N/s" or "N/m" across the queue's workers; "": none */
    long long rate_burst;         /* tokens; 0: 100 ms worth of the limit, at least 1 */
    long long max_inflight_global; /* calls in flight across the queue's workers; 0: no cap */
    char *http_addr;
    /* http handler. */
    char *base_url;               /* item paths are joined to it; NULL: only absolute urls of allow_hosts */
    char *allow_hosts;            /* comma-separated hosts an item's absolute "url" may name */
    long long http_timeout_ms;
    long long connect_timeout_ms;
    long long max_result_bytes;
    char *keep_headers;           /* comma-separated response headers kept in results */
    long long error_body_bytes;   /* of a failed call's response body, kept in its result (0: none) */
    long long max_attempts;
    long long retry_base_ms;
    long long retry_max_ms;
    char *retry_statuses;         /* comma-separated codes or classes like 5xx */
    bool idempotency_key;
    long long breaker_window_ms;  /* circuit breaker (breaker.h): it judges the last 100 calls within this span */
    long long breaker_failure_percent; /* share of failed calls in the window that opens it; 0: no breaker */
    long long breaker_min_calls;  /* outcomes the window must hold before it can open */
    long long breaker_probe_max_ms; /* longest wait between probes of an open circuit */
    bool insecure;
    char *ca_file;
    char *header_file;            /* secret headers, "Name: value" per line */
    char *http_headers;           /* secret headers from the environment only (CHUNKD_HTTP_HEADERS) */
    char *headers;                /* -H/--header: headers that are not secret, "Name: value" lines */
    char *path_template;          /* --path: the path from item fields, "/users/{id}"; NULL: the item's own */
    char *query_template;         /* --query: "page={page}&q={name}" (repeated flags joined with '&') */
    char *method;                 /* --method: "" unless given */
    char *body_field;             /* --body-field: the item field sent as the body; NULL: none */
    bool body_from_item;          /* --body-from-item: the whole item as the JSON body */
    /* exec handler (it also uses max_attempts, retry_base_ms, retry_max_ms and max_result_bytes). */
    char *cmd;                    /* the subprocesses' command, split into argv (never a shell) */
    long long procs;              /* subprocesses per worker process; 0: CPU count */
    char *env;                    /* comma-separated names of variables passed to them */
    long long exec_timeout_ms;    /* one attempt on a subprocess; 0: none */
    /* collect (and run). */
    char *out;              /* NULL: stdout */
    long long rotate_lines; /* 0: one file */
    bool until_done;
    bool follow;
    bool last_only;         /* collect --until-done: keep the last line of each id in --out at the end */
    long long collect_batch;
    char *consumer;
    /* status. */
    bool json;
    bool watch;
    bool yes;                     /* purge, delete: the confirmation */
    bool force;                   /* delete: even while workers are registered */
    bool resume;                  /* run: skip the ids already in --out, and append to it */
    long long interval_ms;
    /* requeue. */
    long long limit;        /* 0: every dead item */
    /* run. */
    char *redis_server;     /* redis-server binary for the private server */

    const char *input;      /* positional FILE or "-"; NULL when absent (borrowed from argv) */
    bool queue_set;         /* the queue was given explicitly (flag or environment) */
    bool http_port_set;     /* so was --http-port */
} settings_t;

#define SETTINGS_NO_WAIT (-1LL) /* redis_wait_ms of commands that fail at once when Redis cannot be reached */

typedef enum { SETTINGS_OK = 0, SETTINGS_ERROR = -1, SETTINGS_HELP = 1 } settings_rc_t;

/* Fills *s from defaults, then envp, then argv (argv[0] is the subcommand name). On SETTINGS_ERROR, err holds a
 * message naming the setting. Warnings (unknown CHUNKD_* variables) are logged. *s must be freed with
 * settings_free() whatever the result. */
settings_rc_t settings_parse(settings_t *s, int cmd, int argc, char **argv, char **envp, char *err, size_t errlen);
/* Sets the process's log level and format (log.h) from --log-level and --log-format. */
void settings_apply_log(const settings_t *s);
void settings_free(settings_t *s);
/* True when the environment variable name holds one of chunkd's secrets (REDIS_URL, CHUNKD_HTTP_HEADERS). */
bool settings_env_is_secret(const char *name);
/* Removes the secret variables from the process's environment once they are parsed (settings hold copies), their
 * values wiped where the kernel placed them too: nothing chunkd starts inherits them, and /proc/<pid>/environ
 * no longer shows them. Call before any thread starts (it changes environ). */
void settings_env_scrub(void);

/* Prints the usage of a subcommand and its settings, with defaults and bounds. */
void settings_help(int cmd, const char *cmd_name, const char *usage, const char *summary);

/* Writes "name=value ..." for every setting of cmd to line (capacity cap, NUL-terminated, cut when too small), with
 * the Redis URL's password and the secrets masked. */
void settings_format_effective(const settings_t *s, int cmd, char *line, size_t cap);
/* Logs one line at level with every setting of cmd, as settings_format_effective() writes it. */
void settings_log_effective(const settings_t *s, int cmd, int level);

#endif
