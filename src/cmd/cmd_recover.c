/* cmd_recover: `chunkd recover`: runs the lease reaper once by hand and reports what it moved. */
#include <stdio.h>

#include "cmd.h"
#include "keys.h"
#include "lease.h"
#include "log.h"
#include "rconn.h"

int cmd_recover(settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    long long workers = 0, moved = lease_reap(c, s->queue, &k, NULL, 0, true, &workers);
    rconn_free(c);
    if (moved < 0) {
        LOG(LL_ERROR, "recover: cannot read the workers of queue %s", s->queue);
        return EXIT_RUNTIME;
    }
    printf("recovered %lld chunks from %lld workers whose lease expired (queue %s)\n", moved, workers, s->queue);
    return 0;
}
