/*
 * Validators of security.istio.io: PeerAuthentication, AuthorizationPolicy,
 * RequestAuthentication. The decoder has checked types, enums, required
 * fields and empty strings; these add the semantic rules Istio's webhook and
 * the CRDs' CEL rules enforce, so that a policy meshd accepts is one Istio
 * would accept, and the reverse.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

#define SEC_MAX_RULES 512
#define SEC_MAX_SOURCES 512
#define SEC_MAX_TARGET_REFS 16
#define SEC_MAX_SERVICE_ACCOUNTS 16
#define SEC_MAX_SERVICE_ACCOUNT_LEN 320
#define SEC_MAX_LABELS 4096
#define SEC_MAX_LABEL_VALUE 63
#define SEC_MAX_JWT_RULES 4096
#define SEC_MAX_SPACE_DELIMITED 64
#define SEC_MAX_JWKS_URI 2048

#define DRY_RUN_ANNOTATION "istio.io/dry-run"

/* ---- shared pieces ---- */

static bool has_char(const char *s, char c)
{
    return s != NULL && strchr(s, c) != NULL;
}

/* Go's strconv.ParseBool spellings. */
static bool is_go_bool(const char *s)
{
    static const char *const ok[] = {"1", "t", "T", "TRUE", "true", "True",
                                     "0", "f", "F", "FALSE", "false", "False", NULL};
    for (const char *const *p = ok; *p; p++)
        if (strcmp(s, *p) == 0)
            return true;
    return false;
}

/* The istio.io/dry-run annotation: a boolean, and only on ALLOW or DENY
 * AuthorizationPolicies (action < 0 for the other kinds). */
static void check_dry_run(cfg_vctx_t *v, int action)
{
    if (v->obj == NULL || v->obj->meta == NULL)
        return;
    const cfg_map_t *ann = &v->obj->meta->annotations;
    for (uint32_t i = 0; i < ann->n; i++) {
        if (strcmp(ann->v[i].key, DRY_RUN_ANNOTATION) != 0)
            continue;
        const char *val = ann->v[i].str ? ann->v[i].str : "";
        size_t mark = cfg_vpush(v, ".metadata.annotations[%s]", DRY_RUN_ANNOTATION);
        if (action < 0)
            cfg_verr(v, NULL, "the annotation is only supported on AuthorizationPolicy");
        else if (action != cfg_AuthzAction_ALLOW && action != cfg_AuthzAction_DENY)
            cfg_verr(v, NULL, "the annotation only supports action ALLOW or DENY, found %s",
                     cfg_enum_name(&cfg_enum_AuthzAction, action));
        else if (!is_go_bool(val))
            cfg_verr(v, NULL, "must be \"true\" or \"false\", got \"%s\"", val);
        cfg_vpop(v, mark);
    }
}

/* selector.matchLabels: the CRD's rules (no empty key, no wildcard, values of
 * at most 63 characters); an empty selector only earns a warning. Called with
 * the path at the selector. */
static void check_selector(cfg_vctx_t *v, const cfg_WorkloadSelector *s)
{
    const cfg_map_t *ml = &s->matchLabels;
    if (ml->n == 0) {
        cfg_vwarn(v, NULL, "workload selector specified without labels: it selects every workload "
                           "of the namespace");
        return;
    }
    if (ml->n > SEC_MAX_LABELS)
        cfg_verr(v, "matchLabels", "must have at most %d labels", SEC_MAX_LABELS);
    for (uint32_t i = 0; i < ml->n; i++) {
        const char *k = ml->v[i].key, *val = ml->v[i].str;
        size_t mark = cfg_vpush(v, ".matchLabels[%s]", k);
        if (k[0] == '\0')
            cfg_verr(v, NULL, "key must not be empty");
        else if (has_char(k, '*'))
            cfg_verr(v, NULL, "wildcard not allowed in label key match");
        if (has_char(val, '*'))
            cfg_verr(v, NULL, "wildcard not allowed in label value match");
        else if (val != NULL && strlen(val) > SEC_MAX_LABEL_VALUE)
            cfg_verr(v, NULL, "label value must be at most %d characters", SEC_MAX_LABEL_VALUE);
        cfg_vpop(v, mark);
    }
}

/* ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$, at most 63 characters. */
static bool is_kind_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-')
            return false;
    }
    return s[n - 1] != '-';
}

/* The resources a policy may be attached to. */
static bool target_allowed(const char *group, const char *kind)
{
    static const struct {
        const char *group, *kind;
    } allowed[] = {{"", "Service"},
                   {"networking.istio.io", "ServiceEntry"},
                   {"gateway.networking.k8s.io", "Gateway"},
                   {"gateway.networking.k8s.io", "GatewayClass"}};
    if (strcmp(group, "core") == 0)
        group = "";
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (strcmp(group, allowed[i].group) == 0 && strcmp(kind, allowed[i].kind) == 0)
            return true;
    return false;
}

/* One targetRef; called with the path at it. */
static void check_target_ref(cfg_vctx_t *v, const cfg_PolicyTargetReference *r)
{
    const char *group = r->group ? r->group : "";
    bool kind_ok = false, group_ok = group[0] == '\0' || cfg_is_dns1123_subdomain(group);
    if (!group_ok)
        cfg_verr(v, "group", "\"%s\" must be empty or a DNS subdomain such as "
                             "gateway.networking.k8s.io", group);
    if (r->kind != NULL) {
        kind_ok = is_kind_name(r->kind);
        if (!kind_ok)
            cfg_verr(v, "kind", "\"%s\" must be a kind name: a letter, then letters, digits or "
                                "'-', at most 63 characters", r->kind);
    }
    if (r->name != NULL && strlen(r->name) > 253)
        cfg_verr(v, "name", "must be at most 253 characters");
    if (r->namespace != NULL && r->namespace[0] != '\0')
        cfg_verr(v, "namespace", "cross namespace referencing is not currently supported");
    if (group_ok && kind_ok && !target_allowed(group, r->kind))
        cfg_verr(v, NULL, "cannot target %s%s%s: allowed targets are Service, ServiceEntry "
                          "(networking.istio.io), Gateway and GatewayClass "
                          "(gateway.networking.k8s.io)",
                 group, group[0] ? "/" : "", r->kind);
}

/* selector, targetRef and targetRefs: at most one, each well formed. Called
 * with the path at .spec. */
static void check_targets(cfg_vctx_t *v, const cfg_WorkloadSelector *selector,
                          const cfg_PolicyTargetReference *target_ref,
                          const cfg_PolicyTargetReference *refs, uint32_t nrefs)
{
    int set = (selector != NULL) + (target_ref != NULL) + (nrefs > 0);
    if (set > 1)
        cfg_verr(v, NULL, "only one of targetRefs or selector can be set (found %s%s%s%s%s)",
                 selector ? "selector" : "", selector && (target_ref || nrefs) ? ", " : "",
                 target_ref ? "targetRef" : "", target_ref && nrefs ? ", " : "",
                 nrefs ? "targetRefs" : "");
    if (selector != NULL) {
        cfg_vmark_t p = cfg_venter(v, selector->_line, ".selector");
        check_selector(v, selector);
        cfg_vleave(v, p);
    }
    if (target_ref != NULL) {
        cfg_vmark_t p = cfg_venter(v, target_ref->_line, ".targetRef");
        check_target_ref(v, target_ref);
        cfg_vleave(v, p);
    }
    if (nrefs > SEC_MAX_TARGET_REFS)
        cfg_verr(v, "targetRefs", "must have at most %d items", SEC_MAX_TARGET_REFS);
    for (uint32_t i = 0; i < nrefs; i++) {
        cfg_vmark_t p = cfg_venter(v, refs[i]._line, ".targetRefs[%u]", i);
        check_target_ref(v, &refs[i]);
        cfg_vleave(v, p);
    }
}

/* Reports every empty item of a string list. Returns false if one was empty. */
static bool check_no_empty(cfg_vctx_t *v, const char *field, const cfg_strlist_t *l)
{
    bool ok = true;
    for (uint32_t i = 0; i < l->n; i++) {
        if (l->v[i] == NULL || l->v[i][0] == '\0') {
            char f[96];
            snprintf(f, sizeof(f), "%s[%u]", field, i);
            cfg_verr(v, f, "empty value not allowed");
            ok = false;
        }
    }
    return ok;
}

static void check_ips(cfg_vctx_t *v, const char *field, const cfg_strlist_t *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        const char *s = l->v[i];
        if (s == NULL || s[0] == '\0')
            continue; /* reported as empty */
        bool cidr = strchr(s, '/') != NULL;
        if (cidr ? cfg_is_cidr(s) : cfg_is_ip(s))
            continue;
        char f[96];
        snprintf(f, sizeof(f), "%s[%u]", field, i);
        cfg_verr(v, f, "bad %s \"%s\": must be an IP address or a CIDR block such as 10.0.0.0/16",
                 cidr ? "CIDR range" : "IP address", s);
    }
}

/* A decimal port number 0..65535, as Istio parses the strings of ports and
 * destination.port. */
static bool is_port_string(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 10)
        return false;
    unsigned long p = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return false;
        p = p * 10 + (unsigned long)(*c - '0');
    }
    return p <= 65535;
}

static void check_ports(cfg_vctx_t *v, const char *field, const cfg_strlist_t *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        if (l->v[i] == NULL || l->v[i][0] == '\0')
            continue; /* reported as empty */
        if (!is_port_string(l->v[i])) {
            char f[96];
            snprintf(f, sizeof(f), "%s[%u]", field, i);
            cfg_verr(v, f, "bad port \"%s\": must be a number between 0 and 65535", l->v[i]);
        }
    }
}

/* ---- PeerAuthentication ---- */

/* A port key of portLevelMtls: decimal, 1..65535. Returns -1 when not a
 * number, 0 when out of range, 1 when valid. */
static int port_key(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || strspn(s, "0123456789") != n)
        return -1;
    if (n > 5)
        return 0;
    return cfg_is_port(strtol(s, NULL, 10)) ? 1 : 0;
}

void cfg_validate_PeerAuthentication(cfg_vctx_t *v, const void *body)
{
    const cfg_PeerAuthenticationObject *o = body;
    check_dry_run(v, -1);
    const cfg_PeerAuthentication *s = o->spec;
    if (s == NULL)
        return;
    cfg_vmark_t at = cfg_venter(v, s->_line, ".spec");
    if (s->selector != NULL) {
        cfg_vmark_t p = cfg_venter(v, s->selector->_line, ".selector");
        check_selector(v, s->selector);
        cfg_vleave(v, p);
    }
    if (CFG_HAS(s, PeerAuthentication, portLevelMtls)) {
        const cfg_map_t *pl = &s->portLevelMtls;
        if (pl->n == 0)
            cfg_verr(v, "portLevelMtls", "must have at least 1 entry when set");
        else if (s->selector == NULL || s->selector->matchLabels.n == 0)
            cfg_verr(v, "portLevelMtls",
                     "portLevelMtls requires selector: a namespace- or mesh-wide policy cannot "
                     "set port-level mTLS");
        for (uint32_t i = 0; i < pl->n; i++) {
            const cfg_PeerMutualTLS *m = pl->v[i].msg;
            cfg_vmark_t p = cfg_venter(v, m ? m->_line : 0, ".portLevelMtls[%s]", pl->v[i].key);
            int r = port_key(pl->v[i].key);
            if (r < 0)
                cfg_verr(v, NULL, "port \"%s\" is not a number (type conversion error from "
                                  "string to port)", pl->v[i].key);
            else if (r == 0)
                cfg_verr(v, NULL, "port must be between 1-65535");
            cfg_vleave(v, p);
        }
    }
    cfg_vleave(v, at);
}

/* ---- AuthorizationPolicy ---- */

/* Kinds of values a `when` attribute takes. */
enum attr_value { ATTR_ANY, ATTR_IP, ATTR_PORT };

/* "name[key]" with a non-empty key. */
static bool is_map_key(const char *key)
{
    const char *open = strchr(key, '[');
    size_t n = strlen(key);
    return open != NULL && open > key && n >= 2 && key[n - 1] == ']' &&
           (size_t)(open - key) < n - 2;
}

/* Checks a `when` key against the attributes Istio supports. Returns NULL
 * and the value kind when supported, else the reason. */
static const char *check_attribute(const char *key, enum attr_value *kind)
{
    static const char *const plain[] = {"source.namespace",       "source.principal",
                                        "source.serviceAccount",  "source.trustDomain",
                                        "request.auth.principal",
                                        "request.auth.audiences", "request.auth.presenter",
                                        "connection.sni",         NULL};
    static const char *const mapped[] = {"request.headers", "request.auth.claims",
                                         "experimental.envoy.filters.", NULL};
    *kind = ATTR_ANY;
    if (strcmp(key, "source.ip") == 0 || strcmp(key, "remote.ip") == 0 ||
        strcmp(key, "destination.ip") == 0) {
        *kind = ATTR_IP;
        return NULL;
    }
    if (strcmp(key, "destination.port") == 0) {
        *kind = ATTR_PORT;
        return NULL;
    }
    for (const char *const *p = plain; *p; p++)
        if (strcmp(key, *p) == 0)
            return NULL;
    for (const char *const *p = mapped; *p; p++)
        if (strncmp(key, *p, strlen(*p)) == 0)
            return is_map_key(key) ? NULL : "bad key: should have the form name[key], as in "
                                            "request.headers[x-user]";
    if (strcmp(key, "destination.namespace") == 0)
        return "attribute destination.namespace is replaced by the policy's metadata.namespace";
    if (strncmp(key, "destination.labels", 18) == 0)
        return "attribute destination.labels is replaced by the workload selector";
    if (strcmp(key, "destination.name") == 0 || strcmp(key, "destination.user") == 0)
        return "deprecated attribute: only supported in v1alpha1";
    return "unknown attribute; supported: request.headers[...], source.ip, remote.ip, "
           "source.namespace, source.principal, source.serviceAccount, source.trustDomain, "
           "request.auth.principal, "
           "request.auth.audiences, request.auth.presenter, request.auth.claims[...], "
           "destination.ip, destination.port, connection.sni, experimental.envoy.filters.*[...]";
}

static void check_condition(cfg_vctx_t *v, const cfg_AuthzCondition *c)
{
    if (c->key == NULL)
        return; /* reported by the decoder */
    if (c->key[0] == '\0') {
        cfg_verr(v, "key", "must not be empty");
        return;
    }
    if (c->values.n == 0 && c->notValues.n == 0) {
        cfg_verr(v, NULL, "at least one of values or notValues must be set for key %s", c->key);
        return;
    }
    enum attr_value kind;
    const char *why = check_attribute(c->key, &kind);
    if (why != NULL) {
        cfg_verr(v, "key", "%s: %s", c->key, why);
        return;
    }
    bool ok_values = check_no_empty(v, "values", &c->values);
    bool ok_not = check_no_empty(v, "notValues", &c->notValues);
    if (kind == ATTR_IP) {
        if (ok_values)
            check_ips(v, "values", &c->values);
        if (ok_not)
            check_ips(v, "notValues", &c->notValues);
    } else if (kind == ATTR_PORT) {
        if (ok_values)
            check_ports(v, "values", &c->values);
        if (ok_not)
            check_ports(v, "notValues", &c->notValues);
    }
}

/* "sa" (the policy's namespace) or "ns/sa". */
static void check_service_accounts(cfg_vctx_t *v, const char *field, const cfg_strlist_t *l)
{
    if (l->n > SEC_MAX_SERVICE_ACCOUNTS)
        cfg_verr(v, field, "must have at most %d items", SEC_MAX_SERVICE_ACCOUNTS);
    for (uint32_t i = 0; i < l->n; i++) {
        const char *s = l->v[i];
        char f[96];
        snprintf(f, sizeof(f), "%s[%u]", field, i);
        if (s == NULL || s[0] == '\0') {
            cfg_verr(v, f, "empty value not allowed");
            continue;
        }
        const char *slash = strchr(s, '/');
        if (strlen(s) > SEC_MAX_SERVICE_ACCOUNT_LEN)
            cfg_verr(v, f, "must be at most %d characters", SEC_MAX_SERVICE_ACCOUNT_LEN);
        else if (slash != NULL && (slash == s || slash[1] == '\0' || strchr(slash + 1, '/')))
            cfg_verr(v, f, "\"%s\" must be a service account name or namespace/name", s);
    }
}

/* Returns whether the source names something only TCP-level data can match
 * (peer identity, namespace, addresses). */
static bool check_source(cfg_vctx_t *v, const cfg_AuthzSource *s, bool custom)
{
    bool mixes = (s->principals.n + s->notPrincipals.n + s->namespaces.n + s->notNamespaces.n) > 0 &&
                 (s->serviceAccounts.n + s->notServiceAccounts.n) > 0;
    if (mixes)
        cfg_verr(v, NULL, "Cannot set serviceAccounts with namespaces or principals");
    uint32_t total = s->principals.n + s->notPrincipals.n + s->requestPrincipals.n +
                     s->notRequestPrincipals.n + s->namespaces.n + s->notNamespaces.n +
                     s->serviceAccounts.n + s->notServiceAccounts.n + s->ipBlocks.n +
                     s->notIpBlocks.n + s->remoteIpBlocks.n + s->notRemoteIpBlocks.n +
                     s->trustDomains.n + s->notTrustDomains.n;
    if (total == 0)
        cfg_verr(v, NULL, "source must not be empty: set at least one of principals, "
                          "requestPrincipals, namespaces, serviceAccounts, ipBlocks, "
                          "remoteIpBlocks or their not- forms");
    check_no_empty(v, "principals", &s->principals);
    check_no_empty(v, "notPrincipals", &s->notPrincipals);
    check_no_empty(v, "requestPrincipals", &s->requestPrincipals);
    check_no_empty(v, "notRequestPrincipals", &s->notRequestPrincipals);
    check_no_empty(v, "namespaces", &s->namespaces);
    check_no_empty(v, "notNamespaces", &s->notNamespaces);
    check_no_empty(v, "trustDomains", &s->trustDomains);
    check_no_empty(v, "notTrustDomains", &s->notTrustDomains);
    check_service_accounts(v, "serviceAccounts", &s->serviceAccounts);
    check_service_accounts(v, "notServiceAccounts", &s->notServiceAccounts);
    static const char *const ipf[] = {"ipBlocks", "notIpBlocks", "remoteIpBlocks",
                                      "notRemoteIpBlocks"};
    const cfg_strlist_t *ipl[] = {&s->ipBlocks, &s->notIpBlocks, &s->remoteIpBlocks,
                                  &s->notRemoteIpBlocks};
    for (int i = 0; i < 4; i++) {
        check_no_empty(v, ipf[i], ipl[i]);
        check_ips(v, ipf[i], ipl[i]);
    }
    if (custom) {
        static const char *const names[] = {"namespaces",        "notNamespaces",
                                            "serviceAccounts",   "notServiceAccounts",
                                            "principals",        "notPrincipals",
                                            "requestPrincipals", "notRequestPrincipals"};
        const cfg_strlist_t *lists[] = {&s->namespaces,        &s->notNamespaces,
                                        &s->serviceAccounts,   &s->notServiceAccounts,
                                        &s->principals,        &s->notPrincipals,
                                        &s->requestPrincipals, &s->notRequestPrincipals};
        for (int i = 0; i < 8; i++)
            if (lists[i]->n > 0)
                cfg_verr(v, names[i], "is currently not supported with CUSTOM action");
    }
    return s->principals.n || s->notPrincipals.n || s->namespaces.n || s->notNamespaces.n ||
           s->ipBlocks.n || s->notIpBlocks.n || s->remoteIpBlocks.n || s->notRemoteIpBlocks.n ||
           s->serviceAccounts.n || s->notServiceAccounts.n;
}

/* Path templates ({*}, {**}) must not mix with named variables, {} or
 * glob segments. */
static bool bad_path_template(const char *p)
{
    if (strstr(p, "{*}") == NULL && strstr(p, "{**}") == NULL)
        return false;
    for (const char *c = p; *c; c++) {
        if (c[0] == '/' && c[1] == '*')
            return true; /* a slash followed by a glob */
        if (c[0] == '*' && (c[1] == '/' || (c[1] == '*' && c[2] == '/')))
            return true; /* a glob followed by a slash */
        if (c[0] == '{') {
            const char *q = c + 1;
            while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                   (*q >= '0' && *q <= '9') || *q == '_')
                q++;
            if (*q == '}')
                return true; /* "{}" or "{name}" */
            if (q > c + 1 && *q == '=' && q[1] == '*')
                return true; /* "{name=*}" or "{name=**}" */
        }
    }
    return false;
}

/* Returns whether the operation names ports (matchable on TCP). */
static bool check_operation(cfg_vctx_t *v, const cfg_AuthzOperation *op)
{
    if (op->hosts.n + op->notHosts.n + op->ports.n + op->notPorts.n + op->methods.n +
            op->notMethods.n + op->paths.n + op->notPaths.n ==
        0)
        cfg_verr(v, NULL, "operation must not be empty: set at least one of hosts, ports, "
                          "methods, paths or their not- forms");
    static const char *const names[] = {"hosts",   "notHosts",   "ports", "notPorts",
                                        "methods", "notMethods", "paths", "notPaths"};
    const cfg_strlist_t *lists[] = {&op->hosts,   &op->notHosts,   &op->ports, &op->notPorts,
                                    &op->methods, &op->notMethods, &op->paths, &op->notPaths};
    for (int i = 0; i < 8; i++)
        check_no_empty(v, names[i], lists[i]);
    check_ports(v, "ports", &op->ports);
    check_ports(v, "notPorts", &op->notPorts);
    for (int k = 6; k < 8; k++) {
        const cfg_strlist_t *l = lists[k];
        for (uint32_t i = 0; i < l->n; i++) {
            if (l->v[i] != NULL && bad_path_template(l->v[i])) {
                char f[96];
                snprintf(f, sizeof(f), "%s[%u]", names[k], i);
                cfg_verr(v, f, "invalid or unsupported path template \"%s\": only {*} and {**} "
                               "segments are supported, without named variables or globs",
                         l->v[i]);
            }
        }
    }
    return op->ports.n > 0 || op->notPorts.n > 0;
}

static void check_rule(cfg_vctx_t *v, const cfg_AuthzRule *r, int action)
{
    bool custom = action == cfg_AuthzAction_CUSTOM;
    bool from_exists = false, to_exists = false, tcp_from = false, tcp_to = false;

    if (CFG_HAS(r, AuthzRule, from) && r->from.n == 0)
        cfg_verr(v, "from", "must not be empty when set");
    if (r->from.n > SEC_MAX_SOURCES)
        cfg_verr(v, "from", "must have at most %d items", SEC_MAX_SOURCES);
    for (uint32_t i = 0; i < r->from.n; i++) {
        const cfg_AuthzFrom *f = &r->from.v[i];
        cfg_vmark_t p = cfg_venter(v, f->_line, ".from[%u]", i);
        if (f->source == NULL) {
            cfg_verr(v, "source", "is required");
        } else {
            cfg_vmark_t p2 = cfg_venter(v, f->source->_line, ".source");
            from_exists = true;
            tcp_from |= check_source(v, f->source, custom);
            cfg_vleave(v, p2);
        }
        cfg_vleave(v, p);
    }

    if (CFG_HAS(r, AuthzRule, to) && r->to.n == 0)
        cfg_verr(v, "to", "must not be empty when set");
    for (uint32_t i = 0; i < r->to.n; i++) {
        const cfg_AuthzTo *t = &r->to.v[i];
        cfg_vmark_t p = cfg_venter(v, t->_line, ".to[%u]", i);
        if (t->operation == NULL) {
            cfg_verr(v, "operation", "is required");
        } else {
            cfg_vmark_t p2 = cfg_venter(v, t->operation->_line, ".operation");
            to_exists = true;
            tcp_to |= check_operation(v, t->operation);
            cfg_vleave(v, p2);
        }
        cfg_vleave(v, p);
    }

    if (CFG_HAS(r, AuthzRule, when) && r->when.n == 0)
        cfg_verr(v, "when", "must not be empty when set");
    for (uint32_t i = 0; i < r->when.n; i++) {
        const cfg_AuthzCondition *c = &r->when.v[i];
        cfg_vmark_t p = cfg_venter(v, c->_line, ".when[%u]", i);
        check_condition(v, c);
        if (custom && c->key != NULL &&
            (strcmp(c->key, "source.namespace") == 0 || strcmp(c->key, "source.principal") == 0 ||
             strcmp(c->key, "source.serviceAccount") == 0 ||
             strncmp(c->key, "request.auth.", 13) == 0))
            cfg_verr(v, "key", "%s is currently not supported with CUSTOM action", c->key);
        cfg_vleave(v, p);
    }

    if (action == cfg_AuthzAction_DENY &&
        ((from_exists && !to_exists && !tcp_from) || (to_exists && !tcp_to)))
        cfg_vwarn(v, NULL, "this DENY rule uses only HTTP attributes, so it denies all traffic to "
                           "TCP ports of the selected workloads; name the ports explicitly");
}

void cfg_validate_AuthorizationPolicy(cfg_vctx_t *v, const void *body)
{
    const cfg_AuthorizationPolicyObject *o = body;
    const cfg_AuthorizationPolicy *s = o->spec;
    int action = s ? s->action : cfg_AuthzAction_ALLOW;
    check_dry_run(v, action);
    if (s == NULL)
        return;
    cfg_vmark_t at = cfg_venter(v, s->_line, ".spec");
    check_targets(v, s->selector, s->targetRef, s->targetRefs.v, s->targetRefs.n);

    if (action == cfg_AuthzAction_CUSTOM) {
        if (s->rules.n == 0)
            cfg_verr(v, "rules", "CUSTOM action without rules is meaningless as it will never be "
                                 "triggered; add an empty rule {} to apply it to every request");
        else if (s->provider == NULL || s->provider->name == NULL || s->provider->name[0] == '\0')
            cfg_verr(v, "provider.name", "must not be empty with action CUSTOM");
    } else if (s->provider != NULL) {
        cfg_verr(v, "provider", "must not be set with action %s (only with CUSTOM)",
                 cfg_enum_name(&cfg_enum_AuthzAction, action));
    }
    if (action == cfg_AuthzAction_DENY && s->rules.n == 0)
        cfg_verr(v, "rules", "DENY action without rules is meaningless as it will never be "
                             "triggered; add an empty rule {} to apply it to every request");
    if (s->rules.n > SEC_MAX_RULES)
        cfg_verr(v, "rules", "must have at most %d items", SEC_MAX_RULES);
    for (uint32_t i = 0; i < s->rules.n; i++) {
        cfg_vmark_t p = cfg_venter(v, s->rules.v[i]._line, ".rules[%u]", i);
        check_rule(v, &s->rules.v[i], action);
        cfg_vleave(v, p);
    }
    cfg_vleave(v, at);
}

/* ---- RequestAuthentication ---- */

struct jwks_check {
    const char *why;
};

static bool known_kty(const char *kty)
{
    return kty != NULL && (strcmp(kty, "RSA") == 0 || strcmp(kty, "EC") == 0 ||
                           strcmp(kty, "oct") == 0 || strcmp(kty, "OKP") == 0);
}

static int on_jwks(void *ud, const doc_t *d)
{
    struct jwks_check *c = ud;
    if (c->why != NULL)
        return 1;
    if (d->root == NULL) {
        c->why = "is not valid JSON";
        return 1;
    }
    const doc_node_t *root = d->root;
    if (root->type != DOC_MAP) {
        c->why = "must be a JSON object";
        return 1;
    }
    const doc_node_t *keys = doc_map_get(root, "keys");
    if (keys == NULL) {
        /* a single key */
        if (!known_kty(doc_str(doc_map_get(root, "kty"))))
            c->why = "must be a JSON Web Key Set ({\"keys\": [...]}) or a key with a known kty "
                     "(RSA, EC, oct, OKP)";
        return 1;
    }
    if (keys->type != DOC_SEQ) {
        c->why = "\"keys\" must be an array of keys";
        return 1;
    }
    for (uint32_t i = 0; i < keys->v.seq.n; i++) {
        const doc_node_t *k = keys->v.seq.items[i];
        if (k->type != DOC_MAP || !known_kty(doc_str(doc_map_get(k, "kty")))) {
            c->why = "every key must be an object with a known kty (RSA, EC, oct, OKP)";
            return 1;
        }
    }
    return 1;
}

/* ^[-_A-Za-z0-9]+$ */
static bool is_strict_header_name(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (const char *c = s; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                  *c == '-' || *c == '_';
        if (!ok)
            return false;
    }
    return true;
}

static void check_jwks_uri(cfg_vctx_t *v, const char *field, const char *uri)
{
    const char *why = NULL;
    if (strlen(uri) > SEC_MAX_JWKS_URI)
        cfg_verr(v, field, "must be at most %d characters", SEC_MAX_JWKS_URI);
    else if (!cfg_is_url(uri, &why))
        cfg_verr(v, field, "\"%s\": %s", uri, why);
}

static void check_jwt_rule(cfg_vctx_t *v, const cfg_JWTRule *r)
{
    bool has_issuer = r->issuer != NULL && r->issuer[0] != '\0';
    bool has_uri = (r->jwksUri != NULL && r->jwksUri[0] != '\0') ||
                   (r->jwks_uri != NULL && r->jwks_uri[0] != '\0');
    if (!has_issuer && !has_uri)
        cfg_verr(v, "issuer", "issuer must be set (or jwksUri)");

    int key_sources = (r->jwksUri != NULL) + (r->jwks_uri != NULL) + (r->jwks != NULL);
    if (key_sources > 1)
        cfg_verr(v, NULL, "only one of jwks or jwksUri can be set");
    if (r->jwksUri != NULL && r->jwksUri[0] != '\0')
        check_jwks_uri(v, "jwksUri", r->jwksUri);
    if (r->jwks_uri != NULL && r->jwks_uri[0] != '\0')
        check_jwks_uri(v, "jwks_uri", r->jwks_uri);
    if (r->jwks != NULL) {
        struct jwks_check c = {0};
        if (r->jwks[0] == '\0')
            c.why = "must not be empty when set";
        else
            doc_parse(r->jwks, strlen(r->jwks), DOC_FMT_JSON, on_jwks, &c);
        if (c.why != NULL)
            cfg_verr(v, "jwks", "jwks parse error: %s", c.why);
    }

    for (uint32_t i = 0; i < r->fromHeaders.n; i++) {
        const char *name = r->fromHeaders.v[i].name;
        if (name != NULL && name[0] != '\0' && !cfg_is_header_name(name)) {
            cfg_vmark_t p = cfg_venter(v, r->fromHeaders.v[i]._line, ".fromHeaders[%u]", i);
            cfg_verr(v, "name", "\"%s\" is not a valid HTTP header name", name);
            cfg_vleave(v, p);
        }
    }
    for (uint32_t i = 0; i < r->outputClaimToHeaders.n; i++) {
        const cfg_ClaimToHeader *ch = &r->outputClaimToHeaders.v[i];
        if (ch->header != NULL && ch->header[0] != '\0' && !is_strict_header_name(ch->header)) {
            cfg_vmark_t p = cfg_venter(v, ch->_line, ".outputClaimToHeaders[%u]", i);
            cfg_verr(v, "header", "header name \"%s\" is not valid: it should match ^[-_A-Za-z0-9]+$",
                     ch->header);
            cfg_vleave(v, p);
        }
    }
    if (r->outputPayloadToHeader != NULL && r->outputPayloadToHeader[0] != '\0' &&
        !cfg_is_header_name(r->outputPayloadToHeader))
        cfg_verr(v, "outputPayloadToHeader", "\"%s\" is not a valid HTTP header name",
                 r->outputPayloadToHeader);
    if (r->spaceDelimitedClaims.n > SEC_MAX_SPACE_DELIMITED)
        cfg_verr(v, "spaceDelimitedClaims", "must have at most %d items", SEC_MAX_SPACE_DELIMITED);
    if (CFG_HAS(r, JWTRule, timeout)) {
        if (r->timeout < CFG_NS_PER_MS)
            cfg_verr(v, "timeout", "must be a valid duration greater than 1ms");
        else if (r->timeout % CFG_NS_PER_MS != 0)
            cfg_verr(v, "timeout", "only durations to ms precision are supported");
    }
}

void cfg_validate_RequestAuthentication(cfg_vctx_t *v, const void *body)
{
    const cfg_RequestAuthenticationObject *o = body;
    check_dry_run(v, -1);
    const cfg_RequestAuthentication *s = o->spec;
    if (s == NULL)
        return;
    cfg_vmark_t at = cfg_venter(v, s->_line, ".spec");
    check_targets(v, s->selector, s->targetRef, s->targetRefs.v, s->targetRefs.n);
    if (s->jwtRules.n > SEC_MAX_JWT_RULES)
        cfg_verr(v, "jwtRules", "must have at most %d items", SEC_MAX_JWT_RULES);
    for (uint32_t i = 0; i < s->jwtRules.n; i++) {
        cfg_vmark_t p = cfg_venter(v, s->jwtRules.v[i]._line, ".jwtRules[%u]", i);
        check_jwt_rule(v, &s->jwtRules.v[i]);
        cfg_vleave(v, p);
    }
    cfg_vleave(v, at);
}
