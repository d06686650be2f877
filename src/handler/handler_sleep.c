/* handler_sleep: waits the item's "sleep_ms" (else --sleep-ms) on a loop timer and returns the item unchanged.
 * It stands in for a slow call: no thread blocks, so one loop holds any number of sleeping items. */
#include <stddef.h>
#include <stdlib.h>

#include "handler.h"
#include "xalloc.h"

#define SLEEP_MS_MAX 86400000LL

typedef struct sleep_state {
    long long default_ms; /* --sleep-ms */
} sleep_state_t;

static int sleep_loop_init(loop_t *loop, const settings_t *s, void *shared, void **state)
{
    (void)loop, (void)shared;
    sleep_state_t *st = xcalloc(1, sizeof *st);
    st->default_ms = s->sleep_ms;
    *state = st;
    return 0;
}

static void sleep_loop_free(void *state) { free(state); }

static void sleep_fired(loop_t *loop, loop_timer_t *t)
{
    work_item_t *item = container_of(t, work_item_t, timer);
    sched_item_done(loop, item, true, item->in->text, item->in->text_len, NULL);
}

static void sleep_start(void *state, loop_t *loop, work_item_t *item)
{
    const sleep_state_t *st = state;
    long long ms = st->default_ms;
    json_t *v = json_is_object(item->in->value) ? json_object_get(item->in->value, "sleep_ms") : NULL;
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > SLEEP_MS_MAX) {
            sched_item_done(loop, item, false, NULL, 0, "\"sleep_ms\" must be an integer from 0 to 86400000");
            return;
        }
        ms = json_integer_value(v);
    }
    loop_timer_start(loop, &item->timer, loop_now_ms(loop) + ms, sleep_fired);
}

static void sleep_cancel(void *state, loop_t *loop, work_item_t *item)
{
    (void)state;
    loop_timer_stop(loop, &item->timer);
}

const handler_t handler_sleep = {.name = "sleep",
                                 .loop_init = sleep_loop_init,
                                 .loop_free = sleep_loop_free,
                                 .start = sleep_start,
                                 .cancel = sleep_cancel};
