/* cmd_enqueue: `chunkd enqueue [FILE|-]`: JSON Lines to chunks on the pending list. */
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
        return EXIT_RUNTIME;
    }
    LOG(LL_INFO, "enqueued %lld items in %lld chunks to queue %s from %s", res.items, res.chunks, s->queue,
        strcmp(input, "-") == 0 ? "stdin" : input);
    if (res.rejected) {
        LOG(LL_WARN, "%lld lines rejected; they are in %s", res.rejected, res.rejects_path);
        return EXIT_REJECTED;
    }
    return 0;
}
