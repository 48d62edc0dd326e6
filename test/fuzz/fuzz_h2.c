/*
 * libFuzzer target: the proxy's downstream HTTP/2 path (proxy/h2.c on
 * nghttp2), driven as the engine drives it.
 *
 * The input is cut into reads (the first byte picks the read size) and fed
 * to a server session; each request head the codec hands over is parsed
 * with the HTTP/1.1 parser as the engine does, and answered in a shape the
 * input picks (a Content-Length body, a chunked body with trailers, no
 * body, written in two pieces, or the stream let go half-way); request body
 * bytes are acknowledged as they arrive, and the session's output goes to
 * an in-memory sink after every read. Invariants checked with
 * __builtin_trap():
 *  - every request handed over starts with a complete HTTP/1.1 head (the
 *    parser reads it whole; what follows it is body the codec gathered
 *    with it) or with one the parser refuses;
 *  - no callback names a stream the engine already let go of;
 *  - a session that failed stays failed (no more input is accepted).
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/h2_internal.h"
#include "../../proxy/http1_internal.h"

#define MAX_EX 256

typedef struct ex {
    px_h2_stream_t *s;
    bool gone; /* let go (detached) or closed */
    size_t body;
} ex_t;

typedef struct fz {
    const uint8_t *in;
    size_t len, pos;
    ex_t *ex[MAX_EX];
    size_t nex;
} fz_t;

static uint8_t pick(fz_t *f)
{
    return f->pos < f->len ? f->in[f->pos] : 0;
}

static void answer(fz_t *f, ex_t *e, bool bad)
{
    static const char *const shapes[] = {
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nx-envoy-overloaded: true\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\nuntil the end",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "garbage\r\n\r\n",
    };
    uint8_t b = pick(f);
    const char *r = bad ? "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n" : shapes[b % 7];
    size_t n = strlen(r), cut = (b >> 3) % (n + 1);
    px_h2_write(e->s, r, cut);
    if (b & 0x80) {
        /* let go half-way: the codec resets the stream */
        px_h2_detach(e->s);
        e->gone = true;
        return;
    }
    px_h2_write(e->s, r + cut, n - cut);
    px_h2_write_end(e->s);
    if (b & 0x40) {
        px_h2_detach(e->s);
        e->gone = true;
    }
}

static void *on_request(void *ud, px_h2_stream_t *s, const char *head, size_t len)
{
    fz_t *f = ud;
    if (f->nex == MAX_EX)
        return NULL;
    px_h1_msg_t *m = malloc(sizeof(*m));
    ex_t *e = calloc(1, sizeof(*e));
    if (m == NULL || e == NULL) {
        free(m);
        free(e);
        return NULL;
    }
    const char *err;
    int r = px_h1_parse_request(head, len, m, &err);
    if (r == -2 || (r > 0 && (size_t)r > len))
        __builtin_trap();
    e->s = s;
    if (r > 0)
        e->body = len - (size_t)r;
    f->ex[f->nex++] = e;
    answer(f, e, r < 0);
    free(m);
    return e;
}

static void on_data(void *ud, void *sud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    ex_t *e = sud;
    if (e->gone)
        __builtin_trap();
    e->body += n;
    px_h2_ack(e->s);
}

static void on_close(void *ud, void *sud, uint32_t error_code)
{
    (void)ud;
    (void)error_code;
    ex_t *e = sud;
    if (e->gone)
        __builtin_trap();
    e->gone = true;
}

static int sink(void *arg, const void *p, size_t n)
{
    (void)p;
    *(size_t *)arg += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const px_h2_cbs_t cbs = {on_request, on_data, on_close};
    fz_t f = {.in = data, .len = size};
    px_h2_opts_t o = {.max_concurrent_streams = 8, .window = 65535};
    px_h2_t *h = px_h2_new(false, &cbs, &f, &o);
    if (h == NULL)
        return 0;
    size_t out = 0;
    size_t step = size ? (size_t)data[0] % 64 + 1 : 1;
    bool failed = false;
    for (size_t off = size ? 1 : 0; off < size;) {
        size_t n = size - off < step ? size - off : step;
        f.pos = off;
        int r = px_h2_recv(h, data + off, n);
        if (failed && r == 0)
            __builtin_trap();
        if (r < 0)
            failed = true;
        px_h2_send(h, sink, &out);
        if (!px_h2_alive(h))
            break;
        off += n;
    }
    if (!failed)
        px_h2_goaway(h);
    px_h2_send(h, sink, &out);
    (void)px_h2_streams(h);
    px_h2_free(h);
    for (size_t i = 0; i < f.nex; i++)
        free(f.ex[i]);
    return 0;
}
