/*
 * The shared outbound part (tx_shared_t, xds/translate.c): what the ADS push
 * gives each proxy through the cache must be byte for byte what a full
 * xds_translate() gives it, for sidecars in several namespaces (one of them
 * scoped by Sidecar resources), proxies told apart only by labels that
 * outbound rules select on, gateways, proxyless clients, and with several
 * threads sharing one cache.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../xds/translate_internal.h"
#include "../../xds/xds.h"
#include "../testutil.h"
#include "../xdsworld.h"

typedef struct world {
    xw_t x;
    xds_input_t in;
} world_t;

/* Two more namespaces beside bookinfo's: "shop" (mTLS STRICT, a service
 * exported to its own namespace only, routes chosen by source labels), both
 * with a ServiceEntry for the same host (lab's for itself only), and
 * "lab" (a namespace-wide Sidecar limiting egress, and one for the "tool"
 * workload that opens it again); in "default" a DestinationRule for ratings
 * that applies to the reviews workloads only. */
static const char *const MESH_YAML =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\n"
    "spec:\n  clusterIP: 10.96.20.1\n  selector: {app: cart}\n"
    "  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-cache, port: 7000}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vault\n  namespace: shop\n"
    "  annotations: {networking.istio.io/exportTo: \".\"}\n"
    "spec:\n  clusterIP: 10.96.20.2\n  selector: {app: vault}\n  ports: [{name: http, port: "
    "8200}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: bench, namespace: lab}\n"
    "spec:\n  clusterIP: 10.96.30.1\n  selector: {app: bench}\n  ports: [{name: http, port: "
    "8080}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: cart-v1-0\n  namespace: shop\n"
    "  labels: {app: cart, version: v1}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec: {serviceAccountName: cart, containers: [{name: app}]}\nstatus: {podIP: 10.2.0.10}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: cart-v2-0\n  namespace: shop\n"
    "  labels: {app: cart, version: v2}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec: {serviceAccountName: cart, containers: [{name: app}]}\nstatus: {podIP: 10.2.0.11}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: vault-0\n  namespace: shop\n"
    "  labels: {app: vault}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec: {containers: [{name: app}]}\nstatus: {podIP: 10.2.0.20}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-0\n  namespace: lab\n"
    "  labels: {app: bench}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec: {containers: [{name: app}]}\nstatus: {podIP: 10.3.0.10}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: tool-0\n  namespace: lab\n"
    "  labels: {app: tool}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec: {containers: [{name: app}]}\nstatus: {podIP: 10.3.0.11}\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: cart-x, namespace: shop, labels: {kubernetes.io/service-name: cart}}\n"
    "addressType: IPv4\nports: [{name: http, port: 8080}, {name: tcp-cache, port: 7000}]\n"
    "endpoints:\n"
    "- {addresses: [10.2.0.10], targetRef: {kind: Pod, name: cart-v1-0, namespace: shop}}\n"
    "- {addresses: [10.2.0.11], targetRef: {kind: Pod, name: cart-v2-0, namespace: shop}}\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: vault-x, namespace: shop, labels: {kubernetes.io/service-name: vault}}\n"
    "addressType: IPv4\nports: [{name: http, port: 8200}]\n"
    "endpoints: [{addresses: [10.2.0.20], targetRef: {kind: Pod, name: vault-0, namespace: "
    "shop}}]\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: bench-x, namespace: lab, labels: {kubernetes.io/service-name: bench}}\n"
    "addressType: IPv4\nports: [{name: http, port: 8080}]\n"
    "endpoints: [{addresses: [10.3.0.10], targetRef: {kind: Pod, name: bench-0, namespace: lab}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: cart, namespace: shop}\n"
    "spec:\n  host: cart\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
    "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: cart, namespace: shop}\n"
    "spec:\n  hosts: [cart]\n  http:\n"
    "  - match: [{sourceLabels: {app: productpage}}]\n"
    "    route: [{destination: {host: cart, subset: v2}}]\n"
    "  - route: [{destination: {host: cart, subset: v1}}]\n"
    "  tcp:\n  - match: [{port: 7000, sourceLabels: {app: bench}}]\n"
    "    route: [{destination: {host: cart, subset: v2, port: {number: 7000}}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: ratings-for-reviews, namespace: default}\n"
    "spec:\n  host: ratings\n  workloadSelector: {matchLabels: {app: reviews}}\n"
    "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
    "metadata: {name: default, namespace: lab}\n"
    "spec:\n  egress: [{hosts: [\"./*\", \"default/reviews.default.svc.cluster.local\"]}]\n"
    "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
    "metadata: {name: tool, namespace: lab}\n"
    "spec:\n  workloadSelector: {labels: {app: tool}}\n  egress: [{hosts: [\"*/*\"]}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: api, namespace: shop}\n"
    "spec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n"
    "  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: api, namespace: lab}\n"
    "spec:\n  hosts: [api.example.com]\n  exportTo: [\".\"]\n  location: MESH_EXTERNAL\n"
    "  resolution: DNS\n  endpoints: [{address: 192.0.2.7}]\n"
    "  ports: [{number: 443, name: tls, protocol: TLS}]\n"
    "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
    "metadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n"
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: ratings, namespace: default}\n"
    "spec:\n  selector: {matchLabels: {app: ratings}}\n"
    "  rules: [{from: [{source: {namespaces: [default]}}]}]\n";

static void world_open(world_t *w)
{
    xw_bookinfo(&w->x);
    xw_load(&w->x, "test/xds/fixtures/ingressgateway.yaml");
    xw_text(&w->x, MESH_YAML);
    xw_commit(&w->x);
    w->in = (xds_input_t){.snap = w->x.snap, .reg = w->x.reg};
}

static void world_close(world_t *w)
{
    xw_close(&w->x);
}

/* Same resources, names, bytes and set hashes, and the same warnings. */
static void assert_identical(const xds_resources_t *got, const xds_resources_t *want,
                             const char *who)
{
    for (int t = 0; t < XDS_NTYPES; t++) {
        uint32_t ng, nw;
        const xds_resource_t *g = xds_resources_get(got, (xds_type_t)t, &ng);
        const xds_resource_t *w = xds_resources_get(want, (xds_type_t)t, &nw);
        if (ng != nw)
            fail_msg("%s: %s: %u resources through the cache, %u translated whole", who,
                     xds_type_url((xds_type_t)t), ng, nw);
        for (uint32_t i = 0; i < ng; i++) {
            if (strcmp(g[i].name, w[i].name) != 0)
                fail_msg("%s: resource %u is %s through the cache, %s translated whole", who, i,
                         g[i].name, w[i].name);
            if (g[i].len != w[i].len || memcmp(g[i].data, w[i].data, g[i].len) != 0 ||
                g[i].hash != w[i].hash)
                fail_msg("%s: %s differs from the whole translation", who, g[i].name);
        }
        if (xds_resources_hash(got, (xds_type_t)t) != xds_resources_hash(want, (xds_type_t)t))
            fail_msg("%s: %s set hash differs", who, xds_type_url((xds_type_t)t));
    }
    uint32_t ng, nw;
    const char *const *wg = xds_resources_warnings(got, &ng);
    const char *const *ww = xds_resources_warnings(want, &nw);
    assert_int_equal(ng, nw);
    for (uint32_t i = 0; i < nw; i++) {
        bool found = false;
        for (uint32_t k = 0; k < ng && !found; k++)
            found = strcmp(wg[k], ww[i]) == 0;
        if (!found)
            fail_msg("%s: warning missing through the cache: %s", who, ww[i]);
    }
}

static const char *const PODS[][2] = {
    {"default", "productpage-v1-0"},
    {"default", "details-v1-0"},
    {"default", "reviews-v1-0"},
    {"default", "ratings-v1-0"},
    {"default", "reviews-v2-0"},
    {"shop", "cart-v1-0"},
    {"shop", "vault-0"},
    {"shop", "cart-v2-0"},
    {"lab", "bench-0"},
    {"lab", "tool-0"},
};
#define NPODS (sizeof(PODS) / sizeof(PODS[0]))

static uint64_t res_hash(const xds_resources_t *r, xds_type_t t, const char *name)
{
    const xds_resource_t *x = xds_resources_find(r, t, name);
    return x ? x->hash : 0;
}

static void test_shared_matches_full(void **state)
{
    (void)state;
    world_t w;
    world_open(&w);
    tx_shared_t *c = tx_shared_new(&w.in);
    xds_resources_t *full[NPODS];
    for (size_t k = NPODS; k-- > 0;) { /* lab and shop first, default last */
        size_t i = k;
        xds_proxy_t *p = xw_pod_proxy(&w.x, PODS[i][0], PODS[i][1], XDS_SIDECAR);
        full[i] = xds_translate(&w.in, p);
        xds_resources_t *r = tx_translate_shared(c, &w.in, p);
        char who[128];
        snprintf(who, sizeof(who), "%s/%s", PODS[i][0], PODS[i][1]);
        assert_identical(r, full[i], who);
        xds_resources_unref(r);
        xds_proxy_free(p);
    }
    /* the world does tell these proxies apart, so sharing too much would show */
    const char *ratings = "outbound|9080||ratings.default.svc.cluster.local";
    assert_true(res_hash(full[2], XDS_CLUSTER, ratings) != res_hash(full[1], XDS_CLUSTER, ratings));
    assert_true(res_hash(full[0], XDS_ROUTE, "80") != res_hash(full[1], XDS_ROUTE, "80"));
    assert_non_null(
        xds_resources_find(full[1], XDS_CLUSTER, "outbound|80||cart.shop.svc.cluster.local"));
    assert_null(
        xds_resources_find(full[1], XDS_CLUSTER, "outbound|8200||vault.shop.svc.cluster.local"));
    assert_non_null(
        xds_resources_find(full[5], XDS_CLUSTER, "outbound|8200||vault.shop.svc.cluster.local"));
    assert_null(
        xds_resources_find(full[8], XDS_CLUSTER, "outbound|80||cart.shop.svc.cluster.local"));
    assert_non_null(xds_resources_find(full[8], XDS_CLUSTER,
                                       "outbound|9080||reviews.default.svc.cluster.local"));
    assert_non_null(
        xds_resources_find(full[9], XDS_CLUSTER, "outbound|80||cart.shop.svc.cluster.local"));
    /* one cluster name, two ServiceEntries: tool (lab, built first) sees both
     * and keeps lab's, default sees only shop's, which tool had dropped */
    const char *api = "outbound|443||api.example.com";
    assert_true(res_hash(full[9], XDS_CLUSTER, api) != 0 &&
                res_hash(full[1], XDS_CLUSTER, api) != 0);
    assert_true(res_hash(full[9], XDS_CLUSTER, api) != res_hash(full[1], XDS_CLUSTER, api));
    assert_true(res_hash(full[5], XDS_CLUSTER, api) == res_hash(full[1], XDS_CLUSTER, api));
    /* and those that cannot differ outbound share one part: in default
     * productpage (source labels), reviews (workload selector) and the rest;
     * all of shop; in lab bench (namespace Sidecar) and tool (its own) */
    uint64_t built, reused;
    tx_shared_stats(c, &built, &reused);
    assert_int_equal(built, 6);
    assert_int_equal(reused, NPODS - 6);
    for (size_t i = 0; i < NPODS; i++)
        xds_resources_unref(full[i]);
    tx_shared_unref(c);
    world_close(&w);
}

/* A result outlives the cache it came from (push.c drops caches while
 * responses still hold results). */
static void test_result_outlives_cache(void **state)
{
    (void)state;
    world_t w;
    world_open(&w);
    xds_proxy_t *p = xw_pod_proxy(&w.x, "shop", "cart-v1-0", XDS_SIDECAR);
    tx_shared_t *c = tx_shared_new(&w.in);
    xds_resources_t *r = tx_translate_shared(c, &w.in, p);
    tx_shared_unref(c);
    xds_resources_t *full = xds_translate(&w.in, p);
    assert_identical(r, full, "shop/cart-v1-0 after the cache is gone");
    assert_non_null(xds_resources_find(r, XDS_LISTENER, XDS_VIRTUAL_INBOUND));
    assert_non_null(xds_resources_find(r, XDS_CLUSTER, "inbound|8080||"));
    xds_resources_unref(full);
    xds_resources_unref(r);
    xds_proxy_free(p);
    world_close(&w);
}

/* Gateways and proxyless gRPC clients are translated whole; an input of
 * another snapshot is never answered from the cache. */
static void test_whole_translations(void **state)
{
    (void)state;
    world_t w;
    world_open(&w);
    tx_shared_t *c = tx_shared_new(&w.in);
    xds_proxy_t *gw = xw_pod_proxy(&w.x, "istio-system", "istio-ingressgateway-0", XDS_ROUTER);
    xds_proxy_t *grpc = xw_pod_proxy(&w.x, "default", "details-v1-0", XDS_SIDECAR);
    grpc->proxyless = true;
    xds_proxy_t *pp[2] = {gw, grpc};
    for (int i = 0; i < 2; i++) {
        xds_resources_t *r = tx_translate_shared(c, &w.in, pp[i]);
        xds_resources_t *full = xds_translate(&w.in, pp[i]);
        assert_identical(r, full, i == 0 ? "ingress gateway" : "proxyless client");
        xds_resources_unref(r);
        xds_resources_unref(full);
    }
    uint64_t built, reused;
    tx_shared_stats(c, &built, &reused);
    assert_int_equal(built + reused, 0);

    /* a new snapshot (cart gone) must not get the old outbound part */
    world_t w2;
    world_open(&w2);
    cfg_store_delete(w2.x.store, CFG_Service, "shop", "cart");
    xw_commit(&w2.x);
    w2.in = (xds_input_t){.snap = w2.x.snap, .reg = w2.x.reg};
    xds_proxy_t *p = xw_pod_proxy(&w.x, "default", "details-v1-0", XDS_SIDECAR);
    xds_resources_t *old = tx_translate_shared(c, &w.in, p);
    assert_non_null(
        xds_resources_find(old, XDS_CLUSTER, "outbound|80||cart.shop.svc.cluster.local"));
    xds_resources_t *r = tx_translate_shared(c, &w2.in, p);
    assert_null(xds_resources_find(r, XDS_CLUSTER, "outbound|80||cart.shop.svc.cluster.local"));
    xds_resources_t *full = xds_translate(&w2.in, p);
    assert_identical(r, full, "default/details-v1-0 in a newer snapshot");
    xds_resources_unref(full);
    xds_resources_unref(r);
    xds_resources_unref(old);
    xds_proxy_free(p);
    world_close(&w2);

    xds_proxy_free(gw);
    xds_proxy_free(grpc);
    tx_shared_unref(c);
    world_close(&w);
}

/* Several threads on one cache (the push's worker pool): each key is built
 * once, whoever asks for it meanwhile waits, and everyone gets exact results. */
typedef struct worker {
    world_t *w;
    tx_shared_t *c;
    xds_resources_t **full;
    int offset;
    int mismatches;
} worker_t;

static void *worker_run(void *arg)
{
    worker_t *k = arg;
    for (int round = 0; round < 3; round++) {
        for (size_t j = 0; j < NPODS; j++) {
            size_t i = (j + (size_t)k->offset) % NPODS;
            xds_proxy_t *p = xw_pod_proxy(&k->w->x, PODS[i][0], PODS[i][1], XDS_SIDECAR);
            xds_resources_t *r = tx_translate_shared(k->c, &k->w->in, p);
            for (int t = 0; t < XDS_NTYPES; t++)
                if (xds_resources_hash(r, (xds_type_t)t) !=
                    xds_resources_hash(k->full[i], (xds_type_t)t))
                    k->mismatches++;
            xds_resources_unref(r);
            xds_proxy_free(p);
        }
    }
    return NULL;
}

static void test_threads_share_one_cache(void **state)
{
    (void)state;
    world_t w;
    world_open(&w);
    xds_resources_t *full[NPODS];
    for (size_t i = 0; i < NPODS; i++) {
        xds_proxy_t *p = xw_pod_proxy(&w.x, PODS[i][0], PODS[i][1], XDS_SIDECAR);
        full[i] = xds_translate(&w.in, p);
        xds_proxy_free(p);
    }
    tx_shared_t *c = tx_shared_new(&w.in);
    pthread_t th[4];
    worker_t wk[4];
    for (int i = 0; i < 4; i++) {
        wk[i] = (worker_t){.w = &w, .c = c, .full = full, .offset = i * 3};
        assert_int_equal(pthread_create(&th[i], NULL, worker_run, &wk[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wk[i].mismatches, 0);
    }
    uint64_t built, reused;
    tx_shared_stats(c, &built, &reused);
    assert_int_equal(built, 6);
    assert_int_equal(built + reused, 4 * 3 * NPODS);
    tx_shared_unref(c);
    for (size_t i = 0; i < NPODS; i++)
        xds_resources_unref(full[i]);
    world_close(&w);
}

/* Translates three proxies through one cache under a reviews
 * DestinationRule (its spec as flow YAML): each result byte for byte the
 * whole translation; the first two share reviews' endpoints and one part,
 * the third has its own. */
static void three_parts(const char *spec, xds_proxy_t *(*proxy)(world_t *w, size_t i))
{
    world_t w;
    xw_bookinfo(&w.x);
    char y[512];
    snprintf(y, sizeof(y),
             "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
             "metadata: {name: reviews, namespace: default}\nspec: %s\n",
             spec);
    xw_text(&w.x, y);
    xw_commit(&w.x);
    w.in = (xds_input_t){.snap = w.x.snap, .reg = w.x.reg};
    tx_shared_t *c = tx_shared_new(&w.in);
    uint64_t h[3];
    for (size_t i = 0; i < 3; i++) {
        xds_proxy_t *p = proxy(&w, i);
        xds_resources_t *full = xds_translate(&w.in, p);
        xds_resources_t *r = tx_translate_shared(c, &w.in, p);
        assert_identical(r, full, p->id);
        h[i] = res_hash(r, XDS_ENDPOINT, "outbound|9080||reviews.default.svc.cluster.local");
        xds_resources_unref(r);
        xds_resources_unref(full);
        xds_proxy_free(p);
    }
    assert_true(h[0] == h[1]);
    assert_true(h[0] != h[2]);
    uint64_t built, reused;
    tx_shared_stats(c, &built, &reused);
    assert_int_equal(built, 2);
    assert_int_equal(reused, 1);
    tx_shared_unref(c);
    world_close(&w);
}

/* details and ratings in zone-a, reviews-v2 in zone-b */
static xds_proxy_t *zoned_proxy(world_t *w, size_t i)
{
    static const char *const pods[] = {"details-v1-0", "ratings-v1-0", "reviews-v2-0"};
    return xw_pod_proxy(&w->x, "default", pods[i], XDS_SIDECAR);
}

/* With outlier detection on a DestinationRule, endpoints depend on the
 * caller's locality (failover priorities): proxies in different zones get
 * their own parts, each still byte for byte the whole translation. */
static void test_locality_parts(void **state)
{
    (void)state;
    three_parts("{host: reviews, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}}", zoned_proxy);
}

/* Sidecars in us-east/zone-a with versions v1, v1, v2. */
static xds_proxy_t *versioned_proxy(world_t *w, size_t i)
{
    (void)w;
    static const char *const versions[] = {"v1", "v1", "v2"};
    static const char *const ips[] = {"10.9.0.1", "10.9.0.2", "10.9.0.3"};
    cfg_mapent_t ent = {.key = "version", .str = (char *)versions[i]};
    cfg_map_t labels = {&ent, 1};
    xds_proxy_t *p = xds_proxy_new(XDS_SIDECAR, ips[i], "client-0", "default", "default", &labels);
    p->locality = "us-east/zone-a";
    return p;
}

/* With failoverPriority, endpoints depend on the caller's values of the
 * listed labels: callers that differ in them get their own parts, callers
 * that agree share one. */
static void test_failover_priority_parts(void **state)
{
    (void)state;
    three_parts("{host: reviews, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}, "
                "loadBalancer: {localityLbSetting: {failoverPriority: [version]}}}}",
                versioned_proxy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_matches_full),
        cmocka_unit_test(test_result_outlives_cache),
        cmocka_unit_test(test_whole_translations),
        cmocka_unit_test(test_threads_share_one_cache),
        cmocka_unit_test(test_locality_parts),
        cmocka_unit_test(test_failover_priority_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
