/*
 * controlplane/informer_decode.c: one line of a watch stream into an event
 * and a typed object, as the informer sees it, without an API server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../controlplane/informer.h"
#include "../testutil.h"

static int decode(const char *line, cfg_kind_t kind, const char *av, informer_event_t *ev, char *err)
{
    informer_filter_fn keep = kind == CFG_Secret ? informer_secret_wanted : NULL;
    return informer_decode_event(line, strlen(line), kind, av, keep, ev, err, 256);
}

static void test_added_without_kind_takes_the_watched_kind(void **state)
{
    (void)state;
    informer_event_t ev;
    char err[256];
    assert_int_equal(decode("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"web\",\"namespace\":\"shop\","
                            "\"resourceVersion\":\"42\"},\"spec\":{\"ports\":[{\"port\":80}]}}}",
                            CFG_Service, "v1", &ev, err),
                     0);
    assert_int_equal(ev.type, INFORMER_ADDED);
    assert_string_equal(ev.resource_version, "42");
    assert_string_equal(ev.ns, "shop");
    assert_string_equal(ev.name, "web");
    assert_non_null(ev.obj);
    assert_int_equal(ev.obj->kind, CFG_Service);
    assert_string_equal(ev.obj->api_version, "v1");
    assert_int_equal(CFG_BODY(ev.obj, Service)->spec->ports.v[0].port, 80);
    informer_event_clear(&ev);
}

static void test_invalid_mesh_object_is_an_event_with_its_error(void **state)
{
    (void)state;
    informer_event_t ev;
    char err[256];
    assert_int_equal(decode("{\"type\":\"MODIFIED\",\"object\":{\"apiVersion\":\"networking.istio.io/v1\","
                            "\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"r\",\"namespace\":\"d\","
                            "\"resourceVersion\":\"7\"},\"spec\":{\"hosts\":[\"a\"],\"http\":[{\"route\":[{"
                            "\"destination\":{\"host\":\"a\"},\"weight\":-1}]}]}}}",
                            CFG_VirtualService, "networking.istio.io/v1", &ev, err),
                     0);
    assert_int_equal(ev.type, INFORMER_MODIFIED);
    assert_null(ev.obj);
    assert_non_null(ev.error);
    assert_non_null(strstr(ev.error, "VirtualService d/r: spec.http[0].route[0].weight"));
    informer_event_clear(&ev);
}

static void test_deleted_bookmark_and_error(void **state)
{
    (void)state;
    informer_event_t ev;
    char err[256];
    assert_int_equal(decode("{\"type\":\"DELETED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\","
                            "\"namespace\":\"n\",\"resourceVersion\":\"9\"}}}",
                            CFG_Pod, "v1", &ev, err),
                     0);
    assert_int_equal(ev.type, INFORMER_DELETED);
    assert_string_equal(ev.name, "p");
    assert_null(ev.obj);
    informer_event_clear(&ev);

    assert_int_equal(decode("{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
                            "\"metadata\":{\"resourceVersion\":\"12345\"}}}",
                            CFG_Pod, "v1", &ev, err),
                     0);
    assert_int_equal(ev.type, INFORMER_BOOKMARK);
    assert_string_equal(ev.resource_version, "12345");
    informer_event_clear(&ev);

    assert_int_equal(decode("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                            "\"status\":\"Failure\",\"message\":\"too old resource version: 5 (9)\","
                            "\"reason\":\"Expired\",\"code\":410}}",
                            CFG_Pod, "v1", &ev, err),
                     0);
    assert_int_equal(ev.type, INFORMER_ERROR);
    assert_int_equal(ev.code, 410);
    assert_string_equal(ev.error, "too old resource version: 5 (9)");
    informer_event_clear(&ev);
}

static void test_secret_filter(void **state)
{
    (void)state;
    informer_event_t ev;
    char err[256];
    assert_int_equal(decode("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"db\",\"namespace\":\"n\","
                            "\"resourceVersion\":\"1\"},\"type\":\"Opaque\",\"data\":{\"p\":\"eA==\"}}}",
                            CFG_Secret, "v1", &ev, err),
                     0);
    assert_true(ev.filtered);
    assert_null(ev.obj);
    assert_null(ev.error);
    informer_event_clear(&ev);
    assert_int_equal(decode("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"cacerts\",\"namespace\":"
                            "\"istio-system\",\"resourceVersion\":\"1\"},\"type\":\"Opaque\"}}",
                            CFG_Secret, "v1", &ev, err),
                     0);
    assert_false(ev.filtered);
    assert_non_null(ev.obj);
    informer_event_clear(&ev);
}

static void test_malformed_lines_are_errors(void **state)
{
    (void)state;
    static const struct {
        const char *line, *why;
    } bad[] = {
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":", "not JSON"},
        {"[1,2]", "must be a JSON object"},
        {"{\"object\":{}}", "no \"type\""},
        {"{\"type\":\"ADDED\"}", "has no \"object\""},
        {"{\"type\":\"RENAMED\",\"object\":{}}", "unknown event type \"RENAMED\""},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"x\"}}}", "no metadata.resourceVersion"},
        {"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}", "no metadata.name"},
        {"{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}} {}", "more than one JSON value"},
        {"", "empty line"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        informer_event_t ev;
        char err[256];
        if (decode(bad[i].line, CFG_ConfigMap, "v1", &ev, err) != -1)
            fail_msg("accepted: %s", bad[i].line);
        if (strstr(err, bad[i].why) == NULL)
            fail_msg("%s: error \"%s\" does not say \"%s\"", bad[i].line, err, bad[i].why);
        assert_null(ev.obj);
        assert_null(ev.error);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_added_without_kind_takes_the_watched_kind),
        cmocka_unit_test(test_invalid_mesh_object_is_an_event_with_its_error),
        cmocka_unit_test(test_deleted_bookmark_and_error),
        cmocka_unit_test(test_secret_filter),
        cmocka_unit_test(test_malformed_lines_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
