/* cmd: what the subcommands share. */
#include "cmd.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "collect.h"
#include "keys.h"
#include "log.h"
#include "sig.h"

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

typedef struct cmd_job {
    void (*job)(void *arg);
    void *arg;
    atomic_bool done; /* set by the job's thread, read by the main thread */
} cmd_job_t;

static void *cmd_job_main(void *p)
{
    cmd_job_t *j = p;
    j->job(j->arg);
    atomic_store(&j->done, true);
    sig_wake();
    return NULL;
}

int cmd_run_job(void (*job)(void *arg), void (*on_wake)(void *arg, int sig), void *arg, char *err, size_t errlen)
{
    cmd_job_t j = {.job = job, .arg = arg};
    atomic_init(&j.done, false);
    pthread_t t;
    int rc = pthread_create(&t, NULL, cmd_job_main, &j);
    if (rc) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
        return -1;
    }
    while (!atomic_load(&j.done)) on_wake(arg, sig_wait(100));
    pthread_join(t, NULL);
    return 0;
}
