/* handler: the registry of handlers; each handler lives in its own handler_<name>.c. */
#include "handler.h"

#include <string.h>

static const handler_t *const handlers[] = {&handler_sleep, &handler_echo, &handler_http, &handler_exec};

const handler_t *handler_find(const char *name)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    return NULL;
}
