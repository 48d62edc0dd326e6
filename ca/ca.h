/*
 * ca: meshd's certificate authority.
 *
 * Owns the root of trust, the signing of workload certificates, the
 * authentication of the callers of the certificate service and the
 * publication of the root certificate to every namespace.
 *
 *  - Root of trust. A plug-in CA (a directory in local mode, the `cacerts`
 *    Secret of meshd's namespace in kube mode: ca-cert.pem, ca-key.pem,
 *    root-cert.pem, cert-chain.pem) is checked at load (key matches the
 *    certificate, the certificate is a CA allowed to sign, within its
 *    validity, chains to the root). Without one, a self-signed root is
 *    generated once and persisted (the `istio-ca-secret` Secret with keys
 *    ca-cert.pem and ca-key.pem, or a 0600 file in local mode) and reused on
 *    every restart. The signing material is an immutable, reference-counted
 *    ca_bundle_t; ca_reload() swaps in a new one atomically when the source
 *    changed, and a background thread of the CA polls the source.
 *  - Signing. ca_sign_csr() checks a PKCS#10 request against the caller's
 *    SPIFFE identity and issues a short-lived certificate; the chain returned
 *    is leaf, intermediates, root.
 *  - Authentication. ca_authn_t turns an `authorization: Bearer <JWT>` header
 *    into a caller identity: TokenReview (audience istio-ca) in kube mode with
 *    a bounded cache, a local public key or JWKS file in local mode.
 *  - Service. ca_service_t serves /istio.v1.auth.IstioCertificateService/
 *    CreateCertificate on a gRPC server meshd gives it; authentication and
 *    signing run on a workq, never on the loop.
 *  - Root publication: the istio-ca-root-cert ConfigMap (key root-cert.pem)
 *    of every namespace, created for new namespaces and repaired when edited
 *    or deleted (ca_on_store_event, fed by the config store).
 *
 * Threads: ca_t and ca_authn_t are thread-safe. Key material never reaches
 * the logs; private keys are wiped when freed.
 */
#ifndef MESH_CA_H
#define MESH_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"

struct kube_client;
struct grpc_server;
struct workq;
struct tp_tls_ctx;

/* Return codes beyond 0 / -1 (-1: internal failure). */
#define CA_EINVAL (-2) /* malformed or unacceptable request: gRPC INVALID_ARGUMENT */
#define CA_EPERM (-3) /* asks for what the caller may not have: PERMISSION_DENIED */
#define CA_EAUTH (-4) /* the caller could not be authenticated: UNAUTHENTICATED */

#define CA_DEFAULT_TRUST_DOMAIN "cluster.local"
#define CA_DEFAULT_NAMESPACE "istio-system"
#define CA_DEFAULT_AUDIENCE "istio-ca"
#define CA_ROOT_CONFIGMAP "istio-ca-root-cert"
#define CA_PLUGIN_SECRET "cacerts"
#define CA_SELF_SIGNED_SECRET "istio-ca-secret"
#define CA_SELF_SIGNED_SECRET_TYPE "istio.io/ca-root"
#define CA_DEFAULT_TTL_S (24 * 3600)
#define CA_MAX_TTL_LIMIT_S (90 * 24 * 3600)
#define CA_ROOT_TTL_S (10 * 365 * 24 * 3600LL)
#define CA_CLOCK_SKEW_S 120 /* notBefore is backdated by this much */

typedef enum { CA_KEY_RSA = 0, CA_KEY_ECDSA = 1 } ca_key_type_t;

typedef struct ca ca_t;
typedef struct ca_bundle ca_bundle_t;

typedef struct ca_opts {
    const char *trust_domain; /* NULL: cluster.local */
    const char *ns; /* meshd's namespace (kube mode secrets); NULL: istio-system */
    struct kube_client *kube; /* kube mode when set (borrowed; outlives the CA) */
    const char *cacerts_dir; /* local mode: plug-in CA directory (wins over root_file) */
    const char *root_file; /* local mode self-signed: file holding the root certificate and key */
    ca_key_type_t root_key_type; /* self-signed root: RSA 2048 (default) or ECDSA P-256 */
    int64_t root_ttl_s; /* self-signed root validity; 0: 10 years */
    int64_t max_ttl_s; /* cap of issued certificates; 0: 24 h; at most 90 days */
    int64_t default_ttl_s; /* when a request asks for no validity; 0: max_ttl_s capped at 24 h */
    int reload_interval_ms; /* how often the background thread re-reads the source; 0: 5000, <0: never */
} ca_opts_t;

/* An issued chain: leaf first, then the intermediates, the root last. */
typedef struct ca_chain {
    char **pem; /* each one PEM certificate, malloc'd */
    size_t n;
} ca_chain_t;

typedef struct ca_stats {
    uint64_t csr_count; /* requests seen by ca_sign_csr */
    uint64_t success; /* certificates issued */
    uint64_t refused; /* CA_EINVAL / CA_EPERM */
    uint64_t errors; /* internal failures */
    uint64_t reloads; /* bundle swaps after the first load */
    uint64_t published; /* ConfigMaps written by root publication */
} ca_stats_t;

/* ---- the CA ---- */

/* Loads or creates the root of trust (see the header comment) and starts the
 * background thread (source polling, root publication). NULL with the reason
 * in err, naming the source, file or key and what is wrong. */
ca_t *ca_new(const ca_opts_t *o, char *err, size_t errlen);
/* Stops the thread and frees the CA; bundles still referenced stay valid. */
void ca_free(ca_t *ca);
/* Re-reads the source; when it changed and is valid, swaps the bundle (new
 * signings use it at once). *changed (may be NULL) tells whether it swapped.
 * On failure the current bundle stays in force and err says why. 0 or -1. */
int ca_reload(ca_t *ca, bool *changed, char *err, size_t errlen);
/* The current bundle, a new reference (release with ca_bundle_release). */
ca_bundle_t *ca_bundle_get(ca_t *ca);
const char *ca_trust_domain(const ca_t *ca);
/* meshd's namespace (where the CA's Secrets live). */
const char *ca_namespace(const ca_t *ca);
/* Copies the current root certificate(s) PEM into a malloc'd string. */
char *ca_root_pem(ca_t *ca);
/* "spiffe://<trust-domain>/ns/<ns>/sa/<sa>" into buf; 0, or -1 when ns or sa
 * are empty, hold a '/' or do not fit. */
int ca_spiffe_id(const ca_t *ca, const char *ns, const char *sa, char *buf, size_t len);
void ca_get_stats(ca_t *ca, ca_stats_t *out);
int64_t ca_max_ttl(const ca_t *ca);

/* Checks csr_pem (one PEM CERTIFICATE REQUEST) against `identity` (the
 * caller's SPIFFE ID, the only SAN it may ask for) and issues a certificate
 * valid for ttl_s seconds (<= 0: the default; capped at the maximum and at
 * the signing certificate's own expiry). 0 with *out filled (free with
 * ca_chain_free), CA_EINVAL / CA_EPERM with the reason in err, -1 on an
 * internal failure. Any thread. */
int ca_sign_csr(ca_t *ca, const char *csr_pem, size_t csr_len, const char *identity, int64_t ttl_s,
                ca_chain_t *out, char *err, size_t errlen);
/* Generates a key (RSA 2048 or ECDSA P-256) and issues a serving
 * certificate for the DNS names (and optional URI SAN) valid for ttl_s
 * (capped like ca_sign_csr but allowed up to the maximum). *key_pem is a
 * malloc'd PKCS#8 PEM the caller wipes and frees (ca_free_secret). */
int ca_issue_serving(ca_t *ca, const char *const *dns, size_t ndns, const char *uri, int64_t ttl_s,
                     ca_key_type_t kt, char **key_pem, ca_chain_t *out, char *err, size_t errlen);
/* The checks of ca_sign_csr alone (no signing, no CA needed): 0, CA_EINVAL
 * or CA_EPERM with the reason in err. */
int ca_csr_check(const char *csr_pem, size_t len, const char *identity, char *err, size_t errlen);
void ca_chain_free(ca_chain_t *c);
/* The chain concatenated into one malloc'd PEM string. */
char *ca_chain_join(const ca_chain_t *c, size_t from);
/* Wipes and frees a NUL-terminated secret (key PEM). NULL is ignored. */
void ca_free_secret(char *s);

/* ---- bundles (immutable, reference-counted) ---- */

/* Checks and loads plug-in material given as PEM text. Each *_name names the
 * input in messages (a file path or "secret istio-system/cacerts key
 * ca-key.pem"). chain may be NULL/empty when ca-cert is signed by the root
 * directly. NULL with the reason in err. */
ca_bundle_t *ca_bundle_from_pem(const char *cert_pem, const char *cert_name, const char *key_pem,
                                const char *key_name, const char *chain_pem, const char *chain_name,
                                const char *root_pem, const char *root_name, char *err, size_t errlen);
/* Loads ca-cert.pem, ca-key.pem, cert-chain.pem (optional) and
 * root-cert.pem from dir. NULL with the reason in err. */
ca_bundle_t *ca_bundle_load_dir(const char *dir, char *err, size_t errlen);
/* Generates a self-signed root: O=<org>, CA:TRUE, keyCertSign|cRLSign,
 * valid ttl_s from now (backdated by the clock skew). */
ca_bundle_t *ca_bundle_self_signed(const char *org, ca_key_type_t kt, int64_t ttl_s, char *err, size_t errlen);
ca_bundle_t *ca_bundle_ref(ca_bundle_t *b);
void ca_bundle_release(ca_bundle_t *b);
/* The trusted root(s), PEM. */
const char *ca_bundle_root_pem(const ca_bundle_t *b);
/* The signing certificate, PEM. */
const char *ca_bundle_cert_pem(const ca_bundle_t *b);
/* The signing key as PKCS#8 PEM, malloc'd (wipe with ca_free_secret). */
char *ca_bundle_key_pem(const ca_bundle_t *b);
/* Certificates served after the leaf (signing cert, intermediates, root). */
size_t ca_bundle_chain_len(const ca_bundle_t *b);
const char *ca_bundle_chain_pem(const ca_bundle_t *b, size_t i);
/* True for a plug-in CA, false for a self-signed root. */
bool ca_bundle_plugged(const ca_bundle_t *b);
/* The signing certificate's notAfter (unix seconds). */
int64_t ca_bundle_not_after(const ca_bundle_t *b);
/* "RSA 2048", "ECDSA P-256" ... */
const char *ca_bundle_key_desc(const ca_bundle_t *b);
/* Where the material came from ("cacerts directory /etc/cacerts"). */
const char *ca_bundle_source(const ca_bundle_t *b);

/* ---- caller authentication ---- */

typedef struct ca_caller {
    char ns[64];
    char sa[256];
    char identity[512]; /* SPIFFE ID */
    int64_t expires; /* the token's exp (unix seconds), 0 when unknown */
} ca_caller_t;

typedef struct ca_authn ca_authn_t;

typedef struct ca_authn_opts {
    struct kube_client *kube; /* kube mode: TokenReview */
    const char *jwt_key_file; /* local mode: PEM public key(s) or a JWKS JSON file */
    const char *issuer; /* local mode: required iss; NULL: not checked */
    const char *audience; /* NULL: istio-ca */
    const char *trust_domain; /* NULL: cluster.local */
    size_t cache_max; /* kube mode positive-result cache entries; 0: 4096 */
} ca_authn_opts_t;

/* NULL with err when the key file cannot be read, or neither mode is set. */
ca_authn_t *ca_authn_new(const ca_authn_opts_t *o, char *err, size_t errlen);
void ca_authn_free(ca_authn_t *a);
/* Authenticates the value of an authorization header ("Bearer <JWT>").
 * Blocking in kube mode (call it off the loop). 0 with *out filled,
 * CA_EAUTH with the reason in err. */
int ca_authn_check(ca_authn_t *a, const char *authorization, ca_caller_t *out, char *err, size_t errlen);
/* Number of cached TokenReview results (for tests and metrics). */
size_t ca_authn_cache_size(ca_authn_t *a);

/* JWT verification alone (RS256 / ES256), for local mode and tests. keys is
 * the text of a PEM public key file (one or more keys) or of a JWKS. */
typedef struct ca_jwt_keys ca_jwt_keys_t;
ca_jwt_keys_t *ca_jwt_keys_parse(const char *text, size_t len, char *err, size_t errlen);
void ca_jwt_keys_free(ca_jwt_keys_t *k);
/* Verifies the signature, exp/nbf at `now` (with 60 s leeway), iss (when
 * issuer is set) and that aud holds `audience`; sub must be
 * system:serviceaccount:NS:SA. 0 with *out filled (identity in
 * trust_domain), CA_EAUTH with the reason. */
int ca_jwt_verify(const ca_jwt_keys_t *k, const char *token, int64_t now, const char *issuer,
                  const char *audience, const char *trust_domain, ca_caller_t *out, char *err, size_t errlen);

/* ---- the certificate service ---- */

#define CA_SERVICE_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"

typedef struct ca_service ca_service_t;

/* Registers CreateCertificate on srv (whose loop runs the callbacks);
 * authentication and signing run on wq. ca, authn and wq are borrowed and
 * must outlive the server. NULL with err on failure. */
ca_service_t *ca_service_new(ca_t *ca, ca_authn_t *authn, struct workq *wq, struct grpc_server *srv,
                             char *err, size_t errlen);
/* Frees the service. Call after the server is freed (no call is in flight). */
void ca_service_free(ca_service_t *s);

/* meshd's own serving certificate for 15012: DNS names istiod.NS.svc plus
 * the extra names, issued by the CA. ca_serving_new issues it and builds a
 * TLS server context; ca_serving_rotate reissues it when less than a third
 * of its life is left (or when the root changed) and swaps it into the
 * context (tp_tls_ctx_update). meshd calls rotate from a timer, off the loop. */
typedef struct ca_serving ca_serving_t;
ca_serving_t *ca_serving_new(ca_t *ca, const char *const *dns, size_t ndns, int64_t ttl_s, char *err,
                             size_t errlen);
/* The TLS context to give the gRPC server (borrowed; lives with the serving). */
struct tp_tls_ctx *ca_serving_tls(ca_serving_t *s);
/* 1 when it reissued, 0 when the certificate is still fresh, -1 on failure. */
int ca_serving_rotate(ca_serving_t *s, bool force, char *err, size_t errlen);
/* notAfter of the current serving certificate (unix seconds). */
int64_t ca_serving_not_after(ca_serving_t *s);
void ca_serving_free(ca_serving_t *s);

/* ---- root publication (kube mode) ---- */

/* Creates or repairs ConfigMap ns/istio-ca-root-cert with the current root.
 * Blocking. 0, or -1 with err. */
int ca_publish_root(ca_t *ca, struct kube_client *kc, const char *ns, char *err, size_t errlen);
/* Config store subscriber (cfg_event_cb, ud = ca_t): a new Namespace, an
 * edited or deleted istio-ca-root-cert ConfigMap, and changes of the CA's
 * own Secrets queue work for the CA's background thread (never blocks). */
void ca_on_store_event(void *ud, const cfg_event_t *ev);
/* Queues publication to every namespace the API server lists (at start, and
 * done by the CA itself after every root change). */
void ca_publish_all(ca_t *ca);
/* Waits until the background thread has no queued work (tests); 0, or -1
 * after timeout_ms. */
int ca_wait_idle(ca_t *ca, int timeout_ms);

#endif
