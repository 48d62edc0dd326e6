/* Tests of the rule helpers every validator shares (config/rules.c). */
#include <string.h>

#include "../testutil.h"
#include "../../config/config_internal.h"

static void test_names(void **state)
{
    (void)state;
    assert_true(cfg_is_dns1123_label("reviews-v1"));
    assert_false(cfg_is_dns1123_label("Reviews"));
    assert_false(cfg_is_dns1123_label("-a"));
    assert_false(cfg_is_dns1123_label("a.b"));
    assert_true(cfg_is_dns1123_subdomain("reviews.prod.svc"));
    assert_false(cfg_is_dns1123_subdomain("reviews..prod"));
    assert_false(cfg_is_dns1123_subdomain(""));
    /* only the whole name is limited (253), not each part, as Kubernetes does */
    assert_true(cfg_is_dns1123_subdomain("truncate-canonical-name-pod-0123456789012345678901234567890123456789"));
    assert_false(cfg_is_dns1123_subdomain("a.-b"));
    const char *why = NULL;
    assert_true(cfg_is_label_key("app.kubernetes.io/name", &why));
    assert_true(cfg_is_label_key("version", &why));
    assert_false(cfg_is_label_key("-bad", &why));
    assert_false(cfg_is_label_key("Upper.Case/x", &why));
    assert_true(cfg_is_label_value("", &why));
    assert_true(cfg_is_label_value("v1.2_3-x", &why));
    assert_false(cfg_is_label_value("v 1", &why));
    assert_false(cfg_is_label_value("*", &why));
}

static void test_hosts(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_true(cfg_is_wildcard_domain("*", &why));
    assert_true(cfg_is_wildcard_domain("*.example.com", &why));
    assert_true(cfg_is_wildcard_domain("reviews", &why));
    assert_true(cfg_is_wildcard_domain("reviews.prod.svc.cluster.local", &why));
    assert_false(cfg_is_wildcard_domain("foo.*.com", &why));
    assert_false(cfg_is_wildcard_domain("ex ample.com", &why));
    assert_false(cfg_is_wildcard_domain("", &why));
    assert_false(cfg_is_fqdn("*.example.com", &why));
    assert_true(cfg_is_namespaced_host("*/reviews.prod.svc.cluster.local", &why));
    assert_true(cfg_is_namespaced_host("./*", &why));
    assert_true(cfg_is_namespaced_host("istio-system/*", &why));
    assert_false(cfg_is_namespaced_host("reviews", &why));
    assert_false(cfg_is_namespaced_host("a/b/c", &why));
    assert_true(cfg_is_gateway_ref("mesh", &why));
    assert_true(cfg_is_gateway_ref("istio-system/bookinfo-gateway", &why));
    assert_true(cfg_is_gateway_ref("bookinfo-gateway", &why));
    assert_false(cfg_is_gateway_ref("Bad/Gateway", &why));
}

static void test_addresses_and_ports(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_true(cfg_is_ip("10.1.2.3"));
    assert_true(cfg_is_ip("2001:db8::1"));
    assert_false(cfg_is_ip("10.1.2"));
    assert_true(cfg_is_cidr("10.0.0.0/8"));
    assert_true(cfg_is_cidr("2001:db8::/32"));
    assert_false(cfg_is_cidr("1.2.3.4/99"));
    assert_false(cfg_is_cidr("1.2.3.4/"));
    assert_true(cfg_is_ip_or_cidr("1.2.3.4", &why));
    assert_false(cfg_is_ip_or_cidr("example.com", &why));
    assert_true(cfg_is_port(1));
    assert_true(cfg_is_port(65535));
    assert_false(cfg_is_port(0));
    assert_false(cfg_is_port(65536));
    assert_true(cfg_is_protocol("HTTP"));
    assert_true(cfg_is_protocol("grpc-web"));
    assert_false(cfg_is_protocol("HTTP3"));
}

static void test_regex_re2_semantics(void **state)
{
    (void)state;
    char why[256];
    assert_true(cfg_is_regex("^/api/v[0-9]+/.*$", why, sizeof(why)));
    assert_true(cfg_is_regex("(?i)hello", why, sizeof(why)));
    assert_true(cfg_is_regex("[(?=]", why, sizeof(why))); /* inside a class it is literal */
    assert_false(cfg_is_regex("(a)\\1", why, sizeof(why)));
    assert_non_null(strstr(why, "backreference"));
    assert_false(cfg_is_regex("foo(?=bar)", why, sizeof(why)));
    assert_non_null(strstr(why, "lookahead"));
    assert_false(cfg_is_regex("(?<!x)y", why, sizeof(why)));
    assert_false(cfg_is_regex("(?>a+)b", why, sizeof(why)));
    assert_false(cfg_is_regex("a++", why, sizeof(why)));
    assert_false(cfg_is_regex("(a|b", why, sizeof(why)));
    assert_non_null(strstr(why, "offset"));
}

static void test_urls_and_headers(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_true(cfg_is_url("https://example.com/.well-known/jwks.json", &why));
    assert_false(cfg_is_url("hTPp\\\\blah", &why));
    assert_non_null(strstr(why, "scheme"));
    assert_false(cfg_is_url("ftp://x", &why));
    assert_true(cfg_is_header_name("x-request-id"));
    assert_false(cfg_is_header_name(":authority"));
    assert_false(cfg_is_header_name("bad header"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_addresses_and_ports),
        cmocka_unit_test(test_regex_re2_semantics),
        cmocka_unit_test(test_urls_and_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
