/* loop: the event mechanism of one thread, as redis's ae.c is: an epoll set, a min-heap of timers, watched file
 * descriptors, an eventfd to be woken from other threads, and frees deferred to the end of a turn.
 *
 * It knows nothing of items, chunks or handlers: what runs on it is its client's business (scheduler.c: which item
 * runs when; the handlers: how an item runs). A turn is: wait for events (at most LOOP_IDLE_WAKE_MS, or until the
 * next timer), dispatch the fd events, call the client's turn_begin, fire the due timers, call its turn_end, free
 * what was deferred. Every function here runs on the loop's thread, except loop_wake, loop_request_stop,
 * loop_stop and loop_heartbeat_ms (any thread), and loop_new, loop_open, loop_start and loop_free (the owner, while
 * the thread does not run). */
#ifndef CHUNKD_LOOP_H
#define CHUNKD_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loop loop_t;

typedef struct loop_timer loop_timer_t;
typedef void (*loop_timer_cb)(loop_t *loop, loop_timer_t *timer);

/* A timer, embedded in its user's struct. Fields are private to loop.c. */
struct loop_timer {
    int64_t deadline_ms;
    size_t heap_index;   /* position in the heap + 1; 0 when not armed */
    loop_timer_cb cb;
};

typedef struct loop_watch loop_watch_t;
typedef void (*loop_watch_cb)(loop_t *loop, loop_watch_t *watch, uint32_t events);

/* A file descriptor watched by the loop's epoll (libcurl's sockets, the exec handler's pipes and pidfds),
 * embedded in its user's struct. Fields are private to loop.c. */
struct loop_watch {
    int fd;
    uint32_t events;     /* EPOLLIN / EPOLLOUT passed to cb; 0 when not watched (stopped or parked) */
    uint32_t in_epoll;   /* events the fd is registered with in the epoll set; 0 when not registered */
    loop_watch_cb cb;
};

/* What runs on the loop: called on its thread with the arg given to loop_new. */
typedef struct loop_client {
    void (*turn_begin)(void *arg);  /* each turn, after the fd events, before the timers */
    void (*turn_end)(void *arg);    /* each turn, after the timers */
    void (*stopped)(void *arg);     /* once, after the last turn (loop_request_stop) */
} loop_client_t;

/* Creates loop number index (for messages); client and arg are borrowed and must outlive the loop. test_stall_ms
 * (fault injection for the /healthz test; 0: none) makes loop 0 sleep that long before its first turn. */
loop_t *loop_new(int index, const loop_client_t *client, void *arg, long long test_stall_ms);
/* Creates the epoll set and the eventfd, so that watches and timers can be set before the thread starts.
 * Returns 0, or -1 (with a log line). */
int loop_open(loop_t *loop);
/* Starts the thread. Returns 0, or -1 (with a log line). */
int loop_start(loop_t *loop);
/* Asks the thread to stop after its current turn, without waiting (any thread). */
void loop_request_stop(loop_t *loop);
/* Asks and waits for the thread to end (any thread but the loop's). */
void loop_stop(loop_t *loop);
/* Wakes the thread from its wait for events (any thread; never blocks). */
void loop_wake(loop_t *loop);
/* Monotonic time of the loop's last turn (any thread); a loop turns at least once a second. */
int64_t loop_heartbeat_ms(const loop_t *loop);
/* After loop_stop (or before loop_start): closes the descriptors and frees the timers' heap. */
void loop_free(loop_t *loop);

int loop_index(const loop_t *loop);
/* The client's arg given to loop_new. */
void *loop_arg(const loop_t *loop);
/* True on the loop's own thread (for assertions of thread ownership). */
bool loop_on_thread(const loop_t *loop);

/* On the loop's thread only. */
int64_t loop_now_ms(const loop_t *loop);
void loop_timer_start(loop_t *loop, loop_timer_t *t, int64_t deadline_ms, loop_timer_cb cb);
void loop_timer_stop(loop_t *loop, loop_timer_t *t);
static inline bool loop_timer_armed(const loop_timer_t *t) { return t->heap_index != 0; }
/* Drops every timer at once, without touching them (they may live in memory freed by now): a stopped loop whose
 * owner takes back what it held. A timer dropped this way must not be stopped or started on this loop again. */
void loop_timer_clear(loop_t *loop);
/* Starts or changes watching fd for events (EPOLLIN and/or EPOLLOUT). Costs no system call when w is parked on
 * (or already watching) fd with the same events. Returns 0, or -1 with errno set. */
int loop_watch_start(loop_t *loop, loop_watch_t *w, int fd, uint32_t events, loop_watch_cb cb);
/* Stops calling cb but leaves the fd in the epoll set, so that watching it again with the same events is free
 * (an idle keep-alive connection between two calls). If the fd becomes ready while parked, the loop removes it
 * from the set then (level-triggered epoll would otherwise report it on every turn). */
void loop_watch_park(loop_t *loop, loop_watch_t *w);
/* Stops watching and removes the fd from the epoll set. Call it before closing a watched or parked fd: a parked
 * fd number that is closed and reused would otherwise look registered. */
void loop_watch_stop(loop_t *loop, loop_watch_t *w);
/* Forgets that w's fd was registered, without a system call: for an fd number that was closed behind the
 * watch's back and now names a new file (epoll dropped the old registration when the file was closed). */
void loop_watch_forget(loop_watch_t *w);
/* Frees ptr at the end of this loop turn, so that events already collected for it in this turn stay safe to
 * dispatch (they are skipped). Use it for a loop_watch_t that a callback wants to free. */
void loop_defer_free(loop_t *loop, void *ptr);

#endif
