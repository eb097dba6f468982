/* fastpeer: the benchmark's C-speed backend and WebSocket load client (one epoll thread).
 *
 *   fastpeer server PORT
 *       prints "LISTENING <port>" then serves HTTP/1.1 keep-alive on 127.0.0.1:PORT:
 *         GET /bytes/<n>           n bytes (Content-Length), streamed from a static buffer
 *         GET anything else        a 128-byte body
 *         any request with a body  body read and discarded (Content-Length only), then 204
 *         Upgrade: websocket       RFC 6455 echo (each frame echoed unmasked, fin/opcode kept;
 *                                  ping answered with pong, close echoed then the socket closed)
 *   fastpeer client HOST PORT PATH CONNS WINDOW SIZE SECONDS WARMUP [HEADER ...]
 *       CONNS WebSocket connections, each keeping WINDOW masked binary messages of SIZE bytes
 *       in flight; counts echoed messages for SECONDS after WARMUP seconds and prints
 *       "messages=<n> bytes=<n> seconds=<f> errors=<n>".
 *
 * Build: cc -O2 -o fastpeer fastpeer.c   (bench/ compiles it on first use; Linux only.)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ SHA-1 and base64 */
static uint32_t rol(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static void base64(const uint8_t *in, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------ buffers */
typedef struct {
    uint8_t *p;
    size_t off, len, cap; /* valid bytes are p[off..len) */
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) abort();
    b->cap = cap;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int epfd;
static uint8_t scratch[1 << 18];
#define BIG_CHUNK (1 << 18)
static uint8_t bigbuf[BIG_CHUNK];

static void setup_socket(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void xor_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4]) {
    uint64_t m64;
    uint8_t m8[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    memcpy(&m64, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= m64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ mask[i & 3];
}

static size_t frame_header(uint8_t *h, uint8_t b0, uint64_t len, int masked) {
    uint8_t mbit = masked ? 0x80 : 0;
    h[0] = b0;
    if (len < 126) {
        h[1] = mbit | (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = mbit | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = mbit | 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* ------------------------------------------------------------------ server */
enum { M_HEAD, M_DISCARD, M_WS };

typedef struct {
    int fd, mode, closing;
    uint32_t events;
    uint64_t discard, bytes_left;
    buf_t in, out;
} conn_t;

static const char SMALL_BODY[] =
    "fastpeer says hello: this body is 128 bytes long, padded with dots...."
    "..........................................................\n";

static void out_append(conn_t *c, const void *d, size_t n) {
    buf_reserve(&c->out, n);
    memcpy(c->out.p + c->out.len, d, n);
    c->out.len += n;
}

static void conn_close(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
}

static int hdr_is(const uint8_t *line, size_t len, const char *name, const uint8_t **val, size_t *vlen) {
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp((const char *)line, name, nl)) return 0;
    const uint8_t *v = line + nl + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return 1;
}

static int contains_ci(const uint8_t *v, size_t n, const char *word) {
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (!strncasecmp((const char *)v + i, word, w)) return 1;
    return 0;
}

/* Returns -1: close; 1: stopped while a /bytes body is being sent; 0: needs more input. */
static int server_process(conn_t *c) {
    for (;;) {
        if (c->bytes_left || c->closing) return c->bytes_left ? 1 : 0;
        uint8_t *p = c->in.p + c->in.off;
        size_t n = c->in.len - c->in.off;
        if (c->mode == M_DISCARD) {
            size_t k = n < c->discard ? n : (size_t)c->discard;
            c->in.off += k;
            c->discard -= k;
            if (c->discard) return 0;
            c->mode = M_HEAD;
            static const char r204[] = "HTTP/1.1 204 No Content\r\n\r\n";
            out_append(c, r204, sizeof r204 - 1);
            continue;
        }
        if (c->mode == M_WS) {
            if (n < 2) return 0;
            uint8_t b0 = p[0], b1 = p[1];
            uint64_t plen = b1 & 0x7f;
            size_t h = 2;
            if (plen == 126) {
                if (n < 4) return 0;
                plen = (uint64_t)p[2] << 8 | p[3];
                h = 4;
            } else if (plen == 127) {
                if (n < 10) return 0;
                plen = 0;
                for (int i = 0; i < 8; i++) plen = plen << 8 | p[2 + i];
                h = 10;
            }
            uint8_t mask[4] = {0, 0, 0, 0};
            if (b1 & 0x80) {
                if (n < h + 4) return 0;
                memcpy(mask, p + h, 4);
                h += 4;
            }
            if (plen > (256u << 20)) return -1;
            if (n < h + plen) {
                buf_reserve(&c->in, h + plen - n);
                return 0;
            }
            int opcode = b0 & 0x0f;
            if (opcode != 0xA) { /* pongs are dropped; everything else echoed (ping as pong) */
                uint8_t ob0 = opcode == 9 ? (uint8_t)((b0 & 0xf0) | 0xA) : b0;
                uint8_t hdr[10];
                size_t hl = frame_header(hdr, ob0, plen, 0);
                buf_reserve(&c->out, hl + plen);
                memcpy(c->out.p + c->out.len, hdr, hl);
                xor_copy(c->out.p + c->out.len + hl, p + h, plen, mask);
                c->out.len += hl + plen;
                p = c->in.p + c->in.off; /* out and in are separate buffers: p is still valid */
            }
            c->in.off += h + plen;
            if (opcode == 8) c->closing = 1;
            continue;
        }
        uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) return n > 65536 ? -1 : 0;
        size_t hlen = (size_t)(end + 4 - p);
        const uint8_t *line = p, *stop = end + 2;
        int first = 1, upgrade = 0, closeconn = 0, expect = 0;
        uint64_t clen = 0;
        const uint8_t *path = NULL, *key = NULL;
        size_t pathlen = 0, keylen = 0;
        while (line < stop) {
            const uint8_t *eol = memmem(line, (size_t)(stop - line), "\r\n", 2);
            size_t ll = (size_t)(eol - line);
            const uint8_t *v;
            size_t vl;
            if (first) {
                const uint8_t *sp = memchr(line, ' ', ll);
                if (!sp) return -1;
                path = sp + 1;
                const uint8_t *sp2 = memchr(path, ' ', (size_t)(eol - path));
                pathlen = sp2 ? (size_t)(sp2 - path) : (size_t)(eol - path);
                first = 0;
            } else if (hdr_is(line, ll, "content-length", &v, &vl)) {
                clen = strtoull((const char *)v, NULL, 10);
            } else if (hdr_is(line, ll, "upgrade", &v, &vl)) {
                upgrade = contains_ci(v, vl, "websocket");
            } else if (hdr_is(line, ll, "sec-websocket-key", &v, &vl)) {
                key = v, keylen = vl;
            } else if (hdr_is(line, ll, "expect", &v, &vl)) {
                expect = contains_ci(v, vl, "100-continue");
            } else if (hdr_is(line, ll, "connection", &v, &vl)) {
                closeconn = contains_ci(v, vl, "close");
            }
            line = eol + 2;
        }
        c->in.off += hlen;
        char resp[512];
        if (upgrade && key && keylen < 100) {
            uint8_t cat[160], dig[20];
            char acc[40];
            memcpy(cat, key, keylen);
            memcpy(cat + keylen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
            sha1(cat, keylen + 36, dig);
            base64(dig, 20, acc);
            int k = snprintf(resp, sizeof resp,
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                             acc);
            out_append(c, resp, (size_t)k);
            c->mode = M_WS;
            continue;
        }
        if (clen) {
            static const char r100[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (expect) out_append(c, r100, sizeof r100 - 1);
            c->discard = clen;
            c->mode = M_DISCARD;
            continue;
        }
        const char *conn_hdr = closeconn ? "Connection: close\r\n" : "";
        if (pathlen > 7 && !memcmp(path, "/bytes/", 7)) {
            c->bytes_left = strtoull((const char *)path + 7, NULL, 10);
            int k = snprintf(resp, sizeof resp,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             "Content-Length: %llu\r\n%s\r\n",
                             (unsigned long long)c->bytes_left, conn_hdr);
            out_append(c, resp, (size_t)k);
        } else {
            int k = snprintf(resp, sizeof resp,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                             sizeof SMALL_BODY - 1, conn_hdr, SMALL_BODY);
            out_append(c, resp, (size_t)k);
        }
        if (closeconn) c->closing = 1;
    }
}

/* Returns -1 on a write error, else 0. */
static int server_flush(conn_t *c) {
    while (c->out.len > c->out.off) {
        ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
        if (w < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->out.off += (size_t)w;
    }
    c->out.off = c->out.len = 0;
    while (c->bytes_left) {
        size_t n = c->bytes_left < BIG_CHUNK ? (size_t)c->bytes_left : BIG_CHUNK;
        ssize_t w = write(c->fd, bigbuf, n);
        if (w < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->bytes_left -= (uint64_t)w;
    }
    return 0;
}

static void server_events(conn_t *c) {
    int pending = c->out.len > c->out.off || c->bytes_left;
    uint32_t want = (pending ? EPOLLOUT : 0) | ((c->out.len - c->out.off) > (16u << 20) ? 0 : EPOLLIN);
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->events = want;
    }
}

static void server_handle(conn_t *c, uint32_t ev) {
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        size_t want = c->mode == M_DISCARD ? sizeof scratch : 65536;
        if (c->mode == M_DISCARD && c->in.len == c->in.off) {
            ssize_t r = read(c->fd, scratch, want);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return conn_close(c);
            if (r > 0) {
                uint64_t k = (uint64_t)r < c->discard ? (uint64_t)r : c->discard;
                c->discard -= k;
                if ((uint64_t)r > k) { /* the next request started in the same read */
                    buf_reserve(&c->in, (size_t)r);
                    memcpy(c->in.p + c->in.len, scratch + k, (size_t)(r - (ssize_t)k));
                    c->in.len += (size_t)(r - (ssize_t)k);
                }
            }
        } else {
            buf_reserve(&c->in, want);
            ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return conn_close(c);
            if (r > 0) c->in.len += (size_t)r;
        }
    }
    for (;;) {
        int rc = server_process(c);
        if (rc < 0 || server_flush(c) < 0) return conn_close(c);
        if (rc == 1 && !c->bytes_left && c->out.len == c->out.off) continue;
        break;
    }
    if (c->closing && c->out.len == c->out.off && !c->bytes_left) return conn_close(c);
    server_events(c);
}

static int run_server(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4096)) {
        perror("fastpeer: bind/listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    memset(bigbuf, 'x', sizeof bigbuf);
    epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("LISTENING %d\n", ntohs(a.sin_port));
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setup_socket(fd);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    nc->events = EPOLLIN;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            server_handle(c, evs[i].events);
        }
    }
}

/* ------------------------------------------------------------------ client */
typedef struct {
    int fd, dead;
    uint32_t events;
    uint64_t to_send;
    size_t send_pos;
    uint8_t hdr[14];
    int hdr_have;
    uint64_t payload_left;
    int cur_fin_data;
} wsc_t;

static uint8_t *batch;
static size_t batch_len, frame_len;
static uint64_t msgs, bytes_in, errors, msg_size;

static int client_connect(const char *host, int port, const char *path, char **extra, int nextra) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char req[4096];
    int k = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
                     path, host, port);
    for (int i = 0; i < nextra; i++) k += snprintf(req + k, sizeof req - (size_t)k, "%s\r\n", extra[i]);
    k += snprintf(req + k, sizeof req - (size_t)k, "\r\n");
    if (write(fd, req, (size_t)k) != k) return close(fd), -1;
    char resp[4096];
    size_t got = 0;
    while (got < sizeof resp - 1) { /* read byte-wise up to the head's end: nothing follows it */
        ssize_t r = read(fd, resp + got, 1);
        if (r <= 0) return close(fd), -1;
        got++;
        if (got >= 4 && !memcmp(resp + got - 4, "\r\n\r\n", 4)) break;
    }
    resp[got] = 0;
    if (strncmp(resp, "HTTP/1.1 101", 12) || !strstr(resp, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
        fprintf(stderr, "fastpeer: handshake refused: %.200s\n", resp);
        return close(fd), -1;
    }
    setup_socket(fd);
    return fd;
}

static void client_events(wsc_t *c) {
    uint32_t want = EPOLLIN | (c->to_send ? EPOLLOUT : 0);
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->events = want;
    }
}

static void client_send(wsc_t *c) {
    while (c->to_send) {
        size_t n = batch_len - c->send_pos;
        if (n > c->to_send) n = (size_t)c->to_send;
        ssize_t w = write(c->fd, batch + c->send_pos, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) c->dead = 1;
            return;
        }
        c->send_pos = (c->send_pos + (size_t)w) % batch_len;
        c->to_send -= (uint64_t)w;
    }
}

static void client_read(wsc_t *c) {
    ssize_t r = read(c->fd, scratch, sizeof scratch);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        c->dead = 1;
        return;
    }
    if (r < 0) return;
    const uint8_t *p = scratch, *e = scratch + r;
    while (p < e) {
        if (c->payload_left) {
            uint64_t k = (uint64_t)(e - p) < c->payload_left ? (uint64_t)(e - p) : c->payload_left;
            p += k;
            c->payload_left -= k;
            bytes_in += k;
            if (!c->payload_left && c->cur_fin_data) msgs++, c->to_send += frame_len;
            continue;
        }
        c->hdr[c->hdr_have++] = *p++;
        if (c->hdr_have < 2) continue;
        int l7 = c->hdr[1] & 0x7f;
        int need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
        if (c->hdr_have < need) continue;
        uint64_t plen = (uint64_t)l7;
        if (l7 == 126) plen = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
        if (l7 == 127) {
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | c->hdr[2 + i];
        }
        int op = c->hdr[0] & 0x0f;
        c->cur_fin_data = (c->hdr[0] & 0x80) && (op == 1 || op == 2 || op == 0);
        c->hdr_have = 0;
        c->payload_left = plen;
        if (!plen && c->cur_fin_data) msgs++, c->to_send += frame_len;
    }
}

static int run_client(int argc, char **argv) {
    const char *host = argv[0], *path = argv[2];
    int port = atoi(argv[1]), conns = atoi(argv[3]), window = atoi(argv[4]);
    msg_size = strtoull(argv[5], NULL, 10);
    double secs = atof(argv[6]), warm = atof(argv[7]);
    char **extra = argv + 8;
    int nextra = argc - 8;
    uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78}, hdr[14];
    size_t hl = frame_header(hdr, 0x82, msg_size, 1);
    memcpy(hdr + hl, mask, 4);
    hl += 4;
    frame_len = hl + msg_size;
    size_t copies = frame_len >= 65536 ? 1 : 65536 / frame_len;
    if (copies > (size_t)window) copies = (size_t)window;
    if (!copies) copies = 1;
    batch_len = copies * frame_len;
    batch = malloc(batch_len);
    uint8_t *payload = malloc(msg_size + 1);
    memset(payload, 'm', msg_size);
    for (size_t i = 0; i < copies; i++) {
        memcpy(batch + i * frame_len, hdr, hl);
        xor_copy(batch + i * frame_len + hl, payload, msg_size, mask);
    }
    epfd = epoll_create1(0);
    wsc_t *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = client_connect(host, port, path, extra, nextra);
        if (cs[i].fd < 0) {
            fprintf(stderr, "fastpeer: connection %d failed\n", i);
            return 2;
        }
        cs[i].to_send = (uint64_t)window * frame_len;
        cs[i].events = EPOLLIN | EPOLLOUT;
        struct epoll_event ev = {.events = cs[i].events, .data.ptr = &cs[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    double t0 = now_s(), t_warm = t0 + warm, t_end = t_warm + secs, t_start = 0;
    uint64_t m0 = 0, b0 = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now_s();
        if (!t_start && t >= t_warm) t_start = t, m0 = msgs, b0 = bytes_in;
        if (t >= t_end) break;
        int n = epoll_wait(epfd, evs, 256, 20);
        for (int i = 0; i < n; i++) {
            wsc_t *c = evs[i].data.ptr;
            if (c->dead) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) client_read(c);
            if (!c->dead) client_send(c);
            if (c->dead) {
                errors++;
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            client_events(c);
        }
    }
    double t1 = now_s();
    printf("messages=%llu bytes=%llu seconds=%.6f errors=%llu\n", (unsigned long long)(msgs - m0),
           (unsigned long long)(bytes_in - b0), t1 - t_start, (unsigned long long)errors);
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && !strcmp(argv[1], "server")) return run_server(atoi(argv[2]));
    if (argc >= 10 && !strcmp(argv[1], "client")) return run_client(argc - 2, argv + 2);
    fprintf(stderr,
            "usage: fastpeer server PORT\n"
            "       fastpeer client HOST PORT PATH CONNS WINDOW SIZE SECONDS WARMUP [HEADER ...]\n");
    return 2;
}
