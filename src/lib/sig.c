/* sig: see sig.h. */
#include "sig.h"

#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static sigset_t sig_set;

void sig_init(void)
{
    sigemptyset(&sig_set);
    sigaddset(&sig_set, SIGINT);
    sigaddset(&sig_set, SIGTERM);
    sigaddset(&sig_set, SIGUSR1); /* sig_wake() */
    pthread_sigmask(SIG_BLOCK, &sig_set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int sig_wait(int timeout_ms)
{
    struct timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000L};
    int sig = sigtimedwait(&sig_set, NULL, &ts);
    return sig > 0 && sig != SIGUSR1 ? sig : 0;
}

void sig_wake(void) { kill(getpid(), SIGUSR1); }
