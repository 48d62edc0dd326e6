/*
 * ca_internal: what the files of ca/ share and nobody else may use: the
 * bundle's layout and small OpenSSL helpers (PEM in and out, messages).
 */
#ifndef MESH_CA_INTERNAL_H
#define MESH_CA_INTERNAL_H

#include <stdatomic.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca.h"

struct ca_bundle {
    _Atomic unsigned _refs;
    EVP_PKEY *key;
    X509 *cert; /* signs */
    STACK_OF(X509) *roots;
    char *cert_pem;
    char *root_pem;
    char **chain_pem; /* served after the leaf: cert, intermediates, root */
    size_t nchain;
    bool plugged;
    int64_t not_after;
    char key_desc[32];
    char source[256];
    unsigned char digest[32]; /* SHA-256 of the input texts (change detection) */
};

/* snprintf into err (when err is not NULL). Returns -1, or the given code
 * through ca_errc. */
int ca_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ca_errc(int code, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The reason of the last OpenSSL error in words (and clears the queue). */
const char *ca_ossl_reason(char *buf, size_t len);
/* A malloc'd PEM of a certificate, or NULL. */
char *ca_x509_pem(X509 *x);
/* A malloc'd PKCS#8 PEM of a private key (wipe with ca_free_secret). */
char *ca_key_pem(EVP_PKEY *k);
/* The subject as "O=Istio, CN=Root CA" into buf. */
const char *ca_x509_name(X509 *x, char *buf, size_t len);
/* "RSA 2048", "ECDSA P-256", ... into buf. */
const char *ca_key_desc(EVP_PKEY *k, char *buf, size_t len);
/* A new RSA 2048 or ECDSA P-256 key, or NULL. */
EVP_PKEY *ca_keygen(ca_key_type_t kt);
/* Sets a random positive 128-bit serial. 0 or -1. */
int ca_set_serial(X509 *x);
/* ASN1 time as unix seconds. */
int64_t ca_asn1_time(const ASN1_TIME *t);
/* SHA-256 of the concatenation of up to 4 strings (NULLs skipped). */
void ca_digest(unsigned char out[32], const char *a, const char *b, const char *c, const char *d);
/* Reads a whole file (NUL-terminated, malloc'd). NULL with errno set. */
char *ca_read_file(const char *path, size_t *len);
/* Parses every CERTIFICATE of pem into a new stack. NULL with err naming
 * `name` ("no PEM certificate found", "certificate 2: cannot parse: ..."). */
STACK_OF(X509) *ca_parse_certs(const char *pem, size_t len, const char *name, char *err, size_t errlen);

/* The bundle source of a CA (ca.c) swaps bundles; sign.c reads them. */
ca_bundle_t *ca_bundle_new_from(EVP_PKEY *key, X509 *cert, STACK_OF(X509) *roots, STACK_OF(X509) *served,
                                bool plugged, const char *source);

/* Parses "system:serviceaccount:NS:SA" into out (identity in trust_domain).
 * 0 or CA_EAUTH. */
int ca_parse_sa_subject(const char *sub, const char *trust_domain, ca_caller_t *out, char *err, size_t errlen);
/* Sets the bundle's source description (truncated to fit). */
void ca_set_source(ca_bundle_t *b, const char *source);
/* Signing with a given bundle (sign.c); ca_sign_csr / ca_issue_serving wrap them. */
int ca_bundle_sign_csr(ca_bundle_t *b, const char *csr_pem, size_t csr_len, const char *identity, int64_t ttl_s,
                       ca_chain_t *out, char *err, size_t errlen);
int ca_bundle_issue_key(ca_bundle_t *b, const char *const *dns, size_t ndns, const char *uri, int64_t ttl_s,
                        ca_key_type_t kt, char **key_pem, ca_chain_t *out, char *err, size_t errlen);

#endif
