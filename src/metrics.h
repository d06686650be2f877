/* metrics: the worker's counters, gauges and histograms, and their Prometheus text exposition (format 0.0.4).
 *
 * Every metric is a fixed slot updated with relaxed atomic adds, so the hot path (loops, fetch, commit) never
 * takes a lock and rendering never blocks a worker thread. The writer functions (metrics_write_*) are pure: they
 * append text to a buffer and are unit-tested without I/O. */
#ifndef CHUNKD_METRICS_H
#define CHUNKD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynbuf.h"

typedef enum {
    M_ITEMS_OK,
    M_ITEMS_FAILED,
    M_ITEMS_RETRIED,
    M_CHUNKS_FETCHED,
    M_CHUNKS_COMMITTED,
    M_CHUNKS_REQUEUED,
    M_CHUNKS_DEAD,
    M_DEAD_ITEMS,
    M_ITEMS_SKIPPED,
    M_CHUNKS_POISONED,
    M_CHUNKS_FENCED,
    M_REDIS_ERRORS,
    M_REDIS_RECONNECTS,
    M_HTTP_1XX,
    M_HTTP_2XX,
    M_HTTP_3XX,
    M_HTTP_4XX,
    M_HTTP_5XX,
    M_HTTP_ERROR,
    M_CIRCUIT_OPENED,     /* the circuit breaker's transitions (breaker.h), by the state entered */
    M_CIRCUIT_HALF_OPENED,
    M_CIRCUIT_CLOSED,
    M_RATE_TOKENS,
    M_RATE_LEASES,
    M_RATE_WAITS,
    M_RATE_THROTTLES,
    M_RATE_DECREASES,
    M_EXEC_OK,
    M_EXEC_ERROR,
    M_EXEC_FAILED,
    M_EXEC_RESTARTS,
    M_RETRY_WAITS,
    M_COUNTERS
} metrics_counter_t;

typedef enum {
    G_ITEMS_IN_FLIGHT,
    G_ITEMS_RUNNING,
    G_READY,
    G_FETCH_PAUSED,
    G_RESULTS_BACKLOG_BYTES,
    G_RESULTS_BACKLOG_BYTES_CAP,
    G_CIRCUIT_STATE,     /* breaker_state_t: 0 closed, 1 open, 2 half-open */
    G_QUEUE_PENDING_CHUNKS,
    G_QUEUE_PROCESSING_CHUNKS,
    G_QUEUE_RESULTS_LENGTH,
    G_QUEUE_DEAD_LENGTH,
    G_QUEUE_BACKLOG_ITEMS,
    G_QUEUE_ENQUEUED_ITEMS,
    G_QUEUE_DONE_ITEMS,
    G_RATE_LIMIT_CURRENT,  /* in thousandths (rendered divided by 1000) */
    G_RATE_PAUSED,
    G_INFLIGHT_SLOTS,
    G_EXEC_BUSY,
    G_ITEMS_HELD_PEAK,   /* the window's highs since start (window.c), so a short peak is not missed */
    G_CHUNKS_HELD_PEAK,
    G_BYTES_HELD_PEAK,
    G_ITEMS_RETRY_WAITING,
    M_GAUGES
} metrics_gauge_t;

typedef enum {
    H_ITEM_SECONDS,
    H_COMMIT_SECONDS,
    H_COMMIT_BATCH_SIZE,
    H_HTTP_CALL_SECONDS,
    H_EXEC_CALL_SECONDS,
    H_RETRY_WAIT_SECONDS,
    M_HISTOGRAMS
} metrics_histogram_t;

#define METRICS_BUCKETS_MAX 16

/* Sets the constant labels (queue) and version; call once before threads start. */
void metrics_init(const char *queue, const char *version);
void metrics_add(metrics_counter_t c, uint64_t n);
void metrics_gauge_set(metrics_gauge_t g, int64_t v);
void metrics_gauge_add(metrics_gauge_t g, int64_t delta);
/* Records one observation: seconds for the *_SECONDS histograms (as microseconds here), a count for
 * H_COMMIT_BATCH_SIZE. */
void metrics_observe(metrics_histogram_t h, uint64_t value_us_or_count);
/* Appends the whole exposition, process_* metrics included. */
void metrics_render(dynbuf_t *out);

/* ---- pure text writers ---- */

/* `name{labels} value\n`. labels: NULL-terminated list of name, value pairs (values are escaped). */
int metrics_write_sample(dynbuf_t *out, const char *name, const char *const *labels, double value);
/* # HELP and # TYPE lines. */
int metrics_write_header(dynbuf_t *out, const char *name, const char *type, const char *help);
/* A histogram's _bucket lines (cumulative, ending with le="+Inf"), _sum and _count. bounds has n entries,
 * counts has n + 1 (the last: above every bound), all per bucket, not cumulative. */
int metrics_write_histogram(dynbuf_t *out, const char *name, const char *const *labels, const double *bounds,
                            const uint64_t *counts, size_t n, double sum);
/* Escapes a label value (backslash, double quote, newline). */
int metrics_escape_label(dynbuf_t *out, const char *value);

#endif
