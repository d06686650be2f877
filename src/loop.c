/* loop: see loop.h.
 *
 * Invariants: the inbox is the only state shared with other threads (under mu); `load` is atomic; a chunk is in
 * exactly one of inbox, active or handed off; timers live in a binary min-heap whose entries know their index, so
 * stopping a timer is O(log n); item deadlines (--item-timeout-ms, the same for every item) live in a FIFO, which is
 * in deadline order, with one timer for its head. */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "handler.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "work.h"
#include "xalloc.h"

#define LOOP_IDLE_WAKE_MS 1000 /* longest epoll wait, so a stuck loop is visible to liveness checks */
#define LOOP_ACQUIRE_RETRY_MS 5 /* items waiting for a token or slot try again this often */
#define LOOP_KEEP_VALUES_BYTES ((size_t)1 << 20) /* a larger chunk parses its items twice rather than hold their values */

/* An intrusive FIFO of items, linked through the work_link_t at link_off in each item. */
typedef struct item_fifo {
    work_item_t *head, *tail;
    size_t link_off;
} item_fifo_t;

static work_link_t *fifo_link(const item_fifo_t *f, work_item_t *it)
{
    return (work_link_t *)(void *)((char *)it + f->link_off);
}

static void fifo_push(item_fifo_t *f, work_item_t *it)
{
    work_link_t *k = fifo_link(f, it);
    k->prev = f->tail;
    k->next = NULL;
    k->linked = true;
    if (f->tail) fifo_link(f, f->tail)->next = it;
    else f->head = it;
    f->tail = it;
}

/* Unlinks it; false when it was not in the FIFO. */
static bool fifo_remove(item_fifo_t *f, work_item_t *it)
{
    work_link_t *k = fifo_link(f, it);
    if (!k->linked) return false;
    if (k->prev) fifo_link(f, k->prev)->next = k->next;
    else f->head = k->next;
    if (k->next) fifo_link(f, k->next)->prev = k->prev;
    else f->tail = k->prev;
    k->prev = k->next = NULL;
    k->linked = false;
    return true;
}

/* At most `capacity` items hold a place at once, across the loops that share these places. */
struct loop_places {
    atomic_size_t used;
    size_t capacity;
    loop_t *loops[LOOP_PLACES_MAX_LOOPS]; /* to wake the ones with items waiting */
    size_t n_loops;
};

struct loop {
    int index;
    const handler_t *handler;
    const settings_t *settings;
    void *handler_shared;            /* borrowed: the handler's process-wide state */
    void *handler_state;
    loop_done_fn on_done;
    void *on_done_arg;
    work_item_t *out_head, *out_tail; /* finished this turn, for on_done */
    size_t out_items;

    pthread_t thread;
    bool started;
    int epfd;
    int wakefd;                      /* eventfd: inbox has chunks or stop was asked */

    pthread_mutex_t mu;              /* guards inbox and stop_requested */
    work_chunk_t *inbox_head, *inbox_tail;
    bool stop_requested;

    atomic_size_t load;              /* items submitted and not finished */
    atomic_llong heartbeat_ms;       /* monotonic time of the last turn, for /healthz */
    int64_t now_ms;                  /* cached monotonic time of this turn */
    work_chunk_t *active;            /* chunks whose items are running (doubly linked) */

    loop_timer_t **heap;             /* min-heap on deadline_ms */
    size_t heap_len, heap_cap;

    void **deferred;                 /* freed at the end of the turn (loop_defer_free) */
    size_t deferred_len, deferred_cap;

    struct ratelimit *rl;            /* borrowed: the queue's limits; NULL when none */
    item_fifo_t acq;                 /* items waiting for a token or slot (loop_acquire) */
    loop_timer_t acq_timer;          /* armed while the FIFO is not empty */
    loop_places_t *places;           /* borrowed: the places of --concurrency (loop_set_places) */
    item_fifo_t ready;               /* items waiting for a place, in order */
    atomic_size_t n_waiting;         /* length of the ready FIFO, read by the other loops */
    size_t released;                 /* places given back this turn */
    item_fifo_t deadlines;           /* running items in deadline order (--item-timeout-ms) */
    loop_timer_t dl_timer;           /* at or before the head's deadline while the FIFO is not empty */
};

loop_t *loop_new(int index, const handler_t *handler, void *handler_shared, const settings_t *s,
                 loop_done_fn done, void *done_arg)
{
    loop_t *l = xcalloc(1, sizeof *l);
    l->handler_shared = handler_shared;
    l->index = index;
    l->handler = handler;
    l->settings = s;
    l->on_done = done;
    l->on_done_arg = done_arg;
    l->epfd = l->wakefd = -1;
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->load, 0);
    atomic_init(&l->n_waiting, 0);
    l->acq.link_off = offsetof(work_item_t, acquire_link);
    l->ready.link_off = offsetof(work_item_t, ready_link);
    l->deadlines.link_off = offsetof(work_item_t, deadline_link);
    return l;
}

/* ---- timers ---- */

static bool heap_less(loop_t *l, size_t a, size_t b) { return l->heap[a]->deadline_ms < l->heap[b]->deadline_ms; }

static void heap_swap(loop_t *l, size_t a, size_t b)
{
    loop_timer_t *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_index = a + 1;
    l->heap[b]->heap_index = b + 1;
}

static void heap_up(loop_t *l, size_t i)
{
    while (i > 0 && heap_less(l, i, (i - 1) / 2)) {
        heap_swap(l, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(loop_t *l, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, min = i;
        if (left < l->heap_len && heap_less(l, left, min)) min = left;
        if (right < l->heap_len && heap_less(l, right, min)) min = right;
        if (min == i) return;
        heap_swap(l, i, min);
        i = min;
    }
}

void loop_timer_start(loop_t *l, loop_timer_t *t, int64_t deadline_ms, loop_timer_cb cb)
{
    if (t->heap_index) loop_timer_stop(l, t);
    if (l->heap_len == l->heap_cap) {
        l->heap_cap = l->heap_cap ? l->heap_cap * 2 : 1024;
        l->heap = xrealloc(l->heap, l->heap_cap * sizeof(loop_timer_t *));
    }
    t->deadline_ms = deadline_ms;
    t->cb = cb;
    l->heap[l->heap_len++] = t;
    t->heap_index = l->heap_len;
    heap_up(l, l->heap_len - 1);
}

void loop_timer_stop(loop_t *l, loop_timer_t *t)
{
    if (!t->heap_index) return;
    size_t i = t->heap_index - 1;
    l->heap_len--;
    if (i != l->heap_len) {
        heap_swap(l, i, l->heap_len);
        heap_down(l, i);
        heap_up(l, i);
    }
    t->heap_index = 0;
}

static void loop_run_timers(loop_t *l)
{
    while (l->heap_len && l->heap[0]->deadline_ms <= l->now_ms) {
        loop_timer_t *t = l->heap[0];
        loop_timer_stop(l, t);
        t->cb(l, t);
    }
}

/* ---- file descriptors ---- */

int loop_watch_start(loop_t *l, loop_watch_t *w, int fd, uint32_t events, loop_watch_cb cb)
{
    if (w->in_epoll && w->fd != fd) loop_watch_stop(l, w);
    if (w->in_epoll != events) {
        struct epoll_event ev = {.events = events, .data.ptr = w};
        int op = w->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        int rc = epoll_ctl(l->epfd, op, fd, &ev);
        /* Our record and the epoll set disagree (the fd was closed and reused unseen): do the other operation. */
        if (rc && op == EPOLL_CTL_MOD && errno == ENOENT) rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
        else if (rc && op == EPOLL_CTL_ADD && errno == EEXIST) rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
        if (rc) {
            w->in_epoll = w->events = 0;
            return -1;
        }
    }
    w->fd = fd;
    w->in_epoll = events;
    w->events = events;
    w->cb = cb;
    return 0;
}

void loop_watch_park(loop_t *l, loop_watch_t *w)
{
    (void)l;
    w->events = 0;
}

void loop_watch_stop(loop_t *l, loop_watch_t *w)
{
    if (w->in_epoll) epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL); /* fails harmlessly if fd was closed */
    w->in_epoll = w->events = 0;
}

void loop_watch_forget(loop_watch_t *w) { w->in_epoll = w->events = 0; }

void loop_defer_free(loop_t *l, void *ptr)
{
    if (l->deferred_len == l->deferred_cap) {
        l->deferred_cap = l->deferred_cap ? 2 * l->deferred_cap : 64;
        l->deferred = xrealloc(l->deferred, l->deferred_cap * sizeof(void *));
    }
    l->deferred[l->deferred_len++] = ptr;
}

static bool loop_is_deferred(loop_t *l, const void *ptr)
{
    for (size_t i = 0; i < l->deferred_len; i++)
        if (l->deferred[i] == ptr) return true;
    return false;
}

static void loop_free_deferred(loop_t *l)
{
    for (size_t i = 0; i < l->deferred_len; i++) free(l->deferred[i]);
    l->deferred_len = 0;
}

/* ---- items and chunks ---- */

int64_t loop_now_ms(loop_t *l) { return l->now_ms; }
int64_t loop_heartbeat_ms(const loop_t *l) { return atomic_load(&((loop_t *)l)->heartbeat_ms); }
size_t loop_load(const loop_t *l) { return atomic_load(&((loop_t *)l)->load); }

static void active_remove(loop_t *l, work_chunk_t *c)
{
    if (c->prev) c->prev->next = c->next;
    else l->active = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void loop_out(loop_t *l, work_item_t *it)
{
    it->commit_next = NULL;
    if (l->out_tail) l->out_tail->commit_next = it;
    else l->out_head = it;
    l->out_tail = it;
    l->out_items += !work_item_is_marker(it);
}

/* Hands this turn's finished items to the committer. */
static void loop_flush(loop_t *l)
{
    if (!l->out_head) return;
    work_item_t *list = l->out_head;
    size_t n = l->out_items;
    l->out_head = l->out_tail = NULL;
    l->out_items = 0;
    l->on_done(l->on_done_arg, list, n);
}

static void chunk_complete(loop_t *l, work_chunk_t *c)
{
    active_remove(l, c);
    c->disposition = WORK_COMMIT;
    if (c->n_run == 0) loop_out(l, &c->marker); /* nothing ran: the marker settles the chunk */
}

/* ---- the queue's limits ---- */

void loop_set_ratelimit(loop_t *l, struct ratelimit *rl) { l->rl = rl; }

loop_places_t *loop_places_new(size_t capacity)
{
    loop_places_t *p = xcalloc(1, sizeof *p);
    atomic_init(&p->used, 0);
    p->capacity = capacity ? capacity : 1;
    return p;
}

void loop_places_free(loop_places_t *p) { free(p); }

int loop_set_places(loop_t *l, loop_places_t *p)
{
    if (p->n_loops == LOOP_PLACES_MAX_LOOPS) return -1;
    p->loops[p->n_loops++] = l;
    l->places = p;
    return 0;
}

static void acq_remove(loop_t *l, work_item_t *it)
{
    if (!fifo_remove(&l->acq, it)) return;
    ratelimit_wait(l->rl, -1);
    if (!l->acq.head) loop_timer_stop(l, &l->acq_timer);
}

/* Starts as many waiting items as there are tokens and slots, oldest first. */
static void acq_run(loop_t *l, loop_timer_t *t)
{
    (void)t;
    while (l->acq.head) {
        bool slot;
        if (!ratelimit_try_acquire(l->rl, &slot)) break;
        work_item_t *it = l->acq.head;
        acq_remove(l, it);
        it->holds_slot = slot;
        it->acquire_cb(l, it);
    }
    if (l->acq.head) loop_timer_start(l, &l->acq_timer, l->now_ms + LOOP_ACQUIRE_RETRY_MS, acq_run);
}

void loop_acquire(loop_t *l, work_item_t *it, loop_acquire_cb cb)
{
    bool slot = false;
    if (!l->rl || (!l->acq.head && ratelimit_try_acquire(l->rl, &slot))) {
        it->holds_slot = slot;
        cb(l, it);
        return;
    }
    metrics_add(M_RATE_WAITS, 1);
    it->acquire_cb = cb;
    fifo_push(&l->acq, it);
    ratelimit_wait(l->rl, 1);
    if (!l->acq_timer.heap_index) loop_timer_start(l, &l->acq_timer, l->now_ms + LOOP_ACQUIRE_RETRY_MS, acq_run);
}

void loop_release(loop_t *l, work_item_t *it)
{
    if (!it->holds_slot) return;
    it->holds_slot = false;
    ratelimit_release_slot(l->rl);
}

void loop_throttled(loop_t *l, long retry_after_ms)
{
    if (l->rl) ratelimit_throttled(l->rl, retry_after_ms);
}

static void ready_remove(loop_t *l, work_item_t *it);
static void place_give_back(loop_t *l, work_item_t *it);

static void deadline_remove(loop_t *l, work_item_t *it)
{
    if (!fifo_remove(&l->deadlines, it)) return;
    if (!l->deadlines.head) loop_timer_stop(l, &l->dl_timer);
}

void loop_item_done(loop_t *l, work_item_t *it, bool ok, const char *result_json, size_t result_len,
                    const char *error)
{
    if (it->finished) return; /* a handler bug must not finish an item twice */
    deadline_remove(l, it);
    ready_remove(l, it);
    acq_remove(l, it);
    loop_release(l, it);
    place_give_back(l, it);
    /* The real time, not the turn's: an item can finish late in a long turn, and its ms must cover its call's. */
    int64_t now = clock_now_ms();
    work_item_finish(it, ok, result_json, result_len, error, now);
    metrics_add(ok ? M_ITEMS_OK : M_ITEMS_FAILED, 1);
    metrics_observe(H_ITEM_SECONDS, (uint64_t)(now - it->started_ms) * 1000);
    atomic_fetch_sub(&l->load, 1);
    work_chunk_t *c = it->chunk;
    bool last = ++c->n_finished == c->n_run && !c->starting;
    if (last) chunk_complete(l, c);
    loop_out(l, it);
}

/* Handlers read an item's parsed value only while they start it (they copy what they keep), so it is dropped
 * right after: a running chunk holds its items' texts, not their values too. The item stays the loop's until
 * loop_flush(), even when the handler finished it inside start. */
static void loop_start_item(loop_t *l, work_item_t *it)
{
    chunk_item_parse(it->in); /* again, when the chunk was too large to keep its values while waiting */
    l->handler->start(l->handler_state, l, it);
    chunk_item_drop_value(it->in);
}

static void loop_item_timeout(loop_t *l, work_item_t *it)
{
    /* An item still waiting for a place or its start never reached the handler: nothing to cancel there. */
    bool never_started = it->ready_link.linked || (it->acquire_link.linked && it->acquire_cb == loop_start_item);
    acq_remove(l, it);
    if (l->handler->cancel && !never_started) l->handler->cancel(l->handler_state, l, it);
    char why[96];
    snprintf(why, sizeof why, "timed out after %lld ms (--item-timeout-ms)", l->settings->item_timeout_ms);
    loop_item_done(l, it, false, NULL, 0, why);
}

/* Times out every item past its deadline, then waits for the next one. The timer is not moved when the head
 * finishes early: it fires, finds nothing due, and is set again for the new head. */
static void deadline_fired(loop_t *l, loop_timer_t *t)
{
    (void)t;
    while (l->deadlines.head && l->deadlines.head->deadline_ms <= l->now_ms) loop_item_timeout(l, l->deadlines.head);
    if (l->deadlines.head) loop_timer_start(l, &l->dl_timer, l->deadlines.head->deadline_ms, deadline_fired);
}

static void deadline_add(loop_t *l, work_item_t *it)
{
    it->deadline_ms = l->now_ms + l->settings->item_timeout_ms;
    fifo_push(&l->deadlines, it);
    if (!l->dl_timer.heap_index) loop_timer_start(l, &l->dl_timer, it->deadline_ms, deadline_fired);
}

/* ---- places: --concurrency, shared by the loops ---- */

static void ready_remove(loop_t *l, work_item_t *it)
{
    if (!fifo_remove(&l->ready, it)) return;
    atomic_fetch_sub(&l->n_waiting, 1);
}

static bool place_try_take(loop_t *l, work_item_t *it)
{
    loop_places_t *p = l->places;
    if (atomic_fetch_add(&p->used, 1) >= p->capacity) {
        atomic_fetch_sub(&p->used, 1);
        return false;
    }
    it->holds_place = true;
    return true;
}

static void place_give_back(loop_t *l, work_item_t *it)
{
    if (!it->holds_place) return;
    it->holds_place = false;
    atomic_fetch_sub(&l->places->used, 1);
    l->released++;
}

/* The item took a place: its --item-timeout-ms and its ms start now, not while it waited behind other items for a
 * place (a chunk fetched ahead, or one larger than --concurrency, would otherwise time out items never tried).
 * now_ms only grows, so the deadline FIFO stays in deadline order. */
static void place_start(loop_t *l, work_item_t *it)
{
    it->started_ms = l->now_ms;
    /* A handler without cancel finishes every item inside start(): nothing to time out. */
    if (l->settings->item_timeout_ms > 0 && l->handler->cancel) deadline_add(l, it);
    if (l->handler->gates_calls) loop_start_item(l, it);
    else loop_acquire(l, it, loop_start_item);
}

/* Wakes the loop's thread from epoll_wait (any thread; its eventfd counts wakes, it never blocks). */
static void loop_wake(loop_t *l)
{
    uint64_t one = 1;
    ssize_t w = write(l->wakefd, &one, sizeof one);
    (void)w;
}

/* At the end of every turn: starts waiting items while places are free (not from inside a handler's callback, so
 * an item that finishes inside its own start never recurses into the next), then wakes the other loops with items
 * waiting if this turn gave places back. A loop queues an item (n_waiting) before it checks the places here, and
 * gives a place back before it reads n_waiting, so a freed place is never missed by a waiting loop. */
static void ready_run(loop_t *l)
{
    while (l->ready.head && place_try_take(l, l->ready.head)) {
        work_item_t *it = l->ready.head;
        ready_remove(l, it);
        place_start(l, it);
    }
    if (!l->released) return;
    l->released = 0;
    loop_places_t *p = l->places;
    for (size_t i = 0; i < p->n_loops; i++) {
        if (p->loops[i] == l || atomic_load(&p->loops[i]->n_waiting) == 0) continue;
        loop_wake(p->loops[i]);
    }
}

/* Starts the item when a place is free and none waits before it; otherwise it waits for one. */
static void loop_admit(loop_t *l, work_item_t *it)
{
    if (!l->ready.head && place_try_take(l, it)) {
        place_start(l, it);
        return;
    }
    fifo_push(&l->ready, it);
    atomic_fetch_add(&l->n_waiting, 1);
}

static void loop_start_chunk(loop_t *l, work_chunk_t *c)
{
    c->prev = NULL;
    c->next = l->active;
    if (l->active) l->active->prev = c;
    l->active = c;
    c->starting = true;
    for (size_t i = 0; i < c->decoded.n_items; i++) {
        work_item_t *it = &c->items[i];
        if (it->done_before) continue;
        it->started_ms = l->now_ms;
        it->attempts++;
        if (!c->poison) chunk_item_parse(it->in);
        if (c->poison) {
            loop_item_done(l, it, false, NULL, 0, c->poison);
        } else if (it->in->error) {
            loop_item_done(l, it, false, NULL, 0, it->in->error);
        } else {
            /* A large chunk's items are only checked here; each is parsed again when it starts. */
            if (c->raw_len > LOOP_KEEP_VALUES_BYTES) chunk_item_drop_value(it->in);
            loop_admit(l, it);
        }
    }
    c->starting = false;
    if (c->n_finished == c->n_run) chunk_complete(l, c);
}

void loop_submit(loop_t *l, work_chunk_t *c)
{
    atomic_fetch_add(&l->load, c->n_run);
    c->next = NULL;
    pthread_mutex_lock(&l->mu);
    bool was_empty = l->inbox_head == NULL;
    if (l->inbox_tail) l->inbox_tail->next = c;
    else l->inbox_head = c;
    l->inbox_tail = c;
    pthread_mutex_unlock(&l->mu);
    if (was_empty) loop_wake(l);
}

/* ---- the thread ---- */

static void *loop_main(void *arg)
{
    loop_t *l = arg;
    struct epoll_event events[64];
    if (l->index == 0 && l->settings->test_stall_ms > 0) { /* fault injection for the /healthz test */
        struct timespec ts = {l->settings->test_stall_ms / 1000, (l->settings->test_stall_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (;;) {
        int timeout = LOOP_IDLE_WAKE_MS;
        if (l->heap_len) {
            int64_t until = l->heap[0]->deadline_ms - clock_now_ms();
            if (until < timeout) timeout = until < 0 ? 0 : (int)until;
        }
        int n = epoll_wait(l->epfd, events, 64, timeout);
        if (n < 0 && errno != EINTR) LOG(LL_ERROR, "loop %d: epoll_wait: %s", l->index, strerror(errno));
        l->now_ms = clock_now_ms();
        atomic_store_explicit(&l->heartbeat_ms, l->now_ms, memory_order_relaxed);
        for (int i = 0; i < n; i++) {
            loop_watch_t *w = events[i].data.ptr;
            if (w == NULL) {
                uint64_t count;
                ssize_t r = read(l->wakefd, &count, sizeof count);
                (void)r;
            } else if (loop_is_deferred(l, w)) {
                continue;
            } else if (w->events) {
                w->cb(l, w, events[i].events);
            } else if (w->in_epoll) {
                loop_watch_stop(l, w); /* parked and ready (e.g. the server closed an idle connection) */
            }
        }
        pthread_mutex_lock(&l->mu);
        work_chunk_t *in = l->inbox_head;
        l->inbox_head = l->inbox_tail = NULL;
        bool stop = l->stop_requested;
        pthread_mutex_unlock(&l->mu);
        while (in) {
            work_chunk_t *next = in->next;
            loop_start_chunk(l, in);
            in = next;
        }
        loop_run_timers(l);
        ready_run(l);
        loop_flush(l);
        loop_free_deferred(l);
        if (stop) break;
    }
    l->handler->loop_free(l->handler_state);
    l->handler_state = NULL;
    loop_free_deferred(l);
    return NULL;
}

int loop_start(loop_t *l)
{
    if (!l->places) {
        LOG(LL_ERROR, "loop %d: started without places (loop_set_places)", l->index);
        return -1;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->wakefd < 0) {
        LOG(LL_ERROR, "loop %d: cannot create epoll or eventfd: %s", l->index, strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev)) {
        LOG(LL_ERROR, "loop %d: epoll_ctl: %s", l->index, strerror(errno));
        return -1;
    }
    l->now_ms = clock_now_ms();
    atomic_store(&l->heartbeat_ms, l->now_ms);
    if (l->handler->loop_init(l, l->settings, l->handler_shared, &l->handler_state)) {
        LOG(LL_ERROR, "loop %d: handler %s failed to start", l->index, l->handler->name);
        return -1;
    }
    int rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc) {
        LOG(LL_ERROR, "loop %d: cannot start thread: %s", l->index, strerror(rc));
        return -1;
    }
    l->started = true;
    return 0;
}

void loop_request_stop(loop_t *l)
{
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->stop_requested = true;
    pthread_mutex_unlock(&l->mu);
    loop_wake(l);
}

void loop_stop(loop_t *l)
{
    if (!l->started) return;
    loop_request_stop(l);
    pthread_join(l->thread, NULL);
    l->started = false;
}

work_chunk_t *loop_take_unfinished(loop_t *l)
{
    /* Chunks still in the inbox were never started; join them to the active ones. */
    work_chunk_t *list = l->active;
    l->active = NULL;
    for (work_chunk_t *c = list; c; c = c->next) c->prev = NULL;
    work_chunk_t *in = l->inbox_head;
    l->inbox_head = l->inbox_tail = NULL;
    while (in) {
        work_chunk_t *next = in->next;
        in->next = list;
        list = in;
        in = next;
    }
    while (l->acq.head) acq_remove(l, l->acq.head);
    l->heap_len = 0;
    atomic_store(&l->load, 0);
    return list;
}

void loop_free(loop_t *l)
{
    if (!l) return;
    loop_stop(l);
    for (work_chunk_t *c = loop_take_unfinished(l); c;) {
        work_chunk_t *next = c->next;
        work_chunk_free(c);
        c = next;
    }
    if (l->epfd >= 0) close(l->epfd);
    if (l->wakefd >= 0) close(l->wakefd);
    free(l->heap);
    free(l->deferred);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
