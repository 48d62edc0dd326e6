/*
 * Gateway translation: what a router proxy receives for Gateway servers
 * beyond plain HTTP — httpsRedirect per server, PASSTHROUGH routed by SNI,
 * TLS terminated in front of tcp routes, and opaque TCP servers.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../xds/xds.h"
#include "../testutil.h"
#include "../xdsworld.h"

static const char *const SERVICES =
    "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: default}\n"
    "spec:\n  clusterIP: 10.96.0.20\n  selector: {app: httpbin}\n"
    "  ports: [{name: http, port: 8000, targetPort: 8000}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: default}\n"
    "spec:\n  clusterIP: 10.96.0.21\n  selector: {app: hello}\n"
    "  ports: [{name: http, port: 5000, targetPort: 5000}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\n"
    "spec:\n  clusterIP: 10.96.0.22\n  selector: {app: nginx}\n"
    "  ports: [{name: https, port: 443, targetPort: 8443}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n"
    "spec:\n  clusterIP: 10.96.0.23\n  selector: {app: db}\n"
    "  ports: [{name: tcp, port: 5432, targetPort: 5432}]\n";

static xds_resources_t *translate(xw_t *w, const char *yaml)
{
    xw_open(w);
    xw_load(w, "test/xds/fixtures/ingressgateway.yaml");
    xw_text(w, SERVICES);
    xw_text(w, yaml);
    xw_commit(w);
    xds_proxy_t *p = xw_pod_proxy(w, "istio-system", "istio-ingressgateway-0", XDS_ROUTER);
    xds_resources_t *r = xw_translate(w, p);
    xds_proxy_free(p);
    assert_non_null(r);
    return r;
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
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur;
         tok = strtok_r(NULL, ".", &save)) {
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

static size_t jlen(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v && json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
}

static json_object *named(json_object *o, const char *path, const char *name)
{
    json_object *a = jget(o, path);
    for (size_t i = 0; a && i < json_object_array_length(a); i++) {
        json_object *e = json_object_array_get_idx(a, i);
        if (strcmp(jstr(e, "name"), name) == 0)
            return e;
    }
    fail_msg("%s: no entry named %s", path, name);
    return NULL;
}

/* The cluster of a chain's tcp_proxy. */
static const char *tcp_cluster(json_object *chain)
{
    json_object *f = jget(chain, "filters.0");
    assert_string_equal(jstr(f, "name"), "envoy.filters.network.tcp_proxy");
    return jstr(f, "typedConfig.cluster");
}

/* A plain server with httpsRedirect redirects every request of its hosts
 * (require_tls and a redirect route), while a plain server beside it on the
 * same port keeps its VirtualService routes; neither makes the listener look
 * for TLS. */
static void test_https_redirect_per_server(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
        "default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 80, name: http, protocol: HTTP}\n    tls: {httpsRedirect: true}\n"
        "    hosts: [httpbin.example.com]\n"
        "  - port: {number: 80, name: http-hello, protocol: HTTP}\n    hosts: [hello.example.com]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: httpbin, namespace: default}\n"
        "spec:\n  hosts: [httpbin.example.com]\n  gateways: [gw]\n"
        "  http: [{route: [{destination: {host: httpbin}}]}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: hello, namespace: default}\n"
        "spec:\n  hosts: [hello.example.com]\n  gateways: [gw]\n"
        "  http: [{route: [{destination: {host: hello}}]}]\n");
    json_object *l = res_json(r, XDS_LISTENER, "0.0.0.0_8080");
    assert_int_equal(jlen(l, "filterChains"), 1);
    assert_int_equal(jlen(l, "listenerFilters"), 0);
    json_object *rc = res_json(r, XDS_ROUTE, "http.8080");
    json_object *redir = named(rc, "virtualHosts", "httpbin.example.com:80");
    assert_string_equal(jstr(redir, "requireTls"), "ALL");
    assert_int_equal(jlen(redir, "routes"), 1);
    assert_true(json_object_get_boolean(jget(redir, "routes.0.redirect.httpsRedirect")));
    assert_string_equal(jstr(redir, "routes.0.match.prefix"), "/");
    json_object *hello = named(rc, "virtualHosts", "hello.example.com:80");
    assert_null(jget(hello, "requireTls"));
    assert_string_equal(jstr(hello, "routes.0.route.cluster"),
                        "outbound|5000||hello.default.svc.cluster.local");
    json_object_put(l);
    json_object_put(rc);
    xds_resources_unref(r);
    xw_close(&w);
}

/* A redirecting server whose hosts no VirtualService names still redirects
 * (it used to answer 404). */
static void test_https_redirect_without_virtual_service(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
            "default}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
            "  - port: {number: 80, name: http, protocol: HTTP}\n    tls: {httpsRedirect: true}\n"
            "    hosts: ['*']\n");
    json_object *rc = res_json(r, XDS_ROUTE, "http.8080");
    assert_int_equal(jlen(rc, "virtualHosts"), 1);
    assert_string_equal(jstr(rc, "virtualHosts.0.domains.0"), "*");
    assert_true(
        json_object_get_boolean(jget(rc, "virtualHosts.0.routes.0.redirect.httpsRedirect")));
    json_object_put(rc);
    xds_resources_unref(r);
    xw_close(&w);
}

/* httpsRedirect on a server that terminates TLS changes nothing: its
 * requests arrive over TLS and follow the VirtualService. */
static void test_https_redirect_ignored_on_tls_server(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
            "  - port: {number: 443, name: https, protocol: HTTPS}\n"
            "    tls: {mode: SIMPLE, credentialName: cert, httpsRedirect: true}\n"
            "    hosts: [httpbin.example.com]\n"
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: httpbin, namespace: default}\n"
            "spec:\n  hosts: [httpbin.example.com]\n  gateways: [gw]\n"
            "  http: [{route: [{destination: {host: httpbin}}]}]\n");
    json_object *rc = res_json(r, XDS_ROUTE, "https.443.https.gw.default");
    json_object *vh = named(rc, "virtualHosts", "httpbin.example.com:443");
    assert_null(jget(vh, "routes.0.redirect"));
    assert_string_equal(jstr(vh, "routes.0.route.cluster"), "outbound|8000||httpbin.default.svc.cluster.local");
    json_object_put(rc);
    xds_resources_unref(r);
    xw_close(&w);
}

/* PASSTHROUGH servers: one chain per SNI their hosts serve, built once per
 * port however many servers share it; an SNI routed twice keeps its first
 * route; a name no server serves gets no chain. */
static void test_passthrough_by_sni(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
            "default}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
            "  - port: {number: 9443, name: tls-a, protocol: TLS}\n    tls: {mode: PASSTHROUGH}\n"
            "    hosts: [a.example.com]\n"
            "  - port: {number: 9443, name: tls-b, protocol: HTTPS}\n    tls: {mode: PASSTHROUGH}\n"
            "    hosts: [b.example.com]\n"
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: a, namespace: default}\n"
            "spec:\n  hosts: [a.example.com, b.example.com, c.example.com]\n  gateways: [gw]\n"
            "  tls:\n"
            "  - match: [{port: 9443, sniHosts: [a.example.com, c.example.com]}]\n"
            "    route: [{destination: {host: nginx, port: {number: 443}}}]\n"
            "  - match: [{sniHosts: [b.example.com]}]\n"
            "    route: [{destination: {host: nginx, port: {number: 443}}, weight: 80},\n"
            "            {destination: {host: httpbin, port: {number: 8000}}, weight: 20}]\n"
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: z-again, namespace: default}\n"
            "spec:\n  hosts: [a.example.com]\n  gateways: [gw]\n"
            "  tls: [{match: [{sniHosts: [a.example.com]}], route: [{destination: {host: "
            "httpbin}}]}]\n");
    json_object *l = res_json(r, XDS_LISTENER, "0.0.0.0_9443");
    assert_int_equal(jlen(l, "filterChains"), 2);
    assert_string_equal(jstr(l, "listenerFilters.0.name"), "envoy.filters.listener.tls_inspector");
    json_object *a = jget(l, "filterChains.0");
    assert_int_equal(jlen(a, "filterChainMatch.serverNames"), 1);
    assert_string_equal(jstr(a, "filterChainMatch.serverNames.0"), "a.example.com");
    assert_string_equal(tcp_cluster(a), "outbound|443||nginx.default.svc.cluster.local");
    assert_null(jget(a, "transportSocket"));
    json_object *b = jget(l, "filterChains.1");
    assert_string_equal(jstr(b, "filterChainMatch.serverNames.0"), "b.example.com");
    assert_string_equal(jstr(b, "filters.0.typedConfig.weightedClusters.clusters.1.name"),
                        "outbound|8000||httpbin.default.svc.cluster.local");
    assert_int_equal(
        json_object_get_int(jget(b, "filters.0.typedConfig.weightedClusters.clusters.0.weight")),
        80);
    json_object_put(l);
    xds_resources_unref(r);
    xw_close(&w);
}

/* AUTO_PASSTHROUGH (east-west gateways): Istio's outbound SNI of each
 * service port and subset the server's hosts allow, straight to that
 * cluster, without VirtualServices. */
static void test_auto_passthrough(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: eastwest, namespace: "
            "istio-system}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
            "  - port: {number: 15443, name: tls, protocol: TLS}\n    tls: {mode: AUTO_PASSTHROUGH}\n"
            "    hosts: [\"default/*.local\"]\n"
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: httpbin, namespace: default}\n"
            "spec:\n  host: httpbin\n  subsets: [{name: v1, labels: {version: v1}}]\n");
    json_object *l = res_json(r, XDS_LISTENER, "0.0.0.0_15443");
    assert_string_equal(jstr(l, "listenerFilters.0.name"), "envoy.filters.listener.tls_inspector");
    json_object *c = named(l, "filterChains", "outbound_.8000_._.httpbin.default.svc.cluster.local");
    assert_string_equal(jstr(c, "filterChainMatch.serverNames.0"), "outbound_.8000_._.httpbin.default.svc.cluster.local");
    assert_string_equal(tcp_cluster(c), "outbound|8000||httpbin.default.svc.cluster.local");
    assert_null(jget(c, "transportSocket")); /* the mTLS goes through untouched */
    c = named(l, "filterChains", "outbound_.8000_.v1_.httpbin.default.svc.cluster.local");
    assert_string_equal(tcp_cluster(c), "outbound|8000|v1|httpbin.default.svc.cluster.local");
    /* every chain names a cluster the gateway has */
    json_object *chains = jget(l, "filterChains");
    for (size_t i = 0; i < json_object_array_length(chains); i++) {
        const char *cl = tcp_cluster(json_object_array_get_idx(chains, i));
        assert_non_null(xds_resources_find(r, XDS_CLUSTER, cl));
        assert_true(strstr(cl, ".default.svc.cluster.local") != NULL); /* only the allowed namespace */
    }
    json_object_put(l);
    xds_resources_unref(r);
    xw_close(&w);
}

/* TLS terminated at the gateway, then the VirtualService's tcp route; an
 * opaque TCP server goes straight to its tcp route. */
static void test_tls_terminated_and_tcp_servers(void **state)
{
    (void)state;
    xw_t w;
    xds_resources_t *r = translate(
        &w, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
            "default}\n"
            "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
            "  - port: {number: 9444, name: tls-db, protocol: TLS}\n"
            "    tls: {mode: SIMPLE, credentialName: db-cert}\n    hosts: [db.example.com]\n"
            "  - port: {number: 5432, name: tcp-db, protocol: TCP}\n    hosts: ['*']\n"
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: db, namespace: default}\n"
            "spec:\n  hosts: ['*']\n  gateways: [gw]\n"
            "  tcp: [{route: [{destination: {host: db, port: {number: 5432}}}]}]\n");
    json_object *l = res_json(r, XDS_LISTENER, "0.0.0.0_9444");
    assert_int_equal(jlen(l, "filterChains"), 1);
    json_object *c = jget(l, "filterChains.0");
    assert_string_equal(jstr(c, "filterChainMatch.serverNames.0"), "db.example.com");
    assert_string_equal(tcp_cluster(c), "outbound|5432||db.default.svc.cluster.local");
    assert_string_equal(
        jstr(c,
             "transportSocket.typedConfig.commonTlsContext.tlsCertificateSdsSecretConfigs.0.name"),
        "kubernetes://db-cert");
    json_object *t = res_json(r, XDS_LISTENER, "0.0.0.0_5432");
    assert_int_equal(jlen(t, "filterChains"), 1);
    assert_null(jget(t, "filterChains.0.filterChainMatch"));
    assert_string_equal(tcp_cluster(jget(t, "filterChains.0")),
                        "outbound|5432||db.default.svc.cluster.local");
    json_object_put(l);
    json_object_put(t);
    xds_resources_unref(r);
    xw_close(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_https_redirect_per_server),
        cmocka_unit_test(test_https_redirect_without_virtual_service),
        cmocka_unit_test(test_https_redirect_ignored_on_tls_server),
        cmocka_unit_test(test_passthrough_by_sni),
        cmocka_unit_test(test_auto_passthrough),
        cmocka_unit_test(test_tls_terminated_and_tcp_servers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
