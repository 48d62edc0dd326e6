/*
 * transport: byte-stream connections behind one interface, plaintext TCP or
 * TLS (OpenSSL 3, non-blocking), so HTTP and gRPC code never calls SSL_*.
 *
 * tp_tls_ctx_t is a long-lived, reference-counted TLS configuration
 * (certificate, key, chain, trust bundle, client-certificate policy, ALPN).
 * tp_tls_ctx_update() replaces its certificate atomically: handshakes that
 * start afterwards use the new one, connections already made keep theirs
 * (each connection holds its own reference on the OpenSSL context it began
 * with). A context may be shared between loops and threads.
 *
 * tp_conn_t wraps one non-blocking fd and is owned by the code that made it;
 * tp_close() closes the fd and frees it. It is used from one thread only.
 * Read and write return a byte count, or TP_AGAIN (then tp_want() says which
 * readiness, LOOP_READ or LOOP_WRITE, lets the call progress; with TLS a write
 * may need the socket readable and the other way round), or TP_ERROR
 * (tp_error() says why). tp_read() returns 0 at end of stream.
 */
#ifndef MESH_TRANSPORT_H
#define MESH_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "loop.h"

#define TP_AGAIN (-2)
#define TP_ERROR (-1)

typedef struct tp_tls_ctx tp_tls_ctx_t;
typedef struct tp_conn tp_conn_t;

/* Client-certificate policy (server side) or server verification (client). */
typedef enum {
    TP_VERIFY_NONE = 0, /* server: do not ask; client: accept any server certificate */
    TP_VERIFY_REQUEST,  /* server: ask, verify if given, allow none */
    TP_VERIFY_REQUIRE, /* server: a valid client certificate is mandatory; client: verify the server
                        */
} tp_verify_t;

/* TLS configuration. PEM is given as text (`*_pem`) or as a file path
 * (`*_file`); text wins when both are set. Unset fields are NULL/0. */
typedef struct tp_tls_config {
    const char *cert_pem, *cert_file; /* leaf first, then the chain */
    const char *key_pem, *key_file;   /* private key of the leaf */
    const char *ca_pem, *ca_file;     /* trust bundle for verifying the peer */
    tp_verify_t verify;
    /* ALPN protocols, NULL-terminated; NULL means {"h2", NULL}. A server
     * selects the first of its list the client offers and refuses a
     * handshake whose client offers ALPN but none of these. */
    const char *const *alpn;
    /* Client: the host name checked against the server certificate when
     * verify is TP_VERIFY_REQUIRE (NULL: no name check, chain only). */
    const char *verify_name;
} tp_tls_config_t;

/* Builds a server context (certificate and key required). NULL on failure
 * with a readable reason in err ("tls: cert_pem: no certificate found"). */
tp_tls_ctx_t *tp_tls_server_new(const tp_tls_config_t *cfg, char *err, size_t errlen);
/* Builds a client context (certificate and key optional: the client
 * certificate for mTLS). NULL on failure with the reason in err. */
tp_tls_ctx_t *tp_tls_client_new(const tp_tls_config_t *cfg, char *err, size_t errlen);
/* Replaces the context's certificate/key/trust/policy for handshakes that
 * start from now on. Any thread. Returns 0, or -1 (err set; the old
 * configuration stays in force). */
int tp_tls_ctx_update(tp_tls_ctx_t *ctx, const tp_tls_config_t *cfg, char *err, size_t errlen);
/* Reference counting (atomic; any thread). The creator holds one reference. */
tp_tls_ctx_t *tp_tls_ctx_ref(tp_tls_ctx_t *ctx);
void tp_tls_ctx_unref(tp_tls_ctx_t *ctx);

/* --- sockets ------------------------------------------------------------ */

/* Parses "host:port", "[v6]:port" or ":port" (all addresses) into ss.
 * host must be a numeric address or "localhost". Returns 0 or -1. */
int tp_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen);
/* Formats ss as "ip:port" / "[ip]:port" into buf. Returns buf. */
char *tp_format_addr(const struct sockaddr *sa, char *buf, size_t len);
/* A non-blocking listening socket (SO_REUSEADDR; CLOEXEC). port 0 picks an
 * ephemeral port, reported in *port_out when not NULL. -1 on failure
 * (err set). */
int tp_listen(const char *addr, int backlog, int *port_out, char *err, size_t errlen);
/* Starts a non-blocking connect; the fd becomes writable when it completes
 * (check with tp_connect_result()). -1 on immediate failure (err set). */
int tp_connect_start(const char *addr, char *err, size_t errlen);
/* 0 when the connect on fd succeeded, else the errno of the failure. */
int tp_connect_result(int fd);

/* --- connections -------------------------------------------------------- */

/* Wraps a connected non-blocking fd. The connection owns the fd from here on,
 * even on failure (then the fd is closed and NULL returned). */
tp_conn_t *tp_conn_plain(int fd);
/* TLS server side: the handshake runs inside the first reads/writes or
 * explicitly through tp_handshake(). */
tp_conn_t *tp_conn_tls_server(int fd, tp_tls_ctx_t *ctx);
/* TLS client side; sni (may be NULL) is sent as server name indication. */
tp_conn_t *tp_conn_tls_client(int fd, tp_tls_ctx_t *ctx, const char *sni);

/* Drives the handshake: 0 when done (always for plaintext), TP_AGAIN, or
 * TP_ERROR. */
int tp_handshake(tp_conn_t *c);
/* Reads up to len bytes: count, 0 at end of stream, TP_AGAIN or TP_ERROR. */
ssize_t tp_read(tp_conn_t *c, void *buf, size_t len);
/* Writes up to len bytes: count (may be short), TP_AGAIN or TP_ERROR. */
ssize_t tp_write(tp_conn_t *c, const void *buf, size_t len);
/* After TP_AGAIN: LOOP_READ or LOOP_WRITE (from loop.h), what to wait for. */
unsigned tp_want(const tp_conn_t *c);
/* Sends TLS close_notify (best effort) and shuts the write side down. */
void tp_shutdown(tp_conn_t *c);
/* Closes the fd and frees the connection. NULL is ignored. */
void tp_close(tp_conn_t *c);

int tp_fd(const tp_conn_t *c);
bool tp_is_tls(const tp_conn_t *c);
bool tp_handshake_done(const tp_conn_t *c);
/* The negotiated ALPN protocol ("h2"), or NULL. */
const char *tp_alpn(const tp_conn_t *c);
/* The SNI the client sent (server side), or NULL. */
const char *tp_sni(const tp_conn_t *c);
/* The peer's certificate (borrowed, valid until tp_close), or NULL. */
X509 *tp_peer_cert(const tp_conn_t *c);
/* The peer's certificate chain verified against the trust bundle. */
bool tp_peer_verified(const tp_conn_t *c);
/* Copies the peer certificate's URI SANs into out (up to max, each
 * malloc'd; the caller frees them). Returns how many were found. */
int tp_peer_uri_sans(const tp_conn_t *c, char **out, int max);
/* The peer address "ip:port" (cached at creation). */
const char *tp_peer_addr(const tp_conn_t *c);
/* The reason of the last TP_ERROR, or "". */
const char *tp_error(const tp_conn_t *c);

#endif
