/* scheduler: see scheduler.h.
 *
 * Invariants: the inbox is the only state shared with other threads (under mu); `load` is atomic; a chunk is in
 * exactly one of inbox, running or handed off (its sched_link says which list); an item is in at most one of the
 * ready FIFOs (waiting for a place: `again` for retried items, served first, `ready` for the others) and the
 * acquire FIFO (waiting for a token); it is in the deadline FIFO from the place it first took to its end,
 * retry waits included (sched_retry_after); an item waiting for its retry holds no place and no slot, and is in
 * no FIFO; the deadline FIFO is in deadline order (every item has the same --item-timeout-ms and the
 * loop's time only grows), with one timer at or before its head's deadline; an item finishes once, and a chunk's
 * n_finished never exceeds its n_run. Everything but the inbox runs on the loop's thread. */
#include "scheduler.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "handler.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "work.h"
#include "xalloc.h"

#define SCHED_ACQUIRE_RETRY_MS 5 /* items waiting for a token or slot try again this often */
#define SCHED_KEEP_VALUES_BYTES ((size_t)1 << 20) /* a larger chunk parses its items twice rather than hold their values */

/* At most `capacity` items hold a place at once, across the schedulers that share these places. */
struct sched_places {
    atomic_size_t used;
    size_t capacity;
    sched_t *scheds[SCHED_PLACES_MAX_LOOPS]; /* to wake the ones with items waiting */
    size_t n_scheds;
};

struct sched {
    loop_t *loop;                    /* owned: the thread and its events */
    const handler_t *handler;
    const settings_t *settings;
    void *handler_shared;            /* borrowed: the handler's process-wide state */
    void *handler_state;             /* the handler's per-loop state */
    sched_done_fn on_done;
    void *on_done_arg;
    work_item_t *out_head, *out_tail; /* finished this turn, for on_done */
    size_t out_items;

    pthread_mutex_t mu;              /* guards the inbox */
    list_t inbox;                    /* submitted chunks, not started yet */

    atomic_size_t load;              /* items submitted and not finished */
    list_t running;                  /* chunks whose items are running */

    struct ratelimit *rl;            /* borrowed: the queue's limits; NULL when none */
    list_t acq;                      /* items waiting for a token or slot (sched_acquire) */
    loop_timer_t acq_timer;          /* armed while acq is not empty */
    sched_places_t *places;          /* borrowed: the places of --concurrency (sched_set_places) */
    list_t ready;                    /* items waiting for a place, in order */
    list_t again;                    /* retried items waiting for a place, before those of ready */
    atomic_size_t n_waiting;         /* length of ready and again, read by the other schedulers */
    size_t n_retry_waiting;          /* items in their retry wait (sched_retry_after) */
    long retry_waiting_delta;        /* its change this turn, for on_waiting */
    sched_waiting_fn on_waiting;     /* NULL: nobody counts them */
    size_t released;                 /* places given back this turn */
    list_t deadlines;                /* running items in deadline order (--item-timeout-ms) */
    loop_timer_t dl_timer;           /* at or before the head's deadline while deadlines is not empty */
};

static void sched_turn_begin(void *arg);
static void sched_turn_end(void *arg);
static void sched_stopped(void *arg);
static const loop_client_t sched_client = {sched_turn_begin, sched_turn_end, sched_stopped};

static sched_t *sched_of(const loop_t *loop)
{
    sched_t *s = loop_arg(loop);
    assert(loop_on_thread(loop) && "a scheduler's state is its loop thread's");
    return s;
}

sched_t *sched_new(int index, const handler_t *handler, void *handler_shared, const settings_t *s,
                   sched_done_fn done, void *done_arg)
{
    sched_t *sc = xcalloc(1, sizeof *sc);
    sc->loop = loop_new(index, &sched_client, sc, index == 0 ? s->test_stall_ms : 0);
    sc->handler = handler;
    sc->handler_shared = handler_shared;
    sc->settings = s;
    sc->on_done = done;
    sc->on_done_arg = done_arg;
    pthread_mutex_init(&sc->mu, NULL);
    list_init(&sc->inbox);
    list_init(&sc->running);
    list_init(&sc->acq);
    list_init(&sc->ready);
    list_init(&sc->again);
    list_init(&sc->deadlines);
    atomic_init(&sc->load, 0);
    atomic_init(&sc->n_waiting, 0);
    return sc;
}

loop_t *sched_loop(const sched_t *s) { return s->loop; }
size_t sched_load(const sched_t *s) { return atomic_load(&((sched_t *)s)->load); }

/* ---- handing finished items to the committer ---- */

static void sched_out(sched_t *s, work_item_t *it)
{
    it->commit_next = NULL;
    if (s->out_tail) s->out_tail->commit_next = it;
    else s->out_head = it;
    s->out_tail = it;
    s->out_items += !work_item_is_marker(it);
}

/* Hands this turn's finished items to the committer. */
static void sched_flush(sched_t *s)
{
    if (!s->out_head) return;
    work_item_t *list = s->out_head;
    size_t n = s->out_items;
    s->out_head = s->out_tail = NULL;
    s->out_items = 0;
    s->on_done(s->on_done_arg, list, n);
}

static void chunk_complete(sched_t *s, work_chunk_t *c)
{
    list_remove(&c->sched_link);
    c->disposition = WORK_COMMIT;
    if (c->n_run == 0) sched_out(s, &c->marker); /* nothing ran: the marker settles the chunk */
}

/* ---- the queue's limits: tokens and slots ---- */

void sched_set_ratelimit(sched_t *s, struct ratelimit *rl) { s->rl = rl; }

static void acq_remove(sched_t *s, work_item_t *it)
{
    if (!list_remove(&it->sched.acquire_link)) return;
    ratelimit_wait(s->rl, -1);
    if (list_empty(&s->acq)) loop_timer_stop(s->loop, &s->acq_timer);
}

/* Starts as many waiting items as there are tokens and slots, oldest first. */
static void acq_run(loop_t *loop, loop_timer_t *t)
{
    (void)t;
    sched_t *s = sched_of(loop);
    while (!list_empty(&s->acq)) {
        bool slot;
        if (!ratelimit_try_acquire(s->rl, &slot)) break;
        work_item_t *it = list_first_entry(&s->acq, work_item_t, sched.acquire_link);
        acq_remove(s, it);
        it->sched.holds_slot = slot;
        it->sched.acquire_cb(loop, it);
    }
    if (!list_empty(&s->acq)) loop_timer_start(loop, &s->acq_timer, loop_now_ms(loop) + SCHED_ACQUIRE_RETRY_MS, acq_run);
}

void sched_acquire(loop_t *loop, work_item_t *it, sched_acquire_cb cb)
{
    sched_t *s = sched_of(loop);
    bool slot = false;
    if (!s->rl || (list_empty(&s->acq) && ratelimit_try_acquire(s->rl, &slot))) {
        it->sched.holds_slot = slot;
        cb(loop, it);
        return;
    }
    metrics_add(M_RATE_WAITS, 1);
    it->sched.acquire_cb = cb;
    list_push_back(&s->acq, &it->sched.acquire_link);
    ratelimit_wait(s->rl, 1);
    if (!loop_timer_armed(&s->acq_timer))
        loop_timer_start(loop, &s->acq_timer, loop_now_ms(loop) + SCHED_ACQUIRE_RETRY_MS, acq_run);
}

static void slot_release(sched_t *s, work_item_t *it)
{
    if (!it->sched.holds_slot) return;
    it->sched.holds_slot = false;
    ratelimit_release_slot(s->rl);
}

void sched_release(loop_t *loop, work_item_t *it)
{
    sched_t *s = sched_of(loop);
    if (s->rl) ratelimit_call_ended(s->rl);
    slot_release(s, it);
}

void sched_throttled(loop_t *loop, long retry_after_ms)
{
    sched_t *s = sched_of(loop);
    if (s->rl) ratelimit_throttled(s->rl, retry_after_ms);
}

/* ---- places: --concurrency, shared by the schedulers ---- */

sched_places_t *sched_places_new(size_t capacity)
{
    sched_places_t *p = xcalloc(1, sizeof *p);
    atomic_init(&p->used, 0);
    p->capacity = capacity ? capacity : 1;
    return p;
}

void sched_places_free(sched_places_t *p) { free(p); }

int sched_set_places(sched_t *s, sched_places_t *p)
{
    if (p->n_scheds == SCHED_PLACES_MAX_LOOPS) return -1;
    p->scheds[p->n_scheds++] = s;
    s->places = p;
    return 0;
}

static void ready_remove(sched_t *s, work_item_t *it)
{
    if (!list_remove(&it->sched.ready_link)) return;
    atomic_fetch_sub(&s->n_waiting, 1);
}

static bool place_try_take(sched_t *s, work_item_t *it)
{
    sched_places_t *p = s->places;
    if (atomic_fetch_add(&p->used, 1) >= p->capacity) {
        atomic_fetch_sub(&p->used, 1);
        return false;
    }
    it->sched.holds_place = true;
    return true;
}

static void place_give_back(sched_t *s, work_item_t *it)
{
    if (!it->sched.holds_place) return;
    it->sched.holds_place = false;
    size_t before = atomic_fetch_sub(&s->places->used, 1);
    assert(before > 0 && "more places given back than taken");
    (void)before;
    s->released++;
}

/* ---- item deadlines: --item-timeout-ms ---- */

static void deadline_remove(sched_t *s, work_item_t *it)
{
    if (!list_remove(&it->sched.deadline_link)) return;
    if (list_empty(&s->deadlines)) loop_timer_stop(s->loop, &s->dl_timer);
}

/* Handlers read an item's parsed value only while they start it (they copy what they keep), so it is dropped
 * right after: a running chunk holds its items' texts, not their values too. The item stays the scheduler's until
 * sched_flush(), even when the handler finished it inside start. */
static void sched_start_item(loop_t *loop, work_item_t *it)
{
    sched_t *s = loop_arg(loop);
    chunk_item_parse(it->in); /* again, when the chunk was too large to keep its values while waiting */
    s->handler->start(s->handler_state, loop, it);
    chunk_item_drop_value(it->in);
}

static void sched_item_timeout(sched_t *s, work_item_t *it)
{
    /* An item still waiting for a place or its start never reached the handler: nothing to cancel there. */
    bool never_started = (list_linked(&it->sched.ready_link) && !it->sched.retry_cb) ||
                         (list_linked(&it->sched.acquire_link) && it->sched.acquire_cb == sched_start_item);
    acq_remove(s, it);
    if (s->handler->cancel && !never_started) s->handler->cancel(s->handler_state, s->loop, it);
    char why[96];
    snprintf(why, sizeof why, "timed out after %lld ms (--item-timeout-ms)", s->settings->item_timeout_ms);
    sched_item_done(s->loop, it, false, NULL, 0, why);
}

/* Times out every item past its deadline, then waits for the next one. The timer is not moved when the head
 * finishes early: it fires, finds nothing due, and is set again for the new head. */
static void deadline_fired(loop_t *loop, loop_timer_t *t)
{
    (void)t;
    sched_t *s = sched_of(loop);
    work_item_t *head;
    while ((head = list_first_entry(&s->deadlines, work_item_t, sched.deadline_link)) &&
           head->sched.deadline_ms <= loop_now_ms(loop))
        sched_item_timeout(s, head);
    if (head) loop_timer_start(loop, &s->dl_timer, head->sched.deadline_ms, deadline_fired);
}

static void deadline_add(sched_t *s, work_item_t *it)
{
    it->sched.deadline_ms = loop_now_ms(s->loop) + s->settings->item_timeout_ms;
    list_push_back(&s->deadlines, &it->sched.deadline_link);
    if (!loop_timer_armed(&s->dl_timer)) loop_timer_start(s->loop, &s->dl_timer, it->sched.deadline_ms, deadline_fired);
}

/* ---- retry waits: sched_retry_after ---- */

void sched_set_waiting_fn(sched_t *s, sched_waiting_fn fn) { s->on_waiting = fn; }

static void retry_wait_end(sched_t *s)
{
    assert(s->n_retry_waiting > 0 && "more retry waits ended than began");
    s->n_retry_waiting--;
    s->retry_waiting_delta--;
    metrics_gauge_add(G_ITEMS_RETRY_WAITING, -1);
}

/* The wait is over: the item queues for a place, before the items not started yet (ready_run, at the turn's end). */
static void retry_due(loop_t *loop, loop_timer_t *t)
{
    sched_t *s = sched_of(loop);
    work_item_t *it = container_of(t, work_item_t, sched.retry_timer);
    retry_wait_end(s);
    list_push_back(&s->again, &it->sched.ready_link);
    atomic_fetch_add(&s->n_waiting, 1);
}

/* It holds a place again: the handler makes its call. */
static void retry_start(sched_t *s, work_item_t *it)
{
    sched_retry_cb cb = it->sched.retry_cb;
    it->sched.retry_cb = NULL;
    metrics_observe(H_RETRY_WAIT_SECONDS, (uint64_t)(loop_now_ms(s->loop) - it->sched.retry_since_ms) * 1000);
    cb(s->loop, it);
}

/* The item ends (done or timed out) during its wait, or while it queues for a place after it. */
static void retry_forget(sched_t *s, work_item_t *it)
{
    if (!it->sched.retry_cb) return;
    it->sched.retry_cb = NULL;
    if (!loop_timer_armed(&it->sched.retry_timer)) return;
    loop_timer_stop(s->loop, &it->sched.retry_timer);
    retry_wait_end(s);
}

void sched_retry_after(loop_t *loop, work_item_t *it, int64_t delay_ms, sched_retry_cb cb)
{
    sched_t *s = sched_of(loop);
    assert(!it->finished && !it->sched.retry_cb && "one retry wait at a time, of a running item");
    assert(!list_linked(&it->sched.acquire_link) && !list_linked(&it->sched.ready_link) && "the item's call ended");
    slot_release(s, it);
    place_give_back(s, it);
    it->sched.retry_cb = cb;
    it->sched.retry_since_ms = loop_now_ms(loop);
    s->n_retry_waiting++;
    s->retry_waiting_delta++;
    metrics_add(M_RETRY_WAITS, 1);
    metrics_gauge_add(G_ITEMS_RETRY_WAITING, 1);
    /* Its chunk now finishes late: its finished items are committed as they finish (commit.c), not held. */
    atomic_store(&it->chunk->retried, true);
    loop_timer_start(loop, &it->sched.retry_timer, loop_now_ms(loop) + (delay_ms > 0 ? delay_ms : 0), retry_due);
}

/* ---- an item's life ---- */

void sched_item_done(loop_t *loop, work_item_t *it, bool ok, const char *result_json, size_t result_len,
                     const char *error)
{
    sched_t *s = sched_of(loop);
    assert(!it->finished && "an item is finished once");
    if (it->finished) return; /* without assertions, a handler bug must still not finish an item twice */
    deadline_remove(s, it);
    retry_forget(s, it);
    ready_remove(s, it);
    acq_remove(s, it);
    slot_release(s, it);
    place_give_back(s, it);
    /* The real time, not the turn's: an item can finish late in a long turn, and its ms must cover its call's. */
    int64_t now = clock_now_ms();
    work_item_finish(it, ok, result_json, result_len, error, now);
    metrics_add(ok ? M_ITEMS_OK : M_ITEMS_FAILED, 1);
    metrics_observe(H_ITEM_SECONDS, (uint64_t)(now - it->started_ms) * 1000);
    atomic_fetch_sub(&s->load, 1);
    work_chunk_t *c = it->chunk;
    assert(c->n_finished < c->n_run && "more items finished than the chunk runs");
    bool last = ++c->n_finished == c->n_run && !c->starting;
    if (last) chunk_complete(s, c);
    sched_out(s, it);
}

/* The item took a place: its --item-timeout-ms and its ms start now, not while it waited behind other items for a
 * place (a chunk fetched ahead, or one larger than --concurrency, would otherwise time out items never tried).
 * The loop's time only grows, so the deadline FIFO stays in deadline order. */
static void place_start(sched_t *s, work_item_t *it)
{
    it->started_ms = loop_now_ms(s->loop);
    /* A handler without cancel finishes every item inside start(): nothing to time out. */
    if (s->settings->item_timeout_ms > 0 && s->handler->cancel) deadline_add(s, it);
    if (s->handler->gates_calls) sched_start_item(s->loop, it);
    else sched_acquire(s->loop, it, sched_start_item);
}

/* At the end of every turn: starts waiting items while places are free (not from inside a handler's callback, so
 * an item that finishes inside its own start never recurses into the next), then wakes the other schedulers with
 * items waiting if this turn gave places back. A scheduler queues an item (n_waiting) before it checks the places
 * here, and gives a place back before it reads n_waiting, so a freed place is never missed by a waiting one. */
static void ready_run(sched_t *s)
{
    work_item_t *it;
    while ((it = list_first_entry(&s->again, work_item_t, sched.ready_link)) && place_try_take(s, it)) {
        ready_remove(s, it);
        retry_start(s, it);
    }
    while (list_empty(&s->again) && (it = list_first_entry(&s->ready, work_item_t, sched.ready_link)) &&
           place_try_take(s, it)) {
        ready_remove(s, it);
        place_start(s, it);
    }
    if (!s->released) return;
    s->released = 0;
    sched_places_t *p = s->places;
    for (size_t i = 0; i < p->n_scheds; i++) {
        if (p->scheds[i] == s || atomic_load(&p->scheds[i]->n_waiting) == 0) continue;
        loop_wake(p->scheds[i]->loop);
    }
}

/* Starts the item when a place is free and none waits before it; otherwise it waits for one. */
static void sched_admit(sched_t *s, work_item_t *it)
{
    if (list_empty(&s->ready) && list_empty(&s->again) && place_try_take(s, it)) {
        place_start(s, it);
        return;
    }
    list_push_back(&s->ready, &it->sched.ready_link);
    atomic_fetch_add(&s->n_waiting, 1);
}

static void sched_start_chunk(sched_t *s, work_chunk_t *c)
{
    list_push_front(&s->running, &c->sched_link);
    c->starting = true;
    for (size_t i = 0; i < c->decoded.n_items; i++) {
        work_item_t *it = &c->items[i];
        if (it->done_before) continue;
        it->started_ms = loop_now_ms(s->loop);
        it->attempts++;
        if (!c->poison) chunk_item_parse(it->in);
        if (c->poison) {
            sched_item_done(s->loop, it, false, NULL, 0, c->poison);
        } else if (it->in->error) {
            sched_item_done(s->loop, it, false, NULL, 0, it->in->error);
        } else {
            /* A large chunk's items are only checked here; each is parsed again when it starts. */
            if (c->raw_len > SCHED_KEEP_VALUES_BYTES) chunk_item_drop_value(it->in);
            sched_admit(s, it);
        }
    }
    c->starting = false;
    if (c->n_finished == c->n_run) chunk_complete(s, c);
}

void sched_submit(sched_t *s, work_chunk_t *c)
{
    atomic_fetch_add(&s->load, c->n_run);
    pthread_mutex_lock(&s->mu);
    bool was_empty = list_empty(&s->inbox);
    list_push_back(&s->inbox, &c->sched_link);
    pthread_mutex_unlock(&s->mu);
    if (was_empty) loop_wake(s->loop);
}

/* ---- the loop's turn ---- */

static void sched_turn_begin(void *arg)
{
    sched_t *s = arg;
    list_t in;
    list_init(&in);
    pthread_mutex_lock(&s->mu);
    list_splice_back(&in, &s->inbox);
    pthread_mutex_unlock(&s->mu);
    list_for_each_safe(n, tmp, &in) {
        list_remove(n);
        sched_start_chunk(s, container_of(n, work_chunk_t, sched_link));
    }
}

static void sched_turn_end(void *arg)
{
    sched_t *s = arg;
    ready_run(s);
    if (s->retry_waiting_delta && s->on_waiting) s->on_waiting(s->on_done_arg, s->retry_waiting_delta);
    s->retry_waiting_delta = 0;
    sched_flush(s);
}

static void sched_stopped(void *arg)
{
    sched_t *s = arg;
    s->handler->loop_free(s->handler_state);
    s->handler_state = NULL;
}

/* ---- starting and stopping ---- */

int sched_start(sched_t *s)
{
    if (!s->places) {
        LOG(LL_ERROR, "loop %d: started without places (sched_set_places)", loop_index(s->loop));
        return -1;
    }
    if (loop_open(s->loop)) return -1;
    if (s->handler->loop_init(s->loop, s->settings, s->handler_shared, &s->handler_state)) {
        LOG(LL_ERROR, "loop %d: handler %s failed to start", loop_index(s->loop), s->handler->name);
        return -1;
    }
    return loop_start(s->loop);
}

void sched_request_stop(sched_t *s) { loop_request_stop(s->loop); }
void sched_stop(sched_t *s) { loop_stop(s->loop); }

void sched_take_unfinished(sched_t *s, list_t *out)
{
    /* Running chunks first, then the inbox's (never started). */
    list_splice_back(out, &s->running);
    pthread_mutex_lock(&s->mu);
    list_splice_back(out, &s->inbox);
    pthread_mutex_unlock(&s->mu);
    list_for_each_safe(n, tmp, &s->acq) {
        list_remove(n);
        ratelimit_wait(s->rl, -1);
    }
    loop_timer_clear(s->loop);
    list_init(&s->again);
    /* The items it abandons in their retry wait count as running again, as unfinished items do. */
    long told = (long)s->n_retry_waiting - s->retry_waiting_delta;
    if (told && s->on_waiting) s->on_waiting(s->on_done_arg, -told);
    metrics_gauge_add(G_ITEMS_RETRY_WAITING, -(int64_t)s->n_retry_waiting);
    s->n_retry_waiting = 0;
    s->retry_waiting_delta = 0;
    atomic_store(&s->load, 0);
}

void sched_free(sched_t *s)
{
    if (!s) return;
    sched_stop(s);
    list_t left;
    list_init(&left);
    sched_take_unfinished(s, &left);
    list_for_each_safe(n, tmp, &left) {
        list_remove(n);
        work_chunk_free(container_of(n, work_chunk_t, sched_link));
    }
    loop_free(s->loop);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
