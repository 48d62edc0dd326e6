/*
 * networking.istio.io: what the typed model holds after decoding, and every
 * semantic rule of config/validate_networking.c, each with a document that
 * passes it and one that breaks it (the error must name the field path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"

/* ---- helpers ---- */

/* Loads one object of `kind` named `name` in namespace ns1 whose spec is
 * `spec` (YAML, indented by two spaces here). */
static void load_spec(const char *kind, const char *name, const char *spec, tu_result_t *r)
{
    size_t cap = strlen(spec) * 2 + 512;
    char *text = malloc(cap);
    assert_non_null(text);
    int n = snprintf(text, cap,
                     "apiVersion: networking.istio.io/v1\nkind: %s\nmetadata:\n  name: %s\n"
                     "  namespace: ns1\nspec:\n",
                     kind, name);
    size_t len = (size_t)n;
    const char *p = spec;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        len += (size_t)snprintf(text + len, cap - len, "  %.*s\n", (int)l, p);
        p += l + (nl ? 1 : 0);
    }
    tu_load(text, "net.yaml", r);
    free(text);
}

typedef struct nw_case {
    const char *what; /* what the case shows */
    const char *spec;
    const char *path; /* for rejections: the field path the error names, e.g. "spec.http[0]:" */
    const char *msg;  /* and a piece of the reason */
} nw_case_t;

/* Every case must load without errors. */
static void expect_all_load(const char *kind, const nw_case_t *cases)
{
    int bad = 0;
    for (const nw_case_t *c = cases; c->what; c++) {
        tu_result_t r;
        load_spec(kind, "x", c->spec, &r);
        if (r.nerrors != 0 || r.nobjs != 1) {
            fprintf(stderr, "%s: expected to load: %s\n", kind, c->what);
            tu_dump(&r);
            bad++;
        }
        tu_free(&r);
    }
    assert_int_equal(bad, 0);
}

/* Every case must be rejected with an error naming c->path and c->msg. */
static void expect_all_rejected(const char *kind, const nw_case_t *cases)
{
    int bad = 0;
    for (const nw_case_t *c = cases; c->what; c++) {
        tu_result_t r;
        load_spec(kind, "x", c->spec, &r);
        if (r.nfailed != 1 || r.nobjs != 0 || !tu_error_has(&r, c->path, c->msg, NULL)) {
            fprintf(stderr, "%s: expected rejection at \"%s\" with \"%s\": %s\n", kind, c->path,
                    c->msg, c->what);
            tu_dump(&r);
            bad++;
        }
        tu_free(&r);
    }
    assert_int_equal(bad, 0);
}

static bool warning_has(const tu_result_t *r, const char *a, const char *b)
{
    for (int i = 0; i < r->nwarnings; i++)
        if (strstr(r->warnings[i], a) && (b == NULL || strstr(r->warnings[i], b)))
            return true;
    return false;
}

/* ---- decoding into the typed model ---- */

static const char rich_vs[] = "apiVersion: networking.istio.io/v1beta1\n"
                              "kind: VirtualService\n"
                              "metadata:\n"
                              "  name: reviews\n"
                              "  namespace: bookinfo\n"
                              "spec:\n"
                              "  hosts: [reviews.bookinfo.svc.cluster.local, reviews]\n"
                              "  gateways: [mesh, istio-system/public]\n"
                              "  exportTo: [\".\"]\n"
                              "  http:\n"
                              "  - name: canary\n"
                              "    match:\n"
                              "    - uri:\n"
                              "        prefix: /api\n"
                              "      headers:\n"
                              "        end-user:\n"
                              "          exact: jason\n"
                              "      queryParams:\n"
                              "        v:\n"
                              "          regex: \"^[0-9]+$\"\n"
                              "      ignoreUriCase: true\n"
                              "      port: 9080\n"
                              "    route:\n"
                              "    - destination:\n"
                              "        host: reviews\n"
                              "        subset: v1\n"
                              "      weight: 80\n"
                              "    - destination:\n"
                              "        host: reviews\n"
                              "        subset: v2\n"
                              "        port:\n"
                              "          number: 9080\n"
                              "      weight: 20\n"
                              "      headers:\n"
                              "        response:\n"
                              "          set:\n"
                              "            x-canary: \"true\"\n"
                              "    timeout: 1.5s\n"
                              "    retries:\n"
                              "      attempts: 3\n"
                              "      perTryTimeout: 250ms\n"
                              "      retryOn: 5xx,gateway-error,503\n"
                              "    fault:\n"
                              "      delay:\n"
                              "        percentage:\n"
                              "          value: 0.1\n"
                              "        fixedDelay: 5s\n"
                              "      abort:\n"
                              "        httpStatus: 503\n"
                              "        percentage:\n"
                              "          value: 50\n"
                              "    mirror:\n"
                              "      host: reviews-shadow\n"
                              "    mirrorPercentage:\n"
                              "      value: 12.5\n"
                              "    corsPolicy:\n"
                              "      allowOrigins:\n"
                              "      - exact: https://example.com\n"
                              "      allowMethods: [GET, POST]\n"
                              "      maxAge: 24h\n"
                              "      allowCredentials: true\n"
                              "    headers:\n"
                              "      request:\n"
                              "        add:\n"
                              "          x-trace: enabled\n"
                              "        remove: [x-debug]\n"
                              "  - route:\n"
                              "    - destination:\n"
                              "        host: reviews\n"
                              "        subset: v1\n";

static void test_virtualservice_decodes_typed_values(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(rich_vs, "reviews.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_object_t *o = tu_obj(&r, CFG_VirtualService);
    assert_non_null(o);
    assert_string_equal(o->namespace, "bookinfo");
    const cfg_VirtualService *vs = CFG_BODY(o, VirtualService)->spec;
    assert_non_null(vs);
    assert_int_equal(vs->hosts.n, 2);
    assert_string_equal(vs->gateways.v[1], "istio-system/public");
    assert_int_equal(vs->http.n, 2);

    const cfg_HTTPRoute *h = &vs->http.v[0];
    assert_string_equal(h->name, "canary");
    assert_int_equal(h->match.n, 1);
    const cfg_HTTPMatchRequest *m = &h->match.v[0];
    assert_string_equal(m->uri->prefix, "/api");
    assert_null(m->uri->exact);
    assert_true(CFG_HAS(m->uri, StringMatch, prefix));
    assert_false(CFG_HAS(m->uri, StringMatch, exact));
    assert_int_equal(m->headers.n, 1);
    assert_string_equal(m->headers.v[0].key, "end-user");
    assert_string_equal(((const cfg_StringMatch *)m->headers.v[0].msg)->exact, "jason");
    assert_string_equal(((const cfg_StringMatch *)m->queryParams.v[0].msg)->regex, "^[0-9]+$");
    assert_true(m->ignoreUriCase);
    assert_int_equal(m->port, 9080);

    assert_int_equal(h->route.n, 2);
    assert_int_equal(h->route.v[0].weight, 80);
    assert_int_equal(h->route.v[1].weight, 20);
    assert_string_equal(h->route.v[1].destination->host, "reviews");
    assert_string_equal(h->route.v[1].destination->subset, "v2");
    assert_int_equal(h->route.v[1].destination->port->number, 9080);
    assert_null(h->route.v[0].destination->port);
    assert_string_equal(h->route.v[1].headers->response->set.v[0].key, "x-canary");
    assert_string_equal(h->route.v[1].headers->response->set.v[0].str, "true");

    assert_true(CFG_HAS(h, HTTPRoute, timeout));
    assert_int_equal(h->timeout, 1500 * CFG_NS_PER_MS);
    assert_int_equal(h->retries->attempts, 3);
    assert_int_equal(h->retries->perTryTimeout, 250 * CFG_NS_PER_MS);
    assert_string_equal(h->retries->retryOn, "5xx,gateway-error,503");
    assert_non_null(h->fault->delay->percentage);
    assert_true(h->fault->delay->percentage->value > 0.0999 &&
                h->fault->delay->percentage->value < 0.1001);
    assert_int_equal(h->fault->delay->fixedDelay, 5 * CFG_NS_PER_S);
    assert_int_equal(h->fault->abort->httpStatus, 503);
    assert_true(CFG_HAS(h->fault->abort, HTTPFaultInjectionAbort, httpStatus));
    assert_false(CFG_HAS(h->fault->abort, HTTPFaultInjectionAbort, grpcStatus));
    assert_string_equal(h->mirror->host, "reviews-shadow");
    assert_true(h->mirrorPercentage->value == 12.5);
    assert_false(CFG_HAS(h, HTTPRoute, mirrorPercent));
    assert_string_equal(h->corsPolicy->allowOrigins.v[0].exact, "https://example.com");
    assert_int_equal(h->corsPolicy->allowMethods.n, 2);
    assert_int_equal(h->corsPolicy->maxAge, 24 * 3600 * CFG_NS_PER_S);
    assert_true(h->corsPolicy->allowCredentials);
    assert_string_equal(h->headers->request->add.v[0].str, "enabled");
    assert_string_equal(h->headers->request->remove.v[0], "x-debug");

    /* the second rule: nothing set but its route */
    const cfg_HTTPRoute *h2 = &vs->http.v[1];
    assert_false(CFG_HAS(h2, HTTPRoute, timeout));
    assert_null(h2->retries);
    assert_int_equal(h2->match.n, 0);
    assert_int_equal(h2->route.v[0].weight, 0);
    tu_free(&r);
}

static void test_destinationrule_decodes_typed_values(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("DestinationRule", "reviews",
              "host: reviews.prod.svc.cluster.local\n"
              "trafficPolicy:\n"
              "  loadBalancer:\n"
              "    consistentHash:\n"
              "      httpCookie: {name: user, ttl: 0s}\n"
              "      ringHash: {minimumRingSize: 1024}\n"
              "  connectionPool:\n"
              "    tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, "
              "interval: 75s, probes: 9}}\n"
              "    http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, "
              "h2UpgradePolicy: UPGRADE}\n"
              "  outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, "
              "maxEjectionPercent: 50}\n"
              "  tls: {mode: ISTIO_MUTUAL, sni: reviews.example.com}\n"
              "  portLevelSettings:\n"
              "  - port: {number: 9080}\n"
              "    loadBalancer: {simple: LEAST_REQUEST}\n"
              "subsets:\n"
              "- name: v1\n"
              "  labels: {version: v1}\n"
              "- name: v2\n"
              "  labels: {version: v2}\n"
              "  trafficPolicy:\n"
              "    loadBalancer: {simple: ROUND_ROBIN}\n",
              &r);
    TU_EXPECT_OK(&r);
    const cfg_DestinationRule *dr =
        CFG_BODY(tu_obj(&r, CFG_DestinationRule), DestinationRule)->spec;
    const cfg_TrafficPolicy *tp = dr->trafficPolicy;
    assert_string_equal(dr->host, "reviews.prod.svc.cluster.local");
    assert_string_equal(tp->loadBalancer->consistentHash->httpCookie->name, "user");
    assert_true(
        CFG_HAS(tp->loadBalancer->consistentHash->httpCookie, ConsistentHashLBHTTPCookie, ttl));
    assert_int_equal(tp->loadBalancer->consistentHash->httpCookie->ttl, 0);
    assert_int_equal(tp->loadBalancer->consistentHash->ringHash->minimumRingSize, 1024);
    assert_false(CFG_HAS(tp->loadBalancer, LoadBalancerSettings, simple));
    assert_int_equal(tp->connectionPool->tcp->maxConnections, 100);
    assert_int_equal(tp->connectionPool->tcp->connectTimeout, 30 * CFG_NS_PER_MS);
    assert_int_equal(tp->connectionPool->tcp->tcpKeepalive->probes, 9);
    assert_int_equal(tp->connectionPool->http->h2UpgradePolicy, cfg_H2UpgradePolicy_UPGRADE);
    assert_int_equal(tp->outlierDetection->consecutive5xxErrors, 7);
    assert_int_equal(tp->outlierDetection->baseEjectionTime, 15 * 60 * CFG_NS_PER_S);
    assert_int_equal(tp->tls->mode, cfg_TLSmode_ISTIO_MUTUAL);
    assert_int_equal(tp->portLevelSettings.n, 1);
    assert_int_equal(tp->portLevelSettings.v[0].port->number, 9080);
    assert_int_equal(tp->portLevelSettings.v[0].loadBalancer->simple, cfg_LbSimple_LEAST_REQUEST);
    assert_int_equal(dr->subsets.n, 2);
    assert_string_equal(dr->subsets.v[1].labels.v[0].str, "v2");
    assert_int_equal(dr->subsets.v[1].trafficPolicy->loadBalancer->simple,
                     cfg_LbSimple_ROUND_ROBIN);
    tu_free(&r);
}

static void test_gateway_serviceentry_sidecar_decode(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("Gateway", "public",
              "selector: {istio: ingressgateway}\n"
              "servers:\n"
              "- port: {number: 443, name: https, protocol: HTTPS}\n"
              "  hosts: [\"bookinfo/*.example.com\"]\n"
              "  tls: {mode: MUTUAL, credentialName: bookinfo-cert, minProtocolVersion: TLSV1_2}\n",
              &r);
    TU_EXPECT_OK(&r);
    const cfg_Gateway *g = CFG_BODY(tu_obj(&r, CFG_Gateway), Gateway)->spec;
    assert_string_equal(g->selector.v[0].key, "istio");
    assert_int_equal(g->servers.v[0].port->number, 443);
    assert_int_equal(g->servers.v[0].tls->mode, cfg_ServerTLSmode_MUTUAL);
    assert_int_equal(g->servers.v[0].tls->minProtocolVersion, cfg_TLSProtocol_TLSV1_2);
    assert_string_equal(g->servers.v[0].tls->credentialName, "bookinfo-cert");
    tu_free(&r);

    load_spec("ServiceEntry", "db",
              "hosts: [db.example.com]\n"
              "addresses: [10.0.0.0/24]\n"
              "location: MESH_INTERNAL\n"
              "resolution: STATIC\n"
              "ports: [{number: 5432, name: tcp-pg, protocol: TCP, targetPort: 15432}]\n"
              "endpoints:\n"
              "- address: 10.0.0.5\n"
              "  ports: {tcp-pg: 6432}\n"
              "  labels: {app: pg}\n"
              "  weight: 3\n",
              &r);
    TU_EXPECT_OK(&r);
    const cfg_ServiceEntry *se = CFG_BODY(tu_obj(&r, CFG_ServiceEntry), ServiceEntry)->spec;
    assert_int_equal(se->resolution, cfg_ServiceEntryResolution_STATIC);
    assert_int_equal(se->location, cfg_ServiceEntryLocation_MESH_INTERNAL);
    assert_int_equal(se->ports.v[0].targetPort, 15432);
    assert_int_equal(se->endpoints.v[0].ports.v[0].u32, 6432);
    assert_int_equal(se->endpoints.v[0].weight, 3);
    tu_free(&r);

    load_spec("Sidecar", "default",
              "egress:\n"
              "- hosts: [\"./*\", \"istio-system/*\"]\n"
              "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
              &r);
    TU_EXPECT_OK(&r);
    const cfg_Sidecar *sc = CFG_BODY(tu_obj(&r, CFG_Sidecar), Sidecar)->spec;
    assert_int_equal(sc->egress.v[0].hosts.n, 2);
    assert_null(sc->egress.v[0].port);
    assert_true(CFG_HAS(sc->outboundTrafficPolicy, OutboundTrafficPolicy, mode));
    assert_int_equal(sc->outboundTrafficPolicy->mode, cfg_OutboundTrafficPolicyMode_REGISTRY_ONLY);
    tu_free(&r);
}

/* Objects written without a spec (as some tutorials do) load, with a warning. */
static void test_missing_spec_warns(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata:\n  name: gw\n",
            "gw.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    assert_true(warning_has(&r, "Gateway default/gw", "has no spec"));
    tu_free(&r);

    tu_load("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\n",
            "se.yaml", &r);
    assert_int_equal(r.nfailed, 1);
    assert_true(
        tu_error_has(&r, "ServiceEntry default/se", "spec: required field is missing", NULL));
    tu_free(&r);
}

/* ---- VirtualService rules ---- */

static const nw_case_t vs_valid[] = {
    {"route to a short name",
     "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}"},
    {"wildcard host bound to a gateway", "hosts: [\"*\"]\ngateways: [public]\nhttp:\n- route:\n  - "
                                         "destination: {host: web.ns1.svc.cluster.local}"},
    {"IP address host", "hosts: [10.1.2.3]\ntcp:\n- route:\n  - destination: {host: db}"},
    {"redirect without route", "hosts: [a.example.com]\nhttp:\n- match: [{uri: {exact: /old}}]\n  "
                               "redirect: {uri: /new, redirectCode: 308}\n"
                               "- route: [{destination: {host: a}}]"},
    {"direct response",
     "hosts: [a]\nhttp:\n- directResponse: {status: 503, body: {string: \"unavailable\"}}"},
    {"empty uri prefix, regex uri",
     "hosts: [a]\nhttp:\n- match: [{uri: {prefix: \"\"}}, {uri: {regex: \"/v[0-9]+/.*\"}}]\n  "
     "route: [{destination: {host: a}}]"},
    {"withoutHeaders regex * means present",
     "hosts: [a]\nhttp:\n- match: [{withoutHeaders: {x-user: {regex: \"*\"}}}]\n  route: "
     "[{destination: {host: a}}]"},
    {"JWT claim routing on a gateway",
     "hosts: [a.example.com]\ngateways: [public]\nhttp:\n- match: [{headers: "
     "{\"@request.auth.claims.group\": {exact: admin}}}]\n"
     "  route: [{destination: {host: a}}]"},
    {"retries with status codes and grpc conditions",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: 2, retryOn: "
     "\"503,reset,cancelled,retriable-4xx\"}"},
    {"retries disabled",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: 0}"},
    {"grpc abort with full percentage",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {abort: {grpcStatus: "
     "UNAVAILABLE, percentage: {value: 100}}}"},
    {"request header sets the authority",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  headers: {request: {set: {host: "
     "b.example.com, x-a: \"%HOSTNAME%\", x-b: \"100%%\"}}}"},
    {"weights that do not add up to 100",
     "hosts: [a]\nhttp:\n- route:\n  - {destination: {host: a, subset: v1}, weight: 1}\n  - "
     "{destination: {host: a, subset: v2}, weight: 3}"},
    {"tls route with SNI under a wildcard host",
     "hosts: [\"*.example.com\"]\ngateways: [public]\ntls:\n- match: [{sniHosts: [a.example.com], "
     "port: 443}]\n  route: [{destination: {host: a}}]"},
    {"tcp route with subnets", "hosts: [db]\ntcp:\n- match: [{destinationSubnets: [10.0.0.0/8, "
                               "10.1.1.1], port: 5432, sourceSubnet: 192.168.0.0/16}]\n"
                               "  route: [{destination: {host: db}}]"},
    {"delegate root and delegate rules", "hosts: [a.example.com]\nhttp:\n- match: [{uri: {prefix: "
                                         "/b}}]\n  delegate: {name: b-routes, namespace: team-b}"},
    {"delegate virtual service (no hosts)", "http:\n- route: [{destination: {host: b}}]"},
    {"exportTo own namespace and another",
     "hosts: [a]\nexportTo: [\".\", other]\nhttp:\n- route: [{destination: {host: a}}]"},
    {"cors with wildcard headers",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy: {allowOrigins: "
     "[{regex: \"https://.*\\\\.example\\\\.com\"}], allowHeaders: [\"*\"], maxAge: 10s}"},
    {"mirrors with percentages", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  "
                                 "mirrors: [{destination: {host: b}, percentage: {value: 5}}]"},
    {NULL, NULL, NULL, NULL},
};

static const nw_case_t vs_invalid[] = {
    {"match without route", "hosts: [a]\nhttp:\n- match: [{uri: {prefix: /}}]",
     "spec.http[0]:", "match but no route, redirect or directResponse"},
    {"route and redirect",
     "hosts: [a]\nhttp:\n- redirect: {uri: /x}\n  route: [{destination: {host: a}}]",
     "spec.http[0]:", "both route and redirect"},
    {"rewrite and redirect", "hosts: [a]\nhttp:\n- redirect: {uri: /x}\n  rewrite: {uri: /y}",
     "spec.http[0]:", "both rewrite and redirect"},
    {"fault and direct response",
     "hosts: [a]\nhttp:\n- directResponse: {status: 200}\n  fault: {abort: {httpStatus: 500}}",
     "spec.http[0]:", "both fault and directResponse"},
    {"mirror and mirrors",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirror: {host: b}\n  mirrors: "
     "[{destination: {host: c}}]",
     "spec.http[0]:", "both mirror and mirrors"},
    {"negative weight", "hosts: [a]\nhttp:\n- route:\n  - {destination: {host: a}, weight: -1}",
     "spec.http[0].route[0].weight:", "must be >= 0"},
    {"weights add up to 0",
     "hosts: [a]\nhttp:\n- route:\n  - {destination: {host: a, subset: v1}, weight: 0}\n  - "
     "{destination: {host: a, subset: v2}, weight: 0}",
     "spec.http[0].route:", "add up to 0"},
    {"timeout under 1ms", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  timeout: 0s",
     "spec.http[0].timeout:", "must be at least 1ms"},
    {"timeout not whole milliseconds",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  timeout: 1500us",
     "spec.http[0].timeout:", "whole milliseconds"},
    {"retry settings with 0 attempts",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {perTryTimeout: 2s}",
     "spec.http[0].retries.attempts:", "attempts is 0"},
    {"negative attempts",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: -1}",
     "spec.http[0].retries.attempts:", "must be >= 0"},
    {"unknown retryOn condition",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: 3, retryOn: "
     "\"5xx,sometimes\"}",
     "spec.http[0].retries.retryOn:", "\"sometimes\" is not a valid retry condition"},
    {"retryOn with an unregistered status",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: 3, retryOn: "
     "\"599\"}",
     "spec.http[0].retries.retryOn:", "\"599\""},
    {"per-try timeout under 1ms",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries: {attempts: 3, "
     "perTryTimeout: 100us}",
     "spec.http[0].retries.perTryTimeout:", "at least 1ms"},
    {"fault percentage over 100",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {delay: {fixedDelay: 1s, "
     "percentage: {value: 150}}}",
     "spec.http[0].fault.delay.percentage:", "between 0.0001 and 100"},
    {"fault percentage too small",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {abort: {httpStatus: 500, "
     "percentage: {value: 0.00001}}}",
     "spec.http[0].fault.abort.percentage:", "between 0.0001 and 100"},
    {"deprecated integer percent over 100",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {delay: {fixedDelay: 1s, "
     "percent: 101}}",
     "spec.http[0].fault.delay.percent:", "not between 0 and 100"},
    {"abort status out of range",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {abort: {httpStatus: 700}}",
     "spec.http[0].fault.abort.httpStatus:", "not in range 200-599"},
    {"unknown gRPC status",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {abort: {grpcStatus: "
     "BROKEN}}",
     "spec.http[0].fault.abort.grpcStatus:", "not a gRPC status"},
    {"http2Error abort",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {abort: {http2Error: x}}",
     "spec.http[0].fault.abort.http2Error:", "not supported"},
    {"fault without abort or delay",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {}",
     "spec.http[0].fault:", "needs an abort, a delay"},
    {"delay without duration",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {delay: {percentage: "
     "{value: 10}}}",
     "spec.http[0].fault.delay.fixedDelay:", "needs fixedDelay"},
    {"exponential delay",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault: {delay: {exponentialDelay: "
     "1s}}",
     "spec.http[0].fault.delay.exponentialDelay:", "not supported"},
    {"wildcard host on the mesh", "hosts: [\"*\"]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.hosts[0]:", "only allowed when the virtual service is bound to gateways"},
    {"wildcard host with the mesh gateway listed",
     "hosts: [\"*\"]\ngateways: [mesh, public]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.hosts[0]:", "bound to gateways"},
    {"invalid host", "hosts: [foo_bar]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.hosts[0]:", "\"foo_bar\" is not a valid host"},
    {"overlapping hosts",
     "hosts: [\"*.example.com\", a.example.com]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.hosts[1]:", "duplicate host"},
    {"no rules", "hosts: [a]", "spec:", "needs http, tcp or tls rules"},
    {"rule with a delegate also routes",
     "hosts: [a]\nhttp:\n- delegate: {name: b}\n  route: [{destination: {host: a}}]",
     "spec.http[0].route:", "must not also route"},
    {"delegate without a name", "hosts: [a]\nhttp:\n- delegate: {namespace: b}",
     "spec.http[0].delegate.name:", "required"},
    {"delegate virtual service delegates again", "http:\n- delegate: {name: c}",
     "spec.http[0].delegate:", "cannot delegate again"},
    {"delegate virtual service with gateways",
     "gateways: [public]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.gateways:", "must not list gateways"},
    {"delegate virtual service with tcp", "tcp:\n- route: [{destination: {host: a}}]",
     "spec.tcp:", "cannot have tcp rules"},
    {"invalid gateway reference",
     "hosts: [a]\ngateways: [\"ns1/Bad_Name\"]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.gateways[0]:", "invalid gateway name"},
    {"empty gateway namespace",
     "hosts: [a]\ngateways: [\"/gw\"]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.gateways[0]:", "must not be empty"},
    {"match gateway reference",
     "hosts: [a]\nhttp:\n- match: [{gateways: [\"a b\"]}]\n  route: [{destination: {host: a}}]",
     "spec.http[0].match[0].gateways[0]:", "invalid gateway name"},
    {"regex with lookahead",
     "hosts: [a]\nhttp:\n- match: [{uri: {regex: \"/(?=admin)\"}}]\n  route: [{destination: {host: "
     "a}}]",
     "spec.http[0].match[0].uri.regex:", "lookahead"},
    {"regex that does not compile",
     "hosts: [a]\nhttp:\n- match: [{headers: {x-a: {regex: \"([a-z\"}}}]\n  route: [{destination: "
     "{host: a}}]",
     "spec.http[0].match[0].headers[x-a].regex:", "invalid regular expression"},
    {"empty regex",
     "hosts: [a]\nhttp:\n- match: [{queryParams: {q: {regex: \"\"}}}]\n  route: [{destination: "
     "{host: a}}]",
     "spec.http[0].match[0].queryParams[q].regex:", "must not be empty"},
    {"empty method prefix",
     "hosts: [a]\nhttp:\n- match: [{method: {prefix: \"\"}}]\n  route: [{destination: {host: a}}]",
     "spec.http[0].match[0].method.prefix:", "must not be empty"},
    {"invalid header name",
     "hosts: [a]\nhttp:\n- match: [{headers: {\"x user\": {exact: a}}}]\n  route: [{destination: "
     "{host: a}}]",
     "spec.http[0].match[0].headers[x user]:", "not a valid header name"},
    {"JWT claim routing on the mesh",
     "hosts: [a]\nhttp:\n- match: [{headers: {\"@request.auth.claims.group\": {exact: admin}}}]\n  "
     "route: [{destination: {host: a}}]",
     "spec.http[0].match[0].headers[@request.auth.claims.group]:", "only supported on gateways"},
    {"match port out of range",
     "hosts: [a]\nhttp:\n- match: [{port: 70000}]\n  route: [{destination: {host: a}}]",
     "spec.http[0].match[0].port:", "port must be between 1-65535"},
    {"invalid source namespace",
     "hosts: [a]\nhttp:\n- match: [{sourceNamespace: Prod}]\n  route: [{destination: {host: a}}]",
     "spec.http[0].match[0].sourceNamespace:", "not a valid namespace"},
    {"invalid source label",
     "hosts: [a]\nhttp:\n- match: [{sourceLabels: {\"-app\": x}}]\n  route: [{destination: {host: "
     "a}}]",
     "spec.http[0].match[0].sourceLabels:", "invalid label key"},
    {"destination host *", "hosts: [a]\nhttp:\n- route: [{destination: {host: \"*\"}}]",
     "spec.http[0].route[0].destination.host:", "not a valid destination host"},
    {"empty destination host", "hosts: [a]\nhttp:\n- route: [{destination: {host: \"\"}}]",
     "spec.http[0].route[0].destination.host:", ""},
    {"invalid subset name", "hosts: [a]\nhttp:\n- route: [{destination: {host: a, subset: V_1}}]",
     "spec.http[0].route[0].destination.subset:", "not a valid subset name"},
    {"destination port 0", "hosts: [a]\nhttp:\n- route: [{destination: {host: a, port: {}}}]",
     "spec.http[0].route[0].destination.port.number:", "between 1-65535"},
    {"redirect code not 3xx", "hosts: [a]\nhttp:\n- redirect: {uri: /b, redirectCode: 200}",
     "spec.http[0].redirect.redirectCode:", "not a redirect code"},
    {"redirect scheme", "hosts: [a]\nhttp:\n- redirect: {scheme: ftp}",
     "spec.http[0].redirect.scheme:", "\"http\" or \"https\""},
    {"empty redirect", "hosts: [a]\nhttp:\n- redirect: {redirectCode: 301}",
     "spec.http[0].redirect:", "must set uri"},
    {"redirect port and derivePort",
     "hosts: [a]\nhttp:\n- redirect: {port: 8443, derivePort: FROM_REQUEST_PORT}",
     "spec.http[0].redirect:", "only one of"},
    {"direct response status", "hosts: [a]\nhttp:\n- directResponse: {status: 99}",
     "spec.http[0].directResponse.status:", "not in range 200-599"},
    {"rewrite with uri and regex",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  rewrite: {uri: /x, "
     "uriRegexRewrite: {match: a, rewrite: b}}",
     "spec.http[0].rewrite:", "only one of uri and uriRegexRewrite"},
    {"empty rewrite", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  rewrite: {}",
     "spec.http[0].rewrite:", "must set uri"},
    {"regex rewrite without replacement",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  rewrite: {uriRegexRewrite: {match: "
     "\"^/a\"}}",
     "spec.http[0].rewrite.uriRegexRewrite.rewrite:", "required"},
    {"authority rewritten twice",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  rewrite: {authority: b}\n  "
     "headers: {request: {set: {\":authority\": c}}}",
     "spec.http[0]:", "authority is rewritten more than once"},
    {"pseudo-header operation",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  headers: {request: {set: "
     "{\":path\": /x}}}",
     "spec.http[0].headers.request.set[:path]:", "cannot be changed"},
    {"response Host header",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  headers: {response: {add: {Host: "
     "x}}}",
     "spec.http[0].headers.response.add[Host]:", "cannot be set"},
    {"removing the Host header",
     "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a}\n    headers: {request: {remove: "
     "[host]}}",
     "spec.http[0].route[0].headers.request.remove[0]:", "cannot be removed"},
    {"stray percent in a header value",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  headers: {response: {set: {x-a: "
     "\"50%\"}}}",
     "spec.http[0].headers.response.set[x-a]:", "invalid '%'"},
    {"cors method",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy: {allowMethods: "
     "[FETCH]}",
     "spec.http[0].corsPolicy.allowMethods[0]:", "not a supported HTTP method"},
    {"cors max age not whole seconds",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy: {maxAge: 1500ms}",
     "spec.http[0].corsPolicy.maxAge:", "whole seconds"},
    {"cors empty origin",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy: {allowOrigins: "
     "[{exact: \"\"}]}",
     "spec.http[0].corsPolicy.allowOrigins[0]:", "non-empty"},
    {"mirrorPercentage over 100",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirror: {host: b}\n  "
     "mirrorPercentage: {value: 101}",
     "spec.http[0].mirrorPercentage.value:", "between 0 and 100"},
    {"legacy mirror_percent over 100",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirror: {host: b}\n  "
     "mirror_percent: 120",
     "spec.http[0].mirror_percent:", "at most 100"},
    {"mirror percentage in mirrors",
     "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirrors: [{destination: {host: b}, "
     "percentage: {value: -1}}]",
     "spec.http[0].mirrors[0].percentage:", "between 0.0001 and 100"},
    {"SNI outside the hosts",
     "hosts: [a.example.com]\ngateways: [public]\ntls:\n- match: [{sniHosts: [b.example.com]}]\n  "
     "route: [{destination: {host: a}}]",
     "spec.tls[0].match[0].sniHosts[0]:", "not within any of the virtual service's hosts"},
    {"tls rule without route",
     "hosts: [a.example.com]\ngateways: [public]\ntls:\n- match: [{sniHosts: [a.example.com]}]",
     "spec.tls[0].route:", "at least one route"},
    {"tls match without SNI",
     "hosts: [a.example.com]\ngateways: [public]\ntls:\n- match: [{sniHosts: []}]\n  route: "
     "[{destination: {host: a}}]",
     "spec.tls[0].match[0].sniHosts:", "at least one SNI host"},
    {"tcp subnet",
     "hosts: [db]\ntcp:\n- match: [{destinationSubnets: [10.0.0.0/40]}]\n  route: [{destination: "
     "{host: db}}]",
     "spec.tcp[0].match[0].destinationSubnets[0]:", "CIDR"},
    {"tcp rule without route", "hosts: [db]\ntcp:\n- match: [{port: 5432}]",
     "spec.tcp[0].route:", "at least one route"},
    {"duplicate exportTo",
     "hosts: [a]\nexportTo: [\".\", ns1]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.exportTo[1]:", "duplicate entry"},
    {"~ exportTo on a virtual service",
     "hosts: [a]\nexportTo: [\"~\"]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.exportTo[0]:", "only allowed on service entries"},
    {"* exportTo with others",
     "hosts: [a]\nexportTo: [\"*\", b]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.exportTo:", "cannot be combined"},
    {"exportTo not a namespace",
     "hosts: [a]\nexportTo: [\"Bad\"]\nhttp:\n- route: [{destination: {host: a}}]",
     "spec.exportTo[0]:", "namespace name"},
    {NULL, NULL, NULL, NULL},
};

static void test_virtualservice_rules_accept(void **state)
{
    (void)state;
    expect_all_load("VirtualService", vs_valid);
}

static void test_virtualservice_rules_reject(void **state)
{
    (void)state;
    expect_all_rejected("VirtualService", vs_invalid);
}

static void test_virtualservice_warnings(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("VirtualService", "w",
              "hosts: [a]\n"
              "http:\n"
              "- route: [{destination: {host: a}}]\n"
              "  mirror: {host: b}\n"
              "  mirrorPercent: 50\n"
              "- match: [{uri: {prefix: /x}}]\n"
              "  route: [{destination: {host: a}}]\n",
              &r);
    TU_EXPECT_OK(&r);
    assert_true(warning_has(&r, "spec.http[0].mirrorPercent:", "deprecated"));
    assert_true(warning_has(&r, "spec.http[0]:", "rules after it are never used"));
    tu_free(&r);

    load_spec(
        "VirtualService", "w",
        "hosts: [a]\ngateways: [public.istio-system]\nhttp:\n- route: [{destination: {host: a}}]\n",
        &r);
    TU_EXPECT_OK(&r);
    assert_true(warning_has(&r, "spec.gateways[0]:", "prefer \"istio-system/public\""));
    tu_free(&r);
}

/* ---- Gateway rules ---- */

static const nw_case_t gw_valid[] = {
    {"HTTP on any host",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]"},
    {"HTTP with an HTTPS redirect", "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  "
                                    "hosts: [a.example.com]\n  tls: {httpsRedirect: true}"},
    {"HTTPS from a credential", "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  "
                                "hosts: [\"ns1/*.example.com\"]\n"
                                "  tls: {mode: SIMPLE, credentialName: cert}"},
    {"HTTPS from files", "servers:\n- port: {number: 443, name: https, protocol: https}\n  hosts: "
                         "[\"./a.example.com\"]\n"
                         "  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, "
                         "caCertificates: /ca.pem}"},
    {"TLS passthrough", "servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: "
                        "[\"*/*.example.com\"]\n  tls: {mode: PASSTHROUGH}"},
    {"mesh-internal mTLS", "servers:\n- port: {number: 15443, name: tls, protocol: TLS}\n  hosts: "
                           "[\"*.local\"]\n  tls: {mode: ISTIO_MUTUAL}"},
    {"two certificates",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.example.com]\n"
     "  tls:\n    mode: SIMPLE\n    tlsCertificates:\n    - {serverCertificate: /rsa.pem, "
     "privateKey: /rsa.key}\n"
     "    - {serverCertificate: /ec.pem, privateKey: /ec.key}"},
    {"IP host and IP bind", "servers:\n- port: {number: 8080, name: http, protocol: HTTP}\n  bind: "
                            "10.0.0.1\n  hosts: [192.168.1.1]"},
    {"unix socket listener", "servers:\n- port: {number: 0, name: uds, protocol: HTTP}\n  bind: "
                             "unix:///var/run/gw.sock\n  hosts: [\"*\"]"},
    {NULL, NULL, NULL, NULL},
};

static const nw_case_t gw_invalid[] = {
    {"no servers", "selector: {istio: ingressgateway}", "spec.servers:", "at least one server"},
    {"no hosts", "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: []",
     "spec.servers[0].hosts:", "at least one host"},
    {"short host name",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [reviews]",
     "spec.servers[0].hosts[0]:", "short names are not allowed"},
    {"partial wildcard host",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*foo.example.com\"]",
     "spec.servers[0].hosts[0]:", "first label"},
    {"~ namespace on a gateway",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"~/a.example.com\"]",
     "spec.servers[0].hosts[0]:", "invalid namespace"},
    {"unknown protocol",
     "servers:\n- port: {number: 80, name: http, protocol: SMTP}\n  hosts: [\"*\"]",
     "spec.servers[0].port.protocol:", "unsupported protocol"},
    {"port 0 without unix bind",
     "servers:\n- port: {number: 0, name: http, protocol: HTTP}\n  hosts: [\"*\"]",
     "spec.servers[0].port.number:", "between 1-65535"},
    {"targetPort",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n  hosts: "
     "[\"*\"]",
     "spec.servers[0].port.targetPort:", "no effect on gateways"},
    {"empty port name",
     "servers:\n- port: {number: 80, name: \"\", protocol: HTTP}\n  hosts: [\"*\"]",
     "spec.servers[0].port.name:", "must be set"},
    {"duplicate port names",
     "servers:\n- port: {number: 80, name: web, protocol: HTTP}\n  hosts: [\"*\"]\n"
     "- port: {number: 8080, name: web, protocol: HTTP}\n  hosts: [\"*\"]",
     "spec.servers[1].port.name:", "must be unique"},
    {"HTTPS without TLS settings",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]",
     "spec.servers[0].tls:", "needs TLS settings"},
    {"SIMPLE without certificate",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: "
     "{mode: SIMPLE}",
     "spec.servers[0].tls.serverCertificate:", "requires a server certificate"},
    {"MUTUAL without client CA",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"
     "  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}",
     "spec.servers[0].tls.caCertificates:", "client CA bundle"},
    {"ISTIO_MUTUAL with a credential",
     "servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [\"*\"]\n  tls: {mode: "
     "ISTIO_MUTUAL, credentialName: c}",
     "spec.servers[0].tls.credentialName:", "ISTIO_MUTUAL"},
    {"CRL with SIMPLE",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"
     "  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}",
     "spec.servers[0].tls.caCrl:", "not SIMPLE"},
    {"credentialName and credentialNames",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"
     "  tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}",
     "spec.servers[0].tls:", "only one of \"credentialName\" and \"credentialNames\""},
    {"three credentials",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"
     "  tls: {mode: SIMPLE, credentialNames: [a, b, c]}",
     "spec.servers[0].tls.credentialNames:", "at most 2"},
    {"TLS versions reversed",
     "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"
     "  tls: {mode: SIMPLE, credentialName: a, minProtocolVersion: TLSV1_3, maxProtocolVersion: "
     "TLSV1_2}",
     "spec.servers[0].tls.minProtocolVersion:", "higher than maxProtocolVersion"},
    {"plain HTTP terminating TLS",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n  tls: {mode: "
     "SIMPLE, credentialName: a}",
     "spec.servers[0].tls:", "can only have tls.httpsRedirect"},
    {"TCP with TLS settings",
     "servers:\n- port: {number: 31400, name: tcp, protocol: TCP}\n  hosts: [\"*\"]\n  tls: "
     "{httpsRedirect: true}",
     "spec.servers[0].tls:", "cannot have TLS settings"},
    {"bind not an IP",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  bind: localhost\n  hosts: "
     "[\"*\"]",
     "spec.servers[0].bind:", "not an IP address"},
    {"unix bind with a port number",
     "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  bind: unix:///gw.sock\n  "
     "hosts: [\"*\"]",
     "spec.servers[0].port.number:", "must be 0"},
    {"relative unix bind",
     "servers:\n- port: {number: 0, name: http, protocol: HTTP}\n  bind: unix://gw.sock\n  hosts: "
     "[\"*\"]",
     "spec.servers[0].bind:", "absolute path"},
    {NULL, NULL, NULL, NULL},
};

static void test_gateway_rules_accept(void **state)
{
    (void)state;
    expect_all_load("Gateway", gw_valid);
}

static void test_gateway_rules_reject(void **state)
{
    (void)state;
    expect_all_rejected("Gateway", gw_invalid);
}

static void test_gateway_name_is_a_label(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("Gateway", "public.gw",
              "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]", &r);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "metadata.name:", "must be a DNS label", NULL));
    tu_free(&r);
}

/* ---- DestinationRule rules ---- */

static const nw_case_t dr_valid[] = {
    {"short host with subsets", "host: reviews\nsubsets:\n- {name: v1, labels: {version: v1}}\n- "
                                "{name: v2, labels: {version: v2}}"},
    {"wildcard host", "host: \"*.example.com\"\ntrafficPolicy: {tls: {mode: SIMPLE}}"},
    {"maglev with a prime table", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: "
                                  "{useSourceIp: true, maglev: {tableSize: 65537}}}}"},
    {"locality distribution",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n"
     "      - from: us-west/zone1/*\n        to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": "
     "20}\n"
     "  outlierDetection: {consecutive5xxErrors: 5}"},
    {"locality failover", "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: "
                          "{failover: [{from: us-east, to: eu-west}]}\n"
                          "  outlierDetection: {consecutive5xxErrors: 5, interval: 10s}"},
    {"client MUTUAL from files", "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: "
                                 "/c.pem, privateKey: /k.pem, caCertificates: /ca.pem}}"},
    {"client MUTUAL from a credential",
     "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cert}}"},
    {"port level settings", "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: "
                            "443}\n    tls: {mode: SIMPLE, sni: a.example.com}"},
    {"tunnel", "host: a\ntrafficPolicy: {tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, "
               "targetPort: 8443}}"},
    {"selector with own namespace export",
     "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [\".\"]\ntrafficPolicy: {tls: "
     "{mode: DISABLE}}"},
    {"local origin failures with split",
     "host: a\ntrafficPolicy: {outlierDetection: {splitExternalLocalOriginErrors: true, "
     "consecutiveLocalOriginFailures: 3}}"},
    {"retry budget",
     "host: a\ntrafficPolicy: {retryBudget: {percent: 20, minRetryConcurrency: 3}}"},
    {NULL, NULL, NULL, NULL},
};

static const nw_case_t dr_invalid[] = {
    {"invalid host", "host: \"a..b\"", "spec.host:", "not a valid host"},
    {"partial wildcard in the middle", "host: \"a.*.com\"", "spec.host:", "not a valid host"},
    {"duplicate subset", "host: a\nsubsets:\n- {name: v1}\n- {name: v1}",
     "spec.subsets[1].name:", "duplicate subset name"},
    {"subset name not a label", "host: a\nsubsets:\n- {name: V.1}",
     "spec.subsets[0].name:", "not a valid subset name"},
    {"subset label value", "host: a\nsubsets:\n- {name: v1, labels: {version: \"-v1\"}}",
     "spec.subsets[0].labels:", "invalid value"},
    {"empty traffic policy", "host: a\ntrafficPolicy: {}",
     "spec.trafficPolicy:", "at least one setting"},
    {"empty subset traffic policy", "host: a\nsubsets:\n- name: v1\n  trafficPolicy: {}",
     "spec.subsets[0].trafficPolicy:", "at least one setting"},
    {"tunnel and proxy protocol",
     "host: a\ntrafficPolicy: {tunnel: {targetHost: b.example.com, targetPort: 443}, "
     "proxyProtocol: {version: V2}}",
     "spec.trafficPolicy:", "tunnel and proxyProtocol"},
    {"tunnel protocol",
     "host: a\ntrafficPolicy: {tunnel: {protocol: PUT, targetHost: b, targetPort: 443}}",
     "spec.trafficPolicy.tunnel.protocol:", "CONNECT"},
    {"tunnel port", "host: a\ntrafficPolicy: {tunnel: {targetHost: b, targetPort: 0}}",
     "spec.trafficPolicy.tunnel.targetPort:", "between 1-65535"},
    {"empty connection pool", "host: a\ntrafficPolicy: {connectionPool: {}}",
     "spec.trafficPolicy.connectionPool:", "tcp or http"},
    {"negative max connections",
     "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
     "spec.trafficPolicy.connectionPool.tcp.maxConnections:", "must be >= 0"},
    {"connect timeout under 1ms",
     "host: a\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}",
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout:", "at least 1ms"},
    {"keepalive interval",
     "host: a\ntrafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 100us}}}}",
     "spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval:", "at least 1ms"},
    {"UPGRADE with client protocol",
     "host: a\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, "
     "useClientProtocol: true}}}",
     "spec.trafficPolicy.connectionPool.http.useClientProtocol:", "UPGRADE"},
    {"negative pending requests",
     "host: a\ntrafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -5}}}",
     "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests:", "must be >= 0"},
    {"max ejection percent",
     "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}",
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent:", "not between 0 and 100"},
    {"local origin failures without split",
     "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
     "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures:",
     "splitExternalLocalOriginErrors"},
    {"outlier error code",
     "host: a\ntrafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [503, 700]}}",
     "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]:",
     "not an HTTP status code"},
    {"ejection time under 1ms",
     "host: a\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 0s}}",
     "spec.trafficPolicy.outlierDetection.baseEjectionTime:", "at least 1ms"},
    {"simple and consistent hash",
     "host: a\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: "
     "true}}}",
     "spec.trafficPolicy.loadBalancer:", "only one of \"simple\" and \"consistentHash\""},
    {"two hash keys",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: "
     "x-user}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash:", "only one of"},
    {"maglev table not prime",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: "
     "{tableSize: 1000}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize:", "not a prime"},
    {"maglev table unset",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize:", "must be set"},
    {"deprecated ring size with ringHash",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: "
     "10, ringHash: {minimumRingSize: 10}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize:", "cannot be combined"},
    {"cookie without name",
     "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: \"\", ttl: "
     "10s}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name:", "required"},
    {"distribute weights",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: "
     "us-west/*, to: {\"us-west/*\": 60, \"us-east/*\": 30}}]",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to:", "add up to 100"},
    {"distribute weight out of range",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: "
     "us-west/*, to: {\"us-west/*\": 0, \"us-east/*\": 100}}]",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[us-west/*]:",
     "between 1 and 100"},
    {"distribute and failover",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: "
     "a/*, to: {\"a/*\": 100}}]\n"
     "      failover: [{from: a, to: b}]",
     "spec.trafficPolicy.loadBalancer.localityLbSetting:", "cannot both be set"},
    {"distribute and failoverPriority",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: "
     "a/*, to: {\"a/*\": 100}}]\n"
     "      failoverPriority: [version]",
     "spec.trafficPolicy.loadBalancer.localityLbSetting:", "distribute and failoverPriority"},
    {"failoverPriority entry without a label",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: {failoverPriority: [version, \"=v2\"]}",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority:", "entry 1 names no label"},
    {"failover to the same region",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: {failover: [{from: us-east, "
     "to: us-east}]}",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]:", "different region"},
    {"failover with a zone",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: {failover: [{from: "
     "us-east/a, to: us-west}]}",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]:", "regions only"},
    {"locality wildcard in the middle",
     "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: "
     "\"us/*/a\", to: {\"us/*\": 100}}]",
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from:", "at the end"},
    {"warmup duration under 1ms",
     "host: a\ntrafficPolicy: {loadBalancer: {warmup: {duration: 0s}}}",
     "spec.trafficPolicy.loadBalancer.warmup.duration:", "at least 1ms"},
    {"warmup minimum percent",
     "host: a\ntrafficPolicy: {loadBalancer: {warmup: {duration: 1m, minimumPercent: -1}}}",
     "spec.trafficPolicy.loadBalancer.warmup.minimumPercent:", "between 0 and 100"},
    {"zone aware min cluster size",
     "host: a\ntrafficPolicy: {loadBalancer: {zoneAwareLbSetting: {minClusterSize: 0}}}",
     "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.minClusterSize:", "must be >= 1"},
    {"client MUTUAL without certificate",
     "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, privateKey: /k.pem}}",
     "spec.trafficPolicy.tls.clientCertificate:", "required for MUTUAL"},
    {"credential with files",
     "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}",
     "spec.trafficPolicy.tls.credentialName:", "cannot be set with credentialName"},
    {"skip verify with a CA",
     "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: "
     "/ca.pem}}",
     "spec.trafficPolicy.tls.insecureSkipVerify:", "cannot be set when insecureSkipVerify"},
    {"both CA spellings",
     "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, caCertificates: /a.pem, caCertificate: /b.pem}}",
     "spec.trafficPolicy.tls.caCertificate:", "caCertificates only"},
    {"port policy without port",
     "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - tls: {mode: SIMPLE}",
     "spec.trafficPolicy.portLevelSettings[0].port:", "needs a port"},
    {"port policy with only a port",
     "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}",
     "spec.trafficPolicy.portLevelSettings[0]:", "needs loadBalancer"},
    {"retry budget percent", "host: a\ntrafficPolicy: {retryBudget: {percent: 120}}",
     "spec.trafficPolicy.retryBudget.percent:", "between 0 and 100"},
    {"selector exported elsewhere",
     "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [\"*\"]\ntrafficPolicy: {tls: "
     "{mode: DISABLE}}",
     "spec.exportTo:", "only be exported to its own namespace"},
    {"selector wildcard",
     "host: a\nworkloadSelector: {matchLabels: {app: \"a*\"}}\ntrafficPolicy: {tls: {mode: "
     "DISABLE}}",
     "spec.workloadSelector.matchLabels[app]:", "wildcard is not supported"},
    {NULL, NULL, NULL, NULL},
};

static void test_destinationrule_rules_accept(void **state)
{
    (void)state;
    expect_all_load("DestinationRule", dr_valid);
}

static void test_destinationrule_rules_reject(void **state)
{
    (void)state;
    expect_all_rejected("DestinationRule", dr_invalid);
}

/* caCertificate (singular) appears in published examples: read, with a warning. */
static void test_destinationrule_ca_certificate_alias(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("DestinationRule", "legacy",
              "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: "
              "/k.pem, caCertificate: /ca.pem}}",
              &r);
    TU_EXPECT_OK(&r);
    assert_true(warning_has(&r, "spec.trafficPolicy.tls.caCertificate:", "read as caCertificates"));
    const cfg_DestinationRule *dr =
        CFG_BODY(tu_obj(&r, CFG_DestinationRule), DestinationRule)->spec;
    assert_string_equal(dr->trafficPolicy->tls->caCertificate, "/ca.pem");
    tu_free(&r);

    /* with insecureSkipVerify the alias counts as a CA like the real field */
    load_spec("DestinationRule", "legacy",
              "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, "
              "caCertificate: /ca.pem}}",
              &r);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "spec.trafficPolicy.tls.insecureSkipVerify:", NULL));
    tu_free(&r);
}

/* ---- ServiceEntry rules ---- */

static const nw_case_t se_valid[] = {
    {"external HTTPS host", "hosts: [api.example.com]\nports: [{number: 443, name: https, "
                            "protocol: TLS}]\nresolution: DNS\nlocation: MESH_EXTERNAL"},
    {"wildcard host without resolution",
     "hosts: [\"*.example.com\"]\nports: [{number: 80, name: http, protocol: HTTP}]"},
    {"static endpoints with named ports",
     "hosts: [db.internal]\naddresses: [10.2.0.0/16]\nports: [{number: 5432, name: pg, protocol: "
     "TCP}]\nresolution: STATIC\n"
     "endpoints:\n- {address: 10.2.0.5, ports: {pg: 6432}}\n- {address: \"2001:db8::5\"}"},
    {"DNS endpoints by host name",
     "hosts: [api.example.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: "
     "[{address: lb.example.net}]"},
    {"unix socket endpoint",
     "hosts: [local.svc]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\n"
     "endpoints: [{address: \"unix:///var/run/app.sock\"}]"},
    {"endpoint on another network",
     "hosts: [a.remote]\nresolution: STATIC\nendpoints: [{network: net2}]"},
    {"several hosts on HTTP", "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports: "
                              "[{number: 80, name: http, protocol: HTTP}]"},
    {"exported to nobody", "hosts: [a.example.com]\nexportTo: [\"~\"]"},
    {"selector with STATIC resolution",
     "hosts: [vm.internal]\nresolution: STATIC\nworkloadSelector: {labels: {app: vm}}"},
    {NULL, NULL, NULL, NULL},
};

static const nw_case_t se_invalid[] = {
    {"empty host list", "hosts: []", "spec.hosts:", "at least one host"},
    {"invalid host", "hosts: [\"a b.com\"]", "spec.hosts[0]:", "not a valid host"},
    {"invalid address", "hosts: [a.com]\naddresses: [300.1.1.1]",
     "spec.addresses[0]:", "IP address or a CIDR"},
    {"invalid port name", "hosts: [a.com]\nports: [{number: 80, name: Web_1}]",
     "spec.ports[0].name:", "not a valid port name"},
    {"unknown protocol", "hosts: [a.com]\nports: [{number: 80, name: web, protocol: SPDY}]",
     "spec.ports[0].protocol:", "unsupported protocol"},
    {"STATIC endpoint by name",
     "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: b.example.com}]",
     "spec.endpoints[0].address:", "not an IP address"},
    {"DNS endpoint not a host", "hosts: [a.com]\nresolution: DNS\nendpoints: [{address: \"b_c\"}]",
     "spec.endpoints[0].address:", "not an IP address or host name"},
    {"endpoint port not declared",
     "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: "
     "1.1.1.1, ports: {grpc: 90}}]",
     "spec.endpoints[0].ports[grpc]:", "no port named \"grpc\""},
    {"endpoint port out of range",
     "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: "
     "1.1.1.1, ports: {http: 0}}]",
     "spec.endpoints[0].ports[http]:", "between 1-65535"},
    {"endpoint without address",
     "hosts: [a.com]\nresolution: STATIC\nendpoints: [{labels: {a: b}}]",
     "spec.endpoints[0].address:", "Address is required"},
    {"unix endpoint with ports",
     "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: "
     "\"unix:///a.sock\", ports: {http: 80}}]",
     "spec.endpoints[0].ports:", "may not include ports"},
    {"unix endpoint directory",
     "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: "
     "\"unix:///run/\"}]",
     "spec.endpoints[0].address:", "absolute path"},
    {"wildcard host with DNS and no endpoints", "hosts: [\"*.example.com\"]\nresolution: DNS",
     "spec.hosts[0]:", "fully qualified"},
    {"endpoints with DYNAMIC_DNS",
     "hosts: [\"*.example.com\"]\nresolution: DYNAMIC_DNS\nendpoints: [{address: 1.1.1.1}]",
     "spec.endpoints:", "cannot set endpoints"},
    {"several hosts on TCP",
     "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports: [{number: 9000, name: tcp, "
     "protocol: TCP}]",
     "spec.ports[0].protocol:", "several hosts need HTTP or TLS ports"},
    {"nobody and somebody", "hosts: [a.com]\nexportTo: [\"~\", \".\"]",
     "spec.exportTo:", "cannot be combined"},
    {"endpoint label",
     "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, labels: {\"a/b/c\": x}}]",
     "spec.endpoints[0].labels:", "invalid label key"},
    {NULL, NULL, NULL, NULL},
};

static void test_serviceentry_rules_accept(void **state)
{
    (void)state;
    expect_all_load("ServiceEntry", se_valid);
}

static void test_serviceentry_rules_reject(void **state)
{
    (void)state;
    expect_all_rejected("ServiceEntry", se_invalid);
}

/* ---- Sidecar rules ---- */

static const nw_case_t sc_valid[] = {
    {"namespace-local egress", "egress:\n- hosts: [\"./*\", \"istio-system/*\", \"~/*\"]"},
    {"ingress to a loopback endpoint",
     "workloadSelector: {labels: {app: web}}\ningress:\n- port: {number: 9080, protocol: HTTP, "
     "name: http}\n  defaultEndpoint: 127.0.0.1:8080"},
    {"ingress to a unix socket",
     "workloadSelector: {labels: {app: web}}\ningress:\n- port: {number: 9080, protocol: HTTP}\n  "
     "defaultEndpoint: unix:///var/run/app.sock"},
    {"ingress with TLS", "workloadSelector: {labels: {app: web}}\ningress:\n- port: {number: 8443, "
                         "protocol: HTTPS, name: https}\n  defaultEndpoint: \"[::1]:8443\"\n"
                         "  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"},
    {"egress on a port and a catch-all",
     "egress:\n- port: {number: 3306, protocol: MYSQL, name: mysql}\n  hosts: "
     "[\"*/mysql.example.com\"]\n- hosts: [\"*/*\"]"},
    {"egress on a unix socket",
     "egress:\n- port: {number: 0, protocol: HTTP}\n  bind: unix:///var/run/egress.sock\n  "
     "captureMode: NONE\n  hosts: [\"*/*\"]"},
    {"egress proxy with ALLOW_ANY", "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: "
                                    "{host: egress.example.com, port: {number: 3128}}"},
    {"inbound connection pool only",
     "inboundConnectionPool: {http: {http1MaxPendingRequests: 100}}"},
    {NULL, NULL, NULL, NULL},
};

static const nw_case_t sc_invalid[] = {
    {"empty configuration", "workloadSelector: {labels: {app: a}}", "spec:", "empty configuration"},
    {"egress host without namespace", "egress:\n- hosts: [foo.example.com]",
     "spec.egress[0].hosts[0]:", "namespace/host"},
    {"egress short host", "egress:\n- hosts: [\"ns1/reviews\"]",
     "spec.egress[0].hosts[0]:", "short names"},
    {"egress invalid namespace", "egress:\n- hosts: [\"Bad/*\"]",
     "spec.egress[0].hosts[0]:", "invalid namespace"},
    {"egress without hosts", "egress:\n- hosts: []", "spec.egress[0].hosts:", "at least one host"},
    {"catch-all not last",
     "egress:\n- hosts: [\"*/*\"]\n- port: {number: 80, protocol: HTTP}\n  hosts: [\"*/*\"]",
     "spec.egress[0].port:", "must be the last one"},
    {"duplicate egress ports",
     "egress:\n- port: {number: 80, protocol: HTTP}\n  hosts: [\"*/*\"]\n- port: {number: 80, "
     "protocol: HTTP}\n  hosts: [\"./*\"]",
     "spec.egress[1].port.number:", "must be unique"},
    {"egress port 0 without unix bind",
     "egress:\n- port: {number: 0, protocol: HTTP}\n  hosts: [\"*/*\"]",
     "spec.egress[0].bind:", "unix://"},
    {"unix egress with IPTABLES",
     "egress:\n- port: {number: 0, protocol: HTTP}\n  bind: unix:///e.sock\n  captureMode: "
     "IPTABLES\n  hosts: [\"*/*\"]",
     "spec.egress[0].captureMode:", "DEFAULT or NONE"},
    {"egress bind not an IP",
     "egress:\n- port: {number: 80, protocol: HTTP}\n  bind: localhost\n  hosts: [\"*/*\"]",
     "spec.egress[0].bind:", "not an IP address"},
    {"targetPort on a sidecar",
     "egress:\n- port: {number: 80, protocol: HTTP, targetPort: 8080}\n  hosts: [\"*/*\"]",
     "spec.egress[0].port.targetPort:", "no effect on sidecars"},
    {"ingress protocol", "ingress:\n- port: {number: 80, protocol: FTP}",
     "spec.ingress[0].port.protocol:", "unsupported protocol"},
    {"ingress port 0", "ingress:\n- port: {number: 0, protocol: HTTP}",
     "spec.ingress[0].port.number:", "between 1-65535"},
    {"duplicate ingress ports",
     "ingress:\n- port: {number: 80, protocol: HTTP}\n- port: {number: 80, protocol: TCP}",
     "spec.ingress[1].port.number:", "must be unique"},
    {"default endpoint on another host",
     "ingress:\n- port: {number: 80, protocol: HTTP}\n  defaultEndpoint: 10.0.0.1:8080",
     "spec.ingress[0].defaultEndpoint:", "127.0.0.1"},
    {"default endpoint port",
     "ingress:\n- port: {number: 80, protocol: HTTP}\n  defaultEndpoint: \"127.0.0.1:http\"",
     "spec.ingress[0].defaultEndpoint:", "not a number"},
    {"ingress TLS ISTIO_MUTUAL",
     "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {mode: ISTIO_MUTUAL}",
     "spec.ingress[0].tls.mode:", "cannot be used on sidecar ingress"},
    {"ingress TLS credential",
     "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {mode: SIMPLE, credentialName: c}",
     "spec.ingress[0].tls.credentialName:", "not supported"},
    {"ingress connection pool empty",
     "ingress:\n- port: {number: 80, protocol: HTTP}\n  connectionPool: {}",
     "spec.ingress[0].connectionPool:", "tcp or http"},
    {"inbound pool idle timeout", "inboundConnectionPool: {http: {idleTimeout: 0s}}",
     "spec.inboundConnectionPool.http.idleTimeout:", "at least 1ms"},
    {"egress proxy with REGISTRY_ONLY",
     "outboundTrafficPolicy:\n  egressProxy: {host: egress.example.com, port: {number: 3128}}",
     "spec.outboundTrafficPolicy.egressProxy:", "ALLOW_ANY"},
    {"egress proxy without port",
     "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: egress.example.com}",
     "spec.outboundTrafficPolicy.egressProxy.port:", "required"},
    {"selector wildcard", "workloadSelector: {labels: {app: \"*\"}}\negress:\n- hosts: [\"*/*\"]",
     "spec.workloadSelector.labels[app]:", "wildcard is not supported"},
    {NULL, NULL, NULL, NULL},
};

static void test_sidecar_rules_accept(void **state)
{
    (void)state;
    expect_all_load("Sidecar", sc_valid);
}

static void test_sidecar_rules_reject(void **state)
{
    (void)state;
    expect_all_rejected("Sidecar", sc_invalid);
}

static void test_sidecar_http_pool_on_tcp_port_warns(void **state)
{
    (void)state;
    tu_result_t r;
    load_spec("Sidecar", "w",
              "ingress:\n- port: {number: 5432, protocol: TCP}\n  connectionPool: {http: "
              "{maxRetries: 3}}",
              &r);
    TU_EXPECT_OK(&r);
    assert_true(
        warning_has(&r, "spec.ingress[0].connectionPool.http:", "only the tcp settings apply"));
    tu_free(&r);
}

/* Errors carry the line of the message that is wrong. */
static void test_errors_name_the_line(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1\n"
            "kind: VirtualService\n"
            "metadata: {name: a}\n"
            "spec:\n"
            "  hosts: [a]\n"
            "  http:\n"
            "  - route:\n"
            "    - destination: {host: a}\n"
            "    retries:\n"
            "      attempts: -2\n",
            "lines.yaml", &r);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "lines.yaml:10:", "spec.http[0].retries.attempts:", NULL));
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_virtualservice_decodes_typed_values),
        cmocka_unit_test(test_destinationrule_decodes_typed_values),
        cmocka_unit_test(test_gateway_serviceentry_sidecar_decode),
        cmocka_unit_test(test_missing_spec_warns),
        cmocka_unit_test(test_virtualservice_rules_accept),
        cmocka_unit_test(test_virtualservice_rules_reject),
        cmocka_unit_test(test_virtualservice_warnings),
        cmocka_unit_test(test_gateway_rules_accept),
        cmocka_unit_test(test_gateway_rules_reject),
        cmocka_unit_test(test_gateway_name_is_a_label),
        cmocka_unit_test(test_destinationrule_rules_accept),
        cmocka_unit_test(test_destinationrule_rules_reject),
        cmocka_unit_test(test_destinationrule_ca_certificate_alias),
        cmocka_unit_test(test_serviceentry_rules_accept),
        cmocka_unit_test(test_serviceentry_rules_reject),
        cmocka_unit_test(test_sidecar_rules_accept),
        cmocka_unit_test(test_sidecar_rules_reject),
        cmocka_unit_test(test_sidecar_http_pool_on_tcp_port_warns),
        cmocka_unit_test(test_errors_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
