/*
 * Translation tests: golden outputs for the bookinfo sample (readable JSON
 * under test/xds/golden, rewritten with MESH_UPDATE_GOLDEN=1) and focused
 * checks of names, subsets, routes, mTLS, authorization and scoping.
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

typedef xw_t world_t;

static xds_proxy_t *pod_proxy(world_t *w, const char *ns, const char *pod)
{
    return xw_pod_proxy(w, ns, pod, strcmp(pod, "istio-ingressgateway-0") == 0 ? XDS_ROUTER : XDS_SIDECAR);
}

/* All resources as {"listeners": {name: json}, "routes": ..., ...}. */
static json_object *dump(const xds_resources_t *r)
{
    static const char *const keys[XDS_NTYPES] = {"listeners", "routes", "clusters", "endpoints"};
    json_object *o = json_object_new_object();
    for (int t = 0; t < XDS_NTYPES; t++) {
        if (keys[t] == NULL) /* secrets: test_sds.c */
            continue;
        json_object *m = json_object_new_object();
        uint32_t n;
        const xds_resource_t *res = xds_resources_get(r, (xds_type_t)t, &n);
        for (uint32_t i = 0; i < n; i++) {
            json_object *j = xds_resource_to_json((xds_type_t)t, &res[i]);
            assert_non_null(j);
            json_object_object_add(m, res[i].name, j);
        }
        json_object_object_add(o, keys[t], m);
    }
    return o;
}

static json_object *res_json(const xds_resources_t *r, xds_type_t t, const char *name)
{
    const xds_resource_t *res = xds_resources_find(r, t, name);
    if (res == NULL)
        fail_msg("resource %s not found", name);
    return xds_resource_to_json(t, res);
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
    return v ? json_object_get_string(v) : NULL;
}

/* The vhost of a route configuration with this name, or NULL. */
static json_object *vhost(json_object *rc, const char *name)
{
    json_object *vhs = jget(rc, "virtualHosts");
    for (size_t i = 0; vhs && i < json_object_array_length(vhs); i++) {
        json_object *v = json_object_array_get_idx(vhs, i);
        if (strcmp(jstr(v, "name"), name) == 0)
            return v;
    }
    return NULL;
}

static void golden(const char *name, json_object *got)
{
    char path[256];
    snprintf(path, sizeof(path), "test/xds/golden/%s.json", name);
    const char *text = json_object_to_json_string_ext(
        got, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (getenv("MESH_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%s\n", text);
        fclose(f);
        return;
    }
    json_object *want = json_object_from_file(path);
    if (want == NULL)
        fail_msg("%s missing: run with MESH_UPDATE_GOLDEN=1 and review it", path);
    if (!json_object_equal(want, got)) {
        char out[300];
        snprintf(out, sizeof(out), "build/test/xds/%s.got.json", name);
        FILE *f = fopen(out, "w");
        if (f) {
            fprintf(f, "%s\n", text);
            fclose(f);
        }
        json_object_put(want);
        fail_msg("%s differs from the translation (written to %s)", path, out);
    }
    json_object_put(want);
}

/* ---- golden ---- */

static void test_golden_bookinfo_sidecar(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/destination-rule-all.yaml"));
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/virtual-service-reviews-80-20.yaml"));
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *j = dump(r);
    golden("bookinfo-productpage", j);
    json_object_put(j);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

static void test_golden_bookinfo_gateway(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_load(&w, "test/xds/fixtures/ingressgateway.yaml");
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/bookinfo-gateway.yaml"));
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/destination-rule-all-mtls.yaml"));
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "istio-system", "istio-ingressgateway-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *j = dump(r);
    golden("bookinfo-gateway", j);
    json_object_put(j);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* ---- names ---- */

static void test_names(void **state)
{
    (void)state;
    char b[256];
    xds_cluster_name(b, sizeof(b), XDS_OUTBOUND, 9080, "v1", "reviews.default.svc.cluster.local");
    assert_string_equal(b, "outbound|9080|v1|reviews.default.svc.cluster.local");
    xds_cluster_name(b, sizeof(b), XDS_INBOUND, 9080, NULL, NULL);
    assert_string_equal(b, "inbound|9080||");
    xds_sni(b, sizeof(b), 9080, "v1", "reviews.default.svc.cluster.local");
    assert_string_equal(b, "outbound_.9080_.v1_.reviews.default.svc.cluster.local");
    xds_sni(b, sizeof(b), 80, "", "httpbin.foo.svc.cluster.local");
    assert_string_equal(b, "outbound_.80_._.httpbin.foo.svc.cluster.local");
    snprintf(b, sizeof(b), "outbound|9080|v2|reviews.default.svc.cluster.local");
    xds_direction_t d;
    uint32_t port;
    const char *sub, *host;
    assert_int_equal(xds_cluster_name_parse(b, &d, &port, &sub, &host), 0);
    assert_int_equal(d, XDS_OUTBOUND);
    assert_int_equal(port, 9080);
    assert_string_equal(sub, "v2");
    assert_string_equal(host, "reviews.default.svc.cluster.local");
    snprintf(b, sizeof(b), "sideways|x||");
    assert_int_equal(xds_cluster_name_parse(b, &d, &port, &sub, &host), -1);
    assert_true(xds_host_match("*.example.com", "a.example.com"));
    assert_false(xds_host_match("*.example.com", "example.com"));
    assert_true(xds_host_match("*", "anything"));
}

static void test_proxy_from_node(void **state)
{
    (void)state;
    /* a Node as Istio's agent sends it */
    Google__Protobuf__Value ns = GOOGLE__PROTOBUF__VALUE__INIT, sa = GOOGLE__PROTOBUF__VALUE__INIT,
                            ips = GOOGLE__PROTOBUF__VALUE__INIT, app = GOOGLE__PROTOBUF__VALUE__INIT,
                            labels = GOOGLE__PROTOBUF__VALUE__INIT;
    ns.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    ns.string_value = "bookinfo";
    sa.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    sa.string_value = "bookinfo-reviews";
    ips.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    ips.string_value = "10.1.0.31,fd00::31";
    app.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    app.string_value = "reviews";
    Google__Protobuf__Struct__FieldsEntry le = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    le.key = "app";
    le.value = &app;
    Google__Protobuf__Struct__FieldsEntry *lep[1] = {&le};
    Google__Protobuf__Struct ls = GOOGLE__PROTOBUF__STRUCT__INIT;
    ls.n_fields = 1;
    ls.fields = lep;
    labels.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    labels.struct_value = &ls;
    Google__Protobuf__Struct__FieldsEntry e[4] = {GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                                  GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                                  GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                                  GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT};
    e[0].key = "NAMESPACE";
    e[0].value = &ns;
    e[1].key = "SERVICE_ACCOUNT";
    e[1].value = &sa;
    e[2].key = "INSTANCE_IPS";
    e[2].value = &ips;
    e[3].key = "LABELS";
    e[3].value = &labels;
    Google__Protobuf__Struct__FieldsEntry *ep[4] = {&e[0], &e[1], &e[2], &e[3]};
    Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
    md.n_fields = 4;
    md.fields = ep;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = "sidecar~10.1.0.31~reviews-v1-0.bookinfo~bookinfo.svc.cluster.local";
    node.metadata = &md;
    Envoy__Config__Core__V3__Locality loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    loc.region = "us-east";
    loc.zone = "zone-a";
    node.locality = &loc;
    char err[256];
    xds_proxy_t *p = xds_proxy_from_node(&node, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(p->type, XDS_SIDECAR);
    assert_string_equal(p->ip, "10.1.0.31");
    assert_string_equal(p->pod_name, "reviews-v1-0");
    assert_string_equal(p->namespace, "bookinfo");
    assert_string_equal(p->service_account, "bookinfo-reviews");
    assert_int_equal(p->nips, 2);
    assert_string_equal(p->ips[1], "fd00::31");
    assert_string_equal(reg_labels_get(&p->labels, "app"), "reviews");
    assert_string_equal(p->dns_domain, "bookinfo.svc.cluster.local");
    assert_string_equal(p->locality, "us-east/zone-a");
    xds_proxy_free(p);
    node.locality = NULL;
    p = xds_proxy_from_node(&node, err, sizeof(err));
    assert_string_equal(p->locality, "");
    xds_proxy_free(p);

    node.id = "gateway~1.2.3.4~x.y~y.svc.cluster.local";
    assert_null(xds_proxy_from_node(&node, err, sizeof(err)));
    assert_non_null(strstr(err, "unknown proxy type \"gateway\""));
    node.id = "sidecar~1.2.3.4";
    assert_null(xds_proxy_from_node(&node, err, sizeof(err)));
    assert_non_null(strstr(err, "TYPE~IP~POD.NAMESPACE~DOMAIN"));
}

/* ---- clusters and endpoints ---- */

static void test_subset_endpoints(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/destination-rule-all.yaml"));
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *v2 = res_json(r, XDS_ENDPOINT, "outbound|9080|v2|reviews.default.svc.cluster.local");
    /* only the v2 pod, in its locality, with a locality weight (gRPC needs it) */
    assert_int_equal(json_object_array_length(jget(v2, "endpoints")), 1);
    assert_string_equal(jstr(v2, "endpoints.0.lbEndpoints.0.endpoint.address.socketAddress.address"), "10.1.0.32");
    assert_string_equal(jstr(v2, "endpoints.0.locality.zone"), "zone-b");
    assert_int_equal(json_object_get_int(jget(v2, "endpoints.0.loadBalancingWeight")), 1);
    json_object *all = res_json(r, XDS_ENDPOINT, "outbound|9080||reviews.default.svc.cluster.local");
    size_t total = 0;
    for (size_t i = 0; i < json_object_array_length(jget(all, "endpoints")); i++) {
        json_object *g = json_object_array_get_idx(jget(all, "endpoints"), i);
        size_t n = json_object_array_length(jget(g, "lbEndpoints"));
        assert_int_equal(json_object_get_int(jget(g, "loadBalancingWeight")), (int)n);
        total += n;
    }
    assert_int_equal(total, 3);
    /* every endpoint runs a sidecar: auto mTLS with Istio's SNI */
    json_object *c = res_json(r, XDS_CLUSTER, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_string_equal(jstr(c, "type"), "EDS");
    assert_string_equal(jstr(c, "transportSocket.typedConfig.sni"),
                        "outbound_.9080_.v1_.reviews.default.svc.cluster.local");
    assert_string_equal(jstr(c, "transportSocket.typedConfig.commonTlsContext.tlsCertificateSdsSecretConfigs.0.name"),
                        "default");
    assert_string_equal(jstr(c, "transportSocket.typedConfig.commonTlsContext.combinedValidationContext.validationContextSdsSecretConfig.name"),
                        "ROOTCA");
    assert_string_equal(jstr(c, "edsClusterConfig.serviceName"), "outbound|9080|v1|reviews.default.svc.cluster.local");
    json_object_put(v2);
    json_object_put(all);
    json_object_put(c);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* ---- locality load balancing ---- */

/* reviews gets two more pods: one in eu-west, one in ap-south. */
#define FAR_POD(name, ip, region, zone)                                                            \
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: " name "\n  namespace: default\n"          \
    "  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio, "                     \
    "topology.kubernetes.io/region: " region ", topology.kubernetes.io/zone: " zone "}\n"         \
    "  annotations: {sidecar.istio.io/status: '{\"containers\":[\"istio-proxy\"]}'}\n"               \
    "spec: {serviceAccountName: bookinfo-reviews, containers: [{name: reviews, ports: [{containerPort: 9080}]}]}\n" \
    "status: {phase: Running, podIP: " ip "}\n"
static const char *const far_reviews =
    FAR_POD("reviews-eu-0", "10.2.0.31", "eu-west", "zone-c") FAR_POD("reviews-ap-0", "10.3.0.31", "ap-south", "zone-d")
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: reviews-far, namespace: default, labels: {kubernetes.io/service-name: reviews}}\n"
    "addressType: IPv4\nports: [{name: http, port: 9080, protocol: TCP}]\n"
    "endpoints:\n"
    "- {addresses: [10.2.0.31], conditions: {ready: true}, targetRef: {kind: Pod, name: reviews-eu-0, namespace: default}}\n"
    "- {addresses: [10.3.0.31], conditions: {ready: true}, targetRef: {kind: Pod, name: reviews-ap-0, namespace: default}}\n";
#undef FAR_POD

/* The priority of the locality group whose region/zone is loc, -1 if absent. */
static int group_priority(json_object *cla, const char *region, const char *zone, int *weight)
{
    json_object *eps = jget(cla, "endpoints");
    for (size_t i = 0; eps && i < json_object_array_length(eps); i++) {
        json_object *g = json_object_array_get_idx(eps, i);
        if (strcmp(jstr(g, "locality.region"), region) != 0 || strcmp(jstr(g, "locality.zone"), zone) != 0)
            continue;
        json_object *p = jget(g, "priority");
        if (weight)
            *weight = json_object_get_int(jget(g, "loadBalancingWeight"));
        return p ? json_object_get_int(p) : 0;
    }
    return -1;
}

/* Replaces the reviews DestinationRule: outlier detection (when asked) and
 * this localityLbSetting (flow YAML). */
static void reviews_dr(world_t *w, bool outlier, const char *lls)
{
    cfg_store_delete(w->store, CFG_DestinationRule, "default", "reviews");
    char y[1024];
    snprintf(y, sizeof(y),
             "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
             "metadata: {name: reviews, namespace: default}\n"
             "spec:\n  host: reviews\n  trafficPolicy:\n%s"
             "    loadBalancer: {localityLbSetting: %s}\n",
             outlier ? "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n" : "",
             lls);
    xw_text(w, y);
    xw_commit(w);
}

static void test_locality_failover(void **state)
{
    (void)state;
    const char *reviews = "outbound|9080||reviews.default.svc.cluster.local";
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, far_reviews);
    xw_text(&w, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                "metadata: {name: reviews, namespace: default}\n"
                "spec:\n  host: reviews\n  trafficPolicy:\n"
                "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n"
                "    loadBalancer:\n      simple: ROUND_ROBIN\n"
                "      localityLbSetting: {enabled: true, failover: [{from: us-east, to: ap-south}]}\n");
    xw_commit(&w);
    /* productpage runs in us-east/zone-a (its pod's topology labels) */
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *cla = res_json(r, XDS_ENDPOINT, reviews);
    assert_int_equal(group_priority(cla, "us-east", "zone-a", NULL), 0); /* same zone */
    assert_int_equal(group_priority(cla, "us-east", "zone-b", NULL), 1); /* same region */
    assert_int_equal(group_priority(cla, "ap-south", "zone-d", NULL), 2); /* the failover region */
    assert_int_equal(group_priority(cla, "eu-west", "zone-c", NULL), 3); /* the rest */
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* a proxy whose node says eu-west: its region first, no failover rule for it */
    p = xds_proxy_new(XDS_SIDECAR, "10.9.0.1", "client-0", "default", "default", NULL);
    p->locality = "eu-west/zone-c";
    r = xw_translate(&w, p);
    cla = res_json(r, XDS_ENDPOINT, reviews);
    assert_int_equal(group_priority(cla, "eu-west", "zone-c", NULL), 0);
    assert_int_equal(group_priority(cla, "us-east", "zone-a", NULL), 1);
    assert_int_equal(group_priority(cla, "us-east", "zone-b", NULL), 1);
    assert_int_equal(group_priority(cla, "ap-south", "zone-d", NULL), 1);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* retryRemoteLocalities asks Envoy's previous_priorities retry priority */
    xw_text(&w, "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                "metadata: {name: reviews, namespace: default}\n"
                "spec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n"
                "    retries: {attempts: 2, retryOn: 5xx, retryRemoteLocalities: true}\n");
    xw_commit(&w);
    p = pod_proxy(&w, "default", "productpage-v1-0");
    r = xw_translate(&w, p);
    json_object *rc = res_json(r, XDS_ROUTE, "9080");
    json_object *vhs = jget(rc, "virtualHosts");
    bool found = false;
    for (size_t i = 0; vhs && i < json_object_array_length(vhs); i++) {
        json_object *vh = json_object_array_get_idx(vhs, i);
        if (strncmp(jstr(vh, "name"), "reviews.default.svc.cluster.local", 33) != 0)
            continue;
        assert_string_equal(jstr(vh, "routes.0.route.retryPolicy.retryPriority.name"),
                            "envoy.retry_priorities.previous_priorities");
        found = true;
    }
    assert_true(found);
    json_object_put(rc);
    xds_resources_unref(r);
    xds_proxy_free(p);
    cfg_store_delete(w.store, CFG_VirtualService, "default", "reviews");

    /* without outlier detection there is no failover: one priority */
    reviews_dr(&w, false, "{failover: [{from: us-east, to: ap-south}]}");
    p = pod_proxy(&w, "default", "productpage-v1-0");
    r = xw_translate(&w, p);
    cla = res_json(r, XDS_ENDPOINT, reviews);
    assert_int_equal(group_priority(cla, "us-east", "zone-a", NULL), 0);
    assert_int_equal(group_priority(cla, "eu-west", "zone-c", NULL), 0);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* The priority of the group holding the endpoint at ip, -1 if absent. */
static int addr_priority(json_object *cla, const char *ip)
{
    json_object *eps = jget(cla, "endpoints");
    for (size_t i = 0; eps && i < json_object_array_length(eps); i++) {
        json_object *g = json_object_array_get_idx(eps, i);
        json_object *lbs = jget(g, "lbEndpoints");
        for (size_t j = 0; lbs && j < json_object_array_length(lbs); j++)
            if (strcmp(jstr(json_object_array_get_idx(lbs, j), "endpoint.address.socketAddress.address"), ip) == 0) {
                json_object *p = jget(g, "priority");
                return p ? json_object_get_int(p) : 0;
            }
    }
    return -1;
}

/* failoverPriority: endpoints ordered by how many of the listed labels
 * (in order) they share with the caller, before (or instead of) locality. */
static void test_failover_priority(void **state)
{
    (void)state;
    const char *reviews = "outbound|9080||reviews.default.svc.cluster.local";
    /* reviews: v1 10.1.0.31 us-east/zone-a, v2 10.1.0.32 and v3 10.1.0.33
     * us-east/zone-b, v1 10.2.0.31 eu-west, v1 10.3.0.31 ap-south; the
     * caller productpage-v1 (version v1) in us-east/zone-a */
    static const struct {
        const char *lls;
        int want[5]; /* 10.1.0.31, .32, .33, 10.2.0.31, 10.3.0.31 */
    } cases[] = {
        /* the same version first, wherever it runs */
        {"{failoverPriority: [version]}", {0, 1, 1, 0, 0}},
        /* within a rank, the region order `failover` gives */
        {"{failoverPriority: [version], failover: [{from: us-east, to: ap-south}]}", {0, 3, 3, 2, 1}},
        /* a value to match instead of the caller's: region first, then v3 */
        {"{failoverPriority: [topology.kubernetes.io/region, version=v3]}", {1, 1, 0, 2, 2}},
        /* region and zone as labels: the locality order without failover */
        {"{failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]}", {0, 1, 1, 2, 2}},
        /* one cluster: every endpoint shares the caller's */
        {"{failoverPriority: [topology.istio.io/cluster, version]}", {0, 1, 1, 0, 0}},
    };
    static const char *const ips[5] = {"10.1.0.31", "10.1.0.32", "10.1.0.33", "10.2.0.31", "10.3.0.31"};
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, far_reviews);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        reviews_dr(&w, true, cases[c].lls);
        xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
        xds_resources_t *r = xw_translate(&w, p);
        json_object *cla = res_json(r, XDS_ENDPOINT, reviews);
        for (size_t i = 0; i < 5; i++) {
            if (addr_priority(cla, ips[i]) != cases[c].want[i])
                fail_msg("%s: %s has priority %d, want %d", cases[c].lls, ips[i], addr_priority(cla, ips[i]),
                         cases[c].want[i]);
        }
        json_object_put(cla);
        xds_resources_unref(r);
        xds_proxy_free(p);
    }

    /* a caller without the label and without a locality: one priority */
    reviews_dr(&w, true, "{failoverPriority: [version]}");
    xds_proxy_t *p = xds_proxy_new(XDS_SIDECAR, "10.9.0.1", "client-0", "default", "default", NULL);
    xds_resources_t *r = xw_translate(&w, p);
    json_object *cla = res_json(r, XDS_ENDPOINT, reviews);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(addr_priority(cla, ips[i]), 0);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* without outlier detection the labels order nothing */
    reviews_dr(&w, false, "{failoverPriority: [version]}");
    p = pod_proxy(&w, "default", "productpage-v1-0");
    r = xw_translate(&w, p);
    cla = res_json(r, XDS_ENDPOINT, reviews);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(addr_priority(cla, ips[i]), 0);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

static void test_locality_distribute(void **state)
{
    (void)state;
    const char *reviews = "outbound|9080||reviews.default.svc.cluster.local";
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, far_reviews);
    xw_text(&w, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                "metadata: {name: reviews, namespace: default}\n"
                "spec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n"
                "        distribute:\n"
                "        - {from: us-east/zone-a/*, to: {us-east/zone-a/*: 80, us-east/zone-b/*: 20}}\n"
                "        - {from: ap-south/*, to: {eu-west/*: 100}}\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *cla = res_json(r, XDS_ENDPOINT, reviews);
    int wa = 0, wb = 0;
    assert_int_equal(group_priority(cla, "us-east", "zone-a", &wa), 0);
    assert_int_equal(group_priority(cla, "us-east", "zone-b", &wb), 0);
    assert_int_equal(wa, 80); /* zone-a's one endpoint takes its 80 */
    assert_int_equal(wb, 20); /* zone-b's two endpoints share 20 as one group */
    assert_int_equal(group_priority(cla, "eu-west", "zone-c", NULL), -1); /* not named: left out */
    assert_int_equal(group_priority(cla, "ap-south", "zone-d", NULL), -1);
    json_object *c = res_json(r, XDS_CLUSTER, reviews);
    assert_non_null(jget(c, "commonLbConfig.localityWeightedLbConfig"));
    json_object_put(c);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* a caller in ap-south: its rule sends everything to eu-west */
    p = xds_proxy_new(XDS_SIDECAR, "10.9.0.1", "client-0", "default", "default", NULL);
    p->locality = "ap-south/zone-d";
    r = xw_translate(&w, p);
    cla = res_json(r, XDS_ENDPOINT, reviews);
    assert_int_equal(json_object_array_length(jget(cla, "endpoints")), 1);
    assert_int_equal(group_priority(cla, "eu-west", "zone-c", &wa), 0);
    assert_int_equal(wa, 100);
    json_object_put(cla);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

static void test_destination_rule_policies(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, "apiVersion: networking.istio.io/v1\n"
                   "kind: DestinationRule\n"
                   "metadata: {name: reviews, namespace: default}\n"
                   "spec:\n"
                   "  host: reviews\n"
                   "  trafficPolicy:\n"
                   "    loadBalancer: {simple: LEAST_CONN}\n"
                   "    connectionPool:\n"
                   "      tcp: {maxConnections: 100, connectTimeout: 3s, tcpKeepalive: {probes: 3, time: 90s, interval: 10s}}\n"
                   "      http: {http1MaxPendingRequests: 10, maxRetries: 4, maxRequestsPerConnection: 5, idleTimeout: 20s}\n"
                   "    outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 30s}\n"
                   "    tls: {mode: DISABLE}\n"
                   "  subsets:\n"
                   "  - name: v2\n"
                   "    labels: {version: v2}\n"
                   "    trafficPolicy:\n"
                   "      loadBalancer:\n"
                   "        consistentHash: {httpHeaderName: x-user}\n"
                   "      tls: {mode: ISTIO_MUTUAL}\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *c = res_json(r, XDS_CLUSTER, "outbound|9080||reviews.default.svc.cluster.local");
    assert_string_equal(jstr(c, "lbPolicy"), "LEAST_REQUEST");
    assert_string_equal(jstr(c, "connectTimeout"), "3s");
    assert_int_equal(json_object_get_int(jget(c, "circuitBreakers.thresholds.0.maxConnections")), 100);
    assert_int_equal(json_object_get_int(jget(c, "circuitBreakers.thresholds.0.maxPendingRequests")), 10);
    assert_int_equal(json_object_get_int(jget(c, "circuitBreakers.thresholds.0.maxRetries")), 4);
    assert_null(jget(c, "circuitBreakers.thresholds.0.retryBudget")); /* an explicit maxRetries */
    assert_int_equal(json_object_get_int(jget(c, "outlierDetection.consecutive5xx")), 7);
    assert_string_equal(jstr(c, "outlierDetection.interval"), "5s");
    /* Istio's panic threshold: minHealthPercent, 0 when unset */
    assert_non_null(jget(c, "commonLbConfig.healthyPanicThreshold"));
    assert_int_equal(json_object_get_int(jget(c, "commonLbConfig.healthyPanicThreshold.value")), 0);
    assert_int_equal(json_object_get_int(jget(c, "upstreamConnectionOptions.tcpKeepalive.keepaliveProbes")), 3);
    assert_int_equal(json_object_get_int(jget(c, "upstreamConnectionOptions.tcpKeepalive.keepaliveTime")), 90);
    assert_int_equal(json_object_get_int(jget(c, "upstreamConnectionOptions.tcpKeepalive.keepaliveInterval")), 10);
    assert_null(jget(c, "transportSocket")); /* DISABLE wins over auto mTLS */
    /* without maxRetries: a retry budget of 20 %, at least 3 */
    json_object *d = res_json(r, XDS_CLUSTER, "outbound|9080||details.default.svc.cluster.local");
    assert_int_equal(json_object_get_int(jget(d, "circuitBreakers.thresholds.0.retryBudget.budgetPercent.value")), 20);
    assert_int_equal(json_object_get_int(jget(d, "circuitBreakers.thresholds.0.retryBudget.minRetryConcurrency")), 3);
    json_object_put(d);
    json_object *v2 = res_json(r, XDS_CLUSTER, "outbound|9080|v2|reviews.default.svc.cluster.local");
    /* the subset's policies replace the top level's, field by field */
    assert_string_equal(jstr(v2, "lbPolicy"), "RING_HASH");
    assert_string_equal(jstr(v2, "ringHashLbConfig.minimumRingSize"), "1024");
    assert_int_equal(json_object_get_int(jget(v2, "circuitBreakers.thresholds.0.maxConnections")), 100);
    assert_string_equal(jstr(v2, "transportSocket.typedConfig.sni"),
                        "outbound_.9080_.v2_.reviews.default.svc.cluster.local");
    json_object_put(c);
    json_object_put(v2);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* ---- routes ---- */

static void test_routes_match_order(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/destination-rule-all.yaml"));
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"));
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *rc = res_json(r, XDS_ROUTE, "9080");
    json_object *vh = vhost(rc, "reviews.default.svc.cluster.local:9080");
    assert_non_null(vh);
    /* domains as Istio generates them for the proxy's own namespace */
    json_object *doms = jget(vh, "domains");
    const char *want[] = {"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080",
                          "reviews", "reviews:9080"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_object_get_string(json_object_array_get_idx(doms, (size_t)i)), want[i]);
    /* the header match first, then the catch-all */
    assert_int_equal(json_object_array_length(jget(vh, "routes")), 2);
    assert_string_equal(jstr(vh, "routes.0.match.headers.0.name"), "end-user");
    assert_string_equal(jstr(vh, "routes.0.match.headers.0.stringMatch.exact"), "jason");
    assert_string_equal(jstr(vh, "routes.0.route.cluster"), "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_string_equal(jstr(vh, "routes.1.match.prefix"), "/");
    assert_string_equal(jstr(vh, "routes.1.route.cluster"), "outbound|9080|v3|reviews.default.svc.cluster.local");
    /* Istio's default retry policy and timeout 0 */
    assert_string_equal(jstr(vh, "routes.1.route.timeout"), "0s");
    assert_string_equal(jstr(vh, "routes.1.route.retryPolicy.retryOn"),
                        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes");
    assert_int_equal(json_object_get_int(jget(vh, "routes.1.route.retryPolicy.numRetries")), 2);
    /* a service without a VirtualService gets the default route */
    json_object *dv = vhost(rc, "details.default.svc.cluster.local:9080");
    assert_string_equal(jstr(dv, "routes.0.name"), "default");
    assert_string_equal(jstr(dv, "routes.0.route.cluster"), "outbound|9080||details.default.svc.cluster.local");
    /* unknown hosts go through */
    assert_non_null(vhost(rc, "allow_any"));
    /* the outbound listener points at the route by its port */
    json_object *l = res_json(r, XDS_LISTENER, "0.0.0.0_9080");
    assert_string_equal(jstr(l, "filterChains.0.filters.0.typedConfig.rds.routeConfigName"), "9080");
    json_object *hf = jget(l, "filterChains.0.filters.0.typedConfig.httpFilters");
    size_t nf = json_object_array_length(hf);
    assert_string_equal(jstr(json_object_array_get_idx(hf, nf - 1), "name"), "envoy.filters.http.router");
    json_object_put(l);
    json_object_put(rc);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

static void test_routes_fault_weights_mirror(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/destination-rule-all.yaml"));
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/virtual-service-ratings-test-delay.yaml"));
    xw_load(&w, tu_shared("istio/samples/bookinfo/networking/virtual-service-reviews-90-10.yaml"));
    xw_text(&w, "apiVersion: networking.istio.io/v1\n"
                   "kind: VirtualService\n"
                   "metadata: {name: details, namespace: default}\n"
                   "spec:\n"
                   "  hosts: [details]\n"
                   "  http:\n"
                   "  - match:\n"
                   "    - sourceLabels: {app: somebody-else}\n"
                   "    route: [{destination: {host: details, subset: v2}}]\n"
                   "  - timeout: 2.5s\n"
                   "    retries: {attempts: 0}\n"
                   "    mirror: {host: details, subset: v2}\n"
                   "    mirrorPercentage: {value: 12.5}\n"
                   "    headers: {request: {set: {x-a: b}, remove: [x-c]}}\n"
                   "    route: [{destination: {host: details, subset: v1}}]\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *rc = res_json(r, XDS_ROUTE, "9080");
    json_object *ra = vhost(rc, "ratings.default.svc.cluster.local:9080");
    /* the delay applies to jason only; 7s on 100% */
    json_object *tpf = jget(ra, "routes.0.typedPerFilterConfig");
    json_object *fault = NULL;
    assert_true(json_object_object_get_ex(tpf, "envoy.filters.http.fault", &fault));
    assert_string_equal(jstr(fault, "@type"), "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault");
    assert_string_equal(jstr(fault, "delay.fixedDelay"), "7s");
    assert_int_equal(json_object_get_int(jget(fault, "delay.percentage.numerator")), 1000000);
    assert_string_equal(jstr(fault, "delay.percentage.denominator"), "MILLION");
    json_object *rv = vhost(rc, "reviews.default.svc.cluster.local:9080");
    assert_int_equal(json_object_get_int(jget(rv, "routes.0.route.weightedClusters.totalWeight")), 100);
    assert_int_equal(json_object_get_int(jget(rv, "routes.0.route.weightedClusters.clusters.0.weight")), 90);
    assert_string_equal(jstr(rv, "routes.0.route.weightedClusters.clusters.1.name"),
                        "outbound|9080|v2|reviews.default.svc.cluster.local");
    json_object *dv = vhost(rc, "details.default.svc.cluster.local:9080");
    /* the sourceLabels match does not apply to productpage: one route */
    assert_int_equal(json_object_array_length(jget(dv, "routes")), 1);
    assert_string_equal(jstr(dv, "routes.0.route.timeout"), "2.500s");
    assert_null(jget(dv, "routes.0.route.retryPolicy"));
    assert_string_equal(jstr(dv, "routes.0.route.requestMirrorPolicies.0.cluster"),
                        "outbound|9080|v2|details.default.svc.cluster.local");
    assert_int_equal(json_object_get_int(jget(dv, "routes.0.route.requestMirrorPolicies.0.runtimeFraction.defaultValue.numerator")),
                     125000);
    assert_string_equal(jstr(dv, "routes.0.requestHeadersToAdd.0.header.key"), "x-a");
    assert_string_equal(jstr(dv, "routes.0.requestHeadersToAdd.0.appendAction"), "OVERWRITE_IF_EXISTS_OR_ADD");
    assert_string_equal(jstr(dv, "routes.0.requestHeadersToRemove.0"), "x-c");
    json_object_put(rc);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* ---- inbound security ---- */

static json_object *chain(json_object *l, const char *name)
{
    json_object *cs = jget(l, "filterChains");
    for (size_t i = 0; cs && i < json_object_array_length(cs); i++) {
        json_object *c = json_object_array_get_idx(cs, i);
        if (strcmp(jstr(c, "name"), name) == 0)
            return c;
    }
    return NULL;
}

static void test_peer_authentication(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    /* mesh STRICT, namespace UNSET (inherits), workload PERMISSIVE with 9080 DISABLE */
    xw_text(&w, "apiVersion: security.istio.io/v1\n"
                   "kind: PeerAuthentication\n"
                   "metadata: {name: default, namespace: istio-system}\n"
                   "spec: {mtls: {mode: STRICT}}\n"
                   "---\n"
                   "apiVersion: security.istio.io/v1\n"
                   "kind: PeerAuthentication\n"
                   "metadata: {name: default, namespace: default}\n"
                   "spec: {mtls: {mode: UNSET}}\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "reviews-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *l = res_json(r, XDS_LISTENER, "virtualInbound");
    json_object *c = chain(l, "inbound|9080||");
    assert_non_null(c);
    assert_string_equal(jstr(c, "filterChainMatch.transportProtocol"), "tls");
    assert_string_equal(jstr(c, "filterChainMatch.applicationProtocols.0"), "istio-peer-exchange");
    assert_true(json_object_get_boolean(jget(c, "transportSocket.typedConfig.requireClientCertificate")));
    assert_null(chain(l, "inbound|9080||-plaintext")); /* STRICT: no plaintext chain */
    assert_string_equal(jstr(c, "filters.0.typedConfig.routeConfig.virtualHosts.0.routes.0.route.cluster"),
                        "inbound|9080||");
    json_object_put(l);
    xds_resources_unref(r);

    xw_text(&w, "apiVersion: security.istio.io/v1\n"
                   "kind: PeerAuthentication\n"
                   "metadata: {name: reviews, namespace: default}\n"
                   "spec:\n"
                   "  selector: {matchLabels: {app: reviews}}\n"
                   "  mtls: {mode: PERMISSIVE}\n"
                   "  portLevelMtls: {\"9080\": {mode: DISABLE}}\n");
    xw_commit(&w);
    r = xw_translate(&w, p);
    l = res_json(r, XDS_LISTENER, "virtualInbound");
    assert_null(chain(l, "inbound|9080||")); /* DISABLE on the port: plaintext only */
    c = chain(l, "inbound|9080||-plaintext");
    assert_non_null(c);
    assert_null(jget(c, "filterChainMatch.transportProtocol"));
    /* other ports follow the workload's PERMISSIVE: both chains */
    assert_non_null(chain(l, "virtualInbound-catchall-tls"));
    assert_non_null(chain(l, "virtualInbound-catchall-tcp"));
    json_object_put(l);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

static json_object *http_filter(json_object *c, const char *name, int nth)
{
    json_object *hf = jget(c, "filters.0.typedConfig.httpFilters");
    for (size_t i = 0; hf && i < json_object_array_length(hf); i++) {
        json_object *f = json_object_array_get_idx(hf, i);
        if (strcmp(jstr(f, "name"), name) == 0 && nth-- == 0)
            return f;
    }
    return NULL;
}

static void test_authorization_policy(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, "apiVersion: security.istio.io/v1\n"
                   "kind: AuthorizationPolicy\n"
                   "metadata: {name: reviews-viewer, namespace: default}\n"
                   "spec:\n"
                   "  selector: {matchLabels: {app: reviews}}\n"
                   "  action: ALLOW\n"
                   "  rules:\n"
                   "  - from:\n"
                   "    - source:\n"
                   "        principals: [cluster.local/ns/default/sa/bookinfo-productpage]\n"
                   "        namespaces: [default]\n"
                   "    to:\n"
                   "    - operation: {methods: [GET], paths: [/reviews/*]}\n"
                   "---\n"
                   "apiVersion: security.istio.io/v1\n"
                   "kind: AuthorizationPolicy\n"
                   "metadata: {name: deny-ips, namespace: default}\n"
                   "spec:\n"
                   "  action: DENY\n"
                   "  rules:\n"
                   "  - from: [{source: {ipBlocks: [203.0.113.0/24]}}]\n"
                   "---\n"
                   "apiVersion: security.istio.io/v1\n"
                   "kind: AuthorizationPolicy\n"
                   "metadata: {name: ext-authz, namespace: default}\n"
                   "spec:\n"
                   "  action: CUSTOM\n"
                   "  provider: {name: opa}\n"
                   "  rules:\n"
                   "  - to: [{operation: {paths: [/admin/*]}}]\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "reviews-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    json_object *l = res_json(r, XDS_LISTENER, "virtualInbound");
    json_object *c = chain(l, "inbound|9080||");
    json_object *deny = http_filter(c, "envoy.filters.http.rbac", 0);
    json_object *allow = http_filter(c, "envoy.filters.http.rbac", 1);
    assert_non_null(deny);
    assert_non_null(allow);
    assert_string_equal(jstr(deny, "typedConfig.rules.action"), "DENY");
    /* CUSTOM without an external authorizer: what it covers is denied (fail closed) */
    json_object *custom = NULL;
    assert_true(json_object_object_get_ex(jget(deny, "typedConfig.rules.policies"),
                                          "ns[default]-policy[ext-authz]-rule[0]", &custom));
    assert_non_null(strstr(json_object_to_json_string(custom), "\\/admin\\/"));
    assert_null(jget(allow, "typedConfig.rules.action")); /* ALLOW is the default value */
    json_object *pol = jget(allow, "typedConfig.rules.policies");
    json_object *rule = NULL;
    assert_true(json_object_object_get_ex(pol, "ns[default]-policy[reviews-viewer]-rule[0]", &rule));
    const char *txt = json_object_to_json_string(rule);
    assert_non_null(strstr(txt, "spiffe:\\/\\/cluster.local\\/ns\\/default\\/sa\\/bookinfo-productpage"));
    assert_non_null(strstr(txt, ".*\\/ns\\/default\\/.*"));
    assert_non_null(strstr(txt, "\":method\""));
    assert_non_null(strstr(txt, "\"prefix\": \"\\/reviews\\/\""));
    /* router stays last */
    json_object *hf = jget(c, "filters.0.typedConfig.httpFilters");
    assert_string_equal(jstr(json_object_array_get_idx(hf, json_object_array_length(hf) - 1), "name"),
                        "envoy.filters.http.router");
    json_object_put(l);
    xds_resources_unref(r);

    /* an ALLOW policy without rules denies everything */
    xw_text(&w, "apiVersion: security.istio.io/v1\n"
                   "kind: AuthorizationPolicy\n"
                   "metadata: {name: reviews-viewer, namespace: default}\n"
                   "spec:\n"
                   "  selector: {matchLabels: {app: reviews}}\n");
    xw_commit(&w);
    r = xw_translate(&w, p);
    l = res_json(r, XDS_LISTENER, "virtualInbound");
    c = chain(l, "inbound|9080||");
    allow = http_filter(c, "envoy.filters.http.rbac", 1);
    assert_non_null(allow);
    assert_non_null(jget(allow, "typedConfig.rules"));
    assert_null(jget(allow, "typedConfig.rules.policies"));
    json_object_put(l);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* ---- scoping ---- */

static void test_scoping(void **state)
{
    (void)state;
    world_t w;
    xw_bookinfo(&w);
    xw_text(&w, "apiVersion: v1\n"
                   "kind: Service\n"
                   "metadata: {name: secret-svc, namespace: other, annotations: {networking.istio.io/exportTo: \".\"}}\n"
                   "spec: {ports: [{name: http, port: 8000}]}\n"
                   "---\n"
                   "apiVersion: v1\n"
                   "kind: Service\n"
                   "metadata: {name: public-svc, namespace: other}\n"
                   "spec: {ports: [{name: tcp-db, port: 5432}], clusterIP: 10.96.7.7}\n");
    xw_commit(&w);
    xds_proxy_t *p = pod_proxy(&w, "default", "productpage-v1-0");
    xds_resources_t *r = xw_translate(&w, p);
    assert_null(xds_resources_find(r, XDS_CLUSTER, "outbound|8000||secret-svc.other.svc.cluster.local"));
    assert_non_null(xds_resources_find(r, XDS_CLUSTER, "outbound|5432||public-svc.other.svc.cluster.local"));
    json_object *tl = res_json(r, XDS_LISTENER, "10.96.7.7_5432");
    assert_string_equal(jstr(tl, "filterChains.0.filters.0.typedConfig.cluster"),
                        "outbound|5432||public-svc.other.svc.cluster.local");
    json_object_put(tl);
    xds_resources_unref(r);

    /* a Sidecar limiting egress to the own namespace hides other namespaces */
    xw_text(&w, "apiVersion: networking.istio.io/v1\n"
                   "kind: Sidecar\n"
                   "metadata: {name: default, namespace: default}\n"
                   "spec: {egress: [{hosts: [\"./*\"]}], outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n");
    xw_commit(&w);
    r = xw_translate(&w, p);
    assert_null(xds_resources_find(r, XDS_CLUSTER, "outbound|5432||public-svc.other.svc.cluster.local"));
    assert_non_null(xds_resources_find(r, XDS_CLUSTER, "outbound|9080||reviews.default.svc.cluster.local"));
    json_object *rc = res_json(r, XDS_ROUTE, "9080");
    assert_non_null(vhost(rc, "block_all"));
    assert_null(vhost(rc, "allow_any"));
    json_object_put(rc);
    xds_resources_unref(r);
    xds_proxy_free(p);
    xw_close(&w);
}

/* Every tutorial file that loads translates for a sidecar and a gateway: the
 * result is deterministic and every cluster a route or listener names exists
 * or is reported. */
static void check_clusters_exist(const xds_resources_t *r, xds_type_t t)
{
    uint32_t n;
    const xds_resource_t *res = xds_resources_get(r, t, &n);
    for (uint32_t i = 0; i < n; i++) {
        json_object *j = xds_resource_to_json(t, &res[i]);
        assert_non_null(j);
        const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_NOSLASHESCAPE);
        for (const char *q = s; (q = strstr(q, "\"cluster\": \"")) != NULL;) {
            q += 12;
            const char *e = strchr(q, '"');
            char name[512];
            snprintf(name, sizeof(name), "%.*s", (int)(e - q), q);
            if (xds_resources_find(r, XDS_CLUSTER, name) == NULL) {
                uint32_t nw;
                const char *const *warn = xds_resources_warnings(r, &nw);
                char host[512];
                const char *bar = strrchr(name, '|');
                snprintf(host, sizeof(host), "%s", bar ? bar + 1 : name);
                bool reported = false;
                for (uint32_t k = 0; k < nw && !reported; k++)
                    reported = strstr(warn[k], host) != NULL;
                if (!reported)
                    fail_msg("%s refers to cluster %s, which is neither built nor reported", res[i].name, name);
            }
        }
        json_object_put(j);
    }
}

static void test_tutorials(void **state)
{
    (void)state;
    const char *files[] = {"istio-notes-01.yaml", "istio-notes-05.yaml", "istio-notes-10.yaml",
                           "istio-notes-15.yaml", "istio-notes-21.yaml", "modern-devops-ch15-01.yaml",
                           "modern-devops-ch15-05.yaml", "modern-devops-ch15-09-canary-fixed.yaml",
                           "modern-devops-ch15-11-mirror-fixed.yaml", "modern-devops-ch15-12-https-gateway.yaml",
                           "devsecops-prod-01.yaml"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "tutorials/%s", files[f]);
        world_t w;
        xw_bookinfo(&w);
        xw_load(&w, "test/xds/fixtures/ingressgateway.yaml");
        xw_load(&w, tu_shared(rel));
        xw_commit(&w);
        const char *pods[2][2] = {{"default", "productpage-v1-0"}, {"istio-system", "istio-ingressgateway-0"}};
        for (int k = 0; k < 2; k++) {
            xds_proxy_t *p = pod_proxy(&w, pods[k][0], pods[k][1]);
            xds_resources_t *a = xw_translate(&w, p);
            xds_resources_t *b = xw_translate(&w, p);
            for (int t = 0; t < XDS_NTYPES; t++)
                assert_true(xds_resources_hash(a, (xds_type_t)t) == xds_resources_hash(b, (xds_type_t)t));
            check_clusters_exist(a, XDS_ROUTE);
            check_clusters_exist(a, XDS_LISTENER);
            xds_resources_unref(a);
            xds_resources_unref(b);
            xds_proxy_free(p);
        }
        xw_close(&w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_proxy_from_node),
        cmocka_unit_test(test_golden_bookinfo_sidecar),
        cmocka_unit_test(test_golden_bookinfo_gateway),
        cmocka_unit_test(test_subset_endpoints),
        cmocka_unit_test(test_locality_failover),
        cmocka_unit_test(test_failover_priority),
        cmocka_unit_test(test_locality_distribute),
        cmocka_unit_test(test_destination_rule_policies),
        cmocka_unit_test(test_routes_match_order),
        cmocka_unit_test(test_routes_fault_weights_mirror),
        cmocka_unit_test(test_peer_authentication),
        cmocka_unit_test(test_authorization_policy),
        cmocka_unit_test(test_scoping),
        cmocka_unit_test(test_tutorials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
