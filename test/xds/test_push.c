/*
 * Push tests (xds/push.c): replicas share one translation, identical
 * resources are held once and released when nobody holds them, a push
 * encodes one response for many identical proxies, and a change only
 * reaches the types (and proxies) whose content changed. In process, on
 * 127.0.0.1 with an ephemeral port; server and clients share one loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/grpc.h"
#include "../../common/log.h"
#include "../../xds/xds.h"
#include "../../xds/xds_server.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "../testutil.h"

#define NPROXY 6

/* Two namespaces; three sleep replicas (same labels) in each. */
static const char *const WORLD =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\n"
    "spec:\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: b}\n"
    "spec:\n  selector: {app: db}\n  ports: [{name: tcp, port: 5432}]\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata:\n  name: web-x\n  namespace: a\n  labels: {kubernetes.io/service-name: web}\n"
    "addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- addresses: [10.9.0.1]\n";

static const char *const NODES[NPROXY] = {
    "sidecar~10.2.0.1~sleep-1.a~a.svc.cluster.local",
    "sidecar~10.2.0.2~sleep-2.a~a.svc.cluster.local",
    "sidecar~10.2.0.3~sleep-3.a~a.svc.cluster.local",
    "sidecar~10.3.0.1~sleep-1.b~b.svc.cluster.local",
    "sidecar~10.3.0.2~sleep-2.b~b.svc.cluster.local",
    "sidecar~10.3.0.3~sleep-3.b~b.svc.cluster.local",
};

typedef struct client {
    grpc_client_t *c;
    grpc_call_t *call;
    int got[XDS_NTYPES];
    char nonce[XDS_NTYPES][32];
    char version[XDS_NTYPES][32];
    bool closed;
} client_t;

typedef struct fx {
    loop_t *loop;
    cfg_store_t *store;
    grpc_server_t *grpc;
    xds_server_t *xs;
    char addr[64];
    client_t cl[NPROXY];
    workq_t *wq; /* translations on a pool (NULL: on the loop) */
} fx_t;

static bool use_workq;

static void on_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    client_t *c = arg;
    Envoy__Service__Discovery__V3__DiscoveryResponse *r =
        envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    assert_non_null(r);
    int t = xds_type_from_url(r->type_url);
    assert_true(t >= 0);
    c->got[t]++;
    snprintf(c->nonce[t], sizeof(c->nonce[t]), "%s", r->nonce);
    snprintf(c->version[t], sizeof(c->version[t]), "%s", r->version_info);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    (void)status;
    (void)message;
    client_t *c = arg;
    c->closed = true;
    c->call = NULL;
}

static const grpc_call_cbs_t CBS = {.on_message = on_msg, .on_close = on_close};

static void send_req(client_t *c, const char *node, xds_type_t t)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node n = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    if (node) {
        n.id = (char *)node;
        req.node = &n;
    }
    req.type_url = (char *)xds_type_url(t);
    req.version_info = c->version[t];
    req.response_nonce = c->nonce[t];
    uint8_t buf[1024];
    size_t len = envoy__service__discovery__v3__discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(c->call, buf, len), 0);
}

static void run_until(fx_t *fx, xds_type_t t, const int *base, int ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)ms;
    for (;;) {
        bool all = true;
        for (int i = 0; i < NPROXY; i++)
            all &= fx->cl[i].got[t] > (base ? base[i] : 0);
        if (all || loop_clock_ms() > end)
            break;
        loop_run_once(fx->loop, 5);
    }
}

static void run_for(fx_t *fx, int ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)ms;
    while (loop_clock_ms() < end)
        loop_run_once(fx->loop, 5);
}

static xds_server_stats_t stats(fx_t *fx)
{
    xds_server_stats_t st;
    xds_server_stats(fx->xs, &st);
    return st;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    fx->loop = loop_new();
    fx->store = cfg_store_new();
    cfg_store_apply_yaml(fx->store, WORLD);
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    fx->grpc = grpc_server_new(fx->loop, &go, err, sizeof(err));
    assert_non_null(fx->grpc);
    if (use_workq)
        fx->wq = workq_new(2);
    xds_server_opts_t xo = {.debounce_ms = 50, .debounce_max_ms = 500, .workq = fx->wq};
    fx->xs = xds_server_start(fx->loop, fx->grpc, fx->store, &xo);
    assert_non_null(fx->xs);
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d", grpc_server_port(fx->grpc));
    /* every proxy subscribes to CDS and LDS (wildcards) and ACKs */
    for (int i = 0; i < NPROXY; i++) {
        client_t *c = &fx->cl[i];
        grpc_client_opts_t co = {0};
        c->c = grpc_client_connect(fx->loop, fx->addr, &co, err, sizeof(err));
        assert_non_null(c->c);
        c->call = grpc_call_start(c->c, XDS_ADS_SOTW_PATH, NULL, 0, &CBS, c);
        assert_non_null(c->call);
        send_req(c, NODES[i], XDS_CLUSTER);
        send_req(c, NULL, XDS_LISTENER);
    }
    run_until(fx, XDS_CLUSTER, NULL, 5000);
    run_until(fx, XDS_LISTENER, NULL, 5000);
    for (int i = 0; i < NPROXY; i++) {
        assert_int_equal(fx->cl[i].got[XDS_CLUSTER], 1);
        send_req(&fx->cl[i], NULL, XDS_CLUSTER); /* ACK */
        send_req(&fx->cl[i], NULL, XDS_LISTENER);
    }
    run_for(fx, 50);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < NPROXY; i++)
        if (fx->cl[i].c)
            grpc_client_free(fx->cl[i].c);
    grpc_server_free(fx->grpc);
    for (int i = 0; i < 10; i++)
        loop_run_once(fx->loop, 0);
    xds_server_stop(fx->xs); /* with jobs in flight, the last one finishes it */
    if (fx->wq) {
        workq_free(fx->wq);
        for (int i = 0; i < 10; i++)
            loop_run_once(fx->loop, 0);
    }
    cfg_store_free(fx->store);
    loop_free(fx->loop);
    free(fx);
    return 0;
}

static void test_replicas_share_translation(void **state)
{
    fx_t *fx = *state;
    xds_server_stats_t st = stats(fx);
    /* two namespaces: two translations, the other four proxies reuse them */
    assert_int_equal(st.translations, 2);
    assert_int_equal(st.translations_shared, NPROXY - 2);
    /* every service is visible from both namespaces and no proxy serves
     * one, so both translations are equal: one CDS and one LDS response are
     * encoded, every other proxy is sent the same bytes from the cache */
    assert_int_equal(st.responses_encoded, 2);
    assert_int_equal(st.responses_shared, 2 * NPROXY - 2);
    assert_int_equal(st.connected, NPROXY);
    /* replicas got the same version */
    assert_string_equal(fx->cl[0].version[XDS_CLUSTER], fx->cl[2].version[XDS_CLUSTER]);
    assert_string_equal(fx->cl[3].version[XDS_CLUSTER], fx->cl[5].version[XDS_CLUSTER]);
}

static void test_change_reaches_changed_types_once(void **state)
{
    fx_t *fx = *state;
    int base[NPROXY];
    for (int i = 0; i < NPROXY; i++)
        base[i] = fx->cl[i].got[XDS_CLUSTER];
    xds_server_stats_t s0 = stats(fx);
    /* a new service visible everywhere: clusters change for every proxy */
    cfg_store_apply_yaml(fx->store, "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: a}\n"
              "spec:\n  ports: [{name: grpc, port: 7070}]\n");
    run_until(fx, XDS_CLUSTER, base, 3000);
    run_for(fx, 150);
    xds_server_stats_t s1 = stats(fx);
    for (int i = 0; i < NPROXY; i++)
        assert_int_equal(fx->cl[i].got[XDS_CLUSTER], base[i] + 1);
    assert_int_equal(s1.push_rounds, s0.push_rounds + 1);
    assert_int_equal(s1.pushes[XDS_CLUSTER], s0.pushes[XDS_CLUSTER] + NPROXY);
    /* equal sets: each changed type (clusters, and listeners for the new
     * port) encoded once and shared with the other proxies */
    uint64_t sent = 0, encoded = s1.responses_encoded - s0.responses_encoded;
    for (int t = 0; t < XDS_NTYPES; t++) {
        uint64_t d = s1.pushes[t] - s0.pushes[t];
        assert_true(d == 0 || d == NPROXY);
        sent += d;
    }
    assert_int_equal(encoded, sent / NPROXY);
    assert_int_equal(s1.responses_shared - s0.responses_shared, sent - encoded);
    assert_int_equal(s1.translations - s0.translations, 2);
    /* a change that touches nothing a proxy receives pushes nothing */
    xds_server_stats_t s2 = stats(fx);
    cfg_store_apply_yaml(fx->store, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated, namespace: a}\n"
              "data: {k: v}\n");
    run_for(fx, 300);
    xds_server_stats_t s3 = stats(fx);
    for (int t = 0; t < XDS_NTYPES; t++)
        assert_int_equal(s3.pushes[t], s2.pushes[t]);
}

static void test_resources_released(void **state)
{
    fx_t *fx = *state;
    xds_server_stats_t s0 = stats(fx);
    assert_true(s0.resources_interned > 0);
    assert_true(s0.resources_bytes > 0);
    /* namespace b's proxies leave; after the next push nothing holds their
     * own resources (the inbound/outbound sets of namespace b) */
    for (int i = 3; i < NPROXY; i++) {
        grpc_client_free(fx->cl[i].c);
        fx->cl[i].c = NULL;
    }
    run_for(fx, 100);
    assert_int_equal(stats(fx).connected, 3);
    xds_server_push_all(fx->xs);
    run_for(fx, 100);
    xds_server_stats_t s1 = stats(fx);
    assert_true(s1.sets_interned <= s0.sets_interned);
    assert_true(s1.resources_interned <= s0.resources_interned);
    /* everyone gone: nothing left after a push */
    for (int i = 0; i < 3; i++) {
        grpc_client_free(fx->cl[i].c);
        fx->cl[i].c = NULL;
    }
    run_for(fx, 100);
    xds_server_push_all(fx->xs);
    run_for(fx, 50);
    xds_server_stats_t s2 = stats(fx);
    assert_int_equal(s2.connected, 0);
    assert_int_equal(s2.sets_interned, 0);
    assert_int_equal(s2.resources_interned, 0);
    assert_int_equal(s2.resources_bytes, 0);
}

static int setup_workq(void **state)
{
    use_workq = true;
    int rc = setup(state);
    use_workq = false;
    return rc;
}

/* A stream that closes while its proxy is being translated on the pool. */
static void test_close_during_translation(void **state)
{
    fx_t *fx = *state;
    xds_server_push_all(fx->xs); /* new generation: every proxy translates again */
    for (int i = 0; i < NPROXY; i++) {
        grpc_client_free(fx->cl[i].c);
        fx->cl[i].c = NULL;
    }
    run_for(fx, 300);
    assert_int_equal(stats(fx).connected, 0);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replicas_share_translation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_reaches_changed_types_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resources_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replicas_share_translation, setup_workq, teardown),
        cmocka_unit_test_setup_teardown(test_change_reaches_changed_types_once, setup_workq,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_resources_released, setup_workq, teardown),
        cmocka_unit_test_setup_teardown(test_close_during_translation, setup_workq, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
