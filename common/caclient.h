/*
 * caclient: the client side of meshd's certificate service, shared by
 * meshproxy (workload certificates, renewed at half-life) and meshctl
 * (`meshctl ca sign`).
 *
 * A fetch generates a key (RSA 2048 or ECDSA P-256), builds a CSR whose only
 * SAN is the workload's SPIFFE ID, calls
 * istio.v1.auth.IstioCertificateService/CreateCertificate over TLS with the
 * service-account token read from its file at each call, and verifies the
 * returned chain against the configured root and identity before handing it
 * out.
 *
 * Ownership: caclient_cert_t and every string it holds belong to the caller
 * (caclient_cert_free wipes the key). caclient_t belongs to its loop's
 * thread: start, stop and the callback all happen there; key generation and
 * the call run on the workq.
 */
#ifndef MESH_CACLIENT_H
#define MESH_CACLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "workq.h"

typedef enum { CACLIENT_RSA = 0, CACLIENT_ECDSA = 1 } caclient_key_t;

#define CACLIENT_DEFAULT_SERVER_NAME "istiod.istio-system.svc"

typedef struct caclient_opts {
    const char *addr; /* "127.0.0.1:15012" */
    const char *root_pem; /* trusted root(s) as text, or */
    const char *root_file; /* ... as a file (re-read at each fetch) */
    const char *token_file; /* service-account token (re-read at each fetch) */
    const char *server_name; /* SNI and the name checked in meshd's certificate; NULL: istiod.istio-system.svc */
    bool plaintext; /* no TLS on the connection (tests, local debugging) */
    caclient_key_t key_type;
    int64_t ttl_s; /* requested validity; 0: the CA's default */
    const char *trust_domain; /* NULL: cluster.local */
    const char *ns, *sa; /* the workload's identity; NULL: from the token's sub claim */
    uint32_t timeout_ms; /* per call; 0: 30000 */
} caclient_opts_t;

typedef struct caclient_cert {
    char *key_pem; /* PKCS#8 */
    char *cert_chain_pem; /* leaf, then intermediates */
    char *root_pem; /* the root the chain verified against */
    char **chain; /* as received: leaf first, root last */
    size_t nchain;
    char identity[512]; /* the SPIFFE ID in the leaf */
    int64_t not_before, not_after; /* unix seconds */
} caclient_cert_t;

/* A new private key as PKCS#8 PEM (malloc'd; wipe it with caclient_free_secret).
 * Blocking (RSA takes tens of ms): not on an event loop. NULL on failure. */
char *caclient_make_key(caclient_key_t kt);
/* A PEM CSR signed by key_pem whose only SAN is the URI spiffe_id. 0 or -1. */
int caclient_make_csr(const char *key_pem, const char *spiffe_id, char **csr_pem, char *err, size_t errlen);
/* Verifies chain[0] (leaf) with chain[1..n-1] as intermediates against the
 * roots in root_pem, and that the leaf's only URI SAN is want_id (NULL: not
 * checked). Fills out's chain/identity/time/root fields (not the key).
 * 0 or -1 with the reason. */
int caclient_verify_chain(char *const *chain, size_t n, const char *root_pem, const char *want_id,
                          caclient_cert_t *out, char *err, size_t errlen);
/* The identity claimed by a service-account token's sub (not verified: the
 * CA verifies). 0 or -1. */
int caclient_token_identity(const char *token, const char *trust_domain, char *spiffe_id, size_t len, char *err,
                            size_t errlen);
/* One blocking fetch (key, CSR, call, verification). Not on an event loop.
 * 0, or the gRPC status (> 0) / -1 with the reason in err. */
int caclient_fetch(const caclient_opts_t *o, caclient_cert_t *out, char *err, size_t errlen);
void caclient_cert_free(caclient_cert_t *c);
void caclient_free_secret(char *s);

/* Renewing client: fetches at once, then again at half of each
 * certificate's validity as received (+-10% jitter); failures retry with exponential
 * backoff (1 s to 60 s). cb runs on the loop's thread with the new
 * certificate (borrowed for the call; copy what you keep) or with cert NULL
 * and the reason. */
typedef struct caclient caclient_t;
typedef void (*caclient_cb)(void *ud, const caclient_cert_t *cert, const char *err);

/* The options' strings are copied. NULL with err on bad options. */
caclient_t *caclient_start(loop_t *loop, workq_t *wq, const caclient_opts_t *o, caclient_cb cb, void *ud, char *err,
                           size_t errlen);
/* Renews now (e.g. the root changed). */
void caclient_renew_now(caclient_t *c);
/* Milliseconds until the next fetch as scheduled (for tests and status). */
uint64_t caclient_next_ms(const caclient_t *c);
/* Stops renewing and frees the client; a fetch in flight is discarded. */
void caclient_stop(caclient_t *c);

#endif
