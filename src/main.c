/* chunkd: run a slow operation millions of times.
 *
 * main() only wires things together: it reads the subcommand, parses settings (flags over environment over
 * defaults), takes signals into the main thread, and hands over to cmd_<name>(). The data flow lives in the
 * modules: enqueue -> Redis list -> fetch -> loop (handler) -> commit -> Redis stream -> collect. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "children.h"
#include "cmd.h"
#include "keeper.h"
#include "log.h"
#include "rconn.h"
#include "redis_url.h"
#include "settings.h"
#include "sig.h"

#define MAIN_MMAP_THRESHOLD (64 * 1024) /* bytes: larger blocks get their own mapping (mallopt) */


extern char **environ;

/* The subcommands: this one table drives dispatch, the settings each one accepts (its bit: a setting belongs to the
 * subcommands whose bits its row in settings.c names), `chunkd --help` and `chunkd COMMAND --help`. A new subcommand
 * is a row here, its bit in settings.h and its cmd_<name>() in cmd.h (the compiler asks for both). */
typedef struct command {
    const char *name;
    int bit;                   /* CMD_* */
    int (*run)(settings_t *s); /* cmd_<name>(): the process's exit status */
    const char *usage;         /* what follows "chunkd <name>" */
    const char *summary;       /* the --help paragraph */
} command_t;

static const command_t commands[] = {
    {.name = "run", .bit = CMD_RUN, .run = cmd_run, .usage = "[options] [FILE|-]",
     .summary = "Run a whole job on this machine: read JSON Lines, write one result line per item. Uses REDIS_URL "
                "when set,\notherwise a private redis-server on a unix socket."},
    {.name = "enqueue", .bit = CMD_ENQUEUE, .run = cmd_enqueue, .usage = "[options] [FILE|-]",
     .summary = "Read JSON Lines and push them as chunks onto the pending list."},
    {.name = "worker", .bit = CMD_WORKER, .run = cmd_worker, .usage = "[options]",
     .summary = "Take chunks from the pending list, run their items, commit results to the stream. SIGTERM drains."},
    {.name = "collect", .bit = CMD_COLLECT, .run = cmd_collect, .usage = "[options]",
     .summary = "Write results from the stream as JSON Lines (stdout, --out FILE or DIR)."},
    {.name = "status", .bit = CMD_STATUS, .run = cmd_status, .usage = "[options]",
     .summary = "Show a queue's counters."},
    {.name = "requeue", .bit = CMD_REQUEUE, .run = cmd_requeue, .usage = "[options]",
     .summary = "Move failed items from the dead list back to pending."},
    {.name = "recover", .bit = CMD_RECOVER, .run = cmd_recover, .usage = "[options]",
     .summary = "Run the reaper once: give the chunks of workers whose lease expired back to pending."},
    {.name = "queues", .bit = CMD_QUEUES, .run = cmd_queues, .usage = "[options]",
     .summary = "List every queue on the Redis server with its counts (SCAN, never KEYS)."},
    {.name = "purge", .bit = CMD_PURGE, .run = cmd_purge, .usage = "--queue Q --yes",
     .summary = "Drop a queue's pending chunks; results, dead items and counters stay."},
    {.name = "delete", .bit = CMD_DELETE, .run = cmd_delete, .usage = "--queue Q --yes [--force]",
     .summary = "Remove every key of a queue; refused while workers are registered unless --force."},
    {.name = "pause", .bit = CMD_PAUSE, .run = cmd_pause, .usage = "--queue Q",
     .summary = "Workers take no new chunk from the queue (they finish what they hold); /readyz says paused."},
    {.name = "resume", .bit = CMD_RESUME, .run = cmd_resume, .usage = "--queue Q",
     .summary = "Undo pause: workers take chunks again."},
    {.name = "seal", .bit = CMD_SEAL, .run = cmd_seal, .usage = "--queue Q",
     .summary = "Declare a queue's input complete (enqueue does this when its input ends, unless --no-seal):\n"
                "workers with --exit-when-empty and collect --until-done end once it is done."},
    {.name = "dead", .bit = CMD_DEAD, .run = cmd_dead, .usage = "[options]",
     .summary = "List the failed items waiting in the dead list, with their reasons (--json: as stored)."},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: chunkd COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s %s\n", commands[i].name, commands[i].name, commands[i].usage);
    fprintf(f, "\n'chunkd COMMAND --help' lists a command's settings. Every flag --foo-bar is also CHUNKD_FOO_BAR.\n");
}

/* Thousands of calls in flight need as many sockets: raise the soft descriptor limit to the hard one, and warn
 * when even that is too low for --concurrency. */
static void raise_fd_limit(const settings_t *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (strcmp(s->handler, "http") == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)s->concurrency + 64 > rl.rlim_cur)
        LOG(LL_WARN, "--concurrency %lld needs about as many sockets, but the open file limit is %llu: calls "
                     "beyond it will fail to connect (raise the hard limit, e.g. ulimit -Hn)",
            s->concurrency, (unsigned long long)rl.rlim_cur);
}

/* A process started with stdin, stdout or stderr closed (`<&- 2>&-`) would hand the lowest free descriptor to
 * the first socket it opens: log lines written to "stderr" would then go into a Redis connection. Opens
 * /dev/null on each of 0, 1 and 2 that is closed, in that order (open() returns the lowest free descriptor).
 * Returns a bit per descriptor that was closed (1 << fd), or -1 when /dev/null cannot be opened. */
static int std_fds_open(void)
{
    int closed = 0;
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        int null_fd = open("/dev/null", O_RDWR);
        if (null_fd != fd) { /* no /dev/null (or a lower descriptor was free after all, which cannot happen) */
            if (null_fd >= 0) close(null_fd);
            return -1;
        }
        closed |= 1 << fd;
    }
    return closed;
}

/* rediss://: checks that each TLS file given can be read (naming its flag), then sets rconn's process-wide TLS
 * settings; before any thread starts. Nothing to do for another address (the flags then only draw a warning).
 * Returns 0, or -1 with err. */
static int redis_tls_init(const settings_t *s, char *err, size_t errlen)
{
    redis_url_t url;
    char uerr[256];
    bool tls = s->redis_url && redis_url_parse(s->redis_url, &url, uerr, sizeof uerr) == 0 && url.tls;
    bool flags = s->redis_ca_file || s->redis_cert_file || s->redis_tls_insecure;
    if (!tls) {
        if (flags) LOG(LL_WARN, "the Redis address is not rediss://: --redis-ca-file, --redis-cert-file, "
                                "--redis-key-file and --redis-tls-insecure are ignored");
        return 0;
    }
    const struct { const char *flag, *path; } files[] = {
        {"--redis-ca-file", s->redis_ca_file}, {"--redis-cert-file", s->redis_cert_file},
        {"--redis-key-file", s->redis_key_file}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FILE *f = files[i].path ? fopen(files[i].path, "r") : NULL;
        if (files[i].path && !f) {
            snprintf(err, errlen, "cannot read %s %s: %s", files[i].flag, files[i].path, strerror(errno));
            return -1;
        }
        if (f) fclose(f);
    }
    rtls_opts_t opts = {.ca_file = s->redis_ca_file, .cert_file = s->redis_cert_file, .key_file = s->redis_key_file,
                        .insecure = s->redis_tls_insecure};
    if (rconn_tls_init(&opts, uerr, sizeof uerr)) {
        snprintf(err, errlen, "Redis TLS settings: %s", uerr);
        return -1;
    }
    if (s->redis_tls_insecure)
        LOG(LL_WARN, "--redis-tls-insecure: the Redis server's certificate and name are not verified; the traffic is "
                     "encrypted, but anyone on the path can pose as the server");
    return 0;
}

int main(int argc, char **argv)
{
    /* The exec handler runs each subprocess under chunkd itself as its keeper (keeper.h), before anything else. */
    if (argc > 0 && strcmp(argv[0], KEEPER_ARGV0) == 0) return keeper_main(argc - 1, argv + 1);
    /* Processes of the same user (an exec subprocess, whatever it starts) can no longer read this one's memory,
     * environment or descriptors under /proc/<pid>, nor ptrace it; no core dump holds its secrets either. A
     * keeper is a new exec, dumpable again, and holds nothing its subprocess does not already have. */
    prctl(PR_SET_DUMPABLE, 0);
    int closed_fds = std_fds_open();
    if (closed_fds < 0) return EXIT_RUNTIME; /* nowhere safe to say why */
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("chunkd %s\n", CHUNKD_VERSION);
        return 0;
    }
    const command_t *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "chunkd: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return EXIT_USAGE;
    }
    int bit = cmd->bit;
    settings_t s;
    char err[1024];
    settings_rc_t prc = settings_parse(&s, bit, argc - 1, argv + 1, environ, err, sizeof err);
    if (prc == SETTINGS_HELP) {
        settings_help(bit, cmd->name, cmd->usage, cmd->summary);
        settings_free(&s);
        return 0;
    }
    if (prc == SETTINGS_ERROR) {
        fprintf(stderr, "chunkd %s: %s\n", cmd->name, err);
        settings_free(&s);
        return EXIT_USAGE;
    }
    settings_env_scrub(); /* before any thread, and before anything is started */
    settings_apply_log(&s);
    if ((closed_fds & (1 << STDOUT_FILENO)) && !s.out && (bit & (CMD_COLLECT | CMD_RUN))) {
        /* Results written to /dev/null would be acknowledged and deleted from the stream: lost. */
        fprintf(stderr, "chunkd %s: stdout is closed, so results have nowhere to go: give --out FILE\n", cmd->name);
        settings_free(&s);
        return EXIT_USAGE;
    }
    if (!s.redis_url && bit != CMD_RUN) {
        fprintf(stderr, "chunkd %s: no Redis address: set --redis or REDIS_URL\n", cmd->name);
        settings_free(&s);
        return EXIT_USAGE;
    }
    /* Blocks of 64 KiB and more (a large chunk's texts and result lines, Redis replies) are mapped and unmapped
     * whole, so RSS follows what is held: by default glibc raises this threshold up to 32 MiB after the first
     * large free, and later large blocks freed by one thread stay resident in its arena while another thread's
     * arena grows. */
    mallopt(M_MMAP_THRESHOLD, MAIN_MMAP_THRESHOLD);
    sig_init();
    raise_fd_limit(&s);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { /* before any thread */
        fprintf(stderr, "chunkd: cannot initialize libcurl\n");
        settings_free(&s);
        return EXIT_RUNTIME;
    }
    if (redis_tls_init(&s, err, sizeof err)) { /* before any thread */
        fprintf(stderr, "chunkd %s: %s\n", cmd->name, err);
        settings_free(&s);
        curl_global_cleanup();
        return EXIT_USAGE;
    }
    /* Before any other thread: the reaper takes SIGCHLD, blocked from here on in every thread. */
    if (children_start(err, sizeof err))
        LOG(LL_WARN, "%s; exited children that chunkd did not start stay zombies", err);
    if (bit != CMD_WORKER) settings_log_effective(&s, bit, LL_DEBUG); /* worker logs it once connected */
    cmd_cluster_key(&s); /* before any thread: each connection to a Redis Cluster goes to this queue's node */
    int rc = cmd->run(&s);
    children_stop();
    rconn_tls_cleanup();
    settings_free(&s);
    curl_global_cleanup();
    return rc;
}
