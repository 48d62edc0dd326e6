/*
 * grpc: shared message buffers, the HTTP/2 connection engine on nghttp2
 * (I/O, flow-controlled sends from the stream queues, keepalive), message
 * framing and header helpers. Server and client specifics live in
 * grpc_server.c and grpc_client.c. See grpc.h and grpc_internal.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "grpc_internal.h"
#include "log.h"

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *grpc_status_name(int status)
{
    if (status < 0 || status > GRPC_UNAUTHENTICATED)
        return "UNKNOWN";
    return status_names[status];
}

/* --- buffers -------------------------------------------------------------- */

grpc_buf_t *grpc_buf_alloc(size_t len)
{
    grpc_buf_t *b = mesh_xmalloc(sizeof(*b) + GRPC_PREFIX + len);
    atomic_init(&b->refs, 1);
    b->len = len;
    b->bytes[0] = 0;
    b->bytes[1] = (uint8_t)(len >> 24);
    b->bytes[2] = (uint8_t)(len >> 16);
    b->bytes[3] = (uint8_t)(len >> 8);
    b->bytes[4] = (uint8_t)len;
    return b;
}

grpc_buf_t *grpc_buf_new(const void *data, size_t len)
{
    grpc_buf_t *b = grpc_buf_alloc(len);
    if (len)
        memcpy(b->bytes + GRPC_PREFIX, data, len);
    return b;
}

uint8_t *grpc_buf_data(grpc_buf_t *b)
{
    return b->bytes + GRPC_PREFIX;
}
size_t grpc_buf_len(const grpc_buf_t *b)
{
    return b->len;
}

grpc_buf_t *grpc_buf_ref(grpc_buf_t *b)
{
    atomic_fetch_add(&b->refs, 1);
    return b;
}

void grpc_buf_unref(grpc_buf_t *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

/* --- encoding helpers --------------------------------------------------------- */

nghttp2_nv h2_nv(const char *name, const char *value)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP2_NV_FLAG_NONE};
}

char *grpc_pct_encode(const char *msg)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!msg)
        msg = "";
    size_t n = strlen(msg);
    char *out = mesh_xmalloc(3 * n + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        } else {
            *o++ = (char)*p;
        }
    }
    *o = 0;
    return out;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

char *grpc_pct_decode(const char *msg)
{
    if (!msg)
        return mesh_xstrdup("");
    char *out = mesh_xmalloc(strlen(msg) + 1), *o = out;
    for (const char *p = msg; *p; p++) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

int64_t grpc_parse_timeout(const char *v)
{
    if (!v)
        return -1;
    size_t n = strlen(v);
    if (n < 2 || n > 9)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    switch (v[n - 1]) {
    case 'H':
        return x * 3600000;
    case 'M':
        return x * 60000;
    case 'S':
        return x * 1000;
    case 'm':
        return x;
    case 'u':
        return (x + 999) / 1000;
    case 'n':
        return (x + 999999) / 1000000;
    default:
        return -1;
    }
}

/* --- headers ------------------------------------------------------------------- */

void h2hdrs_add(h2hdrs_t *h, const char *name, size_t nl, const char *value, size_t vl)
{
    size_t need = h->len + nl + vl + 2;
    if (need > h->cap) {
        size_t cap = h->cap ? h->cap : 256;
        while (cap < need)
            cap *= 2;
        h->buf = mesh_xrealloc(h->buf, cap);
        h->cap = (uint32_t)cap;
    }
    memcpy(h->buf + h->len, name, nl);
    h->buf[h->len + nl] = 0;
    memcpy(h->buf + h->len + nl + 1, value, vl);
    h->buf[h->len + nl + 1 + vl] = 0;
    h->len = (uint32_t)need;
}

const char *h2hdrs_get(const h2hdrs_t *h, const char *name)
{
    uint32_t off = 0;
    while (off < h->len) {
        const char *n = h->buf + off;
        size_t nl = strlen(n);
        const char *v = n + nl + 1;
        if (strcmp(n, name) == 0)
            return v;
        off += (uint32_t)(nl + strlen(v) + 2);
    }
    return NULL;
}

void h2hdrs_free(h2hdrs_t *h)
{
    free(h->buf);
    h->buf = NULL;
    h->len = h->cap = 0;
}

/* --- streams ------------------------------------------------------------------- */

void h2stream_link(h2conn_t *c, h2stream_t *st)
{
    st->conn = c;
    st->prev = NULL;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
}

void h2stream_unlink(h2stream_t *st)
{
    h2conn_t *c = st->conn;
    if (!c)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else if (c->streams == st)
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    if (st->rx.buf) {
        c->rx_buffered -= st->rx.need;
        free(st->rx.buf);
        st->rx.buf = NULL;
    }
}

void h2stream_release(h2stream_t *st)
{
    for (uint32_t i = 0; i < st->q.n; i++)
        grpc_buf_unref(st->q.items[(st->q.head + i) % st->q.cap]);
    free(st->q.items);
    memset(&st->q, 0, sizeof(st->q));
    free(st->rx.buf);
    st->rx.buf = NULL;
    h2hdrs_free(&st->hdrs);
}

void h2stream_push(h2stream_t *st, grpc_buf_t *b)
{
    h2queue_t *q = &st->q;
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 4;
        grpc_buf_t **items = mesh_xmalloc(cap * sizeof(*items));
        for (uint32_t i = 0; i < q->n; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->n) % q->cap] = grpc_buf_ref(b);
    q->n++;
    q->bytes += GRPC_PREFIX + b->len;
    h2conn_t *c = st->conn;
    if (c && q->bytes > c->low_water)
        st->want_writable = true;
}

void h2stream_kick(h2stream_t *st)
{
    h2conn_t *c = st->conn;
    if (!c || !c->ng || st->id <= 0 || !st->data_deferred)
        return;
    st->data_deferred = false;
    nghttp2_session_resume_data(c->ng, st->id);
}

/* Copies n queued bytes to dst, dropping the buffers it empties. */
static void queue_take(h2queue_t *q, uint8_t *dst, size_t n)
{
    while (n) {
        grpc_buf_t *b = q->items[q->head];
        size_t blen = GRPC_PREFIX + b->len;
        size_t take = blen - q->off;
        if (take > n)
            take = n;
        memcpy(dst, b->bytes + q->off, take);
        dst += take;
        n -= take;
        q->off += take;
        q->bytes -= take;
        if (q->off == blen) {
            grpc_buf_unref(b);
            q->head = (q->head + 1) % q->cap;
            q->n--;
            q->off = 0;
        }
    }
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)buf;
    (void)ud;
    h2stream_t *st = src->ptr;
    size_t avail = st->q.bytes - st->q.claimed;
    if (avail == 0 && !st->end_queued) {
        st->data_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    st->q.claimed += n;
    if (st->end_queued && n == avail) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->server) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            grpcs_trailers(st, ng);
        }
    }
    return (ssize_t)n;
}

const nghttp2_data_source_read_callback h2_data_read = data_read;

int h2stream_rx(h2stream_t *st, const uint8_t *data, size_t len,
                void (*deliver)(h2stream_t *st, const uint8_t *msg, size_t len))
{
    h2rx_t *rx = &st->rx;
    h2conn_t *c = st->conn;
    while (len && !rx->skip && !st->closed) {
        if (rx->hn < GRPC_PREFIX) {
            size_t take = GRPC_PREFIX - rx->hn;
            if (take > len)
                take = len;
            memcpy(rx->hdr + rx->hn, data, take);
            rx->hn += (uint8_t)take;
            data += take;
            len -= take;
            if (rx->hn < GRPC_PREFIX)
                break;
            if (rx->hdr[0] & 1) {
                rx->skip = true;
                return GRPC_UNIMPLEMENTED;
            }
            rx->need = (uint32_t)rx->hdr[1] << 24 | (uint32_t)rx->hdr[2] << 16 |
                       (uint32_t)rx->hdr[3] << 8 | rx->hdr[4];
            if (rx->need > c->max_recv) {
                rx->skip = true;
                return GRPC_RESOURCE_EXHAUSTED;
            }
            rx->have = 0;
            if (len >= rx->need) {
                /* The whole message is in this chunk: no copy. */
                size_t need = rx->need;
                rx->hn = 0;
                deliver(st, data, need);
                data += need;
                len -= need;
                continue;
            }
            if (c->rx_buffered + rx->need > H2_MAX_BUFFERED)
                return -1;
            rx->buf = mesh_xmalloc(rx->need);
            c->rx_buffered += rx->need;
        }
        size_t take = rx->need - rx->have;
        if (take > len)
            take = len;
        memcpy(rx->buf + rx->have, data, take);
        rx->have += take;
        data += take;
        len -= take;
        if (rx->have == rx->need) {
            uint8_t *msg = rx->buf;
            size_t n = rx->need;
            rx->buf = NULL;
            rx->hn = 0;
            c->rx_buffered -= n;
            deliver(st, msg, n);
            free(msg);
        }
    }
    return 0;
}

/* --- the thread-local write scratch buffer ----------------------------------------- */

#define SCRATCH_CAP (64u * 1024)

static _Thread_local uint8_t *scratch;
static _Thread_local size_t scratch_len;
static pthread_key_t scratch_key; /* frees a thread's scratch when it exits */

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t length, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    (void)ud;
    size_t room = SCRATCH_CAP - scratch_len;
    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (length > room)
        length = room;
    memcpy(scratch + scratch_len, data, length);
    scratch_len += length;
    return (ssize_t)length;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    h2conn_t *c = ud;
    h2stream_t *st = src->ptr;
    size_t pad = frame->data.padlen;
    size_t need = 9 + length + pad;
    if (SCRATCH_CAP - scratch_len < need)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(scratch + scratch_len, framehd, 9);
    scratch_len += 9;
    if (pad) {
        scratch[scratch_len++] = (uint8_t)(pad - 1);
    }
    queue_take(&st->q, scratch + scratch_len, length);
    st->q.claimed -= length;
    scratch_len += length;
    if (pad > 1) {
        memset(scratch + scratch_len, 0, pad - 1);
        scratch_len += pad - 1;
    }
    if (st->want_writable && st->q.bytes <= c->low_water && !st->in_wlist) {
        st->in_wlist = true;
        st->wnext = c->wlist;
        c->wlist = st;
    }
    return 0;
}

/* --- nghttp2 callbacks ---------------------------------------------------------------- */

static h2stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(ng, id) : NULL;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    h2conn_t *c = ud;
    if (c->closing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (c->server && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        grpcs_begin_headers(c, f->hd.stream_id);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    h2conn_t *c = ud;
    if (c->closing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    h2stream_t *st = stream_of(ng, f->hd.stream_id);
    if (!st || st->closed)
        return 0;
    if (st->hdrs.len + nl + vl + 2 > H2_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream */
    h2hdrs_add(&st->hdrs, (const char *)name, nl, (const char *)value, vl);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (c->closing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (!c->got_frame) {
        c->got_frame = true;
        if (c->hs_timer)
            loop_timer_stop(c->hs_timer);
    }
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->ping_out = false;
        return 0;
    }
    h2stream_t *st = stream_of(ng, f->hd.stream_id);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    if (!st || st->closed)
        return 0;
    return c->server ? grpcs_frame_recv(c, f, st) : grpcc_frame_recv(c, f, st);
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    h2conn_t *c = ud;
    if (c->closing)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    h2stream_t *st = stream_of(ng, id);
    if (!st || st->closed)
        return 0;
    if (c->server)
        grpcs_data(st, data, len);
    else
        grpcc_data(st, data, len);
    if (c->rx_buffered > H2_MAX_BUFFERED) {
        snprintf(c->reason, sizeof(c->reason), "more than %u bytes of partial messages buffered",
                 H2_MAX_BUFFERED);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return c->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (c->closing || !c->server)
        return 0;
    h2stream_t *st = stream_of(ng, f->hd.stream_id);
    if (st && !st->closed)
        grpcs_frame_sent(c, f, st);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    h2conn_t *c = ud;
    h2stream_t *st = stream_of(ng, id);
    if (!st || st->closed)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (c->server)
        grpcs_stream_closed(st, error_code, false);
    else
        grpcc_stream_closed(st, error_code, false);
    return 0;
}

static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;
static nghttp2_session_callbacks *cbs;
static nghttp2_option *opts_server, *opts_client;

static void cbs_init(void)
{
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    if (pthread_key_create(&scratch_key, free) != 0)
        abort();
    if (nghttp2_option_new(&opts_server) != 0 || nghttp2_option_new(&opts_client) != 0)
        abort();
    nghttp2_option_set_max_send_header_block_length(opts_server, 64 * 1024);
    nghttp2_option_set_max_outbound_ack(opts_server, 1000);
    nghttp2_option_set_max_settings(opts_server, 32);
    nghttp2_option_set_peer_max_concurrent_streams(opts_client, 100);
}

/* --- connections -------------------------------------------------------------------- */

h2conn_t *h2conn_new(loop_t *loop, bool server)
{
    h2conn_t *c = mesh_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->server = server;
    c->fd = -1;
    c->max_recv = GRPC_DEFAULT_MAX_RECV;
    c->last_recv = loop_now(loop);
    return c;
}

int h2conn_ready(h2conn_t *c)
{
    pthread_once(&cbs_once, cbs_init);
    int rv = c->server ? nghttp2_session_server_new2(&c->ng, cbs, c, opts_server)
                       : nghttp2_session_client_new2(&c->ng, cbs, c, opts_client);
    if (rv != 0) {
        h2conn_close(c, "cannot create an HTTP/2 session");
        return -1;
    }
    nghttp2_settings_entry s[4];
    size_t n = 0;
    if (c->server) {
        s[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->max_streams};
    } else {
        s[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    }
    s[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_WINDOW};
    s[n++] =
        (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_BYTES * 2};
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, s, n) != 0 ||
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)H2_CONN_WINDOW) != 0) {
        h2conn_close(c, "cannot send HTTP/2 settings");
        return -1;
    }
    c->ready = true;
    return 0;
}

static void conn_free(void *arg)
{
    h2conn_t *c = arg;
    if (c->ng)
        nghttp2_session_del(c->ng);
    if (c->tp)
        tp_close(c->tp);
    else if (c->fd >= 0)
        close(c->fd);
    free(c->pend);
    free(c);
}

void h2conn_close(h2conn_t *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    if (reason && !c->reason[0])
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
    loop_io_del(c->io);
    c->io = NULL;
    loop_timer_free(c->ka_timer);
    loop_timer_free(c->hs_timer);
    c->ka_timer = c->hs_timer = NULL;
    /* Detach the streams first so callbacks see them closed. */
    h2stream_t *st = c->streams;
    while (st) {
        h2stream_t *next = st->next;
        if (c->server)
            grpcs_stream_closed(st, NGHTTP2_CANCEL, true);
        else
            grpcc_stream_closed(st, NGHTTP2_CANCEL, true);
        st = next;
    }
    c->streams = NULL;
    if (c->server)
        grpcs_conn_closed(c);
    else
        grpcc_conn_closed(c);
    loop_defer(c->loop, conn_free, c);
}

void h2conn_set_interest(h2conn_t *c)
{
    if (c->closing || !c->io)
        return;
    unsigned ev;
    if (c->connecting)
        ev = LOOP_WRITE;
    else if (!c->ready)
        ev = tp_want(c->tp);
    else {
        ev = LOOP_READ;
        if (c->pend_len || c->read_wants_write)
            ev |= LOOP_WRITE;
    }
    loop_io_modify(c->io, ev);
}

/* Writes the leftover bytes; 1 when all went, 0 when blocked, -1 on error. */
static int write_pend(h2conn_t *c)
{
    while (c->pend_len) {
        ssize_t w = tp_write(c->tp, c->pend + c->pend_off, c->pend_len);
        if (w == TP_AGAIN)
            return 0;
        if (w < 0) {
            h2conn_close(c, tp_error(c->tp));
            return -1;
        }
        c->pend_off += (size_t)w;
        c->pend_len -= (size_t)w;
    }
    free(c->pend);
    c->pend = NULL;
    c->pend_off = 0;
    return 1;
}

void h2conn_flush(h2conn_t *c)
{
    if (c->closing || !c->ready)
        return;
    if (!scratch) {
        scratch = mesh_xmalloc(SCRATCH_CAP);
        pthread_setspecific(scratch_key, scratch);
    }
    bool again;
    do {
        again = false;
        for (;;) {
            if (c->pend_len) {
                int r = write_pend(c);
                if (r < 0)
                    return;
                if (r == 0)
                    break;
            }
            scratch_len = 0;
            int rv = nghttp2_session_send(c->ng);
            if (c->closing)
                return;
            if (rv != 0) {
                snprintf(c->reason, sizeof(c->reason), "http/2 send: %s", nghttp2_strerror(rv));
                h2conn_close(c, NULL);
                return;
            }
            if (scratch_len == 0)
                break;
            size_t off = 0;
            while (off < scratch_len) {
                ssize_t w = tp_write(c->tp, scratch + off, scratch_len - off);
                if (w == TP_AGAIN)
                    break;
                if (w < 0) {
                    h2conn_close(c, tp_error(c->tp));
                    return;
                }
                off += (size_t)w;
            }
            if (off < scratch_len) {
                c->pend_len = scratch_len - off;
                c->pend_off = 0;
                c->pend = mesh_xmalloc(c->pend_len);
                memcpy(c->pend, scratch + off, c->pend_len);
                break;
            }
        }
        /* Writable notifications, after the frames went out; what their
         * callbacks queue goes out in another pass. */
        while (c->wlist && !c->closing) {
            h2stream_t *st = c->wlist;
            c->wlist = st->wnext;
            st->in_wlist = false;
            if (st->closed || !st->want_writable || st->q.bytes > c->low_water)
                continue;
            st->want_writable = false;
            if (c->server)
                grpcs_writable(st);
            else
                grpcc_writable(st);
            again = true;
        }
    } while (again && !c->closing && !c->pend_len);
    if (c->closing)
        return;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) && !c->pend_len) {
        h2conn_close(c, c->reason[0] ? NULL : "connection finished");
        return;
    }
    h2conn_set_interest(c);
}

static void deferred_flush(void *arg)
{
    h2conn_t *c = arg;
    c->flush_scheduled = false;
    h2conn_flush(c);
}

void h2conn_schedule_flush(h2conn_t *c)
{
    if (!c || c->closing || !c->ready || c->in_io || c->flush_scheduled)
        return;
    c->flush_scheduled = true;
    loop_defer(c->loop, deferred_flush, c);
}

static void on_ka_timer(loop_timer_t *t, void *arg)
{
    (void)t;
    h2conn_t *c = arg;
    uint64_t now = loop_now(c->loop);
    if (c->ping_out) {
        if (now - c->ping_sent >= c->ka_timeout_ms) {
            snprintf(c->reason, sizeof(c->reason), "keepalive ping not answered within %u ms",
                     c->ka_timeout_ms);
            h2conn_close(c, NULL);
        }
        return;
    }
    if (now - c->last_recv >= c->ka_ms && c->ready) {
        nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
        c->ping_out = true;
        c->ping_sent = now;
        h2conn_schedule_flush(c);
    }
}

void h2conn_start_keepalive(h2conn_t *c)
{
    if (!c->ka_ms)
        return;
    if (!c->ka_timeout_ms)
        c->ka_timeout_ms = 20000;
    uint32_t period = c->ka_ms < c->ka_timeout_ms ? c->ka_ms : c->ka_timeout_ms;
    period = period / 2 ? period / 2 : 1;
    c->ka_timer = loop_timer_new(c->loop, on_ka_timer, c);
    loop_timer_start(c->ka_timer, period, period);
}

void h2conn_io(loop_io_t *io, int fd, unsigned events, void *arg)
{
    (void)io;
    (void)fd;
    h2conn_t *c = arg;
    c->in_io = true;
    if (c->connecting) {
        grpcc_connected(c);
        if (c->closing || c->connecting)
            goto out;
    }
    if (!c->ready) {
        int r = tp_handshake(c->tp);
        if (r == TP_AGAIN) {
            h2conn_set_interest(c);
            goto out;
        }
        if (r < 0) {
            h2conn_close(c, tp_error(c->tp));
            goto out;
        }
        const char *alpn = tp_alpn(c->tp);
        if (alpn && strcmp(alpn, "h2") != 0) {
            snprintf(c->reason, sizeof(c->reason), "tls: negotiated protocol \"%s\" is not h2",
                     alpn);
            h2conn_close(c, NULL);
            goto out;
        }
        if (h2conn_ready(c) < 0)
            goto out;
        if (!c->server)
            grpcc_ready(c);
        events |= LOOP_READ;
    }
    if (events & (LOOP_READ | LOOP_WRITE)) {
        uint8_t buf[16384];
        c->read_wants_write = false;
        for (;;) {
            ssize_t n = tp_read(c->tp, buf, sizeof(buf));
            if (n > 0) {
                c->last_recv = loop_now(c->loop);
                ssize_t rv = nghttp2_session_mem_recv(c->ng, buf, (size_t)n);
                if (c->closing)
                    goto out;
                if (rv < 0) {
                    if (!c->reason[0])
                        snprintf(c->reason, sizeof(c->reason), "bad HTTP/2 from %s: %s",
                                 tp_peer_addr(c->tp), nghttp2_strerror((int)rv));
                    h2conn_close(c, NULL);
                    goto out;
                }
                continue;
            }
            if (n == 0) {
                h2conn_close(c, "peer closed the connection");
                goto out;
            }
            if (n == TP_AGAIN) {
                c->read_wants_write = tp_want(c->tp) == LOOP_WRITE;
                break;
            }
            h2conn_close(c, tp_error(c->tp));
            goto out;
        }
    }
    h2conn_flush(c);
out:
    c->in_io = false;
}
