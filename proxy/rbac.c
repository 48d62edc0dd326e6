/*
 * rbac: compiles an envoy.config.rbac.v3.RBAC into a matcher tree and judges
 * connections and requests against it (see rbac_internal.h).
 *
 * Matching is three-valued: a matcher answers yes, no, or "cannot tell" (a
 * regex that hit its match or heap limit or met invalid UTF-8, a repeated
 * header too long to join). "Cannot tell" never grants access: an ALLOW
 * filter needs a policy that surely matches, and a DENY filter denies when a
 * policy matches or cannot be decided (fail closed).
 *
 * Dynamic metadata: meshproxy has no JWT filter yet, so no request carries
 * dynamic metadata (where Istio's request.auth.principal and
 * request.auth.claims[...] live). Every metadata matcher therefore sees an
 * absent value and, as in Envoy, matches only when it is inverted: a DENY on
 * requestPrincipals never fires, an ALLOW on requestPrincipals never allows,
 * and notRequestPrincipals always matches.
 *
 * Nothing here allocates while evaluating: regexes run with PCRE2 contexts
 * carved from a buffer on the stack, with the match limit the router uses and
 * a heap limit, and repeated headers are joined into a stack buffer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "rbac_internal.h"

/* Control planes still send the deprecated header-matcher fields and
 * source_ip; Envoy accepts them, so the proxy reads them. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

typedef Envoy__Config__Rbac__V3__RBAC pb_rbac_t;
typedef Envoy__Config__Rbac__V3__Policy pb_policy_t;
typedef Envoy__Config__Rbac__V3__Permission pb_perm_t;
typedef Envoy__Config__Rbac__V3__Principal pb_princ_t;
typedef Envoy__Config__Route__V3__HeaderMatcher pb_hmatch_t;
typedef Envoy__Type__Matcher__V3__StringMatcher pb_smatch_t;
typedef Envoy__Type__Matcher__V3__PathMatcher pb_pmatch_t;
typedef Envoy__Type__Matcher__V3__MetadataMatcher pb_mmatch_t;
typedef Envoy__Type__Matcher__V3__ValueMatcher pb_vmatch_t;
typedef Envoy__Config__Core__V3__CidrRange pb_cidr_t;

#define RBAC_MAX_DEPTH 64   /* nesting of and/or/not a policy may use */
#define RBAC_JOIN_MAX 8192  /* a repeated header's values joined with ',' */

/* ---- the compiled form ---- */

typedef enum {
    RN_ANY,   /* always matches */
    RN_CONST, /* a fixed answer (metadata matchers: see above) */
    RN_AND,
    RN_OR,
    RN_NOT,
    RN_HEADER,
    RN_URL_PATH,
    RN_DST_IP,
    RN_DIRECT_IP, /* direct_remote_ip and source_ip: the peer address */
    RN_REMOTE_IP,
    RN_DST_PORT,
    RN_DST_PORT_RANGE,
    RN_SNI,
    RN_AUTHENTICATED,
} rn_kind_t;

typedef struct rn_header {
    px_header_match_t h; /* name (lower case), m, present, invert */
    bool missing_empty;  /* treat_missing_header_as_empty */
    bool range;          /* range_match: [start, end) of the value as an integer */
    int64_t start, end;
} rn_header_t;

typedef struct rnode {
    rn_kind_t kind;
    union {
        struct {
            const struct rnode *v;
            size_t n;
        } set;                     /* RN_AND, RN_OR */
        const struct rnode *inner; /* RN_NOT */
        bool konst;                /* RN_CONST */
        const rn_header_t *hdr;    /* RN_HEADER */
        const px_str_match_t *str; /* RN_URL_PATH, RN_SNI, RN_AUTHENTICATED (NULL: any peer) */
        px_cidr_t cidr;            /* RN_*_IP */
        uint32_t port;             /* RN_DST_PORT */
        struct {
            int32_t start, end;
        } range; /* RN_DST_PORT_RANGE: [start, end) */
    } u;
} rnode_t;

typedef struct rpolicy {
    const char *name;
    rnode_t perms;  /* any of the permissions */
    rnode_t princs; /* any of the principals */
} rpolicy_t;

typedef struct rrules {
    px_rbac_action_t action;
    rpolicy_t *v; /* sorted by name, as Envoy walks its policy map */
    size_t n;
} rrules_t;

struct px_rbac {
    const char *stat_prefix;
    bool has_rules; /* false: no rules, everything is allowed */
    rrules_t rules;
    bool has_shadow;
    rrules_t shadow;
};

/* ---- compiling ---- */

typedef struct comp {
    arena_t *a;
    int (*keep_re)(void *ud, pcre2_code *re);
    void *ud;
    char *err;
    size_t errlen;
    const char *set;    /* "" or "shadow_rules " */
    const char *policy; /* the policy being compiled */
    char path[512];     /* the field path inside it */
    size_t plen;
    int depth;
} comp_t;

static int failf(comp_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int failf(comp_t *c, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    const char *sep = c->plen ? ": " : "";
    if (c->policy)
        snprintf(c->err, c->errlen, "RBAC %spolicy \"%s\": %s%s%s", c->set, c->policy, c->path, sep,
                 why);
    else
        snprintf(c->err, c->errlen, "RBAC %s%s%s%s", c->set, c->path, sep, why);
    return -1;
}

/* Appends a segment to the field path; returns the length to restore. */
static size_t path_push(comp_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(comp_t *c, const char *fmt, ...)
{
    size_t old = c->plen;
    if (c->plen < sizeof(c->path) - 1) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(c->path + c->plen, sizeof(c->path) - c->plen, fmt, ap);
        va_end(ap);
        if (n > 0)
            c->plen +=
                (size_t)n < sizeof(c->path) - c->plen ? (size_t)n : sizeof(c->path) - 1 - c->plen;
    }
    return old;
}

static void path_pop(comp_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static const char *lower_dup(arena_t *a, const char *s)
{
    char *d = arena_strdup(a, s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

/* Compiles a regex as the router does (px_regex_compile); the code goes to keep_re. */
static int compile_regex(comp_t *c, const char *pattern, pcre2_code **out)
{
    char why[512];
    if (c->keep_re == NULL)
        return failf(c, "no owner for compiled regexes");
    if (px_regex_compile(pattern, false, c->keep_re, c->ud, out, why, sizeof(why)) < 0)
        return failf(c, "%s", why);
    return 0;
}

static int compile_str(comp_t *c, const pb_smatch_t *sm, px_str_match_t *m)
{
    char why[512];
    if (sm && sm->match_pattern_case == ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX) {
        size_t old = path_push(c, ".safe_regex");
        int rc = px_str_match_compile(c->a, sm, c->keep_re, c->ud, m, why, sizeof(why)) < 0 ? failf(c, "%s", why) : 0;
        path_pop(c, old);
        return rc;
    }
    if (px_str_match_compile(c->a, sm, c->keep_re, c->ud, m, why, sizeof(why)) < 0)
        return failf(c, "%s", why);
    return 0;
}

static int compile_header(comp_t *c, const pb_hmatch_t *hm, rn_header_t *out)
{
    if (hm == NULL)
        return failf(c, "a header matcher is required");
    if (hm->name == NULL || !hm->name[0])
        return failf(c, "name: must not be empty");
    out->h.name = lower_dup(c->a, hm->name);
    out->h.invert = hm->invert_match;
    out->missing_empty = hm->treat_missing_header_as_empty;
    px_str_match_t *m = &out->h.m;
    const char *v = NULL;
    switch (hm->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        /* the deprecated exact_match: an empty value matches any value */
        v = hm->exact_match ? hm->exact_match : "";
        m->kind = v[0] ? PX_STR_EXACT : PX_STR_PREFIX;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        m->kind = PX_STR_PREFIX;
        v = hm->prefix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        m->kind = PX_STR_SUFFIX;
        v = hm->suffix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        m->kind = PX_STR_CONTAINS;
        v = hm->contains_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH: {
        m->kind = PX_STR_REGEX;
        size_t old = path_push(c, ".safe_regex_match");
        int rc = hm->safe_regex_match == NULL
                     ? failf(c, "regex is required")
                     : compile_regex(c, hm->safe_regex_match->regex, &m->re);
        path_pop(c, old);
        return rc;
    }
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        if (hm->range_match == NULL)
            return failf(c, "range_match: start and end are required");
        m->kind = PX_STR_PRESENT; /* not read: range decides */
        out->range = true;
        out->start = hm->range_match->start;
        out->end = hm->range_match->end;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        m->kind = PX_STR_PRESENT;
        out->h.present = hm->present_match;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH: {
        size_t old = path_push(c, ".string_match");
        int rc = compile_str(c, hm->string_match, m);
        path_pop(c, old);
        return rc;
    }
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER__NOT_SET:
        /* no specifier: the header must be present */
        m->kind = PX_STR_PRESENT;
        out->h.present = true;
        return 0;
    default:
        return failf(c, "unsupported header match specifier (field %d)",
                     (int)hm->header_match_specifier_case);
    }
    m->value = arena_strdup(c->a, v ? v : "");
    m->value_len = strlen(m->value);
    return 0;
}

static int compile_cidr(comp_t *c, const pb_cidr_t *cr, px_cidr_t *out)
{
    if (cr == NULL || cr->address_prefix == NULL || !cr->address_prefix[0])
        return failf(c, "address_prefix: must not be empty");
    uint32_t max;
    if (inet_pton(AF_INET, cr->address_prefix, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, cr->address_prefix, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return failf(c, "address_prefix: \"%s\" is not an IPv4 or IPv6 address",
                     cr->address_prefix);
    }
    out->len = cr->prefix_len ? cr->prefix_len->value : 0;
    if (out->len > max)
        return failf(c, "prefix_len: %u is longer than an %s address (%u bits)", out->len,
                     max == 32 ? "IPv4" : "IPv6", max);
    return 0;
}

/* Checks a ValueMatcher as Envoy would (its regexes must compile). */
static int check_value(comp_t *c, const pb_vmatch_t *v)
{
    if (v == NULL)
        return failf(c, "a value matcher is required");
    switch (v->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_NULL_MATCH:
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_BOOL_MATCH:
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_PRESENT_MATCH:
        return 0;
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_STRING_MATCH: {
        px_str_match_t m = {0};
        size_t old = path_push(c, ".string_match");
        int rc = compile_str(c, v->string_match, &m);
        path_pop(c, old);
        return rc;
    }
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_LIST_MATCH: {
        if (v->list_match == NULL ||
            v->list_match->match_pattern_case !=
                ENVOY__TYPE__MATCHER__V3__LIST_MATCHER__MATCH_PATTERN_ONE_OF)
            return failf(c, "list_match: one_of is required");
        if (++c->depth > RBAC_MAX_DEPTH)
            return failf(c, "nested deeper than %d levels", RBAC_MAX_DEPTH);
        size_t old = path_push(c, ".list_match.one_of");
        int rc = check_value(c, v->list_match->one_of);
        path_pop(c, old);
        c->depth--;
        return rc;
    }
    default:
        return failf(c, "unsupported value matcher (field %d)", (int)v->match_pattern_case);
    }
}

/* A metadata matcher: checked, then fixed to its answer for absent metadata. */
static int compile_metadata(comp_t *c, const pb_mmatch_t *m, rnode_t *out)
{
    if (m == NULL)
        return failf(c, "a metadata matcher is required");
    if (m->filter == NULL || !m->filter[0])
        return failf(c, "filter: must not be empty");
    if (m->n_path == 0)
        return failf(c, "path: at least one segment is required");
    for (size_t i = 0; i < m->n_path; i++)
        if (m->path[i] == NULL ||
            m->path[i]->segment_case !=
                ENVOY__TYPE__MATCHER__V3__METADATA_MATCHER__PATH_SEGMENT__SEGMENT_KEY ||
            m->path[i]->key == NULL || !m->path[i]->key[0]) {
            size_t old = path_push(c, ".path[%zu]", i);
            int rc = failf(c, "key: must not be empty");
            path_pop(c, old);
            return rc;
        }
    size_t old = path_push(c, ".value");
    int rc = check_value(c, m->value);
    path_pop(c, old);
    if (rc < 0)
        return -1;
    /* no dynamic metadata: every value matcher fails on the absent value */
    out->kind = RN_CONST;
    out->u.konst = m->invert;
    return 0;
}

/* The field number of the first unknown field of a message, or 0. */
static uint32_t unknown_tag(const ProtobufCMessage *m)
{
    return m->n_unknown_fields ? m->unknown_fields[0].tag : 0;
}

static int compile_perm(comp_t *c, const pb_perm_t *p, rnode_t *out);
static int compile_princ(comp_t *c, const pb_princ_t *p, rnode_t *out);

static int compile_perm_set(comp_t *c, const Envoy__Config__Rbac__V3__Permission__Set *s,
                            const char *field, rn_kind_t kind, rnode_t *out)
{
    size_t old = path_push(c, ".%s", field);
    int rc = -1;
    if (s == NULL || s->n_rules == 0) {
        failf(c, "rules: at least one rule is required");
        goto out;
    }
    rnode_t *v = arena_alloc(c->a, s->n_rules * sizeof(*v));
    for (size_t i = 0; i < s->n_rules; i++) {
        size_t o2 = path_push(c, ".rules[%zu]", i);
        int r = compile_perm(c, s->rules[i], &v[i]);
        path_pop(c, o2);
        if (r < 0)
            goto out;
    }
    out->kind = kind;
    out->u.set.v = v;
    out->u.set.n = s->n_rules;
    rc = 0;
out:
    path_pop(c, old);
    return rc;
}

static int compile_princ_set(comp_t *c, const Envoy__Config__Rbac__V3__Principal__Set *s,
                             const char *field, rn_kind_t kind, rnode_t *out)
{
    size_t old = path_push(c, ".%s", field);
    int rc = -1;
    if (s == NULL || s->n_ids == 0) {
        failf(c, "ids: at least one principal is required");
        goto out;
    }
    rnode_t *v = arena_alloc(c->a, s->n_ids * sizeof(*v));
    for (size_t i = 0; i < s->n_ids; i++) {
        size_t o2 = path_push(c, ".ids[%zu]", i);
        int r = compile_princ(c, s->ids[i], &v[i]);
        path_pop(c, o2);
        if (r < 0)
            goto out;
    }
    out->kind = kind;
    out->u.set.v = v;
    out->u.set.n = s->n_ids;
    rc = 0;
out:
    path_pop(c, old);
    return rc;
}

/* Leaves that permissions and principals share. */
static int compile_header_node(comp_t *c, const pb_hmatch_t *h, rnode_t *out)
{
    size_t old = path_push(c, ".header");
    rn_header_t *hd = arena_alloc(c->a, sizeof(*hd));
    int rc = compile_header(c, h, hd);
    path_pop(c, old);
    out->kind = RN_HEADER;
    out->u.hdr = hd;
    return rc;
}

static int compile_url_path(comp_t *c, const pb_pmatch_t *pm, rnode_t *out)
{
    size_t old = path_push(c, ".url_path");
    int rc;
    if (pm == NULL || pm->rule_case != ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH) {
        rc = failf(c, "path: a string matcher is required");
    } else {
        px_str_match_t *m = arena_alloc(c->a, sizeof(*m));
        path_push(c, ".path");
        rc = compile_str(c, pm->path, m);
        out->kind = RN_URL_PATH;
        out->u.str = m;
    }
    path_pop(c, old);
    return rc;
}

static int compile_ip(comp_t *c, const char *field, const pb_cidr_t *cr, rn_kind_t kind,
                      rnode_t *out)
{
    size_t old = path_push(c, ".%s", field);
    int rc = compile_cidr(c, cr, &out->u.cidr);
    path_pop(c, old);
    out->kind = kind;
    return rc;
}

static int compile_perm(comp_t *c, const pb_perm_t *p, rnode_t *out)
{
    if (p == NULL)
        return failf(c, "a permission is required");
    if (++c->depth > RBAC_MAX_DEPTH)
        return failf(c, "nested deeper than %d levels", RBAC_MAX_DEPTH);
    int rc = 0;
    switch (p->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        rc = compile_perm_set(c, p->and_rules, "and_rules", RN_AND, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        rc = compile_perm_set(c, p->or_rules, "or_rules", RN_OR, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        if (!p->any)
            rc = failf(c, "any: must be true");
        out->kind = RN_ANY;
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        rc = compile_header_node(c, p->header, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        rc = compile_url_path(c, p->url_path, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        rc = compile_ip(c, "destination_ip", p->destination_ip, RN_DST_IP, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        out->kind = RN_DST_PORT;
        out->u.port = p->destination_port;
        break;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE: {
        const Envoy__Type__V3__Int32Range *r = p->destination_port_range;
        if (r == NULL || r->start < 0 || r->start > 65536 || r->end < 0 || r->end > 65536) {
            size_t old = path_push(c, ".destination_port_range");
            rc = failf(c, "start and end must lie in [0, 65536]");
            path_pop(c, old);
            break;
        }
        out->kind = RN_DST_PORT_RANGE;
        out->u.range.start = r->start;
        out->u.range.end = r->end;
        break;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_METADATA: {
        size_t old = path_push(c, ".metadata");
        rc = compile_metadata(c, p->metadata, out);
        path_pop(c, old);
        break;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE: {
        rnode_t *in = arena_alloc(c->a, sizeof(*in));
        size_t old = path_push(c, ".not_rule");
        rc = compile_perm(c, p->not_rule, in);
        path_pop(c, old);
        out->kind = RN_NOT;
        out->u.inner = in;
        break;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME: {
        px_str_match_t *m = arena_alloc(c->a, sizeof(*m));
        size_t old = path_push(c, ".requested_server_name");
        rc = compile_str(c, p->requested_server_name, m);
        path_pop(c, old);
        out->kind = RN_SNI;
        out->u.str = m;
        break;
    }
    default:
        if (unknown_tag(&p->base))
            rc = failf(c, "unsupported permission matcher (field %u)", unknown_tag(&p->base));
        else
            rc = failf(c, "no permission rule set");
        break;
    }
    c->depth--;
    return rc;
}

static int compile_princ(comp_t *c, const pb_princ_t *p, rnode_t *out)
{
    if (p == NULL)
        return failf(c, "a principal is required");
    if (++c->depth > RBAC_MAX_DEPTH)
        return failf(c, "nested deeper than %d levels", RBAC_MAX_DEPTH);
    int rc = 0;
    switch (p->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        rc = compile_princ_set(c, p->and_ids, "and_ids", RN_AND, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        rc = compile_princ_set(c, p->or_ids, "or_ids", RN_OR, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        if (!p->any)
            rc = failf(c, "any: must be true");
        out->kind = RN_ANY;
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED: {
        out->kind = RN_AUTHENTICATED;
        out->u.str = NULL;
        if (p->authenticated && p->authenticated->principal_name) {
            px_str_match_t *m = arena_alloc(c->a, sizeof(*m));
            size_t old = path_push(c, ".authenticated.principal_name");
            rc = compile_str(c, p->authenticated->principal_name, m);
            path_pop(c, old);
            out->u.str = m;
        }
        break;
    }
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        rc = compile_ip(c, "source_ip", p->source_ip, RN_DIRECT_IP, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        rc = compile_ip(c, "direct_remote_ip", p->direct_remote_ip, RN_DIRECT_IP, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        rc = compile_ip(c, "remote_ip", p->remote_ip, RN_REMOTE_IP, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        rc = compile_header_node(c, p->header, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        rc = compile_url_path(c, p->url_path, out);
        break;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA: {
        size_t old = path_push(c, ".metadata");
        rc = compile_metadata(c, p->metadata, out);
        path_pop(c, old);
        break;
    }
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID: {
        rnode_t *in = arena_alloc(c->a, sizeof(*in));
        size_t old = path_push(c, ".not_id");
        rc = compile_princ(c, p->not_id, in);
        path_pop(c, old);
        out->kind = RN_NOT;
        out->u.inner = in;
        break;
    }
    default:
        if (unknown_tag(&p->base))
            rc = failf(c, "unsupported principal matcher (field %u)", unknown_tag(&p->base));
        else
            rc = failf(c, "no principal identifier set");
        break;
    }
    c->depth--;
    return rc;
}

static int compile_policy(comp_t *c, const pb_policy_t *p, rpolicy_t *out)
{
    if (p == NULL)
        return failf(c, "permissions: at least one permission is required");
    uint32_t tag = unknown_tag(&p->base);
    if (tag == 3 || tag == 4)
        return failf(c, "%s: CEL conditions are not supported",
                     tag == 3 ? "condition" : "checked_condition");
    if (tag)
        return failf(c, "field %u: not supported", tag);
    if (p->n_permissions == 0)
        return failf(c, "permissions: at least one permission is required");
    if (p->n_principals == 0)
        return failf(c, "principals: at least one principal is required");

    rnode_t *perms = arena_alloc(c->a, p->n_permissions * sizeof(*perms));
    for (size_t i = 0; i < p->n_permissions; i++) {
        size_t old = path_push(c, "permissions[%zu]", i);
        int rc = compile_perm(c, p->permissions[i], &perms[i]);
        path_pop(c, old);
        if (rc < 0)
            return -1;
    }
    rnode_t *princs = arena_alloc(c->a, p->n_principals * sizeof(*princs));
    for (size_t i = 0; i < p->n_principals; i++) {
        size_t old = path_push(c, "principals[%zu]", i);
        int rc = compile_princ(c, p->principals[i], &princs[i]);
        path_pop(c, old);
        if (rc < 0)
            return -1;
    }
    if (p->n_permissions == 1) {
        out->perms = perms[0];
    } else {
        out->perms.kind = RN_OR;
        out->perms.u.set.v = perms;
        out->perms.u.set.n = p->n_permissions;
    }
    if (p->n_principals == 1) {
        out->princs = princs[0];
    } else {
        out->princs.kind = RN_OR;
        out->princs.u.set.v = princs;
        out->princs.u.set.n = p->n_principals;
    }
    return 0;
}

static const char *entry_key(const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *e)
{
    return e && e->key ? e->key : "";
}

static int compile_rules(comp_t *c, const ProtobufCMessage *msg, rrules_t *out)
{
    if (msg->descriptor != &envoy__config__rbac__v3__rbac__descriptor)
        return failf(c, "not an envoy.config.rbac.v3.RBAC message");
    const pb_rbac_t *r = (const pb_rbac_t *)msg;
    switch (r->action) {
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW:
        out->action = PX_RBAC_ALLOW;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY:
        out->action = PX_RBAC_DENY;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG:
        out->action = PX_RBAC_LOG;
        break;
    default:
        path_push(c, "action");
        return failf(c, "unknown action %d", (int)r->action);
    }

    /* Envoy keeps policies in a map ordered by name (a repeated key: the
     * last one wins) and reports the first that matches. */
    size_t n = r->n_policies;
    size_t *order = arena_alloc(c->a, (n ? n : 1) * sizeof(*order));
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 &&
               strcmp(entry_key(r->policies[order[j - 1]]), entry_key(r->policies[i])) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    out->v = arena_alloc(c->a, (n ? n : 1) * sizeof(*out->v));
    out->n = 0;
    for (size_t k = 0; k < n; k++) {
        const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *e = r->policies[order[k]];
        /* equal names stay in arrival order: keep the last of a run */
        if (k + 1 < n && strcmp(entry_key(e), entry_key(r->policies[order[k + 1]])) == 0)
            continue;
        rpolicy_t *p = &out->v[out->n];
        p->name = arena_strdup(c->a, entry_key(e));
        c->policy = p->name;
        if (compile_policy(c, e ? e->value : NULL, p) < 0)
            return -1;
        c->policy = NULL;
        out->n++;
    }
    return 0;
}

px_rbac_t *px_rbac_compile(arena_t *a, const ProtobufCMessage *msg, const ProtobufCMessage *shadow,
                           const char *stat_prefix, int (*keep_re)(void *ud, pcre2_code *re),
                           void *ud, char *err, size_t errlen)
{
    comp_t c = {.a = a, .keep_re = keep_re, .ud = ud, .err = err, .errlen = errlen, .set = ""};
    if (errlen)
        err[0] = '\0';
    px_rbac_t *r = arena_alloc(a, sizeof(*r));
    r->stat_prefix = arena_strdup(a, stat_prefix ? stat_prefix : "");
    r->rules.action = PX_RBAC_ALLOW;
    if (msg) {
        if (compile_rules(&c, msg, &r->rules) < 0)
            return NULL;
        r->has_rules = true;
    }
    if (shadow) {
        c.set = "shadow_rules ";
        if (compile_rules(&c, shadow, &r->shadow) < 0)
            return NULL;
        r->has_shadow = true;
    }
    return r;
}

px_rbac_action_t px_rbac_action(const px_rbac_t *r)
{
    return r->rules.action;
}

const char *px_rbac_stat_prefix(const px_rbac_t *r)
{
    return r->stat_prefix;
}

/* ---- evaluating ---- */

typedef enum { M_NO = 0, M_YES = 1, M_UNSURE = 2 } m_t;

static m_t regex_eval(const pcre2_code *re, const char *s, size_t n)
{
    int r = px_regex_eval(re, s, n);
    return r == 1 ? M_YES : r == 0 ? M_NO : M_UNSURE;
}

static m_t str_eval(const px_str_match_t *m, const char *s, size_t n)
{
    if (s == NULL)
        s = "";
    if (m->kind == PX_STR_REGEX)
        return regex_eval(m->re, s, n); /* bounded, allocation-free, three-valued */
    return px_str_match(m, s, n) ? M_YES : M_NO;
}

/* The request's value for header `name`: 1 found, 0 absent, -1 the joined
 * values of a repeated header do not fit buf. */
static int header_get(const px_rbac_attrs_t *a, const char *name, const char **v, size_t *vl,
                      char *buf, size_t cap)
{
    if (!a->http)
        return 0; /* a TCP connection has no headers */
    if (strcmp(name, ":method") == 0) {
        *v = a->method;
        *vl = a->method_len;
        return a->method != NULL;
    }
    if (strcmp(name, ":path") == 0) {
        *v = a->path;
        *vl = a->path_len;
        return a->path != NULL;
    }
    if (strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0) {
        if (a->host) {
            *v = a->host;
            *vl = a->host_len;
            return 1;
        }
        name = "host"; /* not given apart: the Host header, if any */
    }
    size_t count = 0, len = 0;
    for (size_t i = 0; i < a->nheaders; i++) {
        const px_h1_header_t *h = &a->headers[i];
        if (!px_h1_ieq(h->name, h->name_len, name))
            continue;
        if (count == 0) {
            *v = h->value;
            *vl = h->value_len;
        } else {
            /* Envoy matches a repeated header as its values joined with ',' */
            if (count == 1) {
                if (*vl > cap)
                    return -1;
                memcpy(buf, *v, *vl);
                len = *vl;
            }
            if (h->value_len + 1 > cap - len)
                return -1;
            buf[len++] = ',';
            memcpy(buf + len, h->value, h->value_len);
            len += h->value_len;
        }
        count++;
    }
    if (count > 1) {
        *v = buf;
        *vl = len;
    }
    return count > 0;
}

/* absl::SimpleAtoi as Envoy's range_match reads a value. */
static bool parse_i64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    if (i == n)
        return false;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (lim - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return true;
}

/* Not inlined: its join buffer stays out of node_eval's recursive frames. */
__attribute__((noinline)) static m_t header_eval(const rn_header_t *h, const px_rbac_attrs_t *a)
{
    char buf[RBAC_JOIN_MAX];
    const char *v = NULL;
    size_t vl = 0;
    int have = header_get(a, h->h.name, &v, &vl, buf, sizeof(buf));
    if (have < 0)
        return M_UNSURE;
    bool present_kind = h->h.m.kind == PX_STR_PRESENT && !h->range;
    if (!have && !h->missing_empty) {
        /* Envoy: an absent header only ever matches a presence test */
        bool ok = present_kind && (h->h.invert ? h->h.present : !h->h.present);
        return ok ? M_YES : M_NO;
    }
    if (!have) {
        v = "";
        vl = 0;
    }
    m_t r;
    if (h->range) {
        int64_t x;
        r = parse_i64(v, vl, &x) && x >= h->start && x < h->end ? M_YES : M_NO;
    } else if (present_kind) {
        r = h->h.present ? M_YES : M_NO;
    } else {
        r = str_eval(&h->h.m, v, vl);
    }
    if (r == M_UNSURE)
        return M_UNSURE;
    return (r == M_YES) != h->h.invert ? M_YES : M_NO;
}

static m_t url_path_eval(const px_str_match_t *m, const px_rbac_attrs_t *a)
{
    if (!a->http || a->path == NULL)
        return M_NO;
    size_t n = 0;
    while (n < a->path_len && a->path[n] != '?' && a->path[n] != '#')
        n++;
    return str_eval(m, a->path, n);
}

static m_t cidr_eval(const px_cidr_t *c, const struct sockaddr *sa)
{
    if (sa && sa->sa_family == AF_INET6 && c->family == AF_INET) {
        /* an IPv4 client on a dual-stack socket: ::ffff:a.b.c.d */
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (!IN6_IS_ADDR_V4MAPPED(a6))
            return M_NO;
        struct sockaddr_in v4 = {.sin_family = AF_INET};
        memcpy(&v4.sin_addr, a6->s6_addr + 12, 4);
        return px_cidr_contains(c, (const struct sockaddr *)&v4) ? M_YES : M_NO;
    }
    return px_cidr_contains(c, sa) ? M_YES : M_NO;
}

static bool local_port(const struct sockaddr *sa, uint32_t *port)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET)
        *port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    else if (sa->sa_family == AF_INET6)
        *port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    else
        return false;
    return true;
}

static m_t node_eval(const rnode_t *n, const px_rbac_attrs_t *a)
{
    switch (n->kind) {
    case RN_ANY:
        return M_YES;
    case RN_CONST:
        return n->u.konst ? M_YES : M_NO;
    case RN_AND: {
        m_t r = M_YES;
        for (size_t i = 0; i < n->u.set.n; i++) {
            m_t k = node_eval(&n->u.set.v[i], a);
            if (k == M_NO)
                return M_NO;
            if (k == M_UNSURE)
                r = M_UNSURE;
        }
        return r;
    }
    case RN_OR: {
        m_t r = M_NO;
        for (size_t i = 0; i < n->u.set.n; i++) {
            m_t k = node_eval(&n->u.set.v[i], a);
            if (k == M_YES)
                return M_YES;
            if (k == M_UNSURE)
                r = M_UNSURE;
        }
        return r;
    }
    case RN_NOT: {
        m_t k = node_eval(n->u.inner, a);
        return k == M_UNSURE ? M_UNSURE : k == M_YES ? M_NO : M_YES;
    }
    case RN_HEADER:
        return header_eval(n->u.hdr, a);
    case RN_URL_PATH:
        return url_path_eval(n->u.str, a);
    case RN_DST_IP:
        return cidr_eval(&n->u.cidr, a->local);
    case RN_DIRECT_IP:
        return cidr_eval(&n->u.cidr, a->peer);
    case RN_REMOTE_IP:
        return cidr_eval(&n->u.cidr, a->remote ? a->remote : a->peer);
    case RN_DST_PORT: {
        uint32_t p;
        return local_port(a->local, &p) && p == n->u.port ? M_YES : M_NO;
    }
    case RN_DST_PORT_RANGE: {
        uint32_t p;
        return local_port(a->local, &p) && (int64_t)p >= n->u.range.start &&
                       (int64_t)p < n->u.range.end
                   ? M_YES
                   : M_NO;
    }
    case RN_SNI: {
        const char *s = a->sni ? a->sni : "";
        return str_eval(n->u.str, s, strlen(s));
    }
    case RN_AUTHENTICATED:
        if (a->principal == NULL || !a->principal[0])
            return M_NO; /* plaintext: no peer identity */
        return n->u.str ? str_eval(n->u.str, a->principal, strlen(a->principal)) : M_YES;
    }
    return M_NO;
}

static m_t policy_eval(const rpolicy_t *p, const px_rbac_attrs_t *a)
{
    m_t perm = node_eval(&p->perms, a);
    if (perm == M_NO)
        return M_NO;
    m_t princ = node_eval(&p->princs, a);
    if (princ == M_NO)
        return M_NO;
    return perm == M_YES && princ == M_YES ? M_YES : M_UNSURE;
}

static void rules_eval(const rrules_t *r, const px_rbac_attrs_t *a, bool *allowed,
                       const char **policy)
{
    const char *hit = NULL, *unsure = NULL;
    for (size_t i = 0; i < r->n && hit == NULL; i++) {
        m_t m = policy_eval(&r->v[i], a);
        if (m == M_YES)
            hit = r->v[i].name;
        else if (m == M_UNSURE && unsure == NULL)
            unsure = r->v[i].name;
    }
    switch (r->action) {
    case PX_RBAC_ALLOW:
        *allowed = hit != NULL;
        *policy = hit;
        break;
    case PX_RBAC_DENY:
        *allowed = hit == NULL && unsure == NULL;
        *policy = hit ? hit : unsure;
        break;
    case PX_RBAC_LOG:
        *allowed = true;
        *policy = hit;
        break;
    }
}

void px_rbac_eval(const px_rbac_t *r, const px_rbac_attrs_t *a, px_rbac_result_t *out)
{
    out->allowed = true;
    out->policy = NULL;
    out->shadow_allowed = true;
    out->shadow_policy = NULL;
    if (r->has_rules)
        rules_eval(&r->rules, a, &out->allowed, &out->policy);
    if (r->has_shadow)
        rules_eval(&r->shadow, a, &out->shadow_allowed, &out->shadow_policy);
}
