/* Unit tests of cmd_run_job(): a job on a thread of its own while the main thread takes the signals. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmd.h"
#include "sig.h"

typedef struct probe {
    atomic_bool stop;      /* set by on_wake on a signal; the job waits for it */
    atomic_int job_runs;
    bool wait_for_stop;    /* the job runs until stop */
    int job_ms;            /* or this long */
    int signals;           /* main thread only: signals on_wake saw */
    int last_signal;
    int ticks;             /* on_wake calls without a signal */
} probe_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void job(void *arg)
{
    probe_t *p = arg;
    atomic_fetch_add(&p->job_runs, 1);
    if (p->wait_for_stop) {
        kill(getpid(), SIGTERM); /* as `kill` from outside would: blocked here, taken by the main thread */
        while (!atomic_load(&p->stop)) sleep_ms(5);
    } else {
        sleep_ms(p->job_ms);
    }
}

static void on_wake(void *arg, int sig)
{
    probe_t *p = arg;
    if (!sig) {
        p->ticks++;
        return;
    }
    p->signals++;
    p->last_signal = sig;
    atomic_store(&p->stop, true);
}

static void test_job_runs_once_and_is_joined(void **state)
{
    (void)state;
    probe_t p = {.job_ms = 0};
    char err[128] = "";
    assert_int_equal(cmd_run_job(job, on_wake, &p, err, sizeof err), 0);
    assert_int_equal(atomic_load(&p.job_runs), 1);
    assert_int_equal(p.signals, 0);
    assert_string_equal(err, "");
}

/* A job that takes a while: the main thread wakes about every 100 ms meanwhile (sig 0). */
static void test_ticks_while_the_job_runs(void **state)
{
    (void)state;
    probe_t p = {.job_ms = 350};
    char err[128];
    assert_int_equal(cmd_run_job(job, on_wake, &p, err, sizeof err), 0);
    assert_int_equal(atomic_load(&p.job_runs), 1);
    assert_true(p.ticks >= 1);
    assert_int_equal(p.signals, 0);
}

/* A SIGTERM reaches on_wake on the main thread, which tells the job to stop; the call returns once it has. */
static void test_signal_goes_to_on_wake(void **state)
{
    (void)state;
    probe_t p = {.wait_for_stop = true};
    atomic_init(&p.stop, false);
    char err[128];
    assert_int_equal(cmd_run_job(job, on_wake, &p, err, sizeof err), 0);
    assert_int_equal(p.signals, 1);
    assert_int_equal(p.last_signal, SIGTERM);
    assert_true(atomic_load(&p.stop));
}

int main(void)
{
    sig_init(); /* as main() does: SIGINT and SIGTERM blocked in every thread, taken by sig_wait() */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_runs_once_and_is_joined),
        cmocka_unit_test(test_ticks_while_the_job_runs),
        cmocka_unit_test(test_signal_goes_to_on_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
