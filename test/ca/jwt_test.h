/*
 * jwt_test: minting service-account JWTs (RS256 / ES256) in tests, and
 * writing the public key as PEM or JWKS (header-only, for the CA tests).
 */
#ifndef MESH_TEST_CA_JWT_TEST_H
#define MESH_TEST_CA_JWT_TEST_H

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>

#include "ca_test.h"

static inline char *jt_b64url(const unsigned char *d, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = malloc(n * 4 / 3 + 4), *p = o;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];
        *p++ = a[(v >> 6) & 63];
        *p++ = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        *p++ = a[v >> 18];
        *p++ = a[(v >> 12) & 63];
        *p++ = a[(v >> 6) & 63];
    }
    *p = 0;
    return o;
}

/* A JWT with the given header alg/kid and payload JSON, signed by k. */
static inline char *jt_token(EVP_PKEY *k, const char *alg, const char *kid, const char *payload)
{
    char hdr[256];
    snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"%s%s%s}", alg, kid ? ",\"kid\":\"" : "", kid ? kid : "",
             kid ? "\"" : "");
    char *h = jt_b64url((const unsigned char *)hdr, strlen(hdr));
    char *p = jt_b64url((const unsigned char *)payload, strlen(payload));
    size_t inl = strlen(h) + strlen(p) + 2;
    char *in = malloc(inl);
    snprintf(in, inl, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t sl = sizeof sig;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestSign(m, sig, &sl, (const unsigned char *)in, strlen(in)), 1);
    EVP_MD_CTX_free(m);
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) {
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sl);
        unsigned char raw[64];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        memcpy(sig, raw, 64);
        sl = 64;
    }
    char *s = jt_b64url(sig, sl);
    size_t tl = strlen(in) + strlen(s) + 2;
    char *tok = malloc(tl);
    snprintf(tok, tl, "%s.%s", in, s);
    free(h);
    free(p);
    free(in);
    free(s);
    return tok;
}

/* A Kubernetes-like service-account token payload. */
static inline char *jt_payload(const char *iss, const char *aud_json, const char *sub, long exp_off, long nbf_off)
{
    char *p = malloc(1024);
    long now = (long)time(NULL);
    snprintf(p, 1024, "{\"iss\":\"%s\",\"aud\":%s,\"sub\":\"%s\",\"exp\":%ld,\"nbf\":%ld,\"iat\":%ld}", iss, aud_json,
             sub, now + exp_off, now + nbf_off, now);
    return p;
}

static inline char *jt_pubkey_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    BUF_MEM *m;
    BIO_get_mem_ptr(b, &m);
    char *s = strndup(m->data, m->length);
    BIO_free(b);
    return s;
}

/* One JWK (no surrounding braces list) for an RSA or P-256 key. */
static inline char *jt_jwk(EVP_PKEY *k, const char *kid)
{
    char *out = malloc(4096);
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
        BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e);
        unsigned char nb[1024], eb[16];
        int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
        char *ns = jt_b64url(nb, (size_t)nl), *es = jt_b64url(eb, (size_t)el);
        snprintf(out, 4096, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"}",
                 kid, ns, es);
        free(ns);
        free(es);
        BN_free(n);
        BN_free(e);
    } else {
        unsigned char pt[65];
        size_t pl = 0;
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &pl);
        char *x = jt_b64url(pt + 1, 32), *y = jt_b64url(pt + 33, 32);
        snprintf(out, 4096, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", kid, x, y);
        free(x);
        free(y);
    }
    return out;
}

#endif
