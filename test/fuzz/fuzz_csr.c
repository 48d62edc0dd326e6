/*
 * libFuzzer target: what a caller of the certificate service controls.
 *
 * The first byte picks the entry point, the rest is the input:
 *   0: the CSR checks on a PEM text (ca_csr_check), then signing when they pass
 *   1: the same on DER bytes wrapped into a PEM CERTIFICATE REQUEST
 *   2: the gRPC request body: IstioCertificateRequest decoding, then its csr
 *   3: the bearer token: JWT parsing and verification (ca_jwt_verify)
 * Failures are any sanitizer report or leak, a refusal without a reason, a
 * return code outside the documented ones, or an issued chain that is not
 * leaf + root.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../../ca/ca.h"
#include "../../ca/ca_internal.h"
#include "istio/v1/auth/ca.pb-c.h"

#define ID "spiffe://cluster.local/ns/foo/sa/bar"

static ca_bundle_t *bundle;
static ca_jwt_keys_t *keys;

static void init(void)
{
    char err[256];
    if (bundle)
        return;
    bundle = ca_bundle_self_signed("cluster.local", CA_KEY_ECDSA, 0, err, sizeof err);
    if (!bundle)
        __builtin_trap();
    /* the CA's own public key doubles as the JWT verification key */
    const char *cert = ca_bundle_cert_pem(bundle);
    keys = ca_jwt_keys_parse(cert, strlen(cert), err, sizeof err);
    if (!keys)
        __builtin_trap();
}

static void check_csr(const char *pem, size_t len)
{
    char err[1024];
    err[0] = 0;
    int rc = ca_csr_check(pem, len, ID, err, sizeof err);
    if (rc != 0 && rc != CA_EINVAL && rc != CA_EPERM && rc != -1)
        __builtin_trap();
    if (rc != 0 && err[0] == 0)
        __builtin_trap(); /* every refusal says why */
    if (rc != 0)
        return;
    ca_chain_t ch;
    rc = ca_bundle_sign_csr(bundle, pem, len, ID, 600, &ch, err, sizeof err);
    if (rc == 0) {
        if (ch.n != 2)
            __builtin_trap();
        ca_chain_free(&ch);
    }
}

static void der_as_pem(const uint8_t *d, size_t n)
{
    size_t b64 = 4 * ((n + 2) / 3);
    char *pem = malloc(b64 + b64 / 64 + 128);
    size_t off = (size_t)sprintf(pem, "-----BEGIN CERTIFICATE REQUEST-----\n");
    unsigned char *enc = malloc(b64 + 1);
    EVP_EncodeBlock(enc, d, (int)n);
    for (size_t i = 0; i < b64; i += 64) {
        size_t l = b64 - i < 64 ? b64 - i : 64;
        memcpy(pem + off, enc + i, l);
        off += l;
        pem[off++] = '\n';
    }
    off += (size_t)sprintf(pem + off, "-----END CERTIFICATE REQUEST-----\n");
    check_csr(pem, off);
    free(enc);
    free(pem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    uint8_t mode = data[0] & 3;
    data++;
    size--;
    if (mode == 0) {
        char *s = malloc(size + 1);
        memcpy(s, data, size);
        s[size] = 0;
        check_csr(s, size);
        free(s);
    } else if (mode == 1) {
        der_as_pem(data, size);
    } else if (mode == 2) {
        Istio__V1__Auth__IstioCertificateRequest *req =
            istio__v1__auth__istio_certificate_request__unpack(NULL, size, data);
        if (req) {
            const char *csr = req->csr ? req->csr : "";
            check_csr(csr, strlen(csr));
            if (req->metadata && req->metadata->n_fields > 0 && !req->metadata->fields[0])
                __builtin_trap();
            istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
        }
    } else {
        char *tok = malloc(size + 1);
        memcpy(tok, data, size);
        tok[size] = 0;
        ca_caller_t c;
        char err[512];
        err[0] = 0;
        int rc = ca_jwt_verify(keys, tok, 1700000000, NULL, "istio-ca", "cluster.local", &c, err, sizeof err);
        if (rc != 0 && (rc != CA_EAUTH || err[0] == 0))
            __builtin_trap();
        free(tok);
    }
    return 0;
}
