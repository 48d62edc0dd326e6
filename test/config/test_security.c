/* security.istio.io: typed decoding and the validation rules of
 * PeerAuthentication, AuthorizationPolicy and RequestAuthentication. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"

#define PA "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n  namespace: ns\n"
#define AP "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: ns\n"
#define RA "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: p\n  namespace: ns\n"

static void expect_file_valid(const char *rel)
{
    tu_result_t r;
    tu_load_stripped(rel, &r);
    TU_EXPECT_OK(&r);
    assert_true(r.nobjs > 0);
    assert_int_equal(r.nobjs, r.ndocs);
    tu_free(&r);
}

static void expect_file_invalid(const char *rel)
{
    tu_result_t r;
    tu_load_stripped(rel, &r);
    if (r.nobjs != 0) {
        for (int i = 0; i < r.nobjs; i++)
            fprintf(stderr, "  accepted: %s\n", r.objs[i]->name);
    }
    assert_true(r.ndocs > 0);
    assert_int_equal(r.nobjs, 0);
    assert_int_equal(r.nfailed, r.ndocs);
    tu_free(&r);
}

/* ---- PeerAuthentication ---- */

static void test_pa_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(PA "spec:\n  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: "
               "PERMISSIVE\n  portLevelMtls:\n    \"80\":\n      mode: STRICT\n    \"9090\":\n"
               "      mode: DISABLE\n",
            "pa.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_object_t *o = tu_obj(&r, CFG_PeerAuthentication);
    assert_non_null(o);
    const cfg_PeerAuthentication *s = CFG_BODY(o, PeerAuthentication)->spec;
    assert_non_null(s);
    assert_int_equal(s->mtls->mode, cfg_MtlsMode_PERMISSIVE);
    assert_int_equal(s->selector->matchLabels.n, 1);
    assert_string_equal(s->selector->matchLabels.v[0].key, "app");
    assert_string_equal(s->selector->matchLabels.v[0].str, "reviews");
    assert_int_equal(s->portLevelMtls.n, 2);
    assert_string_equal(s->portLevelMtls.v[0].key, "80");
    assert_int_equal(((const cfg_PeerMutualTLS *)s->portLevelMtls.v[0].msg)->mode,
                     cfg_MtlsMode_STRICT);
    assert_int_equal(((const cfg_PeerMutualTLS *)s->portLevelMtls.v[1].msg)->mode,
                     cfg_MtlsMode_DISABLE);
    tu_free(&r);
}

static void test_pa_port_level_needs_selector(void **state)
{
    (void)state;
    tu_expect_rejected(PA "spec:\n  portLevelMtls:\n    \"80\":\n      mode: STRICT\n",
                 "spec.portLevelMtls:", "requires selector");
    /* a selector without labels is namespace-wide too */
    tu_expect_rejected(PA "spec:\n  selector: {}\n  portLevelMtls:\n    \"80\":\n      mode: STRICT\n",
                 "spec.portLevelMtls:", "requires selector");
}

static void test_pa_port_keys(void **state)
{
    (void)state;
    const char *sel = "spec:\n  selector:\n    matchLabels:\n      app: a\n  portLevelMtls:\n";
    char buf[512];
    snprintf(buf, sizeof(buf), PA "%s    \"0\":\n      mode: STRICT\n", sel);
    tu_expect_rejected(buf, "spec.portLevelMtls[0]:", "between 1-65535");
    snprintf(buf, sizeof(buf), PA "%s    \"65536\":\n      mode: STRICT\n", sel);
    tu_expect_rejected(buf, "spec.portLevelMtls[65536]:", "between 1-65535");
    snprintf(buf, sizeof(buf), PA "%s    \"http\":\n      mode: STRICT\n", sel);
    tu_expect_rejected(buf, "spec.portLevelMtls[http]:", "not a number");
    snprintf(buf, sizeof(buf), PA "%s    \"65535\":\n      mode: STRICT\n", sel);
    tu_expect_loads(buf);
    snprintf(buf, sizeof(buf), PA "%s    {}\n", sel);
    tu_expect_rejected(buf, "spec.portLevelMtls:", "at least 1 entry");
}

static void test_pa_mode_and_selector(void **state)
{
    (void)state;
    tu_expect_rejected(PA "spec:\n  mtls:\n    mode: BLAH\n", "spec.mtls.mode", "Unsupported value: \"BLAH\"");
    tu_expect_rejected(PA "spec:\n  selector:\n    matchLabels:\n      app: \"rev*\"\n",
                 "spec.selector.matchLabels[app]:", "wildcard not allowed in label value");
    tu_expect_rejected(PA "spec:\n  selector:\n    matchLabels:\n      \"ap*\": x\n",
                 "spec.selector.matchLabels[ap*]:", "wildcard not allowed in label key");
    tu_expect_rejected(PA "spec:\n  selector:\n    matchLabels:\n      \"\": x\n",
                 "spec.selector.matchLabels[]:", "key must not be empty");
    tu_expect_rejected(PA "spec:\n  selector:\n    matchLabels:\n      app: "
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                 "spec.selector.matchLabels[app]:", "at most 63");
    tu_expect_rejected(PA "spec:\n  mtl:\n    mode: STRICT\n", "spec:", "unknown field \"mtl\"");
}

static void test_pa_empty_selector_warns(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(PA "spec:\n  selector: {}\n  mtls:\n    mode: STRICT\n", "t.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    assert_int_equal(r.nwarnings, 1);
    assert_non_null(strstr(r.warnings[0], "spec.selector"));
    tu_free(&r);
}

static void test_pa_dry_run_refused(void **state)
{
    (void)state;
    tu_expect_rejected("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n"
                 "  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  mtls:\n    mode: STRICT\n",
                 "metadata.annotations[istio.io/dry-run]", "only supported on AuthorizationPolicy");
}

static void test_pa_crd_files(void **state)
{
    (void)state;
    expect_file_valid("istio/pkg/config/validation/testdata/crds/peerauth-valid.yaml");
    expect_file_invalid("istio/pkg/config/validation/testdata/crds/peerauth-invalid.yaml");
}

/* ---- AuthorizationPolicy ---- */

static void test_ap_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(AP "spec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [bar]\n"
               "    to:\n    - operation:\n        methods: [POST]\n        ports: [\"8080\"]\n"
               "    when:\n    - key: request.auth.claims[iss]\n      values: [\"https://a\"]\n",
            "ap.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_AuthorizationPolicy *s = CFG_BODY(tu_obj(&r, CFG_AuthorizationPolicy), AuthorizationPolicy)->spec;
    assert_int_equal(s->action, cfg_AuthzAction_DENY);
    assert_int_equal(s->rules.n, 1);
    assert_string_equal(s->rules.v[0].from.v[0].source->namespaces.v[0], "bar");
    assert_string_equal(s->rules.v[0].to.v[0].operation->methods.v[0], "POST");
    assert_string_equal(s->rules.v[0].to.v[0].operation->ports.v[0], "8080");
    assert_string_equal(s->rules.v[0].when.v[0].key, "request.auth.claims[iss]");
    tu_free(&r);
}

static void test_ap_tutorial_misspelled_field(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load_file(tu_shared("tutorials/istio-notes-20.yaml"), &r);
    assert_int_equal(r.nobjs, 0);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "istio-notes-20.yaml", "AuthorizationPolicy bookinfo/authdenypolicy",
                             "spec.rules[0].from[0].source", "unknown field \"namespace\"",
                             "did you mean \"namespaces\"", NULL));
    tu_free(&r);
}

static void test_ap_tutorials_valid(void **state)
{
    (void)state;
    static const char *const files[] = {
        "tutorials/istio-notes-16.yaml",         "tutorials/istio-notes-17.yaml",
        "tutorials/istio-notes-18.yaml",         "tutorials/istio-notes-19.yaml",
        "tutorials/istio-notes-21.yaml",         "tutorials/modern-devops-ch15-04.yaml",
        "tutorials/modern-devops-ch15-05.yaml",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        tu_result_t r;
        tu_load_file(tu_shared(files[i]), &r);
        TU_EXPECT_OK(&r);
        assert_int_equal(r.nobjs, 1);
        tu_free(&r);
    }
}

static void test_ap_service_accounts(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [bar/sa]\n"
                    "        namespaces: [bar]\n",
                 "spec.rules[0].from[0].source:", "Cannot set serviceAccounts with namespaces or principals");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        notServiceAccounts: [sa]\n"
                    "        principals: [x]\n",
                 "spec.rules[0].from[0].source:", "Cannot set serviceAccounts");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"a/b/c\"]\n",
                 "spec.rules[0].from[0].source.serviceAccounts[0]:", "namespace/name");
    tu_expect_loads(AP "spec:\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [ns/sa, sa]\n");
}

static void test_ap_custom(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  action: CUSTOM\n  rules:\n  - {}\n", "spec.provider.name:",
                 "must not be empty with action CUSTOM");
    tu_expect_rejected(AP "spec:\n  action: CUSTOM\n  provider:\n    name: ext\n", "spec.rules:",
                 "CUSTOM action without rules");
    tu_expect_rejected(AP "spec:\n  action: ALLOW\n  provider:\n    name: ext\n  rules:\n  - {}\n",
                 "spec.provider:", "only with CUSTOM");
    tu_expect_rejected(AP "spec:\n  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - from:\n"
                    "    - source:\n        principals: [a]\n",
                 "spec.rules[0].from[0].source.principals:", "not supported with CUSTOM");
    tu_expect_rejected(AP "spec:\n  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - when:\n"
                    "    - key: request.auth.claims[iss]\n      values: [x]\n",
                 "spec.rules[0].when[0].key:", "not supported with CUSTOM");
    tu_expect_loads(AP "spec:\n  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - to:\n"
                 "    - operation:\n        paths: [/admin]\n");
}

static void test_ap_deny_needs_rules(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  action: DENY\n", "spec.rules:", "DENY action without rules");
    tu_expect_loads(AP "spec:\n  action: DENY\n  rules:\n  - {}\n");
    /* an ALLOW policy without rules allows nothing: valid */
    tu_expect_loads(AP "spec: {}\n");
}

static void test_ap_from_to_when_not_empty(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  rules:\n  - from: []\n", "spec.rules[0].from:", "must not be empty");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to: []\n", "spec.rules[0].to:", "must not be empty");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when: []\n", "spec.rules[0].when:", "must not be empty");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - {}\n", "spec.rules[0].from[0].source:",
                 "is required");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - {}\n", "spec.rules[0].to[0].operation:",
                 "is required");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source: {}\n", "spec.rules[0].from[0].source:",
                 "source must not be empty");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - operation: {}\n",
                 "spec.rules[0].to[0].operation:", "operation must not be empty");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        principals: [\"\"]\n",
                 "spec.rules[0].from[0].source.principals[0]:", "empty value not allowed");
}

static void test_ap_ip_blocks(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [1.2.3.4, 10.0.0.0/33]\n",
                 "spec.rules[0].from[0].source.ipBlocks[1]:", "bad CIDR range");
    tu_expect_rejected(AP "spec:\n  rules:\n  - from:\n    - source:\n        notRemoteIpBlocks: [1.2.3]\n",
                 "spec.rules[0].from[0].source.notRemoteIpBlocks[0]:", "bad IP address");
    tu_expect_loads(AP "spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"2001:db8::/32\", "
                 "\"::1\"]\n");
}

static void test_ap_operation(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - operation:\n        ports: [http]\n",
                 "spec.rules[0].to[0].operation.ports[0]:", "bad port");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - operation:\n        notPorts: [\"70000\"]\n",
                 "spec.rules[0].to[0].operation.notPorts[0]:", "bad port");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/{name}/{*}\"]\n",
                 "spec.rules[0].to[0].operation.paths[0]:", "path template");
    tu_expect_rejected(AP "spec:\n  rules:\n  - to:\n    - operation:\n        notPaths: [\"/a/*/{**}\"]\n",
                 "spec.rules[0].to[0].operation.notPaths[0]:", "path template");
    tu_expect_loads(AP "spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/{*}/x\", \"/x/{**}\", "
                 "\"/prefix/*\"]\n");
}

static void test_ap_conditions(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: source.color\n      values: [red]\n",
                 "spec.rules[0].when[0].key:", "unknown attribute");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: destination.namespace\n      values: [a]\n",
                 "spec.rules[0].when[0].key:", "replaced by");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: request.headers\n      values: [a]\n",
                 "spec.rules[0].when[0].key:", "bad key");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: request.headers[]\n      values: [a]\n",
                 "spec.rules[0].when[0].key:", "bad key");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: source.ip\n      values: [not-an-ip]\n",
                 "spec.rules[0].when[0].values[0]:", "bad IP address");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: destination.port\n      notValues: [\"x\"]\n",
                 "spec.rules[0].when[0].notValues[0]:", "bad port");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - key: source.namespace\n",
                 "spec.rules[0].when[0]:", "at least one of values or notValues");
    tu_expect_rejected(AP "spec:\n  rules:\n  - when:\n    - values: [a]\n", "spec.rules[0].when[0].key",
                 "required field is missing");
    tu_expect_loads(AP "spec:\n  rules:\n  - when:\n    - key: source.trustDomain\n      values: [cluster.local]\n"
                 "    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n"
                 "      values: [books]\n");
}

static void test_ap_targets(void **state)
{
    (void)state;
    tu_expect_rejected(AP "spec:\n  selector:\n    matchLabels:\n      a: b\n  targetRef:\n    kind: Service\n"
                    "    name: foo\n",
                 "spec:", "only one of targetRefs or selector can be set");
    tu_expect_rejected(AP "spec:\n  targetRef:\n    kind: Service\n    name: foo\n    namespace: bar\n",
                 "spec.targetRef.namespace:", "cross namespace referencing is not currently supported");
    tu_expect_rejected(AP "spec:\n  targetRefs:\n  - group: apps\n    kind: Deployment\n    name: foo\n",
                 "spec.targetRefs[0]:", "cannot target apps/Deployment");
    tu_expect_rejected(AP "spec:\n  targetRef:\n    group: \"__\"\n    kind: Service\n    name: foo\n",
                 "spec.targetRef.group:", "DNS subdomain");
    tu_expect_rejected(AP "spec:\n  targetRef:\n    kind: Serv_ice\n    name: foo\n", "spec.targetRef.kind:",
                 "kind name");
    tu_expect_loads(AP "spec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n"
                 "    name: gw\n  - kind: Service\n    name: svc\n");
}

static void test_ap_dry_run(void **state)
{
    (void)state;
    const char *head = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n"
                       "  name: p\n  annotations:\n    istio.io/dry-run: ";
    char buf[512];
    snprintf(buf, sizeof(buf), "%s\"true\"\nspec:\n  action: DENY\n  rules:\n  - {}\n", head);
    tu_expect_loads(buf);
    snprintf(buf, sizeof(buf), "%s\"maybe\"\nspec:\n  action: DENY\n  rules:\n  - {}\n", head);
    tu_expect_rejected(buf, "metadata.annotations[istio.io/dry-run]:", "must be \"true\" or \"false\"");
    snprintf(buf, sizeof(buf), "%s\"true\"\nspec:\n  action: AUDIT\n", head);
    tu_expect_rejected(buf, "metadata.annotations[istio.io/dry-run]:", "ALLOW or DENY, found AUDIT");
}

static void test_ap_deny_http_only_warns(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(AP "spec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n",
            "t.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    assert_int_equal(r.nwarnings, 1);
    assert_non_null(strstr(r.warnings[0], "spec.rules[0]"));
    assert_non_null(strstr(r.warnings[0], "TCP"));
    tu_free(&r);
    /* naming a port makes the rule meaningful on TCP: no warning */
    tu_load(AP "spec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n"
               "        ports: [\"80\"]\n",
            "t.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nwarnings, 0);
    tu_free(&r);
}

static void test_ap_crd_files(void **state)
{
    (void)state;
    expect_file_valid("istio/pkg/config/validation/testdata/crds/authz-valid.yaml");
    expect_file_invalid("istio/pkg/config/validation/testdata/crds/authz-invalid.yaml");
}

/* ---- RequestAuthentication ---- */

static void test_ra_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(RA "spec:\n  selector:\n    matchLabels:\n      app: web\n  jwtRules:\n"
               "  - issuer: https://issuer.example\n    jwksUri: https://issuer.example/keys\n"
               "    audiences: [web]\n    fromHeaders:\n    - name: x-jwt\n      prefix: \"Bearer \"\n"
               "    outputClaimToHeaders:\n    - header: x-sub\n      claim: sub\n    timeout: 5s\n"
               "    presence: REQUIRED\n    forwardOriginalToken: true\n",
            "ra.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_RequestAuthentication *s = CFG_BODY(tu_obj(&r, CFG_RequestAuthentication), RequestAuthentication)->spec;
    assert_int_equal(s->jwtRules.n, 1);
    const cfg_JWTRule *j = &s->jwtRules.v[0];
    assert_string_equal(j->issuer, "https://issuer.example");
    assert_string_equal(j->jwksUri, "https://issuer.example/keys");
    assert_string_equal(j->fromHeaders.v[0].prefix, "Bearer ");
    assert_string_equal(j->outputClaimToHeaders.v[0].claim, "sub");
    assert_true(j->timeout == 5 * CFG_NS_PER_S);
    assert_int_equal(j->presence, cfg_JwtPresence_REQUIRED);
    assert_true(j->forwardOriginalToken);
    tu_free(&r);
}

static void test_ra_issuer_and_keys(void **state)
{
    (void)state;
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - audiences: [a]\n", "spec.jwtRules[0].issuer:",
                 "issuer must be set");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwksUri: ftp://keys.example/k\n",
                 "spec.jwtRules[0].jwksUri:", "http");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwks_uri: keys.example/k\n",
                 "spec.jwtRules[0].jwks_uri:", "scheme");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwksUri: https://k.example/k\n"
                    "    jwks: '{\"keys\":[]}'\n",
                 "spec.jwtRules[0]:", "only one of jwks or jwksUri can be set");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwks: 'not json'\n",
                 "spec.jwtRules[0].jwks:", "jwks parse error");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\":[{\"kty\":\"XYZ\"}]}'\n",
                 "spec.jwtRules[0].jwks:", "kty");
    tu_expect_loads(RA "spec:\n  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\","
                 "\"n\":\"xyz\"}]}'\n");
    /* jwksUri alone identifies the issuer */
    tu_expect_loads(RA "spec:\n  jwtRules:\n  - jwksUri: https://k.example/k\n");
}

static void test_ra_locations_and_headers(void **state)
{
    (void)state;
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    fromHeaders:\n    - prefix: b\n",
                 "spec.jwtRules[0].fromHeaders[0].name", "required field is missing");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    fromHeaders:\n    - name: \"x y\"\n",
                 "spec.jwtRules[0].fromHeaders[0].name:", "not a valid HTTP header name");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    fromParams: [\"\"]\n",
                 "spec.jwtRules[0].fromParams[0]", "must not be empty");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    outputClaimToHeaders:\n"
                    "    - header: \":authority\"\n      claim: x\n",
                 "spec.jwtRules[0].outputClaimToHeaders[0].header:", "^[-_A-Za-z0-9]+$");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    outputClaimToHeaders:\n    - ~\n",
                 "spec.jwtRules[0].outputClaimToHeaders[0]", "object");
}

static void test_ra_timeout_and_presence(void **state)
{
    (void)state;
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    timeout: 500us\n",
                 "spec.jwtRules[0].timeout:", "greater than 1ms");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    timeout: 1500us\n",
                 "spec.jwtRules[0].timeout:", "ms precision");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    timeout: apple\n",
                 "spec.jwtRules[0].timeout:", "invalid duration");
    tu_expect_rejected(RA "spec:\n  jwtRules:\n  - issuer: a\n    presence: MANDATORY\n",
                 "spec.jwtRules[0].presence:", "Unsupported value: \"MANDATORY\"");
}

static void test_ra_target_refs_limit(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof(buf), RA "spec:\n  targetRefs:\n");
    for (int i = 0; i < 17; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "  - kind: Service\n    name: s%d\n", i);
    tu_expect_rejected(buf, "spec.targetRefs:", "at most 16");
}

static void test_ra_crd_files(void **state)
{
    (void)state;
    expect_file_valid("istio/pkg/config/validation/testdata/crds/reqauth-valid.yaml");
    expect_file_invalid("istio/pkg/config/validation/testdata/crds/reqauth-invalid.yaml");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pa_decode),
        cmocka_unit_test(test_pa_port_level_needs_selector),
        cmocka_unit_test(test_pa_port_keys),
        cmocka_unit_test(test_pa_mode_and_selector),
        cmocka_unit_test(test_pa_empty_selector_warns),
        cmocka_unit_test(test_pa_dry_run_refused),
        cmocka_unit_test(test_pa_crd_files),
        cmocka_unit_test(test_ap_decode),
        cmocka_unit_test(test_ap_tutorial_misspelled_field),
        cmocka_unit_test(test_ap_tutorials_valid),
        cmocka_unit_test(test_ap_service_accounts),
        cmocka_unit_test(test_ap_custom),
        cmocka_unit_test(test_ap_deny_needs_rules),
        cmocka_unit_test(test_ap_from_to_when_not_empty),
        cmocka_unit_test(test_ap_ip_blocks),
        cmocka_unit_test(test_ap_operation),
        cmocka_unit_test(test_ap_conditions),
        cmocka_unit_test(test_ap_targets),
        cmocka_unit_test(test_ap_dry_run),
        cmocka_unit_test(test_ap_deny_http_only_warns),
        cmocka_unit_test(test_ap_crd_files),
        cmocka_unit_test(test_ra_decode),
        cmocka_unit_test(test_ra_issuer_and_keys),
        cmocka_unit_test(test_ra_locations_and_headers),
        cmocka_unit_test(test_ra_timeout_and_presence),
        cmocka_unit_test(test_ra_target_refs_limit),
        cmocka_unit_test(test_ra_crd_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
