/*
 * grpc_server: the gRPC server side: listening, accepting, request
 * validation, method dispatch, responses and trailers. See grpc.h.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arena.h"
#include "grpc_internal.h"
#include "hmap.h"
#include "log.h"

typedef struct reg_method {
    char *path;
    grpc_method_t m;
    void *arg;
} reg_method_t;

struct grpc_server {
    loop_t *loop;
    int lfd;
    int port;
    loop_io_t *lio;
    loop_timer_t *accept_pause;
    tp_tls_ctx_t *tls;
    grpc_server_opts_t opts;
    hmap_t methods;
    h2conn_t *conns;
    size_t nconns, nstreams;
};

struct grpc_stream {
    h2stream_t base; /* first: the engine sees an h2stream_t */
    atomic_int refs;
    loop_t *loop;
    grpc_server_t *srv;
    tp_conn_t *tp;
    const reg_method_t *m;
    void *data;
    uint64_t deadline;
    h2hdrs_t resp; /* extra response headers */
    int status;
    char *status_msg; /* percent-encoded */
    bool opened, headers_sent, finished, trailers_sent;
};

#define S(st) ((grpc_stream_t *)(st))

/* --- streams ----------------------------------------------------------------- */

static void stream_free(grpc_stream_t *s)
{
    h2stream_release(&s->base);
    h2hdrs_free(&s->resp);
    free(s->status_msg);
    free(s);
}

grpc_stream_t *grpc_stream_ref(grpc_stream_t *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void grpc_stream_unref(grpc_stream_t *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        stream_free(s);
}

static void unref_cb(void *arg)
{
    grpc_stream_unref(arg);
}

const char *grpc_stream_header(const grpc_stream_t *s, const char *name)
{
    return h2hdrs_get(&s->base.hdrs, name);
}
const char *grpc_stream_path(const grpc_stream_t *s)
{
    return h2hdrs_get(&s->base.hdrs, ":path");
}
const char *grpc_stream_peer_addr(const grpc_stream_t *s)
{
    return s->tp ? tp_peer_addr(s->tp) : "unknown";
}
X509 *grpc_stream_peer_cert(const grpc_stream_t *s)
{
    return s->tp ? tp_peer_cert(s->tp) : NULL;
}
tp_conn_t *grpc_stream_transport(const grpc_stream_t *s)
{
    return s->tp;
}
uint64_t grpc_stream_deadline(const grpc_stream_t *s)
{
    return s->deadline;
}
loop_t *grpc_stream_loop(const grpc_stream_t *s)
{
    return s->loop;
}
void grpc_stream_set_data(grpc_stream_t *s, void *data)
{
    s->data = data;
}
void *grpc_stream_data(const grpc_stream_t *s)
{
    return s->data;
}
bool grpc_stream_closed(const grpc_stream_t *s)
{
    return s->base.closed || s->finished;
}
size_t grpc_stream_queued(const grpc_stream_t *s)
{
    return s->base.q.bytes;
}

int grpc_stream_add_header(grpc_stream_t *s, const char *name, const char *value)
{
    if (s->base.closed || s->headers_sent || !name || !value || !name[0])
        return -1;
    h2hdrs_add(&s->resp, name, strlen(name), value, strlen(value));
    return 0;
}

#define MAX_NV 40

/* :status 200, content-type and the extra headers; returns the count. */
static size_t response_nv(grpc_stream_t *s, nghttp2_nv *nv)
{
    size_t n = 0;
    nv[n++] = h2_nv(":status", "200");
    nv[n++] = h2_nv("content-type", "application/grpc");
    for (uint32_t off = 0; off < s->resp.len && n < MAX_NV - 2;) {
        const char *k = s->resp.buf + off;
        const char *v = k + strlen(k) + 1;
        nv[n++] = h2_nv(k, v);
        off += (uint32_t)(strlen(k) + strlen(v) + 2);
    }
    return n;
}

static size_t status_nv(grpc_stream_t *s, nghttp2_nv *nv, char *code, size_t codelen)
{
    size_t n = 0;
    snprintf(code, codelen, "%d", s->status);
    nv[n++] = h2_nv("grpc-status", code);
    if (s->status_msg && s->status_msg[0])
        nv[n++] = h2_nv("grpc-message", s->status_msg);
    return n;
}

void grpcs_trailers(h2stream_t *st, nghttp2_session *ng)
{
    grpc_stream_t *s = S(st);
    nghttp2_nv nv[2];
    char code[16];
    size_t n = status_nv(s, nv, code, sizeof(code));
    nghttp2_submit_trailer(ng, st->id, nv, n);
}

int grpc_stream_send_buf(grpc_stream_t *s, grpc_buf_t *b)
{
    h2conn_t *c = s->base.conn;
    if (s->base.closed || s->finished || !c || c->closing)
        return -1;
    h2stream_push(&s->base, b);
    if (!s->headers_sent) {
        nghttp2_nv nv[MAX_NV];
        size_t n = response_nv(s, nv);
        nghttp2_data_provider prd = {.source.ptr = &s->base, .read_callback = h2_data_read};
        if (nghttp2_submit_response(c->ng, s->base.id, nv, n, &prd) != 0)
            return -1;
        s->headers_sent = true;
    } else {
        h2stream_kick(&s->base);
    }
    h2conn_schedule_flush(c);
    return 0;
}

int grpc_stream_send(grpc_stream_t *s, const void *msg, size_t len)
{
    if (s->base.closed || s->finished)
        return -1;
    grpc_buf_t *b = grpc_buf_new(msg, len);
    int rc = grpc_stream_send_buf(s, b);
    grpc_buf_unref(b);
    return rc;
}

int grpc_stream_finish(grpc_stream_t *s, int status, const char *msg)
{
    h2conn_t *c = s->base.conn;
    if (s->base.closed || s->finished || !c || c->closing)
        return -1;
    s->finished = true;
    s->status = status;
    s->status_msg = grpc_pct_encode(msg);
    if (!s->headers_sent) {
        /* Trailers-only response: status in the one HEADERS frame. */
        nghttp2_nv nv[MAX_NV + 2];
        char code[16];
        size_t n = response_nv(s, nv);
        n += status_nv(s, nv + n, code, sizeof(code));
        s->headers_sent = true;
        if (nghttp2_submit_response(c->ng, s->base.id, nv, n, NULL) != 0)
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->base.id, NGHTTP2_INTERNAL_ERROR);
    } else {
        s->base.end_queued = true;
        h2stream_kick(&s->base);
    }
    h2conn_schedule_flush(c);
    return 0;
}

/* --- cross-thread variants ----------------------------------------------------- */

typedef struct async_op {
    grpc_stream_t *s;
    grpc_buf_t *b; /* send */
    int status;    /* finish */
    char *msg;
} async_op_t;

static void async_send(void *arg)
{
    async_op_t *op = arg;
    grpc_stream_send_buf(op->s, op->b);
    grpc_buf_unref(op->b);
    grpc_stream_unref(op->s);
    free(op);
}

static void async_finish(void *arg)
{
    async_op_t *op = arg;
    grpc_stream_finish(op->s, op->status, op->msg);
    free(op->msg);
    grpc_stream_unref(op->s);
    free(op);
}

int grpc_stream_send_async(grpc_stream_t *s, const void *msg, size_t len)
{
    async_op_t *op = mesh_xcalloc(1, sizeof(*op));
    op->s = s;
    op->b = grpc_buf_new(msg, len);
    if (loop_post(s->loop, async_send, op) < 0) {
        grpc_buf_unref(op->b);
        free(op);
        grpc_stream_unref(s);
        return -1;
    }
    return 0;
}

int grpc_stream_finish_async(grpc_stream_t *s, int status, const char *msg)
{
    async_op_t *op = mesh_xcalloc(1, sizeof(*op));
    op->s = s;
    op->status = status;
    op->msg = msg ? mesh_xstrdup(msg) : NULL;
    if (loop_post(s->loop, async_finish, op) < 0) {
        free(op->msg);
        free(op);
        grpc_stream_unref(s);
        return -1;
    }
    return 0;
}

/* --- engine callbacks ------------------------------------------------------------- */

void grpcs_begin_headers(h2conn_t *c, int32_t id)
{
    grpc_stream_t *s = mesh_xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->base.server = true;
    s->base.id = id;
    s->loop = c->loop;
    s->srv = c->srv;
    s->tp = c->tp;
    h2stream_link(c, &s->base);
    nghttp2_session_set_stream_user_data(c->ng, id, s);
    if (c->srv)
        c->srv->nstreams++;
}

static void http_refuse(grpc_stream_t *s, const char *code)
{
    h2conn_t *c = s->base.conn;
    nghttp2_nv nv[1] = {h2_nv(":status", code)};
    s->finished = s->headers_sent = true;
    nghttp2_submit_response(c->ng, s->base.id, nv, 1, NULL);
}

static bool grpc_content_type(const char *ct)
{
    if (!ct || strncmp(ct, "application/grpc", 16) != 0)
        return false;
    return ct[16] == 0 || ct[16] == '+' || ct[16] == ';';
}

static void on_request(h2conn_t *c, grpc_stream_t *s)
{
    const char *method = grpc_stream_header(s, ":method");
    const char *path = grpc_stream_path(s);
    if (!method || strcmp(method, "POST") != 0) {
        http_refuse(s, "405");
        return;
    }
    if (!grpc_content_type(grpc_stream_header(s, "content-type"))) {
        http_refuse(s, "415");
        return;
    }
    const reg_method_t *m = c->srv && path ? hmap_get(&c->srv->methods, path) : NULL;
    if (!m) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %.250s", path ? path : "(none)");
        grpc_stream_finish(s, GRPC_UNIMPLEMENTED, msg);
        return;
    }
    int64_t to = grpc_parse_timeout(grpc_stream_header(s, "grpc-timeout"));
    if (to >= 0)
        s->deadline = loop_now(c->loop) + (uint64_t)to;
    s->m = m;
    s->data = m->arg;
    s->opened = true;
    m->m.on_open(s, m->arg);
}

int grpcs_frame_recv(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st)
{
    grpc_stream_t *s = S(st);
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        on_request(c, s);
    if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->closed && s->opened && !s->finished) {
        if (st->rx.hn)
            grpc_stream_finish(s, GRPC_INTERNAL, "the request ended inside a message");
        else if (s->m->m.on_half_close)
            s->m->m.on_half_close(s, s->data);
    }
    return c->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static void deliver(h2stream_t *st, const uint8_t *msg, size_t len)
{
    grpc_stream_t *s = S(st);
    if (!s->finished && s->m->m.on_message)
        s->m->m.on_message(s, s->data, msg, len);
}

void grpcs_data(h2stream_t *st, const uint8_t *data, size_t len)
{
    grpc_stream_t *s = S(st);
    if (!s->opened || s->finished)
        return;
    h2conn_t *c = st->conn;
    int r = h2stream_rx(st, data, len, deliver);
    if (r == GRPC_RESOURCE_EXHAUSTED) {
        char msg[160];
        snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %zu)", st->rx.need,
                 c->max_recv);
        grpc_stream_finish(s, GRPC_RESOURCE_EXHAUSTED, msg);
    } else if (r == GRPC_UNIMPLEMENTED) {
        grpc_stream_finish(s, GRPC_UNIMPLEMENTED,
                           "compressed messages are not supported (no grpc-encoding)");
    } else if (r < 0) {
        c->rx_buffered = H2_MAX_BUFFERED + 1; /* the engine closes the connection */
    }
}

void grpcs_frame_sent(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st)
{
    grpc_stream_t *s = S(st);
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return;
    s->trailers_sent = true;
    /* The client may still be sending: tell it to stop (gRPC's way of
     * ending a call early). */
    if (!nghttp2_session_get_stream_remote_close(c->ng, st->id))
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
}

void grpcs_stream_closed(h2stream_t *st, uint32_t error_code, bool conn_lost)
{
    grpc_stream_t *s = S(st);
    h2conn_t *c = st->conn;
    bool cancel =
        !s->trailers_sent && !(s->finished && error_code == NGHTTP2_NO_ERROR && !conn_lost);
    st->closed = true;
    h2stream_unlink(st);
    st->conn = NULL;
    if (c && c->srv)
        c->srv->nstreams--;
    if (s->opened) {
        const grpc_method_t *m = &s->m->m;
        if (cancel && m->on_cancel)
            m->on_cancel(s, s->data);
        if (m->on_close)
            m->on_close(s, s->data);
    }
    loop_defer(s->loop, unref_cb, s);
}

void grpcs_writable(h2stream_t *st)
{
    grpc_stream_t *s = S(st);
    if (s->opened && !s->finished && s->m->m.on_writable)
        s->m->m.on_writable(s, s->data);
}

void grpcs_conn_closed(h2conn_t *c)
{
    grpc_server_t *srv = c->srv;
    if (!srv)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    c->srv = NULL;
    if (c->reason[0])
        log_debug("grpc: connection from %s closed: %s", c->tp ? tp_peer_addr(c->tp) : "?",
                  c->reason);
}

/* --- server ---------------------------------------------------------------------- */

static void on_hs_timeout(loop_timer_t *t, void *arg)
{
    (void)t;
    h2conn_t *c = arg;
    snprintf(c->reason, sizeof(c->reason), "no %s within %u ms",
             c->ready ? "HTTP/2 preface" : "TLS handshake",
             c->srv ? c->srv->opts.handshake_timeout_ms : 0);
    h2conn_close(c, NULL);
}

static void accept_resume(loop_timer_t *t, void *arg)
{
    (void)t;
    grpc_server_t *srv = arg;
    loop_io_modify(srv->lio, LOOP_READ);
}

static void accept_one(grpc_server_t *srv, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    tp_conn_t *tp = srv->tls ? tp_conn_tls_server(fd, srv->tls) : tp_conn_plain(fd);
    if (!tp)
        return;
    h2conn_t *c = h2conn_new(srv->loop, true);
    c->tp = tp;
    c->srv = srv;
    c->max_recv = srv->opts.max_recv_msg;
    c->low_water = srv->opts.write_low_water;
    c->max_streams = srv->opts.max_concurrent_streams;
    c->ka_ms = srv->opts.keepalive_ms;
    c->ka_timeout_ms = srv->opts.keepalive_timeout_ms;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    c->io = loop_io_add(srv->loop, fd, LOOP_READ, h2conn_io, c);
    if (!c->io) {
        h2conn_close(c, "cannot watch the socket");
        return;
    }
    c->hs_timer = loop_timer_new(srv->loop, on_hs_timeout, c);
    loop_timer_start(c->hs_timer, srv->opts.handshake_timeout_ms, 0);
    h2conn_start_keepalive(c);
    if (!srv->tls && h2conn_ready(c) == 0)
        h2conn_flush(c);
}

static void on_accept(loop_io_t *io, int fd, unsigned events, void *arg)
{
    (void)io;
    (void)events;
    grpc_server_t *srv = arg;
    for (int i = 0; i < 128; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("grpc: accept on port %d: %s; pausing accepts for 100 ms", srv->port,
                         strerror(errno));
                loop_io_modify(srv->lio, 0);
                loop_timer_start(srv->accept_pause, 100, 0);
            }
            break;
        }
        accept_one(srv, cfd);
    }
}

grpc_server_t *grpc_server_new(loop_t *loop, const grpc_server_opts_t *opts, char *err,
                               size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    grpc_server_t *srv = mesh_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->opts = *opts;
    srv->opts.listen = NULL;
    if (!srv->opts.max_recv_msg)
        srv->opts.max_recv_msg = GRPC_DEFAULT_MAX_RECV;
    if (!srv->opts.max_concurrent_streams)
        srv->opts.max_concurrent_streams = 10000;
    if (!srv->opts.keepalive_timeout_ms)
        srv->opts.keepalive_timeout_ms = 20000;
    if (!srv->opts.handshake_timeout_ms)
        srv->opts.handshake_timeout_ms = 10000;
    srv->lfd = tp_listen(opts->listen, 1024, &srv->port, err, errlen);
    if (srv->lfd < 0) {
        free(srv);
        return NULL;
    }
    srv->lio = loop_io_add(loop, srv->lfd, LOOP_READ, on_accept, srv);
    if (!srv->lio) {
        snprintf(err, errlen, "listen %s: cannot watch the socket: %s", opts->listen,
                 strerror(errno));
        close(srv->lfd);
        free(srv);
        return NULL;
    }
    srv->accept_pause = loop_timer_new(loop, accept_resume, srv);
    if (opts->tls)
        srv->tls = tp_tls_ctx_ref(opts->tls);
    srv->opts.tls = NULL;
    return srv;
}

int grpc_server_register(grpc_server_t *srv, const char *path, const grpc_method_t *m, void *arg)
{
    if (!path || path[0] != '/' || !strchr(path + 1, '/') || !m || !m->on_open)
        return -1;
    if (hmap_get(&srv->methods, path))
        return -1;
    reg_method_t *r = mesh_xcalloc(1, sizeof(*r));
    r->path = mesh_xstrdup(path);
    r->m = *m;
    r->arg = arg;
    hmap_put(&srv->methods, r->path, r);
    return 0;
}

int grpc_server_port(const grpc_server_t *srv)
{
    return srv->port;
}
size_t grpc_server_connections(const grpc_server_t *srv)
{
    return srv->nconns;
}
size_t grpc_server_streams(const grpc_server_t *srv)
{
    return srv->nstreams;
}

void grpc_server_free(grpc_server_t *srv)
{
    if (!srv)
        return;
    loop_io_del(srv->lio);
    close(srv->lfd);
    loop_timer_free(srv->accept_pause);
    while (srv->conns)
        h2conn_close(srv->conns, "server shutting down");
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&srv->methods, &it, &k, &v)) {
        reg_method_t *r = v;
        free(r->path);
        free(r);
    }
    hmap_clear(&srv->methods);
    tp_tls_ctx_unref(srv->tls);
    free(srv);
}
