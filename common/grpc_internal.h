/*
 * grpc_internal: what grpc.c (buffers, the HTTP/2 connection engine, message
 * framing), grpc_server.c and grpc_client.c share. Private to common/grpc*.
 *
 * One h2conn_t per TCP connection owns the transport, the nghttp2 session
 * and the list of its open streams. A stream (h2stream_t, the first member
 * of grpc_stream_t and grpc_call_t) owns its send queue of grpc_buf_t
 * references, its receive assembly buffer and its header block. Frames are
 * written through one thread-local 64 KiB scratch buffer; only what a
 * blocked socket did not take is copied to the connection (pend).
 */
#ifndef MESH_GRPC_INTERNAL_H
#define MESH_GRPC_INTERNAL_H

#include <stdatomic.h>

#include <nghttp2/nghttp2.h>

#include "grpc.h"

#define GRPC_PREFIX 5
#define H2_WINDOW (1u << 20)         /* per-stream receive window */
#define H2_CONN_WINDOW (16u << 20)   /* connection receive window */
#define H2_MAX_HEADER_BYTES 16384    /* per stream, names + values */
#define H2_MAX_BUFFERED (256u << 20) /* partial messages per connection */

struct grpc_buf {
    atomic_int refs;
    size_t len;      /* payload bytes (the prefix comes before) */
    uint8_t bytes[]; /* 5-byte prefix, then the payload */
};

/* "name\0value\0name\0value\0..." */
typedef struct h2hdrs {
    char *buf;
    uint32_t len, cap;
} h2hdrs_t;

typedef struct h2queue {
    grpc_buf_t **items;
    uint32_t head, n, cap;
    size_t off;     /* bytes of items[head] already taken */
    size_t bytes;   /* bytes not yet taken */
    size_t claimed; /* bytes promised to a DATA frame not yet written */
} h2queue_t;

typedef struct h2rx {
    uint8_t hdr[GRPC_PREFIX];
    uint8_t hn;
    uint32_t need;
    uint8_t *buf;
    size_t have;
    bool skip; /* the call failed: ignore the rest */
} h2rx_t;

typedef struct h2conn h2conn_t;
typedef struct h2stream h2stream_t;

struct h2stream {
    h2conn_t *conn; /* NULL once closed */
    int32_t id;
    bool server;
    bool closed;
    bool data_deferred; /* the data provider returned DEFERRED */
    bool end_queued;    /* finish/close_send: end after the queue */
    bool want_writable; /* queue was above the low-water mark */
    bool in_wlist;
    h2queue_t q;
    h2rx_t rx;
    h2hdrs_t hdrs;           /* received headers (and trailers on the client) */
    h2stream_t *prev, *next; /* the connection's open streams */
    h2stream_t *wnext;
};

struct h2conn {
    loop_t *loop;
    loop_io_t *io;
    tp_conn_t *tp;
    int fd; /* client: the socket while connecting */
    nghttp2_session *ng;
    bool server;
    bool connecting;
    bool ready;     /* handshake done, session made */
    bool got_frame; /* first frame (client preface / server SETTINGS) received */
    bool closing;
    bool in_io;
    bool flush_scheduled;
    bool read_wants_write;
    bool ping_out;
    grpc_server_t *srv;
    grpc_client_t *cli;
    size_t max_recv;
    size_t low_water;
    uint32_t max_streams; /* server: SETTINGS_MAX_CONCURRENT_STREAMS */
    uint8_t *pend;
    size_t pend_off, pend_len;
    size_t rx_buffered;
    uint64_t last_recv, ping_sent;
    uint32_t ka_ms, ka_timeout_ms;
    loop_timer_t *ka_timer, *hs_timer;
    h2stream_t *streams;
    h2stream_t *wlist;
    h2conn_t *prev, *next; /* the server's connections */
    char reason[160];
};

/* grpc.c: headers */
void h2hdrs_add(h2hdrs_t *h, const char *name, size_t nl, const char *value, size_t vl);
const char *h2hdrs_get(const h2hdrs_t *h, const char *name);
void h2hdrs_free(h2hdrs_t *h);

/* grpc.c: streams */
void h2stream_link(h2conn_t *c, h2stream_t *st);
void h2stream_unlink(h2stream_t *st);
void h2stream_release(h2stream_t *st);             /* frees queue, rx, headers */
void h2stream_push(h2stream_t *st, grpc_buf_t *b); /* takes a reference */
/* Feeds DATA bytes; calls deliver for whole messages. Returns 0, or
 * GRPC_RESOURCE_EXHAUSTED / GRPC_UNIMPLEMENTED / -1 (connection limit). */
int h2stream_rx(h2stream_t *st, const uint8_t *data, size_t len,
                void (*deliver)(h2stream_t *st, const uint8_t *msg, size_t len));
/* Resumes a deferred data provider. */
void h2stream_kick(h2stream_t *st);
extern const nghttp2_data_source_read_callback h2_data_read;

/* grpc.c: connections */
h2conn_t *h2conn_new(loop_t *loop, bool server);
/* Takes the transport, creates the nghttp2 session, sends SETTINGS. */
int h2conn_ready(h2conn_t *c);
void h2conn_close(h2conn_t *c, const char *reason);
void h2conn_flush(h2conn_t *c);
void h2conn_schedule_flush(h2conn_t *c);
void h2conn_io(loop_io_t *io, int fd, unsigned events, void *arg);
void h2conn_start_keepalive(h2conn_t *c);
void h2conn_set_interest(h2conn_t *c);

/* grpc.c: encoding */
char *grpc_pct_encode(const char *msg);
char *grpc_pct_decode(const char *msg);
/* Parses a grpc-timeout value into ms; -1 if malformed. */
int64_t grpc_parse_timeout(const char *v);
nghttp2_nv h2_nv(const char *name, const char *value);

/* grpc_server.c: engine callbacks */
void grpcs_begin_headers(h2conn_t *c, int32_t id);
int grpcs_frame_recv(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st);
void grpcs_data(h2stream_t *st, const uint8_t *data, size_t len);
void grpcs_frame_sent(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st);
void grpcs_stream_closed(h2stream_t *st, uint32_t error_code, bool conn_lost);
void grpcs_writable(h2stream_t *st);
void grpcs_conn_closed(h2conn_t *c);
void grpcs_trailers(h2stream_t *st, nghttp2_session *ng);

/* grpc_client.c: engine callbacks */
void grpcc_ready(h2conn_t *c);
int grpcc_frame_recv(h2conn_t *c, const nghttp2_frame *f, h2stream_t *st);
void grpcc_data(h2stream_t *st, const uint8_t *data, size_t len);
void grpcc_stream_closed(h2stream_t *st, uint32_t error_code, bool conn_lost);
void grpcc_writable(h2stream_t *st);
void grpcc_conn_closed(h2conn_t *c);
void grpcc_connected(h2conn_t *c);

#endif
