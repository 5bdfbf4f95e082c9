/* chatd: the chat server's design in C -- the machine's yardstick.
 *
 * This is the design of baseline_epoll.py in C: one epoll loop, non-blocking sockets, a
 * per-connection input buffer cut into frames, rooms as member arrays, one encoded frame per
 * broadcast, each member's output flushed with ONE send() per member per epoll pass, and
 * EPOLLOUT asked for only while output remains. Two differences, both the plain C way: the
 * frame is copied into each member's output buffer (no list of references to gather with
 * sendmsg()), and each message is delivered on its own (no runs). It
 * speaks the same subset of chatlab's protocol: a member joins a room by its first frame
 * for it ("* you entered room N; here: A, B" to the joiner, "* NAME entered room N." to
 * the others), and a non-empty body goes to every other member as "<RID:N><NAME> body".
 * No commands, no nicknames: it is a yardstick, not a server.
 *
 * Why it exists: chatlab and the Python baselines spend most of their time in the
 * interpreter, not in the kernel. Run with the same design and the same load, chatd shows
 * what this machine's kernel and loopback cost per delivery; the distance between it and
 * the Python servers is the price of the language, not of the design.
 *
 * Design notes:
 *  1. Connections are looked up by fd in a table, again for every event: a handler may
 *     drop a connection, and accept() may give its fd to a newcomer in the same batch
 *     (libuv's lesson). A stale event on a reused fd costs one recv() that says EAGAIN.
 *  2. Writes are deferred: a message appends to the member's output and marks it dirty;
 *     after the batch, each dirty member gets one send() of everything queued for it.
 *  3. One way out: EOF, errors and limits all go through drop(), which leaves every room
 *     and closes. A member that must go in the middle of a broadcast (its output passed
 *     MAX_OUTPUT) is only marked, and dropped at flush time: never while we iterate over
 *     the member array it is in.
 *
 *     chatd [--host 127.0.0.1] [--port 0] [--drop-every N] [--duplicate-every N]
 *           [--misroute-every N]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* The limits of chatlab's server, for the same reasons: a frame that never ends must not
 * grow its buffer without bound (framing.MAX_FRAME_SIZE), and a member that stops reading
 * must not make the server keep its messages forever (server.MAX_OUTPUT_BUFFER, the SendQ). */
#define MAX_FRAME (64 * 1024)
#define MAX_OUTPUT (1024 * 1024)
#define MAX_ROOM_DIGITS 9 /* as framing.MAX_ROOM_DIGITS: a room id fits an int32 */
#define READ_SIZE 65536   /* one recv() per readiness event, as the Python servers do */

typedef struct { char *p; size_t len, cap; } buf_t;

typedef struct {
    int fd;
    bool dirty, writing, doomed; /* doomed: past MAX_OUTPUT, dropped at the next flush */
    char name[32];               /* "127.0.0.1:port" */
    buf_t in, out;
    long *rooms; /* the rooms joined, for the join check and for drop() */
    size_t nrooms, caprooms;
} conn_t;

typedef struct { long id; bool used; int *m; size_t n, cap; } room_t; /* m: member fds */

static conn_t **conns; /* by fd */
static size_t nconns;
static room_t *rooms; /* open addressing, a power of two, at most half full */
static size_t rooms_cap, rooms_used;
static int *dirty;    /* fds marked during this pass */
static size_t ndirty, capdirty;
static int ep;
static buf_t scratch, scratch2; /* frames built once per broadcast */
static unsigned long copies;    /* deliveries so far, for the deliberate faults */
static unsigned long drop_every, duplicate_every, misroute_every;
static volatile sig_atomic_t running = 1;

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) { perror("chatd: realloc"); exit(1); }
    return p;
}

/* Room for element n of an array of *cap elements, doubling: appends cost O(1) amortised. */
static void *grow(void *p, size_t n, size_t *cap, size_t size) {
    if (n < *cap) return p;
    *cap = *cap ? 2 * *cap : 8;
    return xrealloc(p, *cap * size);
}

static void buf_append(buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = b->len + n > 2 * b->cap ? b->len + n : 2 * b->cap;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_consume(buf_t *b, size_t n) { /* like Python's del buf[:n] */
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_printf_frame(buf_t *b, long room, const char *head, const char *body, size_t n) {
    char tag[40];
    int k = snprintf(tag, sizeof tag, "<RID:%ld>", room);
    buf_append(b, tag, (size_t)k);
    buf_append(b, head, strlen(head));
    buf_append(b, body, n);
    k = snprintf(tag, sizeof tag, "</RID:%ld>", room);
    buf_append(b, tag, (size_t)k);
}

/* ------------------------------------------------------------------------ rooms */

static room_t *room_slot(long id) { /* where id is, or the free slot where it would go */
    size_t i = ((uint64_t)id * 11400714819323198485ull >> 32) & (rooms_cap - 1);
    while (rooms[i].used && rooms[i].id != id) i = (i + 1) & (rooms_cap - 1);
    return &rooms[i];
}

static room_t *room_get(long id) { /* find or create; rooms are never removed */
    room_t *r = rooms_cap ? room_slot(id) : NULL;
    if (r && r->used) return r;
    if (2 * (rooms_used + 1) > rooms_cap) { /* grow: every room moves to its new slot */
        room_t *old = rooms;
        size_t oldcap = rooms_cap;
        rooms_cap = oldcap ? 2 * oldcap : 64;
        rooms = calloc(rooms_cap, sizeof *rooms);
        if (!rooms) { perror("chatd: calloc"); exit(1); }
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].used) *room_slot(old[i].id) = old[i];
        free(old);
    }
    r = room_slot(id);
    *r = (room_t){.id = id, .used = true};
    rooms_used++;
    return r;
}

/* ------------------------------------------------------------------- one way out */

static void drop(int fd) {
    conn_t *c = (size_t)fd < nconns ? conns[fd] : NULL;
    if (!c) return; /* dropped already: safe to call twice */
    for (size_t i = 0; i < c->nrooms; i++) {
        room_t *r = room_get(c->rooms[i]);
        for (size_t j = 0; j < r->n; j++)
            if (r->m[j] == fd) { /* keep join order: "here: A, B" lists members in it */
                memmove(r->m + j, r->m + j + 1, (r->n - j - 1) * sizeof *r->m);
                r->n--;
                break;
            }
    }
    close(fd); /* also removes it from the epoll set */
    conns[fd] = NULL;
    free(c->in.p); free(c->out.p); free(c->rooms); free(c);
}

/* ---------------------------------------------------------------------- delivery */

static void mark_dirty(conn_t *c) {
    if (c->dirty) return;
    c->dirty = true;
    dirty = grow(dirty, ndirty, &capdirty, sizeof *dirty);
    dirty[ndirty++] = c->fd;
}

static void deliver(conn_t *c, const buf_t *frame) {
    if (c->doomed) return;
    if (c->out.len + frame->len > MAX_OUTPUT) {
        fprintf(stderr, "chatd: dropping %s: more than %d bytes queued (SendQ)\n", c->name,
                MAX_OUTPUT);
        c->doomed = true;
    } else {
        buf_append(&c->out, frame->p, frame->len);
    }
    mark_dirty(c);
}

static void on_frame(conn_t *c, long id, const char *body, size_t n) {
    room_t *r = room_get(id);
    bool joined = false;
    for (size_t i = 0; i < c->nrooms && !joined; i++) joined = c->rooms[i] == id;
    if (!joined) {
        c->rooms = grow(c->rooms, c->nrooms, &c->caprooms, sizeof *c->rooms);
        c->rooms[c->nrooms++] = id;
        buf_t *here = &scratch2;
        here->len = 0;
        for (size_t i = 0; i < r->n; i++) {
            if (i) buf_append(here, ", ", 2);
            buf_append(here, conns[r->m[i]]->name, strlen(conns[r->m[i]]->name));
        }
        if (!r->n) buf_append(here, "nobody else yet", 15);
        char text[96];
        int k = snprintf(text, sizeof text, "* %s entered room %ld.", c->name, id);
        scratch.len = 0;
        buf_printf_frame(&scratch, id, "", text, (size_t)k);
        for (size_t i = 0; i < r->n; i++) deliver(conns[r->m[i]], &scratch);
        r->m = grow(r->m, r->n, &r->cap, sizeof *r->m);
        r->m[r->n++] = c->fd;
        k = snprintf(text, sizeof text, "* you entered room %ld; here: ", id);
        scratch.len = 0;
        buf_printf_frame(&scratch, id, text, here->p, here->len);
        deliver(c, &scratch);
    }
    if (!n) return;
    /* Discussion: the frame is encoded once per broadcast and then copied into each
     * member's output: a memcpy per member, where formatting per member would cost a
     * snprintf each. The Python servers do the same with one bytes object. */
    char head[40];
    snprintf(head, sizeof head, "<%s> ", c->name);
    scratch.len = 0;
    buf_printf_frame(&scratch, id, head, body, n);
    bool misrouted = false;
    for (size_t i = 0; i < r->n; i++) {
        conn_t *m = conns[r->m[i]];
        if (m == c) continue;
        copies++;
        if (drop_every && copies % drop_every == 0) continue; /* a deliberately faulty server */
        if (duplicate_every && copies % duplicate_every == 0) deliver(m, &scratch);
        if (misroute_every && copies % misroute_every == 0) { /* this copy names another room */
            if (!misrouted) {
                scratch2.len = 0;
                buf_printf_frame(&scratch2, id < 999999999 ? id + 1 : id - 1, head, body, n);
                misrouted = true;
            }
            deliver(m, &scratch2);
            continue;
        }
        deliver(m, &scratch);
    }
}

/* -------------------------------------------------------------------------- input */

/* Cut c->in into frames: "<RID:digits>" ... the first "</RID:digits>" with the same
 * digits (framing.FRAME_RE). Bytes before a "<RID:" and malformed headers are skipped.
 * Returns false if the peer must go: a frame longer than MAX_FRAME. */
static bool parse(conn_t *c) {
    char *p = c->in.p;
    size_t len = c->in.len, i = 0;
    while (i < len) {
        char *s = memmem(p + i, len - i, "<RID:", 5);
        if (!s) { /* skip the garbage, but keep a tail that may yet become "<RID:" */
            if (len - i > 4) i = len - 4;
            break;
        }
        i = (size_t)(s - p);
        size_t d = i + 5, j = d;
        while (j < len && j - d <= MAX_ROOM_DIGITS && p[j] >= '0' && p[j] <= '9') j++;
        if (j == len && j - d <= MAX_ROOM_DIGITS) break; /* header not complete yet */
        if (j == d || j - d > MAX_ROOM_DIGITS || p[j] != '>') { i++; continue; } /* garbage */
        char tag[16];
        int taglen = snprintf(tag, sizeof tag, "</RID:%.*s>", (int)(j - d), p + d);
        char *e = memmem(p + j + 1, len - j - 1, tag, (size_t)taglen);
        size_t end = e ? (size_t)(e - p) + (size_t)taglen : 0;
        if (e ? end - i > MAX_FRAME : len - i >= MAX_FRAME) {
            fprintf(stderr, "chatd: dropping %s: a frame of more than %d bytes\n", c->name,
                    MAX_FRAME);
            return false;
        }
        if (!e) break; /* wait for the rest */
        on_frame(c, strtol(p + d, NULL, 10), p + j + 1, (size_t)(e - p) - j - 1);
        i = end;
    }
    buf_consume(&c->in, i);
    return true;
}

static void on_readable(conn_t *c) {
    if (c->in.cap < c->in.len + READ_SIZE) /* parse() leaves less than MAX_FRAME behind */
        c->in.p = xrealloc(c->in.p, c->in.cap = c->in.len + READ_SIZE);
    ssize_t n = recv(c->fd, c->in.p + c->in.len, READ_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { drop(c->fd); return; } /* EOF or error: one way out */
    c->in.len += (size_t)n;
    if (!parse(c)) drop(c->fd);
}

static void on_accept(int lfd) {
    for (;;) { /* until EAGAIN: one readiness event may stand for many connections */
        struct sockaddr_in a;
        socklen_t alen = sizeof a;
        int fd = accept4(lfd, (struct sockaddr *)&a, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR) perror("chatd: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if ((size_t)fd >= nconns) {
            size_t n = (size_t)fd + 1 > 2 * nconns ? (size_t)fd + 1 : 2 * nconns;
            conns = xrealloc(conns, n * sizeof *conns);
            memset(conns + nconns, 0, (n - nconns) * sizeof *conns);
            nconns = n;
        }
        conn_t *c = calloc(1, sizeof *c);
        if (!c) { perror("chatd: calloc"); exit(1); }
        c->fd = fd;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        snprintf(c->name, sizeof c->name, "%s:%d", ip, ntohs(a.sin_port));
        conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* ------------------------------------------------------------------------- output */

/* Discussion: one send() per member per pass, not one per message. In a busy room a
 * member receives many messages in the same pass; each send() is a syscall whose fixed cost
 * dwarfs copying a few hundred bytes, so sending them together is what makes the per-pass
 * flush pay. It is the same flush as chatlab's server, baseline_epoll and the coalescing
 * asyncio baseline, so the comparison between them is fair. */
static void flush_dirty(void) {
    for (size_t k = 0; k < ndirty; k++) {
        int fd = dirty[k];
        conn_t *c = conns[fd]; /* looked up again: it may have been dropped since */
        if (!c || !c->dirty) continue;
        c->dirty = false;
        if (c->doomed) { drop(fd); continue; }
        ssize_t sent = c->out.len ? send(fd, c->out.p, c->out.len, MSG_NOSIGNAL) : 0;
        if (sent < 0 && errno != EAGAIN && errno != EINTR) { drop(fd); continue; }
        if (sent > 0) buf_consume(&c->out, (size_t)sent);
        if (!!c->out.len != c->writing) { /* write interest only while output remains */
            c->writing = c->out.len > 0;
            struct epoll_event ev = {.events = EPOLLIN | (c->writing ? EPOLLOUT : 0)};
            ev.data.fd = fd;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
    }
    ndirty = 0;
}

/* --------------------------------------------------------------------------- main */

static void on_signal(int sig) { (void)sig; running = 0; }

static int listen_on(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    int err = getaddrinfo(host, port, &hints, &ai);
    if (err) { fprintf(stderr, "chatd: %s: %s\n", host, gai_strerror(err)); exit(2); }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        fprintf(stderr, "chatd: cannot listen on %s:%s: %s\n", host, port, strerror(errno));
        exit(2);
    }
    freeaddrinfo(ai);
    return fd;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = "0";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "chatd: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--drop-every")) drop_every = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--duplicate-every")) duplicate_every = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--misroute-every")) misroute_every = strtoul(v, NULL, 10);
        else { fprintf(stderr, "chatd: unknown option %s\n", a); return 2; }
        i++;
    }
    /* No SA_RESTART: the signal interrupts epoll_wait(), and the loop sees running == 0. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = listen_on(host, port);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    fprintf(stderr, "chatd (C) on %s:%d\n", ip, ntohs(a.sin_port));
    fflush(stderr);

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, events[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (running) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("chatd: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            if (fd == lfd) { on_accept(lfd); continue; }
            conn_t *c = (size_t)fd < nconns ? conns[fd] : NULL;
            if (!c) continue;
            if (events[k].events & EPOLLOUT) mark_dirty(c);
            if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
        flush_dirty();
    }
    for (size_t fd = 0; fd < nconns; fd++) drop((int)fd);
    for (size_t i = 0; i < rooms_cap; i++) free(rooms[i].m);
    free(rooms); free(conns); free(dirty); free(scratch.p); free(scratch2.p);
    close(lfd);
    close(ep);
    return 0;
}
