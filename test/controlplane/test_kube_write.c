/*
 * meshd's writes against a real API server (envtest): ConfigMaps and Secrets
 * it owns (without clobbering what others own, also under concurrent
 * modification), webhook caBundle and failure policy, TokenReview, and
 * Lease-based leader election.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "../../controlplane/kube.h"
#include "../envtest.h"
#include "../testutil.h"

static tu_envtest_t env;
static kube_client_t *kc;

static int group_setup(void **state)
{
    (void)state;
    if (tu_envtest_start(&env, false) != 0)
        return -1;
    char err[512];
    kube_opts_t o = {.kubeconfig = env.kubeconfig};
    kc = kube_client_new(&o, err, sizeof(err));
    if (kc == NULL) {
        fprintf(stderr, "kube_client_new: %s\n", err);
        return -1;
    }
    const char *nss[] = {"w1", "w2", "sec", "tr", "lead"};
    for (size_t i = 0; i < sizeof(nss) / sizeof(nss[0]); i++)
        if (tu_envtest_kubectl(&env, "create namespace %s", nss[i]) != 0) {
            fprintf(stderr, "kubectl: %s\n", env.out);
            return -1;
        }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kube_client_free(kc);
    tu_envtest_stop(&env);
    return 0;
}

/* `kubectl get` output of a jsonpath, trimmed. */
static const char *kget(const char *what, const char *jsonpath)
{
    if (tu_envtest_kubectl(&env, "get %s -o jsonpath='%s'", what, jsonpath) != 0)
        fail_msg("kubectl get %s: %s", what, env.out);
    return env.out;
}

static json_object *get_obj(const char *path)
{
    kube_resp_t r;
    assert_int_equal(kube_request(kc, "GET", path, NULL, NULL, &r), 0);
    if (r.status != 200)
        fail_msg("GET %s: HTTP %ld", path, r.status);
    json_object *o = json_tokener_parse(r.body);
    kube_resp_free(&r);
    assert_non_null(o);
    return o;
}

static const char *jstr(json_object *o, const char *a, const char *b, const char *c)
{
    json_object *v = o;
    const char *keys[] = {a, b, c};
    for (int i = 0; i < 3 && keys[i] != NULL; i++)
        if (!json_object_object_get_ex(v, keys[i], &v))
            return NULL;
    return json_object_get_string(v);
}

/* ConfigMaps */

static void test_configmap_create_update_keeps_foreign_fields(void **state)
{
    (void)state;
    char err[512] = "";
    const char *keys[] = {"root-cert.pem"};
    const char *v1[] = {"-----BEGIN CERTIFICATE-----\nONE\n-----END CERTIFICATE-----\n"};
    const char *labels[] = {"istio.io/config", "true", NULL};
    if (kube_configmap_apply(kc, "w1", "istio-ca-root-cert", keys, v1, 1, labels, err,
                             sizeof(err)) != 0)
        fail_msg("apply: %s", err);
    assert_string_equal(kget("configmap -n w1 istio-ca-root-cert", "{.data.root-cert\\.pem}"),
                        v1[0]);
    assert_string_equal(
        kget("configmap -n w1 istio-ca-root-cert", "{.metadata.labels.istio\\.io/config}"), "true");

    /* someone else adds their own key, label and annotation */
    if (tu_envtest_kubectl(
            &env, "-n w1 patch configmap istio-ca-root-cert --type merge -p "
                  "'{\"data\":{\"theirs\":\"keep me\"},\"metadata\":{\"labels\":{\"team\":\"x\"},"
                  "\"annotations\":{\"note\":\"hands off\"}}}'") != 0)
        fail_msg("kubectl patch: %s", env.out);

    const char *v2[] = {"-----BEGIN CERTIFICATE-----\nTWO\n-----END CERTIFICATE-----\n"};
    if (kube_configmap_apply(kc, "w1", "istio-ca-root-cert", keys, v2, 1, labels, err,
                             sizeof(err)) != 0)
        fail_msg("apply: %s", err);
    json_object *o = get_obj("/api/v1/namespaces/w1/configmaps/istio-ca-root-cert");
    assert_string_equal(jstr(o, "data", "root-cert.pem", NULL), v2[0]);
    assert_string_equal(jstr(o, "data", "theirs", NULL), "keep me");
    assert_string_equal(jstr(o, "metadata", "labels", "team"), "x");
    assert_string_equal(jstr(o, "metadata", "labels", "istio.io/config"), "true");
    assert_string_equal(jstr(o, "metadata", "annotations", "note"), "hands off");
    char rv[64];
    snprintf(rv, sizeof(rv), "%s", jstr(o, "metadata", "resourceVersion", NULL));
    json_object_put(o);

    /* nothing to change: no write at all */
    if (kube_configmap_apply(kc, "w1", "istio-ca-root-cert", keys, v2, 1, labels, err,
                             sizeof(err)) != 0)
        fail_msg("apply: %s", err);
    o = get_obj("/api/v1/namespaces/w1/configmaps/istio-ca-root-cert");
    assert_string_equal(jstr(o, "metadata", "resourceVersion", NULL), rv);
    json_object_put(o);

    /* a namespace that does not exist: the error names the object */
    assert_int_not_equal(kube_configmap_apply(kc, "no-such-ns", "istio-ca-root-cert", keys, v2, 1,
                                              NULL, err, sizeof(err)),
                         0);
    if (strstr(err, "ConfigMap no-such-ns/istio-ca-root-cert") == NULL ||
        strstr(err, "not found") == NULL)
        fail_msg("unexpected error: %s", err);
}

typedef struct interfere {
    int calls;
} interfere_t;

/* Runs between kube_update's GET and PUT: the first time, another writer
 * changes the object, so our PUT must meet a 409 and start over. */
static int interfering_mutate(void *ud, json_object *obj, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    interfere_t *it = ud;
    if (it->calls++ == 0 &&
        tu_envtest_kubectl(
            &env,
            "-n w2 patch configmap contested --type merge -p '{\"data\":{\"other\":\"x\"}}'") != 0)
        fail_msg("kubectl patch: %s", env.out);
    json_object *data;
    if (!json_object_object_get_ex(obj, "data", &data)) {
        data = json_object_new_object();
        json_object_object_add(obj, "data", data);
    }
    json_object_object_add(data, "mine", json_object_new_string("y"));
    return 0;
}

static void test_update_retries_on_conflict(void **state)
{
    (void)state;
    if (tu_envtest_kubectl(&env, "-n w2 create configmap contested --from-literal=seed=1") != 0)
        fail_msg("kubectl: %s", env.out);
    unsigned long before = kube_client_conflicts(kc);
    interfere_t it = {0};
    char err[512] = "";
    if (kube_update(kc, "/api/v1/namespaces/w2/configmaps/contested", "ConfigMap w2/contested",
                    interfering_mutate, &it, err, sizeof(err)) != 0)
        fail_msg("update: %s", err);
    assert_int_equal(it.calls, 2); /* read again after the conflict */
    assert_int_equal(kube_client_conflicts(kc), before + 1);
    json_object *o = get_obj("/api/v1/namespaces/w2/configmaps/contested");
    assert_string_equal(jstr(o, "data", "seed", NULL), "1");
    assert_string_equal(jstr(o, "data", "other", NULL),
                        "x"); /* the other writer's change survived */
    assert_string_equal(jstr(o, "data", "mine", NULL), "y");
    json_object_put(o);

    assert_int_equal(kube_update(kc, "/api/v1/namespaces/w2/configmaps/absent",
                                 "ConfigMap w2/absent", interfering_mutate, &it, err, sizeof(err)),
                     KUBE_NOTFOUND);
}

typedef struct writer {
    const char *key;
    int failures;
    char err[512];
} writer_t;

static void *write_loop(void *arg)
{
    writer_t *w = arg;
    for (int i = 0; i < 10; i++) {
        char val[16];
        snprintf(val, sizeof(val), "%d", i);
        const char *keys[] = {w->key};
        const char *vals[] = {val};
        if (kube_configmap_apply(kc, "w2", "shared", keys, vals, 1, NULL, w->err, sizeof(w->err)) !=
            0)
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_writers_keep_each_others_keys(void **state)
{
    (void)state;
    writer_t w[3] = {{.key = "a"}, {.key = "b"}, {.key = "c"}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, write_loop, &w[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++)
        if (w[i].failures != 0)
            fail_msg("writer %s: %d failures, last: %s", w[i].key, w[i].failures, w[i].err);
    json_object *o = get_obj("/api/v1/namespaces/w2/configmaps/shared");
    assert_string_equal(jstr(o, "data", "a", NULL), "9");
    assert_string_equal(jstr(o, "data", "b", NULL), "9");
    assert_string_equal(jstr(o, "data", "c", NULL), "9");
    json_object_put(o);
}

/* Secrets */

static void test_secret_create_get_apply(void **state)
{
    (void)state;
    char err[512] = "";
    kube_secret_t s;
    assert_int_equal(kube_secret_get(kc, "sec", "istio-ca-secret", &s, err, sizeof(err)),
                     KUBE_NOTFOUND);

    const unsigned char bin[] = {0x30, 0x82, 0x00, 0xff, 0x00, 0x01};
    const char *keys[] = {"ca-cert.pem", "ca-key.pem", "raw"};
    const unsigned char *vals[] = {(const unsigned char *)"CERT\n", (const unsigned char *)"KEY\n",
                                   bin};
    const size_t lens[] = {5, 4, sizeof(bin)};
    if (kube_secret_create(kc, "sec", "istio-ca-secret", "istio.io/ca-root", keys, vals, lens, 3,
                           NULL, err, sizeof(err)) != 0)
        fail_msg("create: %s", err);
    /* a second replica loses the race and learns it */
    assert_int_equal(kube_secret_create(kc, "sec", "istio-ca-secret", "istio.io/ca-root", keys,
                                        vals, lens, 3, NULL, err, sizeof(err)),
                     KUBE_EXISTS);

    if (kube_secret_get(kc, "sec", "istio-ca-secret", &s, err, sizeof(err)) != 0)
        fail_msg("get: %s", err);
    assert_string_equal(s.type, "istio.io/ca-root");
    assert_int_equal(s.n, 3);
    size_t n;
    assert_string_equal((const char *)kube_secret_value(&s, "ca-cert.pem", NULL), "CERT\n");
    assert_string_equal((const char *)kube_secret_value(&s, "ca-key.pem", NULL), "KEY\n");
    const unsigned char *raw = kube_secret_value(&s, "raw", &n);
    assert_non_null(raw);
    assert_int_equal(n, sizeof(bin));
    assert_memory_equal(raw, bin, sizeof(bin));
    assert_null(kube_secret_value(&s, "absent", NULL));
    kube_secret_free(&s);
    /* what kubectl sees is the base64 of the bytes */
    assert_string_equal(kget("secret -n sec istio-ca-secret", "{.data.ca-cert\\.pem}"), "Q0VSVAo=");

    /* apply: create, then update keeping a key someone else added */
    const char *k2[] = {"root-cert.pem"};
    const unsigned char *r1[] = {(const unsigned char *)"ROOT1"};
    const char *labels[] = {"app", "meshd", NULL};
    if (kube_secret_apply(kc, "sec", "cacerts", NULL, k2, r1, NULL, 1, labels, err, sizeof(err)) !=
        0)
        fail_msg("apply: %s", err);
    assert_string_equal(kget("secret -n sec cacerts", "{.type}"), "Opaque");
    if (tu_envtest_kubectl(
            &env,
            "-n sec patch secret cacerts --type merge -p '{\"data\":{\"extra\":\"eA==\"}}'") != 0)
        fail_msg("kubectl patch: %s", env.out);
    const unsigned char *r2[] = {(const unsigned char *)"ROOT2"};
    if (kube_secret_apply(kc, "sec", "cacerts", NULL, k2, r2, NULL, 1, labels, err, sizeof(err)) !=
        0)
        fail_msg("apply: %s", err);
    if (kube_secret_get(kc, "sec", "cacerts", &s, err, sizeof(err)) != 0)
        fail_msg("get: %s", err);
    assert_string_equal((const char *)kube_secret_value(&s, "root-cert.pem", NULL), "ROOT2");
    assert_string_equal((const char *)kube_secret_value(&s, "extra", NULL), "x");
    kube_secret_free(&s);
    assert_string_equal(kget("secret -n sec cacerts", "{.metadata.labels.app}"), "meshd");
}

/* Webhooks */

static const char webhooks_yaml[] =
    "apiVersion: admissionregistration.k8s.io/v1\n"
    "kind: MutatingWebhookConfiguration\n"
    "metadata: {name: meshd-sidecar-injector}\n"
    "webhooks:\n"
    "- name: a.sidecar-injector.meshd.io\n"
    "  clientConfig: {url: \"https://127.0.0.1:1/inject\"}\n"
    "  admissionReviewVersions: [v1]\n"
    "  sideEffects: None\n"
    "  failurePolicy: Ignore\n"
    "- name: b.sidecar-injector.meshd.io\n"
    "  clientConfig: {url: \"https://127.0.0.1:1/inject\", caBundle: \"b2xk\"}\n"
    "  admissionReviewVersions: [v1]\n"
    "  sideEffects: None\n"
    "  failurePolicy: Ignore\n"
    "---\n"
    "apiVersion: admissionregistration.k8s.io/v1\n"
    "kind: ValidatingWebhookConfiguration\n"
    "metadata: {name: meshd-validator}\n"
    "webhooks:\n"
    "- name: validation.meshd.io\n"
    "  clientConfig: {url: \"https://127.0.0.1:1/validate\"}\n"
    "  admissionReviewVersions: [v1]\n"
    "  sideEffects: None\n"
    "  failurePolicy: Ignore\n"
    "  rules: [{operations: [CREATE], apiGroups: [\"example.com\"], apiVersions: [\"*\"], "
    "resources: [\"*\"]}]\n";

static void test_webhook_cabundle_and_failure_policy(void **state)
{
    (void)state;
    if (tu_envtest_kubectl_stdin(&env, webhooks_yaml, "apply -f -") != 0)
        fail_msg("kubectl apply: %s", env.out);
    const char *pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    char b64[256];
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)pem, (int)strlen(pem));
    char err[512] = "";
    if (kube_webhook_patch_cabundle(kc, "mutating", "meshd-sidecar-injector", pem, err,
                                    sizeof(err)) != 0)
        fail_msg("patch: %s", err);
    char both[600];
    snprintf(both, sizeof(both), "%s %s", b64, b64);
    assert_string_equal(kget("mutatingwebhookconfiguration meshd-sidecar-injector",
                             "{.webhooks[*].clientConfig.caBundle}"),
                        both);
    assert_string_equal(kget("mutatingwebhookconfiguration meshd-sidecar-injector",
                             "{.webhooks[*].clientConfig.url}"),
                        "https://127.0.0.1:1/inject https://127.0.0.1:1/inject");

    if (kube_webhook_patch_cabundle(kc, "validating", "meshd-validator", pem, err, sizeof(err)) !=
        0)
        fail_msg("patch: %s", err);
    assert_string_equal(kget("validatingwebhookconfiguration meshd-validator",
                             "{.webhooks[0].clientConfig.caBundle}"),
                        b64);

    if (kube_webhook_set_failure_policy(kc, "meshd-validator", "Fail", err, sizeof(err)) != 0)
        fail_msg("policy: %s", err);
    assert_string_equal(
        kget("validatingwebhookconfiguration meshd-validator", "{.webhooks[0].failurePolicy}"),
        "Fail");
    /* the caBundle set before is still there */
    assert_string_equal(kget("validatingwebhookconfiguration meshd-validator",
                             "{.webhooks[0].clientConfig.caBundle}"),
                        b64);

    assert_int_equal(
        kube_webhook_set_failure_policy(kc, "meshd-validator", "Sometimes", err, sizeof(err)),
        KUBE_ERR);
    assert_non_null(strstr(err, "failurePolicy must be \"Fail\" or \"Ignore\""));
    assert_int_equal(kube_webhook_patch_cabundle(kc, "other", "x", pem, err, sizeof(err)),
                     KUBE_ERR);
    assert_non_null(strstr(err, "kind must be \"mutating\" or \"validating\""));
    assert_int_equal(kube_webhook_patch_cabundle(kc, "mutating", "absent", pem, err, sizeof(err)),
                     KUBE_NOTFOUND);
    assert_non_null(strstr(err, "MutatingWebhookConfiguration absent: not found"));
}

/* TokenReview */

static char *token_for(const char *ns, const char *sa, const char *audience)
{
    char path[256], body[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/serviceaccounts/%s/token", ns, sa);
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\","
             "\"spec\":{\"audiences\":[\"%s\"],\"expirationSeconds\":3600}}",
             audience);
    kube_resp_t r;
    assert_int_equal(kube_request(kc, "POST", path, body, "application/json", &r), 0);
    if (r.status != 201)
        fail_msg("TokenRequest: HTTP %ld %s", r.status, r.body ? r.body : "");
    json_object *o = json_tokener_parse(r.body);
    kube_resp_free(&r);
    char *tok = strdup(jstr(o, "status", "token", NULL));
    json_object_put(o);
    return tok;
}

static void test_token_review(void **state)
{
    (void)state;
    if (tu_envtest_kubectl(&env, "-n tr create serviceaccount workload") != 0)
        fail_msg("kubectl: %s", env.out);
    char *tok = token_for("tr", "workload", "istio-ca");
    const char *aud[] = {"istio-ca", NULL};
    kube_token_review_t tr;
    assert_int_equal(kube_token_review(kc, tok, aud, &tr), 0);
    if (!tr.authenticated)
        fail_msg("not authenticated: %s", tr.error);
    assert_string_equal(tr.username, "system:serviceaccount:tr:workload");
    assert_string_equal(tr.ns, "tr");
    assert_string_equal(tr.service_account, "workload");
    assert_int_equal(tr.naudiences, 1);
    assert_string_equal(tr.audiences[0], "istio-ca");
    time_t now = time(NULL);
    assert_true(tr.expiration > now + 3000 && tr.expiration <= now + 3700);
    assert_true(tr.uid[0] != '\0');

    /* the same token for another audience is refused */
    const char *other[] = {"someone-else", NULL};
    assert_int_equal(kube_token_review(kc, tok, other, &tr), 0);
    assert_false(tr.authenticated);
    assert_true(tr.error[0] != '\0');
    free(tok);

    assert_int_equal(kube_token_review(kc, "garbage.not.ajwt", aud, &tr), 0);
    assert_false(tr.authenticated);
    assert_string_equal(tr.username, "");
    assert_true(tr.error[0] != '\0');
}

/* Leader election */

typedef struct candidate {
    const char *id;
    atomic_int started, stopped;
    kube_leader_t *l;
} candidate_t;

static void on_started(void *ud)
{
    atomic_fetch_add(&((candidate_t *)ud)->started, 1);
}

static void on_stopped(void *ud)
{
    atomic_fetch_add(&((candidate_t *)ud)->stopped, 1);
}

static void start_candidate(candidate_t *c)
{
    kube_leader_opts_t o = {.ns = "lead",
                            .name = "meshd-leader",
                            .identity = c->id,
                            .lease_duration_ms = 3000,
                            .renew_deadline_ms = 2000,
                            .retry_period_ms = 300,
                            .on_started = on_started,
                            .on_stopped = on_stopped,
                            .ud = c};
    char err[256];
    c->l = kube_leader_start(kc, &o, err, sizeof(err));
    if (c->l == NULL)
        fail_msg("kube_leader_start: %s", err);
}

static void test_leader_election_two_candidates(void **state)
{
    (void)state;
    char err[256];
    kube_leader_opts_t bad = {.ns = "lead",
                              .name = "x",
                              .identity = "z",
                              .lease_duration_ms = 1000,
                              .renew_deadline_ms = 2000,
                              .retry_period_ms = 100};
    assert_null(kube_leader_start(kc, &bad, err, sizeof(err)));
    assert_non_null(strstr(err, "renew deadline"));

    candidate_t a = {.id = "meshd-a"}, b = {.id = "meshd-b"};
    start_candidate(&a);
    start_candidate(&b);
    int i;
    for (i = 0; i < 100 && !kube_leader_is_leader(a.l) && !kube_leader_is_leader(b.l); i++)
        usleep(50000);
    assert_true(kube_leader_is_leader(a.l) || kube_leader_is_leader(b.l));
    /* exactly one leads, and stays the only one over several renewals */
    for (i = 0; i < 10; i++) {
        assert_true(kube_leader_is_leader(a.l) != kube_leader_is_leader(b.l));
        usleep(150000);
    }
    candidate_t *leader = kube_leader_is_leader(a.l) ? &a : &b, *follower = leader == &a ? &b : &a;
    assert_string_equal(kget("lease -n lead meshd-leader", "{.spec.holderIdentity}"), leader->id);
    assert_string_equal(kget("lease -n lead meshd-leader", "{.spec.leaseDurationSeconds}"), "3");
    char holder[64];
    assert_string_equal(kube_leader_holder(follower->l, holder, sizeof(holder)), leader->id);
    assert_int_equal(atomic_load(&leader->started), 1);
    assert_int_equal(atomic_load(&follower->started), 0);

    /* a clean stop releases the lease; the other takes over within a few retry periods */
    kube_leader_stop(leader->l);
    leader->l = NULL;
    assert_int_equal(atomic_load(&leader->stopped), 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < 100 && !kube_leader_is_leader(follower->l); i++)
        usleep(50000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(kube_leader_is_leader(follower->l));
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* released, so no need to wait out the 3 s lease */
    if (took > 2.0)
        fail_msg("takeover took %.2f s", took);
    assert_int_equal(atomic_load(&follower->started), 1);
    assert_string_equal(kget("lease -n lead meshd-leader", "{.spec.holderIdentity}"), follower->id);
    assert_string_equal(kget("lease -n lead meshd-leader", "{.spec.leaseTransitions}"), "1");

    kube_leader_stop(follower->l);
    assert_int_equal(atomic_load(&follower->stopped), 1);
    assert_string_equal(kget("lease -n lead meshd-leader", "{.spec.holderIdentity}"), "");
}

/* A holder that vanishes without releasing: the lease expires, then another candidate takes it. */
static void test_leader_takes_over_expired_lease(void **state)
{
    (void)state;
    char now[64];
    time_t t = time(NULL);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%S.000000Z", gmtime(&t));
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: crashed, "
             "namespace: lead}\n"
             "spec: {holderIdentity: gone-pod, leaseDurationSeconds: 2, acquireTime: \"%s\", "
             "renewTime: \"%s\", "
             "leaseTransitions: 4}\n",
             now, now);
    if (tu_envtest_kubectl_stdin(&env, yaml, "apply -f -") != 0)
        fail_msg("kubectl apply: %s", env.out);
    candidate_t c = {.id = "meshd-c"};
    kube_leader_opts_t o = {.ns = "lead",
                            .name = "crashed",
                            .identity = c.id,
                            .lease_duration_ms = 2000,
                            .renew_deadline_ms = 1500,
                            .retry_period_ms = 200,
                            .on_started = on_started,
                            .on_stopped = on_stopped,
                            .ud = &c};
    char err[256];
    c.l = kube_leader_start(kc, &o, err, sizeof(err));
    assert_non_null(c.l);
    usleep(1000000);
    assert_false(kube_leader_is_leader(c.l)); /* the old holder's lease is still valid */
    int i;
    for (i = 0; i < 100 && !kube_leader_is_leader(c.l); i++)
        usleep(50000);
    assert_true(kube_leader_is_leader(c.l));
    assert_string_equal(kget("lease -n lead crashed", "{.spec.leaseTransitions}"), "5");
    kube_leader_stop(c.l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configmap_create_update_keeps_foreign_fields),
        cmocka_unit_test(test_update_retries_on_conflict),
        cmocka_unit_test(test_concurrent_writers_keep_each_others_keys),
        cmocka_unit_test(test_secret_create_get_apply),
        cmocka_unit_test(test_webhook_cabundle_and_failure_policy),
        cmocka_unit_test(test_token_review),
        cmocka_unit_test(test_leader_election_two_candidates),
        cmocka_unit_test(test_leader_takes_over_expired_lease),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
