/* cmd_enqueue: `chunkd enqueue [FILE|-]`: JSON Lines to chunks on the pending list, sealing the queue at the end
 * of the input (unless --no-seal); `chunkd seal`: seal a queue left open. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "enqueue.h"
#include "log.h"
#include "sig.h"

static atomic_bool enqueue_never_stop = false;

int cmd_enqueue(settings_t *s)
{
    const char *input = s->input ? s->input : "-";
    FILE *in = strcmp(input, "-") == 0 ? stdin : fopen(input, "r");
    if (!in) {
        LOG(LL_ERROR, "cannot open input %s: %s", input, strerror(errno));
        return EXIT_RUNTIME;
    }
    enqueue_result_t res;
    char err[1024];
    int rc = enqueue_run(s, in, input, &enqueue_never_stop, NULL, &res, err, sizeof err);
    if (in != stdin) fclose(in);
    if (rc) {
        LOG(LL_ERROR, "%s", err);
        return res.refused_sealed ? EXIT_USAGE : EXIT_RUNTIME;
    }
    LOG(LL_INFO, "enqueued %lld items in %lld chunks to queue %s from %s", res.items, res.chunks, s->queue,
        strcmp(input, "-") == 0 ? "stdin" : input);
    if (res.sealed)
        LOG(LL_INFO, "queue %s sealed: its input is complete, %lld items in all", s->queue, res.total);
    else
        LOG(LL_INFO, "queue %s left open (--no-seal): `chunkd seal --queue %s` once its input is complete",
            s->queue, s->queue);
    if (res.rejected) {
        LOG(LL_WARN, "%lld lines rejected; they are in %s", res.rejected, res.rejects_path);
        return EXIT_REJECTED;
    }
    return 0;
}

int cmd_seal(settings_t *s)
{
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    char err[1024];
    bool was_sealed = false;
    long long total = 0;
    int rc = enqueue_seal(c, s->queue, true, &was_sealed, &total, err, sizeof err);
    if (rc) LOG(LL_ERROR, "%s", err);
    else LOG(LL_INFO, "queue %s %s: its input is complete, %lld items in all", s->queue,
             was_sealed ? "was sealed already" : "sealed", total);
    rconn_free(c);
    return rc ? EXIT_RUNTIME : 0;
}
