/* localredis: see localredis.h. */
#include "localredis.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "children.h"
#include "clock.h"
#include "xalloc.h"

#define LOCALREDIS_START_MS 10000

struct localredis {
    pid_t pid;
    char dir[128];
    char socket[160];
    char url[192];
};

static void localredis_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Last line of the server's log, for an error message. */
static void localredis_log_tail(const char *dir, char *out, size_t outlen)
{
    char path[192], buf[4096];
    snprintf(path, sizeof path, "%s/redis.log", dir);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    char *last = strrchr(buf, '\n');
    snprintf(out, outlen, "%s", last ? last + 1 : buf);
}

/* A private directory for the socket and the log: under $TMPDIR when the socket path fits sun_path. */
static int localredis_make_dir(localredis_t *r, char *err, size_t errlen)
{
    const char *tmp = getenv("TMPDIR");
    /* The socket path must fit sun_path (108 bytes): a longer $TMPDIR falls back to /tmp. */
    if (!tmp || !*tmp || strlen(tmp) + sizeof "/chunkd-XXXXXX/redis.sock" > 108) tmp = "/tmp";
    snprintf(r->dir, sizeof r->dir, "%s/chunkd-XXXXXX", tmp);
    if (!mkdtemp(r->dir)) {
        snprintf(err, errlen, "cannot create a temporary directory for redis-server: %s", strerror(errno));
        return -1;
    }
    snprintf(r->socket, sizeof r->socket, "%s/redis.sock", r->dir);
    snprintf(r->url, sizeof r->url, "unix://%s", r->socket);
    return 0;
}

/* In the forked child: becomes redis-server, or exits 127. logpath is made before the fork (only a few
 * async-signal-safe calls between fork and exec). */
_Noreturn static void localredis_exec_child(const localredis_t *r, const char *server_bin, const char *logpath,
                                            pid_t parent)
{
    /* A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group) or `timeout` must
     * reach chunkd only, which drains into this server and stops it last. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    char *argv[] = {(char *)server_bin, "--port", "0", "--unixsocket", (char *)r->socket, "--unixsocketperm", "700",
                    "--save", "", "--appendonly", "no", "--dir", (char *)r->dir, "--daemonize", "no", NULL};
    execvp(server_bin, argv);
    fprintf(stderr, "cannot run %s: %s\n", server_bin, strerror(errno));
    _exit(127);
}

/* Forks the server (r->pid). Returns 0 in the parent, or -1 with err. */
static int localredis_fork(localredis_t *r, const char *server_bin, char *err, size_t errlen)
{
    char logpath[192];
    snprintf(logpath, sizeof logpath, "%s/redis.log", r->dir);
    pid_t parent = getpid();
    children_spawn_begin(); /* we wait for it ourselves: the child reaper must not */
    r->pid = fork();
    if (r->pid != 0) children_spawn_end(r->pid);
    if (r->pid < 0) {
        snprintf(err, errlen, "cannot fork redis-server: %s", strerror(errno));
        return -1;
    }
    if (r->pid == 0) localredis_exec_child(r, server_bin, logpath, parent);
    setpgid(r->pid, r->pid); /* as the child does: whichever runs first */
    return 0;
}

/* True once the server answers PING on its socket. */
static bool localredis_answers(const localredis_t *r)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectUnixWithTimeout(r->socket, tv);
    bool up = false;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        up = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
    }
    if (c) redisFree(c);
    return up;
}

/* Waits up to LOCALREDIS_START_MS for the server to answer. Returns 0, or -1 with err (the server exited: with the
 * last line of its log; r->pid is then 0). */
static int localredis_wait_up(localredis_t *r, const char *server_bin, char *err, size_t errlen)
{
    int64_t deadline = clock_now_ms() + LOCALREDIS_START_MS;
    while (clock_now_ms() < deadline) {
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            children_release(r->pid);
            char tail[300];
            localredis_log_tail(r->dir, tail, sizeof tail);
            snprintf(err, errlen, "private redis-server (%s) exited at start: %s%s", server_bin,
                     tail[0] ? tail : "no output",
                     WIFEXITED(status) && WEXITSTATUS(status) == 127
                         ? " (install Debian's redis-server, or give --redis / REDIS_URL)"
                         : "");
            r->pid = 0;
            return -1;
        }
        if (localredis_answers(r)) return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    snprintf(err, errlen, "private redis-server did not answer within %d ms", LOCALREDIS_START_MS);
    return -1;
}

localredis_t *localredis_start(const char *server_bin, char *err, size_t errlen)
{
    localredis_t *r = xcalloc(1, sizeof *r);
    if (localredis_make_dir(r, err, errlen)) {
        free(r);
        return NULL;
    }
    if (localredis_fork(r, server_bin, err, errlen) || localredis_wait_up(r, server_bin, err, errlen)) {
        localredis_stop(r);
        return NULL;
    }
    return r;
}

const char *localredis_url(const localredis_t *r) { return r->url; }

bool localredis_exited(localredis_t *r, char *why, size_t whylen)
{
    int status;
    if (r->pid <= 0 || waitpid(r->pid, &status, WNOHANG) != r->pid) return r->pid <= 0;
    children_release(r->pid);
    r->pid = 0;
    if (WIFSIGNALED(status)) snprintf(why, whylen, "killed by signal %d", WTERMSIG(status));
    else snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
    return true;
}

void localredis_kill_now(localredis_t *r)
{
    if (!r) return;
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        children_release(r->pid);
        r->pid = 0;
    }
    localredis_rmdir(r->dir);
}

void localredis_stop(localredis_t *r)
{
    if (!r) return;
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        int64_t deadline = clock_now_ms() + 5000;
        int status;
        while (waitpid(r->pid, &status, WNOHANG) == 0) {
            if (clock_now_ms() > deadline) {
                kill(r->pid, SIGKILL);
                waitpid(r->pid, &status, 0);
                break;
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        children_release(r->pid);
    }
    localredis_rmdir(r->dir);
    free(r);
}
