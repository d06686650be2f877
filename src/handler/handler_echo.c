/* handler_echo: returns the item at once. Measures the pipeline without any handler cost. */
#include "handler.h"

static int echo_loop_init(loop_t *loop, const settings_t *s, void *shared, void **state)
{
    (void)loop, (void)shared, (void)s;
    *state = NULL;
    return 0;
}

static void echo_loop_free(void *state) { (void)state; }

static void echo_start(void *state, loop_t *loop, work_item_t *item)
{
    (void)state;
    sched_item_done(loop, item, true, item->in->text, item->in->text_len, NULL);
}

/* echo finishes every item inside start(): nothing to cancel. */
const handler_t handler_echo = {
    .name = "echo", .loop_init = echo_loop_init, .loop_free = echo_loop_free, .start = echo_start};
