/* loop: one event-loop thread that holds thousands of items in flight.
 *
 * Each loop owns an epoll instance, a min-heap of timers and an inbox of chunks. fetch submits chunks to the
 * inbox from its own thread (loop_submit, the only cross-thread call besides stop and load); everything else runs
 * on the loop's thread: the handler starts items, arms timers (later also watches sockets, for libcurl), and calls
 * loop_item_done() exactly once per item. At the end of each turn the loop hands the items finished in it to
 * the committer through the on_done callback; with a chunk's last item goes the ownership of the chunk. Concurrency is therefore bounded by the items a process holds
 * (--concurrency), not by threads. */
#ifndef CHUNKD_LOOP_H
#define CHUNKD_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct settings;
struct handler;
struct work_chunk;
struct work_item;

typedef struct loop loop_t;
struct ratelimit;
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

/* A file descriptor watched by the loop's epoll (for libcurl's sockets), embedded in its user's struct.
 * Fields are private to loop.c. */
struct loop_watch {
    int fd;
    uint32_t events;     /* EPOLLIN / EPOLLOUT passed to cb; 0 when not watched (stopped or parked) */
    uint32_t in_epoll;   /* events the fd is registered with in the epoll set; 0 when not registered */
    loop_watch_cb cb;
};

/* Called on the loop's thread with the items finished in one turn (linked by commit_next; a chunk's marker may be
 * among them), n_items of them real items. The callee takes them, and each chunk whose last item (or marker) is
 * in the list. */
typedef void (*loop_done_fn)(void *arg, struct work_item *list, size_t n_items);

/* Creates loop number index; handler_shared is what the handler's init() built (borrowed). */
loop_t *loop_new(int index, const struct handler *handler, void *handler_shared, const struct settings *s,
                 loop_done_fn done, void *done_arg);
/* Creates the handler's per-loop state and starts the thread. Returns 0, or -1 (with a log line). */
int loop_start(loop_t *loop);
/* Hands a chunk to the loop (any thread); takes ownership. */
void loop_submit(loop_t *loop, struct work_chunk *chunk);
/* Monotonic time of the loop's last turn (any thread); a loop turns at least once a second. */
int64_t loop_heartbeat_ms(const loop_t *loop);
/* Items submitted and not yet finished (any thread). */
size_t loop_load(const loop_t *loop);
/* Asks the thread to stop at its next turn and waits for it; items still running are abandoned. */
void loop_stop(loop_t *loop);
/* Asks, without waiting (loop_stop then waits): stopping several loops this way first lets them free their
 * handler state (thousands of connections for http) at the same time. */
void loop_request_stop(loop_t *loop);
/* After loop_stop: returns the chunks the loop still held (a list linked by ->next), and gives up their
 * ownership. */
struct work_chunk *loop_take_unfinished(loop_t *loop);
void loop_free(loop_t *loop);

/* On the loop's thread only. */
int64_t loop_now_ms(loop_t *loop);
void loop_timer_start(loop_t *loop, loop_timer_t *t, int64_t deadline_ms, loop_timer_cb cb);
void loop_timer_stop(loop_t *loop, loop_timer_t *t);
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

/* Gates each call an item makes on the queue's limits (--rate-limit, --max-inflight-global): calls
 * cb(loop, item) once the item has a token and a slot, at once when they are at hand (or no limit is set),
 * otherwise later from a loop timer, in FIFO order. The loop itself gates an item's start this way, unless the
 * handler gates its calls itself (handler_t.gates_calls: exec, when a subprocess is free); a handler that makes
 * several calls per item (http retries) gates each further call. The slot is held until
 * loop_release() or the item's end; an item that finishes or times out while waiting is simply dropped from the
 * FIFO (its cb never fires). */
typedef void (*loop_acquire_cb)(loop_t *loop, struct work_item *item);
void loop_acquire(loop_t *loop, struct work_item *item, loop_acquire_cb cb);
/* The item's call ended: gives its slot back (nothing when it holds none). */
void loop_release(loop_t *loop, struct work_item *item);
/* The upstream asked to slow down (a 429, or a 503 with Retry-After; retry_after_ms -1 when absent): lowers the
 * queue's shared rate and pauses every worker (see ratelimit.h). Nothing when no rate limit is set. */
void loop_throttled(loop_t *loop, long retry_after_ms);
/* The places of --concurrency, shared by a worker's loops: at most `capacity` items run at once across them. Items
 * of submitted chunks beyond that wait in their loop, in order, and start as places free in any loop (a loop that
 * gave places back wakes the others with items waiting, once per turn). fetch takes the next chunk before places
 * free (window.h), so a freed place is refilled at once rather than after a Redis round trip. */
typedef struct loop_places loop_places_t;
#define LOOP_PLACES_MAX_LOOPS 256 /* loops sharing one loop_places_t; --threads' maximum */
loop_places_t *loop_places_new(size_t capacity);
void loop_places_free(loop_places_t *p);
/* Before loop_start (required): the loop takes its places from p (borrowed; must outlive the loop); -1 when p
 * already has 256 loops. */
int loop_set_places(loop_t *loop, loop_places_t *p);
/* Before loop_start: the queue's limits (NULL: none; borrowed, must outlive the loop). */
void loop_set_ratelimit(loop_t *loop, struct ratelimit *rl);

/* Reports an item's outcome: result_json (JSON text) when ok, error otherwise. Both are borrowed. */
void loop_item_done(loop_t *loop, struct work_item *item, bool ok, const char *result_json, size_t result_len,
                    const char *error);

#endif
