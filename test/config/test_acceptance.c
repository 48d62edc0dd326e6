/*
 * Acceptance: the real-world configuration in ../shared/testdata loads or is
 * rejected exactly as its README says, and rejections name the field.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../testutil.h"

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

static void test_tutorials_that_must_load(void **state)
{
    (void)state;
    int bad = 0;
    for (const char *const *f = tutorials_valid; *f; f++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "tutorials/%s", *f);
        tu_result_t r;
        tu_load_file(tu_shared(rel), &r);
        if (r.nerrors != 0 || r.nobjs == 0) {
            fprintf(stderr, "%s: expected to load\n", *f);
            tu_dump(&r);
            bad++;
        }
        tu_free(&r);
    }
    assert_int_equal(bad, 0);
}

static void expect_rejected(const char *file, const char *const *needles)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "tutorials/%s", file);
    tu_result_t r;
    tu_load_file(tu_shared(rel), &r);
    if (r.nfailed == 0)
        fail_msg("%s: expected a rejection", file);
    for (const char *const *n = needles; *n; n++) {
        bool found = false;
        for (int i = 0; i < r.nerrors && !found; i++)
            found = strstr(r.errors[i], *n) != NULL;
        if (!found) {
            tu_dump(&r);
            fail_msg("%s: no error mentions \"%s\"", file, *n);
        }
    }
    tu_free(&r);
}

static void test_tutorial_label_value_not_string(void **state)
{
    (void)state;
    const char *n[] = {"istio-notes-06.yaml:", "DestinationRule default/reviews-destination",
                       "spec.subsets[1].labels[trafficPolicy]: must be a string, got object", NULL};
    expect_rejected("istio-notes-06.yaml", n);
}

static void test_tutorial_namespace_is_not_a_field(void **state)
{
    (void)state;
    const char *n[] = {"AuthorizationPolicy bookinfo/authdenypolicy",
                       "spec.rules[0].from[0].source: unknown field \"namespace\" (did you mean "
                       "\"namespaces\"?)",
                       NULL};
    expect_rejected("istio-notes-20.yaml", n);
}

static void test_tutorial_route_outside_http(void **state)
{
    (void)state;
    const char *n[] = {"VirtualService blog-app/blog-app", "spec: unknown field \"route\"", NULL};
    expect_rejected("modern-devops-ch15-02.yaml", n);
}

static void test_tutorial_server_without_hosts_or_protocol(void **state)
{
    (void)state;
    const char *n[] = {"Gateway blog-app/blog-app-gateway", "spec.servers[0]", "hosts",
                       "spec.servers[0].port", "protocol", NULL};
    expect_rejected("modern-devops-ch15-03.yaml", n);
}

static void test_tutorial_canary_as_printed(void **state)
{
    (void)state;
    const char *n[] = {"VirtualService blog-app/ratings", "spec.http[0].route[0]",
                       "unknown field \"host\"", "spec.http[0].route[0].destination: must not be empty", NULL};
    expect_rejected("modern-devops-ch15-08-canary-as-printed.yaml", n);
}

static void test_tutorial_mirror_as_printed(void **state)
{
    (void)state;
    const char *n[] = {"VirtualService blog-app/ratings",
                       "spec.http[0].route[0].destination: unknown field \"weight\"",
                       "spec.http[0].mirror: unknown field \"mirror_percent\"", NULL};
    expect_rejected("modern-devops-ch15-10-mirror-as-printed.yaml", n);
}

static void test_tutorial_broken_yaml_gives_line(void **state)
{
    (void)state;
    const char *n[] = {"devsecops-prod-01.yaml:", NULL};
    expect_rejected("devsecops-prod-01.yaml", n);
    tu_result_t r;
    tu_load_file(tu_shared("tutorials/devsecops-prod-01.yaml"), &r);
    /* every document of the file is broken the same way; each names its line */
    for (int i = 0; i < r.nerrors; i++)
        assert_non_null(strstr(r.errors[i], "devsecops-prod-01.yaml:"));
    assert_int_equal(r.nobjs, 0);
    tu_free(&r);
}

static const char *const crd_kinds[] = {"authz", "destinationrule", "peerauth", "reqauth",
                                        "serviceentry", NULL};

static void test_istio_valid_cases_load(void **state)
{
    (void)state;
    int bad = 0;
    for (const char *const *k = crd_kinds; *k; k++) {
        char name[128];
        snprintf(name, sizeof(name), "%s-valid.yaml", *k);
        tu_result_t r;
        char rel[256];
        snprintf(rel, sizeof(rel), "istio/pkg/config/validation/testdata/crds/%s", name);
        tu_load_stripped(rel, &r);
        int docs = r.ndocs;
        if (r.nerrors != 0 || r.nobjs != docs || docs == 0) {
            fprintf(stderr, "%s: %d of %d documents loaded\n", name, r.nobjs, docs);
            tu_dump(&r);
            bad++;
        }
        tu_free(&r);
    }
    assert_int_equal(bad, 0);
}

static void test_istio_invalid_cases_rejected(void **state)
{
    (void)state;
    int bad = 0;
    for (const char *const *k = crd_kinds; *k; k++) {
        char name[128];
        snprintf(name, sizeof(name), "%s-invalid.yaml", *k);
        tu_result_t r;
        char rel[256];
        snprintf(rel, sizeof(rel), "istio/pkg/config/validation/testdata/crds/%s", name);
        tu_load_stripped(rel, &r);
        int docs = r.ndocs;
        if (r.nobjs != 0 || r.nfailed != docs || docs == 0) {
            fprintf(stderr, "%s: %d of %d documents rejected; accepted:\n", name, r.nfailed, docs);
            for (int i = 0; i < r.nobjs; i++)
                fprintf(stderr, "  %s %s/%s (line %u)\n", cfg_kind_info(r.objs[i]->kind)->name,
                        r.objs[i]->namespace, r.objs[i]->name, r.objs[i]->line);
            bad++;
        }
        tu_free(&r);
    }
    assert_int_equal(bad, 0);
}

static int load_tree(const char *dir, int *objs)
{
    int errors = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 1;
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
            errors += load_tree(path, objs);
            continue;
        }
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".yaml") != 0)
            continue;
        tu_result_t r;
        tu_load_file(path, &r);
        if (r.nerrors) {
            fprintf(stderr, "%s:\n", path);
            tu_dump(&r);
        }
        errors += r.nerrors;
        *objs += r.nobjs;
        tu_free(&r);
    }
    closedir(d);
    return errors;
}

static void test_istio_samples_load(void **state)
{
    (void)state;
    int objs = 0;
    assert_int_equal(load_tree(tu_shared("istio/samples"), &objs), 0);
    assert_true(objs > 50); /* bookinfo's rules and services */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tutorials_that_must_load),
        cmocka_unit_test(test_tutorial_label_value_not_string),
        cmocka_unit_test(test_tutorial_namespace_is_not_a_field),
        cmocka_unit_test(test_tutorial_route_outside_http),
        cmocka_unit_test(test_tutorial_server_without_hosts_or_protocol),
        cmocka_unit_test(test_tutorial_canary_as_printed),
        cmocka_unit_test(test_tutorial_mirror_as_printed),
        cmocka_unit_test(test_tutorial_broken_yaml_gives_line),
        cmocka_unit_test(test_istio_valid_cases_load),
        cmocka_unit_test(test_istio_invalid_cases_rejected),
        cmocka_unit_test(test_istio_samples_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
