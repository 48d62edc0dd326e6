/*
 * Sidecar injection: Istio's injection policy, and the pod mutation that
 * adds istio-init, istio-proxy, their volumes, annotations and labels. The
 * shape of what is added is a fixed builder driven by the values
 * (webhook/TEMPLATE.md); the pod itself is free-form JSON (json-c).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "../common/doc.h"
#include "../common/log.h"
#include "../config/config.h"
#include "webhook_internal.h"

#define A_INJECT "sidecar.istio.io/inject"
#define A_STATUS "sidecar.istio.io/status"
#define A_REV "istio.io/rev"
#define PROXY_NAME "istio-proxy"
#define INIT_NAME "istio-init"

/* ---- small json-c helpers ---- */

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (o != NULL && json_object_is_type(o, json_type_object))
        json_object_object_get_ex(o, key, &v);
    return v;
}

/* A scalar as text (annotations should be strings, but a YAML manifest may
 * hold `inject: false`); NULL for absent, null, objects and arrays. */
static const char *scalar(json_object *v)
{
    if (v == NULL || json_object_is_type(v, json_type_object) || json_object_is_type(v, json_type_array))
        return NULL;
    return json_object_get_string(v);
}

static const char *meta_str(json_object *pod, const char *map, const char *key)
{
    return scalar(get(get(get(pod, "metadata"), map), key));
}

/* The child object at key, created (replacing a non-object) when missing. */
static json_object *ensure_obj(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    if (v == NULL || !json_object_is_type(v, json_type_object)) {
        v = json_object_new_object();
        json_object_object_add(o, key, v);
    }
    return v;
}

static json_object *ensure_arr(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    if (v == NULL || !json_object_is_type(v, json_type_array)) {
        v = json_object_new_array();
        json_object_object_add(o, key, v);
    }
    return v;
}

static json_object *S(const char *s)
{
    return json_object_new_string(s ? s : "");
}

static json_object *I(int64_t i)
{
    return json_object_new_int64(i);
}

/* An object from NULL-terminated key, value pairs (a NULL value skips the key). */
static json_object *O(const char *k, ...)
{
    json_object *o = json_object_new_object();
    va_list ap;
    va_start(ap, k);
    while (k != NULL) {
        json_object *v = va_arg(ap, json_object *);
        if (v != NULL)
            json_object_object_add(o, k, v);
        k = va_arg(ap, const char *);
    }
    va_end(ap);
    return o;
}

/* An array from NULL-terminated values. */
static json_object *A(json_object *v, ...)
{
    json_object *a = json_object_new_array();
    va_list ap;
    va_start(ap, v);
    while (v != NULL) {
        json_object_array_add(a, v);
        v = va_arg(ap, json_object *);
    }
    va_end(ap);
    return a;
}


/* ---- the policy ---- */

/* Istio reads the inject label/annotation as a YAML 1.1 boolean: y, yes,
 * true, on are true; anything else is false. */
static bool truthy(const char *v)
{
    return strcasecmp(v, "y") == 0 || strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 ||
           strcasecmp(v, "on") == 0;
}

static bool has_container(json_object *spec, const char *list, const char *name)
{
    json_object *a = get(spec, list);
    if (!json_object_is_type(a, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        const char *n = scalar(get(json_object_array_get_idx(a, i), "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

#define DECIDE(yes, ...)                                                                           \
    do {                                                                                           \
        d->inject = (yes);                                                                         \
        snprintf(d->reason, sizeof(d->reason), __VA_ARGS__);                                       \
        return d->inject;                                                                          \
    } while (0)

bool webhook_inject_decide(const webhook_config_t *c, json_object *pod, const char *ns,
                           const webhook_ns_info_t *nsinfo, webhook_decision_t *d)
{
    json_object *spec = get(pod, "spec");
    const char *rev = c->revision;
    if (ns != NULL && (strcmp(ns, "kube-system") == 0 || strcmp(ns, "kube-public") == 0))
        DECIDE(false, "namespace %s is never injected", ns);
    if (json_object_get_boolean(get(spec, "hostNetwork")))
        DECIDE(false, "the pod uses the host network");
    if (get(get(get(pod, "metadata"), "annotations"), A_STATUS) != NULL)
        DECIDE(false, "the pod is already injected (%s is set)", A_STATUS);
    if (has_container(spec, "initContainers", PROXY_NAME))
        DECIDE(false, "the pod already has an %s init container", PROXY_NAME);
    if (nsinfo != NULL && nsinfo->has_injection && strcmp(nsinfo->injection, "disabled") == 0)
        DECIDE(false, "namespace %s has istio-injection=disabled", ns ? ns : "");
    bool ns_enabled = nsinfo != NULL && nsinfo->has_injection && strcmp(nsinfo->injection, "enabled") == 0;
    if (!ns_enabled && nsinfo != NULL && nsinfo->has_rev && strcmp(nsinfo->rev, rev) != 0)
        DECIDE(false, "namespace %s has istio.io/rev=%s, not this control plane's revision %s", ns ? ns : "",
               nsinfo->rev, rev);
    const char *pod_rev = meta_str(pod, "labels", A_REV);
    if (!ns_enabled && pod_rev != NULL && strcmp(pod_rev, rev) != 0)
        DECIDE(false, "the pod has istio.io/rev=%s, not this control plane's revision %s", pod_rev, rev);

    /* The pod's own choice: the label wins over the (legacy) annotation. */
    const char *want = meta_str(pod, "labels", A_INJECT);
    const char *from = "label";
    if (want == NULL) {
        want = meta_str(pod, "annotations", A_INJECT);
        from = "annotation";
    }
    if (want != NULL) {
        if (truthy(want))
            DECIDE(true, "the pod has %s %s=%s", from, A_INJECT, want);
        DECIDE(false, "the pod has %s %s=%s", from, A_INJECT, want);
    }
    if (strcmp(c->policy, "disabled") == 0)
        DECIDE(false, "the injection policy is disabled and the pod does not ask for a sidecar");
    if (nsinfo == NULL)
        DECIDE(true, "the injection policy is enabled");
    if (ns_enabled)
        DECIDE(true, "namespace %s has istio-injection=enabled", ns ? ns : "");
    if (nsinfo->has_rev)
        DECIDE(true, "namespace %s has istio.io/rev=%s", ns ? ns : "", nsinfo->rev);
    if (pod_rev != NULL)
        DECIDE(true, "the pod has istio.io/rev=%s", pod_rev);
    DECIDE(false, "namespace %s has neither istio-injection=enabled nor istio.io/rev=%s", ns ? ns : "", rev);
}

/* ---- annotation checks ---- */

static bool is_cidr(const char *s, size_t n)
{
    char buf[64];
    const char *slash = memchr(s, '/', n);
    if (slash == NULL || n >= sizeof(buf))
        return false;
    size_t al = (size_t)(slash - s);
    memcpy(buf, s, al);
    buf[al] = '\0';
    unsigned char addr[16];
    int maxbits;
    if (inet_pton(AF_INET, buf, addr) == 1)
        maxbits = 32;
    else if (inet_pton(AF_INET6, buf, addr) == 1)
        maxbits = 128;
    else
        return false;
    const char *p = slash + 1, *end = s + n;
    if (p == end || end - p > 3)
        return false;
    int bits = 0;
    for (; p < end; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        bits = bits * 10 + (*p - '0');
    }
    return bits <= maxbits;
}

static bool is_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

enum list_kind { L_CIDRS, L_PORTS };

/* Checks a comma-separated list ("" is an empty list; "*" only when
 * wildcard). Returns 0, or -1 with err naming the annotation and the item. */
static int check_list(const char *ann, const char *v, enum list_kind k, bool wildcard, char *err,
                      size_t errlen)
{
    if (v[0] == '\0')
        return 0;
    if (strcmp(v, "*") == 0) {
        if (wildcard)
            return 0;
        mesh_errf(err, errlen, "annotation %s: \"*\" is not allowed here: list the %s", ann,
             k == L_CIDRS ? "CIDRs" : "ports");
        return -1;
    }
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *q = p;
        size_t m = n;
        while (m > 0 && isspace((unsigned char)*q))
            q++, m--;
        while (m > 0 && isspace((unsigned char)q[m - 1]))
            m--;
        bool ok = k == L_CIDRS ? is_cidr(q, m) : is_port(q, m);
        if (!ok) {
            mesh_errf(err, errlen, "annotation %s: \"%.*s\" is not %s", ann, (int)(m > 64 ? 64 : m), q,
                 k == L_CIDRS ? "a CIDR (such as 10.0.0.0/8 or fd00::/8)" : "a port number (1-65535)");
            return -1;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

/* A Kubernetes resource quantity: a decimal number with an optional SI,
 * binary or exponent suffix ("100m", "1.5Gi", "2e3"). */
static bool is_quantity(const char *s)
{
    const char *p = s;
    int digits = 0, dots = 0;
    if (*p == '+' || *p == '-')
        p++;
    for (; isdigit((unsigned char)*p) || *p == '.'; p++) {
        if (*p == '.')
            dots++;
        else
            digits++;
    }
    if (digits == 0 || dots > 1)
        return false;
    static const char *const suffixes[] = {"", "n", "u", "m", "k", "M", "G", "T", "P", "E",
                                           "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
        if (strcmp(p, suffixes[i]) == 0)
            return true;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
        return *p == '\0';
    }
    return false;
}

static bool is_log_level(const char *s)
{
    static const char *const levels[] = {"trace", "debug", "info", "warning", "warn", "error", "critical", "off"};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(s, levels[i]) == 0)
            return true;
    return false;
}

static int parse_nonneg(const char *ann, const char *v, int64_t max, int64_t *out, char *err, size_t errlen)
{
    char *end;
    if (v[0] == '\0' || !isdigit((unsigned char)v[0]))
        goto bad;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0' || x > max)
        goto bad;
    *out = x;
    return 0;
bad:
    mesh_errf(err, errlen, "annotation %s: \"%s\" is not an integer between 0 and %lld", ann, v, (long long)max);
    return -1;
}

struct doc_json {
    json_object *root;
    bool failed;
};

static int doc_json_cb(void *ud, const doc_t *d)
{
    struct doc_json *j = ud;
    if (j->root != NULL || j->failed)
        return 0;
    if (d->root == NULL) {
        j->failed = true;
        return 0;
    }
    doc_node_t *copy = doc_copy(d->arena, d->root);
    if (copy == NULL) {
        j->failed = true;
        return 0;
    }
    j->root = cfg_doc_to_json(copy);
    return 0;
}

/* ---- the workload a pod belongs to ---- */

struct workload {
    char kind[64];
    char name[254];
    char api_version[64];
};

static void copy_str(char *dst, size_t size, const char *s)
{
    snprintf(dst, size, "%s", s ? s : "");
}

/* Istio's rules: a ReplicaSet named <deployment>-<pod-template-hash> stands
 * for its Deployment; a Job named <cronjob>-<8 to 10 digits> for its CronJob;
 * else the controller; a pod without one is its own workload. */
static void derive_workload(json_object *pod, const webhook_workload_t *wl, struct workload *w)
{
    json_object *meta = get(pod, "metadata");
    memset(w, 0, sizeof(*w));
    if (wl != NULL && wl->name != NULL) {
        copy_str(w->kind, sizeof(w->kind), wl->kind ? wl->kind : "Pod");
        copy_str(w->name, sizeof(w->name), wl->name);
        copy_str(w->api_version, sizeof(w->api_version), wl->api_version ? wl->api_version : "v1");
        return;
    }
    json_object *owners = get(meta, "ownerReferences");
    json_object *ctl = NULL;
    if (json_object_is_type(owners, json_type_array))
        for (size_t i = 0; i < json_object_array_length(owners); i++) {
            json_object *o = json_object_array_get_idx(owners, i);
            if (json_object_get_boolean(get(o, "controller")))
                ctl = o;
        }
    const char *ck = scalar(get(ctl, "kind")), *cn = scalar(get(ctl, "name"));
    if (ck != NULL && cn != NULL) {
        copy_str(w->kind, sizeof(w->kind), ck);
        copy_str(w->name, sizeof(w->name), cn);
        copy_str(w->api_version, sizeof(w->api_version), scalar(get(ctl, "apiVersion")));
        const char *hash = meta_str(pod, "labels", "pod-template-hash");
        size_t nl = strlen(cn), hl = hash ? strlen(hash) : 0;
        if (strcmp(ck, "ReplicaSet") == 0 && hash != NULL && hl > 0 && nl > hl + 1 &&
            strcmp(cn + nl - hl, hash) == 0 && cn[nl - hl - 1] == '-') {
            copy_str(w->kind, sizeof(w->kind), "Deployment");
            snprintf(w->name, sizeof(w->name), "%.*s", (int)(nl - hl - 1), cn);
            copy_str(w->api_version, sizeof(w->api_version), "apps/v1");
        } else if (strcmp(ck, "Job") == 0) {
            size_t digits = 0;
            while (digits < nl && isdigit((unsigned char)cn[nl - 1 - digits]))
                digits++;
            if (digits >= 8 && digits <= 10 && nl > digits + 1 && cn[nl - digits - 1] == '-') {
                copy_str(w->kind, sizeof(w->kind), "CronJob");
                snprintf(w->name, sizeof(w->name), "%.*s", (int)(nl - digits - 1), cn);
                copy_str(w->api_version, sizeof(w->api_version), "batch/v1");
            }
        }
        return;
    }
    copy_str(w->kind, sizeof(w->kind), "Pod");
    copy_str(w->api_version, sizeof(w->api_version), "v1");
    const char *name = scalar(get(meta, "name"));
    const char *gen = scalar(get(meta, "generateName"));
    if (name != NULL && name[0] != '\0')
        copy_str(w->name, sizeof(w->name), name);
    else if (gen != NULL) {
        size_t gl = strlen(gen);
        while (gl > 0 && gen[gl - 1] == '-')
            gl--;
        snprintf(w->name, sizeof(w->name), "%.*s", (int)gl, gen);
    }
}

/* A label value: at most 63 characters, without a trailing '-' after the cut
 * (Istio's `trunc 63 | trimSuffix "-"`). */
static json_object *label_value(const char *v)
{
    size_t n = strlen(v);
    if (n > 63)
        n = 63;
    if (n > 0 && v[n - 1] == '-')
        n--;
    return json_object_new_string_len(v, (int)n);
}

/* ---- env helpers ---- */

static void env_set(json_object *env, const char *name, json_object *value_or_from, bool from)
{
    for (size_t i = 0; i < json_object_array_length(env); i++) {
        json_object *e = json_object_array_get_idx(env, i);
        const char *n = scalar(get(e, "name"));
        if (n != NULL && strcmp(n, name) == 0) {
            json_object_object_del(e, "value");
            json_object_object_del(e, "valueFrom");
            json_object_object_add(e, from ? "valueFrom" : "value", value_or_from);
            return;
        }
    }
    json_object_array_add(env, O("name", S(name), from ? "valueFrom" : "value", value_or_from, NULL));
}

static void env_val(json_object *env, const char *name, const char *value)
{
    env_set(env, name, S(value), false);
}

static void env_field(json_object *env, const char *name, const char *path)
{
    env_set(env, name, O("fieldRef", O("apiVersion", S("v1"), "fieldPath", S(path), NULL), NULL), true);
}

static const char *to_json(json_object *o)
{
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---- the mutation ---- */

struct settings {
    const char *include_ips, *exclude_ips, *include_in_ports, *exclude_in_ports, *exclude_out_ports,
        *include_out_ports, *virt_ifaces, *mode;
    const char *image, *log_level, *component_log_level;
    const char *cpu, *mem, *cpu_limit, *mem_limit;
    bool hold, probe;
    int64_t probe_delay, probe_period, probe_failure;
    json_object *proxy_config; /* parsed proxy.istio.io/config, may be NULL (owned) */
    json_object *user_volumes, *user_mounts; /* parsed, may be NULL (owned) */
};

static const char *ann_or(json_object *ann, const char *key, const char *dflt)
{
    const char *v = scalar(get(ann, key));
    return v ? v : dflt;
}

static int read_settings(const webhook_config_t *c, json_object *ann, struct settings *s, char *err,
                         size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->include_ips = ann_or(ann, "traffic.sidecar.istio.io/includeOutboundIPRanges", c->include_outbound_ip_ranges);
    s->exclude_ips = ann_or(ann, "traffic.sidecar.istio.io/excludeOutboundIPRanges", c->exclude_outbound_ip_ranges);
    s->include_in_ports = ann_or(ann, "traffic.sidecar.istio.io/includeInboundPorts", c->include_inbound_ports);
    s->exclude_in_ports = ann_or(ann, "traffic.sidecar.istio.io/excludeInboundPorts", c->exclude_inbound_ports);
    s->exclude_out_ports = ann_or(ann, "traffic.sidecar.istio.io/excludeOutboundPorts", c->exclude_outbound_ports);
    s->include_out_ports = ann_or(ann, "traffic.sidecar.istio.io/includeOutboundPorts", "");
    s->virt_ifaces = ann_or(ann, "istio.io/reroute-virtual-interfaces",
                            ann_or(ann, "traffic.sidecar.istio.io/kubevirtInterfaces", ""));
    s->mode = ann_or(ann, "sidecar.istio.io/interceptionMode", "REDIRECT");
    if (check_list("traffic.sidecar.istio.io/includeOutboundIPRanges", s->include_ips, L_CIDRS, true, err, errlen) ||
        check_list("traffic.sidecar.istio.io/excludeOutboundIPRanges", s->exclude_ips, L_CIDRS, false, err, errlen) ||
        check_list("traffic.sidecar.istio.io/includeInboundPorts", s->include_in_ports, L_PORTS, true, err, errlen) ||
        check_list("traffic.sidecar.istio.io/excludeInboundPorts", s->exclude_in_ports, L_PORTS, false, err, errlen) ||
        check_list("traffic.sidecar.istio.io/excludeOutboundPorts", s->exclude_out_ports, L_PORTS, false, err, errlen) ||
        check_list("traffic.sidecar.istio.io/includeOutboundPorts", s->include_out_ports, L_PORTS, false, err, errlen))
        return -1;
    for (const char *p = s->virt_ifaces; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == ',' || *p == '-' || *p == '_' || *p == '.' || *p == '@')) {
            mesh_errf(err, errlen, "annotation istio.io/reroute-virtual-interfaces: \"%s\" is not a list of interface names",
                 s->virt_ifaces);
            return -1;
        }
    if (strcmp(s->mode, "REDIRECT") != 0 && strcmp(s->mode, "TPROXY") != 0 && strcmp(s->mode, "NONE") != 0) {
        mesh_errf(err, errlen, "annotation sidecar.istio.io/interceptionMode: \"%s\" is not REDIRECT, TPROXY or NONE", s->mode);
        return -1;
    }

    s->image = ann_or(ann, "sidecar.istio.io/proxyImage", c->image);
    if (s->image[0] == '\0') {
        mesh_errf(err, errlen, "annotation sidecar.istio.io/proxyImage: must not be empty");
        return -1;
    }
    s->log_level = ann_or(ann, "sidecar.istio.io/logLevel", c->log_level);
    if (!is_log_level(s->log_level)) {
        mesh_errf(err, errlen,
             "annotation sidecar.istio.io/logLevel: \"%s\" is not one of trace, debug, info, warning, error, critical, off",
             s->log_level);
        return -1;
    }
    s->component_log_level = ann_or(ann, "sidecar.istio.io/componentLogLevel", NULL);
    static const struct {
        const char *ann;
        size_t off;
    } res[] = {{"sidecar.istio.io/proxyCPU", offsetof(struct settings, cpu)},
               {"sidecar.istio.io/proxyMemory", offsetof(struct settings, mem)},
               {"sidecar.istio.io/proxyCPULimit", offsetof(struct settings, cpu_limit)},
               {"sidecar.istio.io/proxyMemoryLimit", offsetof(struct settings, mem_limit)}};
    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        const char *v = ann_or(ann, res[i].ann, NULL);
        if (v != NULL && !is_quantity(v)) {
            mesh_errf(err, errlen, "annotation %s: \"%s\" is not a resource quantity (such as 100m, 0.5 or 128Mi)",
                 res[i].ann, v);
            return -1;
        }
        *(const char **)((char *)s + res[i].off) = v;
    }

    s->probe = true;
    const char *sp = ann_or(ann, "status.sidecar.istio.io/port", NULL);
    if (sp != NULL) {
        int64_t port;
        if (parse_nonneg("status.sidecar.istio.io/port", sp, 65535, &port, err, errlen) != 0)
            return -1;
        s->probe = port != 0;
    }
    s->probe_delay = c->readiness_initial_delay;
    s->probe_period = c->readiness_period;
    s->probe_failure = c->readiness_failure_threshold;
    const char *v;
    if ((v = ann_or(ann, "readiness.status.sidecar.istio.io/initialDelaySeconds", NULL)) != NULL &&
        parse_nonneg("readiness.status.sidecar.istio.io/initialDelaySeconds", v, 86400, &s->probe_delay, err, errlen))
        return -1;
    if ((v = ann_or(ann, "readiness.status.sidecar.istio.io/periodSeconds", NULL)) != NULL &&
        parse_nonneg("readiness.status.sidecar.istio.io/periodSeconds", v, 86400, &s->probe_period, err, errlen))
        return -1;
    if ((v = ann_or(ann, "readiness.status.sidecar.istio.io/failureThreshold", NULL)) != NULL &&
        parse_nonneg("readiness.status.sidecar.istio.io/failureThreshold", v, 100000, &s->probe_failure, err, errlen))
        return -1;
    if (s->probe_period < 1)
        s->probe_period = 1;
    if (s->probe_failure < 1)
        s->probe_failure = 1;

    s->hold = c->hold_application;
    const char *pc = ann_or(ann, "proxy.istio.io/config", NULL);
    if (pc != NULL) {
        struct doc_json j = {0};
        doc_parse(pc, strlen(pc), DOC_FMT_AUTO, doc_json_cb, &j);
        if (j.root != NULL && !json_object_is_type(j.root, json_type_object)) {
            json_object_put(j.root);
            j.root = NULL;
            j.failed = true;
        }
        if (j.failed) {
            json_object_put(j.root);
            mesh_errf(err, errlen, "annotation proxy.istio.io/config: not a YAML or JSON map of proxy settings");
            return -1;
        }
        s->proxy_config = j.root;
        json_object *h = get(s->proxy_config, "holdApplicationUntilProxyStarts");
        if (h != NULL) {
            if (!json_object_is_type(h, json_type_boolean)) {
                mesh_errf(err, errlen, "annotation proxy.istio.io/config: holdApplicationUntilProxyStarts: must be true or false");
                goto fail;
            }
            s->hold = json_object_get_boolean(h);
        }
        json_object *pm = get(s->proxy_config, "proxyMetadata");
        if (pm != NULL && !json_object_is_type(pm, json_type_object)) {
            mesh_errf(err, errlen, "annotation proxy.istio.io/config: proxyMetadata: must be a map of names to strings");
            goto fail;
        }
    }
    static const char *const uv[] = {"sidecar.istio.io/userVolume", "sidecar.istio.io/userVolumeMount"};
    for (int k = 0; k < 2; k++) {
        const char *t = ann_or(ann, uv[k], NULL);
        if (t == NULL)
            continue;
        json_object *o = webhook_json_parse(t, strlen(t), NULL, 0);
        bool ok = json_object_is_type(o, json_type_object);
        if (ok) {
            json_object_object_foreach(o, name, def) {
                (void)name;
                ok = ok && json_object_is_type(def, json_type_object);
            }
        }
        if (!ok) {
            json_object_put(o);
            mesh_errf(err, errlen, "annotation %s: must be a JSON map of volume names to %s", uv[k],
                 k == 0 ? "volume sources" : "volume mounts");
            goto fail;
        }
        if (k == 0)
            s->user_volumes = o;
        else
            s->user_mounts = o;
    }
    return 0;
fail:
    json_object_put(s->proxy_config);
    json_object_put(s->user_volumes);
    json_object_put(s->user_mounts);
    s->proxy_config = s->user_volumes = s->user_mounts = NULL;
    return -1;
}

/* The values' resources, or, when the pod sets any of the four resource
 * annotations, exactly what the annotations say (as Istio does, so that an
 * annotated request never ends up above a default limit). */
static json_object *resources(const webhook_config_t *c, const struct settings *s)
{
    json_object *r = NULL;
    if (s->cpu || s->mem || s->cpu_limit || s->mem_limit)
        r = json_object_new_object();
    else
        json_object_deep_copy(c->resources, &r, NULL);
    if (r == NULL)
        r = json_object_new_object();
    if (s->cpu)
        json_object_object_add(ensure_obj(r, "requests"), "cpu", S(s->cpu));
    if (s->mem)
        json_object_object_add(ensure_obj(r, "requests"), "memory", S(s->mem));
    if (s->cpu_limit)
        json_object_object_add(ensure_obj(r, "limits"), "cpu", S(s->cpu_limit));
    if (s->mem_limit)
        json_object_object_add(ensure_obj(r, "limits"), "memory", S(s->mem_limit));
    return r;
}

static json_object *init_container(const webhook_config_t *c, const struct settings *s)
{
    char uid[24], gid[24], out[8], in[8], excl[256];
    snprintf(uid, sizeof(uid), "%lld", (long long)c->proxy_uid);
    snprintf(gid, sizeof(gid), "%lld", (long long)c->proxy_gid);
    snprintf(out, sizeof(out), "%lld", (long long)c->outbound_port);
    snprintf(in, sizeof(in), "%lld", (long long)c->inbound_port);
    /* The proxy's own ports are never captured inbound. */
    int n = snprintf(excl, sizeof(excl), "%lld,%lld,%lld", (long long)c->prometheus_port,
                     (long long)c->health_port, (long long)c->status_port);
    json_object *args = A(S("init"), S("-p"), S(out), S("-z"), S(in), S("-u"), S(uid), S("-g"), S(gid), S("-m"),
                          S(s->mode), S("-i"), S(s->include_ips), S("-x"), S(s->exclude_ips), S("-b"),
                          S(s->include_in_ports), S("-d"), NULL);
    if (s->exclude_in_ports[0] != '\0') {
        char *all = mesh_xmalloc((size_t)n + strlen(s->exclude_in_ports) + 2);
        sprintf(all, "%s,%s", excl, s->exclude_in_ports);
        json_object_array_add(args, S(all));
        free(all);
    } else {
        json_object_array_add(args, S(excl));
    }
    if (s->exclude_out_ports[0] != '\0') {
        json_object_array_add(args, S("-o"));
        json_object_array_add(args, S(s->exclude_out_ports));
    }
    if (s->include_out_ports[0] != '\0') {
        json_object_array_add(args, S("-q"));
        json_object_array_add(args, S(s->include_out_ports));
    }
    if (s->virt_ifaces[0] != '\0') {
        json_object_array_add(args, S("-k"));
        json_object_array_add(args, S(s->virt_ifaces));
    }
    return O("name", S(INIT_NAME), "image", S(s->image), "imagePullPolicy",
             c->image_pull_policy ? S(c->image_pull_policy) : NULL, "command", A(S("meshproxy"), NULL), "args",
             args, "resources", resources(c, s), "securityContext",
             O("allowPrivilegeEscalation", json_object_new_boolean(false), "capabilities",
               O("add", A(S("NET_ADMIN"), S("NET_RAW"), NULL), "drop", A(S("ALL"), NULL), NULL), "privileged",
               json_object_new_boolean(false), "readOnlyRootFilesystem", json_object_new_boolean(false),
               "runAsGroup", I(0), "runAsNonRoot", json_object_new_boolean(false), "runAsUser", I(0), NULL),
             NULL);
}

/* Ports and names of the application containers, for the proxy's metadata. */
static void app_metadata(json_object *spec, json_object **ports, char **names)
{
    json_object *cs = get(spec, "containers");
    size_t cap = 64, len = 0;
    *names = mesh_xmalloc(cap);
    (*names)[0] = '\0';
    *ports = json_object_new_array();
    for (size_t i = 0; json_object_is_type(cs, json_type_array) && i < json_object_array_length(cs); i++) {
        json_object *ct = json_object_array_get_idx(cs, i);
        const char *name = scalar(get(ct, "name"));
        if (name != NULL && strcmp(name, PROXY_NAME) == 0)
            continue;
        if (name != NULL) {
            size_t nl = strlen(name);
            if (len + nl + 2 > cap) {
                cap = (len + nl + 2) * 2;
                *names = mesh_xrealloc(*names, cap);
            }
            if (len > 0)
                (*names)[len++] = ',';
            memcpy(*names + len, name, nl + 1);
            len += nl;
        }
        json_object *ps = get(ct, "ports");
        for (size_t j = 0; json_object_is_type(ps, json_type_array) && j < json_object_array_length(ps); j++) {
            json_object *p = json_object_array_get_idx(ps, j);
            if (!json_object_is_type(p, json_type_object))
                continue;
            json_object *copy = json_object_new_object();
            static const char *const keep[] = {"name", "containerPort", "protocol"};
            for (size_t k = 0; k < 3; k++) {
                json_object *v = get(p, keep[k]);
                if (v != NULL)
                    json_object_object_add(copy, keep[k], json_object_get(v));
            }
            json_object_array_add(*ports, copy);
        }
    }
}

static json_object *proxy_container(const webhook_config_t *c, const struct settings *s, json_object *pod,
                                    const struct workload *w, const char *ns)
{
    json_object *spec = get(pod, "spec");
    char buf[1024];
    json_object *args = A(S("sidecar"), NULL);
    snprintf(buf, sizeof(buf), "$(POD_NAMESPACE).svc.%s", c->domain_suffix);
    json_object_array_add(args, S("--domain"));
    json_object_array_add(args, S(buf));
    snprintf(buf, sizeof(buf), "--proxyLogLevel=%s", s->log_level);
    json_object_array_add(args, S(buf));
    if (s->component_log_level != NULL) {
        snprintf(buf, sizeof(buf), "--proxyComponentLogLevel=%s", s->component_log_level);
        json_object_array_add(args, S(buf));
    }

    json_object *env = json_object_new_array();
    env_val(env, "JWT_POLICY", "third-party-jwt");
    env_val(env, "PILOT_CERT_PROVIDER", "istiod");
    env_val(env, "CA_ADDR", c->ca_address);
    env_field(env, "POD_NAME", "metadata.name");
    env_field(env, "POD_NAMESPACE", "metadata.namespace");
    env_field(env, "INSTANCE_IP", "status.podIP");
    env_field(env, "SERVICE_ACCOUNT", "spec.serviceAccountName");
    env_field(env, "HOST_IP", "status.hostIP");
    /* PROXY_CONFIG: the control plane's defaults with the pod's overrides. */
    json_object *pc = O("discoveryAddress", S(c->discovery_address), NULL);
    if (c->status_port != 15020) /* the proxy's default in a pod */
        json_object_object_add(pc, "statusPort", json_object_new_int64(c->status_port));
    if (s->proxy_config != NULL) {
        json_object_object_foreach(s->proxy_config, k, v) {
            json_object_object_add(pc, k, json_object_get(v));
        }
    }
    if (s->hold)
        json_object_object_add(pc, "holdApplicationUntilProxyStarts", json_object_new_boolean(true));
    env_val(env, "PROXY_CONFIG", to_json(pc));
    json_object_put(pc);
    json_object *ports;
    char *names;
    app_metadata(spec, &ports, &names);
    if (json_object_array_length(ports) > 0)
        env_val(env, "ISTIO_META_POD_PORTS", to_json(ports));
    json_object_put(ports);
    env_val(env, "ISTIO_META_APP_CONTAINERS", names);
    free(names);
    env_val(env, "ISTIO_META_CLUSTER_ID", c->cluster_id);
    env_field(env, "ISTIO_META_NODE_NAME", "spec.nodeName");
    env_val(env, "ISTIO_META_INTERCEPTION_MODE", s->mode);
    if (w->name[0] != '\0')
        env_val(env, "ISTIO_META_WORKLOAD_NAME", w->name);
    if (ns != NULL && ns[0] != '\0' && w->name[0] != '\0') {
        char plural[80];
        size_t i;
        for (i = 0; w->kind[i] && i + 2 < sizeof(plural); i++)
            plural[i] = (char)tolower((unsigned char)w->kind[i]);
        plural[i++] = 's';
        plural[i] = '\0';
        snprintf(buf, sizeof(buf), "kubernetes://apis/%s/namespaces/%s/%s/%s", w->api_version, ns, plural, w->name);
        env_val(env, "ISTIO_META_OWNER", buf);
    }
    env_val(env, "ISTIO_META_MESH_ID", c->trust_domain);
    env_val(env, "TRUST_DOMAIN", c->trust_domain);
    json_object_object_foreach(c->env, ek, ev) {
        env_val(env, ek, json_object_get_string(ev));
    }
    json_object *pm = get(s->proxy_config, "proxyMetadata");
    if (pm != NULL) {
        json_object_object_foreach(pm, mk, mv) {
            if (mv != NULL && !json_object_is_type(mv, json_type_object) && !json_object_is_type(mv, json_type_array))
                env_val(env, mk, json_object_get_string(mv));
        }
    }

    json_object *mounts = A(O("name", S("workload-socket"), "mountPath", S("/var/run/secrets/workload-spiffe-uds"), NULL),
                            O("name", S("workload-certs"), "mountPath", S("/var/run/secrets/workload-spiffe-credentials"), NULL),
                            O("name", S("istiod-ca-cert"), "mountPath", S("/var/run/secrets/istio"), NULL),
                            O("name", S("istio-data"), "mountPath", S("/var/lib/istio/data"), NULL),
                            O("name", S("istio-envoy"), "mountPath", S("/etc/istio/proxy"), NULL),
                            O("name", S("istio-token"), "mountPath", S("/var/run/secrets/tokens"), NULL),
                            O("name", S("istio-podinfo"), "mountPath", S("/etc/istio/pod"), NULL), NULL);
    if (s->user_mounts != NULL) {
        json_object_object_foreach(s->user_mounts, mk, mv) {
            json_object *m = NULL;
            json_object_deep_copy(mv, &m, NULL);
            json_object_object_add(m, "name", S(mk));
            json_object_array_add(mounts, m);
        }
    }

    json_object *probe = NULL;
    if (s->probe)
        probe = O("httpGet", O("path", S("/healthz/ready"), "port", I(c->health_port), NULL), "initialDelaySeconds",
                  I(s->probe_delay), "periodSeconds", I(s->probe_period), "timeoutSeconds", I(c->readiness_timeout),
                  "failureThreshold", I(s->probe_failure), NULL);
    json_object *lifecycle = NULL;
    if (s->hold)
        lifecycle = O("postStart", O("exec", O("command", A(S("meshproxy"), S("wait"), NULL), NULL), NULL), NULL);

    return O("name", S(PROXY_NAME), "image", S(s->image), "imagePullPolicy",
             c->image_pull_policy ? S(c->image_pull_policy) : NULL, "command", A(S("meshproxy"), NULL), "args", args,
             "env", env, "ports",
             A(O("containerPort", I(c->prometheus_port), "name", S("http-envoy-prom"), "protocol", S("TCP"), NULL),
               O("containerPort", I(c->status_port), "name", S("http-status"), "protocol", S("TCP"), NULL), NULL),
             "readinessProbe", probe, "lifecycle", lifecycle, "resources", resources(c, s), "securityContext",
             O("allowPrivilegeEscalation", json_object_new_boolean(false), "capabilities",
               O("drop", A(S("ALL"), NULL), NULL), "privileged", json_object_new_boolean(false),
               "readOnlyRootFilesystem", json_object_new_boolean(true), "runAsGroup", I(c->proxy_gid), "runAsNonRoot",
               json_object_new_boolean(true), "runAsUser", I(c->proxy_uid), NULL),
             "volumeMounts", mounts, NULL);
}

static const char *const volume_names[] = {"workload-socket", "workload-certs", "istio-envoy", "istio-data",
                                           "istio-podinfo", "istio-token", "istiod-ca-cert"};

static json_object *volumes(const webhook_config_t *c)
{
    return A(O("name", S("workload-socket"), "emptyDir", O(NULL), NULL),
             O("name", S("workload-certs"), "emptyDir", O(NULL), NULL),
             O("name", S("istio-envoy"), "emptyDir", O("medium", S("Memory"), NULL), NULL),
             O("name", S("istio-data"), "emptyDir", O(NULL), NULL),
             O("name", S("istio-podinfo"), "downwardAPI",
               O("items",
                 A(O("path", S("labels"), "fieldRef", O("fieldPath", S("metadata.labels"), NULL), NULL),
                   O("path", S("annotations"), "fieldRef", O("fieldPath", S("metadata.annotations"), NULL), NULL),
                   NULL),
                 NULL),
               NULL),
             O("name", S("istio-token"), "projected",
               O("sources",
                 A(O("serviceAccountToken",
                     O("audience", S(c->token_audience), "expirationSeconds", I(c->token_expiration), "path",
                       S("istio-token"), NULL),
                     NULL),
                   NULL),
                 NULL),
               NULL),
             O("name", S("istiod-ca-cert"), "configMap", O("name", S(c->root_cert_configmap), NULL), NULL), NULL);
}

static json_object *concat(json_object *front, json_object *back);

/* Merges a container the pod declares under the injected name over the
 * injected one (Istio's override): maps merge, env/volumeMounts/ports merge
 * by their key, anything else the pod sets wins; image "auto" keeps ours. */
static void merge_over(json_object *base, json_object *over, int depth)
{
    json_object_object_foreach(over, k, v) {
        json_object *b = get(base, k);
        if (depth == 0 && strcmp(k, "image") == 0 && json_object_is_type(v, json_type_string) &&
            strcmp(json_object_get_string(v), "auto") == 0)
            continue;
        if (depth < 16 && json_object_is_type(b, json_type_object) && json_object_is_type(v, json_type_object)) {
            merge_over(b, v, depth + 1);
            continue;
        }
        const char *key = NULL;
        if (depth == 0 && strcmp(k, "env") == 0)
            key = "name";
        else if (depth == 0 && strcmp(k, "volumeMounts") == 0)
            key = "mountPath";
        else if (depth == 0 && strcmp(k, "ports") == 0)
            key = "containerPort";
        if (key != NULL && json_object_is_type(b, json_type_array) && json_object_is_type(v, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(v); i++) {
                json_object *item = json_object_array_get_idx(v, i), *copy = NULL;
                json_object *kv = get(item, key);
                size_t j, n = json_object_array_length(b);
                for (j = 0; kv != NULL && j < n; j++)
                    if (json_object_equal(get(json_object_array_get_idx(b, j), key), kv))
                        break;
                json_object_deep_copy(item, &copy, NULL);
                if (kv != NULL && j < n)
                    json_object_array_put_idx(b, j, copy);
                else
                    json_object_array_add(b, copy);
            }
            continue;
        }
        json_object *copy = NULL;
        if (v != NULL)
            json_object_deep_copy(v, &copy, NULL);
        json_object_object_add(base, k, copy);
    }
}

/* Adds the injected container c (consumed) to list: merged over the pod's
 * own container of that name where there is one, else first or last. */
static json_object *place_container(json_object *list, json_object *c, bool first)
{
    const char *name = scalar(get(c, "name"));
    for (size_t i = 0; json_object_is_type(list, json_type_array) && i < json_object_array_length(list); i++) {
        json_object *own = json_object_array_get_idx(list, i);
        const char *n = scalar(get(own, "name"));
        if (n != NULL && strcmp(n, name) == 0 && json_object_is_type(own, json_type_object)) {
            merge_over(c, own, 0);
            json_object *out = NULL;
            json_object_deep_copy(list, &out, NULL);
            json_object_array_put_idx(out, i, c);
            return out;
        }
    }
    json_object *one = json_object_new_array();
    json_object_array_add(one, c);
    json_object *out = first ? concat(one, list) : concat(list, one);
    json_object_put(one);
    return out;
}

/* A new array: items of `front` then those of `back` (references taken). */
static json_object *concat(json_object *front, json_object *back)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; front && i < json_object_array_length(front); i++)
        json_object_array_add(a, json_object_get(json_object_array_get_idx(front, i)));
    for (size_t i = 0; back && i < json_object_array_length(back); i++)
        json_object_array_add(a, json_object_get(json_object_array_get_idx(back, i)));
    return a;
}

static bool has_named(json_object *arr, const char *name)
{
    for (size_t i = 0; json_object_is_type(arr, json_type_array) && i < json_object_array_length(arr); i++) {
        const char *n = scalar(get(json_object_array_get_idx(arr, i), "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

/* Istio's Prometheus merge: unless the pod opted out (scrape "false" or
 * prometheus.istio.io/merge-metrics "false"), scrape the proxy's merged
 * endpoint and hand the application's own settings to the proxy. */
static void prometheus_merge(const webhook_config_t *c, json_object *ann, json_object *proxy)
{
    const char *scrape = scalar(get(ann, "prometheus.io/scrape"));
    const char *merge = scalar(get(ann, "prometheus.istio.io/merge-metrics"));
    char port[16];
    if (!c->prometheus_merge || (scrape != NULL && strcasecmp(scrape, "false") == 0) ||
        (merge != NULL && strcasecmp(merge, "false") == 0))
        return;
    snprintf(port, sizeof(port), "%lld", (long long)c->status_port);
    const char *cur = scalar(get(ann, "prometheus.io/port"));
    if (cur != NULL && strcmp(cur, port) == 0)
        return;
    json_object *orig = json_object_new_object();
    static const char *const keys[] = {"scrape", "path", "port"};
    for (int i = 0; i < 3; i++) {
        char k[32];
        snprintf(k, sizeof(k), "prometheus.io/%s", keys[i]);
        const char *v = scalar(get(ann, k));
        if (v != NULL)
            json_object_object_add(orig, keys[i], S(v));
    }
    if (json_object_object_length(orig) > 0)
        env_val(get(proxy, "env"), "ISTIO_PROMETHEUS_ANNOTATIONS", to_json(orig));
    json_object_put(orig);
    json_object_object_add(ann, "prometheus.io/port", S(port));
    json_object_object_add(ann, "prometheus.io/path", S("/stats/prometheus"));
    json_object_object_add(ann, "prometheus.io/scrape", S("true"));
}

int webhook_inject_pod(const webhook_config_t *c, json_object *pod, const webhook_workload_t *wl, char *err,
                       size_t errlen)
{
    struct settings s;
    struct workload w;
    if (!json_object_is_type(pod, json_type_object)) {
        mesh_errf(err, errlen, "the pod is not an object");
        return -1;
    }
    json_object *spec = get(pod, "spec");
    if (!json_object_is_type(spec, json_type_object)) {
        mesh_errf(err, errlen, "spec: missing or not an object");
        return -1;
    }
    json_object *cs = get(spec, "containers");
    if (cs != NULL && !json_object_is_type(cs, json_type_array)) {
        mesh_errf(err, errlen, "spec.containers: must be a list");
        return -1;
    }
    json_object *ics = get(spec, "initContainers");
    if (ics != NULL && !json_object_is_type(ics, json_type_array)) {
        mesh_errf(err, errlen, "spec.initContainers: must be a list");
        return -1;
    }
    json_object *vols = get(spec, "volumes");
    if (vols != NULL && !json_object_is_type(vols, json_type_array)) {
        mesh_errf(err, errlen, "spec.volumes: must be a list");
        return -1;
    }
    json_object *meta0 = get(pod, "metadata");
    if (meta0 != NULL && !json_object_is_type(meta0, json_type_object)) {
        mesh_errf(err, errlen, "metadata: must be an object");
        return -1;
    }
    json_object *ann0 = get(meta0, "annotations");
    if (ann0 != NULL && !json_object_is_type(ann0, json_type_object)) {
        mesh_errf(err, errlen, "metadata.annotations: must be a map");
        return -1;
    }
    json_object *lab0 = get(meta0, "labels");
    if (lab0 != NULL && !json_object_is_type(lab0, json_type_object)) {
        mesh_errf(err, errlen, "metadata.labels: must be a map");
        return -1;
    }
    if (read_settings(c, ann0, &s, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(volume_names) / sizeof(volume_names[0]); i++)
        if (has_named(vols, volume_names[i])) {
            mesh_errf(err, errlen, "spec.volumes: the pod already has a volume named \"%s\", which the sidecar needs",
                 volume_names[i]);
            goto fail;
        }
    if (s.user_volumes != NULL) {
        json_object_object_foreach(s.user_volumes, vk, vv) {
            (void)vv;
            if (has_named(vols, vk)) {
                mesh_errf(err, errlen, "annotation sidecar.istio.io/userVolume: the pod already has a volume named \"%s\"", vk);
                goto fail;
            }
        }
    }

    const char *ns = wl && wl->ns ? wl->ns : scalar(get(meta0, "namespace"));
    derive_workload(pod, wl, &w);
    /* The app container kubectl picks by default (before the proxy joins). */
    const char *first_app = NULL;
    for (size_t i = 0; cs != NULL && first_app == NULL && i < json_object_array_length(cs); i++) {
        first_app = scalar(get(json_object_array_get_idx(cs, i), "name"));
        if (first_app != NULL && strcmp(first_app, PROXY_NAME) == 0)
            first_app = NULL;
    }
    char *first = first_app ? mesh_xstrdup(first_app) : NULL;

    json_object *proxy = proxy_container(c, &s, pod, &w, ns);
    json_object *meta = ensure_obj(pod, "metadata");
    json_object *ann = ensure_obj(meta, "annotations");
    json_object *labels = ensure_obj(meta, "labels");
    prometheus_merge(c, ann, proxy);

    /* Containers: the proxy last, or first when the app waits for it. */
    json_object_object_add(spec, "containers", place_container(cs, proxy, s.hold));
    bool init = strcmp(s.mode, "NONE") != 0;
    if (init)
        json_object_object_add(spec, "initContainers", place_container(ics, init_container(c, &s), true));
    json_object *nv = volumes(c);
    if (s.user_volumes != NULL) {
        json_object_object_foreach(s.user_volumes, vk, vv) {
            json_object *v = NULL;
            json_object_deep_copy(vv, &v, NULL);
            json_object *named = O("name", S(vk), NULL);
            json_object_object_foreach(v, sk, sv) {
                json_object_object_add(named, sk, json_object_get(sv));
            }
            json_object_put(v);
            json_object_array_add(nv, named);
        }
    }
    json_object_object_add(spec, "volumes", concat(get(spec, "volumes"), nv));
    if (json_object_array_length(c->image_pull_secrets) > 0) {
        json_object *ips = ensure_arr(spec, "imagePullSecrets");
        for (size_t i = 0; i < json_object_array_length(c->image_pull_secrets); i++) {
            const char *n = json_object_get_string(json_object_array_get_idx(c->image_pull_secrets, i));
            if (!has_named(ips, n))
                json_object_array_add(ips, O("name", S(n), NULL));
        }
    }

    /* The status annotation lists what was added, in Istio's format. */
    json_object *vnames = json_object_new_array();
    for (size_t vi = 0; vi < json_object_array_length(nv); vi++)
        json_object_array_add(vnames, json_object_get(get(json_object_array_get_idx(nv, vi), "name")));
    json_object_put(nv);
    json_object *ipsn = NULL;
    if (json_object_array_length(c->image_pull_secrets) > 0)
        json_object_deep_copy(c->image_pull_secrets, &ipsn, NULL);
    json_object *status = O("initContainers", init ? A(S(INIT_NAME), NULL) : NULL, "containers",
                            A(S(PROXY_NAME), NULL), "volumes", vnames, NULL);
    if (!init)
        json_object_object_add(status, "initContainers", NULL);
    json_object_object_add(status, "imagePullSecrets", ipsn);
    json_object_object_add(status, "revision", S(c->revision));
    json_object_object_add(ann, A_STATUS, S(to_json(status)));
    json_object_put(status);
    if (first != NULL) {
        if (get(ann, "kubectl.kubernetes.io/default-container") == NULL)
            json_object_object_add(ann, "kubectl.kubernetes.io/default-container", S(first));
        if (get(ann, "kubectl.kubernetes.io/default-logs-container") == NULL)
            json_object_object_add(ann, "kubectl.kubernetes.io/default-logs-container", S(first));
        free(first);
    }
    if (get(ann, A_REV) == NULL)
        json_object_object_add(ann, A_REV, S(c->revision));

    /* Labels, as Istio decides them. */
    if (get(labels, "security.istio.io/tlsMode") == NULL)
        json_object_object_add(labels, "security.istio.io/tlsMode", S("istio"));
    if (get(labels, "service.istio.io/canonical-name") == NULL) {
        const char *cn = scalar(get(labels, "app.kubernetes.io/name"));
        if (cn == NULL)
            cn = scalar(get(labels, "app"));
        if (cn == NULL)
            cn = w.name;
        json_object_object_add(labels, "service.istio.io/canonical-name", label_value(cn));
    }
    if (get(labels, "service.istio.io/canonical-revision") == NULL) {
        const char *cr = scalar(get(labels, "app.kubernetes.io/version"));
        if (cr == NULL)
            cr = scalar(get(labels, "version"));
        json_object_object_add(labels, "service.istio.io/canonical-revision", label_value(cr ? cr : "latest"));
    }
    json_object_put(s.proxy_config);
    json_object_put(s.user_volumes);
    json_object_put(s.user_mounts);
    return 0;
fail:
    json_object_put(s.proxy_config);
    json_object_put(s.user_volumes);
    json_object_put(s.user_mounts);
    return -1;
}

json_object *webhook_json_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    if (len > INT32_MAX) {
        mesh_errf(err, errlen, "document too large");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(DOC_MAX_DEPTH);
    if (tok == NULL) {
        mesh_errf(err, errlen, "out of memory");
        return NULL;
    }
    json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        mesh_errf(err, errlen, "invalid JSON: unexpected end of input");
        json_object_put(o);
        o = NULL;
    } else if (e != json_tokener_success) {
        mesh_errf(err, errlen, "invalid JSON at offset %zu: %s", json_tokener_get_parse_end(tok),
             json_tokener_error_desc(e));
        json_object_put(o);
        o = NULL;
    } else {
        size_t end = json_tokener_get_parse_end(tok);
        while (end < len && isspace((unsigned char)buf[end]))
            end++;
        if (end < len) {
            mesh_errf(err, errlen, "invalid JSON: unexpected data after the value at offset %zu", end);
            json_object_put(o);
            o = NULL;
        }
    }
    json_tokener_free(tok);
    return o;
}
