/*
 * Gateway credentials from a real API server (envtest): the informer keeps
 * TLS-shaped Secrets (kubernetes.io/tls; Opaque with cert/key, tls.crt/tls.key,
 * cacert or ca.crt) and drops every other Secret; a gateway proxy connected
 * to the ADS server over the informer's store receives the Secret that
 * `kubectl create secret tls` made, the renewed one after `kubectl apply`,
 * and loses it when the Secret is deleted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../common/grpc.h"
#include "../../common/log.h"
#include "../../controlplane/informer.h"
#include "../../xds/xds.h"
#include "../../xds/xds_server.h"
#include "../envtest.h"
#include "../pemutil.h"
#include "../testutil.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse pb_resp_t;

static tu_envtest_t env;
static bool env_up;

/* ---- the client-side Secret filter ---- */

static int filter_doc(void *ud, const doc_t *d)
{
    int *out = ud;
    assert_non_null(d->root);
    *out = informer_secret_wanted(d->root) ? 1 : 0;
    return 0;
}

static bool wanted(const char *json)
{
    int keep = -1;
    doc_parse(json, strlen(json), DOC_FMT_JSON, filter_doc, &keep);
    assert_true(keep >= 0);
    return keep == 1;
}

static void test_secret_filter_shapes(void **state)
{
    (void)state;
    /* kept: the CA's own, kubernetes.io/tls, gateway-shaped generic Secrets */
    assert_true(wanted(
        "{\"metadata\":{\"name\":\"cacerts\"},\"type\":\"Opaque\",\"data\":{\"x\":\"eA==\"}}"));
    assert_true(
        wanted("{\"metadata\":{\"name\":\"istio-ca-secret\"},\"type\":\"istio.io/ca-root\"}"));
    assert_true(
        wanted("{\"metadata\":{\"name\":\"w\"},\"type\":\"kubernetes.io/tls\",\"data\":{}}"));
    assert_true(wanted("{\"metadata\":{\"name\":\"w\"},\"type\":\"Opaque\",\"data\":{\"cert\":\"eA="
                       "=\",\"key\":\"eA==\"}}"));
    assert_true(wanted(
        "{\"metadata\":{\"name\":\"w\"},\"data\":{\"tls.crt\":\"eA==\",\"tls.key\":\"eA==\"}}"));
    assert_true(wanted("{\"metadata\":{\"name\":\"w-cacert\"},\"type\":\"Opaque\",\"data\":{"
                       "\"cacert\":\"eA==\"}}"));
    assert_true(wanted("{\"metadata\":{\"name\":\"w-cacert\"},\"type\":\"Opaque\",\"data\":{\"ca."
                       "crt\":\"eA==\"}}"));
    /* dropped: other Opaque Secrets, half a pair, and typed Secrets that
     * happen to hold a ca.crt (service-account tokens) */
    assert_false(wanted(
        "{\"metadata\":{\"name\":\"db\"},\"type\":\"Opaque\",\"data\":{\"password\":\"eA==\"}}"));
    assert_false(
        wanted("{\"metadata\":{\"name\":\"db\"},\"type\":\"Opaque\",\"data\":{\"key\":\"eA==\"}}"));
    assert_false(wanted("{\"metadata\":{\"name\":\"db\"},\"type\":\"Opaque\"}"));
    assert_false(wanted(
        "{\"metadata\":{\"name\":\"sa-token\"},\"type\":\"kubernetes.io/service-account-token\","
        "\"data\":{\"ca.crt\":\"eA==\",\"token\":\"eA==\"}}"));
    assert_false(
        wanted("{\"metadata\":{\"name\":\"reg\"},\"type\":\"kubernetes.io/dockerconfigjson\","
               "\"data\":{\".dockerconfigjson\":\"eA==\"}}"));
    assert_false(wanted("[]"));
}

/* ---- certificates ---- */

/* Writes the pair under the run directory; paths in crt/key. */
static void pem_files(const tu_pem_t *p, const char *tag, char *crt, char *key, size_t size)
{
    snprintf(crt, size, "%s/%s.crt", env.run_dir, tag);
    snprintf(key, size, "%s/%s.key", env.run_dir, tag);
    FILE *f = fopen(crt, "w");
    assert_non_null(f);
    fputs(p->cert, f);
    fclose(f);
    f = fopen(key, "w");
    assert_non_null(f);
    fputs(p->key, f);
    fclose(f);
}

/* ---- the harness: informer -> store -> ADS server, one test loop ---- */

typedef struct harness {
    kube_client_t *client;
    cfg_store_t *store;
    informer_t *inf;
    loop_t *loop;
    grpc_server_t *grpc;
    xds_server_t *xs;
    char addr[64];
} harness_t;

static harness_t live; /* what the running test started, stopped by the teardown */

static void harness_start(harness_t *h)
{
    char err[512];
    memset(h, 0, sizeof(*h));
    kube_opts_t ko = {.kubeconfig = env.kubeconfig};
    h->client = kube_client_new(&ko, err, sizeof(err));
    if (h->client == NULL)
        fail_msg("kube_client_new: %s", err);
    h->store = cfg_store_new();
    informer_opts_t o;
    informer_opts_default(&o);
    o.client = h->client;
    o.store = h->store;
    o.backoff_initial_ms = 50;
    o.backoff_max_ms = 1000;
    o.absent_retry_ms = 1000;
    h->loop = loop_new();
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    h->grpc = grpc_server_new(h->loop, &go, err, sizeof(err));
    if (h->grpc == NULL)
        fail_msg("grpc server: %s", err);
    xds_server_opts_t xo = {.debounce_ms = 50, .debounce_max_ms = 1000};
    h->xs = xds_server_start(h->loop, h->grpc, h->store, &xo);
    assert_non_null(h->xs);
    snprintf(h->addr, sizeof(h->addr), "127.0.0.1:%d", grpc_server_port(h->grpc));
    h->inf = informer_start(&o, err, sizeof(err));
    if (h->inf == NULL)
        fail_msg("informer_start: %s", err);
    live = *h;
}

static void harness_stop(harness_t *h)
{
    if (h->inf)
        informer_stop(h->inf); /* first: it writes the store */
    if (h->grpc)
        grpc_server_free(h->grpc);
    for (int i = 0; h->loop && i < 10; i++)
        loop_run_once(h->loop, 0);
    if (h->xs)
        xds_server_stop(h->xs);
    if (h->loop)
        loop_free(h->loop);
    cfg_store_free(h->store);
    kube_client_free(h->client);
    memset(h, 0, sizeof(*h));
    memset(&live, 0, sizeof(live));
}

/* Runs the test loop until the store holds (want) or lacks (!want) Secret
 * ns/name, or timeout_ms passes. */
static bool wait_secret(harness_t *h, const char *ns, const char *name, bool want, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    for (;;) {
        cfg_snap_t *s = cfg_store_snapshot(h->store);
        bool has = cfg_snap_get(s, CFG_Secret, ns, name) != NULL;
        cfg_snap_release(s);
        if (has == want)
            return true;
        if (loop_clock_ms() >= end)
            return false;
        loop_run_once(h->loop, 20);
    }
}

/* ---- a gateway's ADS stream ---- */

typedef struct ads {
    harness_t *h;
    grpc_client_t *c;
    grpc_call_t *call;
    bool sent_node, closed;
    pb_resp_t *msgs[32];
    int nmsgs, next;
    char message[256];
} ads_t;

static void on_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    ads_t *a = arg;
    assert_true(a->nmsgs < 32);
    a->msgs[a->nmsgs] = envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    assert_non_null(a->msgs[a->nmsgs]);
    a->nmsgs++;
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    (void)status;
    ads_t *a = arg;
    a->closed = true;
    a->call = NULL;
    snprintf(a->message, sizeof(a->message), "%s", message ? message : "");
}

static const grpc_call_cbs_t CBS = {.on_message = on_msg, .on_close = on_close};

static void ads_request(ads_t *a, const char *name, const pb_resp_t *ack)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Protobuf__Value lv = GOOGLE__PROTOBUF__VALUE__INIT, mv = GOOGLE__PROTOBUF__VALUE__INIT;
    Google__Protobuf__Struct__FieldsEntry le = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          me = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    Google__Protobuf__Struct labels = GOOGLE__PROTOBUF__STRUCT__INIT,
                             md = GOOGLE__PROTOBUF__STRUCT__INIT;
    Google__Protobuf__Struct__FieldsEntry *lep[1] = {&le}, *mep[1] = {&me};
    if (!a->sent_node) {
        lv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        lv.string_value = "ingressgateway";
        le.key = "istio";
        le.value = &lv;
        labels.fields = lep;
        labels.n_fields = 1;
        mv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        mv.struct_value = &labels;
        me.key = "LABELS";
        me.value = &mv;
        md.fields = mep;
        md.n_fields = 1;
        node.id = "router~10.1.9.7~ingressgateway-0.gw-sds~gw-sds.svc.cluster.local";
        node.metadata = &md;
        req.node = &node;
        a->sent_node = true;
    }
    char *names[1] = {(char *)name};
    req.type_url = XDS_SECRET_TYPE;
    req.resource_names = names;
    req.n_resource_names = 1;
    req.version_info = ack ? ack->version_info : "";
    req.response_nonce = ack ? ack->nonce : "";
    size_t len = envoy__service__discovery__v3__discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    envoy__service__discovery__v3__discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

static pb_resp_t *ads_next(ads_t *a, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    while (a->next >= a->nmsgs && !a->closed && loop_clock_ms() < end)
        loop_run_once(a->h->loop, 10);
    if (a->next >= a->nmsgs)
        fail_msg("no SDS response within %d ms (closed %d: %s)", timeout_ms, a->closed, a->message);
    pb_resp_t *r = a->msgs[a->next++];
    assert_string_equal(r->type_url, XDS_SECRET_TYPE);
    return r;
}

/* The certificate chain served in a one-resource response. */
static char *served_chain(const pb_resp_t *r, const char *name)
{
    assert_int_equal(r->n_resources, 1);
    pb_secret_t *s = envoy__extensions__transport_sockets__tls__v3__secret__unpack(
        NULL, r->resources[0]->value.len, r->resources[0]->value.data);
    assert_non_null(s);
    assert_string_equal(s->name, name);
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
    assert_non_null(s->tls_certificate->private_key);
    assert_true(s->tls_certificate->private_key->inline_bytes.len > 0);
    char *chain = strndup((const char *)s->tls_certificate->certificate_chain->inline_bytes.data,
                          s->tls_certificate->certificate_chain->inline_bytes.len);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    return chain;
}

/* Waits for the response that serves name (ACKing the ones before it, sent
 * while the informer's first events were still being pushed) and returns
 * its certificate chain. */
static char *expect_chain(ads_t *a, const char *name, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int left = (int)(end - loop_clock_ms());
        pb_resp_t *r = ads_next(a, left > 0 ? left : 1);
        if (r->n_resources > 0) {
            char *chain = served_chain(r, name);
            ads_request(a, name, r);
            return chain;
        }
        ads_request(a, name, r);
    }
}

static const char *const GATEWAY =
    "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\n"
    "metadata: {name: web, namespace: gw-sds}\n"
    "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
    "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n"
    "    tls: {mode: SIMPLE, credentialName: web-cert}\n";

static void test_tls_secret_served_from_cluster(void **state)
{
    (void)state;
    if (tu_envtest_kubectl(&env, "apply --server-side -f crds/networking.istio.io_gateways.yaml") !=
        0)
        fail_msg("installing the Gateway CRD: %s", env.out);
    if (tu_envtest_kubectl(&env, "wait --for condition=established --timeout=30s "
                                 "-f crds/networking.istio.io_gateways.yaml") != 0)
        fail_msg("the Gateway CRD is not established: %s", env.out);
    if (tu_envtest_kubectl(&env, "create namespace gw-sds") != 0)
        fail_msg("%s", env.out);
    if (tu_envtest_kubectl_stdin(&env, GATEWAY, "apply -f -") != 0)
        fail_msg("applying the Gateway: %s", env.out);
    tu_pem_t first = tu_self_signed("web.example.com"), second = tu_self_signed("web.example.com");
    char crt[PATH_MAX + 32], key[PATH_MAX + 32];
    pem_files(&first, "first", crt, key, sizeof(crt));
    if (tu_envtest_kubectl(&env, "create secret tls web-cert -n gw-sds --cert=%s --key=%s", crt,
                           key) != 0)
        fail_msg("kubectl create secret tls: %s", env.out);
    if (tu_envtest_kubectl(
            &env, "create secret generic db-password -n gw-sds --from-literal=password=hunter2") !=
        0)
        fail_msg("%s", env.out);

    harness_t h;
    harness_start(&h);
    assert_true(informer_wait_synced(h.inf, 30000));
    assert_true(wait_secret(&h, "gw-sds", "web-cert", true, 10000));
    /* other Secrets never reach the store */
    assert_true(wait_secret(&h, "gw-sds", "db-password", false, 0));

    ads_t a = {.h = &h};
    char err[256];
    grpc_client_opts_t co = {0};
    a.c = grpc_client_connect(h.loop, h.addr, &co, err, sizeof(err));
    if (a.c == NULL)
        fail_msg("connect: %s", err);
    a.call = grpc_call_start(a.c, XDS_ADS_SOTW_PATH, NULL, 0, &CBS, &a);
    assert_non_null(a.call);
    ads_request(&a, "kubernetes://web-cert", NULL);
    char *chain = expect_chain(&a, "kubernetes://web-cert", 10000);
    assert_string_equal(chain, first.cert);
    free(chain);

    /* renewed with kubectl apply: the new certificate is pushed */
    pem_files(&second, "second", crt, key, sizeof(crt));
    if (tu_envtest_kubectl(&env,
                           "create secret tls web-cert -n gw-sds --cert=%s --key=%s "
                           "--dry-run=client -o yaml",
                           crt, key) != 0)
        fail_msg("%s", env.out);
    char *manifest = strdup(env.out);
    if (tu_envtest_kubectl_stdin(&env, manifest, "apply -f -") != 0)
        fail_msg("kubectl apply: %s", env.out);
    free(manifest);
    chain = expect_chain(&a, "kubernetes://web-cert", 10000);
    assert_string_equal(chain, second.cert);
    free(chain);

    /* deleted: the gateway is told it is gone */
    if (tu_envtest_kubectl(&env, "delete secret web-cert -n gw-sds") != 0)
        fail_msg("%s", env.out);
    pb_resp_t *r = ads_next(&a, 10000);
    assert_int_equal(r->n_resources, 0);

    grpc_client_free(a.c);
    for (int i = 0; i < 5; i++)
        loop_run_once(h.loop, 0);
    for (int i = 0; i < a.nmsgs; i++)
        envoy__service__discovery__v3__discovery_response__free_unpacked(a.msgs[i], NULL);
    harness_stop(&h);
    tu_pem_free(&first);
    tu_pem_free(&second);
}

static int each_teardown(void **state)
{
    (void)state;
    if (live.store != NULL) {
        harness_t h = live;
        harness_stop(&h);
    }
    return 0;
}

static int envtest_setup(void **state)
{
    (void)state;
    if (!env_up) {
        if (tu_envtest_start(&env, false) != 0)
            return -1;
        env_up = true;
    }
    return 0;
}

int main(void)
{
    log_set_level(LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_filter_shapes),
        cmocka_unit_test_setup_teardown(test_tls_secret_served_from_cluster, envtest_setup,
                                        each_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (env_up)
        tu_envtest_stop(&env);
    curl_global_cleanup();
    return rc;
}
