/* httpd: the worker's HTTP face, on libmicrohttpd's own polling thread.
 *
 *   GET /healthz   200 while the worker's threads make progress, 503 when a loop or the committer is stuck
 *   GET /readyz    200 when connected to Redis and not draining, else 503
 *   GET /metrics   Prometheus text format 0.0.4
 *
 * Other paths are 404, other methods 405. Handlers only read atomics (through the probe callbacks) and render
 * metrics; no response contains a Redis URL or a secret. Hostile clients cannot starve the probes: connections
 * are capped in all and per client address, each request must be done within 2 s of its connection's start (or of
 * the previous request's end), whatever the client sends meanwhile, and a request's memory is capped (httpd.c). */
#ifndef CHUNKD_HTTPD_H
#define CHUNKD_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct httpd httpd_t;

typedef struct httpd_probe {
    /* Return true when healthy / ready; otherwise write a short reason. Called from the server's thread. */
    bool (*live)(void *arg, char *why, size_t whylen);
    bool (*ready)(void *arg, char *why, size_t whylen);
    void *arg;
} httpd_probe_t;

/* Listens on addr:port (port > 0; addr an IPv4 or IPv6 address, "::" for both families, which is "0.0.0.0" on a
 * host without IPv6): binds at once, so a caller that starts it first has taken no work when it fails. Returns
 * NULL with one line in err naming the address, the port and the reason, e.g.
 * "cannot serve /healthz on [::]:8080: address in use (another worker on this host? set --http-port, ...)". */
httpd_t *httpd_start(const char *addr, int port, const httpd_probe_t *probe, char *err, size_t errlen);
/* Where it listens: "127.0.0.1:8080", "[::]:8080" (borrowed, valid until httpd_stop). */
const char *httpd_where(const httpd_t *h);
/* Stops serving and frees h (NULL: nothing); every connection is closed when it returns. */
void httpd_stop(httpd_t *h);

#endif
