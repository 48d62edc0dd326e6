/*
 * Semantic rules of the networking.istio.io kinds (Gateway, VirtualService,
 * DestinationRule, ServiceEntry, Sidecar): the checks Istio's validating
 * webhook and its CRD schema rules make, on the structs the decoder built.
 * Field types, unknown fields, required fields, enum values and one-of groups
 * are already enforced by the decoder.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_internal.h"

/* ------------------------------------------------------------------ */
/* path helpers                                                        */

static const char *obj_namespace(const cfg_vctx_t *v)
{
    return v->obj != NULL && v->obj->namespace != NULL ? v->obj->namespace : "";
}

#define HAS(p, M, f) ((p) != NULL && CFG_HAS(p, M, f))
#define NS_PER_MS CFG_NS_PER_MS

/* ------------------------------------------------------------------ */
/* value rules                                                         */

/* A duration the proxy accepts: at least 1ms, whole milliseconds. */
static void check_duration(cfg_vctx_t *v, const char *field, int64_t ns)
{
    if (ns < NS_PER_MS)
        cfg_check_duration_min(v, field, ns, NS_PER_MS);
    else if (ns % NS_PER_MS != 0)
        cfg_verr(v, field, "only whole milliseconds are supported");
}

static void check_port(cfg_vctx_t *v, const char *field, int64_t port)
{
    if (!cfg_is_port(port))
        cfg_verr(v, field, "port must be between 1-65535, got %lld", (long long)port);
}

/* A Percent message: 0, or between 0.0001 and 100. */
static void check_percentage(cfg_vctx_t *v, const char *field, const cfg_Percent *p)
{
    if (p == NULL)
        return;
    if (p->value < 0.0 || p->value > 100.0 || (p->value > 0.0 && p->value < 0.0001))
        cfg_verr(v, field, "percentage %g must be 0 or between 0.0001 and 100", p->value);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The path of a unix:// address: absolute, or an abstract socket (@name). */
static void check_unix_address(cfg_vctx_t *v, const char *field, const char *path)
{
    if (path[0] == '\0')
        cfg_verr(v, field, "unix socket path must not be empty");
    else if (path[0] == '@')
        return;
    else if (path[0] != '/' || path[strlen(path) - 1] == '/')
        cfg_verr(v, field, "\"%s\" is not an absolute path to a socket file", path);
}

/* ------------------------------------------------------------------ */
/* host names                                                          */

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool dns_label(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !alnum(s[0]) || !alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool dns_label_lower(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return false;
    return true;
}

/*
 * Istio's domain rule with wildcards: the first label may be "*", or a label
 * prefixed with "*" or "*-" ("*.example.com", "*x.example.com"); the other
 * labels are DNS labels and the last one is not all digits.
 */
static bool wildcard_domain(const char *host, const char **why)
{
    size_t len = strlen(host);
    if (len == 0) {
        *why = "host must not be empty";
        return false;
    }
    if (len > 255) {
        *why = "host is longer than 255 characters";
        return false;
    }
    const char *dot = strchr(host, '.');
    size_t n = dot ? (size_t)(dot - host) : len;
    const char *label = host;
    if (n == 1 && host[0] == '*') {
        /* the whole first label is a wildcard */
    } else {
        if (host[0] == '*') {
            label++, n--;
            if (n > 0 && *label == '-')
                label++, n--;
        }
        if (!dns_label(label, n)) {
            *why = "the first label must be a DNS label, optionally prefixed with \"*\"";
            return false;
        }
    }
    if (dot == NULL)
        return true;
    const char *rest = dot + 1;
    if (rest[0] == '\0')
        return true; /* "name." : an absolute single-label name */
    if (!cfg_is_fqdn(rest, why))
        return false;
    /* the top-level label may not be all digits (that would be an IP address) */
    size_t rl = strlen(rest);
    if (rest[rl - 1] == '.')
        rl--;
    size_t start = rl;
    while (start > 0 && rest[start - 1] != '.')
        start--;
    bool digits = start < rl;
    for (size_t i = start; i < rl; i++)
        if (rest[i] < '0' || rest[i] > '9')
            digits = false;
    if (digits) {
        *why = "the top-level domain must not be all digits";
        return false;
    }
    return true;
}

/* An FQDN in Istio's sense: a domain without wildcard. */
static bool fqdn(const char *host, const char **why)
{
    if (strchr(host, '*') != NULL) {
        *why = "wildcards are not allowed here";
        return false;
    }
    return wildcard_domain(host, why);
}

static bool partial_wildcard(const char *host)
{
    return strchr(host, '*') != NULL && strcmp(host, "*") != 0 && !has_prefix(host, "*.");
}

/* host a covers host b (Istio's Name.Matches): equal, or within a's wildcard. */
static bool host_matches(const char *a, const char *b)
{
    bool aw = a[0] == '*', bw = b[0] == '*';
    size_t la = strlen(a), lb = strlen(b);
    if (aw && bw) {
        const char *sa = a + 1, *sb = b + 1;
        if (la < lb)
            return lb - 1 >= la - 1 && strcmp(sb + (lb - la), sa) == 0;
        return strcmp(sa + (la - lb), sb) == 0;
    }
    if (aw)
        return lb >= la - 1 && strcmp(b + lb - (la - 1), a + 1) == 0;
    if (bw)
        return la >= lb - 1 && strcmp(a + la - (lb - 1), b + 1) == 0;
    return strcmp(a, b) == 0;
}

/* host n is included in host o (Istio's Name.SubsetOf). */
static bool host_subset_of(const char *n, const char *o)
{
    if (strcmp(n, o) == 0)
        return true;
    size_t ln = strlen(n), lo = strlen(o);
    if (n[0] == '*') {
        if (o[0] != '*' || ln < lo)
            return false;
        return strcmp(n + 1 + (ln - lo), o + 1) == 0;
    }
    if (o[0] == '*')
        return ln >= lo - 1 && strcmp(n + ln - (lo - 1), o + 1) == 0;
    return false;
}

/*
 * "namespace/host" of Gateway servers (gateway = true; the namespace part may
 * be left out) and Sidecar egress listeners: the namespace is "*", ".", "~"
 * (sidecars only) or a namespace name; the host is "*" or a dotted name with
 * an optional leading "*." (an IP address too on gateways).
 */
static void check_ns_host(cfg_vctx_t *v, const char *s, bool gateway)
{
    const char *slash = strchr(s, '/');
    const char *host = s;
    if (slash == NULL) {
        if (!gateway) {
            cfg_verr(v, NULL, "host \"%s\" must be of the form namespace/host, such as \"*/%s\"", s,
                     s);
            return;
        }
    } else {
        size_t n = (size_t)(slash - s);
        host = slash + 1;
        if (n == 0 || *host == '\0') {
            cfg_verr(v, NULL, "host \"%s\": the namespace and the host must not be empty", s);
            return;
        }
        bool ok = (n == 1 && (s[0] == '*' || s[0] == '.' || (s[0] == '~' && !gateway)));
        if (!ok) {
            char ns[64];
            ok = n < sizeof(ns);
            if (ok) {
                memcpy(ns, s, n);
                ns[n] = '\0';
                ok = cfg_is_dns1123_label(ns);
            }
        }
        if (!ok)
            cfg_verr(
                v, NULL,
                "host \"%s\": invalid namespace \"%.*s\" (use a namespace name, \"*\" or \".\"%s)",
                s, (int)n, s, gateway ? "" : ", or \"~\"");
    }
    const char *why = NULL;
    if (strcmp(host, "*") != 0 && strchr(host, '.') == NULL) {
        cfg_verr(v, NULL, "host \"%s\": short names are not allowed, use a fully qualified name",
                 host);
        return;
    }
    if (partial_wildcard(host)) {
        cfg_verr(v, NULL,
                 "host \"%s\": a wildcard must be the whole host or its first label (\"*.\")",
                 host);
        return;
    }
    if (!wildcard_domain(host, &why) && !(gateway && cfg_is_ip(host)))
        cfg_verr(v, NULL, "host \"%s\" is invalid: %s", host, why);
}

/* Gateway references of a VirtualService: "mesh", "name", "namespace/name". */
static void check_gateway_names(cfg_vctx_t *v, const char *field, const cfg_strlist_t *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        const char *g = l->v[i];
        cfg_vmark_t p = cfg_venter(v, 0, ".%s[%u]", field, i);
        const char *slash = strchr(g, '/');
        const char *why = NULL;
        if (slash == NULL) {
            if (strchr(g, '.') != NULL) {
                const char *dot = strchr(g, '.');
                const char *end = strchr(dot + 1, '.');
                int nl = end ? (int)(end - dot - 1) : (int)strlen(dot + 1);
                cfg_vwarn(v, NULL,
                          "\"%s\" uses the legacy name.namespace form; prefer \"%.*s/%.*s\"", g, nl,
                          dot + 1, (int)(dot - g), g);
            }
            if (!fqdn(g, &why))
                cfg_verr(v, NULL, "invalid gateway name \"%s\": %s", g, why);
        } else {
            size_t n = (size_t)(slash - g);
            if (n == 0 || slash[1] == '\0') {
                cfg_verr(v, NULL, "\"%s\": the namespace and the gateway name must not be empty",
                         g);
            } else {
                if (n > 63 || !dns_label(g, n) || !dns_label_lower(g, n))
                    cfg_verr(v, NULL, "\"%s\": invalid namespace \"%.*s\"", g, (int)n, g);
                if (!cfg_is_dns1123_label(slash + 1))
                    cfg_verr(v, NULL, "\"%s\": invalid gateway name \"%s\"", g, slash + 1);
            }
        }
        cfg_vleave(v, p);
    }
}

/*
 * exportTo: ".", "*", a namespace name, or "~" (service entries only); no
 * duplicates ("." counts as the object's namespace), "*" and "~" alone.
 */
static void check_export_to(cfg_vctx_t *v, const cfg_strlist_t *l, bool service_entry,
                            bool dr_with_selector)
{
    if (l->n == 0)
        return;
    const char *ns = obj_namespace(v);
    bool has_all = false, has_none = false, beyond_own = false;
    for (uint32_t i = 0; i < l->n; i++) {
        const char *e = l->v[i];
        const char *key = strcmp(e, ".") == 0 ? ns : e;
        cfg_vmark_t p = cfg_venter(v, 0, ".exportTo[%u]", i);
        bool dup = false;
        for (uint32_t j = 0; j < i && !dup; j++) {
            const char *kj = strcmp(l->v[j], ".") == 0 ? ns : l->v[j];
            dup = strcmp(kj, key) == 0;
        }
        if (dup) {
            if (strcmp(key, e) != 0 || strcmp(e, ns) == 0)
                cfg_verr(v, NULL, "duplicate entry \"%s\" (\".\" is the namespace %s)", e, ns);
            else
                cfg_verr(v, NULL, "duplicate entry \"%s\"", e);
        } else if (strcmp(e, "*") == 0) {
            has_all = true;
        } else if (strcmp(e, "~") == 0) {
            if (service_entry)
                has_none = true;
            else
                cfg_verr(v, NULL,
                         "\"~\" (visible to no namespace) is only allowed on service entries");
        } else if (strcmp(e, ".") != 0 && !cfg_is_dns1123_label(e)) {
            cfg_verr(v, NULL, "\"%s\" must be \".\", \"*\" or a namespace name", e);
        }
        if (strcmp(key, ns) != 0)
            beyond_own = true;
        cfg_vleave(v, p);
    }
    if (has_all && l->n > 1)
        cfg_verr(v, "exportTo", "\"*\" (all namespaces) cannot be combined with other entries");
    if (has_none && l->n > 1)
        cfg_verr(v, "exportTo", "\"~\" (no namespace) cannot be combined with other entries");
    if (dr_with_selector && (beyond_own || l->n > 1))
        cfg_verr(v, "exportTo",
                 "a destination rule with a workloadSelector can only be exported to "
                 "its own namespace");
}

/* Label selectors of Sidecar and ServiceEntry (workloadSelector.labels) and
 * DestinationRule (workloadSelector.matchLabels): no empty key, no wildcard. */
static void check_selector_labels(cfg_vctx_t *v, const char *field, const cfg_map_t *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        const cfg_mapent_t *e = &m->v[i];
        const char *val = e->str ? e->str : "";
        cfg_vmark_t p = cfg_venter(v, 0, ".%s[%s]", field, e->key);
        if (e->key[0] == '\0')
            cfg_verr(v, NULL, "an empty key is not supported in a selector");
        if (strchr(e->key, '*') != NULL || strchr(val, '*') != NULL)
            cfg_verr(v, NULL, "wildcard is not supported in selector: \"%s=%s\"", e->key, val);
        else if (strlen(val) > 63)
            cfg_verr(v, NULL, "label value must be at most 63 characters");
        cfg_vleave(v, p);
    }
    if (m->n == 0)
        cfg_vwarn(v, field, "selector has no labels: it selects every workload of the namespace");
}

/* ------------------------------------------------------------------ */
/* protocols                                                           */

static bool proto_is(const char *p, const char *const *names)
{
    for (; *names; names++)
        if (strcasecmp(p, *names) == 0)
            return true;
    return false;
}

static bool proto_http(const char *p)
{
    static const char *const n[] = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", NULL};
    return p != NULL && proto_is(p, n);
}

static bool proto_tls(const char *p)
{
    static const char *const n[] = {"HTTPS", "TLS", NULL};
    return p != NULL && proto_is(p, n);
}

static bool proto_tcp(const char *p)
{
    static const char *const n[] = {"TCP", "HTTPS", "TLS", "MONGO", "REDIS", "MYSQL", NULL};
    return p != NULL && proto_is(p, n);
}

/* Istio's own spelling of a protocol, or empty for detection. */
static void check_protocol(cfg_vctx_t *v, const char *field, const char *p)
{
    if (p != NULL && p[0] != '\0' && !cfg_is_protocol(p))
        cfg_verr(v, field,
                 "unsupported protocol \"%s\" (use HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, "
                 "MONGO, MYSQL, REDIS or UDP)",
                 p);
}

/* ------------------------------------------------------------------ */
/* HTTP headers                                                        */

static bool header_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!alnum(*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

/* "@request.auth.claims.name" or "@request.auth.claims[a][b]": routing on a JWT claim. */
static bool jwt_claim_key(const char *k)
{
    const char *pre = "@request.auth.claims";
    if (!has_prefix(k, pre))
        return false;
    k += strlen(pre);
    if (*k == '.')
        return k[1] != '\0';
    if (*k != '[')
        return false;
    while (*k == '[') {
        const char *end = strchr(k, ']');
        if (end == NULL || end == k + 1)
            return false;
        k = end + 1;
    }
    return *k == '\0';
}

static bool authority_header(const char *h)
{
    return strcasecmp(h, ":authority") == 0 || strcasecmp(h, "host") == 0;
}

/* Header values: no control characters; '%' starts a %VARIABLE% or is doubled. */
static void check_header_value(cfg_vctx_t *v, const char *val)
{
    for (const char *p = val; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            cfg_verr(v, NULL, "header value must not contain control characters");
            return;
        }
    }
    for (const char *p = val; *p; p++) {
        if (*p != '%')
            continue;
        if (p[1] == '%') {
            p++;
            continue;
        }
        const char *end = strchr(p + 1, '%');
        if (end == NULL || end == p + 1 || !(p[1] >= 'A' && p[1] <= 'Z')) {
            cfg_verr(
                v, NULL,
                "invalid '%%' in header value \"%s\": write %%%% for a literal %%, or %%VARIABLE%%",
                val);
            return;
        }
        p = end;
    }
}

/* request = true: a request header operation, where the authority may be set. */
static void check_header_ops(cfg_vctx_t *v, const cfg_HeaderOperations *h, bool request)
{
    if (h == NULL)
        return;
    const cfg_map_t *maps[2] = {&h->set, &h->add};
    const char *names[2] = {"set", "add"};
    for (int m = 0; m < 2; m++) {
        for (uint32_t i = 0; i < maps[m]->n; i++) {
            const cfg_mapent_t *e = &maps[m]->v[i];
            cfg_vmark_t p = cfg_venter(v, 0, ".%s[%s]", names[m], e->key);
            if (e->key[0] == '\0')
                cfg_verr(v, NULL, "header name must not be empty");
            else if (request && authority_header(e->key))
                ; /* rewriting the authority is allowed on requests */
            else if (!request && strcasecmp(e->key, "host") == 0)
                cfg_verr(v, NULL, "the Host header cannot be set");
            else if (e->key[0] == ':' || strcasecmp(e->key, "host") == 0)
                cfg_verr(v, NULL, "header \"%s\" cannot be changed (pseudo-header)", e->key);
            if (e->str != NULL)
                check_header_value(v, e->str);
            cfg_vleave(v, p);
        }
    }
    for (uint32_t i = 0; i < h->remove.n; i++) {
        const char *k = h->remove.v[i];
        cfg_vmark_t p = cfg_venter(v, 0, ".remove[%u]", i);
        if (k[0] == '\0')
            cfg_verr(v, NULL, "header name must not be empty");
        else if (k[0] == ':' || strcasecmp(k, "host") == 0)
            cfg_verr(v, NULL, "header \"%s\" cannot be removed", k);
        cfg_vleave(v, p);
    }
}

static void check_headers(cfg_vctx_t *v, const cfg_Headers *h)
{
    if (h == NULL)
        return;
    cfg_vmark_t p = cfg_venter(v, h->_line, ".headers");
    if (h->request != NULL) {
        cfg_vmark_t q = cfg_venter(v, h->request->_line, ".request");
        check_header_ops(v, h->request, true);
        cfg_vleave(v, q);
    }
    if (h->response != NULL) {
        cfg_vmark_t q = cfg_venter(v, h->response->_line, ".response");
        check_header_ops(v, h->response, false);
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

/* ------------------------------------------------------------------ */
/* string matches                                                      */

static void check_regex(cfg_vctx_t *v, const char *field, const char *re)
{
    char why[200];
    if (re[0] == '\0')
        cfg_verr(v, field, "regex must not be empty");
    else if (strlen(re) > 1024)
        cfg_verr(v, field, "regex is longer than 1024 characters");
    else if (!cfg_is_regex(re, why, sizeof(why)))
        cfg_verr(v, field, "%s", why);
}

/* A StringMatch at the current path + field; empty_prefix_ok for URIs. */
static void check_string_match(cfg_vctx_t *v, const char *fmt_field, const cfg_StringMatch *m,
                               bool empty_prefix_ok)
{
    if (m == NULL)
        return;
    cfg_vmark_t p = cfg_venter(v, m->_line, "%s", fmt_field);
    if (CFG_HAS(m, StringMatch, prefix) && m->prefix[0] == '\0' && !empty_prefix_ok)
        cfg_verr(v, "prefix", "prefix must not be empty");
    if (CFG_HAS(m, StringMatch, regex))
        check_regex(v, "regex", m->regex);
    cfg_vleave(v, p);
}

/* ------------------------------------------------------------------ */
/* destinations                                                        */

static void check_destination(cfg_vctx_t *v, const cfg_Destination *d)
{
    const char *why = NULL;
    if (d->host == NULL || d->host[0] == '\0')
        cfg_verr(v, "host", "destination host is required");
    else if (strcmp(d->host, "*") == 0)
        cfg_verr(v, "host", "\"*\" is not a valid destination host");
    else if (!wildcard_domain(d->host, &why))
        cfg_verr(v, "host", "\"%s\" is not a valid host: %s", d->host, why);
    if (HAS(d, Destination, subset) && !cfg_is_dns1123_label(d->subset))
        cfg_verr(v, "subset", "\"%s\" is not a valid subset name (a DNS label)", d->subset);
    if (d->port != NULL)
        check_port(v, "port.number", d->port->number);
}

static void check_destination_at(cfg_vctx_t *v, const char *field, const cfg_Destination *d)
{
    if (d == NULL)
        return;
    cfg_vmark_t p = cfg_venter(v, d->_line, ".%s", field);
    check_destination(v, d);
    cfg_vleave(v, p);
}

/* ------------------------------------------------------------------ */
/* VirtualService                                                      */

static const char *const http_methods[] = {"GET",    "HEAD",    "POST",    "PUT",   "PATCH",
                                           "DELETE", "CONNECT", "OPTIONS", "TRACE", NULL};

static const char *const retry_on_policies[] = {"5xx",
                                                "gateway-error",
                                                "reset",
                                                "reset-before-request",
                                                "connect-failure",
                                                "retriable-4xx",
                                                "refused-stream",
                                                "retriable-status-codes",
                                                "retriable-headers",
                                                "envoy-ratelimited",
                                                "http3-post-connect-failure",
                                                "cancelled",
                                                "deadline-exceeded",
                                                "internal",
                                                "resource-exhausted",
                                                "unavailable",
                                                NULL};

static const char *const grpc_statuses[] = {"OK",
                                            "CANCELLED",
                                            "UNKNOWN",
                                            "INVALID_ARGUMENT",
                                            "DEADLINE_EXCEEDED",
                                            "NOT_FOUND",
                                            "ALREADY_EXISTS",
                                            "PERMISSION_DENIED",
                                            "RESOURCE_EXHAUSTED",
                                            "FAILED_PRECONDITION",
                                            "ABORTED",
                                            "OUT_OF_RANGE",
                                            "UNIMPLEMENTED",
                                            "INTERNAL",
                                            "UNAVAILABLE",
                                            "DATA_LOSS",
                                            "UNAUTHENTICATED",
                                            NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* A registered HTTP status code (the ones a retryOn list may name). */
static bool known_http_status(long c)
{
    return (c >= 100 && c <= 103) || (c >= 200 && c <= 208) || c == 226 || (c >= 300 && c <= 308) ||
           (c >= 400 && c <= 418) || (c >= 421 && c <= 426) || c == 428 || c == 429 || c == 431 ||
           c == 451 || (c >= 500 && c <= 508) || c == 510 || c == 511;
}

static void check_retry(cfg_vctx_t *v, const cfg_HTTPRetry *r)
{
    cfg_vmark_t p = cfg_venter(v, r->_line, ".retries");
    if (r->attempts < 0)
        cfg_verr(v, "attempts", "must be >= 0");
    if (r->attempts == 0 && (HAS(r, HTTPRetry, perTryTimeout) || (r->retryOn && r->retryOn[0]) ||
                             HAS(r, HTTPRetry, retryRemoteLocalities)))
        cfg_verr(v, "attempts",
                 "retry settings are given but attempts is 0, which disables retries");
    if (HAS(r, HTTPRetry, perTryTimeout))
        check_duration(v, "perTryTimeout", r->perTryTimeout);
    if (HAS(r, HTTPRetry, backoff))
        check_duration(v, "backoff", r->backoff);
    if (r->retryOn != NULL && r->retryOn[0] != '\0') {
        const char *s = r->retryOn;
        while (true) {
            const char *comma = strchr(s, ',');
            size_t n = comma ? (size_t)(comma - s) : strlen(s);
            char item[64];
            bool ok = false;
            if (n > 0 && n < sizeof(item)) {
                memcpy(item, s, n);
                item[n] = '\0';
                char *end = NULL;
                long code = strtol(item, &end, 10);
                ok = in_list(item, retry_on_policies) ||
                     (end != item && *end == '\0' && known_http_status(code));
            }
            if (!ok)
                cfg_verr(v, "retryOn", "\"%.*s\" is not a valid retry condition",
                         (int)(n > 60 ? 60 : n), s);
            if (comma == NULL)
                break;
            s = comma + 1;
        }
    }
    cfg_vleave(v, p);
}

static void check_fault(cfg_vctx_t *v, const cfg_HTTPFaultInjection *f)
{
    cfg_vmark_t p = cfg_venter(v, f->_line, ".fault");
    if (f->abort == NULL && f->delay == NULL)
        cfg_verr(v, NULL, "fault injection needs an abort, a delay, or both");
    if (f->delay != NULL) {
        const cfg_HTTPFaultInjectionDelay *d = f->delay;
        cfg_vmark_t q = cfg_venter(v, d->_line, ".delay");
        check_percentage(v, "percentage", d->percentage);
        if (HAS(d, HTTPFaultInjectionDelay, percent)) {
            if (d->percent < 0 || d->percent > 100)
                cfg_verr(v, "percent", "percentage %d is not between 0 and 100", d->percent);
            cfg_vwarn(v, "percent", "deprecated: use percentage.value");
        }
        if (HAS(d, HTTPFaultInjectionDelay, fixedDelay))
            check_duration(v, "fixedDelay", d->fixedDelay);
        else if (HAS(d, HTTPFaultInjectionDelay, exponentialDelay))
            cfg_verr(v, "exponentialDelay", "exponential delays are not supported; use fixedDelay");
        else
            cfg_verr(v, "fixedDelay", "a delay needs fixedDelay");
        cfg_vleave(v, q);
    }
    if (f->abort != NULL) {
        const cfg_HTTPFaultInjectionAbort *a = f->abort;
        cfg_vmark_t q = cfg_venter(v, a->_line, ".abort");
        check_percentage(v, "percentage", a->percentage);
        if (HAS(a, HTTPFaultInjectionAbort, httpStatus)) {
            if (a->httpStatus < 200 || a->httpStatus > 599)
                cfg_verr(v, "httpStatus", "HTTP status %d is not in range 200-599", a->httpStatus);
        } else if (HAS(a, HTTPFaultInjectionAbort, grpcStatus)) {
            if (!in_list(a->grpcStatus, grpc_statuses))
                cfg_verr(v, "grpcStatus",
                         "\"%s\" is not a gRPC status name such as \"UNAVAILABLE\"", a->grpcStatus);
        } else if (HAS(a, HTTPFaultInjectionAbort, http2Error)) {
            cfg_verr(v, "http2Error", "HTTP/2 error aborts are not supported; use httpStatus");
        } else {
            cfg_vwarn(v, NULL, "abort has no httpStatus or grpcStatus and does nothing");
        }
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

static void check_cors(cfg_vctx_t *v, const cfg_CorsPolicy *c)
{
    cfg_vmark_t p = cfg_venter(v, c->_line, ".corsPolicy");
    for (uint32_t i = 0; i < c->allowOrigins.n; i++) {
        const cfg_StringMatch *m = &c->allowOrigins.v[i];
        const char *val = m->exact ? m->exact : m->prefix ? m->prefix : m->regex;
        cfg_vmark_t q = cfg_venter(v, m->_line, ".allowOrigins[%u]", i);
        if (val == NULL || val[0] == '\0')
            cfg_verr(v, NULL, "an origin needs a non-empty exact, prefix or regex");
        else if (m->regex != NULL)
            check_regex(v, "regex", m->regex);
        cfg_vleave(v, q);
    }
    if (c->allowOrigin.n > 0)
        cfg_vwarn(v, "allowOrigin", "deprecated: use allowOrigins");
    for (uint32_t i = 0; i < c->allowMethods.n; i++)
        if (!in_list(c->allowMethods.v[i], http_methods)) {
            cfg_vmark_t q = cfg_venter(v, 0, ".allowMethods[%u]", i);
            cfg_verr(v, NULL, "\"%s\" is not a supported HTTP method", c->allowMethods.v[i]);
            cfg_vleave(v, q);
        }
    const cfg_strlist_t *lists[2] = {&c->allowHeaders, &c->exposeHeaders};
    const char *names[2] = {"allowHeaders", "exposeHeaders"};
    for (int l = 0; l < 2; l++)
        for (uint32_t i = 0; i < lists[l]->n; i++) {
            const char *h = lists[l]->v[i];
            if (strcmp(h, "*") != 0 && !header_token(h)) {
                cfg_vmark_t q = cfg_venter(v, 0, ".%s[%u]", names[l], i);
                cfg_verr(v, NULL, "\"%s\" is not a valid header name", h);
                cfg_vleave(v, q);
            }
        }
    if (HAS(c, CorsPolicy, maxAge)) {
        check_duration(v, "maxAge", c->maxAge);
        if (c->maxAge >= NS_PER_MS && c->maxAge % CFG_NS_PER_S != 0)
            cfg_verr(v, "maxAge", "only whole seconds are supported");
    }
    cfg_vleave(v, p);
}

static void check_redirect(cfg_vctx_t *v, const cfg_HTTPRedirect *r)
{
    cfg_vmark_t p = cfg_venter(v, r->_line, ".redirect");
    if (r->uri == NULL && r->authority == NULL && r->scheme == NULL && r->prefixRewrite == NULL &&
        !HAS(r, HTTPRedirect, port) && !HAS(r, HTTPRedirect, derivePort))
        cfg_verr(v, NULL, "a redirect must set uri, prefixRewrite, authority, scheme or port");
    if (HAS(r, HTTPRedirect, redirectCode) && (r->redirectCode < 300 || r->redirectCode > 399))
        cfg_verr(v, "redirectCode", "%u is not a redirect code (3xx)", r->redirectCode);
    if (r->scheme != NULL && strcmp(r->scheme, "http") != 0 && strcmp(r->scheme, "https") != 0)
        cfg_verr(v, "scheme", "must be \"http\" or \"https\"");
    if (HAS(r, HTTPRedirect, port))
        check_port(v, "port", r->port);
    if (r->uri != NULL && r->prefixRewrite != NULL)
        cfg_verr(v, NULL, "only one of uri and prefixRewrite may be set");
    cfg_vleave(v, p);
}

static void check_direct_response(cfg_vctx_t *v, const cfg_HTTPDirectResponse *d)
{
    cfg_vmark_t p = cfg_venter(v, d->_line, ".directResponse");
    if (d->status < 200 || d->status > 599)
        cfg_verr(v, "status", "HTTP status %u is not in range 200-599", d->status);
    if (d->body != NULL) {
        size_t size = 0;
        if (d->body->string != NULL)
            size = strlen(d->body->string);
        else if (d->body->bytes != NULL)
            size = strlen(d->body->bytes) / 4 * 3;
        if (size > 1024 * 1024)
            cfg_verr(v, "body", "a direct response body must be smaller than 1MB");
        else if (size > 100 * 1024)
            cfg_vwarn(v, "body", "large direct response bodies slow down configuration pushes");
    }
    cfg_vleave(v, p);
}

static void check_rewrite(cfg_vctx_t *v, const cfg_HTTPRewrite *r)
{
    cfg_vmark_t p = cfg_venter(v, r->_line, ".rewrite");
    if (r->uri != NULL && r->uriRegexRewrite != NULL)
        cfg_verr(v, NULL, "only one of uri and uriRegexRewrite may be set");
    if (r->uri == NULL && r->uriRegexRewrite == NULL && r->authority == NULL)
        cfg_verr(v, NULL, "a rewrite must set uri, uriRegexRewrite or authority");
    if (r->uriRegexRewrite != NULL) {
        const cfg_RegexRewrite *x = r->uriRegexRewrite;
        cfg_vmark_t q = cfg_venter(v, x->_line, ".uriRegexRewrite");
        if (x->match == NULL || x->match[0] == '\0')
            cfg_verr(v, "match", "required field is missing");
        else
            check_regex(v, "match", x->match);
        if (x->rewrite == NULL)
            cfg_verr(v, "rewrite", "required field is missing");
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

/* The authority may be rewritten in one place only. */
static void check_authority_rewrite(cfg_vctx_t *v, const cfg_HTTPRoute *h)
{
    int count = h->rewrite != NULL && h->rewrite->authority != NULL && h->rewrite->authority[0];
    const cfg_HeaderOperations *req = h->headers ? h->headers->request : NULL;
    if (req != NULL) {
        for (uint32_t i = 0; i < req->set.n; i++)
            count += authority_header(req->set.v[i].key);
        for (uint32_t i = 0; i < req->add.n; i++)
            count += authority_header(req->add.v[i].key);
    }
    if (count > 1)
        cfg_verr(v, NULL,
                 "the authority is rewritten more than once (rewrite.authority and a "
                 "Host/:authority header operation)");
}

static void check_http_match(cfg_vctx_t *v, const cfg_HTTPMatchRequest *m, bool gateway_bound)
{
    check_string_match(v, ".uri", m->uri, true);
    check_string_match(v, ".scheme", m->scheme, false);
    check_string_match(v, ".method", m->method, false);
    check_string_match(v, ".authority", m->authority, false);
    const cfg_map_t *maps[3] = {&m->headers, &m->withoutHeaders, &m->queryParams};
    const char *names[3] = {"headers", "withoutHeaders", "queryParams"};
    for (int k = 0; k < 3; k++) {
        for (uint32_t i = 0; i < maps[k]->n; i++) {
            const cfg_mapent_t *e = &maps[k]->v[i];
            const cfg_StringMatch *sm = e->msg;
            char field[160];
            snprintf(field, sizeof(field), ".%s[%s]", names[k], e->key);
            if (k < 2) {
                cfg_vmark_t p = cfg_venter(v, sm ? sm->_line : 0, "%s", field);
                if (jwt_claim_key(e->key)) {
                    if (!gateway_bound)
                        cfg_verr(v, NULL,
                                 "routing on a JWT claim (%s) is only supported on gateways",
                                 e->key);
                } else if (!header_token(e->key)) {
                    cfg_verr(v, NULL, "\"%s\" is not a valid header name", e->key);
                }
                cfg_vleave(v, p);
            }
            if (sm == NULL)
                continue;
            /* withoutHeaders: regex "*" means "header present" and is not a regex */
            if (k == 1 && sm->regex != NULL && strcmp(sm->regex, "*") == 0)
                continue;
            check_string_match(v, field, sm, false);
        }
    }
    if (HAS(m, HTTPMatchRequest, port))
        check_port(v, "port", m->port);
    cfg_check_labels(v, "sourceLabels", &m->sourceLabels);
    check_gateway_names(v, "gateways", &m->gateways);
    if (m->sourceNamespace != NULL && !cfg_is_dns1123_label(m->sourceNamespace))
        cfg_verr(v, "sourceNamespace", "\"%s\" is not a valid namespace name", m->sourceNamespace);
}

/* Weighted destinations of HTTP (http = true), TCP and TLS routes. */
static void check_route_destinations(cfg_vctx_t *v, const void *list, uint32_t n, bool http)
{
    int64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const cfg_Destination *d;
        int32_t weight;
        uint32_t line;
        const cfg_Headers *headers = NULL;
        if (http) {
            const cfg_HTTPRouteDestination *r = &((const cfg_HTTPRouteDestination *)list)[i];
            d = r->destination, weight = r->weight, line = r->_line, headers = r->headers;
        } else {
            const cfg_RouteDestination *r = &((const cfg_RouteDestination *)list)[i];
            d = r->destination, weight = r->weight, line = r->_line;
        }
        cfg_vmark_t p = cfg_venter(v, line, ".route[%u]", i);
        if (d == NULL)
            cfg_verr(v, "destination", "required field is missing");
        else
            check_destination_at(v, "destination", d);
        if (weight < 0)
            cfg_verr(v, "weight", "must be >= 0");
        else
            total += weight;
        check_headers(v, headers);
        cfg_vleave(v, p);
    }
    if (n > 1 && total == 0)
        cfg_verr(v, "route", "the weights of the destinations add up to 0");
}

static void check_http_route(cfg_vctx_t *v, const cfg_HTTPRoute *h, bool in_delegate,
                             bool gateway_bound)
{
    bool root = h->delegate != NULL && !in_delegate;

    /* what the rule does with the traffic */
    if (root) {
        if (h->redirect != NULL)
            cfg_verr(v, "redirect", "a rule with a delegate must not also redirect");
        if (h->route.n > 0)
            cfg_verr(v, "route", "a rule with a delegate must not also route");
        const cfg_Delegate *d = h->delegate;
        cfg_vmark_t p = cfg_venter(v, d->_line, ".delegate");
        if (d->name == NULL || d->name[0] == '\0')
            cfg_verr(v, "name", "required field is missing");
        else if (!cfg_is_dns1123_subdomain(d->name))
            cfg_verr(v, "name", "\"%s\" is not a valid virtual service name", d->name);
        if (d->namespace != NULL && !cfg_is_dns1123_label(d->namespace))
            cfg_verr(v, "namespace", "\"%s\" is not a valid namespace name", d->namespace);
        cfg_vleave(v, p);
    } else {
        if (in_delegate && h->delegate != NULL)
            cfg_verr(v, "delegate", "a delegate virtual service cannot delegate again");
        if (h->redirect != NULL) {
            if (h->route.n > 0)
                cfg_verr(v, NULL, "a rule cannot have both route and redirect");
            if (h->fault != NULL)
                cfg_verr(v, NULL, "a rule cannot have both fault and redirect");
            if (h->rewrite != NULL)
                cfg_verr(v, NULL, "a rule cannot have both rewrite and redirect");
            if (h->directResponse != NULL)
                cfg_verr(v, NULL, "a rule cannot have both redirect and directResponse");
        } else if (h->directResponse != NULL) {
            if (h->route.n > 0)
                cfg_verr(v, NULL, "a rule cannot have both route and directResponse");
            if (h->fault != NULL)
                cfg_verr(v, NULL, "a rule cannot have both fault and directResponse");
            if (h->rewrite != NULL)
                cfg_verr(v, NULL, "a rule cannot have both rewrite and directResponse");
        } else if (h->route.n == 0) {
            cfg_verr(v, NULL, "%s no route, redirect or directResponse: one is required",
                     h->match.n > 0 ? "rule has a match but" : "rule has");
        }
    }
    if (h->mirror != NULL && h->mirrors.n > 0)
        cfg_verr(v, NULL, "a rule cannot have both mirror and mirrors");

    for (uint32_t i = 0; i < h->match.n; i++) {
        cfg_vmark_t p = cfg_venter(v, h->match.v[i]._line, ".match[%u]", i);
        check_http_match(v, &h->match.v[i], gateway_bound);
        cfg_vleave(v, p);
    }
    check_route_destinations(v, h->route.v, h->route.n, true);
    if (h->redirect != NULL)
        check_redirect(v, h->redirect);
    if (h->directResponse != NULL)
        check_direct_response(v, h->directResponse);
    if (h->rewrite != NULL)
        check_rewrite(v, h->rewrite);
    check_authority_rewrite(v, h);
    if (HAS(h, HTTPRoute, timeout))
        check_duration(v, "timeout", h->timeout);
    if (h->retries != NULL)
        check_retry(v, h->retries);
    if (h->fault != NULL)
        check_fault(v, h->fault);
    check_destination_at(v, "mirror", h->mirror);
    for (uint32_t i = 0; i < h->mirrors.n; i++) {
        const cfg_HTTPMirrorPolicy *m = &h->mirrors.v[i];
        cfg_vmark_t p = cfg_venter(v, m->_line, ".mirrors[%u]", i);
        if (m->destination == NULL)
            cfg_verr(v, "destination", "required field is missing");
        else
            check_destination_at(v, "destination", m->destination);
        check_percentage(v, "percentage", m->percentage);
        cfg_vleave(v, p);
    }
    if (HAS(h, HTTPRoute, mirrorPercent)) {
        if (h->mirrorPercent > 100)
            cfg_verr(v, "mirrorPercent", "must be at most 100, got %u", h->mirrorPercent);
        cfg_vwarn(v, "mirrorPercent", "deprecated: use mirrorPercentage");
    }
    if (HAS(h, HTTPRoute, mirror_percent)) {
        if (h->mirror_percent > 100)
            cfg_verr(v, "mirror_percent", "must be at most 100, got %u", h->mirror_percent);
        cfg_vwarn(v, "mirror_percent", "deprecated: use mirrorPercentage");
    }
    if (h->mirrorPercentage != NULL &&
        (h->mirrorPercentage->value < 0 || h->mirrorPercentage->value > 100))
        cfg_verr(v, "mirrorPercentage.value", "must be between 0 and 100, got %g",
                 h->mirrorPercentage->value);
    if (h->corsPolicy != NULL)
        check_cors(v, h->corsPolicy);
    check_headers(v, h->headers);
}

static void check_l4_match_common(cfg_vctx_t *v, const cfg_strlist_t *subnets, bool has_port,
                                  uint32_t port, const cfg_map_t *labels, const cfg_strlist_t *gws,
                                  const char *source_ns)
{
    for (uint32_t i = 0; i < subnets->n; i++) {
        const char *why = NULL;
        if (!cfg_is_ip_or_cidr(subnets->v[i], &why)) {
            cfg_vmark_t p = cfg_venter(v, 0, ".destinationSubnets[%u]", i);
            cfg_verr(v, NULL, "\"%s\" %s", subnets->v[i], why);
            cfg_vleave(v, p);
        }
    }
    if (has_port)
        check_port(v, "port", port);
    cfg_check_labels(v, "sourceLabels", labels);
    check_gateway_names(v, "gateways", gws);
    if (source_ns != NULL && !cfg_is_dns1123_label(source_ns))
        cfg_verr(v, "sourceNamespace", "\"%s\" is not a valid namespace name", source_ns);
}

static void check_tls_route(cfg_vctx_t *v, const cfg_TLSRoute *t, const cfg_VirtualService *vs,
                            bool gateway_bound)
{
    if (t->match.n == 0)
        cfg_verr(v, "match", "a TLS rule needs at least one match");
    for (uint32_t i = 0; i < t->match.n; i++) {
        const cfg_TLSMatchAttributes *m = &t->match.v[i];
        cfg_vmark_t p = cfg_venter(v, m->_line, ".match[%u]", i);
        if (m->sniHosts.n == 0)
            cfg_verr(v, "sniHosts", "a TLS match needs at least one SNI host");
        for (uint32_t j = 0; j < m->sniHosts.n; j++) {
            const char *sni = m->sniHosts.v[j];
            const char *why = NULL;
            cfg_vmark_t q = cfg_venter(v, 0, ".sniHosts[%u]", j);
            bool auto_sni = gateway_bound && has_prefix(sni, "outbound_.");
            if (!auto_sni && !wildcard_domain(sni, &why)) {
                if (cfg_is_ip(sni))
                    cfg_vwarn(v, NULL,
                              "\"%s\" is an IP address, which most TLS clients never send as SNI",
                              sni);
                else
                    cfg_verr(v, NULL, "\"%s\" is not a valid SNI host: %s", sni, why);
            } else {
                bool covered = false;
                for (uint32_t k = 0; k < vs->hosts.n && !covered; k++)
                    covered = host_subset_of(sni, vs->hosts.v[k]);
                if (!covered && !auto_sni)
                    cfg_verr(v, NULL,
                             "SNI host \"%s\" is not within any of the virtual service's hosts",
                             sni);
            }
            cfg_vleave(v, q);
        }
        check_l4_match_common(v, &m->destinationSubnets, HAS(m, TLSMatchAttributes, port), m->port,
                              &m->sourceLabels, &m->gateways, m->sourceNamespace);
        cfg_vleave(v, p);
    }
    if (t->route.n == 0)
        cfg_verr(v, "route", "a TLS rule needs at least one route");
    check_route_destinations(v, t->route.v, t->route.n, false);
}

static void check_tcp_route(cfg_vctx_t *v, const cfg_TCPRoute *t)
{
    for (uint32_t i = 0; i < t->match.n; i++) {
        const cfg_L4MatchAttributes *m = &t->match.v[i];
        const char *why = NULL;
        cfg_vmark_t p = cfg_venter(v, m->_line, ".match[%u]", i);
        check_l4_match_common(v, &m->destinationSubnets, HAS(m, L4MatchAttributes, port), m->port,
                              &m->sourceLabels, &m->gateways, m->sourceNamespace);
        if (m->sourceSubnet != NULL && !cfg_is_ip_or_cidr(m->sourceSubnet, &why))
            cfg_verr(v, "sourceSubnet", "\"%s\" %s", m->sourceSubnet, why);
        cfg_vleave(v, p);
    }
    if (t->route.n == 0)
        cfg_verr(v, "route", "a TCP rule needs at least one route");
    check_route_destinations(v, t->route.v, t->route.n, false);
}

static void warn_missing_spec(cfg_vctx_t *v, const char *kind)
{
    cfg_vwarn(v, "spec", "the %s has no spec and does nothing", kind);
}

void cfg_validate_VirtualService(cfg_vctx_t *v, const void *body)
{
    const cfg_VirtualServiceObject *o = body;
    const cfg_VirtualService *vs = o->spec;
    if (vs == NULL) {
        warn_missing_spec(v, "virtual service");
        return;
    }
    cfg_vmark_t top = cfg_venter(v, vs->_line, ".spec");
    bool delegate = vs->hosts.n == 0;
    if (delegate) {
        /* a virtual service without hosts is only reachable as a delegate */
        if (vs->gateways.n > 0)
            cfg_verr(v, "gateways", "a delegate virtual service (no hosts) must not list gateways");
        if (vs->tls.n > 0)
            cfg_verr(v, "tls", "a delegate virtual service (no hosts) cannot have tls rules");
        if (vs->tcp.n > 0)
            cfg_verr(v, "tcp", "a delegate virtual service (no hosts) cannot have tcp rules");
    }
    bool gateway_bound = false;
    if (vs->gateways.n > 0) {
        check_gateway_names(v, "gateways", &vs->gateways);
        gateway_bound = true;
        for (uint32_t i = 0; i < vs->gateways.n; i++)
            if (strcmp(vs->gateways.v[i], "mesh") == 0)
                gateway_bound = false;
    }
    bool sni_rules = false;
    for (uint32_t i = 0; i < vs->tls.n; i++)
        for (uint32_t j = 0; j < vs->tls.v[i].match.n; j++)
            sni_rules |= vs->tls.v[i].match.v[j].sniHosts.n > 0;

    bool hosts_ok = true;
    for (uint32_t i = 0; i < vs->hosts.n; i++) {
        const char *h = vs->hosts.v[i];
        const char *why = NULL;
        cfg_vmark_t p = cfg_venter(v, 0, ".hosts[%u]", i);
        bool auto_sni = gateway_bound && sni_rules && has_prefix(h, "outbound_.");
        if (!auto_sni && !wildcard_domain(h, &why)) {
            if (!cfg_is_ip(h)) {
                cfg_verr(v, NULL, "\"%s\" is not a valid host: %s", h, why);
                hosts_ok = false;
            }
        } else if (!gateway_bound && strcmp(h, "*") == 0) {
            cfg_verr(v, NULL,
                     "the wildcard host \"*\" is only allowed when the virtual service is bound to "
                     "gateways (not \"mesh\")");
            hosts_ok = false;
        }
        cfg_vleave(v, p);
    }
    if (hosts_ok)
        for (uint32_t i = 0; i < vs->hosts.n; i++)
            for (uint32_t j = i + 1; j < vs->hosts.n; j++)
                if (host_matches(vs->hosts.v[i], vs->hosts.v[j])) {
                    cfg_vmark_t p = cfg_venter(v, 0, ".hosts[%u]", j);
                    cfg_verr(v, NULL, "duplicate host: \"%s\" overlaps \"%s\"", vs->hosts.v[j],
                             vs->hosts.v[i]);
                    cfg_vleave(v, p);
                }

    if (vs->http.n == 0 && vs->tcp.n == 0 && vs->tls.n == 0)
        cfg_verr(v, NULL, "a virtual service needs http, tcp or tls rules");
    for (uint32_t i = 0; i < vs->http.n; i++) {
        const cfg_HTTPRoute *h = &vs->http.v[i];
        cfg_vmark_t p = cfg_venter(v, h->_line, ".http[%u]", i);
        check_http_route(v, h, delegate, gateway_bound);
        if (h->match.n == 0 && i + 1 < vs->http.n)
            cfg_vwarn(v, NULL,
                      "this rule has no match, so it catches everything and the rules after it are "
                      "never used");
        cfg_vleave(v, p);
    }
    for (uint32_t i = 0; i < vs->tls.n; i++) {
        cfg_vmark_t p = cfg_venter(v, vs->tls.v[i]._line, ".tls[%u]", i);
        check_tls_route(v, &vs->tls.v[i], vs, gateway_bound);
        cfg_vleave(v, p);
    }
    for (uint32_t i = 0; i < vs->tcp.n; i++) {
        cfg_vmark_t p = cfg_venter(v, vs->tcp.v[i]._line, ".tcp[%u]", i);
        check_tcp_route(v, &vs->tcp.v[i]);
        if (vs->tcp.v[i].match.n == 0 && i + 1 < vs->tcp.n)
            cfg_vwarn(v, NULL,
                      "this rule has no match, so it catches everything and the rules after it are "
                      "never used");
        cfg_vleave(v, p);
    }
    check_export_to(v, &vs->exportTo, false, false);
    cfg_vleave(v, top);
}

/* ------------------------------------------------------------------ */
/* Gateway (and the TLS settings Sidecar ingress shares)               */

static void check_server_tls(cfg_vctx_t *v, const cfg_ServerTLSSettings *t)
{
    bool has_cred = t->credentialName != NULL || t->credentialNames.n > 0;
    int mode = t->mode;
    if (t->credentialNames.n > 2)
        cfg_verr(v, "credentialNames", "at most 2 credentials (one RSA, one ECDSA) may be given");
    if (HAS(t, ServerTLSSettings, tlsCertificates) &&
        (t->tlsCertificates.n < 1 || t->tlsCertificates.n > 2))
        cfg_verr(v, "tlsCertificates", "1 or 2 certificates (one RSA, one ECDSA) must be given");
    if (HAS(t, ServerTLSSettings, credentialNames) && t->credentialNames.n == 0)
        cfg_verr(v, "credentialNames", "must list 1 or 2 credentials");
    if ((t->minProtocolVersion == cfg_TLSProtocol_TLSV1_0 ||
         t->minProtocolVersion == cfg_TLSProtocol_TLSV1_1) &&
        t->cipherSuites.n == 0)
        cfg_vwarn(
            v, "minProtocolVersion",
            "TLS versions below 1.2 need cipherSuites: the default suites do not support them");
    if (HAS(t, ServerTLSSettings, minProtocolVersion) &&
        HAS(t, ServerTLSSettings, maxProtocolVersion) &&
        t->minProtocolVersion != cfg_TLSProtocol_TLS_AUTO &&
        t->maxProtocolVersion != cfg_TLSProtocol_TLS_AUTO &&
        t->minProtocolVersion > t->maxProtocolVersion)
        cfg_verr(v, "minProtocolVersion", "is higher than maxProtocolVersion");
    for (uint32_t i = 0; i < t->cipherSuites.n; i++)
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(t->cipherSuites.v[i], t->cipherSuites.v[j]) == 0)
                cfg_vwarn(v, "cipherSuites", "duplicate cipher suite \"%s\" is ignored",
                          t->cipherSuites.v[i]);

    if (mode == cfg_ServerTLSmode_ISTIO_MUTUAL) {
        if (t->serverCertificate != NULL)
            cfg_verr(v, "serverCertificate",
                     "ISTIO_MUTUAL uses the mesh certificate and cannot have a server certificate");
        if (t->privateKey != NULL)
            cfg_verr(v, "privateKey",
                     "ISTIO_MUTUAL uses the mesh certificate and cannot have a private key");
        if (t->caCertificates != NULL)
            cfg_verr(v, "caCertificates",
                     "ISTIO_MUTUAL uses the mesh CA and cannot have a CA bundle");
        if (has_cred)
            cfg_verr(v, "credentialName",
                     "ISTIO_MUTUAL uses the mesh certificate and cannot have a credential");
        return;
    }
    if (mode == cfg_ServerTLSmode_PASSTHROUGH || mode == cfg_ServerTLSmode_AUTO_PASSTHROUGH) {
        if (t->caCrl || t->serverCertificate || t->privateKey || t->caCertificates || has_cred)
            cfg_vwarn(v, "mode", "%s does not terminate TLS: the certificates are ignored",
                      cfg_enum_name(&cfg_enum_ServerTLSmode, mode));
        return;
    }
    /* SIMPLE, MUTUAL, OPTIONAL_MUTUAL */
    bool mutual = mode == cfg_ServerTLSmode_MUTUAL || mode == cfg_ServerTLSmode_OPTIONAL_MUTUAL;
    if (t->caCrl != NULL) {
        if (has_cred)
            cfg_verr(v, "caCrl",
                     "a CRL cannot be combined with credentialName: put it in the credential");
        if (mode == cfg_ServerTLSmode_SIMPLE)
            cfg_verr(v, "caCrl", "a CRL needs client certificates (MUTUAL), not SIMPLE");
    }
    if (has_cred)
        return;
    if (t->tlsCertificates.n > 0) {
        bool ca = t->caCertificates != NULL || t->caCertCredentialName != NULL;
        for (uint32_t i = 0; i < t->tlsCertificates.n; i++) {
            const cfg_ServerTLSSettingsTLSCertificate *c = &t->tlsCertificates.v[i];
            cfg_vmark_t p = cfg_venter(v, c->_line, ".tlsCertificates[%u]", i);
            if (c->serverCertificate == NULL)
                cfg_verr(v, "serverCertificate", "required with mode %s",
                         cfg_enum_name(&cfg_enum_ServerTLSmode, mode));
            if (c->privateKey == NULL)
                cfg_verr(v, "privateKey", "required with mode %s",
                         cfg_enum_name(&cfg_enum_ServerTLSmode, mode));
            ca |= c->caCertificates != NULL;
            cfg_vleave(v, p);
        }
        if (mutual && !ca)
            cfg_verr(v, "caCertificates", "MUTUAL TLS requires a client CA bundle");
        return;
    }
    if (t->serverCertificate == NULL)
        cfg_verr(v, "serverCertificate",
                 "%s TLS requires a server certificate (or a credentialName)",
                 mutual ? "MUTUAL" : "SIMPLE");
    if (t->privateKey == NULL)
        cfg_verr(v, "privateKey", "%s TLS requires a private key (or a credentialName)",
                 mutual ? "MUTUAL" : "SIMPLE");
    if (mutual && t->caCertificates == NULL && t->caCertCredentialName == NULL)
        cfg_verr(v, "caCertificates", "MUTUAL TLS requires a client CA bundle");
}

static void check_server(cfg_vctx_t *v, const cfg_Server *s)
{
    if (s->hosts.n == 0)
        cfg_verr(v, "hosts", "a server needs at least one host");
    for (uint32_t i = 0; i < s->hosts.n; i++) {
        cfg_vmark_t p = cfg_venter(v, 0, ".hosts[%u]", i);
        check_ns_host(v, s->hosts.v[i], true);
        cfg_vleave(v, p);
    }
    bool uds = s->bind != NULL && has_prefix(s->bind, "unix://");
    bool port_ok = true;
    if (s->port != NULL) {
        const cfg_Port *pt = s->port;
        cfg_vmark_t p = cfg_venter(v, pt->_line, ".port");
        if (pt->protocol == NULL || !cfg_is_protocol(pt->protocol)) {
            check_protocol(v, "protocol", pt->protocol ? pt->protocol : "");
            if (pt->protocol == NULL || pt->protocol[0] == '\0')
                cfg_verr(v, "protocol", "required field is missing");
            port_ok = false;
        }
        if (pt->number > 0 || !uds) {
            if (!cfg_is_port(pt->number)) {
                check_port(v, "number", pt->number);
                port_ok = false;
            }
        }
        if (HAS(pt, Port, targetPort))
            cfg_verr(v, "targetPort", "has no effect on gateways; remove it");
        if (pt->name == NULL || pt->name[0] == '\0')
            cfg_verr(v, "name", "port name must be set");
        cfg_vleave(v, p);
    }
    if (s->bind != NULL) {
        if (uds) {
            check_unix_address(v, "bind", s->bind + 7);
            if (s->port != NULL && s->port->number != 0)
                cfg_verr(v, "port.number", "must be 0 when binding to a unix domain socket");
        } else if (!cfg_is_ip(s->bind)) {
            cfg_verr(v, "bind", "\"%s\" is not an IP address or unix:// path", s->bind);
        }
    }
    if (s->tls != NULL) {
        cfg_vmark_t p = cfg_venter(v, s->tls->_line, ".tls");
        check_server_tls(v, s->tls);
        cfg_vleave(v, p);
    }
    if (s->port != NULL && port_ok) {
        const char *proto = s->port->protocol;
        const cfg_ServerTLSSettings *t = s->tls;
        if (proto_tls(proto) && t == NULL) {
            cfg_verr(v, "tls", "a %s server needs TLS settings", proto);
        } else if (!proto_tls(proto) && t != NULL) {
            bool passthrough = t->mode == cfg_ServerTLSmode_PASSTHROUGH ||
                               t->mode == cfg_ServerTLSmode_AUTO_PASSTHROUGH;
            if (!proto_http(proto))
                cfg_verr(v, "tls", "a %s server cannot have TLS settings (use HTTPS or TLS)",
                         proto);
            else if (!passthrough || t->caCertificates || t->privateKey || t->serverCertificate)
                cfg_verr(v, "tls",
                         "a plain-text %s server can only have tls.httpsRedirect; use HTTPS to "
                         "terminate TLS",
                         proto);
        }
    }
}

void cfg_validate_Gateway(cfg_vctx_t *v, const void *body)
{
    const cfg_GatewayObject *o = body;
    const cfg_Gateway *g = o->spec;
    if (v->obj != NULL && v->obj->name != NULL && v->obj->name[0] != '\0' &&
        !cfg_is_dns1123_label(v->obj->name)) {
        cfg_vmark_t p = cfg_venter(v, 0, ".metadata");
        cfg_verr(v, "name", "a gateway name must be a DNS label (no dots), got \"%s\"",
                 v->obj->name);
        cfg_vleave(v, p);
    }
    if (g == NULL) {
        warn_missing_spec(v, "gateway");
        return;
    }
    cfg_vmark_t top = cfg_venter(v, g->_line, ".spec");
    if (g->servers.n == 0)
        cfg_verr(v, "servers", "a gateway needs at least one server");
    for (uint32_t i = 0; i < g->servers.n; i++) {
        const cfg_Server *s = &g->servers.v[i];
        cfg_vmark_t p = cfg_venter(v, s->_line, ".servers[%u]", i);
        check_server(v, s);
        if (s->port != NULL && s->port->name != NULL) {
            for (uint32_t j = 0; j < i; j++) {
                const cfg_Port *pj = g->servers.v[j].port;
                if (pj != NULL && pj->name != NULL && strcmp(pj->name, s->port->name) == 0) {
                    cfg_verr(v, "port.name",
                             "port names must be unique across servers: \"%s\" is also used by "
                             "servers[%u]",
                             s->port->name, j);
                    break;
                }
            }
            if (s->tls != NULL && s->tls->httpsRedirect && !proto_http(s->port->protocol))
                cfg_vwarn(v, "tls.httpsRedirect", "only has an effect on HTTP servers");
        }
        cfg_vleave(v, p);
    }
    cfg_check_labels(v, "selector", &g->selector);
    cfg_vleave(v, top);
}

/* ------------------------------------------------------------------ */
/* DestinationRule                                                     */

/* Connection pool settings at the current path + "." + field. */
static void check_connection_pool(cfg_vctx_t *v, const char *field,
                                  const cfg_ConnectionPoolSettings *c)
{
    cfg_vmark_t p = cfg_venter(v, c->_line, ".%s", field);
    if (c->http == NULL && c->tcp == NULL)
        cfg_verr(v, NULL, "a connection pool needs tcp or http settings");
    if (c->http != NULL) {
        const cfg_ConnectionPoolSettingsHTTPSettings *h = c->http;
        cfg_vmark_t q = cfg_venter(v, h->_line, ".http");
        if (h->http1MaxPendingRequests < 0)
            cfg_verr(v, "http1MaxPendingRequests", "must be >= 0");
        if (h->http2MaxRequests < 0)
            cfg_verr(v, "http2MaxRequests", "must be >= 0");
        if (h->maxRequestsPerConnection < 0)
            cfg_verr(v, "maxRequestsPerConnection", "must be >= 0");
        if (h->maxRetries < 0)
            cfg_verr(v, "maxRetries", "must be >= 0");
        if (h->maxConcurrentStreams < 0)
            cfg_verr(v, "maxConcurrentStreams", "must be >= 0");
        if (HAS(h, ConnectionPoolSettingsHTTPSettings, idleTimeout))
            check_duration(v, "idleTimeout", h->idleTimeout);
        if (h->h2UpgradePolicy == cfg_H2UpgradePolicy_UPGRADE && h->useClientProtocol)
            cfg_verr(v, "useClientProtocol", "cannot be true when h2UpgradePolicy is UPGRADE");
        if (h->http2KeepAlive != NULL) {
            const cfg_ConnectionPoolSettingsHTTPSettingsHTTP2KeepAlive *k = h->http2KeepAlive;
            cfg_vmark_t r = cfg_venter(v, k->_line, ".http2KeepAlive");
            if (HAS(k, ConnectionPoolSettingsHTTPSettingsHTTP2KeepAlive, interval))
                check_duration(v, "interval", k->interval);
            if (HAS(k, ConnectionPoolSettingsHTTPSettingsHTTP2KeepAlive, timeout))
                check_duration(v, "timeout", k->timeout);
            cfg_vleave(v, r);
        }
        cfg_vleave(v, q);
    }
    if (c->tcp != NULL) {
        const cfg_ConnectionPoolSettingsTCPSettings *t = c->tcp;
        cfg_vmark_t q = cfg_venter(v, t->_line, ".tcp");
        if (t->maxConnections < 0)
            cfg_verr(v, "maxConnections", "must be >= 0");
        if (HAS(t, ConnectionPoolSettingsTCPSettings, connectTimeout))
            check_duration(v, "connectTimeout", t->connectTimeout);
        if (HAS(t, ConnectionPoolSettingsTCPSettings, maxConnectionDuration))
            check_duration(v, "maxConnectionDuration", t->maxConnectionDuration);
        if (HAS(t, ConnectionPoolSettingsTCPSettings, idleTimeout))
            check_duration(v, "idleTimeout", t->idleTimeout);
        if (t->tcpKeepalive != NULL) {
            const cfg_ConnectionPoolSettingsTCPSettingsTcpKeepalive *k = t->tcpKeepalive;
            cfg_vmark_t r = cfg_venter(v, k->_line, ".tcpKeepalive");
            if (HAS(k, ConnectionPoolSettingsTCPSettingsTcpKeepalive, time))
                check_duration(v, "time", k->time);
            if (HAS(k, ConnectionPoolSettingsTCPSettingsTcpKeepalive, interval))
                check_duration(v, "interval", k->interval);
            cfg_vleave(v, r);
        }
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

static void check_outlier(cfg_vctx_t *v, const cfg_OutlierDetection *o)
{
    cfg_vmark_t p = cfg_venter(v, o->_line, ".outlierDetection");
    if (HAS(o, OutlierDetection, baseEjectionTime))
        check_duration(v, "baseEjectionTime", o->baseEjectionTime);
    if (HAS(o, OutlierDetection, interval))
        check_duration(v, "interval", o->interval);
    if (HAS(o, OutlierDetection, consecutiveErrors))
        cfg_vwarn(v, "consecutiveErrors",
                  "deprecated: use consecutiveGatewayErrors or consecutive5xxErrors");
    if (!o->splitExternalLocalOriginErrors && o->consecutiveLocalOriginFailures > 0)
        cfg_verr(v, "consecutiveLocalOriginFailures",
                 "has no effect unless splitExternalLocalOriginErrors is true");
    if (o->maxEjectionPercent < 0 || o->maxEjectionPercent > 100)
        cfg_verr(v, "maxEjectionPercent", "percentage %d is not between 0 and 100",
                 o->maxEjectionPercent);
    if (o->minHealthPercent < 0 || o->minHealthPercent > 100)
        cfg_verr(v, "minHealthPercent", "percentage %d is not between 0 and 100",
                 o->minHealthPercent);
    for (uint32_t i = 0; i < o->outlierDetectionHttpErrorCodes.n; i++) {
        uint32_t c = o->outlierDetectionHttpErrorCodes.v[i];
        if (c < 100 || c > 599) {
            cfg_vmark_t q = cfg_venter(v, 0, ".outlierDetectionHttpErrorCodes[%u]", i);
            cfg_verr(v, NULL, "%u is not an HTTP status code (100-599)", c);
            cfg_vleave(v, q);
        }
    }
    cfg_vleave(v, p);
}

static bool is_prime(uint64_t x)
{
    if (x != 0 && x < 4)
        return true;
    if ((x & 1) == 0)
        return false;
    for (uint64_t f = 3; f * f <= x; f += 2)
        if (x % f == 0)
            return false;
    return true;
}

/* Locality "region/zone/subzone": no empty part, one '*' at most, at the end. */
static bool locality_ok(const char *l, const char **why)
{
    const char *star = strchr(l, '*');
    if (star != NULL && (star[1] != '\0' || strchr(l, '*') != star)) {
        *why = "a wildcard '*' may only appear once, at the end";
        return false;
    }
    int parts = 0;
    const char *p = l;
    while (true) {
        const char *slash = parts < 2 ? strchr(p, '/') : NULL;
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0) {
            *why = "region, zone and subzone must not be empty";
            return false;
        }
        parts++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    return true;
}

/* Two localities overlap when one contains the other (a trailing "*" or a shorter locality covers
 * longer ones). */
static bool locality_overlaps(const char *a, const char *b)
{
    if (strcmp(a, "*") == 0 || strcmp(b, "*") == 0)
        return true;
    size_t la = strlen(a), lb = strlen(b);
    if (strcmp(a, b) == 0)
        return true;
    if (a[la - 1] == '*' && la >= 2 && a[la - 2] == '/' && strncmp(a, b, la - 1) == 0)
        return true;
    if (b[lb - 1] == '*' && lb >= 2 && b[lb - 2] == '/' && strncmp(a, b, lb - 1) == 0)
        return true;
    /* "region" covers "region/zone" */
    if (la < lb && strncmp(a, b, la) == 0 && b[la] == '/')
        return true;
    if (lb < la && strncmp(a, b, lb) == 0 && a[lb] == '/')
        return true;
    return false;
}

static void check_failovers(cfg_vctx_t *v, const char *field, const void *list, uint32_t n)
{
    const cfg_LocalityLoadBalancerSettingFailover *f = list;
    for (uint32_t i = 0; i < n; i++) {
        cfg_vmark_t p = cfg_venter(v, f[i]._line, ".%s[%u]", field, i);
        const char *from = f[i].from ? f[i].from : "", *to = f[i].to ? f[i].to : "";
        if (strcmp(from, to) == 0)
            cfg_verr(v, NULL, "failover must go to a different region");
        if (strchr(from, '/') || strchr(to, '/'))
            cfg_verr(v, NULL, "failover names regions only (no zone or subzone)");
        if (strchr(from, '*') || strchr(to, '*'))
            cfg_verr(v, NULL, "failover regions must not contain '*'");
        cfg_vleave(v, p);
    }
}

static bool topology_label(const char *l)
{
    return strcmp(l, "topology.kubernetes.io/region") == 0 ||
           strcmp(l, "topology.kubernetes.io/zone") == 0 ||
           strcmp(l, "topology.istio.io/subzone") == 0;
}

static void check_locality_lb(cfg_vctx_t *v, const cfg_LocalityLoadBalancerSetting *l,
                              bool has_outlier)
{
    cfg_vmark_t p = cfg_venter(v, l->_line, ".localityLbSetting");
    if (l->distribute.n > 0 && l->failover.n > 0) {
        cfg_verr(v, NULL, "distribute and failover cannot both be set");
        cfg_vleave(v, p);
        return;
    }
    if (l->distribute.n > 0 && l->failoverPriority.n > 0) {
        cfg_verr(v, NULL, "distribute and failoverPriority cannot both be set");
        cfg_vleave(v, p);
        return;
    }
    for (uint32_t i = 0; i < l->failoverPriority.n; i++)
        if (l->failoverPriority.v[i][0] == '\0' || l->failoverPriority.v[i][0] == '=')
            cfg_verr(v, "failoverPriority", "entry %u names no label", i);
    if (l->failover.n > 0)
        for (uint32_t i = 0; i < l->failoverPriority.n; i++)
            if (topology_label(l->failoverPriority.v[i]))
                cfg_verr(v, "failoverPriority", "\"%s\" cannot be used together with failover",
                         l->failoverPriority.v[i]);
    for (uint32_t i = 0; i < l->distribute.n; i++) {
        const cfg_LocalityLoadBalancerSettingDistribute *d = &l->distribute.v[i];
        const char *why = NULL;
        cfg_vmark_t q = cfg_venter(v, d->_line, ".distribute[%u]", i);
        if (d->from == NULL || !locality_ok(d->from, &why))
            cfg_verr(v, "from", "invalid locality \"%s\": %s", d->from ? d->from : "",
                     d->from ? why : "required");
        for (uint32_t j = 0; j < i; j++)
            if (d->from && l->distribute.v[j].from &&
                locality_overlaps(d->from, l->distribute.v[j].from))
                cfg_verr(v, "from", "locality \"%s\" overlaps \"%s\" of distribute[%u]", d->from,
                         l->distribute.v[j].from, j);
        uint64_t total = 0;
        for (uint32_t j = 0; j < d->to.n; j++) {
            const cfg_mapent_t *e = &d->to.v[j];
            cfg_vmark_t r = cfg_venter(v, 0, ".to[%s]", e->key);
            if (e->u32 < 1 || e->u32 > 100)
                cfg_verr(v, NULL, "locality weight must be between 1 and 100");
            if (!locality_ok(e->key, &why))
                cfg_verr(v, NULL, "invalid locality: %s", why);
            for (uint32_t k = 0; k < j; k++)
                if (locality_overlaps(e->key, d->to.v[k].key))
                    cfg_verr(v, NULL, "locality overlaps \"%s\"", d->to.v[k].key);
            total += e->u32;
            cfg_vleave(v, r);
        }
        if (total != 100)
            cfg_verr(v, "to", "the weights must add up to 100, not %llu",
                     (unsigned long long)total);
        cfg_vleave(v, q);
    }
    check_failovers(v, "failover", l->failover.v, l->failover.n);
    if ((l->failover.n > 0 || l->failoverPriority.n > 0) && !has_outlier)
        cfg_vwarn(v, NULL, "failover only happens with an outlierDetection policy");
    cfg_vleave(v, p);
}

static void check_load_balancer(cfg_vctx_t *v, const cfg_LoadBalancerSettings *lb, bool has_outlier)
{
    cfg_vmark_t p = cfg_venter(v, lb->_line, ".loadBalancer");
    if (lb->consistentHash != NULL) {
        const cfg_ConsistentHashLB *c = lb->consistentHash;
        cfg_vmark_t q = cfg_venter(v, c->_line, ".consistentHash");
        if (c->httpCookie != NULL &&
            (c->httpCookie->name == NULL || c->httpCookie->name[0] == '\0'))
            cfg_verr(v, "httpCookie.name", "a cookie name is required");
        if (c->httpHeaderName != NULL && !header_token(c->httpHeaderName))
            cfg_verr(v, "httpHeaderName", "\"%s\" is not a valid header name", c->httpHeaderName);
        if (HAS(c, ConsistentHashLB, minimumRingSize)) {
            if (c->minimumRingSize < 0)
                cfg_verr(v, "minimumRingSize", "must be >= 0");
            cfg_vwarn(v, "minimumRingSize", "deprecated: use ringHash.minimumRingSize");
            if (c->ringHash != NULL || c->maglev != NULL)
                cfg_verr(v, "minimumRingSize", "cannot be combined with ringHash or maglev");
        }
        if (c->ringHash != NULL && c->ringHash->minimumRingSize < 0)
            cfg_verr(v, "ringHash.minimumRingSize", "must be >= 0");
        if (c->maglev != NULL) {
            int64_t ts = c->maglev->tableSize;
            if (ts <= 0)
                cfg_verr(v, "maglev.tableSize", "must be set (a prime number) for maglev");
            else if (ts >= 5000011)
                cfg_verr(v, "maglev.tableSize", "must be less than 5000011");
            else if (!is_prime((uint64_t)ts))
                cfg_verr(v, "maglev.tableSize", "%lld is not a prime number", (long long)ts);
        }
        cfg_vleave(v, q);
    }
    if (lb->localityLbSetting != NULL)
        check_locality_lb(v, lb->localityLbSetting, has_outlier);
    if (HAS(lb, LoadBalancerSettings, warmupDurationSecs)) {
        check_duration(v, "warmupDurationSecs", lb->warmupDurationSecs);
        if (lb->warmup != NULL)
            cfg_verr(v, "warmupDurationSecs", "cannot be combined with warmup");
    }
    if (lb->warmup != NULL) {
        const cfg_WarmupConfiguration *w = lb->warmup;
        cfg_vmark_t q = cfg_venter(v, w->_line, ".warmup");
        check_duration(v, "duration", w->duration);
        if (HAS(w, WarmupConfiguration, minimumPercent) &&
            (w->minimumPercent < 0 || w->minimumPercent > 100))
            cfg_verr(v, "minimumPercent", "Invalid value: %g: must be between 0 and 100",
                     w->minimumPercent);
        if (HAS(w, WarmupConfiguration, aggression)) {
            if (w->aggression < 0)
                cfg_verr(v, "aggression", "Invalid value: %g: must be >= 0 (1 ramps up linearly)",
                         w->aggression);
            else if (w->aggression == 0)
                cfg_vwarn(v, "aggression", "0 is not a valid curve; the proxy uses 1 (linear)");
        }
        cfg_vleave(v, q);
    }
    if (lb->zoneAwareLbSetting != NULL) {
        const cfg_ZoneAwareLoadBalancerSetting *z = lb->zoneAwareLbSetting;
        cfg_vmark_t q = cfg_venter(v, z->_line, ".zoneAwareLbSetting");
        if (HAS(z, ZoneAwareLoadBalancerSetting, minClusterSize) && z->minClusterSize < 1)
            cfg_verr(v, "minClusterSize", "must be >= 1");
        check_failovers(v, "failover", z->failover.v, z->failover.n);
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

static void check_client_tls(cfg_vctx_t *v, const cfg_ClientTLSSettings *t)
{
    cfg_vmark_t p = cfg_venter(v, t->_line, ".tls");
    const char *ca = t->caCertificates;
    if (t->caCertificate != NULL) {
        if (t->caCertificates != NULL)
            cfg_verr(v, "caCertificate",
                     "set caCertificates only (caCertificate is a misspelling of it)");
        else
            cfg_vwarn(v, "caCertificate", "not an Istio field: read as caCertificates; rename it");
        ca = t->caCertificate;
    }
    bool simple = t->mode == cfg_TLSmode_SIMPLE, mutual = t->mode == cfg_TLSmode_MUTUAL;
    if (t->insecureSkipVerify) {
        if (simple && (ca || t->credentialName || HAS(t, ClientTLSSettings, subjectAltNames)))
            cfg_verr(v, "insecureSkipVerify",
                     "caCertificates, credentialName and subjectAltNames cannot be set when "
                     "insecureSkipVerify is true");
        if (mutual && (ca || HAS(t, ClientTLSSettings, subjectAltNames)))
            cfg_verr(
                v, "insecureSkipVerify",
                "caCertificates and subjectAltNames cannot be set when insecureSkipVerify is true");
    }
    if ((simple || mutual) && t->credentialName != NULL) {
        if (t->clientCertificate || ca || t->privateKey || t->caCrl)
            cfg_verr(v, "credentialName",
                     "clientCertificate, privateKey, caCertificates and caCrl cannot be set with "
                     "credentialName");
    } else if (mutual) {
        if (t->clientCertificate == NULL)
            cfg_verr(v, "clientCertificate", "required for MUTUAL TLS (or set credentialName)");
        if (t->privateKey == NULL)
            cfg_verr(v, "privateKey", "required for MUTUAL TLS (or set credentialName)");
    }
    cfg_vleave(v, p);
}

static void check_port_traffic_policy(cfg_vctx_t *v, const cfg_TrafficPolicyPortTrafficPolicy *t)
{
    if (t->port == NULL)
        cfg_verr(v, "port", "a port-level policy needs a port");
    else
        check_port(v, "port.number", t->port->number);
    if (t->outlierDetection == NULL && t->connectionPool == NULL && t->loadBalancer == NULL &&
        t->tls == NULL) {
        cfg_verr(v, NULL,
                 "a port-level policy needs loadBalancer, connectionPool, outlierDetection or tls");
        return;
    }
    if (t->outlierDetection != NULL)
        check_outlier(v, t->outlierDetection);
    if (t->connectionPool != NULL)
        check_connection_pool(v, "connectionPool", t->connectionPool);
    if (t->loadBalancer != NULL)
        check_load_balancer(v, t->loadBalancer, t->outlierDetection != NULL);
    if (t->tls != NULL)
        check_client_tls(v, t->tls);
}

static void check_traffic_policy(cfg_vctx_t *v, const cfg_TrafficPolicy *t)
{
    cfg_vmark_t p = cfg_venter(v, t->_line, ".trafficPolicy");
    if (t->outlierDetection == NULL && t->connectionPool == NULL && t->loadBalancer == NULL &&
        t->tls == NULL && !HAS(t, TrafficPolicy, portLevelSettings) && t->tunnel == NULL &&
        t->proxyProtocol == NULL && t->retryBudget == NULL) {
        cfg_verr(v, NULL, "a traffic policy needs at least one setting");
        cfg_vleave(v, p);
        return;
    }
    if (t->tunnel != NULL && t->proxyProtocol != NULL)
        cfg_verr(v, NULL, "tunnel and proxyProtocol cannot both be set");
    if (t->outlierDetection != NULL)
        check_outlier(v, t->outlierDetection);
    if (t->connectionPool != NULL)
        check_connection_pool(v, "connectionPool", t->connectionPool);
    if (t->loadBalancer != NULL)
        check_load_balancer(v, t->loadBalancer, t->outlierDetection != NULL);
    if (t->tls != NULL)
        check_client_tls(v, t->tls);
    if (t->portLevelSettings.n > 4096)
        cfg_verr(v, "portLevelSettings", "at most 4096 entries are allowed");
    for (uint32_t i = 0; i < t->portLevelSettings.n; i++) {
        const cfg_TrafficPolicyPortTrafficPolicy *pl = &t->portLevelSettings.v[i];
        cfg_vmark_t q = cfg_venter(v, pl->_line, ".portLevelSettings[%u]", i);
        check_port_traffic_policy(v, pl);
        cfg_vleave(v, q);
    }
    if (t->tunnel != NULL) {
        const cfg_TrafficPolicyTunnelSettings *tn = t->tunnel;
        const char *why = NULL;
        cfg_vmark_t q = cfg_venter(v, tn->_line, ".tunnel");
        if (tn->protocol != NULL && tn->protocol[0] != '\0' &&
            strcmp(tn->protocol, "CONNECT") != 0 && strcmp(tn->protocol, "POST") != 0)
            cfg_verr(v, "protocol", "must be \"CONNECT\" or \"POST\"");
        if (tn->targetHost != NULL && !cfg_is_ip(tn->targetHost) && !fqdn(tn->targetHost, &why))
            cfg_verr(v, "targetHost", "\"%s\" is not a host name or IP address: %s", tn->targetHost,
                     why);
        check_port(v, "targetPort", tn->targetPort);
        cfg_vleave(v, q);
    }
    if (t->retryBudget != NULL) {
        const cfg_TrafficPolicyRetryBudget *rb = t->retryBudget;
        cfg_vmark_t q = cfg_venter(v, rb->_line, ".retryBudget");
        if (rb->percent < 0 || rb->percent > 100)
            cfg_verr(v, "percent", "must be between 0 and 100, got %g", rb->percent);
        if (HAS(rb, TrafficPolicyRetryBudget, budgetInterval) && rb->budgetInterval < NS_PER_MS)
            cfg_check_duration_min(v, "budgetInterval", rb->budgetInterval, NS_PER_MS);
        cfg_vleave(v, q);
    }
    cfg_vleave(v, p);
}

void cfg_validate_DestinationRule(cfg_vctx_t *v, const void *body)
{
    const cfg_DestinationRuleObject *o = body;
    const cfg_DestinationRule *dr = o->spec;
    if (dr == NULL) {
        warn_missing_spec(v, "destination rule");
        return;
    }
    cfg_vmark_t top = cfg_venter(v, dr->_line, ".spec");
    const char *why = NULL;
    if (dr->host == NULL || dr->host[0] == '\0')
        cfg_verr(v, "host", "required field is missing");
    else if (!wildcard_domain(dr->host, &why))
        cfg_verr(v, "host", "\"%s\" is not a valid host: %s", dr->host, why);
    if (dr->trafficPolicy != NULL)
        check_traffic_policy(v, dr->trafficPolicy);
    for (uint32_t i = 0; i < dr->subsets.n; i++) {
        const cfg_Subset *s = &dr->subsets.v[i];
        cfg_vmark_t p = cfg_venter(v, s->_line, ".subsets[%u]", i);
        if (s->name == NULL || s->name[0] == '\0')
            cfg_verr(v, "name", "a subset name is required");
        else if (!cfg_is_dns1123_label(s->name))
            cfg_verr(v, "name", "\"%s\" is not a valid subset name (a DNS label)", s->name);
        else
            for (uint32_t j = 0; j < i; j++)
                if (dr->subsets.v[j].name != NULL && strcmp(dr->subsets.v[j].name, s->name) == 0) {
                    cfg_verr(v, "name", "duplicate subset name \"%s\"", s->name);
                    break;
                }
        cfg_check_labels(v, "labels", &s->labels);
        if (s->trafficPolicy != NULL)
            check_traffic_policy(v, s->trafficPolicy);
        cfg_vleave(v, p);
    }
    check_export_to(v, &dr->exportTo, false, dr->workloadSelector != NULL);
    if (dr->workloadSelector != NULL) {
        cfg_vmark_t p = cfg_venter(v, dr->workloadSelector->_line, ".workloadSelector");
        check_selector_labels(v, "matchLabels", &dr->workloadSelector->matchLabels);
        cfg_vleave(v, p);
    }
    cfg_vleave(v, top);
}

/* ------------------------------------------------------------------ */
/* ServiceEntry                                                        */

/* The service port named `name`, if any. */
static bool service_port_named(const cfg_ServiceEntry *se, const char *name)
{
    for (uint32_t i = 0; i < se->ports.n; i++)
        if (se->ports.v[i].name != NULL && strcmp(se->ports.v[i].name, name) == 0)
            return true;
    return false;
}

static void check_endpoint(cfg_vctx_t *v, const cfg_ServiceEntry *se, const cfg_WorkloadEntry *e)
{
    const char *addr = e->address;
    int res = se->resolution;
    if (addr == NULL || addr[0] == '\0') {
        if (e->network == NULL || e->network[0] == '\0')
            cfg_verr(v, "address", "Address is required (or a network)");
    } else if (has_prefix(addr, "unix://")) {
        check_unix_address(v, "address", addr + 7);
        if (e->ports.n > 0)
            cfg_verr(v, "ports", "a unix socket endpoint (UDS) may not include ports");
        if (res == cfg_ServiceEntryResolution_STATIC && se->ports.n != 1)
            cfg_verr(v, "address", "a unix socket endpoint needs exactly one service port");
    } else if (strlen(addr) > 256) {
        cfg_verr(v, "address", "must be at most 256 characters");
    } else if (!cfg_is_ip(addr)) {
        const char *why = NULL;
        if (res == cfg_ServiceEntryResolution_STATIC)
            cfg_verr(v, "address",
                     "\"%s\" is not an IP address (resolution STATIC needs addresses)", addr);
        else if (!fqdn(addr, &why))
            cfg_verr(v, "address", "\"%s\" is not an IP address or host name: %s", addr, why);
    }
    for (uint32_t i = 0; i < e->ports.n; i++) {
        const cfg_mapent_t *pe = &e->ports.v[i];
        cfg_vmark_t p = cfg_venter(v, 0, ".ports[%s]", pe->key);
        if (!cfg_is_port_name(pe->key))
            cfg_verr(v, NULL, "port name must be valid (a DNS label)");
        else if (!service_port_named(se, pe->key))
            cfg_verr(v, NULL, "the service entry has no port named \"%s\"", pe->key);
        if (!cfg_is_port(pe->u32))
            cfg_verr(v, NULL, "port must be between 1-65535, got %u", pe->u32);
        cfg_vleave(v, p);
    }
    cfg_check_labels(v, "labels", &e->labels);
    if (e->serviceAccount != NULL && strlen(e->serviceAccount) > 253)
        cfg_verr(v, "serviceAccount", "must be at most 253 characters");
}

void cfg_validate_ServiceEntry(cfg_vctx_t *v, const void *body)
{
    const cfg_ServiceEntryObject *o = body;
    const cfg_ServiceEntry *se = o->spec;
    if (se == NULL)
        return; /* the decoder reports the missing spec */
    cfg_vmark_t top = cfg_venter(v, se->_line, ".spec");
    int res = se->resolution;
    const char *res_name = cfg_enum_name(&cfg_enum_ServiceEntryResolution, res);

    if (se->workloadSelector != NULL) {
        cfg_vmark_t p = cfg_venter(v, se->workloadSelector->_line, ".workloadSelector");
        check_selector_labels(v, "labels", &se->workloadSelector->labels);
        cfg_vleave(v, p);
        if (HAS(se, ServiceEntry, endpoints))
            cfg_verr(v, NULL, "only one of WorkloadSelector or Endpoints can be set");
        if (res != cfg_ServiceEntryResolution_STATIC)
            cfg_vwarn(v, "workloadSelector", "has no effect with resolution %s", res_name);
    }

    if (se->hosts.n == 0)
        cfg_verr(v, "hosts", "Required value: a service entry needs at least one host");
    if (se->hosts.n > 256)
        cfg_verr(v, "hosts", "at most 256 hosts are allowed");
    for (uint32_t i = 0; i < se->hosts.n; i++) {
        const char *h = se->hosts.v[i];
        const char *why = NULL;
        cfg_vmark_t p = cfg_venter(v, 0, ".hosts[%u]", i);
        if (strcmp(h, "*") == 0)
            cfg_verr(v, NULL, "hostname cannot be wildcard \"*\"");
        else if (!wildcard_domain(h, &why))
            cfg_verr(v, NULL, "\"%s\" is not a valid host: %s", h, why);
        else if (partial_wildcard(h))
            cfg_vwarn(v, NULL,
                      "partial wildcard \"%s\": a wildcard is meant to be the first label (\"*.\")",
                      h);
        cfg_vleave(v, p);
    }

    bool cidr = false;
    if (se->addresses.n > 256)
        cfg_verr(v, "addresses", "at most 256 addresses are allowed");
    for (uint32_t i = 0; i < se->addresses.n; i++) {
        const char *a = se->addresses.v[i];
        const char *why = NULL;
        cfg_vmark_t p = cfg_venter(v, 0, ".addresses[%u]", i);
        if (strchr(a, '/') != NULL)
            cidr = true;
        if (strlen(a) > 64 || !cfg_is_ip_or_cidr(a, &why))
            cfg_verr(v, NULL, "\"%s\" %s", a, why ? why : "is too long");
        cfg_vleave(v, p);
    }
    if (cidr && res != cfg_ServiceEntryResolution_NONE && res != cfg_ServiceEntryResolution_STATIC)
        cfg_verr(v, "addresses",
                 "CIDR addresses are allowed only for NONE/STATIC resolution types");

    if (se->ports.n > 256)
        cfg_verr(v, "ports", "at most 256 ports are allowed");
    for (uint32_t i = 0; i < se->ports.n; i++) {
        const cfg_ServicePort *pt = &se->ports.v[i];
        cfg_vmark_t p = cfg_venter(v, pt->_line, ".ports[%u]", i);
        if (pt->name == NULL || !cfg_is_port_name(pt->name))
            cfg_verr(v, "name", "\"%s\" is not a valid port name (a DNS label)",
                     pt->name ? pt->name : "");
        check_protocol(v, "protocol", pt->protocol);
        check_port(v, "number", pt->number);
        if (HAS(pt, ServicePort, targetPort)) {
            check_port(v, "targetPort", pt->targetPort);
        }
        for (uint32_t j = 0; j < i; j++) {
            const cfg_ServicePort *pj = &se->ports.v[j];
            if (pt->name != NULL && pj->name != NULL && strcmp(pt->name, pj->name) == 0)
                cfg_verr(v, "name",
                         "Duplicate value: port name \"%s\" is already used by ports[%u]", pt->name,
                         j);
            if (pt->number == pj->number)
                cfg_verr(v, "number",
                         "port number cannot be duplicated: %u is already used by ports[%u]",
                         pt->number, j);
        }
        cfg_vleave(v, p);
    }

    if (se->endpoints.n > 4096)
        cfg_verr(v, "endpoints", "at most 4096 endpoints are allowed");
    switch (res) {
    case cfg_ServiceEntryResolution_NONE:
        if (HAS(se, ServiceEntry, endpoints))
            cfg_verr(v, "endpoints", "NONE mode cannot set endpoints");
        break;
    case cfg_ServiceEntryResolution_DYNAMIC_DNS:
        if (HAS(se, ServiceEntry, endpoints))
            cfg_verr(v, "endpoints",
                     "DYNAMIC_DNS mode resolves the requested host and cannot set endpoints");
        break;
    case cfg_ServiceEntryResolution_DNS:
    case cfg_ServiceEntryResolution_DNS_ROUND_ROBIN:
        if (se->endpoints.n == 0)
            for (uint32_t i = 0; i < se->hosts.n; i++) {
                const char *why = NULL;
                if (strcmp(se->hosts.v[i], "*") != 0 && !fqdn(se->hosts.v[i], &why)) {
                    cfg_vmark_t p = cfg_venter(v, 0, ".hosts[%u]", i);
                    cfg_verr(v, NULL,
                             "hosts must be fully qualified (no wildcard) when resolution %s has "
                             "no endpoints",
                             res_name);
                    cfg_vleave(v, p);
                }
            }
        if (res == cfg_ServiceEntryResolution_DNS_ROUND_ROBIN && se->endpoints.n > 1)
            cfg_verr(v, "endpoints", "DNS_ROUND_ROBIN mode cannot have multiple endpoints");
        if (se->addresses.n > 0 && se->hosts.n > 1)
            for (uint32_t i = 0; i < se->ports.n; i++)
                if (proto_tcp(se->ports.v[i].protocol)) {
                    cfg_vwarn(
                        v, "hosts",
                        "with addresses and a TCP port, only the first host can be told apart");
                    break;
                }
        break;
    default:
        break;
    }
    for (uint32_t i = 0; i < se->endpoints.n; i++) {
        const cfg_WorkloadEntry *e = &se->endpoints.v[i];
        cfg_vmark_t p = cfg_venter(v, e->_line, ".endpoints[%u]", i);
        check_endpoint(v, se, e);
        cfg_vleave(v, p);
    }

    /* plain TCP cannot tell several hosts apart (except when hosts are ignored) */
    if (res != cfg_ServiceEntryResolution_NONE && se->hosts.n > 1)
        for (uint32_t i = 0; i < se->ports.n; i++) {
            const char *pr = se->ports.v[i].protocol;
            if (!proto_http(pr) && !proto_tls(pr)) {
                cfg_vmark_t p = cfg_venter(v, 0, ".ports[%u]", i);
                cfg_verr(v, "protocol",
                         "several hosts need HTTP or TLS ports to be told apart (resolution %s)",
                         res_name);
                cfg_vleave(v, p);
                break;
            }
        }
    check_export_to(v, &se->exportTo, true, false);
    cfg_vleave(v, top);
}

/* ------------------------------------------------------------------ */
/* Sidecar                                                             */

/* defaultEndpoint of an ingress listener: unix://path, or [host]:port with a
 * loopback or unspecified host. */
static void check_default_endpoint(cfg_vctx_t *v, const char *ep)
{
    if (has_prefix(ep, "unix://")) {
        check_unix_address(v, "defaultEndpoint", ep + 7);
        return;
    }
    const char *colon = strrchr(ep, ':');
    if (colon == NULL) {
        cfg_verr(v, "defaultEndpoint", "\"%s\" must be host:port or unix://path", ep);
        return;
    }
    char host[64];
    size_t n = (size_t)(colon - ep);
    const char *h = ep;
    if (n >= 2 && ep[0] == '[' && ep[n - 1] == ']')
        h = ep + 1, n -= 2;
    if (n >= sizeof(host)) {
        cfg_verr(v, "defaultEndpoint", "\"%s\" must be host:port or unix://path", ep);
        return;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    if (n > 0 && strcmp(host, "127.0.0.1") != 0 && strcmp(host, "0.0.0.0") != 0 &&
        strcmp(host, "::1") != 0 && strcmp(host, "::") != 0)
        cfg_verr(
            v, "defaultEndpoint",
            "must be 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://path");
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0')
        cfg_verr(v, "defaultEndpoint", "port \"%s\" is not a number", colon + 1);
    else
        check_port(v, "defaultEndpoint", port);
}

static void check_sidecar_port_common(cfg_vctx_t *v, const cfg_SidecarPort *pt)
{
    if (pt->name != NULL && pt->name[0] != '\0' && !cfg_is_port_name(pt->name))
        cfg_verr(v, "port.name", "\"%s\" is not a valid port name (a DNS label)", pt->name);
    check_protocol(v, "port.protocol", pt->protocol);
    if (HAS(pt, SidecarPort, targetPort))
        cfg_verr(v, "port.targetPort", "has no effect on sidecars; remove it");
}

void cfg_validate_Sidecar(cfg_vctx_t *v, const void *body)
{
    const cfg_SidecarObject *o = body;
    const cfg_Sidecar *sc = o->spec;
    if (sc == NULL) {
        warn_missing_spec(v, "sidecar");
        return;
    }
    cfg_vmark_t top = cfg_venter(v, sc->_line, ".spec");
    if (sc->workloadSelector != NULL) {
        cfg_vmark_t p = cfg_venter(v, sc->workloadSelector->_line, ".workloadSelector");
        check_selector_labels(v, "labels", &sc->workloadSelector->labels);
        cfg_vleave(v, p);
    }
    if (sc->egress.n == 0 && sc->ingress.n == 0 && sc->outboundTrafficPolicy == NULL &&
        sc->inboundConnectionPool == NULL)
        cfg_verr(v, NULL,
                 "empty configuration: set ingress, egress, outboundTrafficPolicy or "
                 "inboundConnectionPool");

    for (uint32_t i = 0; i < sc->ingress.n; i++) {
        const cfg_IstioIngressListener *in = &sc->ingress.v[i];
        cfg_vmark_t p = cfg_venter(v, in->_line, ".ingress[%u]", i);
        if (in->port == NULL) {
            cfg_verr(v, "port", "an ingress listener needs a port");
            cfg_vleave(v, p);
            continue;
        }
        check_sidecar_port_common(v, in->port);
        check_port(v, "port.number", in->port->number);
        if (in->bind != NULL && !cfg_is_ip(in->bind))
            cfg_verr(v, "bind", "\"%s\" is not an IP address", in->bind);
        for (uint32_t j = 0; j < i; j++)
            if (sc->ingress.v[j].port != NULL &&
                sc->ingress.v[j].port->number == in->port->number) {
                cfg_verr(
                    v, "port.number",
                    "ports of ingress listeners must be unique: %u is also used by ingress[%u]",
                    in->port->number, j);
                break;
            }
        if (in->defaultEndpoint != NULL && in->defaultEndpoint[0] != '\0')
            check_default_endpoint(v, in->defaultEndpoint);
        if (in->tls != NULL) {
            const cfg_ServerTLSSettings *t = in->tls;
            cfg_vmark_t q = cfg_venter(v, t->_line, ".tls");
            if (t->subjectAltNames.n > 0)
                cfg_verr(v, "subjectAltNames", "not supported on sidecar ingress");
            if (t->httpsRedirect)
                cfg_verr(v, "httpsRedirect", "not supported on sidecar ingress");
            if (t->credentialName != NULL || t->credentialNames.n > 0)
                cfg_verr(v, "credentialName", "not supported on sidecar ingress");
            if (t->mode == cfg_ServerTLSmode_ISTIO_MUTUAL ||
                t->mode == cfg_ServerTLSmode_AUTO_PASSTHROUGH)
                cfg_verr(v, "mode", "%s cannot be used on sidecar ingress",
                         cfg_enum_name(&cfg_enum_ServerTLSmode, t->mode));
            check_server_tls(v, t);
            cfg_vleave(v, q);
        }
        if (in->connectionPool != NULL) {
            check_connection_pool(v, "connectionPool", in->connectionPool);
            if (in->connectionPool->http != NULL && !proto_http(in->port->protocol))
                cfg_vwarn(v, "connectionPool.http",
                          "port %u is not an HTTP port (protocol %s): only the tcp settings apply",
                          in->port->number, in->port->protocol ? in->port->protocol : "unset");
        }
        cfg_vleave(v, p);
    }
    if (sc->inboundConnectionPool != NULL)
        check_connection_pool(v, "inboundConnectionPool", sc->inboundConnectionPool);

    bool catch_all = false;
    for (uint32_t i = 0; i < sc->egress.n; i++) {
        const cfg_IstioEgressListener *eg = &sc->egress.v[i];
        cfg_vmark_t p = cfg_venter(v, eg->_line, ".egress[%u]", i);
        if (eg->port == NULL) {
            if (catch_all)
                cfg_verr(v, "port", "only one egress listener may leave out the port");
            else if (i + 1 != sc->egress.n)
                cfg_verr(v, "port", "the egress listener without a port must be the last one");
            catch_all = true;
        } else {
            const cfg_SidecarPort *pt = eg->port;
            bool uds = eg->bind != NULL && has_prefix(eg->bind, "unix://");
            check_sidecar_port_common(v, pt);
            if (pt->number == 0) {
                if (!uds)
                    cfg_verr(v, "bind", "a listener with port 0 needs a unix:// bind address");
                else
                    check_unix_address(v, "bind", eg->bind + 7);
                if (eg->captureMode != cfg_CaptureMode_DEFAULT &&
                    eg->captureMode != cfg_CaptureMode_NONE)
                    cfg_verr(v, "captureMode",
                             "must be DEFAULT or NONE for unix domain socket listeners");
                for (uint32_t j = 0; j < i; j++) {
                    const cfg_IstioEgressListener *ej = &sc->egress.v[j];
                    if (ej->port != NULL && ej->port->number == 0 && ej->bind && eg->bind &&
                        strcmp(ej->bind, eg->bind) == 0) {
                        cfg_verr(v, "bind", "unix domain sockets of listeners must be unique");
                        break;
                    }
                }
            } else {
                check_port(v, "port.number", pt->number);
                if (eg->bind != NULL && !cfg_is_ip(eg->bind))
                    cfg_verr(v, "bind", "\"%s\" is not an IP address or unix:// path", eg->bind);
                for (uint32_t j = 0; j < i; j++) {
                    const cfg_IstioEgressListener *ej = &sc->egress.v[j];
                    if (ej->port != NULL && ej->port->number == pt->number) {
                        cfg_verr(v, "port.number",
                                 "ports of egress listeners must be unique: %u is also used by "
                                 "egress[%u]",
                                 pt->number, j);
                        break;
                    }
                }
            }
        }
        if (eg->hosts.n == 0)
            cfg_verr(v, "hosts", "an egress listener needs at least one host");
        for (uint32_t j = 0; j < eg->hosts.n; j++) {
            cfg_vmark_t q = cfg_venter(v, 0, ".hosts[%u]", j);
            check_ns_host(v, eg->hosts.v[j], false);
            for (uint32_t k = 0; k < j; k++)
                if (strcmp(eg->hosts.v[k], eg->hosts.v[j]) == 0) {
                    cfg_vwarn(v, NULL, "duplicate host \"%s\"", eg->hosts.v[j]);
                    break;
                }
            cfg_vleave(v, q);
        }
        cfg_vleave(v, p);
    }

    if (sc->outboundTrafficPolicy != NULL) {
        const cfg_OutboundTrafficPolicy *ot = sc->outboundTrafficPolicy;
        cfg_vmark_t p = cfg_venter(v, ot->_line, ".outboundTrafficPolicy");
        if (ot->egressProxy != NULL) {
            const char *why = NULL;
            if (ot->mode != cfg_OutboundTrafficPolicyMode_ALLOW_ANY)
                cfg_verr(v, "egressProxy", "can only be set with mode ALLOW_ANY");
            else if (ot->egressProxy->port == NULL)
                cfg_verr(v, "egressProxy.port", "required field is missing");
            else if (ot->egressProxy->host != NULL && !fqdn(ot->egressProxy->host, &why))
                cfg_verr(v, "egressProxy.host", "\"%s\" is not a fully qualified host: %s",
                         ot->egressProxy->host, why);
            else
                check_destination_at(v, "egressProxy", ot->egressProxy);
        }
        cfg_vleave(v, p);
    }
    cfg_vleave(v, top);
}
