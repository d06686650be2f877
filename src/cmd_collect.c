/* cmd_collect: `chunkd collect`: the results stream to JSON Lines. */
#include <pthread.h>
#include <stdatomic.h>

#include "cmd.h"
#include "collect.h"
#include "log.h"
#include "sig.h"
#include "sink.h"

typedef struct collect_job {
    settings_t *settings;
    sink_t *sink;
    atomic_bool stop;
    atomic_bool done;
    collect_progress_t progress;
    int rc;
    char err[1024];
} collect_job_t;

static void *collect_main(void *arg)
{
    collect_job_t *job = arg;
    collect_mode_t mode = job->settings->until_done ? COLLECT_UNTIL_DONE
                          : job->settings->follow   ? COLLECT_FOLLOW
                                                    : COLLECT_AVAILABLE;
    job->rc = collect_run(job->settings, job->sink, mode, &job->stop, NULL, &job->progress, job->err,
                          sizeof job->err);
    atomic_store(&job->done, true);
    sig_wake();
    return NULL;
}

int cmd_collect(settings_t *s)
{
    collect_job_t job = {.settings = s};
    atomic_init(&job.stop, false);
    atomic_init(&job.done, false);
    job.sink = sink_open(s->out, s->rotate_lines, true, job.err, sizeof job.err);
    if (!job.sink) {
        LOG(LL_ERROR, "%s", job.err);
        return EXIT_RUNTIME;
    }
    pthread_t t;
    pthread_create(&t, NULL, collect_main, &job);
    while (!atomic_load(&job.done)) {
        if (sig_wait(100)) {
            LOG(LL_INFO, "signal: finishing the current batch");
            atomic_store(&job.stop, true);
        }
    }
    pthread_join(t, NULL);
    if (job.rc == 0)
        LOG(LL_INFO, "collect: %lld results written to %s (queue %s: %lld of %lld enqueued collected)",
            job.progress.written, sink_where(job.sink), s->queue, job.progress.collected, job.progress.enqueued);
    if (job.rc == 0) cmd_report_failed(s, &job.progress);
    int closed = sink_close(job.sink);
    if (job.rc) {
        LOG(LL_ERROR, "%s", job.err);
        return EXIT_RUNTIME;
    }
    if (closed) {
        LOG(LL_ERROR, "cannot finish writing results");
        return EXIT_RUNTIME;
    }
    return 0;
}
