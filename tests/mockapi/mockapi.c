/* mockapi: the mock HTTP API that chunkd's tests and benchmarks talk to.
 *
 *   mockapi [--port N] [--threads N] [--seed N] [--verbose]
 *
 * Listens on 127.0.0.1:N (0, the default, picks a free port), prints one line "port N" on stdout
 * when ready and runs until SIGTERM or SIGINT. Every behaviour is chosen per request by query
 * parameters on any path; see tests/mockapi/README.md.
 *
 * Concurrency: libmicrohttpd polls with epoll in internal threads (one, or --threads). A delayed
 * request is suspended (MHD_suspend_connection) and put on a timer heap; one timer thread resumes
 * it when due, so no MHD thread ever sleeps and thousands of delayed keep-alive connections are
 * held at once. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#define MAX_BODY        (1u << 20)          /* request bytes kept; a longer body gets 413 */
#define MAX_BODY_BYTES  (256ll << 20)       /* largest body_bytes= */
#define MAX_DELAY_MS    (3600ll * 1000)
#define MAX_CONNECTIONS 20000u

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("mockapi: out of memory\n", stderr);
        abort();
    }
    return p;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Counters, fail_times keys and the random source, all under one mutex ---- */

static struct {
    pthread_mutex_t mu;
    long long total;
    long long inflight;     /* counted requests arrived and not yet answered (queued) or dropped */
    long long max_inflight; /* the most at once since the start or the last /_reset */
    json_t *paths;     /* path -> count */
    json_t *fail_keys; /* fail_times key -> requests seen */
    json_t *limit_keys; /* limit_key -> [1 s window number, requests accepted in it] */
    long long limited; /* requests answered 429 by limit_rps since the start or the last /_reset */
    uint64_t start_ns; /* limit_rps windows are counted from here */
    uint64_t rng;
} st = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* A JSON string of arbitrary bytes: as is when valid UTF-8, else with every non-ASCII byte as '?'. */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *c = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        c[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    j = json_stringn(c, n);
    free(c);
    return j;
}

/* obj[key] += 1 (key made valid UTF-8 first); returns the new value. */
static long long bump(json_t *obj, const char *key)
{
    json_t *k = jstr(key, strlen(key));
    const char *ks = json_string_value(k);
    json_t *v = json_object_get(obj, ks);
    long long n = (v ? json_integer_value(v) : 0) + 1;
    json_object_set_new(obj, ks, json_integer(n));
    json_decref(k);
    return n;
}

/* Uniform in [0, 1). Caller holds st.mu. */
static double rand01(void)
{
    st.rng ^= st.rng << 13;
    st.rng ^= st.rng >> 7;
    st.rng ^= st.rng << 17;
    return (double)(st.rng >> 11) / 9007199254740992.0;
}

/* limit_rps: true when this request is over the limit of its key in the current fixed 1 s window
 * (windows counted from the mock's start); otherwise it is counted in. *retry_s is the Retry-After:
 * the seconds until the window ends, rounded up. Caller holds st.mu. */
static bool over_limit(const char *key, long long limit, long long *retry_s)
{
    uint64_t now = mono_ns();
    long long window = (long long)((now - st.start_ns) / 1000000000u);
    json_t *k = jstr(key, strlen(key));
    const char *ks = json_string_value(k);
    json_t *e = json_object_get(st.limit_keys, ks);
    long long count = 0;
    if (e && json_integer_value(json_array_get(e, 0)) == window)
        count = json_integer_value(json_array_get(e, 1));
    bool over = count >= limit;
    if (!over)
        json_object_set_new(st.limit_keys, ks, json_pack("[I,I]", (json_int_t)window, (json_int_t)(count + 1)));
    else
        st.limited++;
    json_decref(k);
    uint64_t end_ns = st.start_ns + (uint64_t)(window + 1) * 1000000000u;
    *retry_s = (long long)((end_ns - now + 999999999u) / 1000000000u);
    return over;
}

/* ---- Timer thread: resumes suspended connections when their delay is over ---- */

struct timer_ent {
    uint64_t when;
    struct MHD_Connection *conn;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timer_ent *heap;
    size_t n, cap;
    bool stop;
} tq = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void heap_push(struct timer_ent e)
{
    if (tq.n == tq.cap) {
        tq.cap = tq.cap ? tq.cap * 2 : 1024;
        struct timer_ent *h = realloc(tq.heap, tq.cap * sizeof *h);
        if (!h) {
            fputs("mockapi: out of memory\n", stderr);
            abort();
        }
        tq.heap = h;
    }
    size_t i = tq.n++;
    while (i > 0 && tq.heap[(i - 1) / 2].when > e.when) {
        tq.heap[i] = tq.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tq.heap[i] = e;
}

static struct timer_ent heap_pop(void)
{
    struct timer_ent top = tq.heap[0], last = tq.heap[--tq.n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= tq.n)
            break;
        if (c + 1 < tq.n && tq.heap[c + 1].when < tq.heap[c].when)
            c++;
        if (last.when <= tq.heap[c].when)
            break;
        tq.heap[i] = tq.heap[c];
        i = c;
    }
    if (tq.n)
        tq.heap[i] = last;
    return top;
}

/* Called from the access handler: suspend the connection for ms milliseconds. False when shutting
 * down (then the caller answers at once). Suspending under tq.mu means the timer thread can never
 * resume a connection before it is suspended. */
static bool timer_defer(struct MHD_Connection *conn, long long ms)
{
    pthread_mutex_lock(&tq.mu);
    if (tq.stop) {
        pthread_mutex_unlock(&tq.mu);
        return false;
    }
    MHD_suspend_connection(conn);
    heap_push((struct timer_ent){ mono_ns() + (uint64_t)ms * 1000000u, conn });
    if (tq.heap[0].conn == conn)
        pthread_cond_signal(&tq.cv);
    pthread_mutex_unlock(&tq.mu);
    return true;
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tq.mu);
    while (!tq.stop) {
        if (tq.n == 0) {
            pthread_cond_wait(&tq.cv, &tq.mu);
            continue;
        }
        uint64_t when = tq.heap[0].when;
        if (when <= mono_ns()) {
            MHD_resume_connection(heap_pop().conn);
            continue;
        }
        struct timespec ts = { (time_t)(when / 1000000000u), (long)(when % 1000000000u) };
        pthread_cond_timedwait(&tq.cv, &tq.mu, &ts);
    }
    while (tq.n) /* MHD_stop_daemon must not find a suspended connection */
        MHD_resume_connection(heap_pop().conn);
    pthread_mutex_unlock(&tq.mu);
    return NULL;
}

/* ---- One request ---- */

struct req {
    char *body;
    size_t len, cap;
    bool too_large;
    bool decided;                /* the answer below is fixed (maybe waiting for a delay) */
    bool drop;                   /* close the connection without answering */
    bool counted;                /* in st.inflight until answered or completed */
    unsigned status;
    struct MHD_Response *resp;
};

static void body_append(struct req *r, const char *data, size_t n)
{
    if (r->too_large || r->len + n > MAX_BODY) {
        r->too_large = true;
        return;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            fputs("mockapi: out of memory\n", stderr);
            abort();
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
}

static const char *qarg(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* Integer query parameter in [lo, hi]; def when absent or malformed. A malformed one returns false
 * and, if *bad is still NULL, sets it to name. */
static bool qint(struct MHD_Connection *c, const char *name, long long lo, long long hi, long long def,
                 long long *out, const char **bad)
{
    const char *s = qarg(c, name);
    *out = def;
    if (!s)
        return true;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        *bad = *bad ? *bad : name;
        return false;
    }
    *out = v;
    return true;
}

static bool qdouble(struct MHD_Connection *c, const char *name, double lo, double hi, double *out,
                    const char **bad)
{
    const char *s = qarg(c, name);
    *out = 0;
    if (!s)
        return true;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        *bad = *bad ? *bad : name;
        return false;
    }
    *out = v;
    return true;
}

static struct MHD_Response *json_response(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        abort();
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return resp;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    struct MHD_Response *resp = json_response(j);
    MHD_add_response_header(resp, "X-Mock", "1");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result add_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    json_t *obj = cls;
    json_t *k = jstr(key, strlen(key));
    json_object_set_new(obj, json_string_value(k), jstr(value ? value : "", value ? strlen(value) : 0));
    json_decref(k);
    return MHD_YES;
}

/* Header names lowercased; a repeated header is joined with ", ". */
static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    json_t *obj = cls;
    size_t n = strlen(key);
    char *lk = xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        lk[i] = (char)tolower((unsigned char)key[i]);
    json_t *k = jstr(lk, n);
    free(lk);
    const char *ks = json_string_value(k);
    value = value ? value : "";
    json_t *old = json_object_get(obj, ks);
    if (old) {
        char *joined;
        if (asprintf(&joined, "%s, %s", json_string_value(old), value) < 0)
            abort();
        json_object_set_new(obj, ks, jstr(joined, strlen(joined)));
        free(joined);
    } else {
        json_object_set_new(obj, ks, jstr(value, strlen(value)));
    }
    json_decref(k);
    return MHD_YES;
}

/* GET /_count[?path=P] and POST /_reset: not counted themselves. */
static enum MHD_Result control(struct MHD_Connection *c, const char *url, const char *method)
{
    json_t *j;
    if (strcmp(url, "/_reset") == 0) {
        if (strcmp(method, "POST") != 0)
            return send_json(c, 405, json_pack("{s:s}", "error", "POST /_reset"));
        pthread_mutex_lock(&st.mu);
        st.total = 0;
        st.max_inflight = st.inflight;
        json_object_clear(st.paths);
        json_object_clear(st.fail_keys);
        json_object_clear(st.limit_keys);
        st.limited = 0;
        pthread_mutex_unlock(&st.mu);
        return send_json(c, 200, json_pack("{s:b}", "ok", 1));
    }
    const char *path = qarg(c, "path");
    pthread_mutex_lock(&st.mu);
    if (path) {
        json_t *k = jstr(path, strlen(path));
        json_t *v = json_object_get(st.paths, json_string_value(k));
        j = json_pack("{s:o,s:I}", "path", k, "count", (json_int_t)(v ? json_integer_value(v) : 0));
    } else {
        j = json_pack("{s:I,s:o,s:I,s:I,s:I}", "total", (json_int_t)st.total, "paths", json_deep_copy(st.paths),
                      "inflight", (json_int_t)st.inflight, "max_inflight", (json_int_t)st.max_inflight, "limited",
                      (json_int_t)st.limited);
    }
    pthread_mutex_unlock(&st.mu);
    return send_json(c, 200, j);
}

/* Fixes the answer to a complete request in r; returns its delay in ms (0: none). */
static long long decide(struct req *r, struct MHD_Connection *c, const char *url, const char *method)
{
    long long delay, dmin, dmax, status, fail_status, fail_times, retry_after, body_bytes, limit_rps;
    double fail_rate;
    const char *bad = NULL;
    bool ok = true; /* each parse runs, so every value is set; bad names the first malformed one */
    ok &= qint(c, "delay_ms", 0, MAX_DELAY_MS, -1, &delay, &bad);
    ok &= qint(c, "delay_min_ms", 0, MAX_DELAY_MS, 0, &dmin, &bad);
    ok &= qint(c, "delay_max_ms", 0, MAX_DELAY_MS, -1, &dmax, &bad);
    ok &= qint(c, "status", 200, 599, 200, &status, &bad);
    ok &= qint(c, "fail_status", 100, 599, 503, &fail_status, &bad);
    ok &= qint(c, "fail_times", 0, LLONG_MAX, 0, &fail_times, &bad);
    ok &= qint(c, "retry_after", 0, LLONG_MAX, -1, &retry_after, &bad);
    ok &= qint(c, "body_bytes", 0, MAX_BODY_BYTES, -1, &body_bytes, &bad);
    ok &= qint(c, "limit_rps", 1, 1000000, 0, &limit_rps, &bad);
    ok &= qdouble(c, "fail_rate", 0, 1, &fail_rate, &bad);
    const char *drop = qarg(c, "drop"), *text = qarg(c, "text");
    const char *key = qarg(c, "key"), *limit_key = qarg(c, "limit_key");

    pthread_mutex_lock(&st.mu);
    st.total++;
    r->counted = true;
    if (++st.inflight > st.max_inflight)
        st.max_inflight = st.inflight;
    long long count = bump(st.paths, url);
    bool fail = false, limited = false;
    long long limit_retry_s = 0;
    if (ok && !r->too_large && !(drop && strcmp(drop, "0") != 0) && limit_rps > 0)
        limited = over_limit(limit_key ? limit_key : "", limit_rps, &limit_retry_s);
    if (ok && fail_times > 0)
        fail = bump(st.fail_keys, key ? key : url) <= fail_times;
    if (ok && !fail && fail_rate > 0)
        fail = rand01() < fail_rate;
    if (ok && delay < 0 && (dmin > 0 || dmax >= 0)) /* uniform in [dmin, dmax]; dmin alone is fixed */
        delay = dmin >= dmax ? dmin : dmin + (long long)(rand01() * (double)(dmax - dmin + 1));
    pthread_mutex_unlock(&st.mu);

    if (!ok) {
        r->status = 400;
        r->resp = json_response(json_pack("{s:s,s:s}", "error", "bad query parameter", "param", bad));
        delay = 0;
    } else if (r->too_large) {
        r->status = 413;
        r->resp = json_response(json_pack("{s:s}", "error", "request body over 1 MiB"));
    } else if (drop && strcmp(drop, "0") != 0) {
        r->drop = true;
    } else if (limited) {
        r->status = 429;
        r->resp = json_response(json_pack("{s:s,s:I}", "error", "rate limited", "limit_rps", (json_int_t)limit_rps));
        if (retry_after < 0)
            retry_after = limit_retry_s;
        delay = 0;
    } else if (fail) {
        r->status = (unsigned)fail_status;
        r->resp = json_response(json_pack("{s:s,s:I}", "error", "mock failure", "status", (json_int_t)fail_status));
    } else {
        r->status = (unsigned)status;
        if (status == 204 || status == 304) {
            r->resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        } else if (text && strcmp(text, "0") != 0) {
            r->resp = MHD_create_response_from_buffer(5, (void *)"hello", MHD_RESPMEM_PERSISTENT);
            MHD_add_response_header(r->resp, "Content-Type", "text/plain");
        } else if (body_bytes >= 0) {
            /* A JSON string of exactly body_bytes bytes (2 at least): "xxx...". */
            size_t n = body_bytes < 2 ? 2 : (size_t)body_bytes;
            char *b = xmalloc(n);
            memset(b, 'x', n);
            b[0] = b[n - 1] = '"';
            r->resp = MHD_create_response_from_buffer(n, b, MHD_RESPMEM_MUST_FREE);
            MHD_add_response_header(r->resp, "Content-Type", "application/json");
        } else {
            json_t *q = json_object(), *h = json_object();
            MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_kv, q);
            MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, h);
            r->resp = json_response(json_pack("{s:s,s:o,s:o,s:o,s:o}", "method", method, "path",
                                              jstr(url, strlen(url)), "query", q, "headers", h, "body",
                                              jstr(r->body ? r->body : "", r->len)));
        }
    }
    if (r->resp) {
        char num[32];
        MHD_add_response_header(r->resp, "X-Mock", "1");
        snprintf(num, sizeof num, "%lld", count);
        MHD_add_response_header(r->resp, "X-Request-Count", num);
        if (retry_after >= 0 && (fail || r->status == 429 || r->status == 503)) {
            snprintf(num, sizeof num, "%lld", retry_after);
            MHD_add_response_header(r->resp, "Retry-After", num);
        }
    }
    return delay > 0 ? delay : 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) { /* headers are in; the body (if any) comes in the next calls */
        r = xmalloc(sizeof *r);
        *r = (struct req){ 0 };
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        body_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!r->decided) {
        r->decided = true;
        if (strcmp(url, "/_count") == 0 || strcmp(url, "/_reset") == 0)
            return control(c, url, method);
        long long delay = decide(r, c, url, method);
        if (delay > 0 && timer_defer(c, delay))
            return MHD_YES; /* called again once resumed */
    }
    if (r->drop)
        return MHD_NO;
    /* The request leaves st.inflight as its answer is queued, not when MHD's completion callback runs later:
     * the client may have the answer and send its next request before that, which would count one call twice. */
    if (r->counted) {
        pthread_mutex_lock(&st.mu);
        st.inflight--;
        pthread_mutex_unlock(&st.mu);
        r->counted = false;
    }
    enum MHD_Result ret = MHD_queue_response(c, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct req *r = *con_cls;
    if (!r)
        return;
    if (r->counted) {
        pthread_mutex_lock(&st.mu);
        st.inflight--;
        pthread_mutex_unlock(&st.mu);
    }
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void usage(FILE *f)
{
    fputs("usage: mockapi [--port N] [--threads N] [--seed N] [--verbose]\n"
          "  --port N     listen on 127.0.0.1:N; 0 (default) picks a free port\n"
          "  --threads N  MHD polling threads (default 1)\n"
          "  --seed N     seed for fail_rate and random delays (default: from the clock)\n"
          "  --verbose    libmicrohttpd's error log on stderr\n"
          "Prints \"port N\" on stdout when ready; stops on SIGTERM or SIGINT.\n",
          f);
}

static bool parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (!s || !isdigit((unsigned char)*s))
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    unsigned long long port = 0, threads = 1, seed = (unsigned long long)time(NULL) ^ (unsigned long long)getpid();
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok;
        if (strcmp(a, "--port") == 0) {
            ok = parse_num(val, 65535, &port);
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_num(val, 64, &threads) && threads > 0;
            i++;
        } else if (strcmp(a, "--seed") == 0) {
            ok = parse_num(val, ULLONG_MAX, &seed);
            i++;
        } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            ok = verbose = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "mockapi: bad argument: %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    st.rng = seed * 0x9E3779B97F4A7C15ull | 1;
    st.paths = json_object();
    st.fail_keys = json_object();
    st.limit_keys = json_object();
    st.start_ns = mono_ns();

    /* Thousands of connections: as many descriptors as the hard limit allows. */
    unsigned conn_limit = MAX_CONNECTIONS;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < MAX_CONNECTIONS + 64)
            conn_limit = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
    }

    /* Signals are taken by sigwait in this thread only; every thread started below inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tq.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t timer;
    if (pthread_create(&timer, NULL, timer_main, NULL) != 0) {
        fputs("mockapi: cannot start the timer thread\n", stderr);
        return 1;
    }

    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | (verbose ? MHD_USE_ERROR_LOG : 0);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, conn_limit, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
        MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    int rc = 0;
    if (!d) {
        fprintf(stderr, "mockapi: cannot listen on 127.0.0.1:%llu\n", port);
        rc = 1;
    } else {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        printf("port %u\n", info ? (unsigned)info->port : (unsigned)port);
        fflush(stdout);
        int sig;
        sigwait(&sigs, &sig);
    }

    pthread_mutex_lock(&tq.mu);
    tq.stop = true; /* no new suspension; the timer thread resumes every suspended connection */
    pthread_cond_signal(&tq.cv);
    pthread_mutex_unlock(&tq.mu);
    pthread_join(timer, NULL);
    if (d)
        MHD_stop_daemon(d);
    free(tq.heap);
    json_decref(st.paths);
    json_decref(st.fail_keys);
    json_decref(st.limit_keys);
    return rc;
}
