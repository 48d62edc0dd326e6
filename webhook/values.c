/*
 * The injection values: built-in defaults, overridden by a YAML/JSON values
 * document (a file, or the `values` key of the istio-sidecar-injector
 * ConfigMap). Every value is documented in webhook/TEMPLATE.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "../common/doc.h"
#include "../config/config.h"
#include "webhook_internal.h"

#define DEFAULT_IMAGE "docker.io/meshd/meshproxy:0.1.0"

static char *xdup(const char *s)
{
    return s ? mesh_xstrdup(s) : NULL;
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = xdup(s);
}

webhook_config_t *webhook_config_default(const char *mesh_ns)
{
    webhook_config_t *c = mesh_xcalloc(1, sizeof(*c));
    char addr[320];
    atomic_init(&c->refs, 1);
    if (mesh_ns == NULL || mesh_ns[0] == '\0')
        mesh_ns = "istio-system";
    snprintf(addr, sizeof(addr), "meshd.%s.svc:15012", mesh_ns);
    c->revision = xdup("default");
    c->policy = xdup("enabled");
    c->image = xdup(DEFAULT_IMAGE);
    c->discovery_address = xdup(addr);
    c->ca_address = xdup(addr);
    c->mesh_ns = xdup(mesh_ns);
    c->trust_domain = xdup("cluster.local");
    c->cluster_id = xdup("Kubernetes");
    c->domain_suffix = xdup("cluster.local");
    c->log_level = xdup("warning");
    c->proxy_uid = c->proxy_gid = 1337;
    c->outbound_port = 15001;
    c->inbound_port = 15006;
    c->status_port = 15020;
    c->health_port = 15021;
    c->prometheus_port = 15090;
    c->resources = json_tokener_parse("{\"requests\":{\"cpu\":\"100m\",\"memory\":\"128Mi\"},"
                                      "\"limits\":{\"cpu\":\"2000m\",\"memory\":\"1024Mi\"}}");
    c->prometheus_merge = true;
    c->include_outbound_ip_ranges = xdup("*");
    c->exclude_outbound_ip_ranges = xdup("");
    c->include_inbound_ports = xdup("*");
    c->exclude_inbound_ports = xdup("");
    c->exclude_outbound_ports = xdup("");
    c->readiness_initial_delay = 1;
    c->readiness_period = 2;
    c->readiness_timeout = 3;
    c->readiness_failure_threshold = 30;
    c->token_audience = xdup("istio-ca");
    c->token_expiration = 43200;
    c->root_cert_configmap = xdup("istio-ca-root-cert");
    c->env = json_object_new_object();
    c->image_pull_secrets = json_object_new_array();
    return c;
}

webhook_config_t *webhook_config_ref(webhook_config_t *c)
{
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void webhook_config_unref(webhook_config_t *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    char **strs[] = {&c->revision, &c->policy, &c->image, &c->image_pull_policy,
                     &c->discovery_address, &c->ca_address, &c->mesh_ns, &c->trust_domain,
                     &c->cluster_id, &c->domain_suffix, &c->log_level, &c->include_outbound_ip_ranges,
                     &c->exclude_outbound_ip_ranges, &c->include_inbound_ports,
                     &c->exclude_inbound_ports, &c->exclude_outbound_ports, &c->token_audience,
                     &c->root_cert_configmap};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    json_object_put(c->resources);
    json_object_put(c->env);
    json_object_put(c->image_pull_secrets);
    free(c);
}

const char *webhook_config_revision(const webhook_config_t *c)
{
    return c->revision;
}

/* ---- the values document ---- */

enum vkind { V_STR, V_INT, V_BOOL, V_RES, V_ENV, V_SECRETS };

struct vdesc {
    const char *name;
    enum vkind kind;
    size_t off;
    int64_t min, max; /* V_INT */
    const char *const *choices; /* V_STR: allowed values, NULL: any */
    bool allow_empty;
};

static const char *const policies[] = {"enabled", "disabled", NULL};
static const char *const pull_policies[] = {"Always", "IfNotPresent", "Never", NULL};
static const char *const log_levels[] = {"trace", "debug", "info", "warning", "warn", "error",
                                         "critical", "off", NULL};

#define OFF(f) offsetof(webhook_config_t, f)
static const struct vdesc values[] = {
    {"revision", V_STR, OFF(revision), 0, 0, NULL, false},
    {"policy", V_STR, OFF(policy), 0, 0, policies, false},
    {"image", V_STR, OFF(image), 0, 0, NULL, false},
    {"imagePullPolicy", V_STR, OFF(image_pull_policy), 0, 0, pull_policies, false},
    {"discoveryAddress", V_STR, OFF(discovery_address), 0, 0, NULL, false},
    {"caAddress", V_STR, OFF(ca_address), 0, 0, NULL, false},
    {"meshNamespace", V_STR, OFF(mesh_ns), 0, 0, NULL, false},
    {"trustDomain", V_STR, OFF(trust_domain), 0, 0, NULL, false},
    {"clusterId", V_STR, OFF(cluster_id), 0, 0, NULL, false},
    {"domainSuffix", V_STR, OFF(domain_suffix), 0, 0, NULL, false},
    {"logLevel", V_STR, OFF(log_level), 0, 0, log_levels, false},
    {"proxyUID", V_INT, OFF(proxy_uid), 1, 2147483647, NULL, false},
    {"proxyGID", V_INT, OFF(proxy_gid), 1, 2147483647, NULL, false},
    {"outboundPort", V_INT, OFF(outbound_port), 1, 65535, NULL, false},
    {"inboundPort", V_INT, OFF(inbound_port), 1, 65535, NULL, false},
    {"statusPort", V_INT, OFF(status_port), 1, 65535, NULL, false},
    {"healthPort", V_INT, OFF(health_port), 1, 65535, NULL, false},
    {"prometheusPort", V_INT, OFF(prometheus_port), 1, 65535, NULL, false},
    {"resources", V_RES, OFF(resources), 0, 0, NULL, false},
    {"holdApplicationUntilProxyStarts", V_BOOL, OFF(hold_application), 0, 0, NULL, false},
    {"prometheusMerge", V_BOOL, OFF(prometheus_merge), 0, 0, NULL, false},
    {"includeOutboundIPRanges", V_STR, OFF(include_outbound_ip_ranges), 0, 0, NULL, true},
    {"excludeOutboundIPRanges", V_STR, OFF(exclude_outbound_ip_ranges), 0, 0, NULL, true},
    {"includeInboundPorts", V_STR, OFF(include_inbound_ports), 0, 0, NULL, true},
    {"excludeInboundPorts", V_STR, OFF(exclude_inbound_ports), 0, 0, NULL, true},
    {"excludeOutboundPorts", V_STR, OFF(exclude_outbound_ports), 0, 0, NULL, true},
    {"readinessInitialDelaySeconds", V_INT, OFF(readiness_initial_delay), 0, 86400, NULL, false},
    {"readinessPeriodSeconds", V_INT, OFF(readiness_period), 1, 86400, NULL, false},
    {"readinessTimeoutSeconds", V_INT, OFF(readiness_timeout), 1, 86400, NULL, false},
    {"readinessFailureThreshold", V_INT, OFF(readiness_failure_threshold), 1, 100000, NULL, false},
    {"tokenAudience", V_STR, OFF(token_audience), 0, 0, NULL, false},
    {"tokenExpirationSeconds", V_INT, OFF(token_expiration), 600, 31536000, NULL, false},
    {"rootCertConfigMap", V_STR, OFF(root_cert_configmap), 0, 0, NULL, false},
    {"env", V_ENV, OFF(env), 0, 0, NULL, false},
    {"imagePullSecrets", V_SECRETS, OFF(image_pull_secrets), 0, 0, NULL, false},
};
#undef OFF

/* Checks and copies {"requests":{"cpu":..,"memory":..},"limits":{..}}. */
static int parse_resources(json_object *v, json_object **dst, char *err, size_t errlen)
{
    if (!json_object_is_type(v, json_type_object)) {
        snprintf(err, errlen, "resources: must be an object with requests and limits");
        return -1;
    }
    json_object *out = json_object_new_object();
    json_object_object_foreach(v, k, sub) {
        if (strcmp(k, "requests") != 0 && strcmp(k, "limits") != 0) {
            snprintf(err, errlen, "resources: unknown field \"%s\" (requests or limits)", k);
            goto fail;
        }
        if (sub == NULL)
            continue;
        if (!json_object_is_type(sub, json_type_object)) {
            snprintf(err, errlen, "resources.%s: must be an object", k);
            goto fail;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(out, k, o);
        json_object_object_foreach(sub, rk, rv) {
            char q[64];
            if (json_object_is_type(rv, json_type_string))
                snprintf(q, sizeof(q), "%s", json_object_get_string(rv));
            else if (json_object_is_type(rv, json_type_int))
                snprintf(q, sizeof(q), "%lld", (long long)json_object_get_int64(rv));
            else if (rv == NULL)
                continue;
            else {
                snprintf(err, errlen, "resources.%s.%s: must be a quantity such as \"100m\" or \"128Mi\"", k, rk);
                goto fail;
            }
            json_object_object_add(o, rk, json_object_new_string(q));
        }
    }
    json_object_put(*dst);
    *dst = out;
    return 0;
fail:
    json_object_put(out);
    return -1;
}

static int apply_value(webhook_config_t *c, const struct vdesc *d, json_object *v, char *err,
                       size_t errlen)
{
    void *p = (char *)c + d->off;
    switch (d->kind) {
    case V_STR:
        if (v == NULL && d->allow_empty) {
            set_str(p, "");
            return 0;
        }
        if (!json_object_is_type(v, json_type_string)) {
            snprintf(err, errlen, "%s: must be a string", d->name);
            return -1;
        }
        if (!d->allow_empty && json_object_get_string_len(v) == 0) {
            snprintf(err, errlen, "%s: must not be empty", d->name);
            return -1;
        }
        if (d->choices != NULL) {
            const char *const *ch = d->choices;
            while (*ch && strcmp(*ch, json_object_get_string(v)) != 0)
                ch++;
            if (*ch == NULL) {
                char list[160];
                size_t n = 0;
                for (ch = d->choices; *ch && n < sizeof(list); ch++)
                    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", ch == d->choices ? "" : ", ", *ch);
                snprintf(err, errlen, "%s: \"%s\" is not one of %s", d->name, json_object_get_string(v), list);
                return -1;
            }
        }
        set_str(p, json_object_get_string(v));
        return 0;
    case V_INT: {
        if (!json_object_is_type(v, json_type_int)) {
            snprintf(err, errlen, "%s: must be an integer", d->name);
            return -1;
        }
        int64_t i = json_object_get_int64(v);
        if (i < d->min || i > d->max) {
            snprintf(err, errlen, "%s: %lld is out of range [%lld, %lld]", d->name, (long long)i,
                     (long long)d->min, (long long)d->max);
            return -1;
        }
        *(int64_t *)p = i;
        return 0;
    }
    case V_BOOL:
        if (!json_object_is_type(v, json_type_boolean)) {
            snprintf(err, errlen, "%s: must be true or false", d->name);
            return -1;
        }
        *(bool *)p = json_object_get_boolean(v);
        return 0;
    case V_RES:
        if (v == NULL) {
            json_object_put(*(json_object **)p);
            *(json_object **)p = json_object_new_object();
            return 0;
        }
        return parse_resources(v, p, err, errlen);
    case V_ENV: {
        if (!json_object_is_type(v, json_type_object)) {
            snprintf(err, errlen, "env: must be a map of variable names to strings");
            return -1;
        }
        json_object *env = json_object_new_object();
        json_object_object_foreach(v, k, ev) {
            if (k[0] == '\0' || !(json_object_is_type(ev, json_type_string) ||
                                  json_object_is_type(ev, json_type_int) ||
                                  json_object_is_type(ev, json_type_boolean))) {
                snprintf(err, errlen, "env.%s: must be a string", k);
                json_object_put(env);
                return -1;
            }
            json_object_object_add(env, k, json_object_new_string(json_object_get_string(ev)));
        }
        json_object_put(*(json_object **)p);
        *(json_object **)p = env;
        return 0;
    }
    case V_SECRETS: {
        if (!json_object_is_type(v, json_type_array)) {
            snprintf(err, errlen, "imagePullSecrets: must be a list of secret names");
            return -1;
        }
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *s = json_object_array_get_idx(v, i);
            if (!json_object_is_type(s, json_type_string) || json_object_get_string_len(s) == 0) {
                snprintf(err, errlen, "imagePullSecrets[%zu]: must be a secret name", i);
                json_object_put(a);
                return -1;
            }
            json_object_array_add(a, json_object_get(s));
        }
        json_object_put(*(json_object **)p);
        *(json_object **)p = a;
        return 0;
    }
    }
    return -1;
}

struct first_doc {
    json_object *root;
    char err[256];
    int ndocs;
};

static int first_doc_cb(void *ud, const doc_t *d)
{
    struct first_doc *f = ud;
    if (f->ndocs++ > 0)
        return 0;
    if (d->root == NULL) {
        snprintf(f->err, sizeof(f->err), "%s", d->error ? d->error : "cannot parse");
        return 0;
    }
    doc_node_t *copy = doc_copy(d->arena, d->root); /* bounds alias expansion */
    if (copy == NULL) {
        snprintf(f->err, sizeof(f->err), "document too large once its aliases are expanded");
        return 0;
    }
    f->root = cfg_doc_to_json(copy);
    return 0;
}

/* The first document of a YAML/JSON text as JSON; NULL with err. */
static json_object *parse_doc(const char *text, size_t len, char *err, size_t errlen)
{
    struct first_doc f = {0};
    doc_parse(text, len, DOC_FMT_AUTO, first_doc_cb, &f);
    if (f.root == NULL)
        snprintf(err, errlen, "%s", f.err[0] ? f.err : "empty document");
    return f.root;
}

webhook_config_t *webhook_config_parse(const char *text, size_t len, const char *mesh_ns, char *err,
                                       size_t errlen)
{
    webhook_config_t *c = NULL;
    json_object *root = parse_doc(text, len, err, errlen);
    json_object *inner = NULL;
    if (root == NULL)
        return NULL;
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "the values document must be a map of value names");
        goto out;
    }
    json_object *kind = json_object_object_get(root, "kind");
    if (kind != NULL && json_object_is_type(kind, json_type_string) &&
        strcmp(json_object_get_string(kind), "ConfigMap") == 0) {
        json_object *data = json_object_object_get(root, "data");
        json_object *vals = data ? json_object_object_get(data, WEBHOOK_CONFIGMAP_KEY) : NULL;
        if (!json_object_is_type(vals, json_type_string)) {
            snprintf(err, errlen, "ConfigMap: data.%s is missing or not a string", WEBHOOK_CONFIGMAP_KEY);
            goto out;
        }
        inner = parse_doc(json_object_get_string(vals), (size_t)json_object_get_string_len(vals), err, errlen);
        if (inner == NULL)
            goto out;
        if (!json_object_is_type(inner, json_type_object)) {
            snprintf(err, errlen, "data.%s: must be a map of value names", WEBHOOK_CONFIGMAP_KEY);
            goto out;
        }
    }
    json_object *doc = inner ? inner : root;
    /* meshNamespace first: the default addresses depend on it. */
    json_object *nsv = json_object_object_get(doc, "meshNamespace");
    if (json_object_is_type(nsv, json_type_string) && json_object_get_string_len(nsv) > 0)
        mesh_ns = json_object_get_string(nsv);
    c = webhook_config_default(mesh_ns);
    json_object_object_foreach(doc, k, v) {
        const struct vdesc *d = NULL;
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
            if (strcmp(values[i].name, k) == 0)
                d = &values[i];
        if (d == NULL) {
            snprintf(err, errlen, "unknown value \"%s\" (see webhook/TEMPLATE.md)", k);
            goto fail;
        }
        if (v == NULL && d->kind != V_RES && !(d->kind == V_STR && d->allow_empty)) {
            if (d->off == offsetof(webhook_config_t, image_pull_policy)) {
                set_str(&c->image_pull_policy, NULL);
                continue;
            }
            snprintf(err, errlen, "%s: must not be null", k);
            goto fail;
        }
        if (apply_value(c, d, v, err, errlen) != 0)
            goto fail;
    }
    /* The CA is served beside discovery unless set on its own. */
    if (json_object_object_get_ex(doc, "discoveryAddress", NULL) &&
        !json_object_object_get_ex(doc, "caAddress", NULL))
        set_str(&c->ca_address, c->discovery_address);
    goto out;
fail:
    webhook_config_unref(c);
    c = NULL;
out:
    json_object_put(inner);
    json_object_put(root);
    return c;
}

webhook_config_t *webhook_config_load(const char *path, const char *mesh_ns, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    webhook_config_t *c = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - len < 4096) {
            if (cap > (16u << 20)) {
                snprintf(err, errlen, "%s: file too large", path);
                goto out;
            }
            cap = cap ? cap * 2 : 8192;
            buf = mesh_xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto out;
    }
    char why[256];
    c = webhook_config_parse(buf, len, mesh_ns, why, sizeof(why));
    if (c == NULL)
        snprintf(err, errlen, "%s: %s", path, why);
out:
    free(buf);
    fclose(f);
    return c;
}
