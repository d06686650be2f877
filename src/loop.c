/* loop: see loop.h.
 *
 * Invariants: only the stop flag is shared with other threads (under mu), and the heartbeat (atomic); timers live
 * in a binary min-heap whose entries know their index, so stopping a timer is O(log n); a deferred pointer is
 * freed only at the end of the turn that deferred it, after every event of that turn was dispatched or skipped. */
#include "loop.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "xalloc.h"

#define LOOP_IDLE_WAKE_MS 1000 /* longest epoll wait, so a stuck loop is visible to liveness checks */
#define LOOP_EVENTS_PER_WAIT 64

struct loop {
    int index;
    const loop_client_t *client;     /* borrowed */
    void *arg;                       /* the client's */
    long long test_stall_ms;

    pthread_t thread;
    bool started;                    /* the owner's view: between loop_start and loop_stop */
    pthread_t self;                  /* set by the thread itself, then running (release) */
    atomic_bool running;
    int epfd;
    int wakefd;                      /* eventfd: loop_wake */

    pthread_mutex_t mu;              /* guards stop_requested */
    bool stop_requested;

    atomic_llong heartbeat_ms;       /* monotonic time of the last turn, for /healthz */
    int64_t now_ms;                  /* cached monotonic time of this turn */

    loop_timer_t **heap;             /* min-heap on deadline_ms */
    size_t heap_len, heap_cap;

    void **deferred;                 /* freed at the end of the turn (loop_defer_free) */
    size_t deferred_len, deferred_cap;
};

loop_t *loop_new(int index, const loop_client_t *client, void *arg, long long test_stall_ms)
{
    loop_t *l = xcalloc(1, sizeof *l);
    l->index = index;
    l->client = client;
    l->arg = arg;
    l->test_stall_ms = test_stall_ms;
    l->epfd = l->wakefd = -1;
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->running, false);
    l->now_ms = clock_now_ms();
    atomic_init(&l->heartbeat_ms, l->now_ms);
    return l;
}

int loop_index(const loop_t *l) { return l->index; }
void *loop_arg(const loop_t *l) { return l->arg; }
bool loop_on_thread(const loop_t *l)
{
    return atomic_load_explicit(&((loop_t *)l)->running, memory_order_acquire) && pthread_equal(pthread_self(), l->self);
}
int64_t loop_now_ms(const loop_t *l) { return l->now_ms; }
int64_t loop_heartbeat_ms(const loop_t *l) { return atomic_load(&((loop_t *)l)->heartbeat_ms); }

/* ---- timers ---- */

static bool heap_less(const loop_t *l, size_t a, size_t b) { return l->heap[a]->deadline_ms < l->heap[b]->deadline_ms; }

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

void loop_timer_clear(loop_t *l)
{
    /* Not a word written to the timers themselves: the structs they live in may be gone already (a handler frees
     * its per-loop state, timers included, as its loop stops). */
    l->heap_len = 0;
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

/* ---- waking and the thread ---- */

void loop_wake(loop_t *l)
{
    uint64_t one = 1;
    ssize_t w = write(l->wakefd, &one, sizeof one); /* the eventfd counts wakes; it never blocks */
    (void)w;
}

/* Dispatches one epoll_wait's events. */
static void loop_dispatch(loop_t *l, const struct epoll_event *events, int n)
{
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
}

static void *loop_main(void *arg)
{
    loop_t *l = arg;
    l->self = pthread_self();
    atomic_store_explicit(&l->running, true, memory_order_release);
    struct epoll_event events[LOOP_EVENTS_PER_WAIT];
    if (l->test_stall_ms > 0) { /* fault injection for the /healthz test */
        struct timespec ts = {l->test_stall_ms / 1000, (l->test_stall_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (;;) {
        int timeout = LOOP_IDLE_WAKE_MS;
        if (l->heap_len) {
            int64_t until = l->heap[0]->deadline_ms - clock_now_ms();
            if (until < timeout) timeout = until < 0 ? 0 : (int)until;
        }
        int n = epoll_wait(l->epfd, events, LOOP_EVENTS_PER_WAIT, timeout);
        if (n < 0 && errno != EINTR) LOG(LL_ERROR, "loop %d: epoll_wait: %s", l->index, strerror(errno));
        l->now_ms = clock_now_ms();
        atomic_store_explicit(&l->heartbeat_ms, l->now_ms, memory_order_relaxed);
        loop_dispatch(l, events, n);
        pthread_mutex_lock(&l->mu);
        bool stop = l->stop_requested;
        pthread_mutex_unlock(&l->mu);
        l->client->turn_begin(l->arg);
        loop_run_timers(l);
        l->client->turn_end(l->arg);
        loop_free_deferred(l);
        if (stop) break;
    }
    l->client->stopped(l->arg);
    loop_free_deferred(l);
    atomic_store_explicit(&l->running, false, memory_order_release);
    return NULL;
}

int loop_open(loop_t *l)
{
    assert(!l->started && l->epfd < 0);
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
    return 0;
}

int loop_start(loop_t *l)
{
    assert(l->epfd >= 0 && "loop_open() first");
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
    assert(!loop_on_thread(l));
    loop_request_stop(l);
    pthread_join(l->thread, NULL);
    l->started = false;
}

void loop_free(loop_t *l)
{
    if (!l) return;
    loop_stop(l);
    if (l->epfd >= 0) close(l->epfd);
    if (l->wakefd >= 0) close(l->wakefd);
    free(l->heap);
    free(l->deferred);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
