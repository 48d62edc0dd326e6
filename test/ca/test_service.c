/*
 * The certificate service end to end in local mode: meshd's side (CA, JWT
 * authentication, gRPC over TLS with a serving certificate from the same CA)
 * and the client library (one-shot fetch, renewing client). Refusals arrive
 * as the gRPC statuses a proxy sees.
 */
#include <pthread.h>
#include <time.h>

#include "../../ca/ca.h"
#include "../../common/caclient.h"
#include "../../common/grpc.h"
#include "../../common/workq.h"
#include "jwt_test.h"

#define ISS "kubernetes/serviceaccount"

typedef struct fx {
    char *dir;
    char root_file[512], key_file[512], token_file[512], addr[64];
    EVP_PKEY *jwt_key;
    ca_t *ca;
    ca_authn_t *authn;
    ca_serving_t *serving;
    loop_t *loop;
    workq_t *wq;
    grpc_server_t *srv;
    ca_service_t *svc;
    pthread_t thr;
    char *root;
} fx_t;

static void *loop_thread(void *arg)
{
    loop_run(arg);
    return NULL;
}

static void write_token(fx_t *f, const char *aud, const char *sub, long exp_off, EVP_PKEY *k)
{
    char *p = jt_payload(ISS, aud, sub, exp_off, -5);
    char *t = jt_token(k ? k : f->jwt_key, "ES256", NULL, p);
    ct_write(f->token_file, t, 0600);
    free(p);
    free(t);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    char err[1024];
    f->dir = ct_tmpdir();
    snprintf(f->root_file, sizeof f->root_file, "%s/root.pem", f->dir);
    snprintf(f->key_file, sizeof f->key_file, "%s/jwt.pub", f->dir);
    snprintf(f->token_file, sizeof f->token_file, "%s/token", f->dir);
    f->jwt_key = ct_key("ec:P-256");
    char *pub = jt_pubkey_pem(f->jwt_key);
    ct_write(f->key_file, pub, 0644);
    free(pub);
    ca_opts_t co = {.root_file = f->root_file, .root_key_type = CA_KEY_ECDSA, .reload_interval_ms = -1};
    assert_non_null(f->ca = ca_new(&co, err, sizeof err));
    ca_authn_opts_t ao = {.jwt_key_file = f->key_file, .issuer = ISS};
    assert_non_null(f->authn = ca_authn_new(&ao, err, sizeof err));
    const char *dns[] = {"meshd.local"};
    f->serving = ca_serving_new(f->ca, dns, 1, 0, err, sizeof err);
    if (!f->serving)
        fail_msg("serving: %s", err);
    assert_non_null(f->loop = loop_new());
    assert_non_null(f->wq = workq_new(2));
    grpc_server_opts_t so = {.listen = "127.0.0.1:0", .tls = ca_serving_tls(f->serving)};
    f->srv = grpc_server_new(f->loop, &so, err, sizeof err);
    if (!f->srv)
        fail_msg("grpc server: %s", err);
    assert_non_null(f->svc = ca_service_new(f->ca, f->authn, f->wq, f->srv, err, sizeof err));
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", grpc_server_port(f->srv));
    f->root = ca_root_pem(f->ca);
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", 3600, NULL);
    pthread_create(&f->thr, NULL, loop_thread, f->loop);
    *state = f;
    return 0;
}

static void stop_server(void *arg)
{
    fx_t *f = arg;
    grpc_server_free(f->srv);
    f->srv = NULL;
    loop_stop(f->loop);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    loop_post(f->loop, stop_server, f);
    pthread_join(f->thr, NULL);
    workq_free(f->wq);
    loop_run_once(f->loop, 0); /* the last jobs' done callbacks */
    ca_service_free(f->svc);
    loop_free(f->loop);
    ca_serving_free(f->serving);
    ca_authn_free(f->authn);
    ca_free(f->ca);
    EVP_PKEY_free(f->jwt_key);
    ct_rmrf(f->dir);
    free(f->dir);
    free(f->root);
    free(f);
    return 0;
}

static caclient_opts_t opts(fx_t *f)
{
    caclient_opts_t o = {0};
    o.addr = f->addr;
    o.root_pem = f->root;
    o.token_file = f->token_file;
    o.key_type = CACLIENT_ECDSA;
    o.ttl_s = 3600;
    o.timeout_ms = 10000;
    return o;
}

static void test_fetch(void **state)
{
    fx_t *f = *state;
    char err[1024], out[4096];
    for (int kt = CACLIENT_RSA; kt <= CACLIENT_ECDSA; kt++) {
        caclient_opts_t o = opts(f);
        o.key_type = (caclient_key_t)kt;
        caclient_cert_t c;
        int rc = caclient_fetch(&o, &c, err, sizeof err);
        if (rc != 0)
            fail_msg("fetch: %s", err);
        assert_string_equal(c.identity, "spiffe://cluster.local/ns/foo/sa/bar");
        assert_int_equal(c.nchain, 2); /* leaf, root */
        assert_in_range(c.not_after - (int64_t)time(NULL), 3590, 3610);
        ct_assert_has(c.key_pem, "BEGIN PRIVATE KEY");
        assert_int_equal(ct_openssl_verify(f->root, c.chain, c.nchain, out, sizeof out), 0);
        caclient_cert_free(&c);
    }
    ca_stats_t st;
    ca_get_stats(f->ca, &st);
    assert_int_equal(st.success, 2);
}

static void expect_status(fx_t *f, caclient_opts_t *o, int status, const char *msg)
{
    char err[1024] = "";
    caclient_cert_t c;
    int rc = caclient_fetch(o, &c, err, sizeof err);
    if (rc != status)
        fail_msg("expected status %d, got %d: %s", status, rc, err);
    ct_assert_has(err, msg);
    (void)f;
}

static void test_refusals(void **state)
{
    fx_t *f = *state;
    caclient_opts_t o = opts(f);
    /* the token is foo/bar, the CSR asks for foo/admin or kube-system/bar */
    o.ns = "foo";
    o.sa = "admin";
    expect_status(f, &o, GRPC_PERMISSION_DENIED, "PERMISSION_DENIED: csr: subjectAltName URI "
                                                 "spiffe://cluster.local/ns/foo/sa/admin asks for service account");
    o.ns = "kube-system";
    o.sa = "bar";
    expect_status(f, &o, GRPC_PERMISSION_DENIED, "asks for namespace \"kube-system\"");
    o = opts(f);
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", -3600, NULL);
    expect_status(f, &o, GRPC_UNAUTHENTICATED, "UNAUTHENTICATED: authentication failed: token expired at");
    write_token(f, "[\"api\"]", "system:serviceaccount:foo:bar", 3600, NULL);
    expect_status(f, &o, GRPC_UNAUTHENTICATED, "does not include \"istio-ca\"");
    EVP_PKEY *k2 = ct_key("ec:P-256");
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", 3600, k2);
    expect_status(f, &o, GRPC_UNAUTHENTICATED, "signature does not verify");
    EVP_PKEY_free(k2);
    /* the token file is re-read each time: a good token works again */
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", 3600, NULL);
    char err[1024];
    caclient_cert_t c;
    assert_int_equal(caclient_fetch(&o, &c, err, sizeof err), 0);
    caclient_cert_free(&c);

    /* no token at all, and a request that is not a protobuf */
    const char *none[] = {NULL};
    grpc_client_opts_t go = {0};
    tp_tls_config_t tc = {.ca_pem = f->root, .verify = TP_VERIFY_REQUIRE, .verify_name = "istiod.istio-system.svc"};
    go.tls = tp_tls_client_new(&tc, err, sizeof err);
    go.sni = "istiod.istio-system.svc";
    uint8_t *resp = NULL;
    size_t rl = 0;
    char *msg = NULL;
    int st = grpc_unary_call(f->addr, &go, CA_SERVICE_PATH, none, "x", 1, &resp, &rl, 10000, &msg);
    assert_int_equal(st, GRPC_UNAUTHENTICATED);
    ct_assert_has(msg, "no authorization header");
    free(msg);
    char *tok = ct_read(f->token_file), authz[4096];
    snprintf(authz, sizeof authz, "Bearer %s", tok);
    const char *hdrs[] = {"authorization", authz, NULL};
    st = grpc_unary_call(f->addr, &go, CA_SERVICE_PATH, hdrs, "\xff\xff\xff", 3, &resp, &rl, 10000, &msg);
    assert_int_equal(st, GRPC_INVALID_ARGUMENT);
    ct_assert_has(msg, "not a valid istio.v1.auth.IstioCertificateRequest");
    free(msg);
    /* a request with an empty CSR */
    st = grpc_unary_call(f->addr, &go, CA_SERVICE_PATH, hdrs, "", 0, &resp, &rl, 10000, &msg);
    assert_int_equal(st, GRPC_INVALID_ARGUMENT);
    ct_assert_has(msg, "csr: empty");
    free(msg);
    free(tok);
    tp_tls_ctx_unref(go.tls);

    /* a client that does not trust meshd's root does not talk to it */
    char *c2, *k3;
    ct_make_ca("ec:P-256", -60, 3600, "critical,CA:TRUE", "critical,keyCertSign", &c2, &k3);
    o.root_pem = c2;
    expect_status(f, &o, GRPC_UNAVAILABLE, "UNAVAILABLE");
    free(c2);
    free(k3);
}

typedef struct renew {
    int ok, failed;
    int64_t not_after[4];
    loop_t *loop;
} renew_t;

static void on_cert(void *ud, const caclient_cert_t *cert, const char *err)
{
    renew_t *r = ud;
    if (!cert) {
        r->failed++;
        print_message("renewal failed: %s\n", err);
        return;
    }
    if (r->ok < 4)
        r->not_after[r->ok] = cert->not_after;
    r->ok++;
}

static void test_renewing_client(void **state)
{
    fx_t *f = *state;
    char err[512];
    loop_t *cl = loop_new();
    renew_t r = {0};
    caclient_opts_t o = opts(f);
    o.ttl_s = 4; /* renewed about 2 s after each issue */
    caclient_t *c = caclient_start(cl, f->wq, &o, on_cert, &r, err, sizeof err);
    assert_non_null(c);
    uint64_t t0 = loop_clock_ms();
    while (r.ok < 1 && loop_clock_ms() - t0 < 10000)
        loop_run_once(cl, 100);
    assert_int_equal(r.ok, 1);
    uint64_t next = caclient_next_ms(c);
    assert_in_range(next, 1000, 2600);
    while (r.ok < 2 && loop_clock_ms() - t0 < 15000)
        loop_run_once(cl, 100);
    assert_int_equal(r.ok, 2);
    assert_int_equal(r.failed, 0);
    assert_true(r.not_after[1] > r.not_after[0] - 1);
    /* a failing CA: the callback hears it and retries with backoff */
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", -3600, NULL);
    caclient_renew_now(c);
    t0 = loop_clock_ms();
    while (r.failed < 1 && loop_clock_ms() - t0 < 10000)
        loop_run_once(cl, 100);
    assert_true(r.failed >= 1);
    assert_in_range(caclient_next_ms(c), 400, 1100);
    caclient_stop(c);
    /* let a fetch in flight (if any) finish before the loop goes */
    for (int i = 0; i < 20; i++)
        loop_run_once(cl, 50);
    loop_free(cl);
}

static void test_serving_rotation(void **state)
{
    fx_t *f = *state;
    char err[512];
    int64_t na = ca_serving_not_after(f->serving);
    assert_true(na > (int64_t)time(NULL) + 3600);
    assert_int_equal(ca_serving_rotate(f->serving, false, err, sizeof err), 0); /* still fresh */
    sleep(1);
    assert_int_equal(ca_serving_rotate(f->serving, true, err, sizeof err), 1);
    assert_true(ca_serving_not_after(f->serving) > na);
    caclient_opts_t o = opts(f);
    caclient_cert_t c;
    assert_int_equal(caclient_fetch(&o, &c, err, sizeof err), 0);
    caclient_cert_free(&c);
}

int meshctl_ca(int argc, char **argv);

static void test_meshctl_ca_sign(void **state)
{
    fx_t *f = *state;
    char root[600], out[600], p[700], vout[4096];
    snprintf(root, sizeof root, "%s/given-root.pem", f->dir);
    ct_write(root, f->root, 0644);
    snprintf(out, sizeof out, "%s/out", f->dir);
    char *argv[] = {"ca", "sign", "--addr", f->addr, "--root", root, "--token-file", f->token_file, "--ecdsa",
                    "--ttl", "1h", "--out-dir", out, NULL};
    assert_int_equal(meshctl_ca(13, argv), 0);
    struct stat st;
    snprintf(p, sizeof p, "%s/key.pem", out);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *key = ct_read(p);
    ct_assert_has(key, "BEGIN PRIVATE KEY");
    free(key);
    /* openssl agrees: the chain verifies against the root written beside it */
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "openssl verify -CAfile %s/root-cert.pem %s/cert-chain.pem 2>&1", out, out);
    FILE *pp = popen(cmd, "r");
    size_t n = fread(vout, 1, sizeof vout - 1, pp);
    vout[n] = 0;
    assert_int_equal(pclose(pp), 0);
    ct_assert_has(vout, ": OK");
    snprintf(cmd, sizeof cmd, "openssl x509 -in %s/cert-chain.pem -noout -ext subjectAltName -enddate 2>&1", out);
    pp = popen(cmd, "r");
    n = fread(vout, 1, sizeof vout - 1, pp);
    vout[n] = 0;
    pclose(pp);
    ct_assert_has(vout, "URI:spiffe://cluster.local/ns/foo/sa/bar");
    /* usage errors */
    char *bad[] = {"ca", "sign", "--addr", f->addr, NULL};
    assert_int_equal(meshctl_ca(4, bad), 2);
    char *badttl[] = {"ca", "sign", "--ttl", "soon", NULL};
    assert_int_equal(meshctl_ca(4, badttl), 2);
    /* a refused request is an error exit */
    write_token(f, "[\"istio-ca\"]", "system:serviceaccount:foo:bar", -3600, NULL);
    assert_int_equal(meshctl_ca(13, argv), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewing_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serving_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meshctl_ca_sign, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
