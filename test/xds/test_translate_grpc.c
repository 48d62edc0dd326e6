/*
 * Translation for proxyless gRPC clients (xds/translate_grpc.c): the API
 * listeners a client dialing xds:///HOST:PORT asks for, their routes,
 * clusters and endpoints, checked against what gRPC's xDS client requires.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../xds/xds.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "../testutil.h"
#include "../xdsworld.h"

static const char *const WORLD =
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata: {name: echo, namespace: default}\n"
    "spec:\n"
    "  clusterIP: 10.0.0.50\n"
    "  selector: {app: echo}\n"
    "  ports: [{name: grpc, port: 7070, targetPort: 7070}]\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata: {name: echo-hash, namespace: default}\n"
    "spec:\n"
    "  clusterIP: 10.0.0.51\n"
    "  selector: {app: echo}\n"
    "  ports: [{name: grpc, port: 7071, targetPort: 7070}]\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata: {name: far, namespace: other}\n"
    "spec:\n"
    "  clusterIP: 10.0.0.60\n"
    "  selector: {app: far}\n"
    "  ports: [{name: grpc, port: 8080}]\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: Pod\n"
    "metadata:\n"
    "  name: echo-v1-0\n"
    "  namespace: default\n"
    "  labels: {app: echo, version: v1}\n"
    "spec: {containers: [{name: echo}]}\n"
    "status: {phase: Running, podIP: 10.1.0.1}\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: Pod\n"
    "metadata:\n"
    "  name: echo-v2-0\n"
    "  namespace: default\n"
    "  labels: {app: echo, version: v2}\n"
    "spec: {containers: [{name: echo}]}\n"
    "status: {phase: Running, podIP: 10.1.0.2}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata:\n"
    "  name: echo-a\n"
    "  namespace: default\n"
    "  labels: {kubernetes.io/service-name: echo}\n"
    "addressType: IPv4\n"
    "ports: [{name: grpc, port: 7070, protocol: TCP}]\n"
    "endpoints:\n"
    "- addresses: [10.1.0.1]\n"
    "  conditions: {ready: true}\n"
    "  targetRef: {kind: Pod, name: echo-v1-0, namespace: default}\n"
    "- addresses: [10.1.0.2]\n"
    "  conditions: {ready: true}\n"
    "  targetRef: {kind: Pod, name: echo-v2-0, namespace: default}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata:\n"
    "  name: echo-b\n"
    "  namespace: default\n"
    "  labels: {kubernetes.io/service-name: echo}\n"
    "addressType: IPv4\n"
    "ports: [{name: grpc, port: 7070, protocol: TCP}]\n"
    "endpoints:\n"
    "- addresses: [10.1.0.1]\n"
    "  conditions: {ready: true}\n"
    "  targetRef: {kind: Pod, name: echo-v1-0, namespace: default}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata:\n"
    "  name: echo-hash-a\n"
    "  namespace: default\n"
    "  labels: {kubernetes.io/service-name: echo-hash}\n"
    "addressType: IPv4\n"
    "ports: [{name: grpc, port: 7070, protocol: TCP}]\n"
    "endpoints:\n"
    "- addresses: [10.1.0.1]\n"
    "  conditions: {ready: true}\n"
    "  targetRef: {kind: Pod, name: echo-v1-0, namespace: default}\n"
    "- addresses: [10.1.0.2]\n"
    "  conditions: {ready: true}\n"
    "  targetRef: {kind: Pod, name: echo-v2-0, namespace: default}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: DestinationRule\n"
    "metadata: {name: echo, namespace: default}\n"
    "spec:\n"
    "  host: echo\n"
    "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n"
    "  subsets:\n"
    "  - {name: v1, labels: {version: v1}}\n"
    "  - {name: v2, labels: {version: v2}}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: DestinationRule\n"
    "metadata: {name: echo-hash, namespace: default}\n"
    "spec:\n"
    "  host: echo-hash.default.svc.cluster.local\n"
    "  trafficPolicy:\n"
    "    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: DestinationRule\n"
    "metadata: {name: far, namespace: other}\n"
    "spec:\n"
    "  host: far\n"
    "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: VirtualService\n"
    "metadata: {name: echo, namespace: default}\n"
    "spec:\n"
    "  hosts: [echo]\n"
    "  http:\n"
    "  - match: [{uri: {prefix: /old}}]\n"
    "    redirect: {uri: /new}\n"
    "  - match: [{headers: {end-user: {exact: jason}}}]\n"
    "    route: [{destination: {host: echo, subset: v2}}]\n"
    "  - route:\n"
    "    - {destination: {host: echo, subset: v1}, weight: 80}\n"
    "    - {destination: {host: echo, subset: v2}, weight: 20}\n"
    "    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}\n"
    "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}\n";

typedef struct world {
    xw_t x;
    xds_proxy_t *px;
    xds_resources_t *res;
} world_t;

static void world_open(world_t *w, bool proxyless)
{
    xw_open(&w->x);
    xw_text(&w->x, WORLD);
    xw_commit(&w->x);
    w->px = xds_proxy_new(XDS_SIDECAR, "10.1.0.9", "client-0", "default", "default", NULL);
    w->px->proxyless = proxyless;
    w->res = xw_translate(&w->x, w->px);
}

static void world_close(world_t *w)
{
    xds_resources_unref(w->res);
    xds_proxy_free(w->px);
    xw_close(&w->x);
}

static json_object *res_json(const xds_resources_t *r, xds_type_t t, const char *name)
{
    const xds_resource_t *res = xds_resources_find(r, t, name);
    if (res == NULL)
        fail_msg("resource %s not found", name);
    json_object *j = xds_resource_to_json(t, res);
    assert_non_null(j);
    return j;
}

/* Dotted path lookup: "virtualHosts.0.routes.1.match.prefix". */
static json_object *jget(json_object *o, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", path);
    json_object *cur = o;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save)) {
        if (json_object_is_type(cur, json_type_array)) {
            size_t i = (size_t)atoi(tok);
            cur = i < json_object_array_length(cur) ? json_object_array_get_idx(cur, i) : NULL;
        } else if (!json_object_object_get_ex(cur, tok, &cur)) {
            cur = NULL;
        }
    }
    return cur;
}

static const char *jstr(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v ? json_object_get_string(v) : "";
}

/* "PREFIX.LEAF" in a static buffer (one use at a time). */
static const char *jpath(const char *prefix, const char *leaf)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s.%s", prefix, leaf);
    return buf;
}

static size_t jlen(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v && json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
}

static bool jarray_has(json_object *o, const char *path, const char *s)
{
    json_object *v = jget(o, path);
    for (size_t i = 0; v && i < json_object_array_length(v); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(v, i)), s) == 0)
            return true;
    return false;
}

#define FQDN "echo.default.svc.cluster.local:7070"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

/* ---- listeners ---- */

static void test_api_listeners(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, true);
    /* the authority as dialed, in every form Istio answers for a same-namespace client */
    const char *names[] = {FQDN, "echo.default.svc:7070", "echo.default:7070", "echo:7070",
                           "far.other.svc.cluster.local:8080", "far.other:8080"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        json_object *l = res_json(w.res, XDS_LISTENER, names[i]);
        assert_string_equal(jstr(l, "name"), names[i]);
        assert_string_equal(jstr(l, "apiListener.apiListener.@type"), HCM_TYPE);
        json_object *h = jget(l, "apiListener.apiListener");
        assert_non_null(jget(h, "rds.configSource.ads"));
        const char *want_rds = strncmp(names[i], "far", 3) == 0 ? "far.other.svc.cluster.local:8080" : FQDN;
        assert_string_equal(jstr(h, "rds.routeConfigName"), want_rds);
        /* fault before router; router last, as gRPC requires */
        size_t nf = jlen(h, "httpFilters");
        assert_int_equal(nf, 2);
        assert_string_equal(jstr(h, "httpFilters.0.name"), "envoy.filters.http.fault");
        assert_string_equal(jstr(h, "httpFilters.1.name"), "envoy.filters.http.router");
        assert_string_equal(jstr(h, "httpFilters.1.typedConfig.@type"),
                            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
        assert_null(jget(l, "filterChains"));
        json_object_put(l);
    }
    /* the short name of another namespace's service means a local one: not served */
    assert_null(xds_resources_find(w.res, XDS_LISTENER, "far:8080"));
    /* no socket listeners, no catch-all clusters a gRPC client would reject */
    assert_null(xds_resources_find(w.res, XDS_LISTENER, "virtualOutbound"));
    assert_null(xds_resources_find(w.res, XDS_LISTENER, "0.0.0.0_7070"));
    assert_null(xds_resources_find(w.res, XDS_CLUSTER, "BlackHoleCluster"));
    assert_null(xds_resources_find(w.res, XDS_CLUSTER, "PassthroughCluster"));
    world_close(&w);

    /* the same world for an Envoy sidecar keeps its socket listeners */
    world_open(&w, false);
    assert_non_null(xds_resources_find(w.res, XDS_LISTENER, "virtualOutbound"));
    assert_null(xds_resources_find(w.res, XDS_LISTENER, FQDN));
    world_close(&w);
}

/* ---- routes ---- */

static void test_routes(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, true);
    json_object *rc = res_json(w.res, XDS_ROUTE, FQDN);
    assert_int_equal(jlen(rc, "virtualHosts"), 1);
    json_object *vh = jget(rc, "virtualHosts.0");
    assert_true(jarray_has(vh, "domains", FQDN));
    assert_true(jarray_has(vh, "domains", "echo:7070"));
    assert_true(jarray_has(vh, "domains", "echo.default:7070"));
    assert_true(jarray_has(vh, "domains", "echo.default.svc:7070"));

    /* the redirect rule is gone (gRPC rejects the whole configuration for it) */
    assert_int_equal(jlen(vh, "routes"), 2);
    json_object *hdr = jget(vh, "routes.0");
    assert_string_equal(jstr(hdr, "match.headers.0.name"), "end-user");
    assert_string_equal(jstr(hdr, "match.headers.0.stringMatch.exact"), "jason");
    assert_string_equal(jstr(hdr, "route.cluster"), "outbound|7070|v2|echo.default.svc.cluster.local");

    json_object *split = jget(vh, "routes.1");
    assert_string_equal(jstr(split, "match.prefix"), "/");
    assert_string_equal(jstr(split, "route.weightedClusters.clusters.0.name"),
                        "outbound|7070|v1|echo.default.svc.cluster.local");
    assert_int_equal(json_object_get_int(jget(split, "route.weightedClusters.clusters.0.weight")), 80);
    assert_string_equal(jstr(split, "route.weightedClusters.clusters.1.name"),
                        "outbound|7070|v2|echo.default.svc.cluster.local");
    assert_int_equal(json_object_get_int(jget(split, "route.weightedClusters.clusters.1.weight")), 20);
    /* fault kept, CORS (no such filter in gRPC) dropped */
    json_object *pf = jget(split, "typedPerFilterConfig");
    assert_non_null(pf);
    assert_int_equal(json_object_object_length(pf), 1);
    json_object *fault = NULL;
    assert_true(json_object_object_get_ex(pf, "envoy.filters.http.fault", &fault));
    assert_int_equal(json_object_get_int(jget(fault, "abort.grpcStatus")), 14);
    assert_int_equal(json_object_get_int(jget(fault, "abort.percentage.numerator")), 500000);
    assert_string_equal(jstr(fault, "abort.percentage.denominator"), "MILLION");
    json_object_put(rc);

    /* the redirect leaves a warning naming the route configuration */
    uint32_t nw;
    const char *const *warn = xds_resources_warnings(w.res, &nw);
    bool seen = false;
    for (uint32_t i = 0; i < nw; i++)
        seen = seen || (strstr(warn[i], FQDN) && strstr(warn[i], "redirect"));
    assert_true(seen);
    world_close(&w);
}

/* ---- clusters, ring hash, endpoints ---- */

static void test_clusters_and_ring_hash(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, true);
    const char *names[] = {"outbound|7070||echo.default.svc.cluster.local",
                           "outbound|7070|v1|echo.default.svc.cluster.local",
                           "outbound|7070|v2|echo.default.svc.cluster.local"};
    for (size_t i = 0; i < 3; i++) {
        json_object *c = res_json(w.res, XDS_CLUSTER, names[i]);
        assert_string_equal(jstr(c, "type"), "EDS");
        assert_non_null(jget(c, "edsClusterConfig.edsConfig.ads"));
        assert_string_equal(jstr(c, "edsClusterConfig.serviceName"), names[i]);
        /* LEAST_REQUEST is not a gRPC lb_policy: ROUND_ROBIN (the default, omitted) */
        assert_null(jget(c, "lbPolicy"));
        assert_null(jget(c, "transportSocket"));
        json_object_put(c);
    }
    json_object *hc = res_json(w.res, XDS_CLUSTER, "outbound|7071||echo-hash.default.svc.cluster.local");
    assert_string_equal(jstr(hc, "lbPolicy"), "RING_HASH");
    assert_string_equal(jstr(hc, "ringHashLbConfig.minimumRingSize"), "1024");
    json_object_put(hc);

    /* no VirtualService: the default route hashes on the DestinationRule's header */
    json_object *rc = res_json(w.res, XDS_ROUTE, "echo-hash.default.svc.cluster.local:7071");
    json_object *r = jget(rc, "virtualHosts.0.routes.0");
    assert_string_equal(jstr(r, "route.cluster"), "outbound|7071||echo-hash.default.svc.cluster.local");
    assert_int_equal(jlen(r, "route.hashPolicy"), 1);
    assert_string_equal(jstr(r, "route.hashPolicy.0.header.headerName"), "x-user");
    json_object_put(rc);
    world_close(&w);

    /* an Envoy sidecar's default route hashes on it too */
    world_open(&w, false);
    rc = res_json(w.res, XDS_ROUTE, "7071");
    json_object *vh = NULL;
    for (size_t i = 0; i < jlen(rc, "virtualHosts"); i++) {
        char p[64];
        snprintf(p, sizeof(p), "virtualHosts.%zu", i);
        if (strcmp(jstr(rc, jpath(p, "name")), "echo-hash.default.svc.cluster.local:7071") == 0)
            vh = jget(rc, p);
    }
    assert_non_null(vh);
    assert_string_equal(jstr(vh, "routes.0.route.hashPolicy.0.header.headerName"), "x-user");
    json_object_put(rc);
    world_close(&w);
}

/* ISTIO_MUTUAL through the client's certificate provider: gRPC has no SDS */
static void test_mtls_certificate_provider(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, true);
    json_object *c = res_json(w.res, XDS_CLUSTER, "outbound|8080||far.other.svc.cluster.local");
    json_object *u = jget(c, "transportSocket.typedConfig");
    assert_non_null(u);
    assert_string_equal(jstr(u, "@type"),
                        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    assert_string_equal(jstr(u, "sni"), "outbound_.8080_._.far.other.svc.cluster.local");
    assert_string_equal(jstr(u, "commonTlsContext.tlsCertificateProviderInstance.instanceName"), "default");
    assert_string_equal(jstr(u, "commonTlsContext.tlsCertificateProviderInstance.certificateName"), "default");
    assert_string_equal(
        jstr(u, "commonTlsContext.validationContext.caCertificateProviderInstance.instanceName"), "default");
    assert_string_equal(
        jstr(u, "commonTlsContext.validationContext.caCertificateProviderInstance.certificateName"), "ROOTCA");
    assert_null(jget(u, "commonTlsContext.tlsCertificateSdsSecretConfigs"));
    assert_null(jget(u, "commonTlsContext.combinedValidationContext"));
    json_object_put(c);
    /* plaintext where nothing asks for TLS and the endpoints run no sidecar */
    c = res_json(w.res, XDS_CLUSTER, "outbound|7070||echo.default.svc.cluster.local");
    assert_null(jget(c, "transportSocket"));
    json_object_put(c);
    world_close(&w);
}

static void test_endpoints_have_weighted_localities(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, true);
    uint32_t n;
    const xds_resource_t *all = xds_resources_get(w.res, XDS_ENDPOINT, &n);
    assert_true(n >= 4);
    for (uint32_t i = 0; i < n; i++) {
        json_object *cla = xds_resource_to_json(XDS_ENDPOINT, &all[i]);
        assert_non_null(cla);
        for (size_t g = 0; g < jlen(cla, "endpoints"); g++) {
            char p[64];
            snprintf(p, sizeof(p), "endpoints.%zu", g);
            json_object *grp = jget(cla, p);
            if (jget(grp, "locality") == NULL)
                fail_msg("%s: %s has no locality", all[i].name, p);
            json_object *wt = jget(grp, "loadBalancingWeight");
            if (wt == NULL || json_object_get_int(wt) <= 0)
                fail_msg("%s: %s has no load_balancing_weight", all[i].name, p);
        }
        json_object_put(cla);
    }
    /* 10.1.0.1 is in two slices: gRPC rejects an assignment listing it twice */
    json_object *cla = res_json(w.res, XDS_ENDPOINT, "outbound|7070||echo.default.svc.cluster.local");
    size_t total = 0;
    for (size_t g = 0; g < jlen(cla, "endpoints"); g++) {
        char p[64];
        snprintf(p, sizeof(p), "endpoints.%zu.lbEndpoints", g);
        total += jlen(cla, p);
    }
    assert_int_equal(total, 2);
    assert_int_equal(json_object_get_int(jget(cla, "endpoints.0.loadBalancingWeight")), 2);
    json_object_put(cla);
    json_object *v2 = res_json(w.res, XDS_ENDPOINT, "outbound|7070|v2|echo.default.svc.cluster.local");
    assert_int_equal(jlen(v2, "endpoints.0.lbEndpoints"), 1);
    assert_string_equal(jstr(v2, "endpoints.0.lbEndpoints.0.endpoint.address.socketAddress.address"),
                        "10.1.0.2");
    json_object_put(v2);
    world_close(&w);
}

/* A Node as gRPC's xDS client sends it from an Istio-style bootstrap. */
static void test_grpc_node(void **state)
{
    (void)state;
    Google__Protobuf__Value gen = GOOGLE__PROTOBUF__VALUE__INIT;
    gen.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    gen.string_value = "grpc";
    Google__Protobuf__Struct__FieldsEntry e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    e.key = "GENERATOR";
    e.value = &gen;
    Google__Protobuf__Struct__FieldsEntry *ep[1] = {&e};
    Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
    md.n_fields = 1;
    md.fields = ep;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = "sidecar~127.0.0.1~client.default~default.svc.cluster.local";
    node.metadata = &md;
    char err[256];
    xds_proxy_t *p = xds_proxy_from_node(&node, err, sizeof(err));
    assert_non_null(p);
    assert_true(p->proxyless);
    assert_string_equal(p->namespace, "default");
    xds_proxy_free(p);

    node.metadata = NULL;
    p = xds_proxy_from_node(&node, err, sizeof(err));
    assert_non_null(p);
    assert_false(p->proxyless);
    xds_proxy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_listeners),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_clusters_and_ring_hash),
        cmocka_unit_test(test_mtls_certificate_provider),
        cmocka_unit_test(test_endpoints_have_weighted_localities),
        cmocka_unit_test(test_grpc_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
