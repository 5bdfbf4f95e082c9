/* loadgen.c: chatlab's load generator, in C so that it is never the bottleneck.
 *
 * Why C. A benchmark measures the slowest process in the loop. The Python generator
 * (chatlab/bench/fanout.py) fills its own core at about 100,000 deliveries/s, so every
 * server faster than that was measured at the generator's speed. This program does the same
 * job, with the same rules and the same result keys, for a small fraction of the CPU per
 * delivery; it measures its own CPU, so a run can show that it was not the limit.
 *
 * Modes (argv[1]); each prints one JSON object on stdout at the end, and on an error a
 * sentence on stderr and exit code 1:
 *
 *   fanout  R rooms x K clients, every client talking, at most W of its own messages in
 *           flight (closed loop); every receiver checks exactly-once, in-order, right-room
 *           delivery of every token, and the latency of each.
 *   churn   a ping-pong pair, while N connection slots connect, say hello, wait for the
 *           join reply and hang up, over and over.
 *   idle    C silent connections, then the ping-pong pair (refused on a select() server
 *           past FD_SETSIZE: reported, not an error).
 *   sink    the cheapest server fanout accepts: it relays bytes without parsing them, so a
 *           fanout run against it measures the generator's own capacity.
 *
 * Synchronisation with the Python harness (native_load.py): after set-up (connected,
 * joined), print "READY <n>", then block on stdin until a line "GO"; only then start the
 * clocks (CPU with getrusage, wall with CLOCK_MONOTONIC). EOF on stdin before GO means the
 * harness gave up: exit 0 without a word.
 *
 * Design notes, the cost model of a delivery (fanout):
 *
 * 1. One epoll loop, one thread, level-triggered. A readable socket gets ONE recv() of up
 *    to 256 KiB per wake-up: whatever the kernel holds for it (dozens of frames) comes in
 *    one system call, and if anything is left, epoll reports the socket again. (Edge-
 *    triggered, reading again only after a full 256 KiB, measured the same here: 0.25 us
 *    per delivery either way, so the simpler one stays. Most of that is the kernel copying
 *    the bytes out, which no choice of ours removes.)
 * 2. A frame cut by the end of a read is copied to a per-client carry buffer and put in
 *    front of the next read; the next read lands right behind it in one big scratch buffer.
 *    Only the partial frame (at most one) is ever copied; complete frames are parsed in
 *    place.
 * 3. Parsing is memchr() for '<' (SIMD in glibc, so the 1 KiB of padding costs a few dozen
 *    cycles), then a few byte compares. Bodies never contain "</RID:", so the first
 *    "</RID:" after a header is the frame's end, as in chatlab/framing.py.
 * 4. The exactly-once check is a dense array: last[receiver][position of sender in its room]
 *    = the last seq seen. In-flight messages are a ring of W slots per sender (send time,
 *    receipts still missing), since a sender never has more than W messages in flight.
 *    No hash table, no allocation on the hot path.
 * 5. Latencies go into a log-linear histogram (nanosecond input, 128 buckets per power of
 *    two: under 0.8% error), so memory is fixed however long the run is.
 * 6. Writes: a new message is appended to its client's out buffer; every buffer touched
 *    in a pass is sent once at the end of the pass (redis's beforeSleep, "flush once per
 *    pass"): several frames per send() when several messages completed together. EPOLLOUT
 *    is asked for only while a buffer has bytes the kernel did not take.
 * 7. The send time of a message is stamped just before the send() that carries it, so the
 *    latency is the server's and the kernel's, not our own queueing in the pass.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* One recv() takes up to this much: a busy receiver's whole backlog in one system call. */
#define RECV_CHUNK (256 * 1024)
/* A frame still incomplete after this many bytes is not one of ours: the server is broken.
 * (chatlab's own limit is 64 KiB; this leaves room for large --size experiments.) */
#define CARRY_MAX (1024 * 1024)
/* framing.py's MAX_ROOM_DIGITS: a room id fits a uint32 */
#define MAX_ROOM_DIGITS 9
/* epoll_wait() hands back at most this many events per pass */
#define MAX_EVENTS 512
/* The connect() timeout (SO_SNDTIMEO bounds a blocking connect on Linux), and set-up's. */
#define CONNECT_TIMEOUT_S 10
#define SETUP_TIMEOUT_S 30
/* A ping-pong peer that does not answer within this long is broken, not slow. */
#define REPLY_TIMEOUT_S 10
/* sink: a member that lets this much pile up without reading is dropped. */
#define SINK_OUT_LIMIT (64u * 1024 * 1024)

static const char *g_mode = "";

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen %s: ", g_mode);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL && n != 0)
        die("out of memory (%zu bytes)", n);
    return p;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The process's CPU time so far: user + system, and the system (kernel) part of it, read by
 * one getrusage() so that the part can never exceed the whole. The kernel's part is what
 * recv() and send() cost us, which no change to this program's own code can lower. */
static double cpu_seconds_sys(double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double s = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    if (sys)
        *sys = s;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + s;
}

static double cpu_seconds(void) { return cpu_seconds_sys(NULL); }

/* Milliseconds from now until deadline, for epoll_wait: rounded up, at most 1 s. */
static int ms_until(int64_t deadline, int64_t now)
{
    int64_t ms = (deadline - now + 999999) / 1000000;
    return ms < 0 ? 0 : ms > 1000 ? 1000 : (int)ms;
}

static char *put_u32(char *w, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *w++ = tmp[--n];
    return w;
}

static int starts_with(const char *p, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(p, prefix, n) == 0;
}

static int ends_with(const char *p, size_t len, const char *suffix, size_t n)
{
    return len >= n && memcmp(p + len - n, suffix, n) == 0;
}

/* ------------------------------------------------------------------------ options */

struct opts {
    const char *host, *port;
    long rooms, clients, window, size, first_room, first_id, concurrency, idle, cpu;
    double duration, drain;
};

static long opt_long(const char *name, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        die("%s must be an integer from %ld to %ld, got '%s'", name, lo, hi, v);
    return x;
}

static double opt_double(const char *name, const char *v)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= 0) || x > 86400)
        die("%s must be a number of seconds (0 to 86400), got '%s'", name, v);
    return x;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.host = "127.0.0.1", .port = NULL, .rooms = 10, .clients = 10,
                       .window = 4, .size = 1024, .first_room = 1, .first_id = 0,
                       .concurrency = 8, .idle = 0, .cpu = -1, .duration = 2.0, .drain = 10.0};
    for (int i = 0; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            die("option %s needs a value", k);
        if (!strcmp(k, "--host"))
            o->host = v;
        else if (!strcmp(k, "--port"))
            o->port = v;
        else if (!strcmp(k, "--rooms"))
            o->rooms = opt_long(k, v, 1, 100000);
        else if (!strcmp(k, "--clients"))
            o->clients = opt_long(k, v, 2, 100000);
        else if (!strcmp(k, "--window"))
            o->window = opt_long(k, v, 1, 4096);
        else if (!strcmp(k, "--size"))
            o->size = opt_long(k, v, 0, CARRY_MAX / 2);
        else if (!strcmp(k, "--first-room"))
            o->first_room = opt_long(k, v, 1, 999999999);
        else if (!strcmp(k, "--first-id"))
            o->first_id = opt_long(k, v, 0, 999999999);
        else if (!strcmp(k, "--concurrency"))
            o->concurrency = opt_long(k, v, 0, 10000);
        else if (!strcmp(k, "--idle"))
            o->idle = opt_long(k, v, 0, 1000000);
        else if (!strcmp(k, "--cpu"))
            o->cpu = opt_long(k, v, -1, CPU_SETSIZE - 1);
        else if (!strcmp(k, "--duration"))
            o->duration = opt_double(k, v);
        else if (!strcmp(k, "--drain"))
            o->drain = opt_double(k, v);
        else
            die("unknown option %s", k);
    }
    if (o->port == NULL)
        die("--port is required");
    if (o->first_room + o->rooms - 1 > 999999999)
        die("room ids past 999999999 do not fit the protocol");
}

/* ------------------------------------------------------------------ the histogram */

/* Log-linear, HDR-style: values below 256 ns have a bucket each; above, every power of two
 * is cut into 128 buckets, so a bucket is at most 1/128 of its values wide. Up to 2^36 ns
 * (68 s); larger values land in the last bucket. */
#define H_SUB_BITS 8
#define H_SUB (1u << H_SUB_BITS)
#define H_HALF (H_SUB / 2)
#define H_MAX_BITS 36
#define H_BUCKETS (H_SUB + (H_MAX_BITS - H_SUB_BITS) * H_HALF)

struct hist {
    uint64_t n;
    uint64_t count[H_BUCKETS];
};

static inline void hist_add(struct hist *h, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    size_t i;
    if (u < H_SUB) {
        i = (size_t)u;
    } else {
        int msb = 63 - __builtin_clzll(u);
        if (msb >= H_MAX_BITS) {
            i = H_BUCKETS - 1;
        } else {
            int shift = msb - (H_SUB_BITS - 1);
            i = H_SUB + (size_t)(msb - H_SUB_BITS) * H_HALF + (size_t)((u >> shift) - H_HALF);
        }
    }
    h->count[i]++;
    h->n++;
}

/* The middle of bucket i, in ns. */
static double hist_mid(size_t i)
{
    if (i < H_SUB)
        return (double)i;
    size_t octave = (i - H_SUB) / H_HALF, m = (i - H_SUB) % H_HALF + H_HALF;
    int shift = (int)octave + 1;
    return (double)((uint64_t)m << shift) + (double)(1ull << shift) / 2;
}

/* The p-th percentile in seconds by nearest rank, as _util.percentile(); NAN if empty. */
static double hist_pct(const struct hist *h, double p)
{
    if (h->n == 0)
        return NAN;
    uint64_t k = (uint64_t)llround(p / 100.0 * (double)(h->n - 1)), seen = 0;
    for (size_t i = 0; i < H_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > k)
            return hist_mid(i) / 1e9;
    }
    return hist_mid(H_BUCKETS - 1) / 1e9;
}

static void json_num(const char *key, double v, int last)
{
    if (isnan(v))
        printf("\"%s\": null%s", key, last ? "" : ", ");
    else
        printf("\"%s\": %.9g%s", key, v, last ? "" : ", ");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* ---------------------------------------------------------------------- framing */

/* The decoding rules of chatlab/framing.py, on a byte range, without copying:
 *   FRAME  a complete frame; *next is just past it
 *   NEED   the bytes from p on may still become a frame: keep them for the next read
 *   SKIP   the bytes up to *next can never be part of a frame (garbage, a broken frame) */
enum scan { FRAME, NEED, SKIP };

struct frame {
    uint32_t room;
    const char *body;
    size_t len;
};

static const char OPEN[] = "<RID:";   /* 5 bytes */
static const char CLOSE[] = "</RID:"; /* 6 bytes */

/* The first "<RID:" at or after p, or a trailing piece of one at the very end, or end. */
static const char *find_open(const char *p, const char *end)
{
    while (p < end) {
        const char *q = memchr(p, '<', (size_t)(end - p));
        if (q == NULL)
            return end;
        size_t left = (size_t)(end - q);
        if (memcmp(q, OPEN, left < 5 ? left : 5) == 0)
            return q;
        p = q + 1;
    }
    return end;
}

static enum scan next_frame(const char *p, const char *end, struct frame *f, const char **next)
{
    size_t avail = (size_t)(end - p);
    if (avail < 5) {
        if (memcmp(p, OPEN, avail) == 0)
            goto need;
        goto broken;
    }
    if (memcmp(p, OPEN, 5) != 0)
        goto broken; /* whitespace or garbage before a frame */
    const char *digits = p + 5, *d = digits;
    uint32_t room = 0;
    while (d < end && *d >= '0' && *d <= '9') {
        if (d - digits == MAX_ROOM_DIGITS)
            goto broken;
        room = room * 10 + (uint32_t)(*d - '0');
        d++;
    }
    if (d == end)
        goto need;
    if (*d != '>' || d == digits)
        goto broken;
    size_t nd = (size_t)(d - digits);
    const char *body = d + 1, *q = body;
    for (;;) { /* the first "</RID:" after the header ends the frame */
        q = memchr(q, '<', (size_t)(end - q));
        if (q == NULL)
            goto need;
        size_t left = (size_t)(end - q);
        if (left < 6) {
            if (memcmp(q, CLOSE, left) == 0)
                goto need;
        } else if (memcmp(q, CLOSE, 6) == 0) {
            break;
        }
        q++;
    }
    const char *c = q + 6;
    size_t left = (size_t)(end - c);
    if (left <= nd) {
        if (memcmp(c, digits, left) == 0)
            goto need;
        goto broken;
    }
    if (memcmp(c, digits, nd) != 0 || c[nd] != '>')
        goto broken; /* closed with another room's tag: never delivered (framing rule 4) */
    f->room = room;
    f->body = body;
    f->len = (size_t)(q - body);
    *next = c + nd + 1;
    return FRAME;
need:
    *next = p;
    return NEED;
broken:
    *next = find_open(p + 1, end);
    return SKIP;
}

/* A load message's body: "[<NAME> ]ID-SEQ xxx...". The "<NAME> " prefix is optional, so a
 * raw relay (the sink, or a server that does not name senders) passes too. */
static int parse_token(const char *b, size_t len, uint32_t *id, uint32_t *seq)
{
    const char *e = b + len;
    if (b < e && *b == '<') {
        const char *gt = memchr(b, '>', len);
        if (gt == NULL || e - gt < 2 || gt[1] != ' ')
            return 0;
        b = gt + 2;
    }
    uint64_t v = 0;
    const char *s = b;
    while (b < e && (unsigned)(*b - '0') < 10 && b - s < 10)
        v = v * 10 + (uint64_t)(*b++ - '0');
    if (b == s || b == e || *b != '-' || v > UINT32_MAX)
        return 0;
    *id = (uint32_t)v;
    s = ++b;
    v = 0;
    while (b < e && (unsigned)(*b - '0') < 10 && b - s < 10)
        v = v * 10 + (uint64_t)(*b++ - '0');
    if (b == s || b == e || *b != ' ' || v > UINT32_MAX)
        return 0;
    *seq = (uint32_t)v;
    return 1;
}

/* ------------------------------------------------------------------ out buffers */

/* Bytes waiting for the kernel: [off, len) of p. */
struct obuf {
    char *p;
    size_t off, len, cap;
};

static size_t ob_pending(const struct obuf *o) { return o->len - o->off; }

/* Room for n more bytes at the end; returns where to write them. */
static char *ob_reserve(struct obuf *o, size_t n)
{
    if (o->len + n > o->cap) {
        if (o->off) { /* reuse the space already sent before growing */
            memmove(o->p, o->p + o->off, o->len - o->off);
            o->len -= o->off;
            o->off = 0;
        }
        if (o->len + n > o->cap) {
            size_t cap = o->cap ? o->cap : 4096;
            while (cap < o->len + n)
                cap *= 2;
            o->p = xrealloc(o->p, cap);
            o->cap = cap;
        }
    }
    char *w = o->p + o->len;
    o->len += n;
    return w;
}

static void ob_append(struct obuf *o, const void *src, size_t n)
{
    memcpy(ob_reserve(o, n), src, n);
}

/* One send() of what is pending. 0: sent, or the kernel took what it could (EAGAIN or a
 * short write: retrying at once would only meet EAGAIN); -1: a connection error. */
static int ob_send(int fd, struct obuf *o)
{
    if (o->off == o->len)
        return 0;
    ssize_t n;
    do
        n = send(fd, o->p + o->off, o->len - o->off, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    o->off += (size_t)n;
    if (o->off == o->len)
        o->off = o->len = 0;
    return 0;
}

/* Ask epoll for EPOLLOUT only while there is something to write: a socket with room in its
 * send buffer is writable nearly all the time, and level-triggered epoll would report it on
 * every pass. */
static void want_write(int ep, int fd, uint64_t tag, int *writing, int want)
{
    if (*writing == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u64 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    *writing = want;
}

static void epoll_add(int ep, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl(ADD, fd %d): %s", fd, strerror(errno));
}

/* -------------------------------------------------------------------- sockets */

struct target {
    struct sockaddr_storage addr;
    socklen_t len;
    char name[300];
};

static void resolve(const struct opts *o, struct target *t)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(o->host, o->port, &hints, &res);
    if (rc != 0)
        die("cannot resolve %s port %s: %s", o->host, o->port, gai_strerror(rc));
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->len = res->ai_addrlen;
    snprintf(t->name, sizeof t->name, "%s:%s", o->host, o->port);
    freeaddrinfo(res);
}

static void set_nodelay(int fd)
{
    /* chat frames are small and latency matters: Nagle must not hold them back */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void set_timeouts(int fd, int64_t send_ms, int64_t recv_ms)
{
    struct timeval s = {.tv_sec = send_ms / 1000, .tv_usec = (send_ms % 1000) * 1000};
    struct timeval r = {.tv_sec = recv_ms / 1000, .tv_usec = (recv_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s, sizeof s);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof r);
}

/* A blocking connect, bounded by CONNECT_TIMEOUT_S (Linux applies SO_SNDTIMEO to connect);
 * the socket stays blocking with 200 ms receive timeouts, so blocking reads can check a
 * deadline. -1 with errno on failure. */
static int dial(const struct target *t)
{
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    set_timeouts(fd, CONNECT_TIMEOUT_S * 1000, 200);
    if (connect(fd, (const struct sockaddr *)&t->addr, t->len) < 0) {
        int e = errno == EINPROGRESS ? ETIMEDOUT : errno;
        close(fd);
        errno = e;
        return -1;
    }
    set_nodelay(fd);
    return fd;
}

static void set_nonblocking(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* Write all of a small frame on a blocking socket (bounded by its SO_SNDTIMEO). */
static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static size_t make_frame(char *w, uint32_t room, const char *body)
{
    char *s = w;
    memcpy(w, OPEN, 5);
    w = put_u32(w + 5, room);
    *w++ = '>';
    size_t n = strlen(body);
    memcpy(w, body, n);
    w += n;
    memcpy(w, CLOSE, 6);
    w = put_u32(w + 6, room);
    *w++ = '>';
    return (size_t)(w - s);
}

static void raise_fd_limit(long needed)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur >= needed)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max > needed ? (rlim_t)needed
                                                                              : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < needed)
        die("%ld file descriptors needed, but the hard limit is %ld (raise it: ulimit -Hn)",
            needed, (long)rl.rlim_max);
}

/* A reader for the blocking/ping-pong paths: a growable buffer of unparsed bytes. */
struct rd {
    int fd, flags;
    char *buf;
    size_t start, end, cap;
};

static void rd_init(struct rd *r, int fd, int flags)
{
    *r = (struct rd){.fd = fd, .flags = flags, .cap = 65536};
    r->buf = xrealloc(NULL, r->cap);
}

/* One recv(): >0 bytes read, 0 end of stream, -1 error (errno; EAGAIN if nothing yet). */
static ssize_t rd_fill(struct rd *r)
{
    if (r->start) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->end == r->cap) {
        if (r->cap >= CARRY_MAX) {
            errno = EMSGSIZE;
            return -1;
        }
        r->cap *= 2;
        r->buf = xrealloc(r->buf, r->cap);
    }
    ssize_t n = recv(r->fd, r->buf + r->end, r->cap - r->end, r->flags);
    if (n > 0)
        r->end += (size_t)n;
    return n;
}

/* The next complete frame already buffered; its body is valid until the next rd_fill(). */
static int rd_next(struct rd *r, struct frame *f)
{
    while (r->start < r->end) {
        const char *next;
        enum scan s = next_frame(r->buf + r->start, r->buf + r->end, f, &next);
        if (s == NEED)
            return 0;
        r->start = (size_t)(next - r->buf);
        if (s == FRAME)
            return 1;
    }
    return 0;
}

/* Block (socket with a receive timeout) until a frame: 1 a frame, 0 the server closed the
 * connection, -1 an error or the deadline passed (errno ETIMEDOUT). */
static int rd_wait(struct rd *r, struct frame *f, int64_t deadline)
{
    for (;;) {
        if (rd_next(r, f))
            return 1;
        if (now_ns() >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        ssize_t n = rd_fill(r);
        if (n == 0)
            return 0;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
    }
}

/* ---------------------------------------------------------------- READY and GO */

static void ready_and_wait_for_go(long n)
{
    printf("READY %ld\n", n);
    fflush(stdout);
    char line[64];
    size_t len = 0;
    while (len < sizeof line - 1) {
        ssize_t k = read(0, line + len, sizeof line - 1 - len);
        if (k == 0)
            exit(0); /* the harness went away before GO: nothing to measure, nothing to say */
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("reading GO on stdin: %s", strerror(errno));
        }
        len += (size_t)k;
        if (memchr(line, '\n', len))
            break;
    }
    if (len < 2 || memcmp(line, "GO", 2) != 0)
        die("expected a line GO on stdin, got '%.*s'", (int)len, line);
}

/* ====================================================================== fanout */

struct slot {
    int64_t sent_at; /* ns, stamped just before the send() that carries it */
    uint32_t left;   /* receipts still missing */
};

struct client {
    int fd, joined, dirty, writing;
    uint32_t id, room, pos; /* pos: its index among its room's K members */
    /* as a sender: seqs [acked, sent) are in flight; [stamped, sent) not yet sent() */
    uint32_t sent, acked, stamped;
    struct slot *ring;
    /* as a receiver: last seq seen from each member of its room (by pos), -1 for none */
    int64_t *last;
    struct obuf out;
    char *carry;
    size_t carry_len, carry_cap;
};

struct fanout {
    struct client *c;
    uint32_t n, k, window, mask, first_id, njoined;
    size_t size;
    int ep, sending, measuring;
    uint32_t *dirty, ndirty;
    uint64_t messages, receipts, duplicates, out_of_order, misrouted, outstanding;
    int64_t t_last;
    char *rbuf; /* carry + one recv(), shared by all clients */
    char server_said[200];
    struct hist hist;
};

static void mark_dirty(struct fanout *F, uint32_t i)
{
    if (!F->c[i].dirty) {
        F->c[i].dirty = 1;
        F->dirty[F->ndirty++] = i;
    }
}

/* Queue client c's next message: "<RID:room>ID-SEQ xxx...</RID:room>", `size` bytes in all,
 * like fanout.py's body(). */
static void emit(struct fanout *F, uint32_t i)
{
    struct client *c = &F->c[i];
    uint32_t seq = c->sent;
    char head[48], *w = head;
    memcpy(w, OPEN, 5);
    w = put_u32(w + 5, c->room);
    *w++ = '>';
    size_t open_len = (size_t)(w - head);
    w = put_u32(w, c->id);
    *w++ = '-';
    w = put_u32(w, seq);
    *w++ = ' ';
    size_t head_len = (size_t)(w - head), fixed = head_len + open_len + 1;
    size_t pad = F->size > fixed ? F->size - fixed : 0;
    char *o = ob_reserve(&c->out, head_len + pad + open_len + 1);
    memcpy(o, head, head_len);
    memset(o + head_len, 'x', pad);
    o += head_len + pad;
    memcpy(o, CLOSE, 6);
    memcpy(o + 6, head + 5, open_len - 5); /* the room digits and '>' */
    struct slot *s = &c->ring[seq & F->mask];
    s->sent_at = 0;
    s->left = F->k - 1;
    c->sent++;
    F->messages++;
    F->outstanding += F->k - 1;
    mark_dirty(F, i);
}

/* Send every buffer touched in this pass, once. */
static void flush_dirty(struct fanout *F)
{
    if (F->ndirty == 0)
        return;
    int64_t now = now_ns();
    for (uint32_t j = 0; j < F->ndirty; j++) {
        uint32_t i = F->dirty[j];
        struct client *c = &F->c[i];
        c->dirty = 0;
        for (; c->stamped != c->sent; c->stamped++)
            c->ring[c->stamped & F->mask].sent_at = now;
        if (ob_send(c->fd, &c->out) < 0)
            die("client %u: send: %s", c->id, strerror(errno));
        want_write(F->ep, c->fd, i, &c->writing, ob_pending(&c->out) > 0);
    }
    F->ndirty = 0;
}

/* One receipt of (sender id, seq) in a frame for `room`, by client r: the checks of
 * fanout.worker, and the bookkeeping of the closed loop. */
static inline void receive_token(struct fanout *F, struct client *r, uint32_t room, uint32_t id,
                                 uint32_t seq, int64_t now)
{
    uint32_t si = id - F->first_id; /* wraps to a huge value for ids below first_id */
    /* A token from nobody we know, one we never sent, or in a room it does not belong to
     * (the frame's room, the receiver's and the sender's must all agree): misrouted. */
    if (si >= F->n) {
        F->misrouted++;
        return;
    }
    struct client *s = &F->c[si];
    if (s == r || room != r->room || s->room != room || seq >= s->sent) {
        F->misrouted++;
        return;
    }
    int64_t *last = &r->last[s->pos];
    if ((int64_t)seq <= *last) {
        F->duplicates++;
        return;
    }
    if ((int64_t)seq != *last + 1)
        F->out_of_order++;
    *last = seq;
    F->receipts++;
    F->t_last = now;
    /* Below acked, every member has it already, so this receiver has too: the check above
     * caught it. The test only guards the ring against a slot reused by a later seq. */
    if (seq < s->acked)
        return;
    struct slot *sl = &s->ring[seq & F->mask];
    hist_add(&F->hist, now - sl->sent_at);
    F->outstanding--;
    if (--sl->left != 0 || seq != s->acked)
        return;
    while (s->acked < s->sent && s->ring[s->acked & F->mask].left == 0)
        s->acked++;
    while (F->sending && s->sent - s->acked < F->window)
        emit(F, si);
}

static void on_frame_setup(struct fanout *F, struct client *c, const struct frame *f)
{
    if (!c->joined && f->room == c->room && starts_with(f->body, f->len, "* you entered room ")) {
        c->joined = 1;
        F->njoined++;
    } else if (starts_with(f->body, f->len, "! ")) { /* remembered for the error message */
        snprintf(F->server_said, sizeof F->server_said, "%.*s", (int)f->len, f->body);
    }
}

static void on_readable(struct fanout *F, uint32_t i)
{
    struct client *c = &F->c[i];
    char *buf = F->rbuf;
    size_t have = c->carry_len;
    if (have)
        memcpy(buf, c->carry, have);
    ssize_t n = recv(c->fd, buf + have, RECV_CHUNK, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        const char *why = n == 0              ? "the server closed the connection"
                          : errno == ECONNRESET ? "the server reset the connection"
                                                : strerror(errno);
        if (F->server_said[0])
            die("client %u: %s (the server said: %s)", c->id, why, F->server_said);
        die("client %u: %s", c->id, why);
    }
    int64_t now = now_ns();
    const char *p = buf, *end = buf + have + (size_t)n, *next;
    struct frame f;
    while (p < end) {
        enum scan s = next_frame(p, end, &f, &next);
        if (s == NEED)
            break;
        p = next;
        if (s == SKIP)
            continue;
        uint32_t id, seq;
        if (!F->measuring)
            on_frame_setup(F, c, &f);
        else if (parse_token(f.body, f.len, &id, &seq))
            receive_token(F, c, f.room, id, seq, now);
        /* anything else is a notice: skipped, as fanout.py does */
    }
    size_t rest = (size_t)(end - p);
    if (rest > CARRY_MAX)
        die("client %u: a frame of more than %d bytes, still unfinished", c->id, CARRY_MAX);
    if (rest > c->carry_cap) {
        c->carry_cap = rest > 4096 ? rest : 4096;
        c->carry = xrealloc(c->carry, c->carry_cap);
    }
    memcpy(c->carry, p, rest);
    c->carry_len = rest;
}

/* One pass of the loop: wait up to timeout_ms, read what came, send what was queued. */
static void fanout_pass(struct fanout *F, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int nev = epoll_wait(F->ep, evs, MAX_EVENTS, timeout_ms);
    if (nev < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int e = 0; e < nev; e++) {
        uint32_t i = (uint32_t)evs[e].data.u64;
        if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(F, i);
        if (evs[e].events & EPOLLOUT)
            mark_dirty(F, i);
    }
    flush_dirty(F);
}

static int mode_fanout(const struct opts *o)
{
    struct target t;
    resolve(o, &t);
    struct fanout *F = xrealloc(NULL, sizeof *F);
    memset(F, 0, sizeof *F);
    F->n = (uint32_t)(o->rooms * o->clients);
    F->k = (uint32_t)o->clients;
    F->window = (uint32_t)o->window;
    F->size = (size_t)o->size;
    F->first_id = (uint32_t)o->first_id;
    uint32_t ring = 1;
    while (ring < F->window)
        ring <<= 1;
    F->mask = ring - 1;
    if (o->rooms * o->clients > 1000000)
        die("%ld clients is more than this generator handles", o->rooms * o->clients);
    raise_fd_limit((long)F->n + 64);
    F->c = xrealloc(NULL, sizeof *F->c * F->n);
    memset(F->c, 0, sizeof *F->c * F->n);
    F->dirty = xrealloc(NULL, sizeof *F->dirty * F->n);
    F->rbuf = xrealloc(NULL, CARRY_MAX + RECV_CHUNK);
    int64_t *last = xrealloc(NULL, sizeof *last * F->n * F->k);
    struct slot *rings = xrealloc(NULL, sizeof *rings * F->n * ring);
    memset(rings, 0, sizeof *rings * F->n * ring);
    F->ep = epoll_create1(EPOLL_CLOEXEC);
    if (F->ep < 0)
        die("epoll_create1: %s", strerror(errno));

    for (uint32_t i = 0; i < F->n; i++) {
        struct client *c = &F->c[i];
        c->id = F->first_id + i;
        c->room = (uint32_t)o->first_room + i / F->k;
        c->pos = i % F->k;
        c->ring = rings + (size_t)i * ring;
        c->last = last + (size_t)i * F->k;
        for (uint32_t j = 0; j < F->k; j++)
            c->last[j] = -1;
        c->fd = dial(&t);
        if (c->fd < 0)
            die("client %u: connect to %s: %s", c->id, t.name, strerror(errno));
        set_nonblocking(c->fd, 1);
        epoll_add(F->ep, c->fd, EPOLLIN, i);
        char join[40];
        ob_append(&c->out, join, make_frame(join, c->room, ""));
        mark_dirty(F, i);
    }
    flush_dirty(F);
    /* Every join reply in before READY, so the measurement starts on a quiet line. */
    int64_t deadline = now_ns() + (int64_t)SETUP_TIMEOUT_S * 1000000000;
    while (F->njoined < F->n) {
        int64_t now = now_ns();
        if (now >= deadline) {
            uint32_t i = 0;
            while (F->c[i].joined)
                i++;
            die("client %u: no 'you entered room %u;' reply within %d s%s%s", F->c[i].id,
                F->c[i].room, SETUP_TIMEOUT_S, F->server_said[0] ? "; the server said: " : "",
                F->server_said);
        }
        fanout_pass(F, ms_until(deadline, now));
    }

    ready_and_wait_for_go((long)F->n);
    double sys0, cpu0 = cpu_seconds_sys(&sys0);
    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->duration * 1e9);
    int64_t drain_until = end + (int64_t)(o->drain * 1e9);
    F->measuring = F->sending = 1;
    F->t_last = t0;
    for (uint32_t i = 0; i < F->n; i++)
        for (uint32_t w = 0; w < F->window; w++)
            emit(F, i);
    flush_dirty(F);
    for (;;) {
        int64_t now = now_ns();
        if (F->sending && now >= end)
            F->sending = 0;
        /* after the sending stops: stragglers, until none is missing or drain runs out */
        if (!F->sending && (F->outstanding == 0 || now >= drain_until))
            break;
        fanout_pass(F, ms_until(F->sending ? end : drain_until, now));
    }
    double sys, cpu = cpu_seconds_sys(&sys) - cpu0;
    sys -= sys0;

    uint64_t expected = F->messages * (F->k - 1);
    printf("{\"clients\": %u, \"messages\": %llu, \"receipts\": %llu, \"lost\": %llu, "
           "\"duplicates\": %llu, \"out_of_order\": %llu, \"misrouted\": %llu, ",
           F->n, (unsigned long long)F->messages, (unsigned long long)F->receipts,
           (unsigned long long)(expected - F->receipts), (unsigned long long)F->duplicates,
           (unsigned long long)F->out_of_order, (unsigned long long)F->misrouted);
    json_num("wall", (double)(F->t_last - t0) / 1e9, 0);
    json_num("cpu", cpu, 0);
    json_num("cpu_sys", sys, 0);
    json_num("p50_s", hist_pct(&F->hist, 50), 0);
    json_num("p90_s", hist_pct(&F->hist, 90), 0);
    json_num("p99_s", hist_pct(&F->hist, 99), 1);
    printf("}\n");
    fflush(stdout);
    return 0;
}

/* ============================================================ the ping-pong pair */

#define PAIR_ROOM 1
#define CHURN_ROOM 2

/* Connect a and b, join them to PAIR_ROOM, and wait until a has seen b arrive (as
 * pingpong._pair). NULL when done; else why the server refused the pair (an error frame in
 * room 0, or a closed connection before the join: select() past FD_SETSIZE). */
static const char *pair_setup(const struct target *t, struct rd *a, struct rd *b, char *why,
                              size_t whylen)
{
    int64_t deadline = now_ns() + (int64_t)SETUP_TIMEOUT_S * 1000000000;
    struct rd *both[2] = {a, b};
    struct frame f;
    char join[40];
    size_t jl = make_frame(join, PAIR_ROOM, "");
    for (int k = 0; k < 2; k++) {
        int fd = dial(t);
        if (fd < 0) {
            snprintf(why, whylen, "pair client %c: connect to %s: %s", 'a' + k, t->name,
                     strerror(errno));
            return why;
        }
        rd_init(both[k], fd, 0);
        if (send_all(fd, join, jl) < 0) {
            snprintf(why, whylen, "pair client %c: send: %s", 'a' + k, strerror(errno));
            return why;
        }
        for (;;) {
            int got = rd_wait(both[k], &f, deadline);
            if (got == 1 && f.room == PAIR_ROOM &&
                starts_with(f.body, f.len, "* you entered room 1;"))
                break;
            if (got == 1 && f.room == 0 && starts_with(f.body, f.len, "! ")) {
                snprintf(why, whylen, "pair client %c: the server said: %.*s", 'a' + k,
                         (int)f.len, f.body);
                return why;
            }
            if (got == 0) {
                snprintf(why, whylen, "pair client %c: the server closed the connection",
                         'a' + k);
                return why;
            }
            if (got < 0 && errno == ETIMEDOUT)
                die("pair client %c: no 'you entered room 1;' within %d s", 'a' + k,
                    SETUP_TIMEOUT_S);
            if (got < 0) {
                snprintf(why, whylen, "pair client %c: %s", 'a' + k, strerror(errno));
                return why;
            }
        }
    }
    for (;;) { /* b's arrival, as seen by a: the room is set up on the server's side too */
        int got = rd_wait(a, &f, deadline);
        if (got == 1 && f.room == PAIR_ROOM && f.len && f.body[0] == '*' &&
            ends_with(f.body, f.len, " entered room 1.", 16))
            return NULL;
        if (got == 0)
            die("pair client a: the server closed the connection");
        if (got < 0)
            die("pair client a: waiting for b's arrival: %s", strerror(errno));
    }
}

/* "ping17" or "pong17" as a body, and as the frame carrying it. */
static size_t ping_frame(char *w, const char *word, uint32_t i, char *tail, size_t *tail_len)
{
    char body[24], *b = body;
    memcpy(b, word, 4);
    b = put_u32(b + 4, i);
    *b = 0;
    *tail_len = (size_t)(b - body);
    memcpy(tail, body, *tail_len);
    return make_frame(w, PAIR_ROOM, body);
}

/* A frame in the pair's room whose body ends with `tail` ("<NAME> ping17" or "ping17"). */
static int is_reply(const struct frame *f, const char *tail, size_t tail_len)
{
    if (f->room != PAIR_ROOM || !ends_with(f->body, f->len, tail, tail_len))
        return 0;
    return f->len == tail_len || f->body[f->len - tail_len - 1] == ' ';
}

/* One blocking round trip a -> b -> a (idle mode). */
static void round_trip(struct rd *a, struct rd *b, uint32_t i)
{
    char frame[64], tail[24];
    size_t tl, n;
    struct frame f;
    struct rd *who[2] = {b, a};
    const char *words[2] = {"ping", "pong"};
    for (int k = 0; k < 2; k++) {
        n = ping_frame(frame, words[k], i, tail, &tl);
        if (send_all(who[1 - k]->fd, frame, n) < 0)
            die("pair client %c: send: %s", k ? 'b' : 'a', strerror(errno));
        int64_t deadline = now_ns() + (int64_t)REPLY_TIMEOUT_S * 1000000000;
        for (;;) {
            int got = rd_wait(who[k], &f, deadline);
            if (got == 1 && is_reply(&f, tail, tl))
                break;
            if (got == 0)
                die("pair client %c: the server closed the connection", k ? 'a' : 'b');
            if (got < 0)
                die("pair client %c: waiting for %s%u: %s", k ? 'a' : 'b', words[k], i,
                    strerror(errno));
        }
    }
}

/* ========================================================================= idle */

static int mode_idle(const struct opts *o)
{
    struct target t;
    resolve(o, &t);
    raise_fd_limit(o->idle + 64);
    /* The idle ones first, so that the pair has the server's highest fds: on a select()
     * server past FD_SETSIZE, the pair is the one refused, and that is the finding. */
    for (long i = 0; i < o->idle; i++) {
        int fd = dial(&t);
        if (fd < 0)
            die("idle connection %ld: connect to %s: %s", i, t.name, strerror(errno));
    }
    struct rd a, b;
    char why[600];
    const char *refused = pair_setup(&t, &a, &b, why, sizeof why);
    uint32_t i = 0;
    if (!refused) {
        int64_t warm = now_ns() + 300000000; /* 0.3 s: caches, the server's first passes */
        while (now_ns() < warm)
            round_trip(&a, &b, i++);
    }
    ready_and_wait_for_go(o->idle + 2);
    if (refused) {
        printf("{\"refused\": true, \"reason\": ");
        json_str(refused);
        printf(", \"round_trips\": 0, \"p50_s\": null, \"p99_s\": null, \"wall\": 0, "
               "\"cpu\": 0}\n");
        return 0;
    }
    static struct hist h;
    uint64_t trips = 0;
    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->duration * 1e9), now = t0;
    while (now < end) {
        round_trip(&a, &b, i++);
        int64_t t1 = now_ns();
        hist_add(&h, t1 - now);
        trips++;
        now = t1;
    }
    double cpu = cpu_seconds() - cpu0;
    printf("{\"refused\": false, \"round_trips\": %llu, ", (unsigned long long)trips);
    json_num("p50_s", hist_pct(&h, 50), 0);
    json_num("p99_s", hist_pct(&h, 99), 0);
    json_num("wall", (double)(now - t0) / 1e9, 0);
    json_num("cpu", cpu, 1);
    printf("}\n");
    return 0;
}

/* ======================================================================== churn */

/* One connection slot: connect, say hello in room 2, wait for the join reply, hang up. */
enum { CONNECTING, WAITING };

struct visit {
    int fd, state;
    size_t len;
    char buf[512];
};

struct churn {
    struct target *t;
    int ep;
    uint64_t connections, errors;
    char error[3][160];
};

#define TAG_A 0
#define TAG_B 1
#define TAG_VISIT 2

static void churn_error(struct churn *C, struct visit *v, const char *what, int err)
{
    if (C->errors < 3)
        snprintf(C->error[C->errors], sizeof C->error[0], "%s%s%s", what, err ? ": " : "",
                 err ? strerror(err) : "");
    C->errors++;
    close(v->fd);
    v->fd = -1;
}

static const char HELLO[] = "<RID:2>hello from a short visit</RID:2>";
static const char ENTERED[] = "you entered room 2;";

static void visit_start(struct churn *C, struct visit *v, uint64_t tag)
{
    v->len = 0;
    v->fd = socket(C->t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (v->fd < 0) {
        churn_error(C, v, "socket", errno);
        return;
    }
    set_nodelay(v->fd);
    v->state = CONNECTING;
    if (connect(v->fd, (const struct sockaddr *)&C->t->addr, C->t->len) < 0 &&
        errno != EINPROGRESS) {
        churn_error(C, v, "connect", errno);
        return;
    }
    /* connected or not yet: EPOLLOUT says when, and SO_ERROR then says how it went */
    epoll_add(C->ep, v->fd, EPOLLOUT, tag);
}

static void visit_event(struct churn *C, struct visit *v, uint64_t tag, uint32_t events)
{
    if (v->state == CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(v->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            churn_error(C, v, "connect", err);
            return;
        }
        ssize_t n = send(v->fd, HELLO, sizeof HELLO - 1, MSG_NOSIGNAL);
        if (n != (ssize_t)(sizeof HELLO - 1)) { /* 40 bytes on a fresh socket always fit */
            churn_error(C, v, "send", n < 0 ? errno : EAGAIN);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
        epoll_ctl(C->ep, EPOLL_CTL_MOD, v->fd, &ev);
        v->state = WAITING;
        return;
    }
    (void)events;
    ssize_t n = recv(v->fd, v->buf + v->len, sizeof v->buf - v->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        churn_error(C, v, n == 0 ? "the server closed a visit before its join reply" : "recv",
                    n == 0 ? 0 : errno);
        return;
    }
    v->len += (size_t)n;
    if (memmem(v->buf, v->len, ENTERED, sizeof ENTERED - 1)) {
        close(v->fd); /* close() also takes it out of the epoll set */
        v->fd = -1;
        C->connections++;
        return;
    }
    /* keep only a tail that may hold the start of the marker */
    size_t keep = sizeof ENTERED - 2;
    if (v->len > keep) {
        memmove(v->buf, v->buf + v->len - keep, keep);
        v->len = keep;
    }
}

static int mode_churn(const struct opts *o)
{
    struct target t;
    resolve(o, &t);
    raise_fd_limit(o->concurrency + 64);
    struct rd a, b;
    char why[600];
    if (pair_setup(&t, &a, &b, why, sizeof why))
        die("%s", why);
    struct churn C = {.t = &t, .ep = epoll_create1(EPOLL_CLOEXEC)};
    if (C.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    /* the pair's reads come from epoll now; its sends stay blocking (tiny, bounded) */
    a.flags = b.flags = MSG_DONTWAIT;
    epoll_add(C.ep, a.fd, EPOLLIN, TAG_A);
    epoll_add(C.ep, b.fd, EPOLLIN, TAG_B);
    struct visit *visits = xrealloc(NULL, sizeof *visits * (size_t)(o->concurrency + 1));
    static struct hist h;

    ready_and_wait_for_go(o->concurrency + 2);
    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->duration * 1e9), now = t0, sent_at = t0;
    for (long k = 0; k < o->concurrency; k++)
        visits[k].fd = -1; /* started by the loop */
    uint32_t i = 0, trips = 0;
    int waiting = TAG_B; /* who waits for the pair's next frame */
    char frame[64], tail[24];
    size_t tl, fl = ping_frame(frame, "ping", i, tail, &tl);
    if (send_all(a.fd, frame, fl) < 0)
        die("pair client a: send: %s", strerror(errno));
    struct epoll_event evs[MAX_EVENTS];
    while ((now = now_ns()) < end) {
        /* a slot whose visit ended (done, or failed) goes round again at once */
        for (long k = 0; k < o->concurrency; k++)
            if (visits[k].fd < 0)
                visit_start(&C, &visits[k], TAG_VISIT + (uint64_t)k);
        int nev = epoll_wait(C.ep, evs, MAX_EVENTS, ms_until(end, now));
        if (nev < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int e = 0; e < nev; e++) {
            uint64_t tag = evs[e].data.u64;
            if (tag >= TAG_VISIT) {
                struct visit *v = &visits[tag - TAG_VISIT];
                visit_event(&C, v, tag, evs[e].events);
                continue;
            }
            struct rd *r = tag == TAG_A ? &a : &b;
            ssize_t n = rd_fill(r);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                die("pair client %c: %s", tag == TAG_A ? 'a' : 'b',
                    n == 0 ? "the server closed the connection" : strerror(errno));
            struct frame f;
            while (rd_next(r, &f)) {
                if ((int)tag != waiting || !is_reply(&f, tail, tl))
                    continue;
                if (tag == TAG_B) { /* b got ping i: pong i back */
                    fl = ping_frame(frame, "pong", i, tail, &tl);
                    if (send_all(b.fd, frame, fl) < 0)
                        die("pair client b: send: %s", strerror(errno));
                    waiting = TAG_A;
                } else { /* a got pong i: one round trip */
                    int64_t t1 = now_ns();
                    hist_add(&h, t1 - sent_at);
                    trips++;
                    sent_at = t1;
                    fl = ping_frame(frame, "ping", ++i, tail, &tl);
                    if (send_all(a.fd, frame, fl) < 0)
                        die("pair client a: send: %s", strerror(errno));
                    waiting = TAG_B;
                }
            }
        }
    }
    double cpu = cpu_seconds() - cpu0;
    printf("{\"connections\": %llu, \"round_trips\": %u, ", (unsigned long long)C.connections,
           trips);
    json_num("pair_p50_s", hist_pct(&h, 50), 0);
    json_num("pair_p99_s", hist_pct(&h, 99), 0);
    json_num("wall", (double)(now - t0) / 1e9, 0);
    json_num("cpu", cpu, 0);
    printf("\"error_count\": %llu, \"errors\": [", (unsigned long long)C.errors);
    for (uint64_t k = 0; k < C.errors && k < 3; k++) {
        if (k)
            printf(", ");
        json_str(C.error[k]);
    }
    printf("]}\n");
    return 0;
}

/* ========================================================================= sink */

/* The cheapest server a fanout run accepts: the first frame of a connection joins it to
 * that frame's room; after that, its bytes are cut at the last complete frame and copied,
 * raw and unparsed, to every other member. What a fanout run against it costs is the
 * generator's own cost per delivery plus this copy. */

struct sconn {
    int fd, room, dirty, writing, doomed; /* room: index in rooms[], -1 before the join */
    struct obuf out;
    char *carry;
    size_t carry_len, carry_cap;
};

struct sroom {
    uint32_t id, n, cap;
    int *members; /* fds */
};

struct sink {
    int ep, listener;
    struct sconn **byfd;
    size_t nfd;
    struct sroom *rooms;
    size_t nrooms;
    int *dirty;
    size_t ndirty, dirty_cap;
    char *rbuf;
    uint64_t accepted, bytes_in, bytes_out;
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* The end of the last complete frame in [p, end): past the '>' of the last "</RID:n>". */
static const char *last_frame_end(const char *p, const char *end)
{
    const char *q = end;
    while (q > p) {
        const char *lt = memrchr(p, '<', (size_t)(q - p));
        if (lt == NULL)
            return p;
        if (end - lt > 6 && memcmp(lt, CLOSE, 6) == 0) {
            const char *d = lt + 6;
            while (d < end && *d >= '0' && *d <= '9')
                d++;
            if (d < end && *d == '>' && d > lt + 6)
                return d + 1;
        }
        q = lt;
    }
    return p;
}

static void sink_dirty(struct sink *S, struct sconn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    if (S->ndirty == S->dirty_cap) {
        S->dirty_cap = S->dirty_cap ? S->dirty_cap * 2 : 256;
        S->dirty = xrealloc(S->dirty, sizeof *S->dirty * S->dirty_cap);
    }
    S->dirty[S->ndirty++] = c->fd;
}

/* The one way out: leave the room, close, forget. */
static void sink_drop(struct sink *S, struct sconn *c)
{
    if (c->room >= 0) {
        struct sroom *r = &S->rooms[c->room];
        for (uint32_t j = 0; j < r->n; j++)
            if (r->members[j] == c->fd) {
                r->members[j] = r->members[--r->n];
                break;
            }
    }
    S->byfd[c->fd] = NULL;
    close(c->fd);
    free(c->out.p);
    free(c->carry);
    free(c);
}

static void sink_join(struct sink *S, struct sconn *c, uint32_t room)
{
    size_t i = 0;
    while (i < S->nrooms && S->rooms[i].id != room)
        i++;
    if (i == S->nrooms) {
        S->rooms = xrealloc(S->rooms, sizeof *S->rooms * (S->nrooms + 1));
        S->rooms[S->nrooms++] = (struct sroom){.id = room};
    }
    struct sroom *r = &S->rooms[i];
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->members = xrealloc(r->members, sizeof *r->members * r->cap);
    }
    r->members[r->n++] = c->fd;
    c->room = (int)i;
    char reply[80], *w = reply;
    memcpy(w, OPEN, 5);
    w = put_u32(w + 5, room);
    memcpy(w, ">* you entered room ", 20);
    w = put_u32(w + 20, room);
    memcpy(w, "; here: ", 8);
    memcpy(w + 8, CLOSE, 6);
    w = put_u32(w + 14, room);
    *w++ = '>';
    ob_append(&c->out, reply, (size_t)(w - reply));
    sink_dirty(S, c);
}

static void sink_readable(struct sink *S, struct sconn *c)
{
    char *buf = S->rbuf;
    size_t have = c->carry_len;
    if (have)
        memcpy(buf, c->carry, have);
    ssize_t n = recv(c->fd, buf + have, RECV_CHUNK, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        sink_drop(S, c);
        return;
    }
    S->bytes_in += (uint64_t)n;
    const char *p = buf, *end = buf + have + (size_t)n, *next;
    while (c->room < 0 && p < end) {
        struct frame f;
        enum scan s = next_frame(p, end, &f, &next);
        if (s == NEED)
            break;
        p = next;
        if (s == FRAME)
            sink_join(S, c, f.room);
    }
    if (c->room >= 0) {
        const char *cut = last_frame_end(p, end);
        if (cut > p) {
            struct sroom *r = &S->rooms[c->room];
            size_t len = (size_t)(cut - p);
            for (uint32_t j = 0; j < r->n; j++) {
                struct sconn *m = S->byfd[r->members[j]];
                if (m == c || m->doomed)
                    continue;
                if (ob_pending(&m->out) + len > SINK_OUT_LIMIT)
                    m->doomed = 1; /* dropped in the flush, not under our feet here */
                else
                    ob_append(&m->out, p, len);
                sink_dirty(S, m);
            }
            p = cut;
        }
    }
    size_t rest = (size_t)(end - p);
    if (rest > CARRY_MAX) {
        sink_drop(S, c);
        return;
    }
    if (rest > c->carry_cap) {
        c->carry_cap = rest > 4096 ? rest : 4096;
        c->carry = xrealloc(c->carry, c->carry_cap);
    }
    memcpy(c->carry, p, rest);
    c->carry_len = rest;
}

static void sink_accept(struct sink *S)
{
    for (;;) {
        int fd = accept4(S->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN: the backlog is empty (or EMFILE: try again next pass) */
        }
        set_nodelay(fd);
        if ((size_t)fd >= S->nfd) {
            size_t nfd = S->nfd ? S->nfd : 1024;
            while (nfd <= (size_t)fd)
                nfd *= 2;
            S->byfd = xrealloc(S->byfd, sizeof *S->byfd * nfd);
            memset(S->byfd + S->nfd, 0, sizeof *S->byfd * (nfd - S->nfd));
            S->nfd = nfd;
        }
        struct sconn *c = xrealloc(NULL, sizeof *c);
        *c = (struct sconn){.fd = fd, .room = -1};
        S->byfd[fd] = c;
        S->accepted++;
        epoll_add(S->ep, fd, EPOLLIN, (uint64_t)fd);
    }
}

static int mode_sink(const struct opts *o)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res;
    int rc = getaddrinfo(o->host, o->port, &hints, &res);
    if (rc != 0)
        die("cannot resolve %s port %s: %s", o->host, o->port, gai_strerror(rc));
    raise_fd_limit(4096);
    struct sink S = {.rbuf = xrealloc(NULL, CARRY_MAX + RECV_CHUNK)};
    S.listener = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(S.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (S.listener < 0 || bind(S.listener, res->ai_addr, res->ai_addrlen) < 0 ||
        listen(S.listener, 1024) < 0)
        die("cannot listen on %s port %s: %s", o->host, o->port, strerror(errno));
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(S.listener, (struct sockaddr *)&ss, &sl);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_add(S.ep, S.listener, EPOLLIN, UINT64_MAX);
    fprintf(stderr, "sink on %s:%s\n", host, port);
    fflush(stderr);

    struct epoll_event evs[MAX_EVENTS];
    while (!g_stop) {
        int nev = epoll_wait(S.ep, evs, MAX_EVENTS, 1000);
        if (nev < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int e = 0; e < nev; e++) {
            if (evs[e].data.u64 == UINT64_MAX) {
                sink_accept(&S);
                continue;
            }
            struct sconn *c = S.byfd[evs[e].data.u64]; /* looked up again: it may be gone */
            if (c == NULL || c->doomed)
                continue;
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                sink_readable(&S, c);
            if ((c = S.byfd[evs[e].data.u64]) != NULL && evs[e].events & EPOLLOUT)
                sink_dirty(&S, c);
        }
        for (size_t j = 0; j < S.ndirty; j++) { /* once per pass: one send per member */
            struct sconn *c = S.byfd[S.dirty[j]];
            if (c == NULL || !c->dirty)
                continue;
            c->dirty = 0;
            size_t before = ob_pending(&c->out);
            if (c->doomed || ob_send(c->fd, &c->out) < 0) {
                sink_drop(&S, c);
                continue;
            }
            S.bytes_out += before - ob_pending(&c->out);
            want_write(S.ep, c->fd, (uint64_t)c->fd, &c->writing, ob_pending(&c->out) > 0);
        }
        S.ndirty = 0;
    }
    printf("{\"accepted\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu}\n",
           (unsigned long long)S.accepted, (unsigned long long)S.bytes_in,
           (unsigned long long)S.bytes_out);
    return 0;
}

/* ========================================================================= main */

static const char USAGE[] =
    "usage: loadgen MODE [options]; every mode takes --host H --port P [--cpu N]\n"
    "  fanout --rooms R --clients K --window W --size S --duration D --drain X\n"
    "         [--first-room 1] [--first-id 0]\n"
    "  churn  --concurrency N --duration D\n"
    "  idle   --idle C --duration D\n"
    "  sink   (--port 0 for any free port)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 1;
    }
    g_mode = argv[1];
    signal(SIGPIPE, SIG_IGN); /* a peer that went away is an error return, not a death */
    struct opts o;
    parse_opts(argc - 2, argv + 2, &o);
    if (o.cpu >= 0) { /* pinned by the harness, so that it knows which core is whose */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)o.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            die("cannot pin to CPU %ld: %s", o.cpu, strerror(errno));
    }
    if (!strcmp(g_mode, "fanout"))
        return mode_fanout(&o);
    if (!strcmp(g_mode, "churn"))
        return mode_churn(&o);
    if (!strcmp(g_mode, "idle"))
        return mode_idle(&o);
    if (!strcmp(g_mode, "sink"))
        return mode_sink(&o);
    fprintf(stderr, "loadgen: unknown mode '%s'\n%s", g_mode, USAGE);
    return 1;
}
