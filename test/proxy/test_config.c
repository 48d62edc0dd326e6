/* Tests of the proxy's config snapshot (proxy/config.c, bundle.c, pbjson.c):
 * xDS resources in proto3 JSON compile into a snapshot; a table of requests
 * is routed through it; load balancers spread requests as their policy says;
 * bad resources are refused with an error naming resource, field and reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/config_internal.h"

#define T_LISTENER "\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\""
#define T_ROUTE "\"@type\": \"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\""
#define T_CLUSTER "\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\""
#define T_CLA "\"@type\": \"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\""
#define T_HCM                                                                                       \
    "\"@type\": \"type.googleapis.com/"                                                             \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\""
#define T_TCP "\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\""

static const char *const routes_json =
    "{\"resources\": [\n"
    "{" T_ROUTE ", \"name\": \"http.80\", \"virtual_hosts\": [\n"
    " {\"name\": \"reviews\", \"domains\": [\"reviews.default.svc.cluster.local\", \"reviews\", "
    "\"reviews:80\"],\n"
    "  \"routes\": [\n"
    "   {\"name\": \"jason\", \"match\": {\"prefix\": \"/\", \"headers\": [{\"name\": \"end-user\", "
    "\"string_match\": {\"exact\": \"jason\"}}]},\n"
    "    \"route\": {\"cluster\": \"v2\"}},\n"
    "   {\"match\": {\"path\": \"/exact\"}, \"route\": {\"cluster\": \"exact\"}},\n"
    "   {\"match\": {\"safe_regex\": {\"regex\": \"/items/[0-9]+\"}}, \"route\": {\"cluster\": "
    "\"regex\"}},\n"
    "   {\"match\": {\"prefix\": \"/q\", \"query_parameters\": [{\"name\": \"debug\", "
    "\"string_match\": {\"exact\": \"1\"}}]}, \"route\": {\"cluster\": \"query\"}},\n"
    "   {\"match\": {\"prefix\": \"/m\", \"headers\": [{\"name\": \":method\", \"exact_match\": "
    "\"POST\"}]}, \"route\": {\"cluster\": \"post\"}},\n"
    "   {\"match\": {\"prefix\": \"/ci\", \"case_sensitive\": false}, \"route\": {\"cluster\": "
    "\"ci\"}},\n"
    "   {\"match\": {\"prefix\": \"/nox\", \"headers\": [{\"name\": \"x-block\", "
    "\"present_match\": true, \"invert_match\": true}]}, \"route\": {\"cluster\": \"nox\"}},\n"
    "   {\"match\": {\"prefix\": \"/old\"}, \"redirect\": {\"path_redirect\": \"/new\", "
    "\"response_code\": \"FOUND\"}},\n"
    "   {\"match\": {\"prefix\": \"/health\"}, \"direct_response\": {\"status\": 200, \"body\": "
    "{\"inline_string\": \"ok\"}}},\n"
    "   {\"match\": {\"prefix\": \"/api/\"}, \"route\": {\"cluster\": \"api\", \"prefix_rewrite\": "
    "\"/\", \"host_rewrite_literal\": \"api.internal\", \"timeout\": \"2.5s\"},\n"
    "    \"request_headers_to_add\": [{\"header\": {\"key\": \"X-Route\", \"value\": \"api\"}}],\n"
    "    \"response_headers_to_remove\": [\"Server\"]},\n"
    "   {\"match\": {\"prefix\": \"/\"}, \"route\": {\"weighted_clusters\": {\"clusters\": [\n"
    "     {\"name\": \"v1\", \"weight\": 75}, {\"name\": \"v3\", \"weight\": 25}]}}}\n"
    "  ]},\n"
    " {\"name\": \"wild-suffix\", \"domains\": [\"*.example.com\"], \"routes\": [{\"match\": "
    "{\"prefix\": \"/\"}, \"route\": {\"cluster\": \"suffix\"}}]},\n"
    " {\"name\": \"wild-longer\", \"domains\": [\"*.api.example.com\"], \"routes\": [{\"match\": "
    "{\"prefix\": \"/\"}, \"route\": {\"cluster\": \"longer\"}}]},\n"
    " {\"name\": \"wild-prefix\", \"domains\": [\"shop.*\"], \"routes\": [{\"match\": {\"prefix\": "
    "\"/\"}, \"route\": {\"cluster\": \"prefix\"}}]},\n"
    " {\"name\": \"any\", \"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/only\"}, "
    "\"route\": {\"cluster\": \"any\"}}]}\n"
    "]}]}";

static px_snapshot_t *build(const char *json, px_bundle_t *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    if (px_bundle_load_json(b, json, strlen(json), err, errlen) < 0)
        return NULL;
    px_resources_t r;
    px_bundle_view(b, &r);
    return px_snapshot_build(&r, err, errlen);
}

struct route_case {
    const char *method, *host, *path;
    const char *hdr_name, *hdr_value;
    const char *want; /* cluster, "redirect", "direct", or NULL for no route */
};

static const struct route_case route_cases[] = {
    {"GET", "reviews", "/", "end-user", "jason", "v2"},
    {"GET", "reviews:80", "/exact", NULL, NULL, "exact"},
    {"GET", "reviews", "/exact/more", NULL, NULL, NULL /* falls to weighted */},
    {"GET", "reviews", "/exact?x=1", NULL, NULL, "exact"},
    {"GET", "reviews", "/items/123", NULL, NULL, "regex"},
    {"GET", "reviews", "/items/12a", NULL, NULL, NULL},
    {"GET", "reviews", "/q?a=2&debug=1", NULL, NULL, "query"},
    {"GET", "reviews", "/q?debug=0", NULL, NULL, NULL},
    {"POST", "reviews", "/m", NULL, NULL, "post"},
    {"GET", "reviews", "/m", NULL, NULL, NULL},
    {"GET", "reviews", "/CI/x", NULL, NULL, "ci"},
    {"GET", "reviews", "/nox", NULL, NULL, "nox"},
    {"GET", "reviews", "/nox", "x-block", "1", NULL},
    {"GET", "reviews", "/old/page", NULL, NULL, "redirect"},
    {"GET", "reviews", "/health", NULL, NULL, "direct"},
    {"GET", "reviews", "/api/v1", NULL, NULL, "api"},
    {"GET", "REVIEWS.default.svc.cluster.local", "/exact", NULL, NULL, "exact"},
    {"GET", "a.example.com", "/", NULL, NULL, "suffix"},
    {"GET", "x.api.example.com", "/", NULL, NULL, "longer"},
    {"GET", "example.com", "/only", NULL, NULL, "any"},
    {"GET", "shop.local", "/", NULL, NULL, "prefix"},
    {"GET", "other", "/only/x", NULL, NULL, "any"},
    {"GET", "other", "/", NULL, NULL, "<none>"},
    {"GET", "reviews:8080", "/only", NULL, NULL, "any"},
};

static void test_route_table(void **state)
{
    (void)state;
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(routes_json, &b, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(s);
    const px_route_config_t *rc = px_snapshot_route_config(s, "http.80");
    assert_non_null(rc);
    for (size_t i = 0; i < sizeof(route_cases) / sizeof(route_cases[0]); i++) {
        const struct route_case *c = &route_cases[i];
        px_h1_header_t h = {c->hdr_name, c->hdr_name ? strlen(c->hdr_name) : 0, c->hdr_value,
                            c->hdr_value ? strlen(c->hdr_value) : 0};
        px_route_req_t r = {c->host, strlen(c->host), c->method, strlen(c->method), c->path,
                            strlen(c->path), &h, c->hdr_name ? 1 : 0};
        const px_vhost_t *vh;
        const px_route_t *rt = px_route_match(rc, &r, &vh);
        const char *got = "<none>";
        if (rt && rt->action == PX_ACT_CLUSTER)
            got = rt->cluster;
        else if (rt && rt->action == PX_ACT_REDIRECT)
            got = "redirect";
        else if (rt && rt->action == PX_ACT_DIRECT)
            got = "direct";
        else if (rt && rt->action == PX_ACT_WEIGHTED)
            got = NULL;
        bool ok = c->want == NULL ? got == NULL : got != NULL && strcmp(got, c->want) == 0;
        if (!ok)
            fprintf(stderr, "case %zu (%s %s%s): got %s want %s\n", i, c->method, c->host, c->path,
                    got ? got : "(weighted)", c->want ? c->want : "(weighted)");
        assert_true(ok);
    }
    px_snapshot_unref(s);
    px_bundle_free(&b);
}

static void test_route_details(void **state)
{
    (void)state;
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(routes_json, &b, err, sizeof(err));
    assert_non_null(s);
    const px_route_config_t *rc = px_snapshot_route_config(s, "http.80");
    px_route_req_t r = {"reviews", 7, "GET", 3, "/api/x", 6, NULL, 0};
    const px_route_t *rt = px_route_match(rc, &r, NULL);
    assert_non_null(rt);
    assert_string_equal(rt->prefix_rewrite, "/");
    assert_string_equal(rt->host_rewrite, "api.internal");
    assert_int_equal(rt->timeout_ms, 2500);
    assert_int_equal(rt->req.nadd, 1);
    assert_string_equal(rt->req.add[0].name, "x-route");
    assert_string_equal(rt->req.add[0].value, "api");
    assert_int_equal(rt->resp.nremove, 1);
    assert_string_equal(rt->resp.remove[0], "server");

    r.path = "/old/x";
    r.path_len = 6;
    rt = px_route_match(rc, &r, NULL);
    assert_int_equal(rt->action, PX_ACT_REDIRECT);
    assert_int_equal(rt->redirect_code, 302);
    assert_string_equal(rt->redirect_path, "/new");

    r.path = "/health";
    r.path_len = 7;
    rt = px_route_match(rc, &r, NULL);
    assert_int_equal(rt->direct_status, 200);
    assert_int_equal(rt->direct_body_len, 2);

    /* weighted split 75/25 over every residue */
    r.path = "/";
    r.path_len = 1;
    rt = px_route_match(rc, &r, NULL);
    assert_int_equal(rt->action, PX_ACT_WEIGHTED);
    int v1 = 0, v3 = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        const char *c = px_route_pick_weighted(rt, i * 2654435761u);
        if (strcmp(c, "v1") == 0)
            v1++;
        else if (strcmp(c, "v3") == 0)
            v3++;
    }
    assert_int_equal(v1 + v3, 1000);
    assert_in_range(v1, 700, 800);
    px_snapshot_unref(s);
    px_bundle_free(&b);
}

static const char *const clusters_json =
    "{\"resources\": [\n"
    "{" T_CLUSTER ", \"name\": \"rr\", \"type\": \"STATIC\", \"connect_timeout\": \"0.25s\",\n"
    " \"load_assignment\": {\"cluster_name\": \"rr\", \"endpoints\": [{\"lb_endpoints\": [\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
    "\"port_value\": 8001}}}},\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.2\", "
    "\"port_value\": 8002}}}, \"load_balancing_weight\": 3},\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.3\", "
    "\"port_value\": 8003}}}, \"health_status\": \"UNHEALTHY\"}]}]}},\n"
    "{" T_CLUSTER ", \"name\": \"outbound|9080||reviews.default.svc.cluster.local\", \"type\": "
    "\"EDS\", \"lb_policy\": \"LEAST_REQUEST\",\n"
    " \"eds_cluster_config\": {\"service_name\": "
    "\"outbound|9080||reviews.default.svc.cluster.local\"}},\n"
    "{" T_CLA ", \"cluster_name\": \"outbound|9080||reviews.default.svc.cluster.local\", "
    "\"endpoints\": [\n"
    "  {\"locality\": {\"zone\": \"a\"}, \"load_balancing_weight\": 1, \"lb_endpoints\": [\n"
    "   {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", "
    "\"port_value\": 9080}}}, \"health_status\": \"HEALTHY\"},\n"
    "   {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.2\", "
    "\"port_value\": 9080}}}, \"health_status\": \"HEALTHY\"}]},\n"
    "  {\"locality\": {\"zone\": \"b\"}, \"load_balancing_weight\": 2, \"lb_endpoints\": [\n"
    "   {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.1.1\", "
    "\"port_value\": 9080}}}}]}]},\n"
    "{" T_CLUSTER ", \"name\": \"hash\", \"lb_policy\": \"RING_HASH\", \"load_assignment\": "
    "{\"endpoints\": [{\"lb_endpoints\": [\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
    "\"port_value\": 1}}}},\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
    "\"port_value\": 2}}}},\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
    "\"port_value\": 3}}}}]}]}},\n"
    "{" T_CLUSTER ", \"name\": \"random\", \"lb_policy\": \"RANDOM\", \"load_assignment\": "
    "{\"endpoints\": [{\"lb_endpoints\": [\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"::1\", "
    "\"port_value\": 1}}}},\n"
    "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"::1\", "
    "\"port_value\": 2}}}}]}]}},\n"
    "{" T_CLUSTER ", \"name\": \"empty\", \"type\": \"EDS\"},\n"
    "{" T_LISTENER ", \"name\": \"0.0.0.0_80\", \"address\": {\"socket_address\": {\"address\": "
    "\"0.0.0.0\", \"port_value\": 80}},\n"
    " \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.http_connection_manager\", "
    "\"typed_config\": {" T_HCM ", \"stat_prefix\": \"outbound_0.0.0.0_80\", \"rds\": "
    "{\"route_config_name\": \"80\"}}}]}]},\n"
    "{" T_LISTENER ", \"name\": \"tcp\", \"address\": {\"socket_address\": {\"address\": "
    "\"127.0.0.1\", \"port_value\": 3306}},\n"
    " \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\", "
    "\"typed_config\": {" T_TCP ", \"stat_prefix\": \"mysql\", \"cluster\": \"rr\"}}]}]},\n"
    "{" T_ROUTE ", \"name\": \"80\", \"virtual_hosts\": [{\"name\": \"all\", \"domains\": [\"*\"], "
    "\"routes\": [{\"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"rr\"}}]}]}\n"
    "]}";

static void test_clusters_and_listeners(void **state)
{
    (void)state;
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(clusters_json, &b, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(s);

    const px_cluster_t *rr = px_snapshot_cluster(s, "rr");
    assert_non_null(rr);
    assert_int_equal(rr->nendpoints, 2); /* the unhealthy one is left out */
    assert_int_equal(rr->connect_timeout_ms, 250);
    assert_string_equal(rr->endpoints[1].address, "127.0.0.2:8002");
    assert_int_equal(rr->total_weight, 4);

    const px_cluster_t *eds = px_snapshot_cluster(s, "outbound|9080||reviews.default.svc.cluster.local");
    assert_non_null(eds);
    assert_true(eds->eds);
    assert_int_equal(eds->lb, PX_LB_LEAST_REQUEST);
    assert_int_equal(eds->nendpoints, 3);
    assert_int_equal(eds->endpoints[2].weight, 2); /* locality weight */

    const px_cluster_t *empty = px_snapshot_cluster(s, "empty");
    assert_int_equal(empty->nendpoints, 0);
    px_lb_t lb;
    px_lb_init(&lb, empty, 1);
    assert_int_equal(px_lb_pick(&lb, empty, 0), -1);
    px_lb_free(&lb);

    const px_cluster_t *rnd = px_snapshot_cluster(s, "random");
    assert_string_equal(rnd->endpoints[0].address, "[::1]:1");

    assert_int_equal(s->nlisteners, 2);
    assert_int_equal(s->listeners[0].nchains, 1);
    assert_int_equal(s->listeners[0].chains[0].kind, PX_LISTENER_HTTP);
    assert_string_equal(s->listeners[0].chains[0].rds_name, "80");
    assert_non_null(s->listeners[0].chains[0].route_config);
    assert_string_equal(s->listeners[0].chains[0].stat_prefix, "outbound_0.0.0.0_80");
    assert_true(s->listeners[0].bind);
    assert_int_equal(s->listeners[1].chains[0].kind, PX_LISTENER_TCP);
    assert_string_equal(s->listeners[1].chains[0].tcp_cluster, "rr");
    assert_int_equal(s->listeners[1].port, 3306);

    /* a reference keeps the snapshot alive past the builder's */
    px_snapshot_t *held = px_snapshot_ref(s);
    px_snapshot_unref(s);
    assert_string_equal(px_snapshot_cluster(held, "rr")->name, "rr");
    px_snapshot_unref(held);
    px_bundle_free(&b);
}

static void test_load_balancer_distribution(void **state)
{
    (void)state;
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(clusters_json, &b, err, sizeof(err));
    assert_non_null(s);

    /* round robin honours weights exactly: 1:3 */
    const px_cluster_t *rr = px_snapshot_cluster(s, "rr");
    px_lb_t lb;
    px_lb_init(&lb, rr, 7);
    int count[3] = {0};
    for (int i = 0; i < 400; i++)
        count[px_lb_pick(&lb, rr, 0)]++;
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 300);
    px_lb_free(&lb);

    /* random: both endpoints, roughly even */
    const px_cluster_t *rnd = px_snapshot_cluster(s, "random");
    px_lb_init(&lb, rnd, 42);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 10000; i++)
        count[px_lb_pick(&lb, rnd, 0)]++;
    assert_in_range(count[0], 4500, 5500);
    px_lb_free(&lb);

    /* least request: a loaded endpoint gets (much) less */
    const px_cluster_t *lr = px_snapshot_cluster(s, "outbound|9080||reviews.default.svc.cluster.local");
    px_lb_init(&lb, lr, 3);
    lb.active[2] = 100; /* the weight-2 endpoint is busy */
    int lcount[3] = {0};
    for (int i = 0; i < 10000; i++)
        lcount[px_lb_pick(&lb, lr, 0)]++;
    /* it is only chosen when both draws land on it: (2/4)^2 = 25% */
    assert_in_range(lcount[2], 2000, 3000);
    lb.active[2] = 0;
    memset(lcount, 0, sizeof(lcount));
    for (int i = 0; i < 10000; i++)
        lcount[px_lb_pick(&lb, lr, 0)]++;
    assert_in_range(lcount[2], 4000, 6000); /* weight 2 of 4 when idle */
    px_lb_free(&lb);

    /* ring hash: the same key always goes to the same endpoint; keys spread */
    const px_cluster_t *rh = px_snapshot_cluster(s, "hash");
    assert_int_equal(rh->nlevels, 1);
    assert_true(rh->levels[0].nring >= 3);
    px_lb_init(&lb, rh, 1);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 3000; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "user-%d", i);
        long e = px_lb_pick(&lb, rh, px_hash64(key, (size_t)n));
        assert_int_equal(e, px_lb_pick(&lb, rh, px_hash64(key, (size_t)n)));
        count[e]++;
    }
    for (int i = 0; i < 3; i++)
        assert_in_range(count[i], 600, 1400);
    px_lb_free(&lb);
    px_snapshot_unref(s);
    px_bundle_free(&b);
}

/* Three priorities as meshd writes them for locality failover: 0 (two
 * endpoints), 1 (one), 2 (one). */
static const char *const priorities_json =
    "{\"resources\": [\n"
    "{" T_CLUSTER ", \"name\": \"fo\", \"lb_policy\": \"ROUND_ROBIN\",\n"
    " \"common_lb_config\": {\"healthy_panic_threshold\": {\"value\": 0}}, \"load_assignment\": {\"endpoints\": [\n"
    "  {\"priority\": 2, \"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
    "{\"address\": \"10.2.0.1\", \"port_value\": 80}}}}]},\n"
    "  {\"priority\": 0, \"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
    "{\"address\": \"10.0.0.1\", \"port_value\": 80}}}},\n"
    "   {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.2\", \"port_value\": 80}}}}]},\n"
    "  {\"priority\": 1, \"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
    "{\"address\": \"10.1.0.1\", \"port_value\": 80}}}}]}]}}\n"
    "]}";

static bool down[8];
static bool avail_cb(void *arg, const px_cluster_t *c, size_t ei)
{
    (void)arg;
    (void)c;
    return !down[ei];
}

static void failover_counts(const px_cluster_t *c, px_lb_t *lb, int *count)
{
    memset(count, 0, 4 * sizeof(int));
    for (int i = 0; i < 10000; i++) {
        long e = px_lb_pick_avail(lb, c, 0, avail_cb, NULL, -1);
        assert_true(e >= 0 && e < 4);
        count[e]++;
    }
}

static void test_priority_failover(void **state)
{
    (void)state;
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(priorities_json, &b, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(s);
    const px_cluster_t *c = px_snapshot_cluster(s, "fo");
    /* endpoints in priority order, one level per priority */
    assert_int_equal(c->nendpoints, 4);
    assert_int_equal(c->nlevels, 3);
    assert_string_equal(c->endpoints[0].address, "10.0.0.1:80");
    assert_string_equal(c->endpoints[2].address, "10.1.0.1:80");
    assert_string_equal(c->endpoints[3].address, "10.2.0.1:80");
    px_lb_t lb;
    px_lb_init(&lb, c, 5);
    int n[4];
    /* all healthy: priority 0 takes everything */
    memset(down, 0, sizeof(down));
    failover_counts(c, &lb, n);
    assert_int_equal(n[0] + n[1], 10000);
    assert_in_range(n[0], 4900, 5100);
    /* one of two down: 50 % x 1.4 = 70 % stays, 30 % spills to priority 1,
     * and none goes to the ejected endpoint */
    down[0] = true;
    failover_counts(c, &lb, n);
    assert_int_equal(n[0], 0);
    assert_in_range(n[1], 6700, 7300);
    assert_in_range(n[2], 2700, 3300);
    assert_int_equal(n[3], 0);
    /* priority 0 gone: priority 1 (healthy) takes all */
    down[1] = true;
    failover_counts(c, &lb, n);
    assert_int_equal(n[2], 10000);
    /* 0 and 1 gone: priority 2 */
    down[2] = true;
    failover_counts(c, &lb, n);
    assert_int_equal(n[3], 10000);
    /* nothing available: panic, priority 0 as if healthy */
    down[3] = true;
    failover_counts(c, &lb, n);
    assert_int_equal(n[0] + n[1], 10000);
    /* with Envoy's default panic threshold (50 %), one available endpoint of
     * four is panic: priority 0 as if healthy */
    ((px_cluster_t *)c)->panic_pct = 50;
    memset(down, 0, sizeof(down));
    down[0] = down[1] = down[2] = true;
    failover_counts(c, &lb, n);
    assert_int_equal(n[0] + n[1], 10000);
    down[2] = false; /* two of four: not yet */
    failover_counts(c, &lb, n);
    assert_int_equal(n[2], 10000);
    /* a retry avoiding one host gets the other of priority 0, and the
     * priorities' load stays as it is */
    memset(down, 0, sizeof(down));
    for (int i = 0; i < 100; i++)
        assert_int_equal(px_lb_pick_avail(&lb, c, 0, avail_cb, NULL, 0), 1);
    down[1] = true; /* the only other one is out: the avoided host stands */
    for (int i = 0; i < 100; i++) {
        long e = px_lb_pick_avail(&lb, c, 0, avail_cb, NULL, 0);
        assert_true(e == 0 || e == 2); /* 70 % priority 0 (itself), 30 % priority 1 */
    }
    memset(down, 0, sizeof(down));
    /* px_lb_pick alone stays within priority 0 */
    memset(down, 0, sizeof(down));
    for (int i = 0; i < 100; i++)
        assert_true(px_lb_pick(&lb, c, 0) < 2);
    px_lb_free(&lb);
    px_snapshot_unref(s);
    px_bundle_free(&b);
}

struct bad_config {
    const char *json;
    const char *want; /* substring of the error */
};

static const struct bad_config bad_configs[] = {
    {"{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
     "\"domains\": [\"*\"], \"routes\": [{\"match\": {\"safe_regex\": {\"regex\": \"(\"}}, "
     "\"route\": {\"cluster\": \"c\"}}]}]}]}",
     "RouteConfiguration r: virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex"},
    {"{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
     "\"domains\": [\"a\", \"b\"]}, {\"name\": \"w\", \"domains\": [\"b\"]}]}]}",
     "RouteConfiguration r: virtual_hosts[1].domains[0]: \"b\" is also a domain of virtual_hosts[0]"},
    {"{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
     "\"domains\": [\"a.*.b\"]}]}]}",
     "virtual_hosts[0].domains[0]: a wildcard may only be"},
    {"{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
     "\"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/\"}, \"route\": "
     "{\"weighted_clusters\": {\"clusters\": [{\"name\": \"a\", \"weight\": 0}]}}}]}]}]}",
     "routes[0].route.weighted_clusters: the sum of the weights"},
    {"{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
     "\"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/\"}}]}]}]}",
     "routes[0]: one of route, redirect or direct_response is required"},
    {"{\"resources\": [{" T_CLUSTER ", \"name\": \"c\", \"type\": \"STRICT_DNS\"}]}",
     "Cluster c: type: DNS clusters are not supported"},
    {"{\"resources\": [{" T_CLUSTER ", \"name\": \"c\", \"load_assignment\": {\"endpoints\": "
     "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "
     "\"not-an-ip\", \"port_value\": 1}}}}]}]}}]}",
     "Cluster c: endpoints[0].lb_endpoints[0]: \"not-an-ip\" port 1 is not an IP address"},
    {"{\"resources\": [{" T_CLUSTER ", \"name\": \"c\"}, {" T_CLUSTER ", \"name\": \"c\"}]}",
     "Cluster c: name: duplicate cluster name"},
    {"{\"resources\": [{" T_CLUSTER ", \"name\": \"c\", \"lb_policy\": \"NOPE\"}]}",
     "resources[0] (Cluster): lb_policy: unknown LbPolicy value \"NOPE\""},
    {"{\"resources\": [{" T_CLUSTER ", \"name\": \"c\", \"connect_timeout\": \"5\"}]}",
     "resources[0] (Cluster): connect_timeout: must be a duration"},
    {"{\"resources\": [{" T_CLUSTER ", \"nmae\": \"c\"}]}",
     "resources[0] (Cluster): nmae: unknown field of envoy.config.cluster.v3.Cluster"},
    {"{\"resources\": [{" T_LISTENER ", \"name\": \"l\", \"address\": {\"socket_address\": "
     "{\"address\": \"0.0.0.0\", \"port_value\": 80}}, \"filter_chains\": [{\"filters\": "
     "[{\"name\": \"x\", \"typed_config\": {" T_CLUSTER ", \"name\": \"z\"}}]}]}]}",
     "Listener l: filter_chains[0].filters[0]: unsupported network filter"},
    {"{\"resources\": [{" T_LISTENER ", \"name\": \"l\", \"address\": {\"socket_address\": "
     "{\"address\": \"0.0.0.0\", \"port_value\": 80}}, \"filter_chains\": [{\"filters\": "
     "[{\"name\": \"x\", \"typed_config\": {" T_HCM ", \"route_config\": {\"name\": \"in\", "
     "\"virtual_hosts\": [{\"name\": \"v\", \"domains\": []}]}}}]}]}]}",
     "Listener l: inline RouteConfiguration in: virtual_hosts[0].domains: must not be empty"},
    {"{\"resources\": [{\"@type\": \"type.googleapis.com/x.Y\"}]}",
     "resources[0]: unsupported resource type \"type.googleapis.com/x.Y\""},
    {"{\"resources\": [", "invalid JSON"},
};

static void test_bad_configs_are_refused_precisely(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
        px_bundle_t b;
        char err[512] = "";
        px_snapshot_t *s = build(bad_configs[i].json, &b, err, sizeof(err));
        if (s != NULL || strstr(err, bad_configs[i].want) == NULL)
            fprintf(stderr, "config %zu: got \"%s\"\n", i, err);
        assert_null(s);
        assert_non_null(strstr(err, bad_configs[i].want));
        px_bundle_free(&b);
    }
}

static void test_regex_match_limit(void **state)
{
    (void)state;
    /* catastrophic backtracking is cut off by the match limit, not run forever */
    const char *json =
        "{\"resources\": [{" T_ROUTE ", \"name\": \"r\", \"virtual_hosts\": [{\"name\": \"v\", "
        "\"domains\": [\"*\"], \"routes\": [{\"match\": {\"safe_regex\": {\"regex\": "
        "\"/(a+)+b\"}}, \"route\": {\"cluster\": \"c\"}}]}]}]}";
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(json, &b, err, sizeof(err));
    assert_non_null(s);
    char path[64];
    path[0] = '/';
    memset(path + 1, 'a', 40);
    path[41] = 'c';
    px_route_req_t r = {"h", 1, "GET", 3, path, 42, NULL, 0};
    assert_null(px_route_match(&s->route_configs[0], &r, NULL));
    px_snapshot_unref(s);
    px_bundle_free(&b);
}

static void test_yaml_bundle(void **state)
{
    (void)state;
    const char *yaml = "resources:\n"
                       "- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n"
                       "  name: web\n"
                       "  connectTimeout: 0.5s\n"
                       "  lbPolicy: RING_HASH\n"
                       "  loadAssignment:\n"
                       "    endpoints:\n"
                       "    - lbEndpoints:\n"
                       "      - endpoint: {address: {socketAddress: {address: 10.0.0.1, portValue: 80}}}\n"
                       "        loadBalancingWeight: 3\n";
    px_bundle_t b;
    char err[512];
    px_snapshot_t *s = build(yaml, &b, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(s);
    const px_cluster_t *c = px_snapshot_cluster(s, "web");
    assert_non_null(c);
    assert_int_equal(c->lb, PX_LB_RING_HASH);
    assert_int_equal(c->connect_timeout_ms, 500);
    assert_int_equal(c->endpoints[0].weight, 3);
    px_snapshot_unref(s);
    px_bundle_free(&b);
    /* YAML errors say where */
    s = build("resources:\n- [unclosed\n", &b, err, sizeof(err));
    assert_null(s);
    assert_non_null(strstr(err, "invalid YAML"));
    px_bundle_free(&b);
    /* an alias bomb (10^8 nodes once expanded) is refused, not expanded */
    char bomb[2048];
    int n = snprintf(bomb, sizeof(bomb), "x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 8; i++)
        n += snprintf(bomb + n, sizeof(bomb) - (size_t)n, "x%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
                      "*a%d, *a%d]\n", i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    snprintf(bomb + n, sizeof(bomb) - (size_t)n, "resources: *a7\n");
    s = build(bomb, &b, err, sizeof(err));
    assert_null(s);
    assert_non_null(strstr(err, "expands to more than"));
    px_bundle_free(&b);
}

/* An error inside an Any's body (here an unknown field of the connection
 * manager) is reported with its path, and what was decoded of that body is
 * freed (the sanitizer run of the suite checks for the leak). */
static void test_bad_any_body_reported_and_freed(void **state)
{
    (void)state;
    px_bundle_t b = {0};
    char err[512];
    const char *j =
        "{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\","
        " \"name\": \"l\", \"filterChains\": [{\"filters\": [{\"name\": \"h\", \"typedConfig\": {"
        "\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager\", \"statPrefix\": \"x\", \"bogusField\": 1}}]}]}]}";
    assert_int_equal(px_bundle_load_json(&b, j, strlen(j), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bogusField"));
    px_bundle_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_route_details),
        cmocka_unit_test(test_clusters_and_listeners),
        cmocka_unit_test(test_load_balancer_distribution),
        cmocka_unit_test(test_priority_failover),
        cmocka_unit_test(test_bad_configs_are_refused_precisely),
        cmocka_unit_test(test_regex_match_limit),
        cmocka_unit_test(test_yaml_bundle),
        cmocka_unit_test(test_bad_any_body_reported_and_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
