/* cmd: what the subcommands share. */
#include "cmd.h"

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
