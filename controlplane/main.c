/*
 * meshd: the control plane. Parses flags, builds the config store and its
 * source (a directory in local mode, the Kubernetes API server through the
 * informers in kube mode), the debug server, and runs the loop.
 */
#include <errno.h>
#include <stddef.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../common/log.h"
#include "../config/config.h"
#include "debug.h"
#include "informer.h"
#include "kube.h"
#include "serve.h"

#ifndef MESH_VERSION
#define MESH_VERSION "0.1.0"
#endif

struct flags {
    const char *config_dir;
    const char *ns;
    bool ns_given;
    const char *kubeconfig;
    const char *context;
    const char *debug_addr; /* NULL: the mode's default; "" or "off": none */
    bool once;
    /* what meshd serves (NULL: the mode's default) */
    const char *grpc_addr, *secure_grpc_addr, *webhook_addr, *monitoring_addr;
    const char *trust_domain, *cacerts_dir, *ca_root_file, *jwt_key_file, *jwt_issuer;
    const char *injector_config;
    bool ca_ecdsa;
    unsigned debounce_ms;
};

static void usage(FILE *out)
{
    fputs("usage: meshd --config-dir DIR [flags]       (local mode)\n"
          "       meshd [--kubeconfig PATH] [--context NAME] [flags]   (kube mode)\n"
          "\n"
          "flags:\n"
          "  --config-dir DIR      read mesh configuration from the YAML/JSON files under DIR\n"
          "                        and keep following their changes\n"
          "  --kubeconfig PATH     read the configuration from the Kubernetes API server of\n"
          "                        this kubeconfig (in a pod, the in-cluster service account\n"
          "                        is used when neither --kubeconfig nor --context is given)\n"
          "  --context NAME        kubeconfig context (default: its current-context)\n"
          "  --namespace NS        local mode: namespace of objects that do not name one\n"
          "                        (default \"default\"); kube mode: meshd's own namespace\n"
          "                        (default: the pod's, or the context's)\n"
          "  --debug-addr ADDR     debug HTTP server (/ready, /debug/configz, /debug):\n"
          "                        HOST:PORT, :PORT, or off (default :8080 in kube mode,\n"
          "                        127.0.0.1:8080 in local mode)\n"
          "  --grpc-addr ADDR      xDS over plaintext gRPC (default :15010; local mode\n"
          "                        127.0.0.1:15010); off disables it\n"
          "  --secure-grpc-addr ADDR  xDS and the CA over TLS (default :15012; local mode:\n"
          "                        127.0.0.1:15012 when a CA root is given)\n"
          "  --webhook-addr ADDR   injection and validation webhooks over HTTPS (default\n"
          "                        :15017 in kube mode, off in local mode)\n"
          "  --monitoring-addr ADDR  /metrics (default :15014; local mode 127.0.0.1:15014)\n"
          "  --trust-domain NAME   SPIFFE trust domain (default cluster.local)\n"
          "  --cacerts-dir DIR     plug-in CA: ca-cert.pem, ca-key.pem, root-cert.pem,\n"
          "                        cert-chain.pem (kube mode reads the cacerts secret)\n"
          "  --ca-root-file FILE   local mode self-signed root (created 0600 if missing)\n"
          "  --ca-ecdsa            a new self-signed root uses ECDSA P-256 (default RSA 2048)\n"
          "  --jwt-key-file FILE   local mode: PEM public key(s) or JWKS that sign workload\n"
          "                        tokens (kube mode uses TokenReview)\n"
          "  --jwt-issuer ISS      local mode: the issuer those tokens must carry\n"
          "  --injector-config FILE  sidecar injection values (kube mode: the\n"
          "                        istio-sidecar-injector ConfigMap)\n"
          "  --debounce-ms N       quiet time before a config push (default 100)\n"
          "  --log-level LEVEL     debug, info, warn or error (default info)\n"
          "  --once                load the configuration, print a summary and exit:\n"
          "                        status 1 if any document was rejected, else 0\n"
          "  --version             print the version\n"
          "  --help                print this help\n",
          out);
}

/* Matches "--name VALUE" and "--name=VALUE"; advances *i past the value. */
static int flag_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "meshd: %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/* 0 to run, or the exit status. */
static int parse_flags(int argc, char **argv, struct flags *fl, int *status)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int m;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            *status = 0;
            return -1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("meshd %s\n", MESH_VERSION);
            *status = 0;
            return -1;
        }
        if (strcmp(a, "--once") == 0) {
            fl->once = true;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--config-dir", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->config_dir = v;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--namespace", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->ns = v;
            fl->ns_given = true;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--kubeconfig", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->kubeconfig = v;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--context", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->context = v;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--debug-addr", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->debug_addr = v;
            continue;
        }
        if (strcmp(a, "--ca-ecdsa") == 0) {
            fl->ca_ecdsa = true;
            continue;
        }
        {
            static const struct {
                const char *name;
                size_t off;
            } strs[] = {
                {"--grpc-addr", offsetof(struct flags, grpc_addr)},
                {"--secure-grpc-addr", offsetof(struct flags, secure_grpc_addr)},
                {"--webhook-addr", offsetof(struct flags, webhook_addr)},
                {"--monitoring-addr", offsetof(struct flags, monitoring_addr)},
                {"--trust-domain", offsetof(struct flags, trust_domain)},
                {"--cacerts-dir", offsetof(struct flags, cacerts_dir)},
                {"--ca-root-file", offsetof(struct flags, ca_root_file)},
                {"--jwt-key-file", offsetof(struct flags, jwt_key_file)},
                {"--jwt-issuer", offsetof(struct flags, jwt_issuer)},
                {"--injector-config", offsetof(struct flags, injector_config)},
            };
            bool matched = false;
            for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]) && !matched; k++) {
                if ((m = flag_value(argc, argv, &i, strs[k].name, &v)) == 0)
                    continue;
                if (m < 0)
                    goto bad;
                *(const char **)((char *)fl + strs[k].off) = v;
                matched = true;
            }
            if (matched)
                continue;
        }
        if ((m = flag_value(argc, argv, &i, "--debounce-ms", &v)) != 0) {
            char *end;
            long ms = m < 0 ? -1 : strtol(v, &end, 10);
            if (ms < 0 || ms > 600000 || *end != '\0') {
                if (m > 0)
                    fprintf(stderr, "meshd: --debounce-ms: \"%s\" is not a number of milliseconds (0-600000)\n", v);
                goto bad;
            }
            fl->debounce_ms = (unsigned)ms;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--log-level", &v)) != 0) {
            int level = m < 0 ? -1 : log_level_parse(v);
            if (level < 0 || level == LOG_NONE) {
                if (m > 0)
                    fprintf(stderr, "meshd: unknown log level \"%s\" (debug, info, warn, error)\n", v);
                goto bad;
            }
            log_set_level((log_level_t)level);
            continue;
        }
        fprintf(stderr, "meshd: unknown flag \"%s\"\n", a);
        goto bad;
    }
    bool kube = fl->kubeconfig != NULL || fl->context != NULL;
    if (fl->config_dir != NULL && kube) {
        fprintf(stderr, "meshd: --config-dir and --kubeconfig/--context are exclusive: pick one source\n");
        goto bad;
    }
    if (fl->config_dir == NULL && !kube) {
        const char *host = getenv("KUBERNETES_SERVICE_HOST");
        if (host == NULL || host[0] == '\0') {
            fprintf(stderr, "meshd: no configuration source: give --config-dir, or --kubeconfig "
                            "(or run in a pod)\n");
            goto bad;
        }
    }
    if (fl->once && fl->config_dir == NULL) {
        fprintf(stderr, "meshd: --once needs --config-dir\n");
        goto bad;
    }
    return 0;
bad:
    usage(stderr);
    *status = 2;
    return -1;
}

static void object_name(char *buf, size_t size, const cfg_object_t *o)
{
    const char *kind = cfg_kind_info(o->kind)->name;
    if (o->namespace != NULL && o->namespace[0] != '\0')
        snprintf(buf, size, "%s %s/%s", kind, o->namespace, o->name);
    else
        snprintf(buf, size, "%s %s", kind, o->name);
}

/* ud is non-NULL in kube mode: changes of Kubernetes kinds (pods, endpoints
 * ...) are frequent there and logged at debug level only. */
static void log_change(void *ud, const cfg_event_t *ev)
{
    static const char *const what[] = {"added", "updated", "deleted"};
    bool quiet = ud != NULL && !cfg_kind_info(ev->kind)->mesh;
    if (quiet && log_get_level() > LOG_DEBUG)
        return;
    char name[600];
    object_name(name, sizeof(name), ev->new ? ev->new : ev->old);
    log_msg(quiet ? LOG_DEBUG : LOG_INFO, "%s %s (version %" PRIu64 ")", name, what[ev->type], ev->version);
}

/* /ready: the configuration sources have synced (informers, or the first
 * load of the directory) and the xDS servers serve what they held then, so a
 * proxy that connects once meshd is ready gets the whole configuration, not
 * the state before the push that follows the sync. Latched once true. */
typedef struct ready_gate {
    cfg_store_t *store;
    informer_t *inf;   /* kube mode */
    serve_t *srv;      /* once serving */
    atomic_bool loaded; /* local mode: the first load is in */
    atomic_bool have_at;
    _Atomic uint64_t at; /* the store version when the sources synced */
    atomic_bool ready;
} ready_gate_t;

static ready_gate_t gate;

static bool gate_ready(void *ud)
{
    ready_gate_t *g = ud;
    if (atomic_load(&g->ready))
        return true;
    if (!(g->inf ? informer_synced(g->inf) : atomic_load(&g->loaded)))
        return false;
    if (!atomic_load(&g->have_at)) {
        cfg_snap_t *s = cfg_store_snapshot(g->store);
        atomic_store(&g->at, cfg_snap_version(s));
        cfg_snap_release(s);
        atomic_store(&g->have_at, true);
    }
    if (!serve_xds_at(g->srv, atomic_load(&g->at)))
        return false;
    atomic_store(&g->ready, true);
    return true;
}

/* Starts the debug server unless disabled; NULL when disabled or when it
 * cannot listen (*fatal tells whether that should stop meshd). */
static debug_server_t *start_debug(const struct flags *fl, bool kube, bool *fatal)
{
    const char *addr = fl->debug_addr;
    *fatal = false;
    if (addr == NULL)
        addr = kube ? ":8080" : "127.0.0.1:8080";
    else if (addr[0] == '\0' || strcmp(addr, "off") == 0)
        return NULL;
    char err[256];
    debug_server_t *d = debug_server_start(addr, err, sizeof(err));
    if (d == NULL) {
        /* In local mode the debug server is a convenience; in a cluster the
         * readiness probe needs it. An explicit address must work. */
        *fatal = kube || fl->debug_addr != NULL;
        if (*fatal)
            log_error("%s", err);
        else
            log_warn("%s; running without the debug server", err);
        return NULL;
    }
    log_info("debug server listening on %s (port %d)", addr, debug_server_port(d));
    return d;
}

/* Blocks SIGINT and SIGTERM (before any thread starts, so that every thread
 * inherits the mask) and returns a descriptor that reads them, or -1. */
static int signal_fd(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        return -1;
    return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* Reads a pending signal: 1 when it asks meshd to stop, else 0. */
static int read_signal(int sfd)
{
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return 0;
    log_info("received %s, shutting down", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
    return 1;
}

/* What meshd serves, with the mode's defaults. */
static serve_t *start_serving(const struct flags *fl, cfg_store_t *store, kube_client_t *kube,
                              debug_server_t *dbg, const char *ns)
{
    bool local = kube == NULL;
    bool local_ca = fl->cacerts_dir != NULL || fl->ca_root_file != NULL;
    serve_opts_t so = {
        .store = store,
        .kube = kube,
        .debug = dbg,
        .ns = ns,
        .trust_domain = fl->trust_domain,
        .grpc_addr = fl->grpc_addr ? fl->grpc_addr : local ? "127.0.0.1:15010" : ":15010",
        .secure_grpc_addr = fl->secure_grpc_addr ? fl->secure_grpc_addr
                            : !local            ? ":15012"
                            : local_ca          ? "127.0.0.1:15012"
                                                : "off",
        .webhook_addr = fl->webhook_addr ? fl->webhook_addr : local ? "off" : ":15017",
        .monitoring_addr = fl->monitoring_addr ? fl->monitoring_addr
                           : local             ? "127.0.0.1:15014"
                                               : ":15014",
        .cacerts_dir = fl->cacerts_dir,
        .ca_root_file = fl->ca_root_file,
        .ca_ecdsa = fl->ca_ecdsa,
        .jwt_key_file = fl->jwt_key_file,
        .jwt_issuer = fl->jwt_issuer,
        .injector_config = fl->injector_config,
        .debounce_ms = fl->debounce_ms,
        /* local mode's default ports are a convenience: busy ones are skipped */
        .best_effort = local && fl->grpc_addr == NULL && fl->monitoring_addr == NULL,
    };
    if (local && (so.webhook_addr != NULL && strcmp(so.webhook_addr, "off") != 0) && !local_ca) {
        log_error("--webhook-addr in local mode needs a CA root (--ca-root-file or --cacerts-dir)");
        return NULL;
    }
    char err[512];
    serve_t *s = serve_start(&so, err, sizeof(err));
    if (s == NULL)
        log_error("%s", err);
    return s;
}

static int run_kube(struct flags *fl)
{
    int status = 1, sfd = -1;
    kube_client_t *client = NULL;
    cfg_store_t *store = NULL;
    informer_t *inf = NULL;
    debug_server_t *dbg = NULL;
    serve_t *srv = NULL;
    char err[512];

    if ((sfd = signal_fd()) < 0) {
        log_error("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    kube_opts_t ko = {.kubeconfig = fl->kubeconfig, .context = fl->context};
    client = kube_client_new(&ko, err, sizeof(err));
    if (client == NULL) {
        log_error("%s", err);
        goto out;
    }
    const char *ns = fl->ns_given ? fl->ns : kube_client_namespace(client);
    log_info("meshd %s in namespace %s, API server %s (%s)", MESH_VERSION, ns,
             kube_client_server(client), kube_client_source(client));
    store = cfg_store_new();
    cfg_store_subscribe(store, log_change, store);
    bool fatal;
    dbg = start_debug(fl, true, &fatal);
    if (fatal)
        goto out;
    /* Servers subscribe to the store before the informers start writing. */
    if ((srv = start_serving(fl, store, client, dbg, ns)) == NULL)
        goto out;
    informer_opts_t io;
    informer_opts_default(&io);
    io.client = client;
    io.store = store;
    inf = informer_start(&io, err, sizeof(err));
    if (inf == NULL) {
        log_error("%s", err);
        goto out;
    }
    if (dbg != NULL) {
        debug_add_configz(dbg, store);
        gate.store = store;
        gate.srv = srv;
        gate.inf = inf;
        debug_add_ready(dbg, gate_ready, &gate);
        debug_add_informerz(dbg, inf);
    }
    struct pollfd pfd = {.fd = sfd, .events = POLLIN};
    for (;;) {
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            goto out;
        }
        if ((pfd.revents & POLLIN) && read_signal(sfd)) {
            status = 0;
            goto out;
        }
    }
out:
    /* The debug server reads the informer and the store: it stops first;
     * the servers go once nothing writes the store any more. */
    debug_server_stop(dbg);
    informer_stop(inf);
    serve_stop(srv);
    cfg_store_free(store);
    kube_client_free(client);
    if (sfd >= 0)
        close(sfd);
    return status;
}

/* "3 VirtualService, 1 Gateway" into buf; returns the number of objects. */
static size_t kind_counts(const cfg_snap_t *snap, char *buf, size_t size)
{
    size_t len = 0, total = 0;
    buf[0] = '\0';
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        size_t n = cfg_snap_count(snap, (cfg_kind_t)k);
        if (n == 0)
            continue;
        total += n;
        int w = snprintf(buf + len, size - len, "%s%zu %s", len ? ", " : "", n,
                         cfg_kind_info((cfg_kind_t)k)->name);
        if (w < 0 || (size_t)w >= size - len)
            break;
        len += (size_t)w;
    }
    return total;
}

static void print_summary(const cfg_snap_t *snap, const cfg_dir_stats_t *st, const char *dir)
{
    printf("%s: %u objects from %u files, %u rejected\n", dir, st->objects, st->files,
           st->rejected);
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        size_t n = cfg_snap_count(snap, (cfg_kind_t)k);
        if (n > 0)
            printf("  %-30s %zu\n", cfg_kind_info((cfg_kind_t)k)->name, n);
    }
}

static int run_local(struct flags *fl)
{
    int status = 1, sfd = -1;
    cfg_store_t *store = cfg_store_new();
    cfg_dir_t *dir = NULL;
    cfg_snap_t *snap = NULL;
    debug_server_t *dbg = NULL;
    serve_t *srv = NULL;

    /* Signals arrive on a descriptor: the handlers do no work. */
    if (!fl->once) {
        if ((sfd = signal_fd()) < 0) {
            log_error("cannot set up signal handling: %s", strerror(errno));
            goto out;
        }
        bool fatal;
        dbg = start_debug(fl, false, &fatal);
        if (fatal)
            goto out;
        if (dbg != NULL) {
            debug_add_configz(dbg, store);
            gate.store = store;
            debug_add_ready(dbg, gate_ready, &gate);
        }
        if ((srv = start_serving(fl, store, NULL, dbg, fl->ns)) == NULL)
            goto out;
        gate.srv = srv;
    }

    cfg_load_opts_t opts = {.default_namespace = fl->ns};
    dir = cfg_dir_open(fl->config_dir, store, &opts);
    if (dir == NULL)
        goto out;
    cfg_dir_stats_t st;
    cfg_dir_stats(dir, &st);
    snap = cfg_store_snapshot(store);
    if (fl->once) {
        print_summary(snap, &st, fl->config_dir);
        status = st.rejected > 0 ? 1 : 0;
        goto out;
    }
    char counts[1024];
    if (kind_counts(snap, counts, sizeof(counts)) > 0)
        log_info("config: %s (version %" PRIu64 ")", counts, cfg_snap_version(snap));
    cfg_snap_release(snap);
    snap = NULL;
    atomic_store(&gate.loaded, true);

    cfg_store_subscribe(store, log_change, NULL);
    log_info("meshd %s watching %s", MESH_VERSION, fl->config_dir);
    struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN}, {.fd = cfg_dir_fd(dir), .events = POLLIN}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            goto out;
        }
        if ((pfd[0].revents & POLLIN) && read_signal(sfd)) {
            status = 0;
            goto out;
        }
        if ((pfd[1].revents & POLLIN) && cfg_dir_process(dir) < 0)
            goto out;
    }
out:
    debug_server_stop(dbg);
    cfg_snap_release(snap);
    cfg_dir_close(dir);
    serve_stop(srv);
    cfg_store_free(store);
    if (sfd >= 0)
        close(sfd);
    return status;
}

int main(int argc, char **argv)
{
    struct flags fl = {.ns = "default"};
    int status = 0;
    if (parse_flags(argc, argv, &fl, &status) != 0)
        return status;
    /* A peer that goes away mid-write is an error on that connection, not
     * the end of meshd. */
    signal(SIGPIPE, SIG_IGN);
    if (fl.config_dir != NULL)
        return run_local(&fl);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    status = run_kube(&fl);
    curl_global_cleanup();
    return status;
}
