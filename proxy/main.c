/*
 * meshproxy: the data-plane proxy. Thin main: parses flags, loads the
 * configuration, runs the engine (proxy/proxy.h) until SIGTERM.
 *
 *   meshproxy sidecar|router (--config-file FILE | --xds-addr HOST:PORT)
 *             [--node-ip IP] [--pod NAME] [--namespace NS] [--labels k=v,...]
 *             [--service-account SA] [--cluster-id ID] [--concurrency N]
 *             [--drain-time SECONDS] [--bind IP] [--no-access-log] [--access-log-format text|json]
 *             [--no-splice]
 *             [--stats-port P] [--ready-port P] [--admin-port P] [--status-port P]
 *             [--app-metrics-url URL] [--log-level LEVEL]
 *             [--domain NS.svc.cluster.local] [--proxyLogLevel=LEVEL]
 *             [--proxyComponentLogLevel=C:LEVEL,...]
 *             [--cert-dir DIR | --ca-addr HOST:PORT ...] [--xds-root-file F]
 * The workload certificate comes from files (--cert-dir: cert-chain.pem,
 * key.pem, root-cert.pem) or from meshd's CA (--ca-addr, the token and the
 * root at the paths the injector mounts); with --xds-addr on meshd's TLS
 * port 15012 the CA defaults to the same address.
 * Flags take "--flag value" or "--flag=value". Without --config-file or
 * --xds-addr, the control plane is PROXY_CONFIG's discoveryAddress (the
 * injector's environment). The last three are Istio's pilot-agent flags
 * that the sidecar injector writes.
 * Ports default to Istio's: 15090 /stats/prometheus, 15021 /healthz/ready,
 * 15000 admin (localhost); 0 turns one off.
 * The node identity defaults to the environment Istio's injector sets:
 * INSTANCE_IP, POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
 * ISTIO_META_CLUSTER_ID, ISTIO_META_WORKLOAD_NAME.
 *   meshproxy check-config FILE
 *   meshproxy init [istio-iptables flags]       the pod's traffic capture (init.c)
 *   meshproxy wait [--timeout-seconds N] [--url URL]   until the proxy is ready
 *
 * SIGHUP reloads the config file (a bad file is logged and the running
 * configuration stays); SIGTERM/SIGINT stop accepting, let in-flight
 * requests finish for up to the drain time, and exit.
 */
#include <errno.h>
#include <strings.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "config_internal.h"
#include "proxy.h"
#include "admin_internal.h"
#include "init_internal.h"
#include "tls_internal.h"
#include "xds_client_internal.h"

/* What Istio's injector mounts in the sidecar. */
#define MESH_ROOT_CERT "/var/run/secrets/istio/root-cert.pem"
#define MESH_ISTIO_TOKEN "/var/run/secrets/tokens/istio-token"
#define MESH_SA_TOKEN "/var/run/secrets/kubernetes.io/serviceaccount/token"

static void usage(FILE *f)
{
    fprintf(f, "usage: meshproxy sidecar|router (--config-file FILE | --xds-addr HOST:PORT)\n"
               "                 [--node-ip IP] [--pod NAME] [--namespace NS] [--labels k=v,...]\n"
               "                 [--service-account SA] [--cluster-id ID] [--concurrency N]\n"
               "                 [--drain-time SECONDS] [--bind IP] [--no-access-log] [--access-log-format text|json]\n"
               "                 [--no-splice] [--log-level LEVEL]\n"
               "                 [--stats-port P] [--ready-port P] [--admin-port P] [--status-port P]\n"
               "                 [--app-metrics-url http://127.0.0.1:PORT/PATH]\n"
               "                 [--domain DOMAIN] [--proxyLogLevel=LEVEL] [--proxyComponentLogLevel=C:LEVEL,...]\n"
               "                 [--cert-dir DIR | --ca-addr HOST:PORT [--ca-root-file F] [--token-file F]\n"
               "                  [--ca-server-name N] [--ca-plaintext]] [--trust-domain TD]\n"
               "                 [--xds-root-file F] [--xds-server-name N]\n"
               "       meshproxy check-config FILE\n"
               "       meshproxy init -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i CIDRS -x CIDRS -b PORTS\n"
               "                 -d PORTS [-o PORTS] [-q PORTS] [-k IFACES] [-n]   (meshproxy init -h: all flags)\n"
               "       meshproxy wait [--timeout-seconds 60] [--url http://127.0.0.1:15021/healthz/ready]\n"
               "                 [--period-ms 500] [--request-timeout-ms 1000]\n");
}

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Loads and compiles the config file. NULL with err set on failure. */
/* The config file's resources as a snapshot; its Secret resources go to
 * the store (when one is given). */
static px_snapshot_t *load_snapshot(const char *path, px_secrets_t *secrets, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = read_file(path, &len);
    if (text == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    px_bundle_t b = {0};
    px_snapshot_t *s = NULL;
    char why[1024];
    if (px_bundle_load_json(&b, text, len, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        goto out;
    }
    if (secrets && px_bundle_install_secrets(&b, secrets, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        goto out;
    }
    px_resources_t r;
    px_bundle_view(&b, &r);
    s = px_snapshot_build(&r, why, sizeof(why));
    if (s == NULL)
        snprintf(err, errlen, "%s: %s", path, why);
out:
    px_bundle_free(&b);
    free(text);
    return s;
}

static int check_config(const char *path)
{
    char err[1200];
    px_secrets_t *secrets = px_secrets_new();
    px_snapshot_t *s = secrets ? load_snapshot(path, secrets, err, sizeof(err)) : NULL;
    px_secrets_free(secrets);
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s: %zu listeners, %zu route configurations, %zu clusters\n", path, s->nlisteners,
           s->nroute_configs, s->nclusters);
    for (size_t i = 0; i < s->nlisteners; i++) {
        const px_listener_t *l = &s->listeners[i];
        printf("  listener %s %s:%u\n", l->name, l->address, l->port);
        for (size_t k = 0; k <= l->nchains; k++) {
            const px_chain_t *ch = k < l->nchains ? &l->chains[k] : l->default_chain;
            if (ch == NULL)
                continue;
            printf("    chain %s%s: %s%s%s%s\n", ch->name[0] ? ch->name : "-", k == l->nchains ? " (default)" : "",
                   ch->tls ? "tls, " : "", ch->kind == PX_LISTENER_TCP ? "tcp_proxy -> " : "http",
                   ch->kind == PX_LISTENER_TCP ? ch->tcp_cluster : "",
                   ch->kind == PX_LISTENER_HTTP && ch->rds_name && !ch->route_config ? " (route config missing)" : "");
        }
    }
    for (size_t i = 0; i < s->nclusters; i++)
        printf("  cluster %s: %zu healthy endpoints\n", s->clusters[i].name, s->clusters[i].nendpoints);
    px_snapshot_unref(s);
    return 0;
}

/* Ready: the first full config is applied and, when the proxy has an
 * identity, its certificate is installed. */
typedef struct readiness {
    px_xds_t *xds;
    px_identity_t *id;
} readiness_t;

static bool proxy_ready(void *arg)
{
    const readiness_t *r = arg;
    return (r->xds == NULL || px_xds_ready(r->xds)) && (r->id == NULL || px_identity_ready(r->id));
}

/* ---- flags --------------------------------------------------------------
 * Each command has a table of flags; a row names the flag, whether it takes
 * a value, and the function that stores it. "--flag value" and
 * "--flag=value" both work. To add a flag, add a row and its setter. */

typedef int (*flag_set_fn)(void *ctx, const char *flag, const char *value);

typedef struct flag_def {
    const char *name; /* with its dashes: "--xds-addr" */
    bool takes_value;
    flag_set_fn set;
} flag_def_t;

/* Parses argv against a table; 0, or -1 after printing what was wrong. */
static int parse_flags(const flag_def_t *table, size_t n, int argc, char **argv, void *ctx)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t nlen = eq && strncmp(a, "--", 2) == 0 ? (size_t)(eq - a) : strlen(a);
        const flag_def_t *d = NULL;
        for (size_t k = 0; k < n && d == NULL; k++)
            if (strlen(table[k].name) == nlen && strncmp(table[k].name, a, nlen) == 0)
                d = &table[k];
        if (d == NULL) {
            fprintf(stderr, "meshproxy: unknown flag \"%s\"\n", a);
            return -1;
        }
        char flag[64];
        snprintf(flag, sizeof(flag), "%.*s", (int)(nlen < 60 ? nlen : 60), a);
        const char *v = NULL;
        if (nlen < strlen(a)) {
            v = a + nlen + 1;
            if (!d->takes_value) {
                fprintf(stderr, "meshproxy: %s takes no value\n", flag);
                return -1;
            }
        } else if (d->takes_value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "meshproxy: %s: needs a value\n", flag);
                return -1;
            }
            v = argv[++i];
        }
        if (d->set(ctx, flag, v) < 0)
            return -1;
    }
    return 0;
}

static int parse_uint(const char *flag, const char *v, long max, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v ? v : "", &end, 10);
    if (v == NULL || errno || end == v || *end || x < 0 || x > max) {
        fprintf(stderr, "meshproxy: %s: expects an integer in 0..%ld, not \"%s\"\n", flag, max, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* ---- sidecar | router ---------------------------------------------------- */

typedef struct agent {
    px_options_t opt;
    px_xds_opts_t xo;
    const char *config_file;
    long stats_port, ready_port, admin_port;
    long status_port;            /* -1: 15020 in a pod (PROXY_CONFIG set), off in local mode */
    const char *app_metrics_url; /* --app-metrics-url */
    const char *domain_arg; /* --domain as given, NULL when not */
    char domain[256];       /* ... expanded */
    px_identity_opts_t id;  /* the workload certificate */
    bool ca_plaintext;
} agent_t;

static int set_config_file(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    ((agent_t *)ctx)->config_file = v;
    return 0;
}

static int set_concurrency(void *ctx, const char *flag, const char *v)
{
    long x;
    if (parse_uint(flag, v, 256, &x) < 0)
        return -1;
    ((agent_t *)ctx)->opt.concurrency = (int)x;
    return 0;
}

static int set_drain_time(void *ctx, const char *flag, const char *v)
{
    long x;
    if (parse_uint(flag, v, 86400, &x) < 0)
        return -1;
    ((agent_t *)ctx)->opt.drain_ms = (uint64_t)x * 1000;
    return 0;
}

static int set_bind(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    ((agent_t *)ctx)->opt.bind_override = v;
    return 0;
}

static int set_stats_port(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 65535, &((agent_t *)ctx)->stats_port);
}

static int set_status_port(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 65535, &((agent_t *)ctx)->status_port);
}

static int set_app_metrics_url(void *ctx, const char *flag, const char *v)
{
    if (strncmp(v, "http://", 7) != 0) {
        fprintf(stderr, "meshproxy: %s: \"%s\" is not an http:// URL\n", flag, v);
        return -1;
    }
    ((agent_t *)ctx)->app_metrics_url = v;
    return 0;
}

static int set_ready_port(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 65535, &((agent_t *)ctx)->ready_port);
}

static int set_admin_port(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 65535, &((agent_t *)ctx)->admin_port);
}

static int set_no_access_log(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    (void)v;
    ((agent_t *)ctx)->opt.access_log_fd = -1;
    return 0;
}

static int set_no_splice(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    (void)v;
    ((agent_t *)ctx)->opt.no_splice = true;
    return 0;
}

static int set_access_log_format(void *ctx, const char *flag, const char *v)
{
    if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0) {
        fprintf(stderr, "meshproxy: %s: \"%s\" is not text or json\n", flag, v);
        return -1;
    }
    ((agent_t *)ctx)->opt.access_log_json = strcmp(v, "json") == 0;
    return 0;
}

static int set_log_level(void *ctx, const char *flag, const char *v)
{
    (void)ctx;
    int lv = log_level_parse(v);
    if (lv < 0) {
        fprintf(stderr, "meshproxy: %s: unknown level \"%s\" (debug, info, warn, error, none)\n", flag, v);
        return -1;
    }
    log_set_level((log_level_t)lv);
    return 0;
}

/* Envoy's level names, as Istio's --proxyLogLevel takes them. */
static int envoy_level(const char *v)
{
    static const struct {
        const char *name;
        log_level_t level;
    } levels[] = {{"trace", LOG_DEBUG}, {"debug", LOG_DEBUG}, {"info", LOG_INFO},     {"warning", LOG_WARN},
                  {"warn", LOG_WARN},   {"error", LOG_ERROR}, {"critical", LOG_ERROR}, {"off", LOG_NONE}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(v, levels[i].name) == 0)
            return (int)levels[i].level;
    return -1;
}

static int set_proxy_log_level(void *ctx, const char *flag, const char *v)
{
    (void)ctx;
    int lv = envoy_level(v);
    if (lv < 0) {
        fprintf(stderr, "meshproxy: %s: unknown level \"%s\" (trace, debug, info, warning, error, critical, off)\n",
                flag, v);
        return -1;
    }
    log_set_level((log_level_t)lv);
    return 0;
}

/* "name:level,name:level": checked; meshproxy has one process-wide level. */
static int set_component_log_level(void *ctx, const char *flag, const char *v)
{
    (void)ctx;
    char buf[512];
    if (strlen(v) >= sizeof(buf)) {
        fprintf(stderr, "meshproxy: %s: value too long\n", flag);
        return -1;
    }
    strcpy(buf, v);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (colon == NULL || colon == item || envoy_level(colon + 1) < 0) {
            fprintf(stderr, "meshproxy: %s: \"%s\" is not COMPONENT:LEVEL (level trace, debug, info, warning, "
                            "error, critical, off)\n",
                    flag, item);
            return -1;
        }
    }
    if (v[0] != '\0')
        log_info("%s=%s: meshproxy logs at one level for the whole process (--proxyLogLevel); component levels "
                 "are accepted for compatibility",
                 flag, v);
    return 0;
}

static int set_domain(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    ((agent_t *)ctx)->domain_arg = v;
    return 0;
}

/* Expands "$(POD_NAMESPACE)" (the injector writes "$(POD_NAMESPACE).svc.<suffix>",
 * which Kubernetes expands in a pod) and checks the result is a DNS name. */
static int check_domain(agent_t *a)
{
    const char *v = a->domain_arg, *var = "$(POD_NAMESPACE)", *at = strstr(v, var);
    int n;
    if (at)
        n = snprintf(a->domain, sizeof(a->domain), "%.*s%s%s", (int)(at - v), v, a->xo.ns, at + strlen(var));
    else
        n = snprintf(a->domain, sizeof(a->domain), "%s", v);
    if (n <= 0 || (size_t)n >= sizeof(a->domain) || a->domain[0] == '.' ||
        strspn(a->domain, "abcdefghijklmnopqrstuvwxyz0123456789-.") != (size_t)n) {
        fprintf(stderr, "meshproxy: --domain: \"%s\" is not a DNS domain (like default.svc.cluster.local)\n", v);
        return -1;
    }
    return 0;
}

#define AGENT_STR(fn, field)                                                                                           \
    static int fn(void *ctx, const char *flag, const char *v)                                                          \
    {                                                                                                                  \
        (void)flag;                                                                                                    \
        ((agent_t *)ctx)->xo.field = v;                                                                                \
        return 0;                                                                                                      \
    }
AGENT_STR(set_xds_addr, addr)
AGENT_STR(set_node_ip, ip)
AGENT_STR(set_pod, pod)
AGENT_STR(set_namespace, ns)
AGENT_STR(set_labels, labels)
AGENT_STR(set_service_account, service_account)
AGENT_STR(set_cluster_id, cluster_id)
AGENT_STR(set_xds_root_file, tls_root_file)
AGENT_STR(set_xds_server_name, tls_server_name)

#define IDENTITY_STR(fn, field)                                                                                        \
    static int fn(void *ctx, const char *flag, const char *v)                                                          \
    {                                                                                                                  \
        (void)flag;                                                                                                    \
        ((agent_t *)ctx)->id.field = v;                                                                                \
        return 0;                                                                                                      \
    }
IDENTITY_STR(set_cert_dir, cert_dir)
IDENTITY_STR(set_ca_addr, ca_addr)
IDENTITY_STR(set_ca_root_file, root_file)
IDENTITY_STR(set_token_file, token_file)
IDENTITY_STR(set_trust_domain, trust_domain)
IDENTITY_STR(set_ca_server_name, server_name)

static int set_ca_plaintext(void *ctx, const char *flag, const char *v)
{
    (void)flag;
    (void)v;
    ((agent_t *)ctx)->ca_plaintext = true;
    return 0;
}

static const flag_def_t agent_flags[] = {
    {"--config-file", true, set_config_file},
    {"--xds-addr", true, set_xds_addr},
    {"--node-ip", true, set_node_ip},
    {"--pod", true, set_pod},
    {"--namespace", true, set_namespace},
    {"--labels", true, set_labels},
    {"--service-account", true, set_service_account},
    {"--cluster-id", true, set_cluster_id},
    {"--concurrency", true, set_concurrency},
    {"--drain-time", true, set_drain_time},
    {"--bind", true, set_bind},
    {"--no-access-log", false, set_no_access_log},
    {"--no-splice", false, set_no_splice},
    {"--access-log-format", true, set_access_log_format},
    {"--log-level", true, set_log_level},
    {"--stats-port", true, set_stats_port},
    {"--ready-port", true, set_ready_port},
    {"--status-port", true, set_status_port},
    {"--app-metrics-url", true, set_app_metrics_url},
    {"--admin-port", true, set_admin_port},
    /* the workload certificate: from meshd's CA, or from files */
    {"--cert-dir", true, set_cert_dir},
    {"--ca-addr", true, set_ca_addr},
    {"--ca-root-file", true, set_ca_root_file},
    {"--ca-server-name", true, set_ca_server_name},
    {"--ca-plaintext", false, set_ca_plaintext},
    {"--token-file", true, set_token_file},
    {"--trust-domain", true, set_trust_domain},
    /* TLS to the control plane (15012) */
    {"--xds-root-file", true, set_xds_root_file},
    {"--xds-server-name", true, set_xds_server_name},
    /* Istio's pilot-agent flags, as the sidecar injector writes them. */
    {"--domain", true, set_domain},
    {"--proxyLogLevel", true, set_proxy_log_level},
    {"--proxyComponentLogLevel", true, set_component_log_level},
};

/* The control plane's address from the injector's PROXY_CONFIG environment
 * variable ({"discoveryAddress": "meshd.istio-system.svc:15012", ...}).
 * Returns a malloc'd string, NULL when absent; a broken value is an error. */
static int proxy_config_read(char **out, long *status_port)
{
    const char *pc = getenv("PROXY_CONFIG");
    *out = NULL;
    if (pc == NULL || pc[0] == '\0')
        return 0;
    json_object *root = json_tokener_parse(pc);
    json_object *addr = NULL, *sp = NULL;
    int rc = -1;
    if (root == NULL || !json_object_is_type(root, json_type_object)) {
        fprintf(stderr, "meshproxy: PROXY_CONFIG: not a JSON object\n");
        goto out;
    }
    if (json_object_object_get_ex(root, "statusPort", &sp)) {
        errno = 0;
        int64_t v = json_object_get_int64(sp);
        if (!json_object_is_type(sp, json_type_int) || errno != 0 || v < 0 || v > 65535) {
            fprintf(stderr, "meshproxy: PROXY_CONFIG: statusPort: must be a port number (0-65535)\n");
            goto out;
        }
        if (*status_port < 0)
            *status_port = (long)v;
    }
    if (*status_port < 0)
        *status_port = 15020; /* in a pod, as Istio's agent */
    if (json_object_object_get_ex(root, "discoveryAddress", &addr)) {
        if (!json_object_is_type(addr, json_type_string) || json_object_get_string_len(addr) == 0) {
            fprintf(stderr, "meshproxy: PROXY_CONFIG: discoveryAddress: must be a non-empty string\n");
            goto out;
        }
        *out = strdup(json_object_get_string(addr));
        if (*out == NULL)
            goto out;
    }
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* The application's metrics endpoint from the prometheus.io annotations the
 * injector moved into ISTIO_PROMETHEUS_ANNOTATIONS ({"scrape": "true",
 * "port": "8080", "path": "/metrics"}), as http://127.0.0.1:PORT/PATH into
 * url ("" when there is none or scrape is "false"). -1 on a malformed value. */
static int app_metrics_from_env(char *url, size_t n)
{
    url[0] = '\0';
    const char *env = getenv("ISTIO_PROMETHEUS_ANNOTATIONS");
    if (env == NULL || env[0] == '\0')
        return 0;
    json_object *root = json_tokener_parse(env);
    int rc = -1;
    const char *v[3] = {NULL, NULL, NULL};
    static const char *const keys[3] = {"scrape", "port", "path"};
    if (root == NULL || !json_object_is_type(root, json_type_object)) {
        fprintf(stderr, "meshproxy: ISTIO_PROMETHEUS_ANNOTATIONS: not a JSON object\n");
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        json_object *x;
        if (!json_object_object_get_ex(root, keys[i], &x))
            continue;
        if (!json_object_is_type(x, json_type_string)) {
            fprintf(stderr, "meshproxy: ISTIO_PROMETHEUS_ANNOTATIONS: %s: must be a string\n", keys[i]);
            goto out;
        }
        v[i] = json_object_get_string(x);
    }
    const char *port = v[1] ? v[1] : "80", *path = v[2] ? v[2] : "/metrics";
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 1 || p > 65535) {
        fprintf(stderr, "meshproxy: ISTIO_PROMETHEUS_ANNOTATIONS: port: \"%s\" is not a port (1-65535)\n", port);
        goto out;
    }
    bool bad = false;
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        bad |= *c <= 0x20 || *c == 0x7f;
    if (bad) {
        fprintf(stderr, "meshproxy: ISTIO_PROMETHEUS_ANNOTATIONS: path: \"%s\" is not a URL path\n", path);
        goto out;
    }
    if (v[0] == NULL || strcasecmp(v[0], "false") != 0)
        snprintf(url, n, "http://127.0.0.1:%ld%s%s", p, path[0] == '/' ? "" : "/", path);
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* The first of keys found in "k=v,k2=v2" labels, into out ("" if none). */
static const char *label_value(const char *labels, const char *const *keys, size_t nkeys, char *out, size_t n)
{
    out[0] = '\0';
    for (size_t k = 0; k < nkeys && !out[0]; k++) {
        size_t kl = strlen(keys[k]);
        for (const char *p = labels ? labels : ""; *p;) {
            size_t len = strcspn(p, ",");
            if (len > kl && strncmp(p, keys[k], kl) == 0 && p[kl] == '=') {
                snprintf(out, n, "%.*s", (int)(len - kl - 1), p + kl + 1);
                break;
            }
            p += len;
            if (*p == ',')
                p++;
        }
    }
    return out[0] ? out : NULL;
}

/* ---- wait ---------------------------------------------------------------- */

static int set_wait_timeout(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 86400, &((px_wait_opts_t *)ctx)->timeout_s);
}

static int set_wait_url(void *ctx, const char *flag, const char *v)
{
    if (strncmp(v, "http://", 7) != 0) {
        fprintf(stderr, "meshproxy: %s: \"%s\" is not an http:// URL\n", flag, v);
        return -1;
    }
    ((px_wait_opts_t *)ctx)->url = v;
    return 0;
}

static int set_wait_period(void *ctx, const char *flag, const char *v)
{
    if (parse_uint(flag, v, 60000, &((px_wait_opts_t *)ctx)->period_ms) < 0)
        return -1;
    return 0;
}

static int set_wait_request_timeout(void *ctx, const char *flag, const char *v)
{
    return parse_uint(flag, v, 60000, &((px_wait_opts_t *)ctx)->request_timeout_ms);
}

static const flag_def_t wait_flags[] = {
    {"--timeout-seconds", true, set_wait_timeout},
    {"--url", true, set_wait_url},
    {"--period-ms", true, set_wait_period},
    {"--request-timeout-ms", true, set_wait_request_timeout},
    /* pilot-agent's spellings */
    {"--timeoutSeconds", true, set_wait_timeout},
    {"--periodMillis", true, set_wait_period},
    {"--requestTimeoutMillis", true, set_wait_request_timeout},
};

static int cmd_wait(int argc, char **argv)
{
    px_wait_opts_t w = {.url = "http://127.0.0.1:15021/healthz/ready", .timeout_s = 60, .period_ms = 500,
                        .request_timeout_ms = 1000};
    if (parse_flags(wait_flags, sizeof(wait_flags) / sizeof(wait_flags[0]), argc, argv, &w) < 0) {
        usage(stderr);
        return 2;
    }
    char err[1200];
    if (px_wait_run(&w, err, sizeof(err)) < 0) {
        fprintf(stderr, "meshproxy wait: %s\n", err);
        return 1;
    }
    printf("meshproxy wait: %s is ready\n", w.url);
    return 0;
}

static int cmd_init(int argc, char **argv)
{
    px_init_opts_t o;
    char err[1200];
    if (px_init_parse(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "meshproxy init: %s\n", err);
        px_init_usage(stderr);
        return 2;
    }
    if (o.help) {
        px_init_usage(stdout);
        return 0;
    }
    if (px_init_run(&o, stdout, err, sizeof(err)) < 0) {
        fflush(stdout);
        fprintf(stderr, "meshproxy init: %s\n", err);
        return 1;
    }
    return 0;
}

/* The environment variable, or def when unset. */
static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v ? v : def;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "check-config") == 0) {
        if (argc != 3) {
            usage(stderr);
            return 2;
        }
        return check_config(argv[2]);
    }
    if (strcmp(mode, "-h") == 0 || strcmp(mode, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(mode, "init") == 0)
        return cmd_init(argc - 2, argv + 2);
    if (strcmp(mode, "wait") == 0)
        return cmd_wait(argc - 2, argv + 2);
    if (strcmp(mode, "sidecar") != 0 && strcmp(mode, "router") != 0) {
        fprintf(stderr, "meshproxy: unknown mode \"%s\"\n", mode);
        usage(stderr);
        return 2;
    }
    agent_t ag = {
        .opt = {.concurrency = 0, .drain_ms = 5000, .access_log_fd = 1},
        .stats_port = 15090,
        .ready_port = 15021,
        .admin_port = 15000,
        .status_port = -1,
        .xo =
            {
                .router = strcmp(mode, "router") == 0,
                .ip = env_or("INSTANCE_IP", "127.0.0.1"),
                .pod = env_or("POD_NAME", "meshproxy"),
                .ns = env_or("POD_NAMESPACE", "default"),
                .service_account = getenv("SERVICE_ACCOUNT"),
                .cluster_id = getenv("ISTIO_META_CLUSTER_ID"),
                .workload = getenv("ISTIO_META_WORKLOAD_NAME"),
            },
    };
    if (parse_flags(agent_flags, sizeof(agent_flags) / sizeof(agent_flags[0]), argc - 2, argv + 2, &ag) < 0) {
        usage(stderr);
        return 2;
    }
    px_options_t opt = ag.opt;
    px_xds_opts_t xo = ag.xo;
    const char *config_file = ag.config_file;
    long stats_port = ag.stats_port, ready_port = ag.ready_port, admin_port = ag.admin_port;
    /* In a pod the injector passes the control plane (and the status port)
     * in PROXY_CONFIG. */
    char *discovery = NULL;
    long status_port = ag.status_port;
    if (proxy_config_read(&discovery, &status_port) < 0)
        return 2;
    if (status_port < 0)
        status_port = 0; /* local mode: no status port unless asked for */
    if (config_file == NULL && xo.addr == NULL)
        xo.addr = discovery;
    char app_url[600];
    const char *app_metrics = ag.app_metrics_url;
    if (app_metrics == NULL && app_metrics_from_env(app_url, sizeof(app_url)) < 0) {
        free(discovery);
        return 2;
    }
    if (app_metrics == NULL && app_url[0])
        app_metrics = app_url;
    if ((config_file == NULL) == (xo.addr == NULL)) {
        fprintf(stderr, "meshproxy: exactly one of --config-file and --xds-addr is required (without either, "
                        "PROXY_CONFIG's discoveryAddress)\n");
        free(discovery);
        return 2;
    }
    if (ag.domain_arg != NULL) {
        if (check_domain(&ag) < 0) {
            free(discovery);
            return 2;
        }
        char expect[300];
        snprintf(expect, sizeof(expect), "%s.svc.cluster.local", xo.ns);
        if (strcmp(ag.domain, expect) != 0)
            log_warn("--domain %s: the node ID announces the domain %s (namespace %s)", ag.domain, expect, xo.ns);
    }

    /* The workload identity: files (--cert-dir), or meshd's CA (--ca-addr;
     * in a pod, as Istio's CA_ADDR, the control plane when it is the TLS
     * port 15012). Paths default to what the injector mounts. */
    px_identity_opts_t ido = ag.id;
    ido.ns = xo.ns;
    ido.sa = xo.service_account && xo.service_account[0] ? xo.service_account : "default";
    ido.plaintext = ag.ca_plaintext;
    if (ido.trust_domain == NULL)
        ido.trust_domain = "cluster.local";
    bool secure_xds = xo.addr && strlen(xo.addr) > 6 && strcmp(xo.addr + strlen(xo.addr) - 6, ":15012") == 0;
    if (ido.root_file == NULL && access(MESH_ROOT_CERT, R_OK) == 0)
        ido.root_file = MESH_ROOT_CERT;
    if (ido.token_file == NULL)
        ido.token_file = access(MESH_ISTIO_TOKEN, R_OK) == 0 ? MESH_ISTIO_TOKEN : MESH_SA_TOKEN;
    if (ido.ca_addr == NULL && ido.cert_dir == NULL && secure_xds)
        ido.ca_addr = xo.addr;
    if (xo.tls_root_file == NULL && secure_xds)
        xo.tls_root_file = ido.root_file;
    if (secure_xds && xo.tls_root_file == NULL) {
        fprintf(stderr, "meshproxy: %s is meshd's TLS port: --xds-root-file (or %s) must give the mesh root\n",
                xo.addr, MESH_ROOT_CERT);
        free(discovery);
        return 2;
    }
    char spiffe[512];
    snprintf(spiffe, sizeof(spiffe), "spiffe://%s/ns/%s/sa/%s", ido.trust_domain, ido.ns, ido.sa);
    opt.spiffe = spiffe;

    /* Signals are taken synchronously by this thread; workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    opt.router = xo.router;
    opt.workload = xo.workload ? xo.workload : xo.pod;
    opt.workload_namespace = xo.ns;
    static const char *const app_keys[] = {"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"};
    static const char *const ver_keys[] = {"service.istio.io/canonical-revision", "app.kubernetes.io/version",
                                           "version"};
    char app[128], ver[128];
    opt.app = label_value(xo.labels, app_keys, 3, app, sizeof(app));
    opt.version = label_value(xo.labels, ver_keys, 3, ver, sizeof(ver));
    char *peer_id = NULL, *peer_md = NULL;
    if (px_peer_metadata(&xo, &peer_id, &peer_md) == 0) {
        opt.peer_metadata_id = peer_id;
        opt.peer_metadata = peer_md;
    }
    char err[1200];
    px_snapshot_t *snap = NULL;
    px_xds_t *xds = NULL;
    px_admin_t *admin = NULL, *status = NULL;
    px_identity_t *identity = NULL;
    px_secrets_t *secrets = px_secrets_new();
    if (secrets == NULL) {
        log_error("out of memory");
        free(discovery);
        return 1;
    }
    opt.secrets = secrets;
    if (config_file) {
        snap = load_snapshot(config_file, secrets, err, sizeof(err));
        if (snap == NULL) {
            log_error("%s", err);
            px_secrets_free(secrets);
            free(discovery);
            return 1;
        }
    }
    px_server_t *srv = px_server_new(&opt, err, sizeof(err));
    if (srv == NULL) {
        log_error("%s", err);
        px_snapshot_unref(snap);
        px_secrets_free(secrets);
        free(discovery);
        return 1;
    }
    int rc = 0;
    if (ido.cert_dir || ido.ca_addr) {
        identity = px_identity_start(&ido, secrets, err, sizeof(err));
        if (identity == NULL) {
            log_error("workload certificate: %s", err);
            rc = 1;
            goto out;
        }
        log_info("workload identity %s from %s", spiffe, ido.cert_dir ? ido.cert_dir : ido.ca_addr);
    }
    if (snap) {
        if (px_server_apply(srv, snap, err, sizeof(err)) < 0) {
            log_error("%s", err);
            rc = 1;
            goto out;
        }
        log_info("%s ready: %zu listeners, %zu clusters (config %s)", mode, snap->nlisteners, snap->nclusters,
                 config_file);
    } else {
        xds = px_xds_start(&xo, srv, err, sizeof(err));
        if (xds == NULL) {
            log_error("%s", err);
            rc = 1;
            goto out;
        }
        log_info("%s: xDS from %s as %s~%s~%s.%s", mode, xo.addr, xo.router ? "router" : "sidecar", xo.ip, xo.pod,
                 xo.ns);
    }
    readiness_t readiness = {xds, identity};
    px_admin_opts_t ao = {.server = srv,
                          .xds = xds,
                          .stats_ip = opt.bind_override,
                          .stats_port = (int)stats_port,
                          .ready_port = (int)ready_port,
                          .admin_port = (int)admin_port,
                          .ready = xds || identity ? proxy_ready : NULL,
                          .ready_arg = &readiness};
    admin = px_admin_start(&ao, err, sizeof(err));
    if (admin == NULL) {
        log_error("%s", err);
        rc = 1;
        goto out;
    }
    if (status_port > 0) {
        /* the status port on a thread of its own: scraping the application
         * never holds up the readiness probes on 15021 */
        px_admin_opts_t so = ao;
        so.stats_port = so.ready_port = so.admin_port = 0;
        so.status_port = (int)status_port;
        so.app_metrics_url = app_metrics;
        status = px_admin_start(&so, err, sizeof(err));
        if (status == NULL) {
            log_error("%s", err);
            rc = 1;
            goto out;
        }
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP && config_file == NULL)
            continue;
        if (sig == SIGHUP) {
            px_snapshot_t *next = load_snapshot(config_file, secrets, err, sizeof(err));
            if (next == NULL) {
                log_error("reload rejected, keeping the running config: %s", err);
                continue;
            }
            if (px_server_apply(srv, next, err, sizeof(err)) < 0) {
                log_error("reload rejected, keeping the running config: %s", err);
                px_snapshot_unref(next);
                continue;
            }
            px_snapshot_unref(snap);
            snap = next;
            log_info("config reloaded: %zu listeners, %zu clusters", snap->nlisteners, snap->nclusters);
            continue;
        }
        log_info("signal %d: draining for up to %llu ms", sig, (unsigned long long)opt.drain_ms);
        break;
    }
out:
    px_admin_stop(status);
    px_admin_stop(admin);
    px_xds_stop(xds);
    px_server_drain_and_stop(srv);
    px_server_free(srv);
    px_identity_stop(identity);
    px_secrets_free(secrets);
    px_snapshot_unref(snap);
    free(discovery);
    free(peer_id);
    free(peer_md);
    return rc;
}
