/*
 * init: `meshproxy init` (the pod's iptables capture, as Istio's
 * istio-iptables builds it for REDIRECT mode) and `meshproxy wait` (block
 * until the proxy is ready). See init_internal.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "httpget.h"
#include "init_internal.h"

/* ---- flags ------------------------------------------------------------- */

enum init_flag {
    F_OUTBOUND_PORT,
    F_INBOUND_PORT,
    F_TUNNEL_PORT,
    F_UID,
    F_GID,
    F_MODE,
    F_INCLUDE_CIDRS,
    F_EXCLUDE_CIDRS,
    F_INBOUND_PORTS,
    F_EXCLUDE_INBOUND_PORTS,
    F_EXCLUDE_OUTBOUND_PORTS,
    F_INCLUDE_OUTBOUND_PORTS,
    F_VIRT_IFACES,
    F_EXCLUDE_IFACES,
    F_DRY_RUN,
    F_RUN_VALIDATION,
    F_SKIP_APPLY,
    F_HELP,
};

/* istio-iptables' flags, with the same short and long names. */
static const struct init_flag_def {
    char short_name; /* 0: long form only */
    const char *long_name;
    enum init_flag id;
    bool is_bool;
    const char *help;
} init_flags[] = {
    {'p', "envoy-port", F_OUTBOUND_PORT, false, "port outbound TCP is redirected to (15001)"},
    {'z', "inbound-capture-port", F_INBOUND_PORT, false,
     "port inbound TCP is redirected to (15006)"},
    {0, "inbound-tunnel-port", F_TUNNEL_PORT, false, "inbound port never captured (15008)"},
    {'u', "proxy-uid", F_UID, false, "UIDs whose traffic is never captured (1337)"},
    {'g', "proxy-gid", F_GID, false, "GIDs whose traffic is never captured (the UIDs)"},
    {'m', "istio-inbound-interception-mode", F_MODE, false, "REDIRECT"},
    {'i', "istio-service-cidr", F_INCLUDE_CIDRS, false,
     "outbound CIDRs to capture, \"*\" for all (none)"},
    {'x', "istio-service-exclude-cidr", F_EXCLUDE_CIDRS, false, "outbound CIDRs never captured"},
    {'b', "istio-inbound-ports", F_INBOUND_PORTS, false,
     "inbound ports to capture, \"*\" for all (none)"},
    {'d', "istio-local-exclude-ports", F_EXCLUDE_INBOUND_PORTS, false,
     "inbound ports never captured (with -b \"*\")"},
    {'o', "istio-local-outbound-ports-exclude", F_EXCLUDE_OUTBOUND_PORTS, false,
     "outbound ports never captured"},
    {'q', "istio-local-outbound-ports-include", F_INCLUDE_OUTBOUND_PORTS, false,
     "outbound ports captured whatever the destination"},
    {'k', "kube-virt-interfaces", F_VIRT_IFACES, false,
     "interfaces whose inbound traffic is treated as outbound"},
    {'c', "exclude-interfaces", F_EXCLUDE_IFACES, false, "interfaces never captured"},
    {'n', "dry-run", F_DRY_RUN, true, "print the rules, change nothing"},
    {0, "run-validation", F_RUN_VALIDATION, true,
     "after applying, check that outbound capture works"},
    {0, "skip-rule-apply", F_SKIP_APPLY, true, "apply nothing (with --run-validation: only check)"},
    {'h', "help", F_HELP, true, "this help"},
};
#define NFLAGS (sizeof(init_flags) / sizeof(init_flags[0]))

void px_init_usage(FILE *f)
{
    fprintf(f, "usage: meshproxy init [flags]   (Istio's istio-iptables flags, REDIRECT mode)\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct init_flag_def *d = &init_flags[i];
        char name[64];
        if (d->short_name)
            snprintf(name, sizeof(name), "-%c, --%s", d->short_name, d->long_name);
        else
            snprintf(name, sizeof(name), "    --%s", d->long_name);
        fprintf(f, "  %-42s %s\n", name, d->help);
    }
}


/* Copies the next comma-separated item of *s (spaces trimmed) into item;
 * returns false at the end. Empty items are skipped. */
static bool next_item(const char **s, char *item, size_t len, bool *too_long)
{
    *too_long = false;
    for (;;) {
        const char *p = *s;
        if (*p == '\0')
            return false;
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        *s = *end ? end + 1 : end;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *q = end;
        while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
            q--;
        if (q == p)
            continue;
        size_t n = (size_t)(q - p);
        if (n >= len) {
            *too_long = true;
            n = len - 1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        return true;
    }
}

static int parse_port(const char *flag, const char *v, int *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || errno || *end || x < 1 || x > 65535)
        return mesh_errf(err, errlen, "%s: \"%s\" is not a port (1-65535)", flag, v);
    *out = (int)x;
    return 0;
}

static int parse_port_list(const char *flag, const char *v, uint16_t *ports, size_t *n, char *err,
                           size_t errlen)
{
    char item[64];
    bool too_long;
    *n = 0;
    for (const char *s = v; next_item(&s, item, sizeof(item), &too_long);) {
        int port;
        if (too_long || strcmp(item, "*") == 0 || parse_port(flag, item, &port, err, errlen) < 0) {
            if (!too_long && strcmp(item, v) == 0)
                return mesh_errf(err, errlen, "%s: \"%s\" is not a port (1-65535)", flag, v);
            return mesh_errf(err, errlen, "%s: \"%s\": \"%s%s\" is not a port (1-65535)", flag, v, item,
                        too_long ? "..." : "");
        }
        if (*n == PX_INIT_MAX_LIST)
            return mesh_errf(err, errlen, "%s: \"%s\": more than %d ports", flag, v, PX_INIT_MAX_LIST);
        ports[(*n)++] = (uint16_t)port;
    }
    return 0;
}

/* "*" (all), "" (none) or a list of ports. */
static int parse_port_selector(const char *flag, const char *v, px_list_kind_t *kind,
                               uint16_t *ports, size_t *n, char *err, size_t errlen)
{
    char item[8];
    bool too_long;
    const char *s = v;
    *n = 0;
    if (!next_item(&s, item, sizeof(item), &too_long)) {
        *kind = PX_LIST_NONE;
        return 0;
    }
    if (!too_long && strcmp(item, "*") == 0) {
        if (next_item(&s, item, sizeof(item), &too_long))
            return mesh_errf(err, errlen, "%s: \"%s\": \"*\" must stand alone", flag, v);
        *kind = PX_LIST_ALL;
        return 0;
    }
    *kind = PX_LIST_SOME;
    return parse_port_list(flag, v, ports, n, err, errlen);
}

static int parse_id_list(const char *flag, const char *v, uint32_t *ids, size_t *n, char *err,
                         size_t errlen)
{
    char item[32];
    bool too_long;
    *n = 0;
    for (const char *s = v; next_item(&s, item, sizeof(item), &too_long);) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(item, &end, 10);
        if (too_long || item[0] == '-' || errno || *end || x >= UINT32_MAX)
            return mesh_errf(err, errlen, "%s: \"%s\": \"%s%s\" is not a numeric user or group ID", flag,
                        v, item, too_long ? "..." : "");
        if (*n == PX_INIT_MAX_LIST)
            return mesh_errf(err, errlen, "%s: \"%s\": more than %d IDs", flag, v, PX_INIT_MAX_LIST);
        ids[(*n)++] = (uint32_t)x;
    }
    if (*n == 0)
        return mesh_errf(err, errlen, "%s: needs at least one numeric ID", flag);
    return 0;
}

/* Parses "ADDR/PREFIX" or a bare address (a host route); clears host bits. */
static int parse_cidr(const char *s, px_init_cidr_t *c)
{
    char addr[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(addr))
        return -1;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(c, 0, sizeof(*c));
    int max;
    if (inet_pton(AF_INET, addr, c->addr) == 1) {
        c->family = 4;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
        c->family = 6;
        max = 128;
    } else {
        return -1;
    }
    c->prefix = max;
    if (slash) {
        const char *p = slash + 1;
        char *end;
        if (*p < '0' || *p > '9')
            return -1;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || *end || x < 0 || x > max)
            return -1;
        c->prefix = (int)x;
    }
    for (int bit = c->prefix; bit < max; bit++)
        c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

void px_init_cidr_format(const px_init_cidr_t *c, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    if (inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, a, sizeof(a)) == NULL)
        a[0] = '\0';
    snprintf(buf, len, "%s/%d", a, c->prefix);
}

static int parse_cidr_list(const char *flag, const char *v, bool allow_all, px_list_kind_t *kind,
                           px_init_cidr_t *cidrs, size_t *n, char *err, size_t errlen)
{
    char item[INET6_ADDRSTRLEN + 8];
    bool too_long;
    const char *s = v;
    *n = 0;
    if (!next_item(&s, item, sizeof(item), &too_long)) {
        *kind = PX_LIST_NONE;
        return 0;
    }
    if (!too_long && strcmp(item, "*") == 0) {
        if (!allow_all)
            return mesh_errf(err, errlen, "%s: \"*\" is not allowed here: list the CIDRs to exclude",
                        flag);
        if (next_item(&s, item, sizeof(item), &too_long))
            return mesh_errf(err, errlen, "%s: \"%s\": \"*\" must stand alone", flag, v);
        *kind = PX_LIST_ALL;
        return 0;
    }
    *kind = PX_LIST_SOME;
    for (s = v; next_item(&s, item, sizeof(item), &too_long);) {
        if (*n == PX_INIT_MAX_LIST)
            return mesh_errf(err, errlen, "%s: \"%s\": more than %d CIDRs", flag, v, PX_INIT_MAX_LIST);
        if (too_long || parse_cidr(item, &cidrs[*n]) < 0)
            return mesh_errf(err, errlen, "%s: \"%s\" is not a CIDR (like 10.0.0.0/8 or fd00::/8)", flag,
                        item);
        (*n)++;
    }
    return 0;
}

static int parse_iface_list(const char *flag, const char *v, char (*names)[PX_INIT_IFNAME],
                            size_t *n, char *err, size_t errlen)
{
    char item[256];
    bool too_long;
    *n = 0;
    for (const char *s = v; next_item(&s, item, sizeof(item), &too_long);) {
        size_t len = strlen(item);
        bool ok =
            !too_long && len < PX_INIT_IFNAME && strcmp(item, ".") != 0 && strcmp(item, "..") != 0;
        for (size_t i = 0; ok && i < len; i++) {
            unsigned char ch = (unsigned char)item[i];
            if (ch <= ' ' || ch == '/' || ch == ':' || ch >= 0x7f || ch == '!')
                ok = false;
        }
        if (!ok)
            return mesh_errf(err, errlen,
                        "%s: \"%s%s\" is not an interface name (at most 15 "
                        "characters, no spaces, '/', ':' or '!')",
                        flag, item, too_long ? "..." : "");
        if (*n == PX_INIT_MAX_LIST)
            return mesh_errf(err, errlen, "%s: \"%s\": more than %d interfaces", flag, v,
                        PX_INIT_MAX_LIST);
        memcpy(names[(*n)++], item, len + 1);
    }
    return 0;
}

static int parse_bool(const char *flag, const char *v, bool *out, char *err, size_t errlen)
{
    static const char *const yes[] = {"1", "t", "T", "true", "TRUE", "True"};
    static const char *const no[] = {"0", "f", "F", "false", "FALSE", "False"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return mesh_errf(err, errlen, "%s: \"%s\" is not a boolean (true or false)", flag, v);
}

static int apply_flag(px_init_opts_t *o, const struct init_flag_def *d, const char *flag,
                      const char *v, bool *gid_set, char *err, size_t errlen)
{
    px_list_kind_t kind;
    switch (d->id) {
    case F_OUTBOUND_PORT:
        return parse_port(flag, v, &o->outbound_port, err, errlen);
    case F_INBOUND_PORT:
        return parse_port(flag, v, &o->inbound_port, err, errlen);
    case F_TUNNEL_PORT:
        return parse_port(flag, v, &o->tunnel_port, err, errlen);
    case F_UID:
        return parse_id_list(flag, v, o->uids, &o->nuids, err, errlen);
    case F_GID:
        *gid_set = true;
        return parse_id_list(flag, v, o->gids, &o->ngids, err, errlen);
    case F_MODE:
        if (strcmp(v, "REDIRECT") == 0)
            return 0;
        if (strcmp(v, "TPROXY") == 0)
            return mesh_errf(err, errlen,
                        "%s: \"TPROXY\" is not supported: meshproxy captures inbound traffic with "
                        "REDIRECT only "
                        "(set sidecar.istio.io/interceptionMode: REDIRECT)",
                        flag);
        return mesh_errf(err, errlen, "%s: \"%s\" is not an interception mode (REDIRECT)", flag, v);
    case F_INCLUDE_CIDRS:
        return parse_cidr_list(flag, v, true, &o->include_cidrs_kind, o->include_cidrs,
                               &o->ninclude_cidrs, err, errlen);
    case F_EXCLUDE_CIDRS:
        return parse_cidr_list(flag, v, false, &kind, o->exclude_cidrs, &o->nexclude_cidrs, err,
                               errlen);
    case F_INBOUND_PORTS:
        return parse_port_selector(flag, v, &o->inbound_ports_kind, o->inbound_ports,
                                   &o->ninbound_ports, err, errlen);
    case F_EXCLUDE_INBOUND_PORTS:
        return parse_port_list(flag, v, o->exclude_inbound_ports, &o->nexclude_inbound_ports, err,
                               errlen);
    case F_EXCLUDE_OUTBOUND_PORTS:
        return parse_port_list(flag, v, o->exclude_outbound_ports, &o->nexclude_outbound_ports, err,
                               errlen);
    case F_INCLUDE_OUTBOUND_PORTS:
        return parse_port_list(flag, v, o->include_outbound_ports, &o->ninclude_outbound_ports, err,
                               errlen);
    case F_VIRT_IFACES:
        return parse_iface_list(flag, v, o->virt_ifaces, &o->nvirt_ifaces, err, errlen);
    case F_EXCLUDE_IFACES:
        return parse_iface_list(flag, v, o->exclude_ifaces, &o->nexclude_ifaces, err, errlen);
    case F_DRY_RUN:
        return parse_bool(flag, v, &o->dry_run, err, errlen);
    case F_RUN_VALIDATION:
        return parse_bool(flag, v, &o->run_validation, err, errlen);
    case F_SKIP_APPLY:
        return parse_bool(flag, v, &o->skip_apply, err, errlen);
    case F_HELP:
        return parse_bool(flag, v, &o->help, err, errlen);
    }
    return mesh_errf(err, errlen, "%s: unhandled flag", flag);
}

int px_init_parse(int argc, char **argv, px_init_opts_t *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    o->outbound_port = 15001;
    o->inbound_port = 15006;
    o->tunnel_port = 15008;
    o->uids[0] = o->gids[0] = 1337;
    o->nuids = o->ngids = 1;
    o->include_cidrs_kind = PX_LIST_NONE;
    o->inbound_ports_kind = PX_LIST_NONE;
    bool gid_set = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const struct init_flag_def *d = NULL;
        const char *inline_val = NULL;
        char flag[80];
        if (a[0] == '-' && a[1] == '-' && a[2] != '\0') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t k = 0; k < NFLAGS && d == NULL; k++)
                if (strlen(init_flags[k].long_name) == nlen &&
                    strncmp(init_flags[k].long_name, name, nlen) == 0)
                    d = &init_flags[k];
            snprintf(flag, sizeof(flag), "--%.*s", (int)(nlen < 60 ? nlen : 60), name);
            if (eq)
                inline_val = eq + 1;
        } else if (a[0] == '-' && a[1] != '\0' && a[1] != '-') {
            for (size_t k = 0; k < NFLAGS && d == NULL; k++)
                if (init_flags[k].short_name == a[1])
                    d = &init_flags[k];
            snprintf(flag, sizeof(flag), "-%c", a[1]);
            if (a[2] != '\0')
                inline_val = a[2] == '=' ? a + 3 : a + 2;
        } else {
            return mesh_errf(err, errlen, "unexpected argument \"%s\" (flags start with - or --)", a);
        }
        if (d == NULL)
            return mesh_errf(err, errlen, "unknown flag \"%s\"", a);
        const char *v = inline_val;
        if (v == NULL && d->is_bool)
            v = "true";
        if (v == NULL) {
            if (i + 1 >= argc)
                return mesh_errf(err, errlen, "%s: needs a value", flag);
            v = argv[++i];
        }
        if (apply_flag(o, d, flag, v, &gid_set, err, errlen) < 0)
            return -1;
    }
    if (!gid_set) {
        memcpy(o->gids, o->uids, sizeof(o->uids));
        o->ngids = o->nuids;
    }
    if (o->outbound_port == o->inbound_port)
        return mesh_errf(err, errlen,
                    "-p and -z: the outbound and inbound capture ports must differ (both %d)",
                    o->outbound_port);
    return 0;
}

bool px_init_wants_ipv6(const px_init_opts_t *o)
{
    for (size_t i = 0; i < o->ninclude_cidrs; i++)
        if (o->include_cidrs[i].family == 6)
            return true;
    for (size_t i = 0; i < o->nexclude_cidrs; i++)
        if (o->exclude_cidrs[i].family == 6)
            return true;
    return false;
}

/* ---- rule generation --------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static bool is_builtin_nat_chain(const char *name, size_t len)
{
    static const char *const builtin[] = {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"};
    for (size_t i = 0; i < 4; i++)
        if (strlen(builtin[i]) == len && strncmp(builtin[i], name, len) == 0)
            return true;
    return false;
}

static bool is_our_chain(const char *target)
{
    static const char *const ours[] = {"ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT",
                                       "ISTIO_OUTPUT"};
    size_t len = strcspn(target, " \t\r\n");
    for (size_t i = 0; i < 4; i++)
        if (strlen(ours[i]) == len && strncmp(ours[i], target, len) == 0)
            return true;
    return false;
}

/* The rules a previous run left in the nat table's built-in chains, as
 * deletions: jumps into our chains, and the interface RETURN rules the
 * current flags would add again. */
static void emit_deletions(sbuf_t *b, const px_init_opts_t *o, const char *existing)
{
    if (existing == NULL)
        return;
    const char *p = strstr(existing, "*nat\n");
    if (p == NULL)
        return;
    p += 5;
    bool previous_run = false;
    char line[4096];
    for (int pass = 0; pass < 2; pass++) {
        for (const char *cur = p; *cur && strncmp(cur, "COMMIT", 6) != 0;) {
            const char *start = cur, *eol = strchr(cur, '\n');
            size_t len = eol ? (size_t)(eol - cur) : strlen(cur);
            cur = eol ? eol + 1 : cur + len;
            if (len >= sizeof(line) || len < 4 || strncmp(start, "-A ", 3) != 0)
                continue;
            memcpy(line, start, len);
            line[len] = '\0';
            const char *chain = line + 3;
            const char *jump = NULL;
            for (const char *q = strstr(line, " -j "); q; q = strstr(q + 1, " -j "))
                jump = q + 4;
            if (!is_builtin_nat_chain(chain, strcspn(chain, " ")) || jump == NULL)
                continue;
            bool del = false;
            if (pass == 0 && is_our_chain(jump)) {
                del = previous_run = true;
            } else if (pass == 1 && previous_run) {
                char want[PX_INIT_IFNAME + 64];
                for (size_t i = 0; i < o->nvirt_ifaces + o->nexclude_ifaces && !del; i++) {
                    bool virt = i < o->nvirt_ifaces;
                    const char *ifn =
                        virt ? o->virt_ifaces[i] : o->exclude_ifaces[i - o->nvirt_ifaces];
                    snprintf(want, sizeof(want), "-A PREROUTING -i %s -j RETURN", ifn);
                    del = strcmp(line, want) == 0;
                    if (!del && !virt) {
                        snprintf(want, sizeof(want), "-A OUTPUT -o %s -j RETURN", ifn);
                        del = strcmp(line, want) == 0;
                    }
                }
            }
            if (del)
                sb_printf(b, "-D %s\n", line + 3);
        }
    }
}

char *px_init_rules(const px_init_opts_t *o, int family, const char *existing)
{
    sbuf_t b = {0};
    const char *host_lo = family == 4 ? "127.0.0.1/32" : "::1/128";
    const char *passthrough = family == 4 ? "127.0.0.6/32" : "::6/128";
    char cidr[INET6_ADDRSTRLEN + 8];
    bool include_loopback = false;
    for (size_t i = 0; i < o->ninclude_cidrs; i++) {
        const px_init_cidr_t *c = &o->include_cidrs[i];
        static const uint8_t v6lo[16] = {[15] = 1};
        if (c->family == family &&
            ((family == 4 && c->addr[0] == 127) ||
             (family == 6 && c->prefix == 128 && memcmp(c->addr, v6lo, 16) == 0)))
            include_loopback = true;
    }

    sb_printf(&b, "# meshproxy init: %s capture for %s (REDIRECT mode)\n",
              family == 4 ? "IPv4" : "IPv6",
              family == 4 ? "iptables-restore --noflush" : "ip6tables-restore --noflush");
    sb_printf(&b,
              "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_REDIRECT - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n"
              ":ISTIO_OUTPUT - [0:0]\n");
    emit_deletions(&b, o, existing);

    /* Interfaces never captured, then virtual interfaces (first in PREROUTING). */
    for (size_t i = 0; i < o->nexclude_ifaces; i++) {
        sb_printf(&b, "-A PREROUTING -i %s -j RETURN\n", o->exclude_ifaces[i]);
        sb_printf(&b, "-A OUTPUT -o %s -j RETURN\n", o->exclude_ifaces[i]);
    }
    for (size_t i = 0; i < o->nvirt_ifaces; i++)
        sb_printf(&b, "-I PREROUTING 1 -i %s -j RETURN\n", o->virt_ifaces[i]);

    /* The capture chains. */
    sb_printf(&b, "-A ISTIO_INBOUND -p tcp --dport %d -j RETURN\n", o->tunnel_port);
    sb_printf(&b, "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports %d\n", o->outbound_port);
    sb_printf(&b, "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports %d\n", o->inbound_port);

    /* Inbound. */
    if (o->inbound_ports_kind != PX_LIST_NONE) {
        sb_printf(&b, "-A PREROUTING -p tcp -j ISTIO_INBOUND\n");
        if (o->inbound_ports_kind == PX_LIST_ALL) {
            for (size_t i = 0; i < o->nexclude_inbound_ports; i++)
                sb_printf(&b, "-A ISTIO_INBOUND -p tcp --dport %u -j RETURN\n",
                          o->exclude_inbound_ports[i]);
            sb_printf(&b, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n");
        } else {
            for (size_t i = 0; i < o->ninbound_ports; i++)
                sb_printf(&b, "-A ISTIO_INBOUND -p tcp --dport %u -j ISTIO_IN_REDIRECT\n",
                          o->inbound_ports[i]);
        }
    }

    /* Outbound. */
    sb_printf(&b, "-A OUTPUT -p tcp -j ISTIO_OUTPUT\n");
    for (size_t i = 0; i < o->nexclude_outbound_ports; i++)
        sb_printf(&b, "-A ISTIO_OUTPUT -p tcp --dport %u -j RETURN\n",
                  o->exclude_outbound_ports[i]);
    /* Connections the proxy makes from the inbound passthrough address. */
    sb_printf(&b, "-A ISTIO_OUTPUT -o lo -s %s -j RETURN\n", passthrough);
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t *ids = pass == 0 ? o->uids : o->gids;
        size_t n = pass == 0 ? o->nuids : o->ngids;
        const char *match = pass == 0 ? "uid-owner" : "gid-owner";
        for (size_t i = 0; i < n; i++) {
            /* The proxy calling this pod's own address (app -> proxy -> proxy
             * -> app through a service address) enters as inbound. */
            sb_printf(&b,
                      "-A ISTIO_OUTPUT -o lo ! -d %s -p tcp ! --dport %d -m owner --%s %u -j "
                      "ISTIO_IN_REDIRECT\n",
                      host_lo, o->tunnel_port, match, ids[i]);
            /* The application talking to itself over loopback stays direct. */
            if (!include_loopback)
                sb_printf(&b, "-A ISTIO_OUTPUT -o lo -m owner ! --%s %u -j RETURN\n", match,
                          ids[i]);
            /* Anything else the proxy sends is never captured again. */
            sb_printf(&b, "-A ISTIO_OUTPUT -m owner --%s %u -j RETURN\n", match, ids[i]);
        }
    }
    sb_printf(&b, "-A ISTIO_OUTPUT -d %s -j RETURN\n", host_lo);
    for (size_t i = 0; i < o->nexclude_cidrs; i++) {
        if (o->exclude_cidrs[i].family != family)
            continue;
        px_init_cidr_format(&o->exclude_cidrs[i], cidr, sizeof(cidr));
        sb_printf(&b, "-A ISTIO_OUTPUT -d %s -j RETURN\n", cidr);
    }
    for (size_t i = 0; i < o->ninclude_outbound_ports; i++)
        sb_printf(&b, "-A ISTIO_OUTPUT -p tcp --dport %u -j ISTIO_REDIRECT\n",
                  o->include_outbound_ports[i]);
    if (o->include_cidrs_kind == PX_LIST_ALL) {
        sb_printf(&b, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n");
        for (size_t i = 0; i < o->nvirt_ifaces; i++)
            sb_printf(&b, "-I PREROUTING 1 -i %s -j ISTIO_REDIRECT\n", o->virt_ifaces[i]);
    } else {
        for (size_t i = 0; i < o->ninclude_cidrs; i++) {
            if (o->include_cidrs[i].family != family)
                continue;
            px_init_cidr_format(&o->include_cidrs[i], cidr, sizeof(cidr));
            for (size_t k = 0; k < o->nvirt_ifaces; k++)
                sb_printf(&b, "-I PREROUTING 1 -i %s -d %s -j ISTIO_REDIRECT\n", o->virt_ifaces[k],
                          cidr);
            sb_printf(&b, "-A ISTIO_OUTPUT -d %s -j ISTIO_REDIRECT\n", cidr);
        }
    }
    sb_printf(&b, "COMMIT\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- applying ---------------------------------------------------------- */

/* Finds an executable by name in $PATH, then /usr/sbin and /sbin (where
 * Debian installs iptables, often outside a non-root PATH). */
static bool find_tool(const char *name, char *path, size_t len)
{
    const char *env = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/sbin", env ? env : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        struct stat st;
        if (snprintf(path, len, "%s/%s", *d ? d : ".", name) >= (int)len)
            continue;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
            return true;
    }
    return false;
}

/* Runs argv (argv[0] looked up with find_tool) with `input` on its stdin;
 * collects stdout into *out (malloc'd, may be NULL) and stderr into errtext.
 * Returns the exit status, or -1 with err set when it could not run. */
static int run_tool(const char *const *argv, const char *input, char **out, char *errtext,
                    size_t errtextlen, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int in[2] = {-1, -1}, op[2] = {-1, -1}, ep[2] = {-1, -1};
    int rc = -1;
    pid_t pid = -1;
    sbuf_t ob = {0};
    size_t elen = 0;
    if (out)
        *out = NULL;
    errtext[0] = '\0';
    if (!find_tool(argv[0], path, sizeof(path))) {
        mesh_errf(err, errlen, "%s: not found in PATH, /usr/sbin or /sbin (install the %s package)",
             argv[0], strcmp(argv[0], "ip") == 0 ? "iproute2" : "iptables");
        goto out;
    }
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        mesh_errf(err, errlen, "%s: pipe: %s", argv[0], strerror(errno));
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        mesh_errf(err, errlen, "%s: fork: %s", argv[0], strerror(errno));
        goto out;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(op[1], 1);
        dup2(ep[1], 2);
        execv(path, (char *const *)argv);
        dprintf(2, "exec %s: %s", path, strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(op[1]);
    close(ep[1]);
    in[0] = op[1] = ep[1] = -1;
    size_t ilen = input ? strlen(input) : 0, ioff = 0;
    if (ilen == 0) {
        close(in[1]);
        in[1] = -1;
    } else {
        fcntl(in[1], F_SETFL, O_NONBLOCK);
    }
    while (op[0] >= 0 || ep[0] >= 0 || in[1] >= 0) {
        struct pollfd pf[3] = {{.fd = in[1], .events = POLLOUT},
                               {.fd = op[0], .events = POLLIN},
                               {.fd = ep[0], .events = POLLIN}};
        if (poll(pf, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            mesh_errf(err, errlen, "%s: poll: %s", argv[0], strerror(errno));
            goto out;
        }
        if (in[1] >= 0 && pf[0].revents) {
            ssize_t n = write(in[1], input + ioff, ilen - ioff);
            if (n > 0)
                ioff += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || ioff == ilen) {
                close(in[1]);
                in[1] = -1;
            }
        }
        if (op[0] >= 0 && pf[1].revents) {
            char buf[4096];
            ssize_t n = read(op[0], buf, sizeof(buf));
            if (n > 0 && out)
                sb_printf(&ob, "%.*s", (int)n, buf);
            if (n == 0 || (n < 0 && errno != EINTR)) {
                close(op[0]);
                op[0] = -1;
            }
        }
        if (ep[0] >= 0 && pf[2].revents) {
            char buf[1024];
            ssize_t n = read(ep[0], buf, sizeof(buf));
            if (n > 0 && elen + 1 < errtextlen) {
                size_t k = (size_t)n < errtextlen - 1 - elen ? (size_t)n : errtextlen - 1 - elen;
                memcpy(errtext + elen, buf, k);
                elen += k;
                errtext[elen] = '\0';
            }
            if (n == 0 || (n < 0 && errno != EINTR)) {
                close(ep[0]);
                ep[0] = -1;
            }
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            mesh_errf(err, errlen, "%s: waitpid: %s", argv[0], strerror(errno));
            pid = -1;
            goto out;
        }
    }
    pid = -1;
    while (elen > 0 && (errtext[elen - 1] == '\n' || errtext[elen - 1] == ' '))
        errtext[--elen] = '\0';
    if (ob.oom) {
        mesh_errf(err, errlen, "%s: out of memory reading its output", argv[0]);
        goto out;
    }
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (out) {
        *out = ob.p;
        ob.p = NULL;
    }
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (op[i] >= 0)
            close(op[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    free(ob.p);
    return rc;
}

static int apply_family(const px_init_opts_t *o, int family, FILE *out, char *err, size_t errlen)
{
    const char *save_argv[] = {family == 4 ? "iptables-save" : "ip6tables-save", "-t", "nat", NULL};
    const char *restore_argv[] = {family == 4 ? "iptables-restore" : "ip6tables-restore",
                                  "--noflush", NULL};
    char *existing = NULL, *rules = NULL;
    char errtext[2048], why[512];
    int rc = -1;
    /* What a previous run left (none in a fresh pod); a failure only means
     * nothing to clean up, and iptables-restore reports real problems. */
    int st = run_tool(save_argv, NULL, &existing, errtext, sizeof(errtext), why, sizeof(why));
    if (st != 0) {
        log_debug("%s -t nat: %s", save_argv[0], st < 0 ? why : errtext);
        free(existing);
        existing = NULL;
    }
    rules = px_init_rules(o, family, existing);
    if (rules == NULL) {
        mesh_errf(err, errlen, "out of memory building the rules");
        goto out;
    }
    st = run_tool(restore_argv, rules, NULL, errtext, sizeof(errtext), err, errlen);
    if (st < 0)
        goto out;
    if (st != 0) {
        mesh_errf(err, errlen, "%s --noflush failed (exit %d): %s", restore_argv[0], st,
             errtext[0] ? errtext : "no message");
        goto out;
    }
    fprintf(out, "%s", rules);
    rc = 0;
out:
    free(existing);
    free(rules);
    return rc;
}

/* Checks that an outbound connection to a captured address really arrives
 * on the outbound capture port, with its original destination intact. */
static int validate_capture(const px_init_opts_t *o, FILE *out, char *err, size_t errlen)
{
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons(80)};
    int ls = -1, cs = -1, as = -1, rc = -1;
    bool found = false;
    if (o->include_cidrs_kind == PX_LIST_NONE) {
        fprintf(out,
                "validation: -i is empty, no outbound traffic is captured; nothing to check\n");
        return 0;
    }
    /* A destination that is captured and not excluded: TEST-NET-2 for "*",
     * else an address inside the first IPv4 include range. */
    for (size_t i = 0; !found && i < (o->include_cidrs_kind == PX_LIST_ALL ? 1 : o->ninclude_cidrs);
         i++) {
        px_init_cidr_t c = {.family = 4, .addr = {198, 51, 100, 1}, .prefix = 32};
        if (o->include_cidrs_kind == PX_LIST_SOME) {
            c = o->include_cidrs[i];
            if (c.family != 4 || c.addr[0] == 127)
                continue;
            if (c.prefix < 32)
                c.addr[3] |= 1;
        }
        bool excluded = false;
        for (size_t k = 0; k < o->nexclude_cidrs && !excluded; k++) {
            const px_init_cidr_t *x = &o->exclude_cidrs[k];
            if (x->family != 4)
                continue;
            uint32_t a, n;
            memcpy(&a, c.addr, 4);
            memcpy(&n, x->addr, 4);
            uint32_t mask = x->prefix ? htonl(~0u << (32 - x->prefix)) : 0;
            excluded = (a & mask) == n;
        }
        if (!excluded) {
            memcpy(&target.sin_addr, c.addr, 4);
            found = true;
        }
    }
    if (!found) {
        fprintf(out,
                "validation: no IPv4 include range outside the exclusions; nothing to check\n");
        return 0;
    }
    /* A destination port the flags do not exclude. */
    static const uint16_t candidates[] = {80, 8080, 443, 9080, 1};
    for (size_t c = 0; c < sizeof(candidates) / sizeof(candidates[0]); c++) {
        bool port_excluded = false;
        for (size_t i = 0; i < o->nexclude_outbound_ports; i++)
            port_excluded |= o->exclude_outbound_ports[i] == candidates[c];
        if (!port_excluded) {
            target.sin_port = htons(candidates[c]);
            break;
        }
    }
    char tname[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &target.sin_addr, tname, sizeof(tname));

    struct sockaddr_in la = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)o->outbound_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(ls, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(ls, 4) < 0) {
        mesh_errf(err, errlen, "validation: listening on 127.0.0.1:%d: %s", o->outbound_port,
             strerror(errno));
        goto out;
    }
    cs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (cs < 0 ||
        (connect(cs, (struct sockaddr *)&target, sizeof(target)) < 0 && errno != EINPROGRESS)) {
        mesh_errf(err, errlen, "validation: connecting to %s:%u: %s", tname, ntohs(target.sin_port),
             strerror(errno));
        goto out;
    }
    struct pollfd pf = {.fd = ls, .events = POLLIN};
    int n = poll(&pf, 1, 3000);
    if (n <= 0) {
        mesh_errf(err, errlen,
             "validation: a connection to %s:%u (uid %u) did not arrive on 127.0.0.1:%d within 3 "
             "s: outbound "
             "capture is not working",
             tname, ntohs(target.sin_port), (unsigned)getuid(), o->outbound_port);
        goto out;
    }
    as = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    struct sockaddr_in orig;
    socklen_t olen = sizeof(orig);
    if (as < 0 || getsockopt(as, SOL_IP, SO_ORIGINAL_DST, &orig, &olen) < 0) {
        mesh_errf(err, errlen, "validation: reading the original destination: %s", strerror(errno));
        goto out;
    }
    if (orig.sin_addr.s_addr != target.sin_addr.s_addr || orig.sin_port != target.sin_port) {
        char oname[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &orig.sin_addr, oname, sizeof(oname));
        mesh_errf(err, errlen,
             "validation: captured connection reports original destination %s:%u, expected %s:%u",
             oname, ntohs(orig.sin_port), tname, ntohs(target.sin_port));
        goto out;
    }
    fprintf(out,
            "validation: a connection to %s:%u arrived on 127.0.0.1:%d: outbound capture works\n",
            tname, ntohs(target.sin_port), o->outbound_port);
    rc = 0;
out:
    if (as >= 0)
        close(as);
    if (cs >= 0)
        close(cs);
    if (ls >= 0)
        close(ls);
    return rc;
}

/* IPv6 loopback is ::1/128 only, so the address the proxy's inbound
 * passthrough connects from (::6, returned early in ISTIO_OUTPUT) is added to
 * lo, as istio-iptables does; already present is fine. */
static int add_ipv6_passthrough(FILE *out, char *err, size_t errlen)
{
    const char *argv[] = {"ip", "-6", "addr", "add", "::6/128", "dev", "lo", NULL};
    char errtext[1024];
    int st = run_tool(argv, NULL, NULL, errtext, sizeof(errtext), err, errlen);
    if (st < 0)
        return -1;
    if (st != 0 && strstr(errtext, "File exists") == NULL &&
        strstr(errtext, "already assigned") == NULL)
        return mesh_errf(err, errlen, "ip -6 addr add ::6/128 dev lo failed (exit %d): %s", st,
                    errtext[0] ? errtext : "no message");
    fprintf(out, "# ::6/128 on lo for the inbound passthrough\n");
    return 0;
}

int px_init_run(const px_init_opts_t *o, FILE *out, char *err, size_t errlen)
{
    bool v6 = px_init_wants_ipv6(o);
    if (o->dry_run || o->skip_apply) {
        for (int family = 4; family <= 6; family += 2) {
            if (family == 6 && !v6)
                continue;
            char *rules = px_init_rules(o, family, NULL);
            if (rules == NULL)
                return mesh_errf(err, errlen, "out of memory building the rules");
            fprintf(out, "%s", rules);
            free(rules);
        }
        if (o->dry_run)
            return 0;
        fprintf(out, "# --skip-rule-apply: nothing applied\n");
    } else {
        if (apply_family(o, 4, out, err, errlen) < 0)
            return -1;
        if (v6 && (apply_family(o, 6, out, err, errlen) < 0 ||
                   add_ipv6_passthrough(out, err, errlen) < 0))
            return -1;
        if (!v6)
            fprintf(out, "# no IPv6 range given: ip6tables left alone\n");
    }
    fflush(out);
    if (o->run_validation)
        return validate_capture(o, out, err, errlen);
    return 0;
}

/* ---- wait -------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int px_wait_run(const px_wait_opts_t *o, char *err, size_t errlen)
{
    const char *url = o->url ? o->url : "http://127.0.0.1:15021/healthz/ready";
    long period = o->period_ms > 0 ? o->period_ms : 500;
    long reqto = o->request_timeout_ms > 0 ? o->request_timeout_ms : 1000;
    int64_t deadline = now_ms() + (int64_t)(o->timeout_s >= 0 ? o->timeout_s : 60) * 1000;
    char last[600] = "no attempt";
    for (int attempt = 1;; attempt++) {
        int64_t left = deadline - now_ms();
        int code = 0;
        char why[512];
        if (px_http_get(url, (int)(left > 0 && left < reqto ? left : reqto), 65536, &code, NULL, NULL, why,
                        sizeof(why)) == 0) {
            if (code == 200) {
                log_info("%s: ready after %d attempt%s", url, attempt, attempt == 1 ? "" : "s");
                return 0;
            }
            snprintf(last, sizeof(last), "HTTP %d", code);
        } else {
            snprintf(last, sizeof(last), "%s", why);
        }
        log_debug("%s: attempt %d: %s", url, attempt, last);
        left = deadline - now_ms();
        if (left <= 0)
            break;
        int64_t nap = left < period ? left : period;
        struct timespec ts = {.tv_sec = nap / 1000, .tv_nsec = (nap % 1000) * 1000000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return mesh_errf(err, errlen, "%s: not ready after %ld s (last answer: %s)", url,
                     o->timeout_s >= 0 ? o->timeout_s : 60, last);
}
