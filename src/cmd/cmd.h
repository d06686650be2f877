/* cmd: the subcommands. Each cmd_<name>.c turns settings into one run of the modules and returns the process's
 * exit status: 0 success, 1 runtime error, 2 bad usage (handled in main), 3 input lines rejected, 4 items failed. */
#ifndef CHUNKD_CMD_H
#define CHUNKD_CMD_H

#include <jansson.h>

#include "rconn.h"
#include "settings.h"

#ifndef CHUNKD_VERSION
#define CHUNKD_VERSION "0.0.0" /* the Makefile passes the real one */
#endif

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_REJECTED 3
#define EXIT_FAILED 4 /* run, collect --until-done: at least one item failed (3 wins when lines were also rejected) */
#define CMD_TOP_REASONS 5 /* the summary names this many of the most common error reasons */
#define EXIT_NO_QUEUE 5 /* status, collect --until-done: the queue has no key at all (a typo?) */

int cmd_enqueue(settings_t *s);
int cmd_worker(settings_t *s);
int cmd_collect(settings_t *s);
int cmd_status(settings_t *s);
int cmd_run(settings_t *s);
int cmd_requeue(settings_t *s);
int cmd_recover(settings_t *s);
int cmd_queues(settings_t *s);
int cmd_purge(settings_t *s);
int cmd_delete(settings_t *s);
int cmd_pause(settings_t *s);
int cmd_resume(settings_t *s);
int cmd_seal(settings_t *s);

/* Whether queue Q has any of its keys (stats, results, and with lists pending and dead; enqueue always writes
 * stats): 1 yes, 0 no (logs a warning that says so, naming the queue, and `chunkd queues`), -1 on a Redis error
 * (logged). Without lists it needs only the collector's rights. */
int cmd_queue_exists(rconn_t *c, const settings_t *s, bool lists);
/* Reads queue's counters (status's fields) into a new JSON object (the caller owns it), or returns NULL with the
 * reason logged. */
json_t *cmd_status_read(rconn_t *c, const char *queue);
int cmd_dead(settings_t *s);

/* A connection for a subcommand, or NULL after logging the one-line reason (the caller exits 1). */
rconn_t *cmd_connect(const settings_t *s);
/* Tells rconn which queue this process works on (rconn_set_cluster_key), so that connections to a Redis Cluster
 * go to the node serving its slot. Called before any thread starts, and again by run once it has named its queue. */
void cmd_cluster_key(const settings_t *s);

struct collect_progress;
/* The end of collect --until-done and run: prints "<who>: N ok, N failed" and the most common error reasons of the
 * lines this collector wrote (p->tally, when set), then logs how many items of the queue failed and were not
 * requeued since, when any: those with an ok:false result and those of chunks that went to dead unread (pointing
 * at chunkd dead when dead_kept, the queue outliving the command; else at the lines). Returns
 * EXIT_FAILED when a line written failed or items of dead chunks are left (they have no line), else 0. */
int cmd_report_failed(const settings_t *s, const struct collect_progress *p, const char *who, bool dead_kept);
/* Runs job(arg) on a thread of its own while the main thread keeps taking SIGTERM and SIGINT (sig_wait): until job
 * returns, on_wake(arg, sig) runs on the main thread for each signal, and with sig 0 about every 100 ms. Returns 0
 * once job has returned and its thread is joined, or -1 with the reason in err when no thread could be started
 * (job did not run). */
int cmd_run_job(void (*job)(void *arg), void (*on_wake)(void *arg, int sig), void *arg, char *err, size_t errlen);

struct worker;
/* Drains a worker while the main thread keeps taking signals: a second signal exits at once. Returns
 * worker_drain()'s result. */
int cmd_drain_worker(struct worker *w);

#endif
