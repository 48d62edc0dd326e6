/*
 * Filter chains, TLS contexts and RBAC as meshproxy compiles them from what
 * meshd really sends: the bookinfo sample plus PeerAuthentication and
 * AuthorizationPolicy is translated for a sidecar (xds_translate), every
 * resource goes through px_snapshot_build (what the proxy would ACK), and
 * connections are matched against the compiled listeners as Envoy would
 * (destination port, transport protocol, ALPN, server name, prefix ranges).
 */
#include <arpa/inet.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/config_internal.h"
#include "../../proxy/rbac_internal.h"
#include "../../proxy/tls_internal.h"
#include "../../xds/xds.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "../testutil.h"
#include "../xdsworld.h"

typedef xw_t world_t;

static void world_open(world_t *w, const char *extra_yaml)
{
    xw_bookinfo(w);
    if (extra_yaml)
        xw_text(w, extra_yaml);
    xw_commit(w);
}

static const ProtobufCMessageDescriptor *const descs[XDS_NTYPES] = {
    [XDS_LISTENER] = &envoy__config__listener__v3__listener__descriptor,
    [XDS_ROUTE] = &envoy__config__route__v3__route_configuration__descriptor,
    [XDS_CLUSTER] = &envoy__config__cluster__v3__cluster__descriptor,
    [XDS_ENDPOINT] = &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
};
static const int px_type[XDS_NTYPES] = {
    [XDS_LISTENER] = PX_RES_LISTENER, [XDS_ROUTE] = PX_RES_ROUTE,
    [XDS_CLUSTER] = PX_RES_CLUSTER, [XDS_ENDPOINT] = PX_RES_ENDPOINT,
};

/* The sidecar of a bookinfo pod, translated by meshd and compiled by meshproxy. */
static px_snapshot_t *sidecar_snapshot(world_t *w, const char *pod, const char *sa, const char *ip,
                                       const char *app, px_bundle_t *b)
{
    cfg_mapent_t ents[1] = {{.key = (char *)"app", .str = (char *)app}};
    cfg_map_t labels = {.v = ents, .n = 1};
    xds_proxy_t *p = xds_proxy_new(XDS_SIDECAR, ip, pod, "default", sa, &labels);
    xds_input_t in = {.snap = w->snap, .reg = w->reg};
    xds_resources_t *r = xds_translate(&in, p);
    memset(b, 0, sizeof(*b));
    for (int t = 0; t < XDS_NTYPES; t++) {
        if (descs[t] == NULL)
            continue;
        uint32_t n = 0;
        const xds_resource_t *res = xds_resources_get(r, (xds_type_t)t, &n);
        for (uint32_t i = 0; i < n; i++) {
            ProtobufCMessage *m = protobuf_c_message_unpack(descs[t], NULL, res[i].len, res[i].data);
            assert_non_null(m);
            assert_int_equal(px_bundle_add(b, px_type[t], m), 0);
        }
    }
    xds_resources_unref(r);
    xds_proxy_free(p);
    px_resources_t view;
    px_bundle_view(b, &view);
    char err[1024] = "";
    px_snapshot_t *s = px_snapshot_build(&view, err, sizeof(err));
    if (s == NULL)
        fail_msg("meshproxy refuses what meshd sends: %s", err);
    return s;
}

static const px_listener_t *listener(const px_snapshot_t *s, const char *name)
{
    for (size_t i = 0; i < s->nlisteners; i++)
        if (strcmp(s->listeners[i].name, name) == 0)
            return &s->listeners[i];
    return NULL;
}

static void sa4(struct sockaddr_in *a, const char *ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
}

/* The chain a connection to ip:port gets (NULL: closed). */
static const px_chain_t *pick(const px_listener_t *l, const char *ip, uint16_t port, const char *transport,
                              const char *alpn)
{
    struct sockaddr_in local, remote;
    sa4(&local, ip, port);
    sa4(&remote, "10.1.0.99", 40000);
    const char *protos[1] = {alpn};
    px_chain_input_t in = {(struct sockaddr *)&local, (struct sockaddr *)&remote, transport, NULL,
                           alpn ? protos : NULL, alpn ? 1 : 0};
    return px_chain_select(l, &in);
}

static const char *const strict_and_policy =
    "apiVersion: security.istio.io/v1\n"
    "kind: PeerAuthentication\n"
    "metadata: {name: default, namespace: istio-system}\n"
    "spec: {mtls: {mode: STRICT}}\n"
    "---\n"
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata: {name: reviews-viewer, namespace: default}\n"
    "spec:\n"
    "  selector: {matchLabels: {app: reviews}}\n"
    "  action: ALLOW\n"
    "  rules:\n"
    "  - from: [{source: {principals: [\"cluster.local/ns/default/sa/bookinfo-productpage\"]}}]\n"
    "    to: [{operation: {methods: [GET]}}]\n";

static void test_strict_inbound_chains(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, strict_and_policy);
    px_bundle_t b;
    px_snapshot_t *s = sidecar_snapshot(&w, "reviews-v1-0", "bookinfo-reviews", "10.1.0.31", "reviews", &b);

    const px_listener_t *in = listener(s, "virtualInbound");
    assert_non_null(in);
    assert_true(in->bind);
    assert_true(in->original_dst);
    assert_true(in->tls_inspector);

    /* mTLS from a mesh peer on the service port: the TLS chain with the
     * workload certificate, a client certificate required, the ALLOW RBAC */
    const px_chain_t *c = pick(in, "10.1.0.31", 9080, "tls", "istio-peer-exchange");
    assert_non_null(c);
    assert_string_equal(c->name, "inbound|9080||");
    assert_int_equal(c->kind, PX_LISTENER_HTTP);
    assert_non_null(c->tls);
    assert_true(c->tls->server);
    assert_true(c->tls->require_client_cert);
    assert_string_equal(c->tls->cert_sds, PX_SDS_DEFAULT);
    assert_string_equal(c->tls->ca_sds, PX_SDS_ROOTCA);
    assert_true(c->nhttp_rbac >= 1);
    assert_non_null(c->route_config);

    /* STRICT: plaintext to the same port matches no chain (the connection is reset) */
    assert_null(pick(in, "10.1.0.31", 9080, "raw_buffer", NULL));
    assert_null(pick(in, "10.1.0.31", 9080, "raw_buffer", "http/1.1"));
    /* a port no service declares: the TLS passthrough chain, never plaintext */
    c = pick(in, "10.1.0.31", 7777, "tls", "istio");
    assert_non_null(c);
    assert_string_equal(c->name, "virtualInbound-catchall-tls");
    assert_null(pick(in, "10.1.0.31", 7777, "raw_buffer", NULL));
    /* connecting to 15006 itself: the blackhole */
    c = pick(in, "10.1.0.31", 15006, "raw_buffer", NULL);
    assert_non_null(c);
    assert_string_equal(c->name, "virtualInbound-blackhole");

    /* the RBAC filter compiled from the ALLOW policy: productpage's GET
     * passes, its DELETE and anyone else are denied */
    px_rbac_attrs_t a = {0};
    struct sockaddr_in local, peer;
    sa4(&local, "10.1.0.31", 9080);
    sa4(&peer, "10.1.0.50", 41000);
    a.peer = (struct sockaddr *)&peer;
    a.local = (struct sockaddr *)&local;
    a.http = true;
    a.path = "/reviews/0";
    a.path_len = strlen(a.path);
    a.host = "reviews:9080";
    a.host_len = strlen(a.host);
    c = pick(in, "10.1.0.31", 9080, "tls", "istio");
    bool allowed;
    const char *who[] = {"spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                         "spiffe://cluster.local/ns/default/sa/bookinfo-ratings", ""};
    const char *method[] = {"GET", "DELETE"};
    for (int i = 0; i < 3; i++)
        for (int m = 0; m < 2; m++) {
            a.principal = who[i];
            a.method = method[m];
            a.method_len = strlen(method[m]);
            allowed = true;
            for (size_t k = 0; k < c->nhttp_rbac && allowed; k++) {
                px_rbac_result_t r;
                px_rbac_eval(c->http_rbac[k], &a, &r);
                allowed = r.allowed;
            }
            assert_int_equal(allowed, i == 0 && m == 0);
        }
    px_snapshot_unref(s);
    px_bundle_free(&b);
    xw_close(&w);
}

static void test_outbound_mtls_and_capture(void **state)
{
    (void)state;
    world_t w;
    world_open(&w, strict_and_policy);
    px_bundle_t b;
    px_snapshot_t *s =
        sidecar_snapshot(&w, "productpage-v1-0", "bookinfo-productpage", "10.1.0.50", "productpage", &b);

    /* every reviews endpoint runs a sidecar: auto mTLS with Istio's SNI and
     * the service account as the expected server identity */
    const px_cluster_t *c = px_snapshot_cluster(s, "outbound|9080||reviews.default.svc.cluster.local");
    assert_non_null(c);
    assert_non_null(c->tls);
    assert_false(c->tls->server);
    assert_string_equal(c->tls->sni, "outbound_.9080_._.reviews.default.svc.cluster.local");
    assert_string_equal(c->tls->cert_sds, PX_SDS_DEFAULT);
    assert_string_equal(c->tls->ca_sds, PX_SDS_ROOTCA);
    assert_true(c->tls->nsans >= 1);
    bool san = false;
    for (size_t i = 0; i < c->tls->nsans; i++)
        san = san || px_str_match(&c->tls->sans[i], "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                                  strlen("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"));
    assert_true(san);
    bool istio_alpn = false;
    for (size_t i = 0; i < c->tls->nalpn; i++)
        istio_alpn = istio_alpn || strcmp(c->tls->alpn[i], "istio") == 0;
    assert_true(istio_alpn);
    /* no SDS name the proxy must fetch: default and ROOTCA are its own */
    assert_int_equal(s->nsds_names, 0);

    /* capture: virtualOutbound hands a connection to the listener of its
     * original destination; per-port listeners are not bound */
    const px_listener_t *vo = listener(s, "virtualOutbound");
    assert_non_null(vo);
    assert_true(vo->use_original_dst);
    struct sockaddr_in dst;
    sa4(&dst, "10.1.0.31", 9080);
    const px_listener_t *to = px_listener_for_dst(s, (struct sockaddr *)&dst, vo);
    assert_non_null(to);
    assert_false(to->bind);
    assert_int_equal(to->port, 9080);
    const px_chain_t *ch = pick(to, "10.1.0.31", 9080, "raw_buffer", NULL);
    assert_non_null(ch);
    assert_int_equal(ch->kind, PX_LISTENER_HTTP);
    assert_null(ch->tls);
    /* a destination no listener has: virtualOutbound's own chains (passthrough) */
    sa4(&dst, "192.0.2.1", 4444);
    assert_null(px_listener_for_dst(s, (struct sockaddr *)&dst, vo));
    ch = pick(vo, "192.0.2.1", 4444, "raw_buffer", NULL);
    assert_non_null(ch);
    assert_int_equal(ch->kind, PX_LISTENER_TCP);

    /* inbound clusters leave from 127.0.0.6 (the capture rules let it through) */
    c = px_snapshot_cluster(s, "inbound|9080||");
    assert_non_null(c);
    assert_true(c->bind);
    assert_int_equal(c->lb, PX_LB_ORIGINAL_DST);
    /* and say which service they serve, for destination_service */
    assert_non_null(c->svc_host);
    assert_true(strstr(c->svc_host, ".default.svc.cluster.local") != NULL);
    assert_string_equal(c->svc_ns, "default");
    assert_non_null(c->svc_name);
    px_snapshot_unref(s);
    px_bundle_free(&b);
    xw_close(&w);
}

static void test_chain_precedence(void **state)
{
    (void)state;
    /* Envoy's order: destination port, destination IP (longest prefix),
     * server name (exact, then longest wildcard), transport, ALPN */
    const char *j =
        "{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\", "
        "\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": \"0.0.0.0\", \"port_value\": 443}},\n"
        " \"filter_chains\": [\n"
#define TCP(c)                                                                                                   \
    "\"filters\": [{\"name\": \"t\", \"typed_config\": {\"@type\": "                                            \
    "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", \"stat_prefix\": \"s\", " \
    "\"cluster\": \"" c "\"}}]"
        "  {\"name\": \"any\", " TCP("c") "},\n"
        "  {\"name\": \"p443\", \"filter_chain_match\": {\"destination_port\": 443}, " TCP("c") "},\n"
        "  {\"name\": \"net8\", \"filter_chain_match\": {\"destination_port\": 443, \"prefix_ranges\": "
        "[{\"address_prefix\": \"10.0.0.0\", \"prefix_len\": 8}]}, " TCP("c") "},\n"
        "  {\"name\": \"net16\", \"filter_chain_match\": {\"destination_port\": 443, \"prefix_ranges\": "
        "[{\"address_prefix\": \"10.1.0.0\", \"prefix_len\": 16}]}, " TCP("c") "},\n"
        "  {\"name\": \"exact\", \"filter_chain_match\": {\"destination_port\": 443, \"prefix_ranges\": "
        "[{\"address_prefix\": \"10.1.0.0\", \"prefix_len\": 16}], \"server_names\": [\"a.example.com\"]}, " TCP("c") "},\n"
        "  {\"name\": \"wild\", \"filter_chain_match\": {\"destination_port\": 443, \"prefix_ranges\": "
        "[{\"address_prefix\": \"10.1.0.0\", \"prefix_len\": 16}], \"server_names\": [\"*.example.com\"]}, " TCP("c") "},\n"
        "  {\"name\": \"h2\", \"filter_chain_match\": {\"destination_port\": 8443, \"transport_protocol\": \"tls\", "
        "\"application_protocols\": [\"h2\"]}, " TCP("c") "},\n"
        "  {\"name\": \"tls\", \"filter_chain_match\": {\"destination_port\": 8443, \"transport_protocol\": \"tls\"}, "
        TCP("c") "},\n"
        "  {\"name\": \"v6\", \"filter_chain_match\": {\"prefix_ranges\": [{\"address_prefix\": \"fd00::\", "
        "\"prefix_len\": 8}]}, " TCP("c") "}\n"
        " ]},\n"
        "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"c\"}]}";
#undef TCP
    px_bundle_t b = {0};
    char err[512];
    assert_int_equal(px_bundle_load_json(&b, j, strlen(j), err, sizeof(err)), 0);
    px_resources_t view;
    px_bundle_view(&b, &view);
    px_snapshot_t *s = px_snapshot_build(&view, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s", err);
    const px_listener_t *l = &s->listeners[0];
    assert_true(l->tls_inspector); /* chains match on TLS: the proxy peeks */
    assert_string_equal(pick(l, "192.168.1.1", 80, "raw_buffer", NULL)->name, "any");
    assert_string_equal(pick(l, "192.168.1.1", 443, "raw_buffer", NULL)->name, "p443");
    assert_string_equal(pick(l, "10.9.0.1", 443, "raw_buffer", NULL)->name, "net8");
    assert_string_equal(pick(l, "10.1.2.3", 443, "raw_buffer", NULL)->name, "net16");

    struct sockaddr_in local;
    sa4(&local, "10.1.2.3", 443);
    px_chain_input_t in = {(struct sockaddr *)&local, NULL, "tls", "a.example.com", NULL, 0};
    assert_string_equal(px_chain_select(l, &in)->name, "exact");
    in.sni = "b.example.com";
    assert_string_equal(px_chain_select(l, &in)->name, "wild");
    in.sni = "other.org"; /* no name matches: the chains without names */
    assert_string_equal(px_chain_select(l, &in)->name, "net16");

    assert_string_equal(pick(l, "192.168.1.1", 8443, "tls", "h2")->name, "h2");
    assert_string_equal(pick(l, "192.168.1.1", 8443, "tls", "http/1.1")->name, "tls");
    assert_null(pick(l, "192.168.1.1", 8443, "raw_buffer", NULL));

    struct sockaddr_in6 l6;
    memset(&l6, 0, sizeof(l6));
    l6.sin6_family = AF_INET6;
    l6.sin6_port = htons(9);
    inet_pton(AF_INET6, "fd12::1", &l6.sin6_addr);
    px_chain_input_t in6 = {(struct sockaddr *)&l6, NULL, "raw_buffer", NULL, NULL, 0};
    assert_string_equal(px_chain_select(l, &in6)->name, "v6");

    px_snapshot_unref(s);
    px_bundle_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict_inbound_chains),
        cmocka_unit_test(test_outbound_mtls_and_capture),
        cmocka_unit_test(test_chain_precedence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
