/* Unit tests of scheduler.c, driven through its public API on real loop threads (loop.c), with real chunks
 * (work.c): the --concurrency places shared by several schedulers, the order items start in, the done callback
 * and each chunk's marker, item deadlines (--item-timeout-ms) and what sched_take_unfinished gives back after a
 * stop. What the scheduler calls and the tests stand in for: a fake handler (items finish on a loop timer after
 * the ms their JSON says, or when the test releases them, or never) and a fake of ratelimit.c (which needs Redis)
 * that hands out a set number of tokens and counts the waits. loop_wake is wrapped (-Wl,--wrap=loop_wake) to see
 * which loop wakes which.
 *
 * Everything the loop threads observe is recorded under one mutex and checked by the test's thread (cmocka's
 * assertions must not run on another thread); the test waits for conditions on a condition variable, with a
 * generous deadline that only a broken scheduler reaches, and never sleeps to "let it happen". */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "handler.h"
#include "ratelimit.h"
#include "scheduler.h"
#include "work.h"
#include "xalloc.h"

#define WAIT_MS 30000       /* a condition not met by then is a failure (it takes milliseconds) */
#define MAX_CHUNKS 64
#define MAX_ITEMS 1024      /* items of all chunks of one test */
#define TIMEOUT_TEXT "timed out after 50 ms (--item-timeout-ms)"

/* ---- what the loop threads saw, for the test's thread to check ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t changed;
    size_t capacity;                /* the places of the test: never more running in the handler */
    size_t running, max_running;    /* items between the handler's start and their end */
    int starts[MAX_ITEMS], cancels[MAX_ITEMS], dones[MAX_ITEMS];
    int start_loop[MAX_ITEMS];      /* the loop each item started on */
    int markers[MAX_CHUNKS];        /* each chunk's marker, as the done callback got it */
    int received[MAX_CHUNKS];       /* each chunk's items, as the done callback got them */
    long last_started[MAX_CHUNKS];  /* the index of each chunk's last started item */
    size_t n_done_items;            /* items the done callback got */
    int violations;
    char violation[256];            /* the first one */
} rec;

/* The chunks of a test: the test owns them all and frees them last (the done callback does not). */
static work_chunk_t *chunks[MAX_CHUNKS];
static size_t chunk_base[MAX_CHUNKS];   /* the number of each chunk's first item in rec's arrays */
static size_t n_chunks, n_items_total;
static settings_t settings;
static atomic_bool release_held;        /* "hold" items finish once it is set */
static atomic_int wakes_across;         /* loop_wake(wake_to) called on wake_from's thread */
static loop_t *wake_from, *wake_to;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    /* Called with rec.mu held. */
    if (rec.violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rec.violation, sizeof rec.violation, fmt, ap);
        va_end(ap);
    }
}

static size_t chunk_index(const work_chunk_t *c)
{
    for (size_t i = 0; i < n_chunks; i++)
        if (chunks[i] == c) return i;
    return MAX_CHUNKS; /* not the test's: the callers report it */
}

static size_t item_number(const work_item_t *it)
{
    size_t ci = chunk_index(it->chunk);
    return ci < MAX_CHUNKS ? chunk_base[ci] + (size_t)(it - it->chunk->items) : MAX_ITEMS;
}

/* ---- a fake of ratelimit.c: `tokens` calls may start, no slots, waits counted ---- */

struct ratelimit {
    atomic_long tokens;
    atomic_long waiting;   /* the sum of ratelimit_wait's deltas: items in the schedulers' acquire FIFOs */
    atomic_long tries;
};

bool ratelimit_try_acquire(ratelimit_t *rl, bool *slot)
{
    atomic_fetch_add(&rl->tries, 1);
    *slot = false;
    long t = atomic_load(&rl->tokens);
    while (t > 0)
        if (atomic_compare_exchange_weak(&rl->tokens, &t, t - 1)) return true;
    return false;
}

void ratelimit_release_slot(ratelimit_t *rl)
{
    (void)rl;
    pthread_mutex_lock(&rec.mu);
    violation("a slot given back that the fake never handed out");
    pthread_mutex_unlock(&rec.mu);
}

void ratelimit_wait(ratelimit_t *rl, long delta) { atomic_fetch_add(&rl->waiting, delta); }
void ratelimit_throttled(ratelimit_t *rl, long retry_after_ms) { (void)rl, (void)retry_after_ms; }
void ratelimit_call_ended(ratelimit_t *rl) { (void)rl; }

/* ---- loop_wake, wrapped ---- */

void __real_loop_wake(loop_t *loop);
void __wrap_loop_wake(loop_t *loop);
void __wrap_loop_wake(loop_t *loop)
{
    if (wake_from && loop == wake_to && loop_on_thread(wake_from)) atomic_fetch_add(&wakes_across, 1);
    __real_loop_wake(loop);
}

/* ---- the fake handler: an item's JSON says when it finishes ({"ms":N}, {"hold":true}, or {}: never) ---- */

static int fake_loop_init(loop_t *loop, const settings_t *s, void *shared, void **state)
{
    (void)loop, (void)s, (void)shared;
    *state = xcalloc(1, 1); /* per-loop state it does not need: allocated so that leaks would show */
    return 0;
}

static void fake_loop_free(void *state) { free(state); }

/* The item leaves the handler (finished or cancelled). */
static void fake_leaves(const work_item_t *it)
{
    pthread_mutex_lock(&rec.mu);
    if (rec.running == 0) violation("item %zu left the handler, which runs none", item_number(it));
    else rec.running--;
    pthread_cond_broadcast(&rec.changed);
    pthread_mutex_unlock(&rec.mu);
}

static void fake_finish(loop_t *loop, work_item_t *it)
{
    fake_leaves(it);
    sched_item_done(loop, it, true, "{}", 2, NULL);
}

static void fake_timer_fired(loop_t *loop, loop_timer_t *t) { fake_finish(loop, container_of(t, work_item_t, timer)); }

static void fake_hold_poll(loop_t *loop, loop_timer_t *t)
{
    if (atomic_load(&release_held)) fake_finish(loop, container_of(t, work_item_t, timer));
    else loop_timer_start(loop, t, loop_now_ms(loop) + 1, fake_hold_poll);
}

static void fake_start(void *state, loop_t *loop, work_item_t *it)
{
    (void)state;
    pthread_mutex_lock(&rec.mu);
    size_t n = item_number(it);
    if (n >= MAX_ITEMS) {
        violation("an item of a chunk the test did not make started");
        pthread_mutex_unlock(&rec.mu);
        return;
    }
    size_t ci = chunk_index(it->chunk);
    long idx = (long)(it - it->chunk->items);
    if (rec.starts[n]++) violation("item %zu started twice", n);
    if (idx <= rec.last_started[ci])
        violation("chunk %zu: item %ld started after item %ld", ci, idx, rec.last_started[ci]);
    rec.last_started[ci] = idx;
    rec.start_loop[n] = loop_index(loop);
    if (++rec.running > rec.capacity) violation("%zu items running, %zu places", rec.running, rec.capacity);
    if (rec.running > rec.max_running) rec.max_running = rec.running;
    pthread_cond_broadcast(&rec.changed);
    pthread_mutex_unlock(&rec.mu);

    const json_t *v = it->in->value, *ms = json_object_get(v, "ms");
    if (json_is_integer(ms) && json_integer_value(ms) == 0) fake_finish(loop, it); /* inside start itself */
    else if (json_is_integer(ms)) loop_timer_start(loop, &it->timer, loop_now_ms(loop) + json_integer_value(ms), fake_timer_fired);
    else if (json_is_true(json_object_get(v, "hold"))) loop_timer_start(loop, &it->timer, loop_now_ms(loop) + 1, fake_hold_poll);
}

static void fake_cancel(void *state, loop_t *loop, work_item_t *it)
{
    (void)state;
    pthread_mutex_lock(&rec.mu);
    size_t n = item_number(it);
    if (n < MAX_ITEMS && !rec.starts[n]) violation("item %zu cancelled, never started", n);
    if (n < MAX_ITEMS) rec.cancels[n]++;
    pthread_mutex_unlock(&rec.mu);
    loop_timer_stop(loop, &it->timer);
    fake_leaves(it);
}

static const handler_t fake_handler = {
    .name = "fake",
    .loop_init = fake_loop_init,
    .loop_free = fake_loop_free,
    .start = fake_start,
    .cancel = fake_cancel,
};

/* ---- the done callback: the committer's side ---- */

static void on_done(void *arg, work_item_t *list, size_t n_items)
{
    (void)arg;
    size_t real = 0;
    pthread_mutex_lock(&rec.mu);
    for (work_item_t *it = list; it; it = it->commit_next) {
        size_t ci = chunk_index(it->chunk);
        if (ci >= MAX_CHUNKS) {
            violation("the done callback got an item of a chunk the test did not make");
            continue;
        }
        if (work_item_is_marker(it)) {
            rec.markers[ci]++;
            continue;
        }
        real++;
        size_t n = item_number(it);
        if (!it->finished || !it->result_line) violation("item %zu handed over unfinished", n);
        if (rec.dones[n]++) violation("item %zu handed over twice", n);
        rec.received[ci]++;
        rec.n_done_items++;
    }
    if (real != n_items) violation("done callback: %zu items in the list, told %zu", real, n_items);
    pthread_cond_broadcast(&rec.changed);
    pthread_mutex_unlock(&rec.mu);
}

/* ---- the test's side ---- */

typedef bool (*rec_pred)(size_t arg);

/* Waits until pred(arg) holds (evaluated under rec.mu); false after WAIT_MS. */
static bool wait_until(rec_pred pred, size_t arg)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&rec.mu);
    bool ok;
    while (!(ok = pred(arg)))
        if (pthread_cond_timedwait(&rec.changed, &rec.mu, &until)) {
            ok = pred(arg);
            break;
        }
    pthread_mutex_unlock(&rec.mu);
    return ok;
}

static bool done_items_at_least(size_t n) { return rec.n_done_items >= n; }
static bool running_at_least(size_t n) { return rec.running >= n; }
static bool marker_of(size_t ci) { return rec.markers[ci] > 0; }
static bool started(size_t n) { return rec.starts[n] > 0; }

static void assert_no_violation(void)
{
    pthread_mutex_lock(&rec.mu);
    int v = rec.violations;
    char first[sizeof rec.violation];
    memcpy(first, rec.violation, sizeof first);
    pthread_mutex_unlock(&rec.mu);
    if (v) fail_msg("%d violation(s), the first: %s", v, first);
}

/* A chunk of n items, item i's JSON text texts[i % n_texts]; numbered after the test's earlier chunks. */
static work_chunk_t *make_chunk(size_t n, const char *const *texts, size_t n_texts)
{
    assert_true(n_chunks < MAX_CHUNKS && n_items_total + n <= MAX_ITEMS);
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < n; i++) cap += 32 + 2 * strlen(texts[i % n_texts]);
    char *raw = xmalloc(cap);
    len += (size_t)snprintf(raw, cap, "{\"v\":1,\"chunk\":\"c%zu\",\"items\":[", n_chunks);
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(raw + len, cap - len, "%s{\"id\":%zu,\"item\":\"", i ? "," : "", i);
        for (const char *p = texts[i % n_texts]; *p; p++) {
            if (*p == '"' || *p == '\\') raw[len++] = '\\';
            raw[len++] = *p;
        }
        len += (size_t)snprintf(raw + len, cap - len, "\"}");
    }
    len += (size_t)snprintf(raw + len, cap - len, "]}");
    work_chunk_t *c = work_chunk_new(raw, len, 0);
    assert_null(c->dead_reason);
    assert_int_equal(c->decoded.n_items, n);
    chunk_base[n_chunks] = n_items_total;
    n_items_total += n;
    pthread_mutex_lock(&rec.mu); /* the loop threads look chunks up */
    chunks[n_chunks++] = c;
    pthread_mutex_unlock(&rec.mu);
    return c;
}

static work_chunk_t *make_chunk_of(size_t n, const char *text) { return make_chunk(n, &text, 1); }

/* A chunk whose items were all committed by an earlier delivery: it runs nothing. */
static work_chunk_t *make_settled_chunk(void)
{
    work_chunk_t *c = make_chunk_of(4, "{}");
    const unsigned char bits[] = {0xf0};
    work_chunk_apply_checkpoint(c, bits, sizeof bits);
    assert_int_equal(c->n_run, 0);
    return c;
}

/* A started scheduler taking its places from places, and the queue's limits from rl (NULL: none). */
static sched_t *sched_make(int index, sched_places_t *places, struct ratelimit *rl)
{
    sched_t *s = sched_new(index, &fake_handler, NULL, &settings, on_done, NULL);
    assert_int_equal(sched_set_places(s, places), 0);
    sched_set_ratelimit(s, rl);
    assert_int_equal(sched_start(s), 0);
    return s;
}

/* Stops s; it must hold no chunk any more. */
static void sched_finish(sched_t *s)
{
    sched_stop(s);
    list_t left;
    list_init(&left);
    sched_take_unfinished(s, &left);
    assert_true(list_empty(&left));
    sched_free(s);
}

static int setup(void **state)
{
    (void)state;
    memset(&rec, 0, sizeof rec);
    pthread_mutex_init(&rec.mu, NULL);
    pthread_cond_init(&rec.changed, NULL);
    for (size_t i = 0; i < MAX_CHUNKS; i++) rec.last_started[i] = -1;
    memset(&settings, 0, sizeof settings);
    n_chunks = n_items_total = 0;
    atomic_store(&release_held, false);
    atomic_store(&wakes_across, 0);
    wake_from = wake_to = NULL;
    return 0;
}

/* After the schedulers are freed: the chunks are the test's. */
static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_chunks; i++) work_chunk_free(chunks[i]);
    n_chunks = 0;
    pthread_cond_destroy(&rec.changed);
    pthread_mutex_destroy(&rec.mu);
    return 0;
}

/* ---- the tests ---- */

/* Four schedulers share three places: never more than three items run at once, every item runs once, on the
 * scheduler it was submitted to, and a chunk's items start in order. */
static void test_places_exact_across_schedulers(void **state)
{
    (void)state;
    enum { N_SCHEDS = 4, CHUNKS_EACH = 4, ITEMS_EACH = 25 };
    rec.capacity = 3;
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *s[N_SCHEDS];
    for (int i = 0; i < N_SCHEDS; i++) s[i] = sched_make(i, places, NULL);
    static const char *const texts[] = {"{\"ms\":0}", "{\"ms\":1}", "{\"ms\":3}", "{\"ms\":2}"};
    for (size_t c = 0; c < CHUNKS_EACH; c++)
        for (int i = 0; i < N_SCHEDS; i++) sched_submit(s[i], make_chunk(ITEMS_EACH, texts, 4));

    assert_true(wait_until(done_items_at_least, n_items_total));
    for (int i = 0; i < N_SCHEDS; i++) sched_finish(s[i]);
    sched_places_free(places);
    assert_no_violation();
    assert_true(rec.max_running <= rec.capacity);
    assert_int_equal(rec.running, 0);
    for (size_t ci = 0; ci < n_chunks; ci++) {
        assert_int_equal(rec.received[ci], ITEMS_EACH);
        assert_int_equal(rec.markers[ci], 0); /* a chunk that ran items settles through them */
        for (size_t i = 0; i < ITEMS_EACH; i++) {
            size_t n = chunk_base[ci] + i;
            assert_int_equal(rec.starts[n], 1);
            assert_int_equal(rec.dones[n], 1);
            assert_int_equal(rec.start_loop[n], (int)(ci % N_SCHEDS));
            assert_true(chunks[ci]->items[i].ok);
        }
    }
}

/* A waits with all the places taken; B's items wait behind them; when A's items end, A wakes B, whose items run. */
static void test_waiting_scheduler_woken_by_another(void **state)
{
    (void)state;
    rec.capacity = 2;
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *a = sched_make(0, places, NULL), *b = sched_make(1, places, NULL);
    wake_from = sched_loop(a);
    wake_to = sched_loop(b);

    sched_submit(a, make_chunk_of(2, "{\"hold\":true}")); /* chunk 0: both places, until released */
    assert_true(wait_until(running_at_least, 2));
    sched_submit(b, make_chunk_of(3, "{\"ms\":1}"));     /* chunk 1: more items than places will free */
    sched_submit(b, make_settled_chunk());               /* chunk 2: its marker says B took chunk 1 in */
    assert_true(wait_until(marker_of, 2));
    pthread_mutex_lock(&rec.mu);
    for (size_t i = 0; i < 3; i++) assert_int_equal(rec.starts[chunk_base[1] + i], 0); /* no place for them */
    pthread_mutex_unlock(&rec.mu);

    atomic_store(&release_held, true);
    assert_true(wait_until(done_items_at_least, 5));
    assert_true(atomic_load(&wakes_across) >= 1); /* not left to B's idle turn, a second later */
    sched_finish(a);
    sched_finish(b);
    sched_places_free(places);
    assert_no_violation();
    assert_int_equal(rec.received[0], 2);
    assert_int_equal(rec.received[1], 3);
    assert_int_equal(rec.received[2], 0);
    assert_int_equal(rec.markers[2], 1);
}

/* The done callback gets every item once, and each chunk's marker only when the chunk runs nothing: its items all
 * done before (the marker settles it), some done before (those neither run nor come back), poisoned (its items
 * fail with the reason, never started), an item that is not JSON (fails, the others run). */
static void test_done_items_and_markers(void **state)
{
    (void)state;
    rec.capacity = 4;
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *s = sched_make(0, places, NULL);

    work_chunk_t *plain = make_chunk_of(3, "{\"ms\":1}");       /* 0 */
    work_chunk_t *settled = make_settled_chunk();               /* 1 */
    work_chunk_t *partial = make_chunk_of(4, "{\"ms\":1}");     /* 2: items 1 and 2 done before */
    const unsigned char bits[] = {0x60};
    work_chunk_apply_checkpoint(partial, bits, sizeof bits);
    work_chunk_t *poisoned = make_chunk_of(3, "{\"ms\":1}");    /* 3 */
    poisoned->poison = xstrdup("poisoned: delivered too often");
    static const char *const mixed_texts[] = {"{\"ms\":1}", "{not json"};
    work_chunk_t *mixed = make_chunk(2, mixed_texts, 2);        /* 4 */
    work_chunk_t *all[] = {plain, settled, partial, poisoned, mixed};
    for (size_t i = 0; i < 5; i++) sched_submit(s, all[i]);

    assert_true(wait_until(done_items_at_least, 3 + 0 + 2 + 3 + 2));
    assert_true(wait_until(marker_of, 1));
    sched_finish(s);
    sched_places_free(places);
    assert_no_violation();
    assert_int_equal(rec.n_done_items, 10);
    const int want_received[] = {3, 0, 2, 3, 2}, want_marker[] = {0, 1, 0, 0, 0};
    for (size_t ci = 0; ci < 5; ci++) {
        assert_int_equal(rec.received[ci], want_received[ci]);
        assert_int_equal(rec.markers[ci], want_marker[ci]);
    }
    for (size_t i = 0; i < 4; i++) { /* done before: neither run nor handed over again */
        if (i == 1 || i == 2) {
            assert_int_equal(rec.starts[chunk_base[2] + i], 0);
            assert_int_equal(rec.dones[chunk_base[2] + i], 0);
        } else {
            assert_true(partial->items[i].ok);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(rec.starts[chunk_base[3] + i], 0);
        assert_false(poisoned->items[i].ok);
        assert_non_null(strstr(poisoned->items[i].result_line, "poisoned: delivered too often"));
    }
    assert_true(mixed->items[0].ok);
    assert_false(mixed->items[1].ok);
    assert_int_equal(rec.starts[chunk_base[4] + 1], 0);
}

/* With one place and --item-timeout-ms 50: an item that never finishes fails with the timeout's text and is
 * cancelled at the handler once; the next one waits for the place without its clock running (it is started, not
 * cancelled while waiting), one that finishes in time is not cancelled. */
static void test_item_timeout(void **state)
{
    (void)state;
    settings.item_timeout_ms = 50;
    rec.capacity = 1;
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *s = sched_make(0, places, NULL);
    static const char *const texts[] = {"{}", "{\"ms\":1}", "{}"};
    work_chunk_t *c = make_chunk(3, texts, 3);
    sched_submit(s, c);

    assert_true(wait_until(done_items_at_least, 3));
    sched_finish(s);
    sched_places_free(places);
    assert_no_violation();
    const int want_cancels[] = {1, 0, 1};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(rec.starts[i], 1);
        assert_int_equal(rec.cancels[i], want_cancels[i]);
        assert_int_equal(c->items[i].ok, i == 1);
    }
    assert_non_null(strstr(c->items[0].result_line, TIMEOUT_TEXT));
    assert_non_null(strstr(c->items[2].result_line, TIMEOUT_TEXT));
    assert_non_null(strstr(c->items[2].dead_record, TIMEOUT_TEXT));
}

/* With one token for two items: the item that got it starts, times out and is cancelled; the one still waiting for
 * its token times out too but never reached the handler, so nothing is cancelled there, and it leaves the FIFO. */
static void test_item_timeout_while_waiting_for_token(void **state)
{
    (void)state;
    settings.item_timeout_ms = 50;
    rec.capacity = 2;
    struct ratelimit rl;
    atomic_init(&rl.tokens, 1);
    atomic_init(&rl.waiting, 0);
    atomic_init(&rl.tries, 0);
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *s = sched_make(0, places, &rl);
    work_chunk_t *c = make_chunk_of(2, "{}");
    sched_submit(s, c);

    assert_true(wait_until(done_items_at_least, 2));
    sched_finish(s);
    sched_places_free(places);
    assert_no_violation();
    assert_int_equal(rec.starts[0], 1);
    assert_int_equal(rec.cancels[0], 1);
    assert_int_equal(rec.starts[1], 0);
    assert_int_equal(rec.cancels[1], 0);
    for (size_t i = 0; i < 2; i++) {
        assert_false(c->items[i].ok);
        assert_non_null(strstr(c->items[i].result_line, TIMEOUT_TEXT));
    }
    assert_int_equal(atomic_load(&rl.waiting), 0);
    assert_true(atomic_load(&rl.tries) >= 2);
}

/* After a stop, sched_take_unfinished gives back the chunks still running (started or waiting for a place), then
 * those never started; not the settled ones. */
static void test_take_unfinished_after_stop(void **state)
{
    (void)state;
    rec.capacity = 1;
    sched_places_t *places = sched_places_new(rec.capacity);
    sched_t *s = sched_make(0, places, NULL);
    work_chunk_t *running = make_chunk_of(1, "{}");   /* 0: runs, never finishes */
    work_chunk_t *waiting = make_chunk_of(2, "{}");   /* 1: waits for the place */
    sched_submit(s, running);
    sched_submit(s, waiting);
    sched_submit(s, make_settled_chunk());            /* 2: settled, through its marker */
    assert_true(wait_until(started, chunk_base[0]));
    assert_true(wait_until(marker_of, 2));
    assert_int_equal(sched_load(s), 3);
    sched_stop(s);
    work_chunk_t *unstarted = make_chunk_of(1, "{}"); /* 3: reaches a stopped scheduler */
    sched_submit(s, unstarted);

    list_t out;
    list_init(&out);
    sched_take_unfinished(s, &out);
    work_chunk_t *got[4];
    size_t n = 0;
    list_for_each_safe(node, tmp, &out) {
        list_remove(node);
        assert_true(n < 4);
        got[n++] = container_of(node, work_chunk_t, sched_link);
    }
    assert_int_equal(n, 3);
    assert_true((got[0] == running && got[1] == waiting) || (got[0] == waiting && got[1] == running));
    assert_ptr_equal(got[2], unstarted);
    assert_int_equal(sched_load(s), 0);
    sched_free(s); /* frees no chunk: it holds none any more */
    sched_places_free(places);
    assert_no_violation();
    assert_int_equal(rec.n_done_items, 0);
    assert_int_equal(rec.starts[chunk_base[1]], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_places_exact_across_schedulers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_scheduler_woken_by_another, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_items_and_markers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_item_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_item_timeout_while_waiting_for_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_unfinished_after_stop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
