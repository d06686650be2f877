/* delayproxy: a TCP proxy that delays each direction by half of a round trip, for the Redis-latency bench case
 * (issue 19: Redis in another zone).
 *
 *   delayproxy LISTEN_PORT TARGET_HOST TARGET_PORT RTT_MS
 *
 * Listens on 127.0.0.1:LISTEN_PORT; each connection gets its own connection to the target. Bytes read from one side
 * are written to the other RTT_MS/2 milliseconds later, in order, so a request/reply exchange takes RTT_MS more
 * than direct (pipelined traffic is delayed, not serialised: the proxy keeps reading while data waits). One
 * thread, epoll; per direction at most DP_MAX_QUEUED bytes wait (reading from that side stops meanwhile). A side
 * that closes is closed on the other after everything it sent has been delivered. Bench tooling, not shipped. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DP_READ_BYTES 65536
#define DP_MAX_QUEUED (64L << 20)
#define DP_MAX_PAIRS 4096

typedef struct seg {
    struct seg *next;
    long long due_ms;
    size_t len, off;
    char data[];
} seg_t;

/* One direction: bytes read from `from`, written to `to` when due. */
typedef struct dir {
    int from, to;
    seg_t *head, *tail;
    long queued;
    int eof;      /* `from` said EOF: shut `to` down once head is empty */
    int shut;     /* done: `to` shut down for writing */
} dir_t;

typedef struct pair {
    dir_t d[2]; /* d[0]: client -> target, d[1]: target -> client */
    int fds[2];
    int used;
} pair_t;

static pair_t pairs[DP_MAX_PAIRS];
static int pairs_top; /* pairs[pairs_top..] were never used */
static long long half_ms;
static int ep;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* epoll data: pair index * 2 + side (0 client, 1 target); the listener is -1. */
static void watch(pair_t *p, int side)
{
    int idx = (int)(p - pairs);
    dir_t *in = &p->d[side], *out = &p->d[!side]; /* side reads into d[side], writes d[!side]'s data */
    struct epoll_event ev = {0};
    ev.data.u64 = (uint64_t)(idx * 2 + side);
    if (!in->eof && in->queued < DP_MAX_QUEUED) ev.events |= EPOLLIN;
    if (out->head && out->head->due_ms <= now_ms()) ev.events |= EPOLLOUT;
    epoll_ctl(ep, EPOLL_CTL_MOD, p->fds[side], &ev);
}

static void pair_close(pair_t *p)
{
    for (int i = 0; i < 2; i++) {
        for (seg_t *s = p->d[i].head, *n; s; s = n) {
            n = s->next;
            free(s);
        }
        close(p->fds[i]);
    }
    memset(p, 0, sizeof *p);
}

/* Writes what is due on d; returns -1 when the pair must close. */
static int flush(dir_t *d)
{
    long long now = now_ms();
    while (d->head && d->head->due_ms <= now) {
        seg_t *s = d->head;
        ssize_t w = write(d->to, s->data + s->off, s->len - s->off);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        if (w <= 0) return -1;
        s->off += (size_t)w;
        if (s->off < s->len) return 0;
        d->queued -= (long)s->len;
        d->head = s->next;
        if (!d->head) d->tail = NULL;
        free(s);
    }
    if (!d->head && d->eof && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

static int fill(dir_t *d)
{
    seg_t *s = malloc(sizeof *s + DP_READ_BYTES);
    if (!s) return -1;
    ssize_t r = read(d->from, s->data, DP_READ_BYTES);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        free(s);
        return 0;
    }
    if (r <= 0) {
        free(s);
        d->eof = 1;
        return 0;
    }
    s->next = NULL;
    s->len = (size_t)r;
    s->off = 0;
    s->due_ms = now_ms() + half_ms;
    if (d->tail) d->tail->next = s;
    else d->head = s;
    d->tail = s;
    d->queued += (long)r;
    return 0;
}

static void accept_one(int lfd, const struct sockaddr_in *target)
{
    int c = accept(lfd, NULL, NULL);
    if (c < 0) return;
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int idx = 0;
    while (idx < DP_MAX_PAIRS && pairs[idx].used) idx++;
    if (t < 0 || idx == DP_MAX_PAIRS || connect(t, (const struct sockaddr *)target, sizeof *target)) {
        close(c);
        if (t >= 0) close(t);
        return;
    }
    nonblock(c);
    nonblock(t);
    pair_t *p = &pairs[idx];
    if (idx >= pairs_top) pairs_top = idx + 1;
    p->used = 1;
    p->fds[0] = c;
    p->fds[1] = t;
    p->d[0] = (dir_t){.from = c, .to = t};
    p->d[1] = (dir_t){.from = t, .to = c};
    for (int side = 0; side < 2; side++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(idx * 2 + side)};
        epoll_ctl(ep, EPOLL_CTL_ADD, p->fds[side], &ev);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: delayproxy LISTEN_PORT TARGET_HOST TARGET_PORT RTT_MS\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    half_ms = atoll(argv[4]) / 2;
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    struct sockaddr_in listen_at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
        fprintf(stderr, "delayproxy: TARGET_HOST must be an IPv4 address: %s\n", argv[2]);
        return 2;
    }
    inet_pton(AF_INET, "127.0.0.1", &listen_at.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&listen_at, sizeof listen_at) || listen(lfd, 512)) {
        perror("delayproxy: listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    for (;;) {
        /* Sleep until the earliest segment is due (or 1 s). */
        long long now = now_ms(), wake = now + 1000;
        for (int i = 0; i < pairs_top; i++)
            for (int k = 0; pairs[i].used && k < 2; k++)
                if (pairs[i].d[k].head && pairs[i].d[k].head->due_ms < wake) wake = pairs[i].d[k].head->due_ms;
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, (int)(wake > now ? wake - now : 0));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == UINT64_MAX) {
                accept_one(lfd, &target);
                continue;
            }
            pair_t *p = &pairs[evs[i].data.u64 / 2];
            int side = (int)(evs[i].data.u64 % 2);
            if (!p->used) continue;
            if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && fill(&p->d[side])) pair_close(p);
        }
        for (int i = 0; i < pairs_top; i++) {
            pair_t *p = &pairs[i];
            if (!p->used) continue;
            if (flush(&p->d[0]) || flush(&p->d[1]) || (p->d[0].shut && p->d[1].shut)) {
                pair_close(p);
                continue;
            }
            watch(p, 0);
            watch(p, 1);
        }
    }
}
