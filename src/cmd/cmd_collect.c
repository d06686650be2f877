/* cmd_collect: `chunkd collect`: the results stream to JSON Lines. */
#include <stdatomic.h>

#include "cmd.h"
#include "collect.h"
#include "lastonly.h"
#include "log.h"
#include "sink.h"
#include "tally.h"

typedef struct collect_job {
    settings_t *settings;
    sink_t *sink;
    atomic_bool stop;
    collect_progress_t progress;
    int rc;
    char err[1024];
} collect_job_t;

static void collect_job(void *arg)
{
    collect_job_t *job = arg;
    collect_mode_t mode = job->settings->until_done ? COLLECT_UNTIL_DONE
                          : job->settings->follow   ? COLLECT_FOLLOW
                                                    : COLLECT_AVAILABLE;
    job->rc = collect_run(job->settings, job->sink, mode, &job->stop, NULL, &job->progress, job->err,
                          sizeof job->err);
}

/* A signal ends the collection after the batch in hand. */
static void collect_on_wake(void *arg, int sig)
{
    collect_job_t *job = arg;
    if (!sig) return;
    LOG(LL_INFO, "signal: finishing the current batch");
    atomic_store(&job->stop, true);
}

int cmd_collect(settings_t *s)
{
    collect_job_t job = {.settings = s};
    atomic_init(&job.stop, false);
    if (s->until_done) { /* a queue that does not exist would never be done: say so now instead of waiting */
        rconn_t *c = cmd_connect(s);
        int exists = c ? cmd_queue_exists(c, s, false) : -1;
        rconn_free(c);
        if (exists <= 0) return exists < 0 ? EXIT_RUNTIME : EXIT_NO_QUEUE;
    }
    job.sink = sink_open(s->out, s->rotate_lines, true, job.err, sizeof job.err);
    if (!job.sink) {
        LOG(LL_ERROR, "%s", job.err);
        return EXIT_RUNTIME;
    }
    if (s->until_done) job.progress.tally = tally_new(); /* after the last early return: freed below */
    if (cmd_run_job(collect_job, collect_on_wake, &job, job.err, sizeof job.err)) job.rc = -1;
    if (job.rc == 0)
        LOG(LL_INFO, "collect: %lld results written to %s (queue %s: %lld of %lld enqueued collected)",
            job.progress.written, sink_where(job.sink), s->queue, job.progress.collected, job.progress.enqueued);
    int failed = job.rc == 0 && s->until_done ? cmd_report_failed(s, &job.progress, "collect", true) : 0;
    tally_free(job.progress.tally);
    int closed = sink_close(job.sink);
    if (job.rc) {
        LOG(LL_ERROR, "%s", job.err);
        return EXIT_RUNTIME;
    }
    if (closed) {
        LOG(LL_ERROR, "cannot finish writing results");
        return EXIT_RUNTIME;
    }
    if (s->last_only) {
        long long kept, dropped;
        if (lastonly_rewrite(s->out, &kept, &dropped, job.err, sizeof job.err)) {
            LOG(LL_ERROR, "%s", job.err);
            return EXIT_RUNTIME;
        }
        LOG(LL_INFO, "collect --last-only: %lld lines kept in %s, %lld earlier lines of the same ids dropped", kept,
            s->out, dropped);
    }
    return failed;
}
