/* Tests of the generic decoder and loader: what a user sees for bad input. */
#include <string.h>

#include "../testutil.h"

static void test_unknown_field_with_hint(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1\n"
            "kind: VirtualService\n"
            "metadata:\n"
            "  name: reviews\n"
            "  namespace: prod\n"
            "spec:\n"
            "  hosts: [reviews]\n"
            "  http:\n"
            "  - route:\n"
            "    - destination:\n"
            "        host: reviews\n"
            "    mirror_percentage: {value: 50}\n",
            "vs.yaml", &r);
    assert_int_equal(r.nobjs, 0);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "vs.yaml:12:", "VirtualService prod/reviews", "spec.http[0]",
                             "unknown field \"mirror_percentage\"", "did you mean \"mirrorPercentage\"",
                             NULL));
    tu_free(&r);
}

static void test_wrong_types_name_the_field(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1beta1\n"
            "kind: DestinationRule\n"
            "metadata: {name: r}\n"
            "spec:\n"
            "  host: reviews\n"
            "  subsets:\n"
            "  - name: v1\n"
            "    labels:\n"
            "      version: 1\n",
            "dr.yaml", &r);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "dr.yaml:9:", "DestinationRule default/r",
                             "spec.subsets[0].labels[version]", "must be a string, got integer", NULL));
    tu_free(&r);
}

static void test_enum_and_duration_errors(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: security.istio.io/v1\n"
            "kind: PeerAuthentication\n"
            "metadata: {name: p, namespace: foo}\n"
            "spec:\n"
            "  mtls: {mode: BLAH}\n",
            NULL, &r);
    assert_true(tu_error_has(&r, "spec.mtls.mode", "Unsupported value: \"BLAH\"", "\"STRICT\"", NULL));
    tu_free(&r);
    tu_load("apiVersion: networking.istio.io/v1\n"
            "kind: VirtualService\n"
            "metadata: {name: v}\n"
            "spec:\n"
            "  hosts: [a]\n"
            "  http:\n"
            "  - timeout: 5 seconds\n"
            "    route: [{destination: {host: a}}]\n",
            NULL, &r);
    assert_true(tu_error_has(&r, "spec.http[0].timeout", "invalid duration \"5 seconds\"", NULL));
    tu_free(&r);
}

static void test_durations(void **state)
{
    (void)state;
    const char *err = NULL;
    int64_t ns = 0;
    assert_int_equal(cfg_parse_duration("5s", &ns, &err), 0);
    assert_int_equal(ns, 5 * CFG_NS_PER_S);
    assert_int_equal(cfg_parse_duration("0.1s", &ns, &err), 0);
    assert_int_equal(ns, 100 * CFG_NS_PER_MS);
    assert_int_equal(cfg_parse_duration("100ms", &ns, &err), 0);
    assert_int_equal(ns, 100 * CFG_NS_PER_MS);
    assert_int_equal(cfg_parse_duration("1h", &ns, &err), 0);
    assert_int_equal(ns, 3600 * CFG_NS_PER_S);
    assert_int_equal(cfg_parse_duration("1h30m", &ns, &err), 0);
    assert_int_equal(ns, 5400 * CFG_NS_PER_S);
    assert_int_equal(cfg_parse_duration("1.5us", &ns, &err), 0);
    assert_int_equal(ns, 1500);
    assert_int_equal(cfg_parse_duration("0", &ns, &err), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(cfg_parse_duration("5", &ns, &err), -1);
    assert_int_equal(cfg_parse_duration("apple", &ns, &err), -1);
    assert_int_equal(cfg_parse_duration("5d", &ns, &err), -1);
    assert_int_equal(cfg_parse_duration("", &ns, &err), -1);
    assert_int_equal(cfg_parse_duration("99999999999h", &ns, &err), -1);
    char buf[32];
    cfg_format_duration(1500 * CFG_NS_PER_MS, buf, sizeof(buf));
    assert_string_equal(buf, "1500ms");
    cfg_format_duration(2 * CFG_NS_PER_S, buf, sizeof(buf));
    assert_string_equal(buf, "2s");
}

static void test_metadata_rules_and_default_namespace(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1alpha3\n"
            "kind: Gateway\n"
            "metadata:\n"
            "  name: Bad_Name\n"
            "spec:\n"
            "  servers:\n"
            "  - port: {number: 80, name: http, protocol: HTTP}\n"
            "    hosts: ['*']\n",
            "gw.yaml", &r);
    assert_true(tu_error_has(&r, "Gateway default/Bad_Name", "metadata.name", "not a valid name", NULL));
    tu_free(&r);
    tu_load("apiVersion: networking.istio.io/v1alpha3\n"
            "kind: Gateway\n"
            "metadata:\n"
            "  name: gw\n"
            "spec:\n"
            "  servers:\n"
            "  - port: {number: 80, name: http, protocol: HTTP}\n"
            "    hosts: ['*']\n",
            "gw.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    assert_string_equal(r.objs[0]->namespace, "default");
    assert_string_equal(r.objs[0]->name, "gw");
    assert_string_equal(r.objs[0]->api_version, "networking.istio.io/v1alpha3");
    assert_int_equal(r.objs[0]->line, 1);
    tu_free(&r);
}

static void test_versions_kinds_and_lists(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\nspec: {}\n",
            NULL, &r);
    assert_true(tu_error_has(&r, "version \"v2\" of VirtualService is not served", NULL));
    tu_free(&r);
    tu_load("apiVersion: security.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {}\n",
            NULL, &r);
    assert_true(tu_error_has(&r, "not an API group of VirtualService", "networking.istio.io", NULL));
    tu_free(&r);
    /* a kind meshd does not read is skipped with a warning, not an error */
    tu_load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {}\n", NULL, &r);
    assert_int_equal(r.nerrors, 0);
    assert_int_equal(r.nobjs, 0);
    assert_int_equal(r.nwarnings, 1);
    tu_free(&r);
    /* kubectl's List */
    tu_load("apiVersion: v1\nkind: List\nitems:\n"
            "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: prod}\n"
            "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: prod}\n  data: {a: b}\n",
            NULL, &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 2);
    assert_string_equal(r.objs[0]->namespace, "");
    assert_string_equal(r.objs[1]->namespace, "prod");
    tu_free(&r);
}

static void test_broken_document_does_not_stop_others(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
            "---\n"
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b\n"
            "---\n"
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n",
            "ns.yaml", &r);
    assert_int_equal(r.nobjs, 2);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, "ns.yaml:", "cannot parse document", NULL));
    tu_free(&r);
}

static void test_json_input_same_path(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("{\"apiVersion\": \"networking.istio.io/v1\", \"kind\": \"DestinationRule\","
            " \"metadata\": {\"name\": \"r\", \"namespace\": \"x\"},"
            " \"spec\": {\"host\": \"reviews\", \"subsets\": [{\"name\": \"v1\", \"labels\": {\"version\": \"v1\"}}]}}",
            "dr.json", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    const cfg_DestinationRule *dr = CFG_BODY(r.objs[0], DestinationRule)->spec;
    assert_string_equal(dr->host, "reviews");
    assert_int_equal(dr->subsets.n, 1);
    assert_string_equal(dr->subsets.v[0].name, "v1");
    assert_string_equal(dr->subsets.v[0].labels.v[0].str, "v1");
    tu_free(&r);
}

static void test_alias_bomb_is_bounded(void **state)
{
    (void)state;
    tu_result_t r;
    /* each level doubles: 2^30 nodes if expanded naively */
    char anchors[2048];
    size_t n = (size_t)snprintf(anchors, sizeof(anchors), "x0: &a0 {k: v}\n");
    for (int i = 1; i <= 30; i++)
        n += (size_t)snprintf(anchors + n, sizeof(anchors) - n, "x%d: &a%d [*a%d, *a%d]\n", i, i,
                              i - 1, i - 1);
    char text[4096];
    snprintf(text, sizeof(text), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n%s", anchors);
    tu_load(text, NULL, &r);
    /* ConfigMap is lenient: the unknown x* fields are ignored without expansion */
    assert_int_equal(r.ndocs, 1);
    assert_int_equal(r.nobjs, 1);
    tu_free(&r);
    /* a free-form field holding the bomb is refused, not copied */
    snprintf(text, sizeof(text),
             "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n%sstatus: {x: *a30}\n", anchors);
    tu_load(text, NULL, &r);
    assert_int_equal(r.ndocs, 1);
    assert_int_equal(r.nobjs, 0);
    assert_true(tu_error_has(&r, "status", "too large", NULL));
    tu_free(&r);
}

static void test_compact_object_shares_equal_strings(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: r, namespace: prod, labels: {app: r}}\n"
            "spec:\n"
            "  hosts: [reviews.prod.svc.cluster.local]\n"
            "  http:\n"
            "  - route:\n"
            "    - destination: {host: reviews.prod.svc.cluster.local, subset: v1}\n"
            "      weight: 80\n"
            "    - destination: {host: reviews.prod.svc.cluster.local, subset: v2}\n"
            "      weight: 20\n"
            "    timeout: 1.5s\n",
            NULL, &r);
    TU_EXPECT_OK(&r);
    const cfg_VirtualService *vs = CFG_BODY(r.objs[0], VirtualService)->spec;
    const cfg_HTTPRoute *h = &vs->http.v[0];
    assert_string_equal(vs->hosts.v[0], "reviews.prod.svc.cluster.local");
    assert_string_equal(h->route.v[1].destination->subset, "v2");
    assert_int_equal(h->route.v[1].weight, 20);
    assert_int_equal(h->timeout, 1500 * CFG_NS_PER_MS);
    assert_true(CFG_HAS(h, HTTPRoute, timeout));
    assert_false(CFG_HAS(h, HTTPRoute, retries));
    /* stored once for the whole object */
    assert_ptr_equal(vs->hosts.v[0], h->route.v[0].destination->host);
    assert_ptr_equal(h->route.v[0].destination->host, h->route.v[1].destination->host);
    assert_string_equal(r.objs[0]->namespace, "prod");
    assert_string_equal(r.objs[0]->meta->labels.v[0].str, "r");
    /* one allocation of exactly the object's size */
    assert_true(cfg_object_footprint(r.objs[0]) < 2048);
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_field_with_hint),
        cmocka_unit_test(test_wrong_types_name_the_field),
        cmocka_unit_test(test_enum_and_duration_errors),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_metadata_rules_and_default_namespace),
        cmocka_unit_test(test_versions_kinds_and_lists),
        cmocka_unit_test(test_broken_document_does_not_stop_others),
        cmocka_unit_test(test_json_input_same_path),
        cmocka_unit_test(test_alias_bomb_is_bounded),
        cmocka_unit_test(test_compact_object_shares_equal_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
