/*
 * grpc_client: the gRPC client side: connecting (TCP, TLS), calls, status
 * from trailers, deadlines, and the blocking unary helper. See grpc.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "grpc_internal.h"
#include "log.h"

struct grpc_client {
    loop_t *loop;
    h2conn_t *conn; /* NULL once the connection is gone */
    tp_tls_ctx_t *tls;
    char *addr, *sni, *authority;
    uint32_t connect_timeout_ms;
    void (*on_disconnect)(grpc_client_t *c, const char *reason, void *arg);
    void *arg;
    bool dead, freed;
    char reason[200];
    grpc_call_t *pending; /* calls waiting for the connection, in order */
    grpc_call_t **pending_tail;
};

struct grpc_call {
    h2stream_t base; /* first: the engine sees an h2stream_t */
    grpc_client_t *cli;
    loop_t *loop;
    grpc_call_cbs_t cbs;
    void *arg;
    char *path;
    h2hdrs_t req;      /* extra request headers */
    uint64_t deadline; /* loop_now() time, 0: none */
    loop_timer_t *timer;
    bool submitted, send_closed, got_headers, done;
    grpc_call_t *pnext;
};

#define CALL(st) ((grpc_call_t *)(st))

static void call_free(void *arg)
{
    grpc_call_t *call = arg;
    h2stream_release(&call->base);
    h2hdrs_free(&call->req);
    free(call->path);
    free(call);
}

static void pending_remove(grpc_client_t *cli, grpc_call_t *call)
{
    for (grpc_call_t **pp = &cli->pending; *pp; pp = &(*pp)->pnext) {
        if (*pp == call) {
            *pp = call->pnext;
            if (!*pp)
                cli->pending_tail = pp;
            return;
        }
    }
}

/* Delivers the final status once and releases the call. */
static void call_finish(grpc_call_t *call, int status, const char *msg)
{
    if (call->done)
        return;
    call->done = true;
    loop_timer_free(call->timer);
    call->timer = NULL;
    h2conn_t *c = call->base.conn;
    if (!call->submitted) {
        pending_remove(call->cli, call);
    } else if (c) {
        if (c->ng && !call->base.closed)
            nghttp2_session_set_stream_user_data(c->ng, call->base.id, NULL);
        h2stream_unlink(&call->base);
    }
    call->base.closed = true;
    call->base.conn = NULL;
    if (call->cbs.on_close)
        call->cbs.on_close(call, call->arg, status, msg ? msg : "");
    loop_defer(call->loop, call_free, call);
}

/* Ends the call from this side: resets the stream, then reports status. */
static void call_fail_local(grpc_call_t *call, int status, const char *msg)
{
    if (call->done)
        return;
    h2conn_t *c = call->base.conn;
    if (call->submitted && c && !c->closing && !call->base.closed) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->base.id, NGHTTP2_CANCEL);
        h2conn_schedule_flush(c);
    }
    call_finish(call, status, msg);
}

static void on_deadline(loop_timer_t *t, void *arg)
{
    (void)t;
    grpc_call_t *call = arg;
    call_fail_local(call, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
}

#define MAX_NV 40

static int submit_call(grpc_call_t *call)
{
    grpc_client_t *cli = call->cli;
    h2conn_t *c = cli->conn;
    nghttp2_nv nv[MAX_NV];
    size_t n = 0;
    char timeout[32];
    nv[n++] = h2_nv(":method", "POST");
    nv[n++] = h2_nv(":scheme", cli->tls ? "https" : "http");
    nv[n++] = h2_nv(":path", call->path);
    nv[n++] = h2_nv(":authority", cli->authority);
    nv[n++] = h2_nv("content-type", "application/grpc");
    nv[n++] = h2_nv("te", "trailers");
    nv[n++] = h2_nv("user-agent", "meshd-grpc/1");
    if (call->deadline) {
        uint64_t now = loop_now(call->loop);
        uint64_t left = call->deadline > now ? call->deadline - now : 1;
        snprintf(timeout, sizeof(timeout), "%" PRIu64 "m", left > 99999999 ? 99999999 : left);
        nv[n++] = h2_nv("grpc-timeout", timeout);
    }
    for (uint32_t off = 0; off < call->req.len && n < MAX_NV;) {
        const char *k = call->req.buf + off;
        const char *v = k + strlen(k) + 1;
        nv[n++] = h2_nv(k, v);
        off += (uint32_t)(strlen(k) + strlen(v) + 2);
    }
    nghttp2_data_provider prd = {.source.ptr = &call->base, .read_callback = h2_data_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, call);
    if (id < 0)
        return -1;
    call->base.id = id;
    call->submitted = true;
    h2stream_link(c, &call->base);
    if (call->base.q.bytes > c->low_water)
        call->base.want_writable = true;
    h2conn_schedule_flush(c);
    return 0;
}

grpc_call_t *grpc_call_start(grpc_client_t *cli, const char *path, const char *const *headers,
                             uint32_t timeout_ms, const grpc_call_cbs_t *cbs, void *arg)
{
    if (!cli || cli->dead || cli->freed || !path || path[0] != '/')
        return NULL;
    grpc_call_t *call = mesh_xcalloc(1, sizeof(*call));
    call->cli = cli;
    call->loop = cli->loop;
    if (cbs)
        call->cbs = *cbs;
    call->arg = arg;
    call->path = mesh_xstrdup(path);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        h2hdrs_add(&call->req, headers[i], strlen(headers[i]), headers[i + 1],
                   strlen(headers[i + 1]));
    if (timeout_ms) {
        call->deadline = loop_clock_ms() + timeout_ms;
        call->timer = loop_timer_new(cli->loop, on_deadline, call);
        loop_timer_start(call->timer, timeout_ms, 0);
    }
    if (cli->conn && cli->conn->ready) {
        if (submit_call(call) < 0) {
            loop_timer_free(call->timer);
            call_free(call);
            return NULL;
        }
    } else {
        *cli->pending_tail = call;
        cli->pending_tail = &call->pnext;
    }
    return call;
}

int grpc_call_send_buf(grpc_call_t *call, grpc_buf_t *b)
{
    if (call->done || call->send_closed)
        return -1;
    h2stream_push(&call->base, b);
    if (call->submitted) {
        h2stream_kick(&call->base);
        h2conn_schedule_flush(call->base.conn);
    }
    return 0;
}

int grpc_call_send(grpc_call_t *call, const void *msg, size_t len)
{
    if (call->done || call->send_closed)
        return -1;
    grpc_buf_t *b = grpc_buf_new(msg, len);
    int rc = grpc_call_send_buf(call, b);
    grpc_buf_unref(b);
    return rc;
}

size_t grpc_call_queued(const grpc_call_t *call)
{
    return call->base.q.bytes;
}

int grpc_call_close_send(grpc_call_t *call)
{
    if (call->done || call->send_closed)
        return -1;
    call->send_closed = true;
    call->base.end_queued = true;
    if (call->submitted) {
        h2stream_kick(&call->base);
        h2conn_schedule_flush(call->base.conn);
    }
    return 0;
}

void grpc_call_cancel(grpc_call_t *call)
{
    call_fail_local(call, GRPC_CANCELLED, "call cancelled by the client");
}

const char *grpc_call_header(const grpc_call_t *call, const char *name)
{
    return h2hdrs_get(&call->base.hdrs, name);
}

/* --- engine callbacks ------------------------------------------------------------- */

void grpcc_connected(h2conn_t *c)
{
    grpc_client_t *cli = c->cli;
    int e = tp_connect_result(c->fd);
    if (e) {
        snprintf(c->reason, sizeof(c->reason), "connect %s: %s", cli ? cli->addr : "?",
                 strerror(e));
        h2conn_close(c, NULL);
        return;
    }
    c->connecting = false;
    int fd = c->fd;
    c->fd = -1;
    c->tp = cli->tls ? tp_conn_tls_client(fd, cli->tls, cli->sni) : tp_conn_plain(fd);
    if (!c->tp) {
        snprintf(c->reason, sizeof(c->reason), "connect %s: cannot start TLS", cli->addr);
        h2conn_close(c, NULL);
    }
}

void grpcc_ready(h2conn_t *c)
{
    grpc_client_t *cli = c->cli;
    if (!cli)
        return;
    while (cli->pending && !c->closing) {
        grpc_call_t *call = cli->pending;
        cli->pending = call->pnext;
        if (!cli->pending)
            cli->pending_tail = &cli->pending;
        call->pnext = NULL;
        call->submitted = true; /* not pending any more, whatever happens */
        if (submit_call(call) < 0) {
            call->submitted = false;
            call_finish(call, GRPC_UNAVAILABLE, "cannot open an HTTP/2 stream");
        }
    }
}

static int http_to_grpc(int http)
{
    switch (http) {
    case 400:
        return GRPC_INTERNAL;
    case 401:
        return GRPC_UNAUTHENTICATED;
    case 403:
        return GRPC_PERMISSION_DENIED;
    case 404:
        return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return GRPC_UNAVAILABLE;
    default:
        return GRPC_UNKNOWN;
    }
}

int grpcc_frame_recv(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st)
{
    grpc_call_t *call = CALL(st);
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        call->got_headers = true;
        if (call->cbs.on_headers)
            call->cbs.on_headers(call, call->arg);
    }
    if (!call->done && !st->closed && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        !nghttp2_session_get_stream_local_close(c->ng, st->id)) {
        /* The server is done; stop our side too so the stream closes. */
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    return c->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static void deliver(h2stream_t *st, const uint8_t *msg, size_t len)
{
    grpc_call_t *call = CALL(st);
    if (!call->done && call->cbs.on_message)
        call->cbs.on_message(call, call->arg, msg, len);
}

void grpcc_data(h2stream_t *st, const uint8_t *data, size_t len)
{
    grpc_call_t *call = CALL(st);
    h2conn_t *c = st->conn;
    if (call->done)
        return;
    int r = h2stream_rx(st, data, len, deliver);
    if (r == GRPC_RESOURCE_EXHAUSTED) {
        char msg[160];
        snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %zu)", st->rx.need,
                 c->max_recv);
        call_fail_local(call, GRPC_RESOURCE_EXHAUSTED, msg);
    } else if (r == GRPC_UNIMPLEMENTED) {
        call_fail_local(call, GRPC_INTERNAL,
                        "compressed response without grpc-encoding negotiation");
    } else if (r < 0) {
        c->rx_buffered = H2_MAX_BUFFERED + 1; /* the engine closes the connection */
    }
}

void grpcc_stream_closed(h2stream_t *st, uint32_t error_code, bool conn_lost)
{
    grpc_call_t *call = CALL(st);
    grpc_client_t *cli = call->cli;
    h2conn_t *c = st->conn;
    if (call->done)
        return;
    if (!conn_lost && c && c->ng)
        st->closed = true; /* nghttp2 already dropped its user data */
    const char *gs = h2hdrs_get(&st->hdrs, "grpc-status");
    char buf[300];
    if (gs) {
        char *end;
        long v = strtol(gs, &end, 10);
        char *m = grpc_pct_decode(h2hdrs_get(&st->hdrs, "grpc-message"));
        call_finish(call, (*end || v < 0 || v > 0xffff) ? GRPC_UNKNOWN : (int)v, m);
        free(m);
        return;
    }
    int status;
    if (conn_lost) {
        status = cli->freed ? GRPC_CANCELLED : GRPC_UNAVAILABLE;
        snprintf(buf, sizeof(buf), "%s: %s", cli->freed ? "client closed" : "connection lost",
                 c && c->reason[0] ? c->reason : "closed");
    } else if (call->got_headers && h2hdrs_get(&st->hdrs, ":status") &&
               strcmp(h2hdrs_get(&st->hdrs, ":status"), "200") != 0) {
        int http = atoi(h2hdrs_get(&st->hdrs, ":status"));
        status = http_to_grpc(http);
        snprintf(buf, sizeof(buf), "server answered HTTP status %d", http);
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
        status = GRPC_UNAVAILABLE;
        snprintf(buf, sizeof(buf), "stream refused by the server");
    } else if (error_code == NGHTTP2_CANCEL) {
        status = GRPC_CANCELLED;
        snprintf(buf, sizeof(buf), "stream cancelled by the server");
    } else if (error_code != NGHTTP2_NO_ERROR) {
        status = GRPC_INTERNAL;
        snprintf(buf, sizeof(buf), "stream reset by the server: %s",
                 nghttp2_http2_strerror(error_code));
    } else {
        status = GRPC_INTERNAL;
        snprintf(buf, sizeof(buf), "the server ended the stream without a status");
    }
    call_finish(call, status, buf);
}

void grpcc_writable(h2stream_t *st)
{
    grpc_call_t *call = CALL(st);
    if (!call->done && call->cbs.on_writable)
        call->cbs.on_writable(call, call->arg);
}

void grpcc_conn_closed(h2conn_t *c)
{
    grpc_client_t *cli = c->cli;
    if (!cli)
        return;
    c->cli = NULL;
    cli->conn = NULL;
    cli->dead = true;
    snprintf(cli->reason, sizeof(cli->reason), "%s",
             c->reason[0] ? c->reason : "connection closed");
    while (cli->pending) {
        grpc_call_t *call = cli->pending;
        char msg[300];
        snprintf(msg, sizeof(msg), "%s: %s", cli->freed ? "client closed" : "connection failed",
                 cli->reason);
        call_finish(call, cli->freed ? GRPC_CANCELLED : GRPC_UNAVAILABLE, msg);
    }
    if (!cli->freed && cli->on_disconnect)
        cli->on_disconnect(cli, cli->reason, cli->arg);
}

/* --- client ---------------------------------------------------------------------- */

static void on_connect_timeout(loop_timer_t *t, void *arg)
{
    (void)t;
    h2conn_t *c = arg;
    grpc_client_t *cli = c->cli;
    snprintf(c->reason, sizeof(c->reason), "connect %s: no HTTP/2 session within %u ms",
             cli ? cli->addr : "?", cli ? cli->connect_timeout_ms : 0);
    h2conn_close(c, NULL);
}

grpc_client_t *grpc_client_connect(loop_t *loop, const char *addr, const grpc_client_opts_t *opts,
                                   char *err, size_t errlen)
{
    char dummy[8];
    static const grpc_client_opts_t defaults = {0};
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!opts)
        opts = &defaults;
    int fd = tp_connect_start(addr, err, errlen);
    if (fd < 0)
        return NULL;
    grpc_client_t *cli = mesh_xcalloc(1, sizeof(*cli));
    cli->loop = loop;
    cli->addr = mesh_xstrdup(addr);
    cli->sni = opts->sni ? mesh_xstrdup(opts->sni) : NULL;
    cli->authority = mesh_xstrdup(opts->authority ? opts->authority : addr);
    cli->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 10000;
    cli->on_disconnect = opts->on_disconnect;
    cli->arg = opts->arg;
    cli->pending_tail = &cli->pending;
    if (opts->tls)
        cli->tls = tp_tls_ctx_ref(opts->tls);
    h2conn_t *c = h2conn_new(loop, false);
    c->cli = cli;
    c->fd = fd;
    c->connecting = true;
    c->max_recv = opts->max_recv_msg ? opts->max_recv_msg : GRPC_DEFAULT_MAX_RECV;
    c->ka_ms = opts->keepalive_ms;
    c->ka_timeout_ms = opts->keepalive_timeout_ms;
    cli->conn = c;
    c->io = loop_io_add(loop, fd, LOOP_WRITE, h2conn_io, c);
    if (!c->io) {
        snprintf(err, errlen, "connect %s: cannot watch the socket: %s", addr, strerror(errno));
        c->cli = NULL;
        h2conn_close(c, NULL);
        tp_tls_ctx_unref(cli->tls);
        free(cli->addr);
        free(cli->sni);
        free(cli->authority);
        free(cli);
        return NULL;
    }
    c->hs_timer = loop_timer_new(loop, on_connect_timeout, c);
    loop_timer_start(c->hs_timer, cli->connect_timeout_ms, 0);
    h2conn_start_keepalive(c);
    return cli;
}

bool grpc_client_alive(const grpc_client_t *c)
{
    return c && !c->dead && !c->freed;
}

static void client_release(void *arg)
{
    grpc_client_t *cli = arg;
    tp_tls_ctx_unref(cli->tls);
    free(cli->addr);
    free(cli->sni);
    free(cli->authority);
    free(cli);
}

void grpc_client_free(grpc_client_t *cli)
{
    if (!cli || cli->freed)
        return;
    cli->freed = true;
    if (cli->conn && !cli->conn->closing)
        h2conn_close(cli->conn, "closed by the client");
    loop_defer(cli->loop, client_release, cli);
}

/* --- blocking unary call ------------------------------------------------------------ */

typedef struct unary {
    loop_t *loop;
    int status;
    char *message;
    uint8_t *resp;
    size_t resp_len;
    int nmsg;
    bool too_many;
} unary_t;

static void unary_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    unary_t *u = arg;
    if (++u->nmsg > 1) {
        u->too_many = true;
        grpc_call_cancel(call);
        return;
    }
    u->resp = mesh_xmalloc(len ? len : 1);
    memcpy(u->resp, msg, len);
    u->resp_len = len;
}

static void unary_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    unary_t *u = arg;
    u->status = status;
    u->message = mesh_xstrdup(message);
    loop_stop(u->loop);
}

int grpc_unary_call(const char *addr, const grpc_client_opts_t *opts, const char *path,
                    const char *const *headers, const void *req, size_t req_len, uint8_t **resp,
                    size_t *resp_len, uint32_t timeout_ms, char **message)
{
    unary_t u = {.status = GRPC_UNKNOWN};
    char err[256] = "";
    grpc_client_t *cli = NULL;
    *resp = NULL;
    *resp_len = 0;
    if (message)
        *message = NULL;
    u.loop = loop_new();
    if (!u.loop) {
        u.status = GRPC_INTERNAL;
        u.message = mesh_xstrdup("cannot create an event loop");
        goto out;
    }
    cli = grpc_client_connect(u.loop, addr, opts, err, sizeof(err));
    if (!cli) {
        u.status = GRPC_UNAVAILABLE;
        u.message = mesh_xstrdup(err);
        goto out;
    }
    static const grpc_call_cbs_t cbs = {.on_message = unary_msg, .on_close = unary_close};
    grpc_call_t *call =
        grpc_call_start(cli, path, headers, timeout_ms ? timeout_ms : 30000, &cbs, &u);
    if (!call) {
        u.status = GRPC_INTERNAL;
        u.message = mesh_xstrdup("cannot start the call");
        goto out;
    }
    grpc_call_send(call, req, req_len);
    grpc_call_close_send(call);
    loop_run(u.loop);
    if (u.too_many) {
        u.status = GRPC_INTERNAL;
        free(u.message);
        u.message = mesh_xstrdup("the server sent more than one response message to a unary call");
    } else if (u.status == GRPC_OK && u.nmsg == 0) {
        u.status = GRPC_INTERNAL;
        free(u.message);
        u.message = mesh_xstrdup("the server sent no response message");
    }
out:
    grpc_client_free(cli);
    loop_free(u.loop);
    if (u.status == GRPC_OK) {
        *resp = u.resp;
        *resp_len = u.resp_len;
    } else {
        free(u.resp);
    }
    if (message)
        *message = u.message ? u.message : mesh_xstrdup("");
    else
        free(u.message);
    return u.status;
}
