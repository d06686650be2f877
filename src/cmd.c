/* cmd: what the subcommands share. */
#include "cmd.h"

#include "collect.h"
#include "keys.h"
#include "log.h"

rconn_t *cmd_connect(const settings_t *s)
{
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    char err[1024];
    if (rconn_connect(c, err, sizeof err) == 0) return c;
    LOG(LL_ERROR, "%s", err);
    rconn_free(c);
    return NULL;
}

void cmd_report_failed(const settings_t *s, const collect_progress_t *p)
{
    if (p->failed_left == 0) return;
    keys_t k;
    keys_init(&k, s->queue);
    LOG(LL_WARN, "queue %s: %lld items failed and wait in %s, %lld of them in chunks that went there unread (no "
                 "result line); chunkd requeue puts them back", s->queue, p->failed_left, k.dead,
        p->dead_chunk_items_left);
}
