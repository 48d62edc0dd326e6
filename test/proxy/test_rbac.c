/*
 * Tests of meshproxy's authorization engine (proxy/rbac.c): each matcher kind
 * of envoy.config.rbac.v3 judged against the attributes of a request or a
 * connection, the ALLOW / DENY / LOG semantics, compile errors that name the
 * policy and the field, and an end-to-end check: the blog-app
 * AuthorizationPolicies of the tutorial, translated by meshd for each
 * sidecar, compiled and enforced for callers of every workload identity.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../../proxy/rbac_internal.h"
#include "../../xds/xds.h"
#include "../testutil.h"
#include "../xdsworld.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"

/* ---- helpers ---- */

#if !defined(__SANITIZE_ADDRESS__)
/* Counts the allocations made while `counting` is set (the sanitizer builds
 * keep their own allocator: there the check is skipped). */
#define HAVE_ALLOC_COUNT 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
static volatile int counting;
static volatile long allocs;

void *malloc(size_t n)
{
    if (counting)
        allocs++;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (counting)
        allocs++;
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (counting)
        allocs++;
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}
#endif

#define MAX_CODES 256

typedef struct tctx {
    arena_t *a;
    pcre2_code *codes[MAX_CODES];
    size_t ncodes;
    char err[1024];
} tctx_t;

static tctx_t T;

static int keep(void *ud, pcre2_code *re)
{
    tctx_t *t = ud;
    if (t->ncodes == MAX_CODES)
        return -1;
    t->codes[t->ncodes++] = re;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof(T));
    T.a = arena_new(4096);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < T.ncodes; i++)
        pcre2_code_free(T.codes[i]);
    arena_free(T.a);
    memset(&T, 0, sizeof(T));
    return 0;
}

static ProtobufCMessage *rbac_msg(const char *json)
{
    json_object *j = json_tokener_parse(json);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s", json);
    char err[512];
    ProtobufCMessage *m =
        px_pb_from_json(&envoy__config__rbac__v3__rbac__descriptor, j, err, sizeof(err));
    json_object_put(j);
    if (m == NULL)
        fail_msg("test RBAC does not decode: %s", err);
    return m;
}

/* Compiles rules (and shadow rules) given as proto3 JSON; NULL with T.err. */
static px_rbac_t *try_compile2(const char *json, const char *shadow_json)
{
    ProtobufCMessage *m = json ? rbac_msg(json) : NULL;
    ProtobufCMessage *s = shadow_json ? rbac_msg(shadow_json) : NULL;
    px_rbac_t *r = px_rbac_compile(T.a, m, s, "test.", keep, &T, T.err, sizeof(T.err));
    /* the compiled form must not point into the messages */
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    if (s)
        protobuf_c_message_free_unpacked(s, NULL);
    return r;
}

static px_rbac_t *compile(const char *json)
{
    px_rbac_t *r = try_compile2(json, NULL);
    if (r == NULL)
        fail_msg("compile failed: %s", T.err);
    return r;
}

/* One policy "p" with the given permission and principal (JSON objects). */
static px_rbac_t *one(const char *action, const char *perm, const char *princ)
{
    char json[4096];
    snprintf(json, sizeof(json),
             "{\"action\": \"%s\", \"policies\": {\"p\": {\"permissions\": [%s], \"principals\": "
             "[%s]}}}",
             action, perm, princ);
    return compile(json);
}

#define ANY "{\"any\": true}"

/* A request or a connection. */
typedef struct req {
    struct sockaddr_storage peer, remote, local;
    px_h1_header_t hdrs[16];
    px_rbac_attrs_t a;
} req_t;

static void set_addr(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
}

static void req_init(req_t *r, const char *method, const char *target, const char *host)
{
    memset(r, 0, sizeof(*r));
    set_addr(&r->peer, "10.0.0.1", 40000);
    set_addr(&r->local, "10.0.0.2", 9080);
    r->a.peer = (struct sockaddr *)&r->peer;
    r->a.local = (struct sockaddr *)&r->local;
    r->a.http = true;
    r->a.method = method;
    r->a.method_len = method ? strlen(method) : 0;
    r->a.path = target;
    r->a.path_len = target ? strlen(target) : 0;
    r->a.host = host;
    r->a.host_len = host ? strlen(host) : 0;
    r->a.headers = r->hdrs;
}

static void req_tcp(req_t *r)
{
    req_init(r, NULL, NULL, NULL);
    r->a.http = false;
}

static void add_header(req_t *r, const char *name, const char *value)
{
    assert_true(r->a.nheaders < 16);
    px_h1_header_t *h = &r->hdrs[r->a.nheaders++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

static bool allows(const px_rbac_t *r, const req_t *q)
{
    px_rbac_result_t res;
    px_rbac_eval(r, &q->a, &res);
    return res.allowed;
}

/* Whether a one-policy ALLOW filter lets the request through, i.e. whether
 * the matcher under test matched. */
static bool perm_matches(const char *perm, const req_t *q)
{
    return allows(one("ALLOW", perm, ANY), q);
}

static bool princ_matches(const char *princ, const req_t *q)
{
    return allows(one("ALLOW", ANY, princ), q);
}

/* ---- action semantics ---- */

static void test_actions(void **state)
{
    (void)state;
    req_t get, post;
    req_init(&get, "GET", "/", "svc");
    req_init(&post, "POST", "/", "svc");
    const char *is_post =
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"POST\"}}}";
    px_rbac_result_t res;

    /* ALLOW: allowed only when a policy matches, and names it */
    px_rbac_t *allow = one("ALLOW", is_post, ANY);
    assert_int_equal(px_rbac_action(allow), PX_RBAC_ALLOW);
    assert_string_equal(px_rbac_stat_prefix(allow), "test.");
    px_rbac_eval(allow, &post.a, &res);
    assert_true(res.allowed);
    assert_string_equal(res.policy, "p");
    px_rbac_eval(allow, &get.a, &res);
    assert_false(res.allowed);
    assert_null(res.policy);

    /* DENY: denied when a policy matches */
    px_rbac_t *deny = one("DENY", is_post, ANY);
    assert_int_equal(px_rbac_action(deny), PX_RBAC_DENY);
    px_rbac_eval(deny, &post.a, &res);
    assert_false(res.allowed);
    assert_string_equal(res.policy, "p");
    px_rbac_eval(deny, &get.a, &res);
    assert_true(res.allowed);
    assert_null(res.policy);

    /* LOG (Istio's AUDIT): never denies, reports the match */
    px_rbac_t *log = one("LOG", is_post, ANY);
    assert_int_equal(px_rbac_action(log), PX_RBAC_LOG);
    px_rbac_eval(log, &post.a, &res);
    assert_true(res.allowed);
    assert_string_equal(res.policy, "p");
    px_rbac_eval(log, &get.a, &res);
    assert_true(res.allowed);
    assert_null(res.policy);

    /* no rules: the filter allows everything */
    px_rbac_t *none = try_compile2(NULL, NULL);
    assert_non_null(none);
    px_rbac_eval(none, &post.a, &res);
    assert_true(res.allowed);
    assert_true(res.shadow_allowed);

    /* an ALLOW without policies is Istio's allow-nothing; a DENY without
     * policies denies nothing */
    assert_false(allows(compile("{}"), &get));
    assert_true(allows(compile("{\"action\": \"DENY\"}"), &get));

    /* a policy needs a matching permission and a matching principal */
    px_rbac_t *both = one("ALLOW", is_post, "{\"authenticated\": {}}");
    assert_false(allows(both, &post));
    post.a.principal = "spiffe://cluster.local/ns/default/sa/x";
    assert_true(allows(both, &post));
    post.a.principal = NULL;

    /* several permissions / principals: any of them */
    px_rbac_t *anyof = compile("{\"policies\": {\"p\": {\"permissions\": [{\"destination_port\": "
                               "1}, {\"destination_port\": 9080}],"
                               " \"principals\": [{\"authenticated\": {}}, {\"direct_remote_ip\": "
                               "{\"address_prefix\": \"10.0.0.0\","
                               " \"prefix_len\": 8}}]}}}");
    assert_true(allows(anyof, &get));

    /* the first matching policy by name is the one reported */
    px_rbac_t *two =
        compile("{\"action\": \"DENY\", \"policies\": {"
                "\"zeta\": {\"permissions\": [" ANY "], \"principals\": [" ANY "]},"
                "\"alpha\": {\"permissions\": [" ANY "], \"principals\": [" ANY "]}}}");
    px_rbac_eval(two, &get.a, &res);
    assert_false(res.allowed);
    assert_string_equal(res.policy, "alpha");

    /* shadow rules are judged on their own and never decide */
    px_rbac_t *sh = try_compile2(
        "{\"action\": \"LOG\"}",
        "{\"action\": \"DENY\", \"policies\": {\"would-deny\": {\"permissions\": ["
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"POST\"}}}],"
        " \"principals\": [" ANY "]}}}");
    assert_non_null(sh);
    px_rbac_eval(sh, &post.a, &res);
    assert_true(res.allowed);
    assert_false(res.shadow_allowed);
    assert_string_equal(res.shadow_policy, "would-deny");
    px_rbac_eval(sh, &get.a, &res);
    assert_true(res.shadow_allowed);
    assert_null(res.shadow_policy);
}

/* ---- header matchers ---- */

static void test_header_matchers(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "GET", "/api/v1?x=1", "Reviews.Example.COM:9080");
    add_header(&q, "X-User", "Jason");
    add_header(&q, "x-num", "42");
    add_header(&q, "X-Multi", "a");
    add_header(&q, "x-multi", "b");

#define H(spec) "{\"header\": {\"name\": \"x-user\", " spec "}}"
    assert_true(perm_matches(H("\"string_match\": {\"exact\": \"Jason\"}"), &q));
    assert_false(perm_matches(H("\"string_match\": {\"exact\": \"jason\"}"), &q));
    assert_true(
        perm_matches(H("\"string_match\": {\"exact\": \"jason\", \"ignore_case\": true}"), &q));
    assert_true(perm_matches(H("\"string_match\": {\"prefix\": \"Ja\"}"), &q));
    assert_false(perm_matches(H("\"string_match\": {\"prefix\": \"ja\"}"), &q));
    assert_true(
        perm_matches(H("\"string_match\": {\"suffix\": \"SON\", \"ignore_case\": true}"), &q));
    assert_true(perm_matches(H("\"string_match\": {\"contains\": \"as\"}"), &q));
    assert_false(perm_matches(H("\"string_match\": {\"contains\": \"xx\"}"), &q));
    assert_true(
        perm_matches(H("\"string_match\": {\"safe_regex\": {\"regex\": \"J[a-z]+\"}}"), &q));
    /* safe_regex matches the whole value */
    assert_false(
        perm_matches(H("\"string_match\": {\"safe_regex\": {\"regex\": \"J[a-z]\"}}"), &q));
    /* the deprecated forms control planes still send */
    assert_true(perm_matches(H("\"exact_match\": \"Jason\""), &q));
    assert_true(perm_matches(H("\"prefix_match\": \"Jas\""), &q));
    assert_true(perm_matches(H("\"suffix_match\": \"son\""), &q));
    assert_true(perm_matches(H("\"contains_match\": \"aso\""), &q));
    assert_true(perm_matches(H("\"safe_regex_match\": {\"regex\": \".*so.*\"}"), &q));
    assert_true(perm_matches(H("\"present_match\": true"), &q));
    assert_false(perm_matches(H("\"present_match\": false"), &q));
    assert_true(
        perm_matches("{\"header\": {\"name\": \"x-user\"}}", &q)); /* no specifier: present */
    /* invert_match on a present header */
    assert_false(
        perm_matches(H("\"string_match\": {\"exact\": \"Jason\"}, \"invert_match\": true"), &q));
    assert_true(
        perm_matches(H("\"string_match\": {\"exact\": \"Bob\"}, \"invert_match\": true"), &q));
#undef H

    /* an absent header matches only a presence test (Envoy's rule), even inverted */
#define A(spec) "{\"header\": {\"name\": \"x-absent\", " spec "}}"
    assert_false(perm_matches(A("\"string_match\": {\"exact\": \"a\"}"), &q));
    assert_false(
        perm_matches(A("\"string_match\": {\"exact\": \"a\"}, \"invert_match\": true"), &q));
    assert_false(perm_matches(A("\"present_match\": true"), &q));
    assert_true(perm_matches(A("\"present_match\": false"), &q));
    assert_true(perm_matches(A("\"present_match\": true, \"invert_match\": true"), &q));
    /* treat_missing_header_as_empty: matched as "" */
    assert_true(perm_matches(
        A("\"string_match\": {\"exact\": \"\"}, \"treat_missing_header_as_empty\": true"), &q));
    assert_true(perm_matches(A("\"string_match\": {\"exact\": \"a\"}, \"invert_match\": true, "
                               "\"treat_missing_header_as_empty\": true"),
                             &q));
#undef A

    /* range_match: [start, end) of the value read as an integer */
    assert_true(perm_matches(
        "{\"header\": {\"name\": \"x-num\", \"range_match\": {\"start\": 40, \"end\": 43}}}", &q));
    assert_false(perm_matches(
        "{\"header\": {\"name\": \"x-num\", \"range_match\": {\"start\": 0, \"end\": 42}}}", &q));
    assert_false(perm_matches(
        "{\"header\": {\"name\": \"x-user\", \"range_match\": {\"start\": 0, \"end\": 99}}}", &q));

    /* a repeated header is matched as its values joined with ',' */
    assert_true(perm_matches(
        "{\"header\": {\"name\": \"x-multi\", \"string_match\": {\"exact\": \"a,b\"}}}", &q));
    assert_false(perm_matches(
        "{\"header\": {\"name\": \"x-multi\", \"string_match\": {\"exact\": \"a\"}}}", &q));

    /* pseudo-headers come from the request line; Host is :authority */
    assert_true(perm_matches(
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"GET\"}}}", &q));
    assert_true(perm_matches(
        "{\"header\": {\"name\": \":path\", \"string_match\": {\"exact\": \"/api/v1?x=1\"}}}", &q));
    assert_true(
        perm_matches("{\"header\": {\"name\": \":authority\", \"string_match\": {\"prefix\": "
                     "\"reviews.example.com\", \"ignore_case\": true}}}",
                     &q));
    assert_true(perm_matches(
        "{\"header\": {\"name\": \"Host\", \"string_match\": {\"suffix\": \":9080\"}}}", &q));
    /* without a separate authority, :authority is the Host header */
    req_t h1;
    req_init(&h1, "GET", "/", NULL);
    add_header(&h1, "Host", "ratings:9080");
    assert_true(perm_matches(
        "{\"header\": {\"name\": \":authority\", \"string_match\": {\"exact\": \"ratings:9080\"}}}",
        &h1));
    /* header matchers on the principal side too */
    assert_true(princ_matches(
        "{\"header\": {\"name\": \"x-user\", \"string_match\": {\"exact\": \"Jason\"}}}", &q));
    assert_false(princ_matches(
        "{\"header\": {\"name\": \"x-user\", \"string_match\": {\"exact\": \"Bob\"}}}", &q));

    /* a TCP connection has no headers: only a test for absence matches */
    req_t tcp;
    req_tcp(&tcp);
    add_header(&tcp, "x-user", "Jason"); /* never read on a TCP connection */
    assert_false(
        perm_matches("{\"header\": {\"name\": \"x-user\", \"present_match\": true}}", &tcp));
    assert_false(perm_matches(
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"GET\"}}}", &tcp));
    assert_true(perm_matches("{\"not_rule\": {\"header\": {\"name\": \":method\", "
                             "\"string_match\": {\"exact\": \"GET\"}}}}",
                             &tcp));
}

/* ---- url_path ---- */

static void test_url_path(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "GET", "/Reviews/1?token=/admin#frag", "svc");
#define P(spec) "{\"url_path\": {\"path\": {" spec "}}}"
    assert_true(perm_matches(P("\"exact\": \"/Reviews/1\""), &q)); /* without the query */
    assert_false(perm_matches(P("\"exact\": \"/reviews/1\""), &q));
    assert_true(perm_matches(P("\"exact\": \"/reviews/1\", \"ignore_case\": true"), &q));
    assert_true(perm_matches(P("\"prefix\": \"/Reviews/\""), &q));
    assert_false(perm_matches(P("\"suffix\": \"/admin\""), &q)); /* the query is not the path */
    assert_true(perm_matches(P("\"safe_regex\": {\"regex\": \"/Reviews/[0-9]+\"}"), &q));
    assert_false(perm_matches(P("\"contains\": \"token\""), &q));
    req_t root;
    req_init(&root, "GET", "/", "svc");
    assert_true(perm_matches(P("\"exact\": \"/\""), &root));
    /* a TCP connection has no path */
    req_t tcp;
    req_tcp(&tcp);
    assert_false(perm_matches(P("\"prefix\": \"/\""), &tcp));
    assert_true(perm_matches("{\"not_rule\": " P("\"prefix\": \"/\"") "}", &tcp));
    /* the principal side */
    assert_true(princ_matches(P("\"prefix\": \"/Rev\""), &q));
#undef P
}

/* ---- addresses and ports ---- */

static void test_ip_and_ports(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "GET", "/", "svc");
    set_addr(&q.peer, "203.0.113.77", 51000);
    set_addr(&q.local, "10.1.0.5", 9080);

#define CIDR(kind, ip, len)                                                                        \
    "{\"" kind "\": {\"address_prefix\": \"" ip "\", \"prefix_len\": " #len "}}"
    assert_true(princ_matches(CIDR("direct_remote_ip", "203.0.113.0", 24), &q));
    assert_false(princ_matches(CIDR("direct_remote_ip", "203.0.114.0", 24), &q));
    assert_true(princ_matches(CIDR("direct_remote_ip", "203.0.113.77", 32), &q));
    assert_false(princ_matches(CIDR("direct_remote_ip", "203.0.113.76", 32), &q));
    assert_true(princ_matches(CIDR("direct_remote_ip", "203.0.113.64", 26), &q)); /* .64-.127 */
    assert_false(princ_matches(CIDR("direct_remote_ip", "203.0.113.128", 25), &q));
    assert_true(princ_matches(CIDR("direct_remote_ip", "0.0.0.0", 0), &q));
    assert_true(princ_matches(CIDR("source_ip", "203.0.113.0", 24), &q)); /* deprecated alias */
    assert_false(princ_matches(CIDR("direct_remote_ip", "2001:db8::", 32), &q)); /* other family */

    /* remote_ip: the original client when known, else the peer */
    assert_true(princ_matches(CIDR("remote_ip", "203.0.113.0", 24), &q));
    set_addr(&q.remote, "198.51.100.9", 0);
    q.a.remote = (struct sockaddr *)&q.remote;
    assert_true(princ_matches(CIDR("remote_ip", "198.51.100.0", 24), &q));
    assert_false(princ_matches(CIDR("remote_ip", "203.0.113.0", 24), &q));
    assert_true(princ_matches(CIDR("direct_remote_ip", "203.0.113.0", 24), &q));

    /* destination_ip, destination_port, destination_port_range: the local side */
    assert_true(perm_matches(CIDR("destination_ip", "10.1.0.0", 16), &q));
    assert_false(perm_matches(CIDR("destination_ip", "10.2.0.0", 16), &q));
    assert_true(perm_matches("{\"destination_port\": 9080}", &q));
    assert_false(perm_matches("{\"destination_port\": 9081}", &q));
    assert_true(perm_matches("{\"destination_port_range\": {\"start\": 9000, \"end\": 9081}}", &q));
    assert_false(
        perm_matches("{\"destination_port_range\": {\"start\": 9000, \"end\": 9080}}", &q));

    /* IPv6 */
    req_t v6;
    req_init(&v6, "GET", "/", "svc");
    set_addr(&v6.peer, "2001:db8:85a3::8a2e:370:7334", 51000);
    set_addr(&v6.local, "fd00::5", 8443);
    assert_true(princ_matches(CIDR("direct_remote_ip", "2001:db8::", 32), &v6));
    assert_true(princ_matches(CIDR("direct_remote_ip", "2001:db8:85a3::", 48), &v6));
    assert_false(princ_matches(CIDR("direct_remote_ip", "2001:db8:85a4::", 48), &v6));
    assert_true(princ_matches(CIDR("direct_remote_ip", "2001:db8:85a3::8a2e:370:7334", 128), &v6));
    assert_true(princ_matches(CIDR("direct_remote_ip", "2001:db8:85a3::8a2e:370:7335", 127), &v6));
    assert_false(princ_matches(CIDR("direct_remote_ip", "2001:db8:85a3::8a2e:370:7336", 127), &v6));
    assert_true(
        princ_matches(CIDR("direct_remote_ip", "2001:db8:8580::", 41), &v6)); /* 0x85a3 & 0xff80 */
    assert_false(princ_matches(CIDR("direct_remote_ip", "2001:db8:8500::", 41), &v6));
    assert_true(princ_matches(CIDR("direct_remote_ip", "::", 0), &v6));
    assert_false(princ_matches(CIDR("direct_remote_ip", "0.0.0.0", 0), &v6));
    assert_true(perm_matches(CIDR("destination_ip", "fd00::", 8), &v6));
    assert_true(perm_matches("{\"destination_port\": 8443}", &v6));
    /* an IPv4 client seen on a dual-stack socket matches IPv4 ranges */
    set_addr(&v6.peer, "::ffff:192.0.2.10", 51000);
    assert_true(princ_matches(CIDR("direct_remote_ip", "192.0.2.0", 24), &v6));
    assert_true(princ_matches(CIDR("direct_remote_ip", "::ffff:192.0.2.0", 120), &v6));
    /* not_id over an address: everyone else */
    assert_false(princ_matches("{\"not_id\": " CIDR("direct_remote_ip", "192.0.2.0", 24) "}", &v6));
    set_addr(&v6.peer, "2001:db8::1", 51000);
    assert_true(princ_matches("{\"not_id\": " CIDR("direct_remote_ip", "192.0.2.0", 24) "}", &v6));

    /* a TCP connection is judged on the same addresses */
    req_t tcp;
    req_tcp(&tcp);
    assert_true(perm_matches("{\"destination_port\": 9080}", &tcp));
    assert_true(princ_matches(CIDR("direct_remote_ip", "10.0.0.0", 8), &tcp));
#undef CIDR
}

/* ---- identities ---- */

static void test_authenticated(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "GET", "/", "svc");
    q.a.principal = "spiffe://cluster.local/ns/blog-app/sa/frontend";
#define AUTH(spec) "{\"authenticated\": {\"principal_name\": {" spec "}}}"
    assert_true(
        princ_matches(AUTH("\"exact\": \"spiffe://cluster.local/ns/blog-app/sa/frontend\""), &q));
    assert_false(
        princ_matches(AUTH("\"exact\": \"spiffe://cluster.local/ns/blog-app/sa/reviews\""), &q));
    assert_true(princ_matches(AUTH("\"prefix\": \"spiffe://cluster.local/ns/blog-app/\""), &q));
    assert_true(princ_matches(AUTH("\"suffix\": \"/sa/frontend\""), &q));
    /* Istio's namespaces: [blog-app] */
    assert_true(princ_matches(AUTH("\"safe_regex\": {\"regex\": \".*/ns/blog-app/.*\"}"), &q));
    assert_false(princ_matches(AUTH("\"safe_regex\": {\"regex\": \".*/ns/bar/.*\"}"), &q));
    /* without principal_name: any authenticated peer */
    assert_true(princ_matches("{\"authenticated\": {}}", &q));
    /* plaintext never matches authenticated, whatever the matcher */
    q.a.principal = NULL;
    assert_false(princ_matches("{\"authenticated\": {}}", &q));
    assert_false(princ_matches(AUTH("\"safe_regex\": {\"regex\": \".*\"}"), &q));
    q.a.principal = "";
    assert_false(princ_matches(AUTH("\"prefix\": \"\""), &q));
    /* notPrincipals: a plaintext caller is not the named identity */
    assert_true(princ_matches(
        "{\"not_id\": " AUTH("\"exact\": \"spiffe://cluster.local/ns/x/sa/y\"") "}", &q));
#undef AUTH

    /* requested_server_name */
    req_t tls;
    req_tcp(&tls);
    tls.a.sni = "outbound_.9080_.v1_.reviews.default.svc.cluster.local";
    assert_true(perm_matches(
        "{\"requested_server_name\": {\"suffix\": \".default.svc.cluster.local\"}}", &tls));
    assert_false(perm_matches("{\"requested_server_name\": {\"exact\": \"reviews\"}}", &tls));
    tls.a.sni = NULL; /* no SNI: matched as "" */
    assert_true(perm_matches("{\"requested_server_name\": {\"exact\": \"\"}}", &tls));
    assert_false(perm_matches("{\"requested_server_name\": {\"prefix\": \"outbound_\"}}", &tls));
}

/* ---- and / or / not ---- */

static void test_sets_and_not(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "POST", "/admin/users", "svc");
    q.a.principal = "spiffe://cluster.local/ns/bar/sa/client";
    const char *post =
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"POST\"}}}";
    const char *get =
        "{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": \"GET\"}}}";
    const char *admin = "{\"url_path\": {\"path\": {\"prefix\": \"/admin/\"}}}";
    char buf[1024];

    snprintf(buf, sizeof(buf), "{\"and_rules\": {\"rules\": [%s, %s]}}", post, admin);
    assert_true(perm_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"and_rules\": {\"rules\": [%s, %s]}}", get, admin);
    assert_false(perm_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"or_rules\": {\"rules\": [%s, %s]}}", get, admin);
    assert_true(perm_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"or_rules\": {\"rules\": [%s, {\"destination_port\": 1}]}}", get);
    assert_false(perm_matches(buf, &q));
    /* notMethods: [GET] */
    snprintf(buf, sizeof(buf), "{\"not_rule\": {\"or_rules\": {\"rules\": [%s]}}}", get);
    assert_true(perm_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"not_rule\": %s}", post);
    assert_false(perm_matches(buf, &q));
    /* double negation */
    snprintf(buf, sizeof(buf), "{\"not_rule\": {\"not_rule\": %s}}", post);
    assert_true(perm_matches(buf, &q));

    const char *bar = "{\"authenticated\": {\"principal_name\": {\"safe_regex\": {\"regex\": "
                      "\".*/ns/bar/.*\"}}}}";
    const char *foo = "{\"authenticated\": {\"principal_name\": {\"safe_regex\": {\"regex\": "
                      "\".*/ns/foo/.*\"}}}}";
    /* notNamespaces: [foo] */
    snprintf(buf, sizeof(buf), "{\"not_id\": {\"or_ids\": {\"ids\": [%s]}}}", foo);
    assert_true(princ_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"not_id\": %s}", bar);
    assert_false(princ_matches(buf, &q));
    snprintf(buf, sizeof(buf),
             "{\"and_ids\": {\"ids\": [%s, {\"direct_remote_ip\": {\"address_prefix\": "
             "\"10.0.0.0\", \"prefix_len\": 8}}]}}",
             bar);
    assert_true(princ_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"and_ids\": {\"ids\": [%s, %s]}}", bar, foo);
    assert_false(princ_matches(buf, &q));
    snprintf(buf, sizeof(buf), "{\"or_ids\": {\"ids\": [%s, %s]}}", foo, bar);
    assert_true(princ_matches(buf, &q));
}

/* ---- metadata (request.auth.*) ---- */

static void test_metadata(void **state)
{
    (void)state;
    req_t q;
    req_init(&q, "GET", "/", "svc");
    q.a.principal = "spiffe://cluster.local/ns/default/sa/x";
    add_header(&q, "authorization", "Bearer abc");
    /* Istio's requestPrincipals: meshproxy has no JWT filter, the metadata
     * is empty, so the matcher matches only when inverted */
#define RP(extra)                                                                                  \
    "{\"metadata\": {\"filter\": \"istio_authn\", \"path\": [{\"key\": "                           \
    "\"request.auth.principal\"}], "                                                               \
    "\"value\": {\"string_match\": {\"safe_regex\": {\"regex\": \".+\"}}}" extra "}}"
    const char *plain = RP(""), *inverted = RP(", \"invert\": true");
#undef RP
    assert_false(princ_matches(plain, &q));
    assert_true(princ_matches(inverted, &q));
    assert_false(perm_matches(plain, &q));
    assert_true(perm_matches(inverted, &q));
    /* a DENY on requestPrincipals never fires; an ALLOW never allows */
    assert_true(allows(one("DENY", ANY, plain), &q));
    assert_false(allows(one("ALLOW", ANY, plain), &q));
    /* present_match false does not match an absent value either (Envoy) */
    assert_false(
        princ_matches("{\"metadata\": {\"filter\": \"istio_authn\", \"path\": [{\"key\": \"k\"}],"
                      " \"value\": {\"present_match\": false}}}",
                      &q));
    /* a broken regex inside is still refused */
    assert_null(
        try_compile2("{\"policies\": {\"jwt\": {\"permissions\": [" ANY "], \"principals\": ["
                     "{\"metadata\": {\"filter\": \"istio_authn\", \"path\": [{\"key\": \"k\"}],"
                     " \"value\": {\"string_match\": {\"safe_regex\": {\"regex\": \"(\"}}}}}]}}}",
                     NULL));
    assert_non_null(strstr(T.err, "policy \"jwt\""));
    assert_non_null(strstr(T.err, "principals[0].metadata.value.string_match.safe_regex"));
}

/* ---- regex limits: bounded, and failing closed ---- */

static void test_regex_limits(void **state)
{
    (void)state;
    char value[64];
    memset(value, 'a', 40);
    value[40] = 'b';
    value[41] = '\0';
    req_t q;
    req_init(&q, "GET", "/", "svc");
    add_header(&q, "x-evil", value);
    const char *evil = "{\"header\": {\"name\": \"x-evil\", \"string_match\": {\"safe_regex\": "
                       "{\"regex\": \"(.*a){12}\"}}}}";
    /* the match limit stops the regex; the answer is "cannot tell":
     * a DENY filter denies, an ALLOW filter does not allow */
    px_rbac_result_t res;
    px_rbac_t *deny = one("DENY", evil, ANY);
    px_rbac_eval(deny, &q.a, &res);
    assert_false(res.allowed);
    assert_string_equal(res.policy, "p");
    assert_false(allows(one("ALLOW", evil, ANY), &q));
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"not_rule\": %s}", evil);
    assert_false(allows(one("ALLOW", buf, ANY), &q));
    assert_false(allows(one("DENY", buf, ANY), &q));
    /* but a policy that surely matches still allows, and a surely failing
     * AND is still a no */
    px_rbac_t *two = compile(
        "{\"policies\": {"
        "\"a-evil\": {\"permissions\": [{\"header\": {\"name\": \"x-evil\", \"string_match\": "
        "{\"safe_regex\": {\"regex\": \"(.*a){12}\"}}}}], \"principals\": [" ANY "]},"
        "\"b-open\": {\"permissions\": [" ANY "], \"principals\": [" ANY "]}}}");
    px_rbac_eval(two, &q.a, &res);
    assert_true(res.allowed);
    assert_string_equal(res.policy, "b-open");
    snprintf(buf, sizeof(buf), "{\"and_rules\": {\"rules\": [%s, {\"destination_port\": 1}]}}",
             evil);
    assert_true(allows(one("DENY", buf, ANY), &q));
    /* a value that is not UTF-8 cannot be judged by a regex either */
    req_t bin;
    req_init(&bin, "GET", "/", "svc");
    add_header(&bin, "x-evil", "\xff\xfe");
    const char *anyval = "{\"header\": {\"name\": \"x-evil\", \"string_match\": {\"safe_regex\": "
                         "{\"regex\": \".*\"}}}}";
    assert_false(allows(one("DENY", anyval, ANY), &bin));
    assert_false(allows(one("ALLOW", anyval, ANY), &bin));
    /* the same regex on a short value answers normally */
    req_t ok;
    req_init(&ok, "GET", "/", "svc");
    add_header(&ok, "x-evil", "aaaaaaaaaaaa");
    assert_false(allows(one("DENY", evil, ANY), &ok));
    add_header(&ok, "x-other", "z");
    ok.hdrs[0].value = "aaaaaaaaaaab";
    ok.hdrs[0].value_len = 12;
    assert_true(allows(one("DENY", evil, ANY), &ok));
}

/* ---- evaluation allocates nothing ---- */

static void test_no_allocation(void **state)
{
    (void)state;
#ifdef HAVE_ALLOC_COUNT
    px_rbac_t *r = compile(
        "{\"action\": \"DENY\", \"policies\": {"
        "\"a\": {\"permissions\": [{\"and_rules\": {\"rules\": ["
        "{\"header\": {\"name\": \"x-multi\", \"string_match\": {\"safe_regex\": {\"regex\": "
        "\"a,b.*\"}}}},"
        "{\"url_path\": {\"path\": {\"safe_regex\": {\"regex\": \"/x/[0-9]+\"}}}},"
        "{\"not_rule\": {\"destination_port_range\": {\"start\": 1, \"end\": 2}}}]}}],"
        " \"principals\": [{\"authenticated\": {\"principal_name\": {\"safe_regex\": {\"regex\": "
        "\".*/ns/bar/.*\"}}}}]},"
        "\"b\": {\"permissions\": [{\"header\": {\"name\": \"x-evil\", \"string_match\": "
        "{\"safe_regex\": "
        "{\"regex\": \"(.*a){12}\"}}}}], \"principals\": [{\"direct_remote_ip\": "
        "{\"address_prefix\": "
        "\"2001:db8::\", \"prefix_len\": 32}}]}}}");
    char evil[64];
    memset(evil, 'a', 40);
    strcpy(evil + 40, "b");
    req_t q;
    req_init(&q, "POST", "/x/42?q=1", "svc");
    set_addr(&q.peer, "2001:db8::7", 1234);
    q.a.principal = "spiffe://cluster.local/ns/bar/sa/client";
    add_header(&q, "x-multi", "a");
    add_header(&q, "x-multi", "b");
    add_header(&q, "x-evil", evil);
    px_rbac_result_t res;
    allocs = 0;
    counting = 1;
    for (int i = 0; i < 100; i++)
        px_rbac_eval(r, &q.a, &res);
    counting = 0;
    assert_int_equal(allocs, 0);
    assert_false(res.allowed);
    assert_string_equal(res.policy, "a");
    /* the counter does count */
    counting = 1;
    free(malloc(16));
    counting = 0;
    assert_int_equal(allocs, 1);
#else
    skip();
#endif
}

/* ---- compile errors ---- */

static void expect_error(const char *json, const char *s1, const char *s2)
{
    px_rbac_t *r = try_compile2(json, NULL);
    if (r != NULL)
        fail_msg("compiled, expected an error with \"%s\"", s1);
    if (strstr(T.err, s1) == NULL || (s2 && strstr(T.err, s2) == NULL))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", T.err, s1, s2 ? s2 : "");
}

static void test_compile_errors(void **state)
{
    (void)state;
    expect_error("{\"policies\": {\"ns[default]-policy[x]-rule[0]\": {\"permissions\": "
                 "[{\"and_rules\": {\"rules\": ["
                 "{\"any\": true}, {\"header\": {\"name\": \"x\", \"string_match\": "
                 "{\"safe_regex\": {\"regex\": "
                 "\"(unclosed\"}}}}]}}], \"principals\": [" ANY "]}}}",
                 "policy \"ns[default]-policy[x]-rule[0]\": "
                 "permissions[0].and_rules.rules[1].header.string_match.safe_regex: invalid regex "
                 "\"(unclosed\"",
                 NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [" ANY
                 "], \"principals\": [{\"direct_remote_ip\": "
                 "{\"address_prefix\": \"10.0.0.256\", \"prefix_len\": 8}}]}}}",
                 "policy \"p\": principals[0].direct_remote_ip: address_prefix: \"10.0.0.256\" is "
                 "not an IPv4 or IPv6 address",
                 NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [" ANY
                 "], \"principals\": [{\"remote_ip\": "
                 "{\"address_prefix\": \"10.0.0.0\", \"prefix_len\": 33}}]}}}",
                 "principals[0].remote_ip: prefix_len: 33 is longer than an IPv4 address", NULL);
    expect_error("{\"policies\": {\"p\": {\"principals\": [" ANY "]}}}",
                 "policy \"p\": permissions: at least one permission is required", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [" ANY "]}}}",
                 "policy \"p\": principals: at least one principal is required", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [{}], \"principals\": [" ANY "]}}}",
                 "policy \"p\": permissions[0]: no permission rule set", NULL);
    expect_error(
        "{\"policies\": {\"p\": {\"permissions\": [{\"or_rules\": {}}], \"principals\": [" ANY
        "]}}}",
        "permissions[0].or_rules: rules: at least one rule is required", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [" ANY
                 "], \"principals\": [{\"not_id\": {\"and_ids\": {}}}]}}}",
                 "principals[0].not_id.and_ids: ids: at least one principal is required", NULL);
    expect_error(
        "{\"policies\": {\"p\": {\"permissions\": [{\"any\": false}], \"principals\": [" ANY "]}}}",
        "permissions[0]: any: must be true", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [{\"header\": {\"string_match\": "
                 "{\"exact\": \"x\"}}}],"
                 " \"principals\": [" ANY "]}}}",
                 "permissions[0].header: name: must not be empty", NULL);
    expect_error(
        "{\"policies\": {\"p\": {\"permissions\": [{\"url_path\": {}}], \"principals\": [" ANY
        "]}}}",
        "permissions[0].url_path: path: a string matcher is required", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [{\"requested_server_name\": {}}], "
                 "\"principals\": [" ANY "]}}}",
                 "permissions[0].requested_server_name: no match pattern set", NULL);
    expect_error("{\"policies\": {\"p\": {\"permissions\": [{\"destination_port_range\": "
                 "{\"start\": 1, \"end\": 70000}}],"
                 " \"principals\": [" ANY "]}}}",
                 "permissions[0].destination_port_range: start and end must lie in [0, 65536]",
                 NULL);
    expect_error(
        "{\"policies\": {\"p\": {\"permissions\": [{\"metadata\": {\"filter\": \"istio_authn\"}}],"
        " \"principals\": [" ANY "]}}}",
        "permissions[0].metadata: path: at least one segment is required", NULL);
    /* shadow rules are named as such */
    assert_null(try_compile2(
        "{}", "{\"policies\": {\"s\": {\"permissions\": [{\"url_path\": {\"path\": "
              "{\"safe_regex\": {\"regex\": \"[\"}}}}], \"principals\": [" ANY "]}}}"));
    assert_non_null(strstr(
        T.err,
        "shadow_rules policy \"s\": permissions[0].url_path.path.safe_regex: invalid regex"));

    /* what the proxy cannot enforce as written: a CEL condition, a matcher
     * this build does not know (both arrive as unknown fields) */
    static ProtobufCMessageUnknownField cond = {.tag = 3,
                                                .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED};
    static ProtobufCMessageUnknownField newer = {.tag = 12,
                                                 .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED};
    Envoy__Config__Rbac__V3__Permission any = ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT;
    any.rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY;
    any.any = 1;
    Envoy__Config__Rbac__V3__Principal anyp = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT;
    anyp.identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY;
    anyp.any = 1;
    Envoy__Config__Rbac__V3__Permission *perms[1] = {&any};
    Envoy__Config__Rbac__V3__Principal *princs[1] = {&anyp};
    Envoy__Config__Rbac__V3__Policy pol = ENVOY__CONFIG__RBAC__V3__POLICY__INIT;
    pol.permissions = perms;
    pol.n_permissions = 1;
    pol.principals = princs;
    pol.n_principals = 1;
    pol.base.unknown_fields = &cond;
    pol.base.n_unknown_fields = 1;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry ent =
        ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT;
    ent.key = "with-condition";
    ent.value = &pol;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *ents[1] = {&ent};
    Envoy__Config__Rbac__V3__RBAC rb = ENVOY__CONFIG__RBAC__V3__RBAC__INIT;
    rb.policies = ents;
    rb.n_policies = 1;
    assert_null(px_rbac_compile(T.a, &rb.base, NULL, "", keep, &T, T.err, sizeof(T.err)));
    assert_non_null(
        strstr(T.err, "policy \"with-condition\": condition: CEL conditions are not supported"));

    pol.base.unknown_fields = NULL;
    pol.base.n_unknown_fields = 0;
    assert_non_null(px_rbac_compile(T.a, &rb.base, NULL, "", keep, &T, T.err, sizeof(T.err)));
    Envoy__Config__Rbac__V3__Principal unknown = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT;
    unknown.base.unknown_fields = &newer;
    unknown.base.n_unknown_fields = 1;
    princs[0] = &unknown;
    assert_null(px_rbac_compile(T.a, &rb.base, NULL, "", keep, &T, T.err, sizeof(T.err)));
    assert_non_null(strstr(T.err, "principals[0]: unsupported principal matcher (field 12)"));

    /* nesting is bounded */
    Envoy__Config__Rbac__V3__Permission chain[80];
    for (int i = 0; i < 80; i++) {
        Envoy__Config__Rbac__V3__Permission init = ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT;
        chain[i] = init;
        if (i < 79) {
            chain[i].rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE;
            chain[i].not_rule = &chain[i + 1];
        } else {
            chain[i].rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY;
            chain[i].any = 1;
        }
    }
    princs[0] = &anyp;
    perms[0] = &chain[0];
    assert_null(px_rbac_compile(T.a, &rb.base, NULL, "", keep, &T, T.err, sizeof(T.err)));
    assert_non_null(strstr(T.err, "nested deeper than 64 levels"));
    perms[0] = &chain[39]; /* 40 nots around any: within the bound, and even */
    px_rbac_t *ok = px_rbac_compile(T.a, &rb.base, NULL, "", keep, &T, T.err, sizeof(T.err));
    assert_non_null(ok);
    req_t q;
    req_init(&q, "GET", "/", "svc");
    assert_true(allows(ok, &q));

    /* not an RBAC message at all */
    Envoy__Config__Rbac__V3__Policy *notrbac = &pol;
    assert_null(px_rbac_compile(T.a, &notrbac->base, NULL, "", keep, &T, T.err, sizeof(T.err)));
    assert_non_null(strstr(T.err, "not an envoy.config.rbac.v3.RBAC message"));
}

/* ---- end to end: the blog-app tutorial ---- */

typedef xw_t world_t;

/* Every document of the tutorial's set must load. */
static void put_cb(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    if (diag && diag->nerrors)
        fail_msg("test configuration rejected: %s", diag->errors[0]);
    cfg_store_put_result(ud, obj, diag);
}

/* The blog app of the tutorial: frontend, posts, reviews, users, ratings,
 * one pod each with its own service account, in namespace blog-app. */
static const char *const blog_app = "apiVersion: v1\nkind: Namespace\nmetadata: {name: blog-app, "
                                    "labels: {istio-injection: enabled}}\n"
#define SVC(name, ip)                                                                              \
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: " name ", namespace: blog-app}\n"        \
    "spec:\n  selector: {app: " name "}\n  ports: [{name: http, port: 5000, targetPort: 5000}]\n"  \
    "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: " name ", namespace: blog-app}\n" \
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: " name "-0\n  namespace: blog-app\n"       \
    "  labels: {app: " name ", version: v1, security.istio.io/tlsMode: istio}\n"                   \
    "  annotations: {sidecar.istio.io/status: '{\"containers\":[\"istio-proxy\"]}'}\n"             \
    "spec:\n  serviceAccountName: " name                                                           \
    "\n  containers: [{name: app, ports: [{containerPort: 5000}]}]\n"                              \
    "status: {phase: Running, podIP: " ip "}\n"
    SVC("frontend", "10.2.0.10") SVC("posts", "10.2.0.11") SVC("reviews", "10.2.0.12")
        SVC("users", "10.2.0.13") SVC("ratings", "10.2.0.14")
#undef SVC
    /* and a database behind a plain TCP port, for the network filters */
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: blog-app}\n"
    "spec:\n  selector: {app: db}\n  ports: [{name: tcp-mysql, port: 3306, targetPort: 3306}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: blog-app\n"
    "  labels: {app: db, security.istio.io/tlsMode: istio}\n"
    "  annotations: {sidecar.istio.io/status: '{\"containers\":[\"istio-proxy\"]}'}\n"
    "spec:\n  serviceAccountName: db\n  containers: [{name: db, ports: [{containerPort: 3306}]}]\n"
    "status: {phase: Running, podIP: 10.2.0.20}\n";

/* The tutorial's other policies, in the form of its posts policy
 * (modern-devops-ch15-05 in the shared test data): frontend may call
 * reviews and users, and only reviews may call ratings. */
#define ALLOW_FROM(target, caller)                                                                 \
    "---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"                      \
    "metadata: {name: " target ", namespace: blog-app}\n"                                          \
    "spec:\n  selector: {matchLabels: {app: " target "}}\n  action: ALLOW\n"                       \
    "  rules:\n  - from:\n    - source:\n        principals: "                                     \
    "[\"cluster.local/ns/blog-app/sa/" caller "\"]\n"
static const char *const blog_policies =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: bar}\n" ALLOW_FROM("reviews", "frontend")
        ALLOW_FROM("users", "frontend") ALLOW_FROM("ratings", "reviews") ALLOW_FROM("db", "posts")
    /* istio-notes-20 as it was meant (its `namespace:` is rejected, see below):
     * POSTs from namespace bar are denied */
    "---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
    "metadata: {name: authdenypolicy, namespace: blog-app}\n"
    "spec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"bar\"]\n"
    "    to:\n    - operation:\n        methods: [\"POST\"]\n";
#undef ALLOW_FROM

/* The enforcing side of one sidecar: the RBAC filters of its inbound chain
 * for a port (HTTP filters of the HCM, or network filters of a TCP chain). */
typedef struct sidecar {
    px_rbac_t *filters[8];
    size_t n;
    const char *ip;
    uint16_t port;
    bool http;
} sidecar_t;

static px_rbac_t *compile_filter(const char *pod, const Envoy__Config__Rbac__V3__RBAC *rules,
                                 const Envoy__Config__Rbac__V3__RBAC *shadow)
{
    px_rbac_t *r = px_rbac_compile(T.a, rules ? &rules->base : NULL, shadow ? &shadow->base : NULL,
                                   "", keep, &T, T.err, sizeof(T.err));
    if (r == NULL)
        fail_msg("%s: %s", pod, T.err);
    return r;
}

static void load_sidecar(world_t *w, const char *pod, uint16_t port, sidecar_t *sc)
{
    const reg_workload_t *wl = reg_workload_by_name(w->reg, "blog-app", pod);
    assert_non_null(wl);
    xds_proxy_t *p = xw_pod_proxy(w, "blog-app", pod, XDS_SIDECAR);
    xds_resources_t *r = xw_translate(w, p);
    const xds_resource_t *res = xds_resources_find(r, XDS_LISTENER, "virtualInbound");
    assert_non_null(res);
    Envoy__Config__Listener__V3__Listener *l =
        envoy__config__listener__v3__listener__unpack(NULL, res->len, res->data);
    assert_non_null(l);
    /* STRICT mTLS (the tutorial's PeerAuthentication): only the TLS chain */
    char name[64], plain[80];
    snprintf(name, sizeof(name), "inbound|%u||", port);
    snprintf(plain, sizeof(plain), "%s-plaintext", name);
    const Envoy__Config__Listener__V3__FilterChain *fc = NULL;
    for (size_t i = 0; i < l->n_filter_chains; i++) {
        assert_string_not_equal(l->filter_chains[i]->name, plain);
        if (strcmp(l->filter_chains[i]->name, name) == 0)
            fc = l->filter_chains[i];
    }
    if (fc == NULL)
        fail_msg("%s: no %s chain", pod, name);
    memset(sc, 0, sizeof(*sc));
    sc->ip = wl->ip;
    sc->port = port;
    const Envoy__Config__Listener__V3__Filter *f = fc->filters[fc->n_filters - 1];
    if (strcmp(f->name, "envoy.filters.network.http_connection_manager") != 0) {
        /* TCP: the network RBAC filters before the TCP proxy */
        for (size_t i = 0; i + 1 < fc->n_filters; i++) {
            const Envoy__Config__Listener__V3__Filter *nf = fc->filters[i];
            if (strcmp(nf->name, "envoy.filters.network.rbac") != 0)
                continue;
            Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *nr =
                envoy__extensions__filters__network__rbac__v3__rbac__unpack(
                    NULL, nf->typed_config->value.len, nf->typed_config->value.data);
            assert_non_null(nr);
            assert_true(sc->n < 8);
            sc->filters[sc->n++] = compile_filter(pod, nr->rules, nr->shadow_rules);
            protobuf_c_message_free_unpacked(&nr->base, NULL);
        }
        goto out;
    }
    sc->http = true;
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h =
        envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
            NULL, f->typed_config->value.len, f->typed_config->value.data);
    assert_non_null(h);
    for (size_t i = 0; i < h->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf =
            h->http_filters[i];
        if (strcmp(hf->name, "envoy.filters.http.rbac") != 0)
            continue;
        Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *rb =
            envoy__extensions__filters__http__rbac__v3__rbac__unpack(
                NULL, hf->typed_config->value.len, hf->typed_config->value.data);
        assert_non_null(rb);
        assert_true(sc->n < 8);
        sc->filters[sc->n++] = compile_filter(pod, rb->rules, rb->shadow_rules);
        protobuf_c_message_free_unpacked(&rb->base, NULL);
    }
    protobuf_c_message_free_unpacked(&h->base, NULL);
out:
    protobuf_c_message_free_unpacked(&l->base, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

/* The status a caller gets: the filters in chain order, the first denial
 * wins (403; on a TCP port the connection is closed), else the request
 * reaches the app (200). */
static int call(const sidecar_t *sc, const char *caller_ns, const char *caller_sa,
                const char *caller_ip, const char *method, const char **policy)
{
    char principal[160];
    struct sockaddr_storage peer, local;
    set_addr(&peer, caller_ip, 43210);
    set_addr(&local, sc->ip, sc->port);
    px_rbac_attrs_t a = {
        .peer = (struct sockaddr *)&peer,
        .local = (struct sockaddr *)&local,
    };
    if (sc->http) {
        a.http = true;
        a.method = method;
        a.method_len = strlen(method);
        a.path = "/posts?page=1";
        a.path_len = strlen(a.path);
        a.host = "svc:5000";
        a.host_len = strlen(a.host);
    }
    if (caller_sa) {
        snprintf(principal, sizeof(principal), "spiffe://cluster.local/ns/%s/sa/%s", caller_ns,
                 caller_sa);
        a.principal = principal;
    }
    if (policy)
        *policy = NULL;
    for (size_t i = 0; i < sc->n; i++) {
        px_rbac_result_t res;
        px_rbac_eval(sc->filters[i], &a, &res);
        if (!res.allowed) {
            if (policy)
                *policy = res.policy;
            return 403;
        }
    }
    return 200;
}

static void test_blog_app_end_to_end(void **state)
{
    (void)state;
    /* the tutorial's istio-notes-20 misspells `namespaces`: it never loads */
    tu_result_t bad;
    tu_load_file(tu_shared("tutorials/istio-notes-20.yaml"), &bad);
    assert_int_equal(bad.nobjs, 0);
    assert_true(tu_error_has(&bad, "rules[0].from[0].source", "namespace", NULL));
    tu_free(&bad);

    world_t w;
    xw_open(&w);
    assert_int_equal(
        cfg_load_buffer(blog_app, strlen(blog_app), DOC_FMT_YAML, NULL, put_cb, w.store), 0);
    /* the tutorial's STRICT PeerAuthentication and its posts policy, as typed */
    assert_int_equal(
        cfg_load_file(tu_shared("tutorials/modern-devops-ch15-04.yaml"), NULL, put_cb, w.store), 0);
    assert_int_equal(
        cfg_load_file(tu_shared("tutorials/modern-devops-ch15-05.yaml"), NULL, put_cb, w.store), 0);
    assert_int_equal(
        cfg_load_buffer(blog_policies, strlen(blog_policies), DOC_FMT_YAML, NULL, put_cb, w.store),
        0);
    xw_commit(&w);

    static const char *const apps[] = {"frontend", "posts", "reviews", "users", "ratings"};
    static const char *const ips[] = {"10.2.0.10", "10.2.0.11", "10.2.0.12", "10.2.0.13",
                                      "10.2.0.14"};
    /* who may call whom: frontend -> posts, reviews, users; reviews -> ratings;
     * nobody's sidecar guards frontend with an ALLOW policy */
    static const int may_call[5][5] = {
        /* caller \ target  frontend posts reviews users ratings */
        /* frontend */ {1, 1, 1, 1, 0},
        /* posts    */ {1, 0, 0, 0, 0},
        /* reviews  */ {1, 0, 0, 0, 1},
        /* users    */ {1, 0, 0, 0, 0},
        /* ratings  */ {1, 0, 0, 0, 0},
    };
    const char *policy;
    for (int t = 0; t < 5; t++) {
        char pod[32];
        snprintf(pod, sizeof(pod), "%s-0", apps[t]);
        sidecar_t sc;
        load_sidecar(&w, pod, 5000, &sc);
        /* DENY first, then ALLOW (frontend has no ALLOW policy) */
        assert_int_equal(sc.n, t == 0 ? 1 : 2);
        assert_int_equal(px_rbac_action(sc.filters[0]), PX_RBAC_DENY);
        if (t > 0)
            assert_int_equal(px_rbac_action(sc.filters[1]), PX_RBAC_ALLOW);
        for (int c = 0; c < 5; c++) {
            for (int m = 0; m < 2; m++) {
                const char *method = m ? "POST" : "GET";
                int want = may_call[c][t] ? 200 : 403;
                int got = call(&sc, "blog-app", apps[c], ips[c], method, &policy);
                if (got != want)
                    fail_msg("%s %s -> %s: got %d, want %d", apps[c], method, apps[t], got, want);
                if (got == 403)
                    assert_null(policy); /* denied by ALLOW: no policy matched */
            }
        }
        /* a workload of namespace bar: GET as the ALLOW policies say, POST
         * always denied by the DENY policy, which the denial names */
        int got = call(&sc, "bar", "default", "10.3.0.5", "GET", &policy);
        assert_int_equal(got, t == 0 ? 200 : 403);
        got = call(&sc, "bar", "default", "10.3.0.5", "POST", &policy);
        assert_int_equal(got, 403);
        assert_non_null(policy);
        assert_string_equal(policy, "ns[blog-app]-policy[authdenypolicy]-rule[0]");
        /* frontend's identity from another namespace is not frontend */
        got = call(&sc, "other", "frontend", "10.4.0.5", "GET", NULL);
        assert_int_equal(got, t == 0 ? 200 : 403);
        /* a caller without a certificate (plaintext) */
        got = call(&sc, NULL, NULL, "10.2.0.99", "GET", NULL);
        assert_int_equal(got, t == 0 ? 200 : 403);
    }

    /* the database's TCP port: network filters judge the connection. Only
     * posts may connect; the DENY on POSTs from bar has HTTP-only fields, so
     * on TCP it denies every connection from bar (Istio's rule for DENY) */
    sidecar_t db;
    load_sidecar(&w, "db-0", 3306, &db);
    assert_false(db.http);
    assert_int_equal(db.n, 2);
    assert_int_equal(px_rbac_action(db.filters[0]), PX_RBAC_DENY);
    assert_int_equal(px_rbac_action(db.filters[1]), PX_RBAC_ALLOW);
    assert_int_equal(call(&db, "blog-app", "posts", "10.2.0.11", "-", NULL), 200);
    assert_int_equal(call(&db, "blog-app", "frontend", "10.2.0.10", "-", NULL), 403);
    assert_int_equal(call(&db, "blog-app", "reviews", "10.2.0.12", "-", NULL), 403);
    assert_int_equal(call(&db, "bar", "default", "10.3.0.5", "-", &policy), 403);
    assert_string_equal(policy, "ns[blog-app]-policy[authdenypolicy]-rule[0]");
    assert_int_equal(call(&db, NULL, NULL, "10.2.0.99", "-", NULL), 403);

    xw_close(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_matchers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_and_ports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authenticated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sets_and_not, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_regex_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compile_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blog_app_end_to_end, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
