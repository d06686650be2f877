/* cmd_worker: `chunkd worker`: run the pipeline until SIGTERM/SIGINT (or, with --exit-when-empty, until the
 * queue is empty), then drain. A second signal exits at once. */
#include <signal.h>
#include <unistd.h>

#include "cmd.h"
#include "log.h"
#include "metrics.h"
#include "sig.h"
#include "worker.h"

typedef struct drain_job {
    worker_t *worker;
    int rc;
} drain_job_t;

static void drain_job(void *arg)
{
    drain_job_t *job = arg;
    job->rc = worker_drain(job->worker);
}

static void drain_on_wake(void *arg, int sig)
{
    (void)arg;
    if (!sig) return;
    LOG(LL_WARN, "second signal: exiting now; unsettled chunks stay in this worker's processing list");
    _exit(EXIT_RUNTIME);
}

int cmd_drain_worker(worker_t *w)
{
    worker_begin_drain(w);
    drain_job_t job = {.worker = w};
    char err[128];
    if (cmd_run_job(drain_job, drain_on_wake, &job, err, sizeof err)) {
        LOG(LL_WARN, "%s: draining on the main thread, where a second signal waits for the drain", err);
        drain_job(&job);
    }
    return job.rc;
}

int cmd_worker(settings_t *s)
{
    metrics_init(s->queue, CHUNKD_VERSION);
    worker_t *w = worker_new(s);
    char err[1024];
    int started = worker_start(w, err, sizeof err);
    if (started == WORKER_STOPPED) {
        LOG(LL_INFO, "%s", err);
        worker_free(w);
        return 0;
    }
    if (started) {
        LOG(LL_ERROR, "%s", err);
        worker_abort(w);
        worker_free(w);
        return started == WORKER_BAD_SETTINGS ? EXIT_USAGE : EXIT_RUNTIME;
    }
    settings_log_effective(s, CMD_WORKER, LL_INFO);
    bool denied = false;
    for (;;) {
        int sig = sig_wait(100);
        if (sig) {
            LOG(LL_INFO, "%s: draining (a second signal exits at once)", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (s->exit_when_empty && worker_idle(w)) {
            LOG(LL_INFO, "queue %s is empty and nothing is in flight; exiting", s->queue);
            break;
        }
        char why[300];
        if ((denied = worker_denied(why, sizeof why))) {
            LOG(LL_ERROR, "stopping: Redis refuses this worker's user a command or key it needs for queue %s (%s); "
                          "give it the worker's rights of deploy/redis/chunkd.acl", s->queue, why);
            break;
        }
    }
    int rc = cmd_drain_worker(w);
    worker_free(w);
    return rc || denied ? EXIT_RUNTIME : 0;
}
