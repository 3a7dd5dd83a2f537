/* ssebench: the streaming half of ./dev bench, on 127.0.0.1 only.
 *
 *   ssebench port                      print a free TCP port
 *   ssebench server PORT               an SSE upstream (single thread, epoll)
 *   ssebench client PORT PATH QUERY STREAMS [PARENT_PID]
 *                                      STREAMS concurrent streams; prints delays
 *   ssebench stat PARENT_PID           RSS (KiB) of PARENT_PID's children and
 *                                      the CPU time they used (clock ticks)
 *
 * The server answers POST .../chat/completions with an OpenAI chat stream
 * of N chunks, one every US microseconds (0: as fast as the socket takes
 * them), each with B bytes of content and a "ts" member: the CLOCK_MONOTONIC
 * nanosecond at which it was written. N, US and B come from the request's
 * X-Bench-Stream header ("n=N&gap=US&size=B"): a header, because a gateway
 * that builds the upstream URL itself (Bedrock's, from the model) keeps no
 * query string. A request whose body asks for include_usage also gets the
 * usage chunk, like OpenAI's. POST .../invoke-with-response-stream gets the
 * same N events as Bedrock sends them: AWS event stream frames (CRC32s
 * included) whose "chunk" events carry Anthropic Messages events, base64,
 * the N content_block_delta events with the same "ts". Each stream's first
 * event comes after a random fraction of the gap, so many streams do not all
 * fire at the same instant. Chunked, keep-alive.
 *
 * The client reads each event as it arrives (SSE, OpenAI's or Anthropic's,
 * or an AWS event stream) and takes now - ts as the event's delay: what the
 * path between the server's write and the client's read added. With
 * PARENT_PID it also samples the RSS of that process's children every 20 ms
 * and reports the peak. Every wait is bounded. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define INBUF (64 * 1024)
#define OUTBUF (256 * 1024)
#define CLIENT_DEADLINE_S 300

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void nonblock(int fd)
{
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int listen_on(int port, int *bound)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        die("bind");
    if (listen(fd, 1024) < 0)
        die("listen");
    getsockname(fd, (struct sockaddr *)&a, &len);
    *bound = ntohs(a.sin_port);
    return fd;
}

/* ---- the AWS event stream's encodings ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static signed char b64_value[256];   /* -1: not a base64 digit */
static uint32_t crc_table[256];

static void codecs_init(void)
{
    uint32_t i, k, crc;

    memset(b64_value, -1, sizeof(b64_value));
    for (i = 0; i < 64; i++)
        b64_value[(unsigned char)b64_alphabet[i]] = (signed char)i;
    for (i = 0; i < 256; i++) {
        for (crc = i, k = 0; k < 8; k++)
            crc = crc & 1 ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
        crc_table[i] = crc;
    }
}

/* CRC-32 (IEEE 802.3), the one of both event stream checksums. */
static uint32_t crc32_of(const unsigned char *p, size_t len)
{
    uint32_t crc = 0xffffffffu;

    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Padded base64 of in; returns its length. */
static size_t base64_encode(char *out, const unsigned char *in, size_t len)
{
    size_t i, o = 0;

    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/* Decodes base64 up to its first non-digit ('=' or the closing quote);
 * returns the decoded length. */
static size_t base64_decode(char *out, const char *in, size_t len)
{
    uint32_t v = 0;
    size_t i, o = 0;
    int bits = 0;

    for (i = 0; i < len && b64_value[(unsigned char)in[i]] >= 0; i++) {
        v = v << 6 | (uint32_t)b64_value[(unsigned char)in[i]];
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(v >> bits);
        }
    }
    return o;
}

/* ---- server ---- */

typedef struct {
    int fd;
    char in[INBUF];
    size_t in_len;
    char *out;                /* pending bytes not yet taken by the socket */
    size_t out_len, out_off;
    int streaming;
    long n, sent, size;
    int64_t gap_ns, next_due;
    int usage;
    int bedrock;              /* event stream frames, not SSE */
} sconn_t;

static sconn_t *sconns[MAX_CONNS];
static char pad[1 << 16];

static long query_long(const char *query, const char *name, long dflt)
{
    size_t nl = strlen(name);
    const char *p = query;

    while (p && *p) {
        if (!strncmp(p, name, nl) && p[nl] == '=')
            return strtol(p + nl + 1, NULL, 10);
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return dflt;
}

static void out_append(sconn_t *c, const char *data, size_t len)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > OUTBUF) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + len > OUTBUF) {
        fprintf(stderr, "ssebench: output buffer overflow\n");
        exit(1);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* One SSE event as one HTTP chunk. */
static void out_chunk(sconn_t *c, const char *data, size_t len)
{
    char head[32];
    int n = snprintf(head, sizeof(head), "%zx\r\n", len);
    out_append(c, head, (size_t)n);
    out_append(c, data, len);
    out_append(c, "\r\n", 2);
}

/* One Anthropic event as Bedrock streams it: a "chunk" event message whose
 * JSON payload has the event in base64 "bytes" ("p" pads it, as Bedrock
 * does), in one HTTP chunk. */
static void out_frame(sconn_t *c, const char *event, size_t len)
{
    /* Each header: name length, name, type 7 (string), value length (u16),
     * value. */
    static const char headers[] = "\x0b:event-type\x07\x00\x05" "chunk"
                                  "\x0d:content-type\x07\x00\x10" "application/json"
                                  "\x0d:message-type\x07\x00\x05" "event";
    static const char open[] = "{\"bytes\":\"", close[] = "\",\"p\":\"abcdefghijklmnopqrs\"}";
    static unsigned char frame[(1 << 17) + 256];
    size_t hlen = sizeof(headers) - 1, total;
    char *payload = (char *)frame + 12 + hlen, *o = payload;

    memcpy(frame + 12, headers, hlen);
    memcpy(o, open, sizeof(open) - 1);
    o += sizeof(open) - 1;
    o += base64_encode(o, (const unsigned char *)event, len);
    memcpy(o, close, sizeof(close) - 1);
    o += sizeof(close) - 1;
    total = (size_t)(o - (char *)frame) + 4;
    put_be32(frame, (uint32_t)total);
    put_be32(frame + 4, (uint32_t)hlen);
    put_be32(frame + 8, crc32_of(frame, 8));
    put_be32(frame + total - 4, crc32_of(frame, total - 4));
    out_chunk(c, (const char *)frame, total);
}

static void out_event(sconn_t *c)
{
    static char ev[(1 << 16) + 512];
    int n;

    if (c->bedrock) {
        n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                     "\"text_delta\",\"text\":\"%.*s\"},\"ts\":%lld}",
                     (int)c->size, pad, (long long)now_ns());
        out_frame(c, ev, (size_t)n);
        c->sent++;
        return;
    }
    n = snprintf(ev, sizeof(ev),
                     "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                     "\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,"
                     "\"delta\":{\"content\":\"%.*s\"},\"finish_reason\":null}]%s,"
                     "\"ts\":%lld}\n\n",
                     (int)c->size, pad, c->usage ? ",\"usage\":null" : "",
                     (long long)now_ns());
    out_chunk(c, ev, (size_t)n);
    c->sent++;
}

static void out_end(sconn_t *c)
{
    static const char usage[] =
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
        "\"created\":1700000000,\"model\":\"bench\",\"choices\":[],\"usage\":"
        "{\"prompt_tokens\":10,\"completion_tokens\":100,\"total_tokens\":110}}\n\n";
    static const char done[] = "data: [DONE]\n\n";
    static const char *const bedrock_end[] = {
        "{\"type\":\"content_block_stop\",\"index\":0}",
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
        "\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}",
        "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":10,"
        "\"outputTokenCount\":100,\"invocationLatency\":2000,\"firstByteLatency\":100}}",
    };
    size_t i;

    for (i = 0; c->bedrock && i < sizeof(bedrock_end) / sizeof(bedrock_end[0]); i++)
        out_frame(c, bedrock_end[i], strlen(bedrock_end[i]));
    if (c->usage)
        out_chunk(c, usage, sizeof(usage) - 1);
    if (!c->bedrock)
        out_chunk(c, done, sizeof(done) - 1);
    out_append(c, "0\r\n\r\n", 5);
    c->streaming = 0;
}

static void sclose(int ep, sconn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    sconns[c->fd] = NULL;
    free(c->out);
    free(c);
}

/* Writes what is pending; 0 when all of it went, 1 when the socket is full,
 * -1 when the connection is gone. */
static int sflush(int ep, sconn_t *c)
{
    struct epoll_event ev;
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0 && errno == EAGAIN) {
            ev.events = EPOLLIN | EPOLLOUT;
            ev.data.fd = c->fd;
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 1;
        }
        if (w <= 0)
            return -1;
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    ev.events = EPOLLIN;
    ev.data.fd = c->fd;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

/* The value of the header `name` (its colon included) in the len bytes of
 * head, into out; "" when it has none that fits. */
static void header_value(const char *head, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), i;

    out[0] = '\0';
    for (i = 0; i + 1 + nl < len; i++) {
        if (head[i] == '\n' && !strncasecmp(head + i + 1, name, nl)) {
            const char *v = head + i + 1 + nl, *eol;
            v += strspn(v, " ");
            eol = memchr(v, '\r', len - (size_t)(v - head));
            if (eol && (size_t)(eol - v) < cap) {
                memcpy(out, v, (size_t)(eol - v));
                out[eol - v] = '\0';
            }
            return;
        }
    }
}

/* A whole request in c->in: answer it. Returns bytes consumed, 0 if the
 * request is not whole yet, -1 to close. */
static long handle_request(sconn_t *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *sp, *q, *cl;
    size_t head, body_len = 0, total;
    char path[2048], query[256];

    if (!end)
        return c->in_len >= INBUF ? -1 : 0;
    head = (size_t)(end - c->in) + 4;
    cl = memmem(c->in, head, "\r\nContent-Length:", 17);
    if (!cl)
        cl = memmem(c->in, head, "\r\ncontent-length:", 17);
    if (cl)
        body_len = strtoul(cl + 17, NULL, 10);
    total = head + body_len;
    if (total > INBUF)
        return -1;
    if (c->in_len < total)
        return 0;
    sp = memchr(c->in, ' ', head);
    if (!sp)
        return -1;
    q = memchr(sp + 1, ' ', head - (size_t)(sp + 1 - c->in));
    if (!q || (size_t)(q - sp - 1) >= sizeof(path))
        return -1;
    memcpy(path, sp + 1, (size_t)(q - sp - 1));
    path[q - sp - 1] = '\0';
    c->bedrock = strstr(path, "/invoke-with-response-stream") != NULL;
    if (!c->bedrock && !strstr(path, "/chat/completions")) {
        static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        out_append(c, nf, sizeof(nf) - 1);
        return (long)total;
    }
    header_value(c->in, head, "X-Bench-Stream:", query, sizeof(query));
    c->n = query_long(query, "n", 100);
    c->gap_ns = query_long(query, "gap", 1000) * 1000;
    c->size = query_long(query, "size", 16);
    if (c->size < 0 || c->size > (long)sizeof(pad))
        c->size = 16;
    c->usage = memmem(c->in + head, body_len, "include_usage", 13) != NULL;
    c->sent = 0;
    c->streaming = 1;
    c->next_due = now_ns() + (c->gap_ns ? random() % c->gap_ns : 0);
    if (c->bedrock) {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n"
                                "X-Amzn-Bedrock-Content-Type: application/json\r\n"
                                "x-amzn-RequestId: 6f1b1f8e-bench\r\nTransfer-Encoding: chunked\r\n\r\n";
        static const char *const start[] = {
            "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_bdrk_bench\",\"type\":"
            "\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\","
            "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
            "{\"input_tokens\":10,\"output_tokens\":1}}}",
            "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
            "\"text\",\"text\":\"\"}}",
        };
        out_append(c, h, sizeof(h) - 1);
        out_frame(c, start[0], strlen(start[0]));
        out_frame(c, start[1], strlen(start[1]));
    }
    else {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        out_append(c, h, sizeof(h) - 1);
    }
    return (long)total;
}

/* Sends what is due on c; -1 to close. */
static int pump(int ep, sconn_t *c)
{
    int rc;

    if (c->streaming && !c->gap_ns) {
        /* As fast as the socket takes it. */
        while (c->streaming) {
            while (c->sent < c->n && c->out_len - c->out_off < OUTBUF / 2)
                out_event(c);
            if (c->sent >= c->n)
                out_end(c);
            rc = sflush(ep, c);
            if (rc)
                return rc < 0 ? -1 : 0;
        }
        return sflush(ep, c) < 0 ? -1 : 0;
    }
    if (c->streaming && c->out_off == c->out_len) {
        int64_t now = now_ns();
        while (c->streaming && c->next_due <= now) {
            if (c->sent < c->n) {
                out_event(c);
                c->next_due += c->gap_ns;
            }
            if (c->sent >= c->n)
                out_end(c);
        }
    }
    return sflush(ep, c) < 0 ? -1 : 0;
}

static void arm_timer(int tfd)
{
    struct itimerspec its;
    int64_t due = 0;
    int i;

    for (i = 0; i < MAX_CONNS; i++)
        if (sconns[i] && sconns[i]->streaming && sconns[i]->gap_ns
            && sconns[i]->out_off == sconns[i]->out_len
            && (!due || sconns[i]->next_due < due))
            due = sconns[i]->next_due;
    memset(&its, 0, sizeof(its));
    if (due) {
        its.it_value.tv_sec = due / 1000000000;
        its.it_value.tv_nsec = due % 1000000000;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void server(int port) __attribute__((noreturn));

static void server(int port)
{
    int bound, lfd = listen_on(port, &bound), ep = epoll_create1(0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev, evs[256];

    /* Bounded: gone after 20 minutes whatever happens to the script. */
    alarm(1200);
    memset(pad, 'x', sizeof(pad));
    codecs_init();
    srandom((unsigned)now_ns());
    nonblock(lfd);
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    printf("LISTENING %d\n", bound);
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1), i;
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            sconn_t *c;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept(lfd, NULL, NULL)) >= 0) {
                    if (cfd >= MAX_CONNS) {
                        close(cfd);
                        continue;
                    }
                    nonblock(cfd);
                    c = calloc(1, sizeof(*c));
                    c->fd = cfd;
                    c->out = malloc(OUTBUF);
                    sconns[cfd] = c;
                    ev.events = EPOLLIN;
                    ev.data.fd = cfd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            if (fd == tfd) {
                uint64_t ticks;
                int k;
                if (read(tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                    die("timerfd");
                for (k = 0; k < MAX_CONNS; k++)
                    if (sconns[k] && sconns[k]->streaming && sconns[k]->gap_ns
                        && pump(ep, sconns[k]) < 0)
                        sclose(ep, sconns[k]);
                continue;
            }
            c = sconns[fd];
            if (!c)
                continue;
            if (evs[i].events & EPOLLIN) {
                ssize_t r = read(fd, c->in + c->in_len, INBUF - c->in_len);
                long used;
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    sclose(ep, c);
                    continue;
                }
                if (r > 0)
                    c->in_len += (size_t)r;
                while (!c->streaming && (used = handle_request(c)) != 0) {
                    if (used < 0) {
                        c->in_len = 0;
                        break;
                    }
                    memmove(c->in, c->in + used, c->in_len - (size_t)used);
                    c->in_len -= (size_t)used;
                }
            }
            if (pump(ep, c) < 0)
                sclose(ep, c);
        }
        arm_timer(tfd);
    }
}

/* ---- RSS ---- */

/* The RSS (KiB) of parent's children; *cpu_ticks (may be NULL) gets the
 * CPU time they used (user + system, clock ticks). */
static long children_stat(int parent, long long *cpu_ticks)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    long total = 0, page_kb = sysconf(_SC_PAGESIZE) / 1024;

    if (cpu_ticks)
        *cpu_ticks = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char path[300], buf[512], *p;
        FILE *f;
        int ppid = 0;
        long size, resident;
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        if (!fgets(buf, sizeof(buf), f)) {
            fclose(f);
            continue;
        }
        fclose(f);
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1 || ppid != parent)
            continue;
        if (cpu_ticks) {
            unsigned long long ut = 0, st = 0;
            /* After ")": state ppid pgrp session tty tpgid flags minflt
             * cminflt majflt cmajflt utime stime */
            if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                       &ut, &st) == 2)
                *cpu_ticks += (long long)(ut + st);
        }
        snprintf(path, sizeof(path), "/proc/%s/statm", e->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        if (fscanf(f, "%ld %ld", &size, &resident) == 2)
            total += resident * page_kb;
        fclose(f);
    }
    closedir(d);
    return total;
}

/* ---- client ---- */

enum { HEAD, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, BODY, DONE };

typedef struct {
    int fd, state, status, chunked, complete, errors;
    int eventstream;          /* the body is AWS event stream frames, not SSE */
    char buf[INBUF];
    size_t len;
    long long remaining;      /* of the chunk, or of a Content-Length body */
    char line[1 << 17];       /* the SSE line being assembled, or a decoded event */
    size_t line_len;
    unsigned char frame[1 << 17];   /* the event stream frame being assembled */
    size_t frame_len;
    long events;
} cconn_t;

static int64_t *delays;
static size_t ndelays, cap_delays;
static long long total_bytes;

/* One event's data (NUL-terminated): OpenAI's, or Anthropic's, whose
 * stream ends with message_stop rather than [DONE]. */
static void event_data(cconn_t *c, const char *data, int64_t t)
{
    const char *ts;

    if (!strcmp(data, "[DONE]") || !strncmp(data, "{\"type\":\"message_stop\"", 22)) {
        c->complete = 1;
        return;
    }
    if (!strncmp(data, "{\"error\"", 8) || !strncmp(data, "{\"type\":\"error\"", 16))
        c->errors++;
    ts = strstr(data, "\"ts\":");
    if (!ts)
        return;
    c->events++;
    if (ndelays == cap_delays) {
        cap_delays = cap_delays ? cap_delays * 2 : 1 << 16;
        delays = realloc(delays, cap_delays * sizeof(*delays));
    }
    delays[ndelays++] = t - strtoll(ts + 5, NULL, 10);
}

static void sse_line(cconn_t *c, int64_t t)
{
    if (c->line_len < 6 || strncmp(c->line, "data: ", 6))
        return;
    c->line[c->line_len] = '\0';
    event_data(c, c->line + 6, t);
}

/* Whole event stream frames in c->frame: each chunk's event decoded from
 * its base64 "bytes". The CRCs are not checked here: this side measures. */
static void frames(cconn_t *c, int64_t t)
{
    static const char bytes[] = "\"bytes\":\"";
    size_t total;

    while (c->frame_len >= 12 && c->frame_len >= (total = get_be32(c->frame))) {
        size_t headers_len = get_be32(c->frame + 4);
        const char *payload = (const char *)c->frame + 12 + headers_len, *b64 = NULL;
        size_t payload_len = 0;

        if (total >= 16 + headers_len) {
            payload_len = total - 16 - headers_len;
            b64 = memmem(payload, payload_len, bytes, sizeof(bytes) - 1);
        }
        else
            total = c->frame_len;   /* not a frame: dropped */
        if (b64) {
            b64 += sizeof(bytes) - 1;
            c->line_len = base64_decode(c->line, b64,
                                        payload_len - (size_t)(b64 - payload));
            c->line[c->line_len] = '\0';
            event_data(c, c->line, t);
        }
        memmove(c->frame, c->frame + total, c->frame_len - total);
        c->frame_len -= total;
    }
}

static void body_bytes(cconn_t *c, const char *p, size_t n, int64_t t)
{
    size_t i;

    total_bytes += (long long)n;
    if (c->eventstream) {
        /* What is held is less than a frame, and the bench's frames are
         * far smaller than the buffer: one that does not fit is dropped. */
        if (n > sizeof(c->frame) - c->frame_len) {
            c->frame_len = 0;
            return;
        }
        memcpy(c->frame + c->frame_len, p, n);
        c->frame_len += n;
        frames(c, t);
        return;
    }
    for (i = 0; i < n; i++) {
        if (p[i] == '\n') {
            sse_line(c, t);
            c->line_len = 0;
        }
        else if (c->line_len < sizeof(c->line) - 1)
            c->line[c->line_len++] = p[i];
    }
}

/* Consumes what is in c->buf; returns 1 when the response is over. */
static int parse(cconn_t *c, int64_t t)
{
    size_t off = 0;

    for (;;) {
        char *p = c->buf + off, *nl;
        size_t avail = c->len - off;
        if (c->state == HEAD) {
            char *end = memmem(p, avail, "\r\n\r\n", 4);
            if (!end)
                break;
            c->status = atoi(p + 9);
            c->chunked = memmem(p, (size_t)(end - p), "chunked", 7) != NULL;
            c->eventstream = memmem(p, (size_t)(end - p), "application/vnd.amazon.eventstream",
                                    34) != NULL;
            {
                char *cl = memmem(p, (size_t)(end - p), "ontent-Length:", 14);
                c->remaining = cl ? atoll(cl + 14) : -1;
            }
            c->state = c->chunked ? CHUNK_SIZE : BODY;
            off += (size_t)(end - p) + 4;
        }
        else if (c->state == CHUNK_SIZE) {
            nl = memmem(p, avail, "\r\n", 2);
            if (!nl)
                break;
            c->remaining = strtoll(p, NULL, 16);
            off += (size_t)(nl - p) + 2;
            c->state = c->remaining ? CHUNK_DATA : DONE;
            if (c->state == DONE)
                return 1;
        }
        else if (c->state == CHUNK_DATA) {
            size_t take = avail < (size_t)c->remaining ? avail : (size_t)c->remaining;
            if (!take)
                break;
            body_bytes(c, p, take, t);
            c->remaining -= (long long)take;
            off += take;
            if (!c->remaining)
                c->state = CHUNK_CRLF;
        }
        else if (c->state == CHUNK_CRLF) {
            if (avail < 2)
                break;
            off += 2;
            c->state = CHUNK_SIZE;
        }
        else if (c->state == BODY) {
            size_t take = avail;
            if (c->remaining >= 0 && (long long)take > c->remaining)
                take = (size_t)c->remaining;
            body_bytes(c, p, take, t);
            off += take;
            if (c->remaining >= 0) {
                c->remaining -= (long long)take;
                if (!c->remaining)
                    return 1;
            }
            break;
        }
        else
            return 1;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    size_t i;
    if (!ndelays)
        return -1;
    i = (size_t)(p / 100.0 * (double)(ndelays - 1) + 0.5);
    return (double)delays[i] / 1000.0;
}

static int client(int port, const char *path, const char *query, int streams, int parent)
{
    /* OpenAI's request, else Anthropic's (which Bedrock's stand-in ignores). */
    const char *body = strstr(path, "/chat/completions")
        ? "{\"model\":\"bench\",\"stream\":true,\"messages\":[{\"role\":\"user\","
          "\"content\":\"Say hello.\"}]}"
        : "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true,"
          "\"messages\":[{\"role\":\"user\",\"content\":\"Say hello.\"}]}";
    cconn_t **cs = calloc((size_t)streams, sizeof(*cs));
    struct sockaddr_in a;
    struct epoll_event ev, evs[256];
    int ep = epoll_create1(0), open_streams = streams, i, complete = 0, bad_status = 0;
    int errors = 0;
    int64_t start = now_ns(), deadline = start + (int64_t)CLIENT_DEADLINE_S * 1000000000;
    int64_t next_rss = start;
    long rss_base = parent ? children_stat(parent, NULL) : 0, rss_peak = rss_base;
    char req[1024];
    int reqlen = snprintf(req, sizeof(req),
                          "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "X-Bench-Stream: %s\r\nContent-Length: %zu\r\n\r\n%s",
                          path, query, strlen(body), body);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (i = 0; i < streams; i++) {
        cconn_t *c = calloc(1, sizeof(*c));
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("connect");
        if (write(c->fd, req, (size_t)reqlen) != reqlen)
            die("write");
        nonblock(c->fd);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        cs[i] = c;
    }
    while (open_streams > 0 && now_ns() < deadline) {
        int n = epoll_wait(ep, evs, 256, 20), k;
        int64_t t = now_ns();
        for (k = 0; k < n; k++) {
            cconn_t *c = evs[k].data.ptr;
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
                int over = 0;
                if (r > 0) {
                    c->len += (size_t)r;
                    over = parse(c, now_ns());
                }
                if (r == 0 || (r < 0 && errno != EAGAIN) || over) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    open_streams--;
                    break;
                }
                if (r < 0)
                    break;
            }
        }
        if (parent && t >= next_rss) {
            long rss = children_stat(parent, NULL);
            if (rss > rss_peak)
                rss_peak = rss;
            next_rss = t + 20000000;
        }
    }
    for (i = 0; i < streams; i++) {
        complete += cs[i]->complete && cs[i]->status == 200;
        bad_status += cs[i]->status != 200;
        errors += cs[i]->errors;
    }
    qsort(delays, ndelays, sizeof(*delays), cmp64);
    printf("streams=%d complete=%d bad_status=%d error_events=%d events=%zu bytes=%lld "
           "seconds=%.2f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f",
           streams, complete, bad_status, errors, ndelays, total_bytes,
           (double)(now_ns() - start) / 1e9, pct(50), pct(90), pct(99), pct(100));
    if (parent)
        printf(" rss_base_kb=%ld rss_peak_kb=%ld", rss_base, rss_peak);
    printf("\n");
    return complete == streams ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "port")) {
        int bound, fd = listen_on(0, &bound);
        close(fd);
        printf("%d\n", bound);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "server"))
        server(atoi(argv[2]));
    if (argc >= 6 && !strcmp(argv[1], "client")) {
        codecs_init();
        return client(atoi(argv[2]), argv[3], argv[4], atoi(argv[5]),
                      argc > 6 ? atoi(argv[6]) : 0);
    }
    if (argc == 3 && !strcmp(argv[1], "stat")) {
        long long ticks;
        long rss = children_stat(atoi(argv[2]), &ticks);
        printf("%ld %lld\n", rss, ticks);
        return 0;
    }
    fprintf(stderr, "usage: ssebench port | server PORT | client PORT PATH QUERY STREAMS [PARENT_PID]"
                    " | stat PARENT_PID\n");
    return 2;
}
