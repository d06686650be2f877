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
#include "tally.h"

rconn_t *cmd_connect(const settings_t *s)
{
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    char err[1024];
    if (rconn_connect(c, err, sizeof err) == 0) return c;
    LOG(LL_ERROR, "%s", err);
    rconn_free(c);
    return NULL;
}

void cmd_cluster_key(const settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue ? s->queue : "");
    rconn_set_cluster_key(s->queue && s->queue[0] ? k.stats : "");
}

int cmd_report_failed(const settings_t *s, const collect_progress_t *p, const char *who, bool dead_kept)
{
    long long failed = p->tally ? tally_failed(p->tally) : 0, unread = p->dead_chunk_items_left;
    if (p->tally) {
        char also[96] = "";
        if (unread) snprintf(also, sizeof also, ", %lld in chunks that went to dead unread", unread);
        fprintf(stderr, "%s: %lld ok, %lld failed%s%s\n", who, tally_ok(p->tally), failed, also,
                failed || unread ? " (exit status 4)" : "");
        const char *reasons[CMD_TOP_REASONS];
        long long counts[CMD_TOP_REASONS];
        size_t n = tally_top(p->tally, reasons, counts, CMD_TOP_REASONS);
        if (n) fprintf(stderr, "%s: the most common reasons:\n", who);
        for (size_t i = 0; i < n; i++) fprintf(stderr, "  %8lld  %s\n", counts[i], reasons[i]);
    }
    if (p->failed_left && !dead_kept) {
        LOG(LL_WARN, "%lld items failed (the queue goes away with this run: their lines say \"ok\":false; jq -c "
                     "'select(.ok == false)' lists them)", p->failed_left);
    } else if (p->failed_left) {
        keys_t k;
        keys_init(&k, s->queue);
        LOG(LL_WARN, "queue %s: %lld items failed and wait in %s, %lld of them in chunks that went there unread (no "
                     "result line); chunkd dead --queue %s lists them, chunkd requeue puts them back", s->queue,
            p->failed_left, k.dead, unread, s->queue);
    }
    return failed || unread ? EXIT_FAILED : 0;
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
