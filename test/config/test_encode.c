/*
 * config/encode.c: typed objects back into JSON. The property: for every
 * valid document of the shared test data, decode -> encode -> decode gives
 * an object whose JSON is equal to the first encoding.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "../testutil.h"

struct rt {
    int objects; /* objects round-tripped */
    int failures;
    const char *what;
};

/* decode(encode(o)) must give one object whose encoding equals encode(o). */
static void round_trip_one(struct rt *rt, const cfg_object_t *o)
{
    json_object *j1 = cfg_object_to_json(o);
    if (j1 == NULL) {
        fprintf(stderr, "%s: %s %s/%s: no JSON\n", rt->what, cfg_kind_info(o->kind)->name,
                o->namespace, o->name);
        rt->failures++;
        return;
    }
    const char *text = json_object_to_json_string_ext(j1, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    tu_result_t r;
    tu_load(text, "encoded.json", &r);
    if (r.nobjs != 1 || r.nerrors != 0) {
        fprintf(stderr, "%s: %s %s/%s: its encoding does not decode:\n%s\n", rt->what,
                cfg_kind_info(o->kind)->name, o->namespace, o->name, text);
        tu_dump(&r);
        rt->failures++;
    } else {
        json_object *j2 = cfg_object_to_json(r.objs[0]);
        if (!json_object_equal(j1, j2)) {
            fprintf(stderr, "%s: %s %s/%s: round trip differs:\n  %s\n  %s\n", rt->what,
                    cfg_kind_info(o->kind)->name, o->namespace, o->name, text,
                    json_object_to_json_string_ext(j2, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            rt->failures++;
        }
        json_object_put(j2);
        rt->objects++;
    }
    tu_free(&r);
    json_object_put(j1);
}

static void round_trip_result(struct rt *rt, const tu_result_t *r)
{
    for (int i = 0; i < r->nobjs; i++)
        round_trip_one(rt, r->objs[i]);
}

static void on_sample(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    struct rt *rt = ud;
    (void)diag;
    if (obj == NULL)
        return;
    round_trip_one(rt, obj);
    cfg_object_unref(obj);
}

static void round_trip_tree(struct rt *rt, const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            round_trip_tree(rt, path);
            continue;
        }
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".yaml") != 0)
            continue;
        rt->what = path;
        assert_true(cfg_load_file(path, NULL, on_sample, rt) >= 0);
    }
    closedir(d);
}

static const char *const tutorials_valid[] = {
    "istio-notes-01.yaml", "istio-notes-02.yaml", "istio-notes-03.yaml", "istio-notes-04.yaml",
    "istio-notes-05.yaml", "istio-notes-07.yaml", "istio-notes-08.yaml", "istio-notes-09.yaml",
    "istio-notes-10.yaml", "istio-notes-11.yaml", "istio-notes-12.yaml", "istio-notes-13.yaml",
    "istio-notes-14.yaml", "istio-notes-15.yaml", "istio-notes-16.yaml", "istio-notes-17.yaml",
    "istio-notes-18.yaml", "istio-notes-19.yaml", "istio-notes-21.yaml",
    "modern-devops-ch15-01.yaml", "modern-devops-ch15-04.yaml", "modern-devops-ch15-05.yaml",
    "modern-devops-ch15-06.yaml", "modern-devops-ch15-07.yaml",
    "modern-devops-ch15-09-canary-fixed.yaml", "modern-devops-ch15-11-mirror-fixed.yaml",
    "modern-devops-ch15-12-https-gateway.yaml", NULL};

static void test_round_trip_tutorials(void **state)
{
    (void)state;
    struct rt rt = {0};
    for (const char *const *f = tutorials_valid; *f; f++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "tutorials/%s", *f);
        tu_result_t r;
        tu_load_file(tu_shared(rel), &r);
        TU_EXPECT_OK(&r);
        rt.what = *f;
        round_trip_result(&rt, &r);
        tu_free(&r);
    }
    assert_int_equal(rt.failures, 0);
    assert_true(rt.objects >= 27);
}

static void test_round_trip_istio_valid_cases(void **state)
{
    (void)state;
    static const char *const kinds[] = {"authz", "destinationrule", "peerauth", "reqauth",
                                        "serviceentry", NULL};
    struct rt rt = {0};
    for (const char *const *k = kinds; *k; k++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "istio/pkg/config/validation/testdata/crds/%s-valid.yaml", *k);
        tu_result_t r;
        tu_load_stripped(rel, &r);
        TU_EXPECT_OK(&r);
        assert_true(r.nobjs > 0);
        rt.what = rel;
        round_trip_result(&rt, &r);
        tu_free(&r);
    }
    assert_int_equal(rt.failures, 0);
}

static void test_round_trip_istio_samples(void **state)
{
    (void)state;
    struct rt rt = {0};
    round_trip_tree(&rt, tu_shared("istio/samples"));
    assert_int_equal(rt.failures, 0);
    assert_true(rt.objects > 50);
}

/* What a reader of /debug/configz sees for one object. */
static void test_encoding_shape(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: networking.istio.io/v1beta1\n"
            "kind: VirtualService\n"
            "metadata: {name: reviews, labels: {app: reviews}}\n"
            "spec:\n"
            "  hosts: [reviews]\n"
            "  http:\n"
            "  - timeout: 1.5s\n"
            "    retries: {attempts: 3, perTryTimeout: 2s}\n"
            "    route:\n"
            "    - destination: {host: reviews, subset: v2, port: {number: 9080}}\n"
            "      weight: 100\n",
            "vs.yaml", &r);
    TU_EXPECT_OK(&r);
    json_object *j = cfg_object_to_json(r.objs[0]);
    const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    assert_string_equal(
        s, "{\"apiVersion\":\"networking.istio.io/v1beta1\",\"kind\":\"VirtualService\","
           "\"metadata\":{\"name\":\"reviews\",\"labels\":{\"app\":\"reviews\"},"
           "\"namespace\":\"default\"},"
           "\"spec\":{\"hosts\":[\"reviews\"],\"http\":[{\"route\":[{\"destination\":"
           "{\"host\":\"reviews\",\"subset\":\"v2\",\"port\":{\"number\":9080}},\"weight\":100}],"
           "\"timeout\":\"1500ms\",\"retries\":{\"attempts\":3,\"perTryTimeout\":\"2s\"}}]}}");
    json_object_put(j);
    tu_free(&r);
}

static void test_encoding_kube_kinds(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: v1\nkind: Service\n"
            "metadata: {name: web, namespace: shop, resourceVersion: \"42\", "
            "ownerReferences: [{kind: X, name: owner, controller: true}]}\n"
            "spec:\n"
            "  type: NodePort\n"
            "  selector: {app: web}\n"
            "  ports: [{name: http, port: 80, targetPort: http}, {name: b, port: 81, targetPort: 8081}]\n"
            "  unmodelled: {a: 1}\n",
            "svc.yaml", &r);
    TU_EXPECT_OK(&r);
    json_object *j = cfg_object_to_json(r.objs[0]);
    const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    /* enums by name, int-or-string both ways, RAW as written, unmodelled fields gone */
    assert_string_equal(
        s, "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\","
           "\"namespace\":\"shop\",\"resourceVersion\":\"42\",\"ownerReferences\":[{\"kind\":\"X\","
           "\"name\":\"owner\",\"controller\":true}]},\"spec\":{\"type\":\"NodePort\",\"selector\":"
           "{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":\"http\"},"
           "{\"name\":\"b\",\"port\":81,\"targetPort\":8081}]}}");
    json_object_put(j);
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoding_shape),
        cmocka_unit_test(test_encoding_kube_kinds),
        cmocka_unit_test(test_round_trip_tutorials),
        cmocka_unit_test(test_round_trip_istio_valid_cases),
        cmocka_unit_test(test_round_trip_istio_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
