/*
 * Local-mode caller authentication: service-account JWTs signed with RS256
 * and ES256 are accepted from a PEM key or a JWKS; expired, not-yet-valid,
 * wrong-audience, wrong-issuer, badly signed, unsigned and non-service-account
 * tokens are refused with the reason.
 */
#include <time.h>

#include "../../ca/ca.h"
#include "jwt_test.h"

#define ISS "kubernetes/serviceaccount"
#define SUB "system:serviceaccount:foo:bar"

static EVP_PKEY *rsa, *ec, *other;

static int setup(void **state)
{
    (void)state;
    rsa = ct_key("rsa:2048");
    ec = ct_key("ec:P-256");
    other = ct_key("rsa:2048");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(other);
    return 0;
}

static ca_jwt_keys_t *keys_of(const char *text)
{
    char err[512];
    ca_jwt_keys_t *k = ca_jwt_keys_parse(text, strlen(text), err, sizeof err);
    if (!k)
        fail_msg("keys: %s", err);
    return k;
}

static int verify(ca_jwt_keys_t *k, const char *tok, ca_caller_t *c, char *err, size_t errlen)
{
    return ca_jwt_verify(k, tok, (int64_t)time(NULL), ISS, "istio-ca", "cluster.local", c, err, errlen);
}

static void expect_ok(ca_jwt_keys_t *k, EVP_PKEY *signer, const char *alg, const char *kid)
{
    char *p = jt_payload(ISS, "[\"istio-ca\"]", SUB, 3600, -10);
    char *t = jt_token(signer, alg, kid, p);
    ca_caller_t c;
    char err[512] = "";
    if (verify(k, t, &c, err, sizeof err) != 0)
        fail_msg("%s: %s", alg, err);
    assert_string_equal(c.ns, "foo");
    assert_string_equal(c.sa, "bar");
    assert_string_equal(c.identity, "spiffe://cluster.local/ns/foo/sa/bar");
    assert_true(c.expires > (int64_t)time(NULL));
    free(p);
    free(t);
}

static void expect_refused(ca_jwt_keys_t *k, const char *tok, const char *msg)
{
    ca_caller_t c;
    char err[512] = "";
    assert_int_equal(verify(k, tok, &c, err, sizeof err), CA_EAUTH);
    ct_assert_has(err, msg);
}

static void test_pem_keys(void **state)
{
    (void)state;
    char *a = jt_pubkey_pem(rsa), *b = jt_pubkey_pem(ec);
    char both[8192];
    snprintf(both, sizeof both, "%s%s", a, b);
    ca_jwt_keys_t *k = keys_of(both);
    expect_ok(k, rsa, "RS256", NULL);
    expect_ok(k, ec, "ES256", NULL);
    ca_jwt_keys_free(k);
    free(a);
    free(b);
}

static void test_jwks(void **state)
{
    (void)state;
    char *a = jt_jwk(rsa, "r1"), *b = jt_jwk(ec, "e1"), jwks[9000];
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s,%s]}", a, b);
    ca_jwt_keys_t *k = keys_of(jwks);
    expect_ok(k, rsa, "RS256", "r1");
    expect_ok(k, ec, "ES256", "e1");
    expect_ok(k, rsa, "RS256", NULL);
    /* a kid that names another key */
    char *p = jt_payload(ISS, "\"istio-ca\"", SUB, 3600, 0);
    char *t = jt_token(rsa, "RS256", "e1", p);
    expect_refused(k, t, "no RSA key with kid \"e1\"");
    free(t);
    free(p);
    ca_jwt_keys_free(k);
    free(a);
    free(b);
    /* bad key sets */
    char err[512];
    assert_null(ca_jwt_keys_parse("{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}", 37, err, sizeof err));
    ct_assert_has(err, "key type oct is not supported");
    assert_null(ca_jwt_keys_parse("not a key", 9, err, sizeof err));
    ct_assert_has(err, "no PEM PUBLIC KEY found");
    assert_null(ca_jwt_keys_parse("{\"keys\":", 8, err, sizeof err));
    ct_assert_has(err, "jwks: invalid JSON");
}

static void test_refusals(void **state)
{
    (void)state;
    char *pem = jt_pubkey_pem(rsa);
    ca_jwt_keys_t *k = keys_of(pem);
    struct {
        const char *iss, *aud, *sub;
        long exp, nbf;
        const char *msg;
    } cases[] = {
        {ISS, "[\"istio-ca\"]", SUB, -3600, -7200, "token expired at "},
        {ISS, "[\"istio-ca\"]", SUB, 7200, 3600, "token is not valid before "},
        {ISS, "[\"api\",\"other\"]", SUB, 3600, 0, "token audience [\"api\",\"other\"] does not include \"istio-ca\""},
        {ISS, "\"kubernetes.default.svc\"", SUB, 3600, 0, "does not include \"istio-ca\""},
        {"https://evil.example", "[\"istio-ca\"]", SUB, 3600, 0,
         "token issuer \"https://evil.example\" is not the trusted issuer \"" ISS "\""},
        {ISS, "[\"istio-ca\"]", "admin", 3600, 0, "token subject \"admin\" is not a service account"},
        {ISS, "[\"istio-ca\"]", "system:serviceaccount:foo", 3600, 0, "is not a service account"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = jt_payload(cases[i].iss, cases[i].aud, cases[i].sub, cases[i].exp, cases[i].nbf);
        char *t = jt_token(rsa, "RS256", NULL, p);
        expect_refused(k, t, cases[i].msg);
        free(p);
        free(t);
    }
    char *p = jt_payload(ISS, "[\"istio-ca\"]", SUB, 3600, 0);
    /* signed by another key */
    char *t = jt_token(other, "RS256", NULL, p);
    expect_refused(k, t, "token: the signature does not verify");
    free(t);
    /* a tampered payload */
    t = jt_token(rsa, "RS256", NULL, p);
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    expect_refused(k, t, "signature does not verify");
    free(t);
    /* unsigned and HMAC tokens */
    char *h = jt_b64url((const unsigned char *)"{\"alg\":\"none\"}", 14);
    char *pl = jt_b64url((const unsigned char *)p, strlen(p));
    char buf[4096];
    snprintf(buf, sizeof buf, "%s.%s.", h, pl);
    expect_refused(k, buf, "algorithm \"none\" is not accepted");
    free(h);
    h = jt_b64url((const unsigned char *)"{\"alg\":\"HS256\"}", 15);
    snprintf(buf, sizeof buf, "%s.%s.AAAA", h, pl);
    expect_refused(k, buf, "algorithm \"HS256\" is not accepted");
    /* ES256 token but only an RSA key */
    t = jt_token(ec, "ES256", NULL, p);
    expect_refused(k, t, "no EC P-256 key");
    free(t);
    /* no expiry */
    t = jt_token(rsa, "RS256", NULL, "{\"iss\":\"" ISS "\",\"aud\":\"istio-ca\",\"sub\":\"" SUB "\"}");
    expect_refused(k, t, "token has no expiry (exp)");
    free(t);
    expect_refused(k, "abc", "not a JWT");
    expect_refused(k, "a.b.c.d", "not a JWT");
    expect_refused(k, "!!.??.**", "invalid base64url");
    free(h);
    free(pl);
    free(p);
    ca_jwt_keys_free(k);
    free(pem);
}

static void test_authn_header_and_key_file(void **state)
{
    (void)state;
    char *dir = ct_tmpdir(), path[512], err[512];
    snprintf(path, sizeof path, "%s/jwks.pem", dir);
    char *pem = jt_pubkey_pem(ec);
    ct_write(path, pem, 0644);
    ca_authn_opts_t o = {.jwt_key_file = path, .issuer = ISS};
    ca_authn_t *a = ca_authn_new(&o, err, sizeof err);
    assert_non_null(a);
    char *p = jt_payload(ISS, "[\"istio-ca\"]", "system:serviceaccount:default:sleep", 600, 0);
    char *t = jt_token(ec, "ES256", NULL, p);
    char hdr[4096];
    snprintf(hdr, sizeof hdr, "Bearer %s", t);
    ca_caller_t c;
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), 0);
    assert_string_equal(c.identity, "spiffe://cluster.local/ns/default/sa/sleep");
    snprintf(hdr, sizeof hdr, "bearer   %s  ", t);
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), 0);
    assert_int_equal(ca_authn_check(a, NULL, &c, err, sizeof err), CA_EAUTH);
    ct_assert_has(err, "no authorization header");
    assert_int_equal(ca_authn_check(a, "Basic abc", &c, err, sizeof err), CA_EAUTH);
    ct_assert_has(err, "is not \"Bearer <token>\"");
    assert_int_equal(ca_authn_check(a, "Bearer ", &c, err, sizeof err), CA_EAUTH);
    /* the key file is rotated: the old key's tokens stop working */
    char *pem2 = jt_pubkey_pem(other);
    usleep(20000);
    ct_write(path, pem2, 0644);
    snprintf(hdr, sizeof hdr, "Bearer %s", t);
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), CA_EAUTH);
    char *t2 = jt_token(other, "RS256", NULL, p);
    snprintf(hdr, sizeof hdr, "Bearer %s", t2);
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), 0);
    ca_authn_free(a);
    /* a missing key file is an error at start */
    ca_authn_opts_t bad = {.jwt_key_file = "/nonexistent/key.pem"};
    assert_null(ca_authn_new(&bad, err, sizeof err));
    ct_assert_has(err, "jwt key file /nonexistent/key.pem: cannot read");
    free(t);
    free(t2);
    free(p);
    free(pem);
    free(pem2);
    ct_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pem_keys),
        cmocka_unit_test(test_jwks),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_authn_header_and_key_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
