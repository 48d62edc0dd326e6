/*
 * grpc: gRPC over HTTP/2 (nghttp2) on a loop_t, server and client, plaintext
 * or TLS through transport.h.
 *
 * Server. grpc_server_new() listens; methods are registered by full path
 * ("/package.Service/Method") with callbacks. A grpc_stream_t is one call:
 * the server owns it; it lives from on_open until on_close returns (on_close
 * is always called, exactly once, last). grpc_stream_ref() keeps the memory
 * alive past that (every operation on a closed stream is then a harmless
 * no-op returning -1), which is what a caller needs to finish a call later or
 * from another thread.
 *
 * Threads. Everything runs on the server's loop thread, except the *_async
 * functions, which any thread may call while it holds a reference it took
 * with grpc_stream_ref() (or was handed): they copy their arguments, post to
 * the loop and release that reference there. grpc_stream_ref/unref are
 * atomic.
 *
 * Messages. The 5-byte gRPC framing is handled here: callbacks see whole
 * messages, senders pass whole messages. A compressed message is refused with
 * UNIMPLEMENTED (no grpc-encoding is negotiated); a message above the receive
 * limit ends the call with RESOURCE_EXHAUSTED.
 *
 * Flow control. Sent messages queue on the stream and drain as HTTP/2 flow
 * control allows, read straight from the queue by nghttp2's data provider.
 * grpc_stream_queued() gives the bytes not yet written and on_writable fires
 * when the queue has drained, so a producer (xDS) can hold back for a slow
 * reader instead of buffering without bound. grpc_buf_t lets many streams
 * send one encoded message without copying it per stream.
 *
 * Client. grpc_client_connect() starts one HTTP/2 connection (connect and
 * handshake are asynchronous; calls started before they finish wait for
 * them). grpc_call_start() opens a call; results arrive through callbacks;
 * on_close (always called once, last) gives the status. grpc_unary_call() is
 * a blocking helper for command-line tools that runs its own private loop.
 */
#ifndef MESH_GRPC_H
#define MESH_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "transport.h"

/* Status codes (grpc-status). */
typedef enum {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
} grpc_status_t;

/* "OK", "CANCELLED", ... ("UNKNOWN" for values out of range). */
const char *grpc_status_name(int status);

#define GRPC_DEFAULT_MAX_RECV (4u * 1024 * 1024)

/* --- shared message buffers -------------------------------------------- */

/* An immutable, reference-counted (atomic) gRPC message, stored with its
 * 5-byte prefix so any number of streams can queue it without a copy. */
typedef struct grpc_buf grpc_buf_t;

/* A message holding a copy of data[0..len). Aborts on out-of-memory. */
grpc_buf_t *grpc_buf_new(const void *data, size_t len);
/* A message of len bytes to fill in place through grpc_buf_data() before it
 * is first sent (e.g. protobuf_c_message_pack() straight into it). */
grpc_buf_t *grpc_buf_alloc(size_t len);
uint8_t *grpc_buf_data(grpc_buf_t *b);
size_t grpc_buf_len(const grpc_buf_t *b);
grpc_buf_t *grpc_buf_ref(grpc_buf_t *b);
void grpc_buf_unref(grpc_buf_t *b);

/* --- server ------------------------------------------------------------- */

typedef struct grpc_server grpc_server_t;
typedef struct grpc_stream grpc_stream_t;

typedef struct grpc_server_opts {
    const char *listen; /* "127.0.0.1:15010"; port 0 picks an ephemeral port */
    tp_tls_ctx_t
        *tls; /* NULL: plaintext (h2c with prior knowledge); else the server takes a reference */
    size_t max_recv_msg;             /* 0: GRPC_DEFAULT_MAX_RECV */
    uint32_t max_concurrent_streams; /* 0: 10000 per connection */
    uint32_t keepalive_ms;           /* HTTP/2 PING after this idle time; 0: off */
    uint32_t keepalive_timeout_ms;   /* close when a PING is not answered in time; 0: 20000 */
    uint32_t
        handshake_timeout_ms; /* close a connection with no complete preface/handshake; 0: 10000 */
    size_t write_low_water;   /* on_writable fires when queued bytes fall to this or below; 0: 0 */
} grpc_server_opts_t;

/* Server-side call callbacks. `data` is the stream's user pointer, which
 * starts as the method's arg and may be changed with grpc_stream_set_data(). */
typedef struct grpc_method {
    /* A new call; request headers are available. May finish the call at once
     * (e.g. UNAUTHENTICATED). Required. */
    void (*on_open)(grpc_stream_t *s, void *method_arg);
    /* One whole request message (the bytes are valid during the call only). */
    void (*on_message)(grpc_stream_t *s, void *data, const uint8_t *msg, size_t len);
    /* The client half-closed: no more messages will come. */
    void (*on_half_close)(grpc_stream_t *s, void *data);
    /* The client reset the stream or the connection died before the call was
     * finished. on_close follows. */
    void (*on_cancel)(grpc_stream_t *s, void *data);
    /* Queued bytes dropped to write_low_water or below after being above. */
    void (*on_writable)(grpc_stream_t *s, void *data);
    /* Last callback: the stream is closed; free per-call state here. */
    void (*on_close)(grpc_stream_t *s, void *data);
} grpc_method_t;

/* Binds and listens on opts->listen; accepts once the loop runs. NULL on
 * failure with the reason in err. */
grpc_server_t *grpc_server_new(loop_t *loop, const grpc_server_opts_t *opts, char *err,
                               size_t errlen);
/* Registers a method (path copied, m copied). Returns 0, -1 if the path is
 * malformed or already registered. Loop thread, usually before loop_run. */
int grpc_server_register(grpc_server_t *srv, const char *path, const grpc_method_t *m, void *arg);
/* The bound port. */
int grpc_server_port(const grpc_server_t *srv);
/* Open connections and open streams (for metrics and tests). */
size_t grpc_server_connections(const grpc_server_t *srv);
size_t grpc_server_streams(const grpc_server_t *srv);
/* Stops listening and closes every connection: open calls get on_cancel and
 * on_close. Loop thread; not from inside one of this server's callbacks
 * (post it). */
void grpc_server_free(grpc_server_t *srv);

/* Request header value (lowercase name; the first value if repeated), or
 * NULL. Includes ":path", ":authority". Valid until on_close. */
const char *grpc_stream_header(const grpc_stream_t *s, const char *name);
const char *grpc_stream_path(const grpc_stream_t *s);
/* The peer's "ip:port". */
const char *grpc_stream_peer_addr(const grpc_stream_t *s);
/* The peer's TLS certificate (borrowed, valid until on_close), or NULL. */
X509 *grpc_stream_peer_cert(const grpc_stream_t *s);
/* The transport of the call's connection (peer SANs, ALPN ...), valid until
 * on_close. */
tp_conn_t *grpc_stream_transport(const grpc_stream_t *s);
/* The deadline from grpc-timeout as a loop_now() time, or 0 when none. */
uint64_t grpc_stream_deadline(const grpc_stream_t *s);
loop_t *grpc_stream_loop(const grpc_stream_t *s);
void grpc_stream_set_data(grpc_stream_t *s, void *data);
void *grpc_stream_data(const grpc_stream_t *s);
/* True once the call finished or was cancelled. */
bool grpc_stream_closed(const grpc_stream_t *s);

/* Adds a response header (sent with the first message or the status), e.g.
 * custom metadata. Only before the first send/finish. Returns 0 or -1. */
int grpc_stream_add_header(grpc_stream_t *s, const char *name, const char *value);
/* Queues one message (copied). Returns 0, or -1 when the call is finished
 * or closed. */
int grpc_stream_send(grpc_stream_t *s, const void *msg, size_t len);
/* Queues a shared message (takes its own reference; the caller keeps its). */
int grpc_stream_send_buf(grpc_stream_t *s, grpc_buf_t *b);
/* Bytes queued and not yet handed to the connection. */
size_t grpc_stream_queued(const grpc_stream_t *s);
/* Ends the call after the queued messages: trailers grpc-status and
 * grpc-message (percent-encoded here; msg may be NULL). A call finished
 * before any message is sent gets a trailers-only response. Returns 0, or -1
 * if already finished/closed. Closes the stream once written; on_close
 * follows. */
int grpc_stream_finish(grpc_stream_t *s, int status, const char *msg);

/* Keeps the stream's memory alive after on_close (atomic, any thread). */
grpc_stream_t *grpc_stream_ref(grpc_stream_t *s);
void grpc_stream_unref(grpc_stream_t *s);
/* Thread-safe variants: copy the arguments, run on the loop, then drop one
 * reference that the caller owned. Return 0 or -1 (loop gone; the reference
 * is still dropped). */
int grpc_stream_send_async(grpc_stream_t *s, const void *msg, size_t len);
int grpc_stream_finish_async(grpc_stream_t *s, int status, const char *msg);

/* --- client ------------------------------------------------------------- */

typedef struct grpc_client grpc_client_t;
typedef struct grpc_call grpc_call_t;

typedef struct grpc_client_opts {
    tp_tls_ctx_t *tls; /* NULL: plaintext; else a client context (the client takes a reference) */
    const char *sni;   /* TLS server name (NULL: none) */
    const char *authority;         /* :authority (NULL: the address) */
    size_t max_recv_msg;           /* 0: GRPC_DEFAULT_MAX_RECV */
    uint32_t connect_timeout_ms;   /* connect + handshake; 0: 10000 */
    uint32_t keepalive_ms;         /* HTTP/2 PING after this idle time; 0: off */
    uint32_t keepalive_timeout_ms; /* 0: 20000 */
    /* Called once when the connection is lost or fails (after every open call
     * got on_close with UNAVAILABLE). The client must still be freed. */
    void (*on_disconnect)(grpc_client_t *c, const char *reason, void *arg);
    void *arg;
} grpc_client_opts_t;

typedef struct grpc_call_cbs {
    /* Response headers arrived (grpc_call_header() works from here). */
    void (*on_headers)(grpc_call_t *call, void *arg);
    /* One whole response message (valid during the call only). */
    void (*on_message)(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len);
    /* Queued request bytes drained. */
    void (*on_writable)(grpc_call_t *call, void *arg);
    /* Last callback: the status (from trailers, or synthesized: UNAVAILABLE
     * on connection loss, CANCELLED after grpc_call_cancel,
     * DEADLINE_EXCEEDED, INTERNAL on a protocol violation) and its message
     * (never NULL). The call is freed after this returns. */
    void (*on_close)(grpc_call_t *call, void *arg, int status, const char *message);
} grpc_call_cbs_t;

/* Starts connecting to addr ("host:port"). NULL on immediate failure (bad
 * address, socket error) with the reason in err. Loop thread. */
grpc_client_t *grpc_client_connect(loop_t *loop, const char *addr, const grpc_client_opts_t *opts,
                                   char *err, size_t errlen);
/* True until the connection failed or was lost. */
bool grpc_client_alive(const grpc_client_t *c);
/* Closes the connection: open calls get on_close (CANCELLED). Safe from any
 * callback of this client (the memory goes at the end of the round). */
void grpc_client_free(grpc_client_t *c);

/* Opens a call on path with extra request headers (NULL-terminated array of
 * name, value pairs; may be NULL) and a deadline (0: none; sent as
 * grpc-timeout and enforced locally). NULL when the client is dead. */
grpc_call_t *grpc_call_start(grpc_client_t *c, const char *path, const char *const *headers,
                             uint32_t timeout_ms, const grpc_call_cbs_t *cbs, void *arg);
/* Queues one request message (copied) / a shared one. 0 or -1 (half-closed
 * or closed). */
int grpc_call_send(grpc_call_t *call, const void *msg, size_t len);
int grpc_call_send_buf(grpc_call_t *call, grpc_buf_t *b);
size_t grpc_call_queued(const grpc_call_t *call);
/* Half-closes after the queued messages (END_STREAM). */
int grpc_call_close_send(grpc_call_t *call);
/* Resets the stream (RST_STREAM CANCEL); on_close follows with CANCELLED
 * (possibly from inside this function). */
void grpc_call_cancel(grpc_call_t *call);
/* A response header or trailer (lowercase), or NULL. */
const char *grpc_call_header(const grpc_call_t *call, const char *name);

/* Blocking unary call on a private loop: connects to addr, sends req,
 * waits for one response message. Returns the grpc status (GRPC_OK: *resp
 * holds a malloc'd copy of the response, *resp_len its size; the caller
 * frees it). Failures to connect give UNAVAILABLE, the timeout (0: 30000 ms)
 * DEADLINE_EXCEEDED. *message (if not NULL) receives a malloc'd status
 * message, "" on success. */
int grpc_unary_call(const char *addr, const grpc_client_opts_t *opts, const char *path,
                    const char *const *headers, const void *req, size_t req_len, uint8_t **resp,
                    size_t *resp_len, uint32_t timeout_ms, char **message);

#endif
