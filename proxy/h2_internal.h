/*
 * h2: the proxy's HTTP/2 codec (private to proxy/), on libnghttp2's callback
 * API.
 *
 * One px_h2_t is one HTTP/2 connection, server side (a downstream client:
 * h2c prior knowledge or h2 over TLS) or client side (an upstream). The
 * engine's request path speaks HTTP/1.1 framing, so each stream is bridged:
 *
 *   - what the peer sends on a stream (a request on the server side, a
 *     response on the client side) is handed to the engine as HTTP/1.1
 *     bytes: a head built from the pseudo-headers and fields, then the body
 *     as sent (Content-Length) or chunked, with the trailers in the last
 *     chunk;
 *   - what the engine writes on a stream (HTTP/1.1 bytes: a head, then a
 *     Content-Length, chunked or close-delimited body) goes out as HEADERS,
 *     DATA and trailing HEADERS, hop-by-hop fields dropped.
 *
 * nghttp2 validates what it receives (frames, header names and values,
 * pseudo-headers, content-length against DATA): a bad stream is reset, a bad
 * connection is ended with GOAWAY, never a crash. Flow control is manual:
 * the engine acknowledges body bytes (px_h2_ack) once they left its buffers,
 * so a slow upstream slows the client's stream, not the whole connection.
 *
 * Output is pulled with px_h2_send() into the connection's output buffer;
 * the codec does no I/O. Streams belong to the codec: the engine holds a
 * stream until px_h2_detach() or until its on_close callback ran.
 */
#ifndef MESH_PROXY_H2_INTERNAL_H
#define MESH_PROXY_H2_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct px_h2 px_h2_t;
typedef struct px_h2_stream px_h2_stream_t;

typedef struct px_h2_cbs {
    /* Server: a request head arrived, as HTTP/1.1 text (head[0..len), blank
     * line included). Returns the stream's user pointer, or NULL to refuse
     * it (RST_STREAM REFUSED_STREAM). */
    void *(*on_request)(void *ud, px_h2_stream_t *s, const char *head, size_t len);
    /* HTTP/1.1 bytes of the peer's message on a held stream: the request
     * body (server), or the response head and body (client). */
    void (*on_data)(void *ud, void *sud, const char *p, size_t n);
    /* A held stream ended before px_h2_detach: reset by the peer (error_code
     * != 0) or closed. The stream pointer is dead when this returns. */
    void (*on_close)(void *ud, void *sud, uint32_t error_code);
} px_h2_cbs_t;

/* What the sessions of one side of one worker count, for the admin /stats
 * (Envoy's http2.* names). One thread adds, others read: relaxed atomics. */
typedef struct px_h2_counters {
    _Atomic uint64_t streams;     /* streams opened */
    _Atomic uint64_t rx_reset;    /* RST_STREAM frames received */
    _Atomic uint64_t tx_reset;    /* RST_STREAM frames sent */
    _Atomic uint64_t goaway_sent; /* GOAWAY frames sent */
    _Atomic uint64_t goaway_rx;   /* GOAWAY frames received */
} px_h2_counters_t;

typedef struct px_h2_opts {
    uint32_t max_concurrent_streams; /* 0: 100 */
    uint32_t window;                 /* initial stream window; 0: 256 KiB */
    px_h2_counters_t *counters;      /* where the session counts; NULL: nowhere */
} px_h2_opts_t;

/* A server (client = false) or client session; NULL when out of memory. */
px_h2_t *px_h2_new(bool client, const px_h2_cbs_t *cbs, void *ud, const px_h2_opts_t *o);
/* Frees the session and every stream it still has (no callbacks). */
void px_h2_free(px_h2_t *h);

/* Feeds received bytes. Returns 0, or -1 on a connection error (the GOAWAY
 * is queued: send it, then close). */
int px_h2_recv(px_h2_t *h, const uint8_t *p, size_t n);

/* Moves every frame ready to go into sink(arg, bytes, len). 0, or -1 when
 * the session failed or the sink did. */
typedef int (*px_h2_sink_fn)(void *arg, const void *p, size_t n);
int px_h2_send(px_h2_t *h, px_h2_sink_fn sink, void *arg);

/* Whether the session still wants to read or write (false: close it). */
bool px_h2_alive(const px_h2_t *h);
/* Graceful GOAWAY: streams already started finish, new ones are refused. */
void px_h2_goaway(px_h2_t *h);
/* Number of streams open in the session. */
size_t px_h2_streams(const px_h2_t *h);
/* Client: whether another stream may be opened now (peer's limit, GOAWAY). */
bool px_h2_can_open(const px_h2_t *h);

/* Client: opens a stream with user pointer sud; its request is written with
 * px_h2_write. NULL when no stream can be opened. */
px_h2_stream_t *px_h2_open(px_h2_t *h, void *sud, bool https);

/* Writes HTTP/1.1 bytes of our message on the stream (see above). Returns
 * 0, or -1 when they are malformed (the stream is then reset). */
int px_h2_write(px_h2_stream_t *s, const char *p, size_t n);
/* A close-delimited body (or a message that had no framing) is complete. */
void px_h2_write_end(px_h2_stream_t *s);
/* Bytes written but not yet sent (flow control or pending frames). */
size_t px_h2_pending(const px_h2_stream_t *s);
/* The engine's buffers took in everything delivered so far: open the
 * stream's window by that much. */
void px_h2_ack(px_h2_stream_t *s);
/* The engine lets go of the stream: if our message was complete it is sent
 * out; otherwise (or if the peer's message is unfinished on the server) the
 * stream is reset. No callbacks for it afterwards. */
void px_h2_detach(px_h2_stream_t *s);
/* Client: the engine read the whole response and sent the whole request:
 * lets the stream go like px_h2_detach, without resetting it when the
 * peer's END_STREAM has not been processed yet (it is on its way: a reset
 * for every stream would count against the peer's reset limits). */
void px_h2_finish(px_h2_stream_t *s);
/* The engine's pointer of a stream (NULL once detached). */
void *px_h2_user(const px_h2_stream_t *s);
/* The stream's id. */
int32_t px_h2_id(const px_h2_stream_t *s);
/* Server: the request was HEAD (the response then has no body). */
void px_h2_set_head(px_h2_stream_t *s, bool head);

#endif
