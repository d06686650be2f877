/* handler: the registry of handlers; each handler lives in its own handler_<name>.c. */
#include "handler.h"
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const handler_t *const handlers[] = {&handler_sleep, &handler_echo, &handler_http, &handler_exec};

const handler_t *handler_find(const char *name)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    return NULL;
}

size_t handler_loop_count(const handler_t *h, const settings_t *s)
{
    long n = s->threads ? s->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (h->max_loops && h->max_loops(s) < n) n = h->max_loops(s);
    if (n > s->concurrency) n = s->concurrency;
    /* --threads 0 is the number of CPUs, which can be more than the loops one loop_places_t holds. */
    if (n > SCHED_PLACES_MAX_LOOPS) n = SCHED_PLACES_MAX_LOOPS;
    return n > 0 ? (size_t)n : 1;
}

int64_t handler_retry_delay_ms(const settings_t *s, unsigned int *rng, int attempt)
{
    double cap = (double)s->retry_base_ms;
    for (int i = 1; i < attempt && cap < (double)s->retry_max_ms; i++) cap *= 2;
    if (cap > (double)s->retry_max_ms) cap = (double)s->retry_max_ms;
    return (int64_t)((double)rand_r(rng) / ((double)RAND_MAX + 1.0) * cap);
}
