/*
 * faultproxy: a TCP proxy on 127.0.0.1 for tests, between a client under
 * test (meshd's informers) and a server (the envtest API server), that can
 * cut every connection, refuse new ones, stall traffic, or answer one request
 * itself with a canned (e.g. malformed) watch stream.
 *
 * Two modes. Plain: bytes pass through untouched (TLS end to end, HTTP/2 and
 * all); cutting and stalling work at the TCP level. TLS-terminating: the proxy
 * presents a certificate the client trusts (envtest's pki/apiserver.crt,
 * signed by pki/ca.crt), speaks HTTP/1.1 to the client (it offers no ALPN),
 * and opens its own TLS connection to the server; that lets it read the first
 * request of each connection and, when armed, answer it with injected bytes.
 *
 * Threads: one accepting thread and one thread per connection, all joined by
 * fp_stop(). Every function may be called from any thread.
 */
#ifndef MESH_TEST_FAULTPROXY_H
#define MESH_TEST_FAULTPROXY_H

#include <stdbool.h>

typedef struct fp fp_t;

typedef struct fp_tls {
    const char *cert; /* PEM certificate shown to clients */
    const char *key; /* its key */
    const char *ca; /* CA that verifies the upstream server */
} fp_tls_t;

/* Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:upstream_port.
 * tls NULL: plain mode. NULL on failure. */
fp_t *fp_start(int upstream_port, const fp_tls_t *tls);
int fp_port(const fp_t *p);
/* Closes every open connection (both sides) at once. */
void fp_cut(fp_t *p);
/* While on, new connections are accepted and closed at once (a server that is
 * down); open ones are not touched (combine with fp_cut). */
void fp_refuse(fp_t *p, bool on);
/* While on, nothing is forwarded in either direction; connections stay open. */
void fp_stall(fp_t *p, bool on);
/* TLS mode: the next connection whose first request line contains `match`
 * (e.g. "watch=1") is answered by the proxy with HTTP 200, a chunked body
 * holding `body` as is, and then closed. */
void fp_inject(fp_t *p, const char *match, const char *body);
/* Whether the armed injection has been served. */
bool fp_injected(fp_t *p);
/* Connections accepted so far. */
unsigned fp_accepted(fp_t *p);
/* Stops and frees the proxy, closing every connection. NULL is ignored. */
void fp_stop(fp_t *p);

#endif
