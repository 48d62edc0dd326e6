/*
 * libFuzzer target: the AdmissionReview decoder and the injection behind it
 * (webhook/admission.c, inject.c, patch.c, kubeinject.c).
 *
 * Each input is used four ways:
 *   1. as a request body of /inject and of /validate, as the server hands it;
 *   2. as the object of a Pod CREATE review (the first YAML/JSON document of
 *      the input, or its pod template when it is a workload), so the seed
 *      corpus of manifests reaches the pod mutation;
 *   3. the same object as a /validate CREATE;
 *   4. as a kube-inject manifest.
 * Invariants (a __builtin_trap on violation): an answer is 200, 400 or 413;
 * a 200 answer is an AdmissionReview JSON echoing the uid; a patch, applied
 * to the pod that was sent, gives exactly what webhook_inject_pod produces;
 * a second injection of the result changes nothing.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "../../common/doc.h"
#include "../../config/config.h"
#include "../../webhook/webhook.h"

static int lookup(void *ud, const char *ns, webhook_ns_info_t *out)
{
    (void)ud;
    memset(out, 0, sizeof(*out));
    if (strcmp(ns, "unknown") == 0)
        return -1;
    if (strcmp(ns, "off") == 0) {
        out->has_injection = true;
        strcpy(out->injection, "disabled");
        return 0;
    }
    out->has_injection = true;
    strcpy(out->injection, "enabled");
    return 0;
}

static webhook_t *wh;
static FILE *devnull;

static json_object *check_answer(int status, char *out, size_t len, const char *uid)
{
    json_object *root = NULL;
    if (status != 200 && status != 400 && status != 413)
        __builtin_trap();
    if (out == NULL || strlen(out) != len)
        __builtin_trap();
    if (status == 200) {
        root = json_tokener_parse(out);
        json_object *resp = NULL, *u = NULL;
        if (root == NULL || !json_object_object_get_ex(root, "response", &resp) ||
            !json_object_object_get_ex(resp, "uid", &u))
            __builtin_trap();
        if (uid != NULL && strcmp(json_object_get_string(u), uid) != 0)
            __builtin_trap();
    }
    free(out);
    return root;
}

static void run_body(const char *body, size_t len)
{
    char *out = NULL;
    size_t olen = 0;
    const char *ct;
    json_object_put(check_answer(webhook_handle_inject(wh, body, len, &out, &olen, &ct), out, olen, NULL));
    out = NULL;
    json_object_put(check_answer(webhook_handle_validate(wh, body, len, &out, &olen, &ct), out, olen, NULL));
}

static char *wrap(json_object *obj, const char *kind, const char *ns)
{
    json_object *r = json_tokener_parse("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\","
                                        "\"request\":{\"uid\":\"fz\",\"operation\":\"CREATE\"}}");
    json_object *req = json_object_object_get(r, "request");
    json_object *k = json_object_new_object();
    json_object_object_add(k, "kind", json_object_new_string(kind));
    json_object_object_add(req, "kind", k);
    json_object_object_add(req, "namespace", json_object_new_string(ns));
    json_object_object_add(req, "object", json_object_get(obj));
    char *s = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
    json_object_put(r);
    return s;
}

static void run_pod(json_object *pod)
{
    static const char *const spaces[] = {"prod", "off", "unknown", "kube-system"};
    for (size_t i = 0; i < 4; i++) {
        char *body = wrap(pod, "Pod", spaces[i]), *out = NULL;
        size_t olen = 0;
        const char *ct;
        json_object *ans = check_answer(webhook_handle_inject(wh, body, strlen(body), &out, &olen, &ct), out, olen, "fz");
        free(body);
        json_object *resp = json_object_object_get(ans, "response");
        const char *p = json_object_get_string(json_object_object_get(resp, "patch"));
        if (p != NULL) {
            /* The patch turns the pod into what the injection makes of it. */
            size_t pl = strlen(p);
            unsigned char *dec = malloc(pl + 4);
            int dl = EVP_DecodeBlock(dec, (const unsigned char *)p, (int)pl);
            if (dl < 0)
                __builtin_trap();
            while (dl > 0 && dec[dl - 1] == '\0')
                dl--;
            dec[dl] = '\0';
            json_object *patch = json_tokener_parse((char *)dec);
            free(dec);
            json_object *doc = NULL, *want = NULL;
            json_object_deep_copy(pod, &doc, NULL);
            json_object_deep_copy(pod, &want, NULL);
            char err[512];
            webhook_config_t *c = webhook_get_config(wh);
            webhook_workload_t wl = {.ns = spaces[i]};
            if (webhook_patch_apply(&doc, patch, err, sizeof(err)) != 0 ||
                webhook_inject_pod(c, want, &wl, err, sizeof(err)) != 0 || !json_object_equal(doc, want))
                __builtin_trap();
            /* Injecting the injected pod changes nothing. */
            webhook_decision_t d;
            if (webhook_inject_decide(c, doc, spaces[i], NULL, &d))
                __builtin_trap();
            webhook_config_unref(c);
            json_object_put(doc);
            json_object_put(want);
            json_object_put(patch);
        }
        json_object_put(ans);
    }
    char *body = wrap(pod, "VirtualService", "prod"), *out = NULL;
    size_t olen = 0;
    const char *ct;
    json_object_put(check_answer(webhook_handle_validate(wh, body, strlen(body), &out, &olen, &ct), out, olen, "fz"));
    free(body);
}

static int first_doc(void *ud, const doc_t *d)
{
    json_object **o = ud;
    if (*o == NULL && d->root != NULL) {
        doc_node_t *copy = doc_copy(d->arena, d->root);
        if (copy != NULL)
            *o = cfg_doc_to_json(copy);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (wh == NULL) {
        webhook_opts_t o = {.mesh_ns = "istio-system", .ns_lookup = lookup};
        wh = webhook_new(&o);
        devnull = fopen("/dev/null", "w");
    }
    const char *text = (const char *)data;
    run_body(text, size);

    json_object *obj = NULL;
    doc_parse(text, size, DOC_FMT_AUTO, first_doc, &obj);
    if (json_object_is_type(obj, json_type_object)) {
        json_object *pod = obj, *spec = json_object_object_get(obj, "spec"), *t = NULL;
        if (json_object_object_get_ex(spec, "template", &t) && json_object_is_type(t, json_type_object))
            pod = t;
        run_pod(pod);
    }
    json_object_put(obj);

    webhook_config_t *c = webhook_get_config(wh);
    char err[512];
    webhook_kube_inject(c, text, size, devnull, err, sizeof(err));
    webhook_config_unref(c);
    return 0;
}
