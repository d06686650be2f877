/* scheduler (sched_*): which item runs when, on one event loop (loop.h is how it waits; handlers are how an item runs).
 *
 * A worker has one scheduler per event-loop thread. fetch submits chunks to it from its own thread
 * (sched_submit; with sched_load, sched_request_stop and sched_stop, the only calls from other threads); all the
 * rest runs on its loop's thread. Of a submitted chunk's items, each one starts when it gets one of the
 * --concurrency places (shared by the worker's schedulers: sched_places_t), in order; the others wait in a FIFO.
 * Each call an item makes first takes a token and a slot of the queue's limits (sched_acquire; a FIFO retried on a
 * 5 ms timer). An item still running after --item-timeout-ms is cancelled (its deadline is in a FIFO, all items
 * having the same timeout). The handler reports each item's end exactly once (sched_item_done); at the end of
 * each turn the items finished in it go to the committer through the done callback, and with a chunk's last item
 * goes the ownership of the chunk. Concurrency is therefore bounded by the items a process holds, not by
 * threads. */
#ifndef CHUNKD_SCHEDULER_H
#define CHUNKD_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "loop.h"

struct settings;
struct handler;
struct ratelimit;
struct work_chunk;
struct work_item;

typedef struct sched sched_t;

typedef void (*sched_acquire_cb)(loop_t *loop, struct work_item *item);
typedef void (*sched_retry_cb)(loop_t *loop, struct work_item *item);

/* The scheduler's own fields of an item (work_item_t.sched): nothing but scheduler.c reads or writes them. */
typedef struct sched_item {
    int64_t deadline_ms;         /* --item-timeout-ms, counted from when the item took its place */
    list_node_t deadline_link;   /* in the deadline FIFO while it runs (handlers with cancel only) */
    list_node_t ready_link;      /* in the FIFO of items waiting for a place */
    list_node_t acquire_link;    /* in the FIFO of items waiting for a token or slot */
    sched_acquire_cb acquire_cb; /* what to call once it has them */
    bool holds_place;            /* one of the --concurrency places */
    bool holds_slot;             /* one of the --max-inflight-global slots */
    loop_timer_t retry_timer;    /* armed while it waits for its retry (sched_retry_after) */
    sched_retry_cb retry_cb;     /* from sched_retry_after until it holds a place again */
    int64_t retry_since_ms;      /* when that wait began */
} sched_item_t;

/* Called on the loop's thread with the items finished in one turn (linked by commit_next; a chunk's marker may be
 * among them), n_items of them real items. The callee takes them, and each chunk whose last item (or marker) is
 * in the list. */
typedef void (*sched_done_fn)(void *arg, struct work_item *list, size_t n_items);

/* Called on the loop's thread, at the end of a turn, with the change in the number of its items waiting for a
 * retry (sched_retry_after): they are held but not running. Also called once from sched_take_unfinished (any
 * thread) to count the ones it abandons as running again. */
typedef void (*sched_waiting_fn)(void *arg, long delta);

/* Creates scheduler (and loop) number index; handler_shared is what the handler's init() built (borrowed). */
sched_t *sched_new(int index, const struct handler *handler, void *handler_shared, const struct settings *s,
                   sched_done_fn done, void *done_arg);
/* Creates the handler's per-loop state and starts the loop's thread. Returns 0, or -1 (with a log line). */
int sched_start(sched_t *s);
/* Hands a chunk to the scheduler (any thread); takes ownership. */
void sched_submit(sched_t *s, struct work_chunk *chunk);
/* Items submitted and not yet finished (any thread). */
size_t sched_load(const sched_t *s);
/* The event loop it runs on (for loop_heartbeat_ms). */
loop_t *sched_loop(const sched_t *s);
/* Asks the loop's thread to stop after its turn and waits for it; items still running are abandoned. */
void sched_stop(sched_t *s);
/* Asks, without waiting (sched_stop then waits): stopping several loops this way first lets them free their
 * handler state (thousands of connections for http) at the same time. */
void sched_request_stop(sched_t *s);
/* After sched_stop: moves the chunks it still held (running, or never started) to out (linked by their
 * sched_link), and gives up their ownership. */
void sched_take_unfinished(sched_t *s, list_t *out);
void sched_free(sched_t *s);

/* The places of --concurrency, shared by a worker's schedulers: at most `capacity` items run at once across them.
 * Items of submitted chunks beyond that wait in their scheduler, in order, and start as places free in any loop
 * (a loop that gave places back wakes the others with items waiting, once per turn). fetch takes the next chunk
 * before places free (window.h), so a freed place is refilled at once rather than after a Redis round trip. */
typedef struct sched_places sched_places_t;
#define SCHED_PLACES_MAX_LOOPS 256 /* schedulers sharing one sched_places_t; --threads' maximum */
sched_places_t *sched_places_new(size_t capacity);
void sched_places_free(sched_places_t *p);
/* Before sched_start (required): the scheduler takes its places from p (borrowed; must outlive it); -1 when p
 * already has SCHED_PLACES_MAX_LOOPS schedulers. */
int sched_set_places(sched_t *s, sched_places_t *p);
/* Before sched_start (optional): where the changes of its waiting items go (with done_arg). */
void sched_set_waiting_fn(sched_t *s, sched_waiting_fn fn);
/* Before sched_start: the queue's limits (NULL: none; borrowed, must outlive the scheduler). */
void sched_set_ratelimit(sched_t *s, struct ratelimit *rl);

/* For handlers, on the loop's thread; loop is the one their callbacks were given. */

/* Reports an item's outcome, exactly once per item: result_json (JSON text) when ok, error otherwise. Both are
 * borrowed. */
void sched_item_done(loop_t *loop, struct work_item *item, bool ok, const char *result_json, size_t result_len,
                     const char *error);
/* Gates each call an item makes on the queue's limits (--rate-limit, --max-inflight-global): calls
 * cb(loop, item) once the item has a token and a slot, at once when they are at hand (or no limit is set),
 * otherwise later from a loop timer, in FIFO order. The scheduler itself gates an item's start this way, unless
 * the handler gates its calls itself (handler_t.gates_calls: exec, when a subprocess is free); a handler that
 * makes several calls per item (http retries) gates each further call. The slot is held until sched_release()
 * or the item's end; an item that finishes or times out while waiting is simply dropped from the FIFO (its cb
 * never fires). */
void sched_acquire(loop_t *loop, struct work_item *item, sched_acquire_cb cb);
/* The item's call failed and is to be made again in delay_ms: until then the item is not in flight. It gives its
 * place of --concurrency (and its slot) back at once, so that other items, of its chunk or of the chunks behind
 * it, run meanwhile; it is still held (the window counts it, and its chunk is committed around it: its finished
 * items go as they finish). When the delay is over it takes a place again, before the items of its loop not
 * started yet (retried items come first, among themselves in the order their waits ended: a retry never waits
 * behind the chunks fetched since, and new items cannot starve, an item retrying at most --max-attempts - 1
 * times; across loops, a freed place goes to whichever loop takes it first, as for any waiting item), then
 * cb(loop, item) makes the call (taking its token with sched_acquire). --item-timeout-ms keeps counting through
 * the wait: the deadline is the item's whole time since its first start; a timeout during the wait cancels the
 * item in the handler (its cancel) as for a running one, and cb never fires. */
void sched_retry_after(loop_t *loop, struct work_item *item, int64_t delay_ms, sched_retry_cb cb);
/* The item's call ended: gives its slot back (nothing when it holds none), and counts the call in the queue's
 * window of the rate limit (ratelimit.h). */
void sched_release(loop_t *loop, struct work_item *item);
/* The upstream asked to slow down (a 429, or a 503 with Retry-After; retry_after_ms -1 when absent), after
 * sched_release for the same call: counted in the queue's window, whose 429 share may cut the shared rate and
 * pause every worker (see ratelimit.h). Nothing when no rate limit is set. */
void sched_throttled(loop_t *loop, long retry_after_ms);

#endif
