/*
 * Validators of the Kubernetes objects the mesh reads. The API server has
 * checked objects that come from a cluster; these rules matter in local mode,
 * where a user's YAML reaches the mesh without it. They are a subset of the
 * API server's own rules: the ones whose violation would mislead the mesh
 * (ports, addresses, selectors, encodings, webhook endpoints).
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"

#define KUBE_MAX_SLICE_ADDRESSES 100
#define KUBE_MAX_WEBHOOK_TIMEOUT 30

/* ---- shared pieces ---- */

static bool is_one_of(const char *s, const char *const *values)
{
    for (; *values; values++)
        if (strcmp(s, *values) == 0)
            return true;
    return false;
}

static const char *const k_protocols[] = {"TCP", "UDP", "SCTP", NULL};

static void check_protocol(cfg_vctx_t *v, const char *protocol)
{
    if (protocol != NULL && !is_one_of(protocol, k_protocols))
        cfg_verr(v, "protocol", "Unsupported value: \"%s\": supported values: \"TCP\", \"UDP\", "
                                "\"SCTP\"", protocol);
}

/* IANA service name as Kubernetes checks it for named ports: at most 15
 * lowercase letters, digits and '-', at least one letter, no leading,
 * trailing or doubled '-'. */
static bool is_iana_svc_name(const char *s, const char **why)
{
    size_t n = strlen(s);
    bool letter = false;
    if (n == 0 || n > 15) {
        *why = "must be 1-15 characters";
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'a' && c <= 'z')
            letter = true;
        else if (!(c >= '0' && c <= '9') && c != '-') {
            *why = "must contain only lowercase letters, digits and '-'";
            return false;
        }
    }
    if (s[0] == '-' || s[n - 1] == '-' || strstr(s, "--") != NULL) {
        *why = "must not begin or end with '-' nor contain \"--\"";
        return false;
    }
    if (!letter) {
        *why = "must contain at least one letter";
        return false;
    }
    return true;
}

/* Standard base64 with padding; CR and LF are skipped as Go's decoder does. */
static bool is_base64(const char *s)
{
    size_t n = 0, pad = 0;
    for (const char *c = s; *c; c++) {
        if (*c == '\r' || *c == '\n')
            continue;
        bool alpha = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                     (*c >= '0' && *c <= '9') || *c == '+' || *c == '/';
        if (*c == '=') {
            pad++;
        } else if (!alpha || pad > 0) {
            return false; /* a foreign character, or data after padding */
        }
        n++;
    }
    return n % 4 == 0 && pad <= 2;
}

/* Keys of Secret and ConfigMap data: [-._a-zA-Z0-9]+, at most 253, not "."
 * or "..", not starting with "..". */
static bool is_config_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 253 || strcmp(k, ".") == 0 || strncmp(k, "..", 2) == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

static void check_config_keys(cfg_vctx_t *v, const char *field, const cfg_map_t *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        if (!is_config_key(m->v[i].key)) {
            cfg_vmark_t mark = cfg_venter(v, 0, ".%s[%s]", field, m->v[i].key);
            cfg_verr(v, NULL, "invalid key: must consist of letters, digits, '-', '_' or '.', "
                              "at most 253 characters, not starting with \"..\"");
            cfg_vleave(v, mark);
        }
    }
}

static void check_base64_values(cfg_vctx_t *v, const char *field, const cfg_map_t *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->v[i].str != NULL && !is_base64(m->v[i].str)) {
            cfg_vmark_t mark = cfg_venter(v, 0, ".%s[%s]", field, m->v[i].key);
            cfg_verr(v, NULL, "value is not valid base64 (put clear text under stringData)");
            cfg_vleave(v, mark);
        }
    }
}

static bool map_has(const cfg_map_t *m, const char *key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].key, key) == 0)
            return true;
    return false;
}

/* ---- Namespace ---- */

void cfg_validate_Namespace(cfg_vctx_t *v, const void *body)
{
    (void)body;
    if (v->obj == NULL || v->obj->name[0] == '\0')
        return;
    if (!cfg_is_dns1123_label(v->obj->name))
        cfg_verr(v, "metadata.name", "\"%s\" is not a valid namespace name: lowercase letters, "
                                     "digits and '-', at most 63 characters, no dots",
                 v->obj->name);
}

/* ---- Service ---- */

static void check_service_port(cfg_vctx_t *v, const cfg_KubeServicePort *p, int type,
                               bool multiple)
{
    const char *why = NULL;
    if (!CFG_HAS(p, KubeServicePort, port))
        cfg_verr(v, "port", "required field is missing");
    else if (!cfg_is_port(p->port))
        cfg_verr(v, "port", "must be between 1 and 65535, got %d", p->port);
    if (p->name != NULL && p->name[0] != '\0' && !cfg_is_dns1123_label(p->name))
        cfg_verr(v, "name", "\"%s\" must be a DNS label: lowercase letters, digits and '-', at "
                            "most 63 characters", p->name);
    else if (multiple && (p->name == NULL || p->name[0] == '\0'))
        cfg_verr(v, "name", "required when the service has more than one port");
    check_protocol(v, p->protocol);
    if (CFG_HAS(p, KubeServicePort, targetPort)) {
        const cfg_intstr_t *t = &p->targetPort;
        /* 0 and "" are defaulted to port by the API server */
        if (t->is_str) {
            if (t->str[0] != '\0' && !is_iana_svc_name(t->str, &why))
                cfg_verr(v, "targetPort", "\"%s\" is not a valid port name: %s", t->str, why);
        } else if (t->num != 0 && !cfg_is_port(t->num)) {
            cfg_verr(v, "targetPort", "must be between 1 and 65535, got %lld",
                     (long long)t->num);
        }
    }
    if (CFG_HAS(p, KubeServicePort, nodePort) && p->nodePort != 0) {
        if (!cfg_is_port(p->nodePort))
            cfg_verr(v, "nodePort", "must be between 1 and 65535, got %d", p->nodePort);
        else if (type != cfg_ServiceType_NodePort && type != cfg_ServiceType_LoadBalancer)
            cfg_verr(v, "nodePort", "may only be set for services of type NodePort or "
                                    "LoadBalancer");
    }
}

static bool is_cluster_ip(const char *s)
{
    return s[0] == '\0' || strcmp(s, "None") == 0 || cfg_is_ip(s);
}

void cfg_validate_Service(cfg_vctx_t *v, const void *body)
{
    const cfg_ServiceObject *o = body;
    const cfg_ServiceSpec *s = o->spec;
    static const char *const families[] = {"IPv4", "IPv6", NULL};
    static const char *const affinities[] = {"None", "ClientIP", NULL};
    static const char *const traffic_policies[] = {"Cluster", "Local", NULL};
    if (s == NULL)
        return;
    cfg_vmark_t mark = cfg_venter(v, s->_line, ".spec");
    int type = CFG_HAS(s, ServiceSpec, type) ? s->type : cfg_ServiceType_ClusterIP;

    for (uint32_t i = 0; i < s->ports.n; i++) {
        const cfg_KubeServicePort *p = &s->ports.v[i];
        cfg_vmark_t m2 = cfg_venter(v, p->_line, ".ports[%u]", i);
        check_service_port(v, p, type, s->ports.n > 1);
        for (uint32_t j = 0; j < i && p->name != NULL && p->name[0] != '\0'; j++) {
            if (s->ports.v[j].name != NULL && strcmp(s->ports.v[j].name, p->name) == 0) {
                cfg_verr(v, "name", "duplicate port name \"%s\" (also ports[%u])", p->name, j);
                break;
            }
        }
        cfg_vleave(v, m2);
    }
    if (type != cfg_ServiceType_ExternalName && s->ports.n == 0 &&
        !(s->clusterIP != NULL && strcmp(s->clusterIP, "None") == 0))
        cfg_verr(v, "ports", "a service of type %s needs at least one port",
                 cfg_enum_name(&cfg_enum_ServiceType, type));

    cfg_check_labels(v, "selector", &s->selector);

    if (type == cfg_ServiceType_ExternalName) {
        const char *why = NULL;
        if (s->externalName == NULL || s->externalName[0] == '\0')
            cfg_verr(v, "externalName", "required for a service of type ExternalName");
        else if (!cfg_is_fqdn(s->externalName, &why))
            cfg_verr(v, "externalName", "\"%s\" is not a DNS name: %s", s->externalName, why);
    }
    if (s->clusterIP != NULL && !is_cluster_ip(s->clusterIP))
        cfg_verr(v, "clusterIP", "\"%s\" must be an IP address, \"None\" or empty", s->clusterIP);
    for (uint32_t i = 0; i < s->clusterIPs.n; i++) {
        if (s->clusterIPs.v[i] != NULL && !is_cluster_ip(s->clusterIPs.v[i])) {
            char f[32];
            snprintf(f, sizeof(f), "clusterIPs[%u]", i);
            cfg_verr(v, f, "\"%s\" must be an IP address or \"None\"", s->clusterIPs.v[i]);
        }
    }
    for (uint32_t i = 0; i < s->externalIPs.n; i++) {
        if (s->externalIPs.v[i] != NULL && !cfg_is_ip(s->externalIPs.v[i])) {
            char f[32];
            snprintf(f, sizeof(f), "externalIPs[%u]", i);
            cfg_verr(v, f, "\"%s\" must be an IP address", s->externalIPs.v[i]);
        }
    }
    for (uint32_t i = 0; i < s->ipFamilies.n; i++) {
        if (s->ipFamilies.v[i] != NULL && !is_one_of(s->ipFamilies.v[i], families)) {
            char f[32];
            snprintf(f, sizeof(f), "ipFamilies[%u]", i);
            cfg_verr(v, f, "Unsupported value: \"%s\": supported values: \"IPv4\", \"IPv6\"",
                     s->ipFamilies.v[i]);
        }
    }
    if (s->sessionAffinity != NULL && !is_one_of(s->sessionAffinity, affinities))
        cfg_verr(v, "sessionAffinity", "Unsupported value: \"%s\": supported values: \"None\", "
                                       "\"ClientIP\"", s->sessionAffinity);
    if (s->externalTrafficPolicy != NULL && !is_one_of(s->externalTrafficPolicy, traffic_policies))
        cfg_verr(v, "externalTrafficPolicy", "Unsupported value: \"%s\": supported values: "
                                             "\"Cluster\", \"Local\"", s->externalTrafficPolicy);
    if (s->internalTrafficPolicy != NULL && !is_one_of(s->internalTrafficPolicy, traffic_policies))
        cfg_verr(v, "internalTrafficPolicy", "Unsupported value: \"%s\": supported values: "
                                             "\"Cluster\", \"Local\"", s->internalTrafficPolicy);
    cfg_vleave(v, mark);
}

/* ---- EndpointSlice and Endpoints ---- */

/* One port of a slice or subset; its name must be unique among ports[0..i). */
static void check_endpoint_ports(cfg_vctx_t *v, const cfg_EndpointPort *ports, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const cfg_EndpointPort *p = &ports[i];
        cfg_vmark_t mark = cfg_venter(v, p->_line, ".ports[%u]", i);
        if (CFG_HAS(p, EndpointPort, port) && !cfg_is_port(p->port))
            cfg_verr(v, "port", "must be between 1 and 65535, got %d", p->port);
        if (p->name != NULL && p->name[0] != '\0' && !cfg_is_dns1123_label(p->name))
            cfg_verr(v, "name", "\"%s\" must be a DNS label: lowercase letters, digits and '-'",
                     p->name);
        check_protocol(v, p->protocol);
        const char *name = p->name ? p->name : "";
        for (uint32_t j = 0; j < i; j++) {
            const char *other = ports[j].name ? ports[j].name : "";
            if (strcmp(name, other) == 0) {
                cfg_verr(v, "name", "duplicate port name \"%s\" (also ports[%u])", name, j);
                break;
            }
        }
        cfg_vleave(v, mark);
    }
}

static bool address_matches(int type, const char *a, const char **why)
{
    unsigned char buf[16];
    switch (type) {
    case cfg_EndpointAddressType_IPv4:
        *why = "must be an IPv4 address (the slice's addressType is IPv4)";
        return inet_pton(AF_INET, a, buf) == 1;
    case cfg_EndpointAddressType_IPv6:
        *why = "must be an IPv6 address (the slice's addressType is IPv6)";
        return inet_pton(AF_INET6, a, buf) == 1;
    default:
        *why = "must be a lowercase DNS name (the slice's addressType is FQDN)";
        return cfg_is_dns1123_subdomain(a);
    }
}

void cfg_validate_EndpointSlice(cfg_vctx_t *v, const void *body)
{
    const cfg_EndpointSliceObject *o = body;
    for (uint32_t i = 0; i < o->endpoints.n; i++) {
        const cfg_EndpointSliceEndpoint *e = &o->endpoints.v[i];
        cfg_vmark_t mark = cfg_venter(v, e->_line, ".endpoints[%u]", i);
        if (e->addresses.n == 0)
            cfg_verr(v, "addresses", "must have at least one address");
        else if (e->addresses.n > KUBE_MAX_SLICE_ADDRESSES)
            cfg_verr(v, "addresses", "must have at most %d addresses", KUBE_MAX_SLICE_ADDRESSES);
        for (uint32_t j = 0; j < e->addresses.n; j++) {
            const char *why = NULL, *a = e->addresses.v[j];
            if (a != NULL && !address_matches(o->addressType, a, &why)) {
                char f[32];
                snprintf(f, sizeof(f), "addresses[%u]", j);
                cfg_verr(v, f, "\"%s\" %s", a, why);
            }
        }
        if (e->hostname != NULL && e->hostname[0] != '\0' && !cfg_is_dns1123_label(e->hostname))
            cfg_verr(v, "hostname", "\"%s\" must be a DNS label", e->hostname);
        cfg_vleave(v, mark);
    }
    check_endpoint_ports(v, o->ports.v, o->ports.n);
}

static void check_endpoint_addresses(cfg_vctx_t *v, const char *field, const cfg_EndpointAddress *a,
                                     uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        cfg_vmark_t mark = cfg_venter(v, a[i]._line, ".%s[%u]", field, i);
        if (a[i].ip == NULL || a[i].ip[0] == '\0')
            cfg_verr(v, "ip", "required field is missing");
        else if (!cfg_is_ip(a[i].ip))
            cfg_verr(v, "ip", "\"%s\" must be an IP address", a[i].ip);
        if (a[i].hostname != NULL && a[i].hostname[0] != '\0' && !cfg_is_dns1123_label(a[i].hostname))
            cfg_verr(v, "hostname", "\"%s\" must be a DNS label", a[i].hostname);
        cfg_vleave(v, mark);
    }
}

void cfg_validate_Endpoints(cfg_vctx_t *v, const void *body)
{
    const cfg_EndpointsObject *o = body;
    for (uint32_t i = 0; i < o->subsets.n; i++) {
        const cfg_EndpointSubset *s = &o->subsets.v[i];
        cfg_vmark_t mark = cfg_venter(v, s->_line, ".subsets[%u]", i);
        check_endpoint_addresses(v, "addresses", s->addresses.v, s->addresses.n);
        check_endpoint_addresses(v, "notReadyAddresses", s->notReadyAddresses.v,
                                 s->notReadyAddresses.n);
        for (uint32_t j = 0; j < s->ports.n; j++)
            if (!CFG_HAS(&s->ports.v[j], EndpointPort, port)) {
                cfg_vmark_t m2 = cfg_venter(v, s->ports.v[j]._line, ".ports[%u]", j);
                cfg_verr(v, "port", "required field is missing");
                cfg_vleave(v, m2);
            }
        check_endpoint_ports(v, s->ports.v, s->ports.n);
        cfg_vleave(v, mark);
    }
}

/* ---- Pod ---- */

/* Container port names are unique within a container: a Service's named
 * targetPort resolves through them. */
static void check_containers(cfg_vctx_t *v, const char *field, const cfg_Container *c, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        cfg_vmark_t mark = cfg_venter(v, c[i]._line, ".%s[%u]", field, i);
        if (c[i].name == NULL || c[i].name[0] == '\0')
            cfg_verr(v, "name", "required field is missing");
        else if (!cfg_is_dns1123_label(c[i].name))
            cfg_verr(v, "name", "\"%s\" must be a DNS label: lowercase letters, digits and '-', "
                                "at most 63 characters", c[i].name);
        for (uint32_t j = 0; j < c[i].ports.n; j++) {
            const cfg_ContainerPort *p = &c[i].ports.v[j];
            const char *why = NULL;
            cfg_vmark_t m2 = cfg_venter(v, p->_line, ".ports[%u]", j);
            if (!CFG_HAS(p, ContainerPort, containerPort))
                cfg_verr(v, "containerPort", "required field is missing");
            else if (!cfg_is_port(p->containerPort))
                cfg_verr(v, "containerPort", "must be between 1 and 65535, got %d",
                         p->containerPort);
            if (CFG_HAS(p, ContainerPort, hostPort) && p->hostPort != 0 && !cfg_is_port(p->hostPort))
                cfg_verr(v, "hostPort", "must be between 1 and 65535, got %d", p->hostPort);
            check_protocol(v, p->protocol);
            if (p->name != NULL && p->name[0] != '\0') {
                if (!is_iana_svc_name(p->name, &why)) {
                    cfg_verr(v, "name", "\"%s\" is not a valid port name: %s", p->name, why);
                } else {
                    for (uint32_t k = 0; k < j; k++)
                        if (c[i].ports.v[k].name != NULL &&
                            strcmp(c[i].ports.v[k].name, p->name) == 0) {
                            cfg_verr(v, "name", "duplicate port name \"%s\" (also ports[%u])",
                                     p->name, k);
                            break;
                        }
                }
            }
            cfg_vleave(v, m2);
        }
        cfg_vleave(v, mark);
    }
}

void cfg_validate_Pod(cfg_vctx_t *v, const void *body)
{
    const cfg_PodObject *o = body;
    if (o->spec != NULL) {
        const cfg_PodSpec *s = o->spec;
        cfg_vmark_t mark = cfg_venter(v, s->_line, ".spec");
        if (s->containers.n == 0)
            cfg_verr(v, "containers", "a pod needs at least one container");
        check_containers(v, "containers", s->containers.v, s->containers.n);
        check_containers(v, "initContainers", s->initContainers.v, s->initContainers.n);
        if (s->serviceAccountName != NULL && s->serviceAccountName[0] != '\0' &&
            !cfg_is_dns1123_subdomain(s->serviceAccountName))
            cfg_verr(v, "serviceAccountName", "\"%s\" is not a valid service account name",
                     s->serviceAccountName);
        cfg_vleave(v, mark);
    }
    if (o->status != NULL) {
        const cfg_PodStatus *st = o->status;
        cfg_vmark_t mark = cfg_venter(v, st->_line, ".status");
        if (st->podIP != NULL && st->podIP[0] != '\0' && !cfg_is_ip(st->podIP))
            cfg_verr(v, "podIP", "\"%s\" must be an IP address", st->podIP);
        if (st->hostIP != NULL && st->hostIP[0] != '\0' && !cfg_is_ip(st->hostIP))
            cfg_verr(v, "hostIP", "\"%s\" must be an IP address", st->hostIP);
        for (uint32_t i = 0; i < st->podIPs.n; i++) {
            const char *ip = st->podIPs.v[i].ip;
            if (ip == NULL || !cfg_is_ip(ip)) {
                cfg_vmark_t m2 = cfg_venter(v, st->podIPs.v[i]._line, ".podIPs[%u]", i);
                cfg_verr(v, "ip", "\"%s\" must be an IP address", ip ? ip : "");
                cfg_vleave(v, m2);
            }
        }
        cfg_vleave(v, mark);
    }
}

/* ---- ServiceAccount, Secret, ConfigMap ---- */

/* secrets and imagePullSecrets: lists of {name: ...}. */
static void check_name_refs(cfg_vctx_t *v, const char *field, const doc_node_t *n)
{
    if (n == NULL || n->type == DOC_NULL)
        return;
    if (n->type != DOC_SEQ) {
        cfg_verr(v, field, "must be an array of references ({name: ...})");
        return;
    }
    for (uint32_t i = 0; i < n->v.seq.n; i++) {
        const doc_node_t *it = n->v.seq.items[i];
        if (it->type != DOC_MAP || doc_str(doc_map_get(it, "name")) == NULL) {
            char f[48];
            snprintf(f, sizeof(f), "%s[%u]", field, i);
            cfg_verr(v, f, "must be an object with a name");
        }
    }
}

void cfg_validate_ServiceAccount(cfg_vctx_t *v, const void *body)
{
    const cfg_ServiceAccountObject *o = body;
    check_name_refs(v, "secrets", o->secrets);
    check_name_refs(v, "imagePullSecrets", o->imagePullSecrets);
}

void cfg_validate_Secret(cfg_vctx_t *v, const void *body)
{
    const cfg_SecretObject *o = body;
    check_config_keys(v, "data", &o->data);
    check_config_keys(v, "stringData", &o->stringData);
    check_base64_values(v, "data", &o->data);
    if (o->type != NULL && strcmp(o->type, "kubernetes.io/tls") == 0) {
        static const char *const need[] = {"tls.crt", "tls.key"};
        for (int i = 0; i < 2; i++)
            if (!map_has(&o->data, need[i]) && !map_has(&o->stringData, need[i]))
                cfg_verr(v, "data", "a secret of type kubernetes.io/tls needs the key %s", need[i]);
    }
}

void cfg_validate_ConfigMap(cfg_vctx_t *v, const void *body)
{
    const cfg_ConfigMapObject *o = body;
    check_config_keys(v, "data", &o->data);
    check_config_keys(v, "binaryData", &o->binaryData);
    check_base64_values(v, "binaryData", &o->binaryData);
    for (uint32_t i = 0; i < o->binaryData.n; i++) {
        if (map_has(&o->data, o->binaryData.v[i].key)) {
            cfg_vmark_t mark = cfg_venter(v, 0, ".binaryData[%s]", o->binaryData.v[i].key);
            cfg_verr(v, NULL, "duplicate of a key in data");
            cfg_vleave(v, mark);
        }
    }
}

/* ---- MutatingWebhookConfiguration ---- */

/* A webhook name: a DNS subdomain of at least three labels. */
static bool is_webhook_name(const char *s)
{
    if (!cfg_is_dns1123_subdomain(s))
        return false;
    int dots = 0;
    for (const char *c = s; *c; c++)
        dots += *c == '.';
    return dots >= 2;
}

static void check_client_config(cfg_vctx_t *v, const cfg_WebhookClientConfig *cc)
{
    bool has_url = cc->url != NULL && cc->url[0] != '\0';
    if (has_url == (cc->service != NULL)) {
        cfg_verr(v, NULL, has_url ? "exactly one of url or service is required, found both"
                                  : "exactly one of url or service is required");
    }
    if (has_url) {
        const char *why = NULL;
        if (strncmp(cc->url, "https://", 8) != 0)
            cfg_verr(v, "url", "\"%s\": the API server only calls webhooks over https://", cc->url);
        else if (!cfg_is_url(cc->url, &why))
            cfg_verr(v, "url", "\"%s\": %s", cc->url, why);
        else if (strchr(cc->url, '?') != NULL || strchr(cc->url, '#') != NULL)
            cfg_verr(v, "url", "\"%s\": must not have a query or fragment", cc->url);
    }
    if (cc->service != NULL) {
        const cfg_WebhookServiceReference *s = cc->service;
        cfg_vmark_t mark = cfg_venter(v, s->_line, ".service");
        if (s->name == NULL || s->name[0] == '\0')
            cfg_verr(v, "name", "required field is missing");
        else if (!cfg_is_dns1123_label(s->name))
            cfg_verr(v, "name", "\"%s\" must be a service name (DNS label)", s->name);
        if (s->namespace == NULL || s->namespace[0] == '\0')
            cfg_verr(v, "namespace", "required field is missing");
        else if (!cfg_is_dns1123_label(s->namespace))
            cfg_verr(v, "namespace", "\"%s\" must be a namespace name", s->namespace);
        if (CFG_HAS(s, WebhookServiceReference, port) && !cfg_is_port(s->port))
            cfg_verr(v, "port", "must be between 1 and 65535, got %d", s->port);
        if (s->path != NULL && s->path[0] != '/')
            cfg_verr(v, "path", "\"%s\" must start with '/'", s->path);
        cfg_vleave(v, mark);
    }
    if (cc->caBundle != NULL && !is_base64(cc->caBundle))
        cfg_verr(v, "caBundle", "must be base64-encoded PEM");
}

void cfg_validate_MutatingWebhookConfiguration(cfg_vctx_t *v, const void *body)
{
    const cfg_MutatingWebhookConfigurationObject *o = body;
    static const char *const failure[] = {"Ignore", "Fail", NULL};
    static const char *const side_effects[] = {"None", "NoneOnDryRun", "Some", "Unknown", NULL};
    static const char *const side_effects_v1[] = {"None", "NoneOnDryRun", NULL};
    static const char *const reinvocation[] = {"Never", "IfNeeded", NULL};
    static const char *const match[] = {"Exact", "Equivalent", NULL};
    bool v1 = v->obj != NULL && v->obj->api_version != NULL &&
              strcmp(v->obj->api_version, "admissionregistration.k8s.io/v1") == 0;

    for (uint32_t i = 0; i < o->webhooks.n; i++) {
        const cfg_MutatingWebhook *w = &o->webhooks.v[i];
        cfg_vmark_t mark = cfg_venter(v, w->_line, ".webhooks[%u]", i);
        if (w->name == NULL || w->name[0] == '\0') {
            cfg_verr(v, "name", "required field is missing");
        } else if (!is_webhook_name(w->name)) {
            cfg_verr(v, "name", "\"%s\" must be a fully qualified name with at least three "
                                "labels, such as sidecar-injector.istio.io", w->name);
        } else {
            for (uint32_t j = 0; j < i; j++)
                if (o->webhooks.v[j].name != NULL && strcmp(o->webhooks.v[j].name, w->name) == 0) {
                    cfg_verr(v, "name", "duplicate webhook name \"%s\" (also webhooks[%u])",
                             w->name, j);
                    break;
                }
        }
        if (w->clientConfig == NULL) {
            cfg_verr(v, "clientConfig", "required field is missing");
        } else {
            cfg_vmark_t m2 = cfg_venter(v, w->clientConfig->_line, ".clientConfig");
            check_client_config(v, w->clientConfig);
            cfg_vleave(v, m2);
        }
        if (w->failurePolicy != NULL && !is_one_of(w->failurePolicy, failure))
            cfg_verr(v, "failurePolicy", "Unsupported value: \"%s\": supported values: "
                                         "\"Ignore\", \"Fail\"", w->failurePolicy);
        if (w->matchPolicy != NULL && !is_one_of(w->matchPolicy, match))
            cfg_verr(v, "matchPolicy", "Unsupported value: \"%s\": supported values: \"Exact\", "
                                       "\"Equivalent\"", w->matchPolicy);
        if (w->reinvocationPolicy != NULL && !is_one_of(w->reinvocationPolicy, reinvocation))
            cfg_verr(v, "reinvocationPolicy", "Unsupported value: \"%s\": supported values: "
                                              "\"Never\", \"IfNeeded\"", w->reinvocationPolicy);
        if (w->sideEffects == NULL) {
            if (v1)
                cfg_verr(v, "sideEffects", "required field is missing");
        } else if (!is_one_of(w->sideEffects, v1 ? side_effects_v1 : side_effects)) {
            cfg_verr(v, "sideEffects", "Unsupported value: \"%s\": supported values: %s",
                     w->sideEffects, v1 ? "\"None\", \"NoneOnDryRun\""
                                        : "\"None\", \"NoneOnDryRun\", \"Some\", \"Unknown\"");
        }
        if (v1 && w->admissionReviewVersions.n == 0)
            cfg_verr(v, "admissionReviewVersions", "required field is missing (use [v1])");
        if (CFG_HAS(w, MutatingWebhook, timeoutSeconds) &&
            (w->timeoutSeconds < 1 || w->timeoutSeconds > KUBE_MAX_WEBHOOK_TIMEOUT))
            cfg_verr(v, "timeoutSeconds", "must be between 1 and %d, got %d",
                     KUBE_MAX_WEBHOOK_TIMEOUT, w->timeoutSeconds);
        cfg_vleave(v, mark);
    }
}
