/*
 * Inbound security: PeerAuthentication (mesh, namespace, workload and port
 * level, with UNSET inheriting from the level above) and AuthorizationPolicy
 * compiled into RBAC filters, HTTP and network, as Istio compiles them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

typedef Envoy__Config__Rbac__V3__Policy pb_policy_t;
typedef Envoy__Config__Rbac__V3__Permission pb_perm_t;
typedef Envoy__Config__Rbac__V3__Principal pb_princ_t;

/* ---- PeerAuthentication ---- */

typedef struct pa_pick {
    tx_t *t;
    const cfg_object_t *workload, *ns, *mesh;
} pa_pick_t;

static int pick_pa(void *ud, cfg_object_t *o)
{
    pa_pick_t *p = ud;
    const cfg_PeerAuthentication *pa = CFG_BODY(o, PeerAuthentication)->spec;
    if (pa == NULL)
        return 0;
    bool sel = pa->selector && pa->selector->matchLabels.n > 0;
    const cfg_object_t **slot = NULL;
    if (strcmp(o->namespace, p->t->px->namespace) == 0) {
        if (sel && tx_proxy_selected(p->t, &pa->selector->matchLabels))
            slot = &p->workload;
        else if (!sel)
            slot = &p->ns;
    }
    if (slot == NULL && !sel && strcmp(o->namespace, p->t->root_ns) == 0)
        slot = &p->mesh;
    if (slot && (*slot == NULL || strcmp(o->name, (*slot)->name) < 0))
        *slot = o;
    return 0;
}

static int pa_mode(const cfg_object_t *o)
{
    if (o == NULL)
        return cfg_MtlsMode_UNSET;
    const cfg_PeerAuthentication *pa = CFG_BODY(o, PeerAuthentication)->spec;
    if (pa->mtls == NULL || !CFG_HAS(pa->mtls, PeerMutualTLS, mode))
        return cfg_MtlsMode_UNSET;
    return pa->mtls->mode;
}

int tx_mtls_mode(tx_t *t, uint32_t port)
{
    pa_pick_t p = {.t = t};
    cfg_snap_each(t->in->snap, CFG_PeerAuthentication, pick_pa, &p);
    if (p.workload) {
        const cfg_PeerAuthentication *pa = CFG_BODY(p.workload, PeerAuthentication)->spec;
        char key[16];
        snprintf(key, sizeof(key), "%u", port);
        for (uint32_t i = 0; i < pa->portLevelMtls.n; i++) {
            const cfg_PeerMutualTLS *m = pa->portLevelMtls.v[i].msg;
            if (strcmp(pa->portLevelMtls.v[i].key, key) == 0 && m &&
                CFG_HAS(m, PeerMutualTLS, mode) && m->mode != cfg_MtlsMode_UNSET)
                return m->mode;
        }
    }
    int mode = pa_mode(p.workload);
    if (mode == cfg_MtlsMode_UNSET)
        mode = pa_mode(p.ns);
    if (mode == cfg_MtlsMode_UNSET)
        mode = pa_mode(p.mesh);
    return mode == cfg_MtlsMode_UNSET ? cfg_MtlsMode_PERMISSIVE : mode;
}

/* ---- RBAC building blocks ---- */

static pb_perm_t *perm_any(tx_t *t)
{
    pb_perm_t *p = TX_NEW(t, pb_perm_t, ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT);
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY;
    p->any = 1;
    return p;
}

static pb_princ_t *princ_any(tx_t *t)
{
    pb_princ_t *p = TX_NEW(t, pb_princ_t, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT);
    p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY;
    p->any = 1;
    return p;
}

static pb_perm_t *perm_set(tx_t *t, bool and, pb_perm_t **v, size_t n)
{
    if (n == 1)
        return v[0];
    Envoy__Config__Rbac__V3__Permission__Set *s = TX_NEW(
        t, Envoy__Config__Rbac__V3__Permission__Set, ENVOY__CONFIG__RBAC__V3__PERMISSION__SET__INIT);
    s->rules = v;
    s->n_rules = n;
    pb_perm_t *p = TX_NEW(t, pb_perm_t, ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT);
    if (and) {
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES;
        p->and_rules = s;
    } else {
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES;
        p->or_rules = s;
    }
    return p;
}

static pb_princ_t *princ_set(tx_t *t, bool and, pb_princ_t **v, size_t n)
{
    if (n == 1)
        return v[0];
    Envoy__Config__Rbac__V3__Principal__Set *s = TX_NEW(
        t, Envoy__Config__Rbac__V3__Principal__Set, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__SET__INIT);
    s->ids = v;
    s->n_ids = n;
    pb_princ_t *p = TX_NEW(t, pb_princ_t, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT);
    if (and) {
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS;
        p->and_ids = s;
    } else {
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS;
        p->or_ids = s;
    }
    return p;
}

static pb_perm_t *perm_not(tx_t *t, pb_perm_t *in)
{
    pb_perm_t *p = TX_NEW(t, pb_perm_t, ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT);
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE;
    p->not_rule = in;
    return p;
}

static pb_princ_t *princ_not(tx_t *t, pb_princ_t *in)
{
    pb_princ_t *p = TX_NEW(t, pb_princ_t, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT);
    p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID;
    p->not_id = in;
    return p;
}

/* Istio's string patterns: "*" any, "*x" suffix, "x*" prefix, else exact. */
static pb_smatch_t *pattern(tx_t *t, const char *v, const char *prefix_add)
{
    size_t n = strlen(v);
    if (strcmp(v, "*") == 0)
        return tx_smatch_regex(t, ".+");
    if (v[0] == '*')
        return tx_smatch_suffix(t, v + 1);
    if (n > 0 && v[n - 1] == '*')
        return tx_smatch_prefix(t, tx_printf(t, "%s%.*s", prefix_add, (int)(n - 1), v));
    return tx_smatch_exact(t, tx_printf(t, "%s%s", prefix_add, v));
}

static pb_hmatch_t *hdr(tx_t *t, const char *name, pb_smatch_t *m)
{
    pb_hmatch_t *h = TX_NEW(t, pb_hmatch_t, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    h->name = tx_str(t, name);
    h->header_match_specifier_case = ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH;
    h->string_match = m;
    return h;
}

static Envoy__Config__Core__V3__CidrRange *cidr(tx_t *t, const char *s)
{
    Envoy__Config__Core__V3__CidrRange *c =
        TX_NEW(t, Envoy__Config__Core__V3__CidrRange, ENVOY__CONFIG__CORE__V3__CIDR_RANGE__INIT);
    const char *slash = strchr(s, '/');
    if (slash) {
        c->address_prefix = arena_strndup(t->a, s, (size_t)(slash - s));
        c->prefix_len = tx_u32(t, (uint32_t)atoi(slash + 1));
    } else {
        c->address_prefix = tx_str(t, s);
        c->prefix_len = tx_u32(t, strchr(s, ':') ? 128 : 32);
    }
    return c;
}

enum pkind { P_HOST, P_PORT, P_METHOD, P_PATH };

static pb_perm_t *perm_value(tx_t *t, enum pkind k, const char *v)
{
    pb_perm_t *p = TX_NEW(t, pb_perm_t, ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT);
    switch (k) {
    case P_HOST: {
        pb_smatch_t *m = pattern(t, v, "");
        m->ignore_case = 1;
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER;
        p->header = hdr(t, ":authority", m);
        break;
    }
    case P_PORT:
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT;
        p->destination_port = (uint32_t)atoi(v);
        break;
    case P_METHOD:
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER;
        p->header = hdr(t, ":method", tx_smatch_exact(t, v));
        break;
    case P_PATH: {
        Envoy__Type__Matcher__V3__PathMatcher *pm = TX_NEW(
            t, Envoy__Type__Matcher__V3__PathMatcher, ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__INIT);
        pm->rule_case = ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH;
        pm->path = pattern(t, v, "");
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH;
        p->url_path = pm;
        break;
    }
    }
    return p;
}

/* OR over values of one field, negated for notX. Appended to an AND list. */
static void perm_field(tx_t *t, pb_perm_t ***and, size_t *nand, enum pkind k,
                       const cfg_strlist_t *vals, bool negate)
{
    if (vals->n == 0)
        return;
    pb_perm_t **v = NULL;
    size_t n = 0;
    for (uint32_t i = 0; i < vals->n; i++)
        TX_PUSH(t, v, n, perm_value(t, k, vals->v[i]));
    pb_perm_t *p = perm_set(t, false, v, n);
    TX_PUSH(t, *and, *nand, negate ? perm_not(t, p) : p);
}

enum skind { S_PRINCIPAL, S_NAMESPACE, S_IP, S_REMOTE_IP, S_REQ_PRINCIPAL, S_SA };

static pb_princ_t *princ_value(tx_t *t, enum skind k, const char *v, const char *ns)
{
    pb_princ_t *p = TX_NEW(t, pb_princ_t, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT);
    switch (k) {
    case S_PRINCIPAL:
    case S_NAMESPACE:
    case S_SA: {
        Envoy__Config__Rbac__V3__Principal__Authenticated *a =
            TX_NEW(t, Envoy__Config__Rbac__V3__Principal__Authenticated,
                   ENVOY__CONFIG__RBAC__V3__PRINCIPAL__AUTHENTICATED__INIT);
        if (k == S_PRINCIPAL)
            a->principal_name = pattern(t, v, "spiffe://");
        else if (k == S_NAMESPACE)
            a->principal_name = strcmp(v, "*") == 0 ? tx_smatch_regex(t, ".+")
                                                    : tx_smatch_regex(t, tx_printf(t, ".*/ns/%s/.*", v));
        else {
            const char *slash = strchr(v, '/');
            a->principal_name =
                slash ? tx_smatch_exact(t, tx_printf(t, "spiffe://%s/ns/%.*s/sa/%s", t->trust_domain,
                                                     (int)(slash - v), v, slash + 1))
                      : tx_smatch_exact(t, tx_printf(t, "spiffe://%s/ns/%s/sa/%s", t->trust_domain, ns, v));
        }
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED;
        p->authenticated = a;
        break;
    }
    case S_IP:
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP;
        p->direct_remote_ip = cidr(t, v);
        break;
    case S_REMOTE_IP:
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP;
        p->remote_ip = cidr(t, v);
        break;
    case S_REQ_PRINCIPAL: {
        Envoy__Type__Matcher__V3__MetadataMatcher *m = TX_NEW(
            t, Envoy__Type__Matcher__V3__MetadataMatcher, ENVOY__TYPE__MATCHER__V3__METADATA_MATCHER__INIT);
        m->filter = tx_str(t, "istio_authn");
        Envoy__Type__Matcher__V3__MetadataMatcher__PathSegment *seg =
            TX_NEW(t, Envoy__Type__Matcher__V3__MetadataMatcher__PathSegment,
                   ENVOY__TYPE__MATCHER__V3__METADATA_MATCHER__PATH_SEGMENT__INIT);
        seg->segment_case = ENVOY__TYPE__MATCHER__V3__METADATA_MATCHER__PATH_SEGMENT__SEGMENT_KEY;
        seg->key = tx_str(t, "request.auth.principal");
        TX_PUSH(t, m->path, m->n_path, seg);
        m->value = TX_NEW(t, Envoy__Type__Matcher__V3__ValueMatcher, ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__INIT);
        m->value->match_pattern_case = ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_STRING_MATCH;
        m->value->string_match = pattern(t, v, "");
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA;
        p->metadata = m;
        break;
    }
    }
    return p;
}

static void princ_field(tx_t *t, pb_princ_t ***and, size_t *nand, enum skind k,
                        const cfg_strlist_t *vals, bool negate, const char *ns)
{
    if (vals->n == 0)
        return;
    pb_princ_t **v = NULL;
    size_t n = 0;
    for (uint32_t i = 0; i < vals->n; i++)
        TX_PUSH(t, v, n, princ_value(t, k, vals->v[i], ns));
    pb_princ_t *p = princ_set(t, false, v, n);
    TX_PUSH(t, *and, *nand, negate ? princ_not(t, p) : p);
}

/* One rule -> one RBAC policy. Returns NULL when the rule cannot match on a
 * TCP chain (HTTP-only fields in an ALLOW policy). */
static pb_policy_t *compile_rule(tx_t *t, const cfg_AuthzRule *rule, const char *ns, bool tcp,
                                 bool deny)
{
    pb_perm_t **ors = NULL;
    size_t nors = 0;
    bool http_only = false;
    for (uint32_t i = 0; i < rule->to.n; i++) {
        const cfg_AuthzOperation *op = rule->to.v[i].operation;
        if (op == NULL)
            continue;
        pb_perm_t **and = NULL;
        size_t nand = 0;
        bool has_http = op->hosts.n || op->notHosts.n || op->methods.n || op->notMethods.n ||
                        op->paths.n || op->notPaths.n;
        if (tcp && has_http) {
            http_only = true;
            if (!deny)
                continue; /* ALLOW: this operation can never match a TCP connection */
        } else {
            perm_field(t, &and, &nand, P_HOST, &op->hosts, false);
            perm_field(t, &and, &nand, P_HOST, &op->notHosts, true);
            perm_field(t, &and, &nand, P_METHOD, &op->methods, false);
            perm_field(t, &and, &nand, P_METHOD, &op->notMethods, true);
            perm_field(t, &and, &nand, P_PATH, &op->paths, false);
            perm_field(t, &and, &nand, P_PATH, &op->notPaths, true);
        }
        perm_field(t, &and, &nand, P_PORT, &op->ports, false);
        perm_field(t, &and, &nand, P_PORT, &op->notPorts, true);
        TX_PUSH(t, ors, nors, nand ? perm_set(t, true, and, nand) : perm_any(t));
    }
    if (tcp && http_only && !deny && nors == 0)
        return NULL;
    pb_perm_t **perm_and = NULL;
    size_t nperm = 0;
    if (nors)
        TX_PUSH(t, perm_and, nperm, perm_set(t, false, ors, nors));

    pb_princ_t **sors = NULL;
    size_t nsors = 0;
    for (uint32_t i = 0; i < rule->from.n; i++) {
        const cfg_AuthzSource *s = rule->from.v[i].source;
        if (s == NULL)
            continue;
        pb_princ_t **and = NULL;
        size_t nand = 0;
        princ_field(t, &and, &nand, S_PRINCIPAL, &s->principals, false, ns);
        princ_field(t, &and, &nand, S_PRINCIPAL, &s->notPrincipals, true, ns);
        princ_field(t, &and, &nand, S_SA, &s->serviceAccounts, false, ns);
        princ_field(t, &and, &nand, S_SA, &s->notServiceAccounts, true, ns);
        princ_field(t, &and, &nand, S_NAMESPACE, &s->namespaces, false, ns);
        princ_field(t, &and, &nand, S_NAMESPACE, &s->notNamespaces, true, ns);
        princ_field(t, &and, &nand, S_IP, &s->ipBlocks, false, ns);
        princ_field(t, &and, &nand, S_IP, &s->notIpBlocks, true, ns);
        princ_field(t, &and, &nand, S_REMOTE_IP, &s->remoteIpBlocks, false, ns);
        princ_field(t, &and, &nand, S_REMOTE_IP, &s->notRemoteIpBlocks, true, ns);
        if (!tcp) {
            princ_field(t, &and, &nand, S_REQ_PRINCIPAL, &s->requestPrincipals, false, ns);
            princ_field(t, &and, &nand, S_REQ_PRINCIPAL, &s->notRequestPrincipals, true, ns);
        } else if ((s->requestPrincipals.n || s->notRequestPrincipals.n) && !deny) {
            return NULL;
        }
        TX_PUSH(t, sors, nsors, nand ? princ_set(t, true, and, nand) : princ_any(t));
    }
    pb_princ_t **princ_and = NULL;
    size_t nprinc = 0;
    if (nsors)
        TX_PUSH(t, princ_and, nprinc, princ_set(t, false, sors, nsors));

    /* when: request.headers[...] and destination.* on the permission side,
     * source.* on the principal side */
    for (uint32_t i = 0; i < rule->when.n; i++) {
        const cfg_AuthzCondition *c = &rule->when.v[i];
        const char *key = c->key;
        bool neg_only = c->values.n == 0;
        const cfg_strlist_t *vals = neg_only ? &c->notValues : &c->values;
        if (strncmp(key, "request.headers[", 16) == 0) {
            if (tcp) {
                if (!deny)
                    return NULL;
                continue;
            }
            const char *name = arena_strndup(t->a, key + 16, strlen(key + 16) - (key[strlen(key) - 1] == ']'));
            pb_perm_t **v = NULL;
            size_t n = 0;
            for (uint32_t j = 0; j < vals->n; j++) {
                pb_perm_t *p = TX_NEW(t, pb_perm_t, ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT);
                p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER;
                p->header = hdr(t, name, pattern(t, vals->v[j], ""));
                TX_PUSH(t, v, n, p);
            }
            if (n)
                TX_PUSH(t, perm_and, nperm, neg_only ? perm_not(t, perm_set(t, false, v, n)) : perm_set(t, false, v, n));
        } else if (strcmp(key, "destination.port") == 0) {
            pb_perm_t **v = NULL;
            size_t n = 0;
            for (uint32_t j = 0; j < vals->n; j++)
                TX_PUSH(t, v, n, perm_value(t, P_PORT, vals->v[j]));
            if (n)
                TX_PUSH(t, perm_and, nperm, neg_only ? perm_not(t, perm_set(t, false, v, n)) : perm_set(t, false, v, n));
        } else if (strcmp(key, "source.ip") == 0 || strcmp(key, "remote.ip") == 0 ||
                   strcmp(key, "source.namespace") == 0 || strcmp(key, "source.principal") == 0 ||
                   strcmp(key, "request.auth.principal") == 0) {
            enum skind k = strcmp(key, "source.ip") == 0 ? S_IP
                           : strcmp(key, "remote.ip") == 0 ? S_REMOTE_IP
                           : strcmp(key, "source.namespace") == 0 ? S_NAMESPACE
                           : strcmp(key, "source.principal") == 0 ? S_PRINCIPAL
                                                                 : S_REQ_PRINCIPAL;
            if (tcp && k == S_REQ_PRINCIPAL) {
                if (!deny)
                    return NULL;
                continue;
            }
            princ_field(t, &princ_and, &nprinc, k, vals, neg_only, ns);
        } else {
            tx_warn(t, "AuthorizationPolicy in %s: when key \"%s\" is not supported; condition ignored",
                    ns, key);
        }
    }
    pb_policy_t *pol = TX_NEW(t, pb_policy_t, ENVOY__CONFIG__RBAC__V3__POLICY__INIT);
    TX_PUSH(t, pol->permissions, pol->n_permissions, nperm ? perm_set(t, true, perm_and, nperm) : perm_any(t));
    TX_PUSH(t, pol->principals, pol->n_principals, nprinc ? princ_set(t, true, princ_and, nprinc) : princ_any(t));
    return pol;
}

static void add_policy(tx_t *t, pb_rbac_t *r, const char *name, pb_policy_t *p)
{
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *e = TX_NEW(
        t, Envoy__Config__Rbac__V3__RBAC__PoliciesEntry, ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT);
    e->key = tx_str(t, name);
    e->value = p;
    TX_PUSH(t, r->policies, r->n_policies, e);
}

typedef struct authz_ctx {
    tx_t *t;
    const cfg_object_t **v;
    size_t n;
} authz_ctx_t;

static int pick_authz(void *ud, cfg_object_t *o)
{
    authz_ctx_t *c = ud;
    const cfg_AuthorizationPolicy *ap = CFG_BODY(o, AuthorizationPolicy)->spec;
    if (ap == NULL)
        return 0;
    bool sel = ap->selector && ap->selector->matchLabels.n > 0;
    bool own = strcmp(o->namespace, c->t->px->namespace) == 0;
    bool root = strcmp(o->namespace, c->t->root_ns) == 0;
    if (ap->targetRef || ap->targetRefs.n)
        return 0; /* attached to a Service/Gateway, not to workloads by selector */
    if ((own || root) && (!sel || tx_proxy_selected(c->t, &ap->selector->matchLabels)))
        TX_PUSH(c->t, c->v, c->n, o);
    return 0;
}

static int obj_cmp(const void *a, const void *b)
{
    const cfg_object_t *x = *(const cfg_object_t *const *)a, *y = *(const cfg_object_t *const *)b;
    int c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->name, y->name);
}

void tx_authz_build(tx_t *t, tx_authz_t *out)
{
    memset(out, 0, sizeof(*out));
    authz_ctx_t c = {.t = t};
    cfg_snap_each(t->in->snap, CFG_AuthorizationPolicy, pick_authz, &c);
    if (c.n)
        qsort(c.v, c.n, sizeof(*c.v), obj_cmp);
    /* CUSTOM delegates to an external authorizer, which meshd does not
     * configure: the requests it covers are denied, as an unreachable
     * authorizer (fail closed) would have them */
    static const int slot_of[4] = {[cfg_AuthzAction_AUDIT] = 0, [cfg_AuthzAction_DENY] = 1,
                                   [cfg_AuthzAction_ALLOW] = 2, [cfg_AuthzAction_CUSTOM] = 1};
    static const Envoy__Config__Rbac__V3__RBAC__Action acts[3] = {
        ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY,
        ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW};
    for (size_t i = 0; i < c.n; i++) {
        const cfg_object_t *o = c.v[i];
        const cfg_AuthorizationPolicy *ap = CFG_BODY(o, AuthorizationPolicy)->spec;
        int action = CFG_HAS(ap, AuthorizationPolicy, action) ? ap->action : cfg_AuthzAction_ALLOW;
        int slot = slot_of[action];
        if (action == cfg_AuthzAction_CUSTOM)
            tx_warn(t, "AuthorizationPolicy %s/%s: action CUSTOM needs an external authorizer, which meshd does "
                       "not configure; the requests it covers are denied",
                    o->namespace, o->name);
        for (int tcp = 0; tcp < 2; tcp++) {
            pb_rbac_t **r = tcp ? &out->tcp[slot] : &out->http[slot];
            if (*r == NULL) {
                *r = TX_NEW(t, pb_rbac_t, ENVOY__CONFIG__RBAC__V3__RBAC__INIT);
                (*r)->action = acts[slot];
            }
            for (uint32_t k = 0; k < ap->rules.n; k++) {
                pb_policy_t *p = compile_rule(t, &ap->rules.v[k], o->namespace, tcp,
                                              action == cfg_AuthzAction_DENY || action == cfg_AuthzAction_CUSTOM);
                if (p)
                    add_policy(t, *r, tx_printf(t, "ns[%s]-policy[%s]-rule[%u]", o->namespace, o->name, k), p);
            }
        }
    }
    /* DENY/AUDIT with no policies left do nothing: drop them. An ALLOW with
     * no policies is the implicit deny-all and stays. */
    for (int s = 0; s < 2; s++) {
        if (out->http[s] && out->http[s]->n_policies == 0)
            out->http[s] = NULL;
        if (out->tcp[s] && out->tcp[s]->n_policies == 0)
            out->tcp[s] = NULL;
    }
}
