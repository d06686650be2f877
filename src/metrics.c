/* metrics: see metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

typedef struct counter_def {
    const char *name;   /* family name */
    const char *label;  /* extra label name, or NULL */
    const char *value;  /* its value */
    const char *help;
} counter_def_t;

static const counter_def_t counter_defs[M_COUNTERS] = {
    [M_ITEMS_OK] = {"chunkd_items_total", "outcome", "ok", "Items finished, by outcome (retried: extra attempts)."},
    [M_ITEMS_FAILED] = {"chunkd_items_total", "outcome", "failed", NULL},
    [M_ITEMS_RETRIED] = {"chunkd_items_total", "outcome", "retried", NULL},
    [M_CHUNKS_FETCHED] = {"chunkd_chunks_fetched_total", NULL, NULL, "Chunks moved from pending to this worker."},
    [M_CHUNKS_COMMITTED] = {"chunkd_chunks_committed_total", NULL, NULL, "Chunks whose results were committed."},
    [M_CHUNKS_REQUEUED] = {"chunkd_chunks_requeued_total", NULL, NULL, "Chunks given back to pending."},
    [M_CHUNKS_DEAD] = {"chunkd_chunks_dead_total", NULL, NULL, "Unreadable chunks moved to the dead list."},
    [M_DEAD_ITEMS] = {"chunkd_dead_items_total", NULL, NULL, "Failed items copied to the dead list."},
    [M_ITEMS_SKIPPED] = {"chunkd_items_skipped_total", NULL, NULL,
                         "Items of redelivered chunks not run again: an earlier delivery committed them."},
    [M_CHUNKS_POISONED] = {"chunkd_chunks_poisoned_total", NULL, NULL,
                           "Chunks fetched more than --max-deliveries times; their items went to dead."},
    [M_CHUNKS_FENCED] = {"chunkd_chunks_fenced_total", NULL, NULL,
                         "Chunks this worker lost to recovery (lease expired); their results were dropped."},
    [M_REDIS_ERRORS] = {"chunkd_redis_errors_total", NULL, NULL, "Redis errors (lost connections, error replies)."},
    [M_REDIS_RECONNECTS] = {"chunkd_redis_reconnects_total", NULL, NULL, "Successful Redis reconnections."},
    [M_HTTP_1XX] = {"chunkd_http_responses_total", "class", "1xx", "HTTP handler calls, by status class."},
    [M_HTTP_2XX] = {"chunkd_http_responses_total", "class", "2xx", NULL},
    [M_HTTP_3XX] = {"chunkd_http_responses_total", "class", "3xx", NULL},
    [M_HTTP_4XX] = {"chunkd_http_responses_total", "class", "4xx", NULL},
    [M_HTTP_5XX] = {"chunkd_http_responses_total", "class", "5xx", NULL},
    [M_HTTP_ERROR] = {"chunkd_http_responses_total", "class", "error", NULL},
    [M_CIRCUIT_OPENED] = {"chunkd_circuit_transitions_total", "to", "open",
                          "The http handler's circuit breaker changing state, by the state entered."},
    [M_CIRCUIT_HALF_OPENED] = {"chunkd_circuit_transitions_total", "to", "half_open", NULL},
    [M_CIRCUIT_CLOSED] = {"chunkd_circuit_transitions_total", "to", "closed", NULL},
    [M_RATE_TOKENS] = {"chunkd_rate_tokens_leased_total", NULL, NULL,
                       "Tokens of the queue's --rate-limit leased by this worker (one per call)."},
    [M_RATE_LEASES] = {"chunkd_rate_lease_calls_total", NULL, NULL,
                       "Round trips to Redis to lease tokens of --rate-limit (granted or not)."},
    [M_RATE_WAITS] = {"chunkd_rate_waits_total", NULL, NULL,
                      "Calls that waited for a token of --rate-limit or a slot of --max-inflight-global."},
    [M_RATE_THROTTLES] = {"chunkd_rate_throttles_total", NULL, NULL,
                          "429s (and 503s with Retry-After) this worker reported to the shared rate limit."},
    [M_RATE_DECREASES] = {"chunkd_rate_decreases_total", NULL, NULL,
                          "Cuts of the queue's shared rate decided by this worker (at most one per 1 s window for "
                          "the whole queue, when the window's 429 share passed the threshold)."},
    [M_EXEC_OK] = {"chunkd_exec_calls_total", "outcome", "ok",
                   "Exec handler calls (one per attempt), by outcome: ok (a result), error (the error reply of the "
                   "item's code), failed (the subprocess exited, hung, wrote garbage or was killed)."},
    [M_EXEC_ERROR] = {"chunkd_exec_calls_total", "outcome", "error", NULL},
    [M_EXEC_FAILED] = {"chunkd_exec_calls_total", "outcome", "failed", NULL},
    [M_EXEC_RESTARTS] = {"chunkd_exec_restarts_total", NULL, NULL,
                         "Exec subprocesses replaced after they failed (at start or with an item)."},
    [M_RETRY_WAITS] = {"chunkd_retry_waits_total", NULL, NULL,
                       "Retries scheduled: calls that failed and wait, without a place of --concurrency, to be made "
                       "again."},
};

static const counter_def_t gauge_defs[M_GAUGES] = {
    [G_ITEMS_IN_FLIGHT] = {"chunkd_items_in_flight", NULL, NULL, "Items this worker holds, fetched and not committed."},
    [G_ITEMS_RUNNING] = {"chunkd_items_running", NULL, NULL,
                         "Items this worker is running: fetched and not finished, not waiting for a retry (at most --concurrency "
                         "plus a chunk fetched ahead and the retried items whose wait just ended)."},
    [G_READY] = {"chunkd_ready", NULL, NULL, "1 when connected to Redis and not draining."},
    [G_FETCH_PAUSED] = {"chunkd_fetch_paused", NULL, NULL,
                        "1 while fetching waits because the results stream is over --max-results-backlog or its "
                        "lines over the cap in bytes (chunkd_results_backlog_bytes_cap)."},
    [G_RESULTS_BACKLOG_BYTES] = {"chunkd_results_backlog_bytes", NULL, NULL,
                                 "Bytes of the result lines in the results stream, not yet collected (as this "
                                 "worker's fetch last read them)."},
    [G_RESULTS_BACKLOG_BYTES_CAP] = {"chunkd_results_backlog_bytes_cap", NULL, NULL,
                                     "Over this many bytes of results not yet collected fetching pauses "
                                     "(--max-results-backlog-bytes, or half of Redis's maxmemory; 0: no cap)."},
    [G_CIRCUIT_STATE] = {"chunkd_circuit_state", NULL, NULL,
                         "The http handler's circuit breaker: 0 closed (calls flow), 1 open (no call starts, "
                         "fetching paused), 2 half-open (a few probe calls)."},
    [G_QUEUE_PENDING_CHUNKS] = {"chunkd_queue_pending_chunks", NULL, NULL, "Chunks in the pending list."},
    [G_QUEUE_PROCESSING_CHUNKS] = {"chunkd_queue_processing_chunks", NULL, NULL, "Chunks held by registered workers."},
    [G_QUEUE_RESULTS_LENGTH] = {"chunkd_queue_results_length", NULL, NULL,
                                "Result lines in the results stream, not yet collected."},
    [G_QUEUE_DEAD_LENGTH] = {"chunkd_queue_dead_length", NULL, NULL, "Records in the dead list."},
    [G_QUEUE_BACKLOG_ITEMS] = {"chunkd_queue_backlog_items", NULL, NULL,
                               "Items enqueued and not finished (waiting plus in flight): for autoscaling."},
    [G_QUEUE_ENQUEUED_ITEMS] = {"chunkd_queue_enqueued_items", NULL, NULL, "Items ever enqueued to the queue."},
    [G_QUEUE_DONE_ITEMS] = {"chunkd_queue_done_items", NULL, NULL, "Items of the queue finished (ok or failed)."},
    [G_RATE_LIMIT_CURRENT] = {"chunkd_rate_limit_current", NULL, NULL,
                              "The queue's current shared rate limit in calls/s (lowered by 429s; 0: none)."},
    [G_RATE_PAUSED] = {"chunkd_rate_paused", NULL, NULL,
                       "1 while the queue's calls are paused until a Retry-After deadline (as this worker last saw)."},
    [G_INFLIGHT_SLOTS] = {"chunkd_inflight_global_slots", NULL, NULL,
                          "Slots of --max-inflight-global this worker holds."},
    [G_EXEC_BUSY] = {"chunkd_exec_busy_subprocesses", NULL, NULL, "Exec subprocesses working on an item."},
    [G_ITEMS_HELD_PEAK] = {"chunkd_items_in_flight_peak", NULL, NULL,
                           "The most items this worker has held at once since it started (at most 2 x --concurrency)."},
    [G_CHUNKS_HELD_PEAK] = {"chunkd_chunks_held_peak", NULL, NULL,
                            "The most chunks this worker has held at once since it started."},
    [G_BYTES_HELD_PEAK] = {"chunkd_chunk_bytes_held_peak", NULL, NULL,
                           "The most bytes of chunk text this worker has held at once since it started (at most "
                           "--max-held-bytes plus one chunk)."},
    [G_ITEMS_RETRY_WAITING] = {"chunkd_items_retry_waiting", NULL, NULL,
                               "Items waiting for their retry: held, but holding no place of --concurrency."},
};

typedef struct histogram_def {
    const char *name;
    const char *help;
    bool seconds;               /* observations are microseconds, exposed as seconds */
    size_t n;
    double bounds[METRICS_BUCKETS_MAX];
} histogram_def_t;

/* Bucket count and bounds of the item and call duration histograms (around the ~100 ms calls chunkd is made for). */
#define CALL_SECONDS_BUCKETS 15, {0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30}

static const histogram_def_t histogram_defs[M_HISTOGRAMS] = {
    [H_ITEM_SECONDS] = {"chunkd_item_duration_seconds", "Time from an item's start to its result.", true,
                        CALL_SECONDS_BUCKETS},
    [H_COMMIT_SECONDS] = {"chunkd_commit_duration_seconds", "Time of one commit round trip.", true, 10,
                          {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2}},
    [H_COMMIT_BATCH_SIZE] = {"chunkd_commit_batch_size", "Results per commit round trip.", false, 10,
                             {1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000}},
    [H_HTTP_CALL_SECONDS] = {"chunkd_http_call_duration_seconds", "Time of one HTTP call.", true,
                             CALL_SECONDS_BUCKETS},
    [H_EXEC_CALL_SECONDS] = {"chunkd_exec_call_duration_seconds", "Time of one exec handler call (one attempt).",
                             true, CALL_SECONDS_BUCKETS},
    [H_RETRY_WAIT_SECONDS] = {"chunkd_retry_wait_seconds",
                              "Time from a failed call to the place its retry took: the backoff (or Retry-After) "
                              "and the wait for a free place.", true, CALL_SECONDS_BUCKETS},
};

static _Atomic uint64_t counters[M_COUNTERS];
static _Atomic int64_t gauges[M_GAUGES];
static _Atomic uint64_t hist_counts[M_HISTOGRAMS][METRICS_BUCKETS_MAX + 1];
static _Atomic uint64_t hist_sums[M_HISTOGRAMS];
static char metrics_queue[256] = "default";
static char metrics_version[64] = "0";
static double start_time_s;

void metrics_init(const char *queue, const char *version)
{
    snprintf(metrics_queue, sizeof metrics_queue, "%s", queue);
    snprintf(metrics_version, sizeof metrics_version, "%s", version);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    start_time_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_add(metrics_counter_t c, uint64_t n) { atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed); }
void metrics_gauge_set(metrics_gauge_t g, int64_t v) { atomic_store_explicit(&gauges[g], v, memory_order_relaxed); }
void metrics_gauge_add(metrics_gauge_t g, int64_t d)
{
    atomic_fetch_add_explicit(&gauges[g], d, memory_order_relaxed);
}

void metrics_observe(metrics_histogram_t h, uint64_t v)
{
    const histogram_def_t *d = &histogram_defs[h];
    double x = d->seconds ? (double)v / 1e6 : (double)v;
    size_t i = 0;
    while (i < d->n && x > d->bounds[i]) i++;
    atomic_fetch_add_explicit(&hist_counts[h][i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_sums[h], v, memory_order_relaxed);
}

/* ---- pure writers ---- */

int metrics_escape_label(dynbuf_t *out, const char *v)
{
    if (!v) return 0;
    for (; *v; v++) {
        int rc = *v == '\\' ? dynbuf_add(out, "\\\\", 2)
                 : *v == '"' ? dynbuf_add(out, "\\\"", 2)
                 : *v == '\n' ? dynbuf_add(out, "\\n", 2)
                              : dynbuf_add(out, v, 1);
        if (rc) return -1;
    }
    return 0;
}

static int write_labels(dynbuf_t *out, const char *const *labels, const char *extra_name, const char *extra_value)
{
    bool any = (labels && labels[0]) || extra_name;
    if (!any) return 0;
    int rc = dynbuf_add(out, "{", 1);
    bool first = true;
    for (size_t i = 0; labels && labels[i]; i += 2) {
        rc |= dynbuf_printf(out, "%s%s=\"", first ? "" : ",", labels[i]);
        rc |= metrics_escape_label(out, labels[i + 1]);
        rc |= dynbuf_add(out, "\"", 1);
        first = false;
    }
    if (extra_name) {
        rc |= dynbuf_printf(out, "%s%s=\"", first ? "" : ",", extra_name);
        rc |= metrics_escape_label(out, extra_value);
        rc |= dynbuf_add(out, "\"", 1);
    }
    rc |= dynbuf_add(out, "}", 1);
    return rc ? -1 : 0;
}

static int write_value(dynbuf_t *out, double v)
{
    if (isinf(v)) return dynbuf_addstr(out, v > 0 ? "+Inf" : "-Inf");
    if (isnan(v)) return dynbuf_addstr(out, "NaN");
    if (v == (double)(int64_t)v && fabs(v) < 9e15) return dynbuf_printf(out, "%lld", (long long)v);
    /* The shortest form that reads back as the same double: 0.05, not 0.050000000000000003. */
    char text[40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(text, sizeof text, "%.*g", precision, v);
        if (strtod(text, NULL) == v) break;
    }
    return dynbuf_addstr(out, text);
}

int metrics_write_sample(dynbuf_t *out, const char *name, const char *const *labels, double value)
{
    int rc = dynbuf_addstr(out, name);
    rc |= write_labels(out, labels, NULL, NULL);
    rc |= dynbuf_add(out, " ", 1);
    rc |= write_value(out, value);
    rc |= dynbuf_add(out, "\n", 1);
    return rc ? -1 : 0;
}

int metrics_write_header(dynbuf_t *out, const char *name, const char *type, const char *help)
{
    return dynbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int metrics_write_histogram(dynbuf_t *out, const char *name, const char *const *labels, const double *bounds,
                            const uint64_t *counts, size_t n, double sum)
{
    int rc = 0;
    uint64_t cumulative = 0;
    char le[64];
    for (size_t i = 0; i <= n; i++) {
        cumulative += counts[i];
        if (i < n) {
            dynbuf_t tmp;
            dynbuf_init(&tmp, sizeof le);
            write_value(&tmp, bounds[i]);
            snprintf(le, sizeof le, "%s", tmp.data ? tmp.data : "0");
            dynbuf_free(&tmp);
        } else {
            snprintf(le, sizeof le, "+Inf");
        }
        rc |= dynbuf_printf(out, "%s_bucket", name);
        rc |= write_labels(out, labels, "le", le);
        rc |= dynbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
    }
    rc |= dynbuf_printf(out, "%s_sum", name);
    rc |= write_labels(out, labels, NULL, NULL);
    rc |= dynbuf_add(out, " ", 1);
    rc |= write_value(out, sum);
    rc |= dynbuf_add(out, "\n", 1);
    rc |= dynbuf_printf(out, "%s_count", name);
    rc |= write_labels(out, labels, NULL, NULL);
    rc |= dynbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
    return rc ? -1 : 0;
}

/* ---- the exposition ---- */

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

void metrics_render(dynbuf_t *out)
{
    const char *q[] = {"queue", metrics_queue, NULL};
    const char *prev = NULL;
    for (int i = 0; i < M_COUNTERS; i++) {
        const counter_def_t *d = &counter_defs[i];
        if (!prev || strcmp(prev, d->name) != 0) metrics_write_header(out, d->name, "counter", d->help);
        prev = d->name;
        const char *l[] = {"queue", metrics_queue, d->label, d->value, NULL};
        metrics_write_sample(out, d->name, d->label ? l : q,
                             (double)atomic_load_explicit(&counters[i], memory_order_relaxed));
    }
    for (int i = 0; i < M_GAUGES; i++) {
        metrics_write_header(out, gauge_defs[i].name, "gauge", gauge_defs[i].help);
        metrics_write_sample(out, gauge_defs[i].name, q,
                             (double)atomic_load_explicit(&gauges[i], memory_order_relaxed) /
                                 (i == G_RATE_LIMIT_CURRENT ? 1000.0 : 1.0));
    }
    for (int h = 0; h < M_HISTOGRAMS; h++) {
        const histogram_def_t *d = &histogram_defs[h];
        uint64_t counts[METRICS_BUCKETS_MAX + 1];
        for (size_t i = 0; i <= d->n; i++) counts[i] = atomic_load_explicit(&hist_counts[h][i], memory_order_relaxed);
        double sum = (double)atomic_load_explicit(&hist_sums[h], memory_order_relaxed);
        if (d->seconds) sum /= 1e6;
        metrics_write_header(out, d->name, "histogram", d->help);
        metrics_write_histogram(out, d->name, q, d->bounds, counts, d->n, sum);
    }
    metrics_write_header(out, "chunkd_build_info", "gauge", "Always 1; the version is a label.");
    const char *b[] = {"queue", metrics_queue, "version", metrics_version, NULL};
    metrics_write_sample(out, "chunkd_build_info", b, 1);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    struct rlimit rl;
    double max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : -1;
    metrics_write_header(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
    metrics_write_sample(out, "process_cpu_seconds_total", NULL, cpu);
    metrics_write_header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    metrics_write_sample(out, "process_resident_memory_bytes", NULL, resident_bytes());
    metrics_write_header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    metrics_write_sample(out, "process_open_fds", NULL, count_open_fds());
    metrics_write_header(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    metrics_write_sample(out, "process_max_fds", NULL, max_fds);
    metrics_write_header(out, "process_start_time_seconds", "gauge", "Start time of the process since the epoch.");
    metrics_write_sample(out, "process_start_time_seconds", NULL, start_time_s);
}
