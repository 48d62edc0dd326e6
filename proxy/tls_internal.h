/*
 * tls: meshproxy's TLS (private to proxy/) — OpenSSL 3 contexts built from
 * the transport sockets of the config, the secrets they name, TLS
 * connections over non-blocking sockets, the ClientHello peek used to pick a
 * filter chain, and the workload identity (the certificate the sidecar gets
 * from meshd's CA and renews).
 *
 * Ownership:
 * - px_tls_cfg_t lives in a snapshot's arena (config.c builds it from
 *   DownstreamTlsContext / UpstreamTlsContext); it names secrets, it holds no
 *   key material of its own except inline PEM from the config.
 * - px_secrets_t is one per process, shared by every worker: named secrets
 *   ("default" = the workload certificate and key, "ROOTCA" = the mesh root,
 *   "kubernetes://NAME" from meshd's SDS), replaced whole under a lock by
 *   whoever owns them (the identity, the xDS client); each set bumps a
 *   generation counter readers poll without locking.
 * - px_tls_cache_t is one per worker (no locking): SSL_CTXs built from a
 *   config and the secrets' current contents, rebuilt when the generation
 *   moves; connections keep their SSL (and so their SSL_CTX reference) until
 *   they close, so a rotation only affects new handshakes.
 * - px_tls_conn_t belongs to the connection that made it.
 */
#ifndef MESH_PROXY_TLS_INTERNAL_H
#define MESH_PROXY_TLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config_internal.h"

/* ---- configuration (from the snapshot) ---- */

#define PX_TLS_MAX_ALPN 8

/* A DownstreamTlsContext (server) or UpstreamTlsContext (client). */
typedef struct px_tls_cfg {
    bool server;
    /* our certificate: an SDS name, or inline PEM (inline_bytes / inline_string /
     * a filename read when the snapshot was built); none for a client
     * without a certificate */
    const char *cert_sds;
    const char *cert_pem, *key_pem;
    /* the trusted CA: an SDS name or inline PEM; none: the peer is not verified */
    const char *ca_sds;
    const char *ca_pem;
    /* names the peer's certificate must carry (any of; empty: any verified
     * peer): match_subject_alt_names / match_typed_subject_alt_names, compared
     * with the URI and DNS SANs of the peer's leaf */
    px_str_match_t *sans;
    size_t nsans;
    bool require_client_cert; /* server: require_client_certificate */
    const char *alpn[PX_TLS_MAX_ALPN]; /* server: what we accept, in our order; client: what we offer */
    size_t nalpn;
    bool h2; /* the owner speaks HTTP/2: "h2" in alpn may be offered / selected (else it is left out) */
    const char *sni; /* client: the server name sent */
    int min_version, max_version; /* TLS1_2_VERSION ...; 0: 1.2 and 1.3 */
    const char *ciphers; /* OpenSSL cipher list for TLS 1.2; NULL: OpenSSL's default */
    const char *curves;  /* "X25519:P-256"; NULL: OpenSSL's default */
    const char *key; /* canonical text of every field above: the cache key */
} px_tls_cfg_t;

/* Fills cfg->key from the other fields (arena-allocated). 0 or -1. */
int px_tls_cfg_finish(px_tls_cfg_t *cfg, arena_t *a);

/* ---- secrets ---- */

typedef struct px_secrets px_secrets_t;

px_secrets_t *px_secrets_new(void);
void px_secrets_free(px_secrets_t *s);
/* Sets (replaces) a secret; any PEM may be NULL (a certificate secret has
 * chain+key, a validation secret has ca). Copies the strings. Any thread. */
int px_secrets_set(px_secrets_t *s, const char *name, const char *chain_pem, const char *key_pem,
                   const char *ca_pem);
/* Removes a secret. Any thread. */
void px_secrets_remove(px_secrets_t *s, const char *name);
/* Whether a secret is present. Any thread. */
bool px_secrets_has(px_secrets_t *s, const char *name);
/* Bumped by every set/remove. Any thread, lock-free. */
uint64_t px_secrets_generation(const px_secrets_t *s);

/* ---- contexts (per worker) ---- */

typedef struct px_tls_cache px_tls_cache_t;

px_tls_cache_t *px_tls_cache_new(px_secrets_t *secrets);
void px_tls_cache_free(px_tls_cache_t *c);
/* The SSL_CTX for a config with the secrets as they are now (built on first
 * use and when the secrets' generation moved; borrowed: valid until the next
 * call on this cache). NULL with the reason in err when a named secret is
 * missing or does not load. */
struct ssl_ctx_st *px_tls_ctx(px_tls_cache_t *c, const px_tls_cfg_t *cfg, char *err, size_t errlen);

/* ---- connections ---- */

enum { PX_TLS_WANT_READ = 1, PX_TLS_WANT_WRITE = 2 };

typedef struct px_tls_conn px_tls_conn_t;

/* A TLS connection over a connected non-blocking socket (server or client
 * side as the ctx's cfg says; sni: the name sent by a client, NULL none).
 * Takes its own reference to ctx. NULL on failure. */
px_tls_conn_t *px_tls_conn_new(struct ssl_ctx_st *ctx, const px_tls_cfg_t *cfg, int fd);
void px_tls_conn_free(px_tls_conn_t *t);
/* Advances the handshake: 1 done (the peer verified as cfg says), 0 in
 * progress (*want says on what to wait), -1 failed (err says why). */
int px_tls_handshake(px_tls_conn_t *t, unsigned *want, char *err, size_t errlen);
/* Reads application data: > 0 bytes, 0 the peer closed, -1 with errno
 * EAGAIN (*want set) or another error. */
ssize_t px_tls_read(px_tls_conn_t *t, void *buf, size_t n, unsigned *want);
/* Writes application data: > 0 bytes taken (all of n, or a prefix), -1 with
 * errno EAGAIN (*want set) or another error. */
ssize_t px_tls_write(px_tls_conn_t *t, const void *buf, size_t n, unsigned *want);
/* Whether decrypted bytes wait inside the TLS layer (the socket may be
 * empty: a level-triggered loop would not wake for them). */
bool px_tls_pending(const px_tls_conn_t *t);
/* Sends close_notify (best effort, never blocks). */
void px_tls_shutdown(px_tls_conn_t *t);
/* The negotiated ALPN protocol ("" when none). */
const char *px_tls_alpn(const px_tls_conn_t *t);
/* The SNI the client sent (server side; "" when none). */
const char *px_tls_sni(const px_tls_conn_t *t);
/* The peer's SPIFFE ID ("spiffe://td/ns/N/sa/S", the leaf's URI SAN) when
 * the peer presented a verified certificate, else "". */
const char *px_tls_peer_uri(const px_tls_conn_t *t);
/* Whether the session was resumed. */
bool px_tls_resumed(const px_tls_conn_t *t);

/* ---- ClientHello peek (filter-chain selection) ---- */

typedef enum { PX_HELLO_MORE = 0, PX_HELLO_NOT_TLS, PX_HELLO_TLS } px_hello_result_t;

typedef struct px_hello {
    char sni[256];                    /* "" when absent */
    char alpn[PX_TLS_MAX_ALPN][64];   /* offered, in order (extra entries dropped) */
    size_t nalpn;
} px_hello_t;

/* Reads the first bytes of a connection: PX_HELLO_TLS with the SNI and ALPN
 * when they hold a complete TLS ClientHello record, PX_HELLO_NOT_TLS when
 * they cannot start one (or the hello is malformed), PX_HELLO_MORE when more
 * bytes are needed (callers give up at 16 KiB + 5 or a timeout and treat the
 * connection as plaintext). Never reads past n. */
px_hello_result_t px_tls_parse_hello(const uint8_t *p, size_t n, px_hello_t *out);

/* ---- the workload identity ---- */

typedef struct px_identity_opts {
    const char *ca_addr;      /* meshd's CA "host:port" (15012); NULL: from files only */
    const char *root_file;    /* the mesh root (istio-ca-root-cert); trusts meshd's
                               * serving certificate and becomes "ROOTCA" */
    const char *token_file;   /* service-account token */
    const char *server_name;  /* meshd's name in its certificate; NULL: caclient's default */
    bool plaintext;           /* no TLS to the CA (tests) */
    const char *trust_domain, *ns, *sa;
    int64_t ttl_s;            /* requested validity; 0: the CA's default */
    bool ecdsa;
    /* or files (Istio's mounted-certificate layout): cert-chain.pem, key.pem,
     * root-cert.pem in this directory, re-read when they change */
    const char *cert_dir;
} px_identity_opts_t;

typedef struct px_identity px_identity_t;

/* Starts keeping "default" and "ROOTCA" in secrets current: fetches at once
 * (on its own thread: key generation and the call never run on a worker),
 * renews at half-life with jitter, retries failures with backoff keeping the
 * old certificate until it expires. NULL with err on bad options. */
px_identity_t *px_identity_start(const px_identity_opts_t *o, px_secrets_t *secrets, char *err,
                                 size_t errlen);
/* Whether a certificate has been installed (readiness waits for it). */
bool px_identity_ready(const px_identity_t *id);
/* The installed certificate's SPIFFE ID and expiry ("" / 0 before the first). */
void px_identity_current(const px_identity_t *id, char *spiffe, size_t n, int64_t *not_after);
void px_identity_stop(px_identity_t *id);

/* The "cluster.local/ns/N/sa/S" principal of a SPIFFE ID (what Istio's
 * metrics and x-forwarded-client-cert show); "" when uri is not one. */
const char *px_spiffe_principal(const char *uri);

#endif
