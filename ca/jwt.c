/*
 * jwt: verification of service-account JSON Web Tokens (RS256, ES256)
 * against public keys given as PEM or as a JWKS, for local mode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "../common/arena.h"
#include "../common/b64.h"
#include "ca_internal.h"

#define JWT_MAX_LEN 16384
#define JWT_LEEWAY_S 60
#define JWT_MAX_KEYS 64

typedef struct jwt_key {
    EVP_PKEY *pkey;
    char kid[128]; /* "" when the key has none */
} jwt_key_t;

struct ca_jwt_keys {
    jwt_key_t keys[JWT_MAX_KEYS];
    size_t n;
};

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *k = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return k;
}

static const char *jstr(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static EVP_PKEY *jwk_to_pkey(struct json_object *jwk, size_t idx, char *err, size_t errlen)
{
    const char *kty = jstr(jwk, "kty");
    EVP_PKEY *k = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *n = NULL, *e = NULL;
    unsigned char *a = NULL, *b = NULL, *pt = NULL;
    size_t al = 0, bl = 0;
    if (!bld)
        goto out;
    if (kty && !strcmp(kty, "RSA")) {
        const char *ns = jstr(jwk, "n"), *es = jstr(jwk, "e");
        if (!ns || !es || !(a = b64_decode(ns, strlen(ns), &al)) || !(b = b64_decode(es, strlen(es), &bl))) {
            ca_err(err, errlen, "jwks: key %zu: RSA key needs base64url \"n\" and \"e\"", idx);
            goto out;
        }
        n = BN_bin2bn(a, (int)al, NULL);
        e = BN_bin2bn(b, (int)bl, NULL);
        if (n && e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            k = pkey_from_params("RSA", bld);
    } else if (kty && !strcmp(kty, "EC")) {
        const char *crv = jstr(jwk, "crv"), *xs = jstr(jwk, "x"), *ys = jstr(jwk, "y");
        if (!crv || strcmp(crv, "P-256") != 0) {
            ca_err(err, errlen, "jwks: key %zu: EC curve %s is not supported (P-256)", idx, crv ? crv : "(none)");
            goto out;
        }
        if (!xs || !ys || !(a = b64_decode(xs, strlen(xs), &al)) || !(b = b64_decode(ys, strlen(ys), &bl)) ||
            al != 32 || bl != 32) {
            ca_err(err, errlen, "jwks: key %zu: EC key needs 32-byte base64url \"x\" and \"y\"", idx);
            goto out;
        }
        pt = mesh_xmalloc(65);
        pt[0] = 0x04;
        memcpy(pt + 1, a, 32);
        memcpy(pt + 33, b, 32);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 65))
            k = pkey_from_params("EC", bld);
    } else {
        ca_err(err, errlen, "jwks: key %zu: key type %s is not supported (RSA or EC)", idx, kty ? kty : "(none)");
        goto out;
    }
    if (!k) {
        char why[256];
        ca_err(err, errlen, "jwks: key %zu: invalid %s key: %s", idx, kty, ca_ossl_reason(why, sizeof why));
    }
out:
    BN_free(n);
    BN_free(e);
    free(a);
    free(b);
    free(pt);
    OSSL_PARAM_BLD_free(bld);
    return k;
}

static int add_key(ca_jwt_keys_t *k, EVP_PKEY *p, const char *kid, char *err, size_t errlen)
{
    if (k->n == JWT_MAX_KEYS) {
        EVP_PKEY_free(p);
        return ca_err(err, errlen, "jwt keys: more than %d keys", JWT_MAX_KEYS);
    }
    k->keys[k->n].pkey = p;
    snprintf(k->keys[k->n].kid, sizeof k->keys[k->n].kid, "%s", kid ? kid : "");
    k->n++;
    return 0;
}

static int parse_jwks(ca_jwt_keys_t *k, const char *text, size_t len, char *err, size_t errlen)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *doc = tok ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
    int rc = -1;
    if (!doc) {
        ca_err(err, errlen, "jwks: invalid JSON: %s",
               tok ? json_tokener_error_desc(json_tokener_get_error(tok)) : "out of memory");
        goto out;
    }
    struct json_object *keys = NULL;
    if (json_object_object_get_ex(doc, "keys", &keys)) {
        if (!json_object_is_type(keys, json_type_array)) {
            ca_err(err, errlen, "jwks: \"keys\" must be an array");
            goto out;
        }
        for (size_t i = 0; i < json_object_array_length(keys); i++) {
            struct json_object *jwk = json_object_array_get_idx(keys, i);
            const char *use = jstr(jwk, "use");
            if (use && strcmp(use, "sig") != 0)
                continue;
            EVP_PKEY *p = jwk_to_pkey(jwk, i, err, errlen);
            if (!p || add_key(k, p, jstr(jwk, "kid"), err, errlen) < 0)
                goto out;
        }
    } else {
        EVP_PKEY *p = jwk_to_pkey(doc, 0, err, errlen);
        if (!p || add_key(k, p, jstr(doc, "kid"), err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    json_object_put(doc);
    if (tok)
        json_tokener_free(tok);
    return rc;
}

static int parse_pem_keys(ca_jwt_keys_t *k, const char *text, size_t len, char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(text, (int)len);
    int rc = -1;
    if (!b)
        return ca_err(err, errlen, "out of memory");
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        ERR_clear_error();
        if (!PEM_read_bio(b, &name, &header, &data, &dlen)) {
            ERR_clear_error();
            break;
        }
        const unsigned char *p = data;
        EVP_PKEY *pk = NULL;
        if (!strcmp(name, "PUBLIC KEY")) {
            pk = d2i_PUBKEY(NULL, &p, dlen);
        } else if (!strcmp(name, "CERTIFICATE")) {
            X509 *x = d2i_X509(NULL, &p, dlen);
            if (x)
                pk = X509_get_pubkey(x);
            X509_free(x);
        } else if (!strcmp(name, "RSA PUBLIC KEY")) {
            pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, dlen);
        }
        bool known = !strcmp(name, "PUBLIC KEY") || !strcmp(name, "CERTIFICATE") || !strcmp(name, "RSA PUBLIC KEY");
        char nm[64];
        snprintf(nm, sizeof nm, "%s", name);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (!known)
            continue; /* private keys and other blocks are skipped */
        if (!pk) {
            char why[256];
            ca_err(err, errlen, "jwt keys: block %zu (%s): cannot parse: %s", k->n + 1, nm,
                   ca_ossl_reason(why, sizeof why));
            goto out;
        }
        if (add_key(k, pk, NULL, err, errlen) < 0)
            goto out;
    }
    if (k->n == 0) {
        ca_err(err, errlen, "jwt keys: no PEM PUBLIC KEY found");
        goto out;
    }
    rc = 0;
out:
    BIO_free(b);
    return rc;
}

ca_jwt_keys_t *ca_jwt_keys_parse(const char *text, size_t len, char *err, size_t errlen)
{
    ca_jwt_keys_t *k = mesh_xcalloc(1, sizeof *k);
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
        i++;
    int rc = (i < len && text[i] == '{') ? parse_jwks(k, text, len, err, errlen)
                                         : parse_pem_keys(k, text, len, err, errlen);
    if (rc == 0 && k->n == 0)
        rc = ca_err(err, errlen, "jwks: no signing key");
    if (rc != 0) {
        ca_jwt_keys_free(k);
        return NULL;
    }
    return k;
}

void ca_jwt_keys_free(ca_jwt_keys_t *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        EVP_PKEY_free(k->keys[i].pkey);
    free(k);
}

static bool verify_with(EVP_PKEY *pk, bool ec, const unsigned char *in, size_t inlen, const unsigned char *sig,
                        size_t siglen)
{
    unsigned char *der = NULL;
    int derlen = 0;
    bool ok = false;
    if (ec) {
        if (siglen != 64)
            return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return false;
        }
        derlen = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (derlen <= 0)
            return false;
        sig = der;
        siglen = (size_t)derlen;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (m && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pk) == 1 &&
        EVP_DigestVerify(m, sig, siglen, in, inlen) == 1)
        ok = true;
    EVP_MD_CTX_free(m);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}

static bool aud_has(struct json_object *aud, const char *want)
{
    if (json_object_is_type(aud, json_type_string))
        return !strcmp(json_object_get_string(aud), want);
    if (json_object_is_type(aud, json_type_array))
        for (size_t i = 0; i < json_object_array_length(aud); i++) {
            struct json_object *a = json_object_array_get_idx(aud, i);
            if (json_object_is_type(a, json_type_string) && !strcmp(json_object_get_string(a), want))
                return true;
        }
    return false;
}

static bool num_claim(struct json_object *p, const char *key, int64_t *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(p, key, &v))
        return false;
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return true;
    }
    if (json_object_is_type(v, json_type_double)) {
        *out = (int64_t)json_object_get_double(v);
        return true;
    }
    return false;
}

static void fmt_time(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm))
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(buf, len, "%lld", (long long)t);
}

int ca_parse_sa_subject(const char *sub, const char *trust_domain, ca_caller_t *out, char *err, size_t errlen)
{
    static const char prefix[] = "system:serviceaccount:";
    if (!sub || strncmp(sub, prefix, sizeof prefix - 1) != 0)
        return ca_errc(CA_EAUTH, err, errlen, "token subject \"%s\" is not a service account (system:serviceaccount:NS:SA)",
                       sub ? sub : "");
    const char *ns = sub + sizeof prefix - 1;
    const char *colon = strchr(ns, ':');
    if (!colon || colon == ns || !colon[1] || strchr(colon + 1, ':') || strchr(ns, '/') ||
        (size_t)(colon - ns) >= sizeof out->ns || strlen(colon + 1) >= sizeof out->sa)
        return ca_errc(CA_EAUTH, err, errlen, "token subject \"%s\" is not a service account (system:serviceaccount:NS:SA)",
                       sub);
    memset(out, 0, sizeof *out);
    memcpy(out->ns, ns, (size_t)(colon - ns));
    snprintf(out->sa, sizeof out->sa, "%s", colon + 1);
    if (strchr(out->sa, '/'))
        return ca_errc(CA_EAUTH, err, errlen, "token subject \"%s\": service account name holds '/'", sub);
    snprintf(out->identity, sizeof out->identity, "spiffe://%s/ns/%s/sa/%s",
             trust_domain && *trust_domain ? trust_domain : CA_DEFAULT_TRUST_DOMAIN, out->ns, out->sa);
    return 0;
}

int ca_jwt_verify(const ca_jwt_keys_t *k, const char *token, int64_t now, const char *issuer, const char *audience,
                  const char *trust_domain, ca_caller_t *out, char *err, size_t errlen)
{
    int rc = CA_EAUTH;
    unsigned char *hdr = NULL, *pay = NULL, *sig = NULL;
    size_t hl = 0, pl = 0, sl = 0;
    struct json_object *h = NULL, *p = NULL;
    char t1[40], t2[40];
    if (!audience)
        audience = CA_DEFAULT_AUDIENCE;
    size_t len = token ? strlen(token) : 0;
    if (len == 0)
        return ca_errc(CA_EAUTH, err, errlen, "empty token");
    if (len > JWT_MAX_LEN)
        return ca_errc(CA_EAUTH, err, errlen, "token longer than %d bytes", JWT_MAX_LEN);
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.')) {
        ca_err(err, errlen, "token is not a JWT (header.payload.signature)");
        goto out;
    }
    if (!(hdr = b64_decode(token, (size_t)(d1 - token), &hl)) ||
        !(pay = b64_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pl)) ||
        !(sig = b64_decode(d2 + 1, len - (size_t)(d2 + 1 - token), &sl))) {
        ca_err(err, errlen, "token: invalid base64url");
        goto out;
    }
    if (!(h = json_tokener_parse((const char *)hdr)) || !json_object_is_type(h, json_type_object)) {
        ca_err(err, errlen, "token: the header is not a JSON object");
        goto out;
    }
    const char *alg = jstr(h, "alg"), *kid = jstr(h, "kid");
    bool ec;
    if (alg && !strcmp(alg, "RS256"))
        ec = false;
    else if (alg && !strcmp(alg, "ES256"))
        ec = true;
    else {
        ca_err(err, errlen, "token: algorithm \"%s\" is not accepted (RS256 or ES256)", alg ? alg : "");
        goto out;
    }
    bool verified = false, candidate = false;
    for (size_t i = 0; i < k->n && !verified; i++) {
        const jwt_key_t *key = &k->keys[i];
        int id = EVP_PKEY_get_base_id(key->pkey);
        if ((ec && id != EVP_PKEY_EC) || (!ec && id != EVP_PKEY_RSA))
            continue;
        if (kid && key->kid[0] && strcmp(kid, key->kid) != 0)
            continue;
        candidate = true;
        verified = verify_with(key->pkey, ec, (const unsigned char *)token, (size_t)(d2 - token), sig, sl);
    }
    if (!verified) {
        if (!candidate)
            ca_err(err, errlen, "token: no %s key%s%s%s to verify it", ec ? "EC P-256" : "RSA", kid ? " with kid \"" : "",
                   kid ? kid : "", kid ? "\"" : "");
        else
            ca_err(err, errlen, "token: the signature does not verify");
        goto out;
    }
    if (!(p = json_tokener_parse((const char *)pay)) || !json_object_is_type(p, json_type_object)) {
        ca_err(err, errlen, "token: the payload is not a JSON object");
        goto out;
    }
    int64_t exp = 0, nbf = 0;
    if (!num_claim(p, "exp", &exp)) {
        ca_err(err, errlen, "token has no expiry (exp)");
        goto out;
    }
    if (now > exp + JWT_LEEWAY_S) {
        fmt_time(exp, t1, sizeof t1);
        fmt_time(now, t2, sizeof t2);
        ca_err(err, errlen, "token expired at %s (now %s)", t1, t2);
        goto out;
    }
    if (num_claim(p, "nbf", &nbf) && nbf > now + JWT_LEEWAY_S) {
        fmt_time(nbf, t1, sizeof t1);
        ca_err(err, errlen, "token is not valid before %s", t1);
        goto out;
    }
    const char *iss = jstr(p, "iss");
    if (issuer && (!iss || strcmp(iss, issuer) != 0)) {
        ca_err(err, errlen, "token issuer \"%s\" is not the trusted issuer \"%s\"", iss ? iss : "", issuer);
        goto out;
    }
    struct json_object *aud = NULL;
    if (!json_object_object_get_ex(p, "aud", &aud) || !aud_has(aud, audience)) {
        ca_err(err, errlen, "token audience %s does not include \"%s\"",
               aud ? json_object_to_json_string_ext(aud, JSON_C_TO_STRING_PLAIN) : "(none)", audience);
        goto out;
    }
    if ((rc = ca_parse_sa_subject(jstr(p, "sub"), trust_domain, out, err, errlen)) != 0)
        goto out;
    out->expires = exp;
    rc = 0;
out:
    json_object_put(h);
    json_object_put(p);
    free(hdr);
    free(pay);
    free(sig);
    return rc;
}
