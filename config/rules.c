/* Rule helpers shared by the validators: names, hosts, addresses, ports, regexes. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <ctype.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool label_ok(const char *s, size_t n, bool lower_only)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = is_alnum_lower(c) || c == '-' || (!lower_only && c >= 'A' && c <= 'Z');
        if (!ok)
            return false;
    }
    return s[0] != '-' && s[n - 1] != '-';
}

bool cfg_is_dns1123_label(const char *s)
{
    return s != NULL && label_ok(s, strlen(s), true);
}

bool cfg_is_dns1123_subdomain(const char *s)
{
    if (s == NULL)
        return false;
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    /* lowercase alphanumerics, '-' and '.', alphanumeric at both ends */
    for (size_t i = 0; i < len; i++)
        if (!is_alnum_lower(s[i]) && s[i] != '-' && s[i] != '.')
            return false;
    if (!is_alnum_lower(s[0]) || !is_alnum_lower(s[len - 1]))
        return false;
    for (const char *p = s; *p;) { /* labels: no length limit of their own, only 253 in all */
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || !is_alnum_lower(p[0]) || !is_alnum_lower(p[n - 1]))
            return false;
        p = dot ? dot + 1 : p + n;
    }
    return true;
}

/* Kubernetes "qualified name": [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, <= 63. */
static bool qualified_name(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

bool cfg_is_label_key(const char *s, const char **why)
{
    const char *slash = strchr(s, '/');
    const char *name = s;
    if (slash != NULL) {
        char prefix[254];
        size_t pn = (size_t)(slash - s);
        if (pn == 0 || pn > 253) {
            *why = "prefix must be a DNS subdomain of at most 253 characters";
            return false;
        }
        memcpy(prefix, s, pn);
        prefix[pn] = '\0';
        if (!cfg_is_dns1123_subdomain(prefix)) {
            *why = "prefix must be a lowercase DNS subdomain";
            return false;
        }
        name = slash + 1;
    }
    if (!qualified_name(name, strlen(name))) {
        *why = "name part must be 1-63 characters of [A-Za-z0-9_.-], starting and ending with "
               "an alphanumeric character";
        return false;
    }
    return true;
}

bool cfg_is_label_value(const char *s, const char **why)
{
    size_t n = strlen(s);
    if (n == 0)
        return true;
    if (!qualified_name(s, n)) {
        *why = "must be at most 63 characters of [A-Za-z0-9_.-], starting and ending with an "
               "alphanumeric character";
        return false;
    }
    return true;
}

void cfg_check_labels(cfg_vctx_t *v, const char *field, const cfg_map_t *labels)
{
    for (uint32_t i = 0; i < labels->n; i++) {
        const char *why = NULL;
        const cfg_mapent_t *e = &labels->v[i];
        size_t mark = cfg_vpush(v, ".%s", field);
        if (!cfg_is_label_key(e->key, &why))
            cfg_verr(v, NULL, "invalid label key \"%s\": %s", e->key, why);
        else if (e->str != NULL && !cfg_is_label_value(e->str, &why))
            cfg_verr(v, NULL, "invalid value \"%s\" for label \"%s\": %s", e->str, e->key, why);
        cfg_vpop(v, mark);
    }
}

/* ---- hosts ---- */

static bool dns_name(const char *s, const char **why)
{
    size_t len = strlen(s);
    if (len == 0) {
        *why = "host must not be empty";
        return false;
    }
    if (len > 255) {
        *why = "host is longer than 255 characters";
        return false;
    }
    if (s[len - 1] == '.')
        len--; /* a trailing dot (absolute name) is allowed */
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && s[j] != '.')
            j++;
        if (!label_ok(s + i, j - i, false)) {
            *why = "each part of a host name must be 1-63 letters, digits or '-', not starting "
                   "or ending with '-'";
            return false;
        }
        i = j + 1;
    }
    return true;
}

bool cfg_is_fqdn(const char *host, const char **why)
{
    if (strchr(host, '*') != NULL) {
        *why = "wildcards are not allowed here";
        return false;
    }
    return dns_name(host, why);
}

bool cfg_is_wildcard_domain(const char *host, const char **why)
{
    if (strcmp(host, "*") == 0)
        return true;
    if (strncmp(host, "*.", 2) == 0)
        return dns_name(host + 2, why);
    if (strchr(host, '*') != NULL) {
        *why = "a wildcard is only allowed as the whole host (\"*\") or its first label (\"*.example.com\")";
        return false;
    }
    return dns_name(host, why);
}

bool cfg_is_namespaced_host(const char *s, const char **why)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || strchr(slash + 1, '/') != NULL) {
        *why = "must be of the form namespace/host (\"*/\", \"./\" or \"~/\" for any, the same "
               "or no namespace)";
        return false;
    }
    char ns[64];
    size_t n = (size_t)(slash - s);
    if (n == 0 || n >= sizeof(ns)) {
        *why = "namespace part must be a namespace name, \"*\", \".\" or \"~\"";
        return false;
    }
    memcpy(ns, s, n);
    ns[n] = '\0';
    if (strcmp(ns, "*") != 0 && strcmp(ns, ".") != 0 && strcmp(ns, "~") != 0 &&
        !cfg_is_dns1123_label(ns)) {
        *why = "namespace part must be a namespace name, \"*\", \".\" or \"~\"";
        return false;
    }
    return cfg_is_wildcard_domain(slash + 1, why);
}

bool cfg_is_gateway_ref(const char *s, const char **why)
{
    if (strcmp(s, "mesh") == 0)
        return true;
    const char *slash = strchr(s, '/');
    const char *name = s;
    if (slash != NULL) {
        char ns[64];
        size_t n = (size_t)(slash - s);
        if (n == 0 || n >= sizeof(ns)) {
            *why = "namespace part of a gateway reference must be a namespace name";
            return false;
        }
        memcpy(ns, s, n);
        ns[n] = '\0';
        if (!cfg_is_dns1123_label(ns)) {
            *why = "namespace part of a gateway reference must be a namespace name";
            return false;
        }
        name = slash + 1;
    }
    /* "name" may also be written as a host: name.namespace.svc.cluster.local */
    if (!cfg_is_dns1123_subdomain(name)) {
        *why = "gateway name must be a DNS-1123 name, \"namespace/name\" or \"mesh\"";
        return false;
    }
    return true;
}

/* ---- addresses ---- */

bool cfg_is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

bool cfg_is_cidr(const char *s)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL)
        return false;
    char addr[64];
    size_t n = (size_t)(slash - s);
    if (n == 0 || n >= sizeof(addr))
        return false;
    memcpy(addr, s, n);
    addr[n] = '\0';
    unsigned char buf[16];
    int max;
    if (inet_pton(AF_INET, addr, buf) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, addr, buf) == 1)
        max = 128;
    else
        return false;
    const char *p = slash + 1;
    if (*p == '\0' || strlen(p) > 3)
        return false;
    int bits = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        bits = bits * 10 + (*p - '0');
    }
    return bits <= max;
}

bool cfg_is_ip_or_cidr(const char *s, const char **why)
{
    if (cfg_is_ip(s) || cfg_is_cidr(s))
        return true;
    *why = "must be an IP address or a CIDR block such as 10.0.0.0/16";
    return false;
}

/* ---- ports and protocols ---- */

bool cfg_is_port(int64_t p)
{
    return p >= 1 && p <= 65535;
}

bool cfg_is_protocol(const char *p)
{
    static const char *const names[] = {"HTTP",  "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO",
                                        "MYSQL", "REDIS", "TCP",  "TLS",      "UDP",   NULL};
    for (const char *const *n = names; *n; n++)
        if (strcasecmp(p, *n) == 0)
            return true;
    return false;
}

bool cfg_is_port_name(const char *s)
{
    return cfg_is_dns1123_label(s);
}

/* ---- values ---- */

/*
 * RE2 refuses constructs that need backtracking: backreferences (\1, \k<n>),
 * lookahead and lookbehind ((?=, (?!, (?<=, (?<!), atomic groups ((?>),
 * possessive quantifiers (*+, ++, ?+, }+), recursion ((?R), (?1)) and
 * conditionals ((?(...)). Refusing them here keeps a route meaning the same
 * under meshd as under Istio.
 */
static const char *re2_incompatible(const char *re)
{
    bool in_class = false;
    for (const char *p = re; *p; p++) {
        if (*p == '\\') {
            char n = p[1];
            if (n == '\0')
                return NULL; /* PCRE2 reports the trailing backslash */
            if (!in_class && ((n >= '1' && n <= '9') || n == 'k' || n == 'g'))
                return "backreferences are not supported (RE2 syntax)";
            p++;
            continue;
        }
        if (in_class) {
            if (*p == ']')
                in_class = false;
            continue;
        }
        if (*p == '[') {
            in_class = true;
            if (p[1] == '^')
                p++;
            if (p[1] == ']')
                p++;
            continue;
        }
        if (*p == '(' && p[1] == '?') {
            const char *q = p + 2;
            if (*q == '=' || *q == '!')
                return "lookahead is not supported (RE2 syntax)";
            if (*q == '<' && (q[1] == '=' || q[1] == '!'))
                return "lookbehind is not supported (RE2 syntax)";
            if (*q == '>')
                return "atomic groups are not supported (RE2 syntax)";
            if (*q == 'R' || (*q >= '0' && *q <= '9') || *q == '&' || (*q == 'P' && q[1] == '>') ||
                *q == '+' || *q == '-')
                return "recursion is not supported (RE2 syntax)";
            if (*q == '(')
                return "conditional groups are not supported (RE2 syntax)";
        }
        if ((*p == '*' || *p == '+' || *p == '?' || *p == '}') && p[1] == '+')
            return "possessive quantifiers are not supported (RE2 syntax)";
    }
    return NULL;
}

bool cfg_is_regex(const char *re, char *why, size_t why_size)
{
    const char *bad = re2_incompatible(re);
    if (bad != NULL) {
        snprintf(why, why_size, "%s", bad);
        return false;
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (c == NULL) {
        char msg[160];
        pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof(msg));
        snprintf(why, why_size, "invalid regular expression at offset %zu: %s", (size_t)off, msg);
        return false;
    }
    pcre2_code_free(c);
    return true;
}

void cfg_check_duration_min(cfg_vctx_t *v, const char *field, int64_t ns, int64_t min_ns)
{
    if (ns < min_ns) {
        char have[32], want[32];
        cfg_format_duration(ns, have, sizeof(have));
        cfg_format_duration(min_ns, want, sizeof(want));
        cfg_verr(v, field, "must be at least %s, got %s", want, have);
    }
}

bool cfg_is_url(const char *s, const char **why)
{
    const char *sep = strstr(s, "://");
    if (sep == NULL || sep == s) {
        *why = "url must have scheme http:// or https://";
        return false;
    }
    size_t sl = (size_t)(sep - s);
    if (!((sl == 4 && strncasecmp(s, "http", 4) == 0) || (sl == 5 && strncasecmp(s, "https", 5) == 0))) {
        *why = "url scheme must be http or https";
        return false;
    }
    const char *host = sep + 3;
    if (*host == '\0' || *host == '/' || *host == ':') {
        *why = "url must have a host";
        return false;
    }
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '\\' || (unsigned char)*p == 0x7f) {
            *why = "url contains a space, control character or backslash";
            return false;
        }
    return true;
}

bool cfg_is_header_name(const char *s)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && strchr(tchar, *p) == NULL)
            return false;
    return true;
}
