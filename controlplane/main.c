/*
 * meshd: the control plane. Parses flags, builds the config store and its
 * source (a directory in local mode, the Kubernetes API server through the
 * informers in kube mode), the debug server, and runs the loop.
 */
#include <errno.h>
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

static atomic_bool local_ready;

static bool local_is_ready(void *ud)
{
    (void)ud;
    return atomic_load(&local_ready);
}

static bool kube_is_ready(void *ud)
{
    return informer_synced(ud);
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

static int run_kube(struct flags *fl)
{
    int status = 1, sfd = -1;
    kube_client_t *client = NULL;
    cfg_store_t *store = NULL;
    informer_t *inf = NULL;
    debug_server_t *dbg = NULL;
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
        debug_add_ready(dbg, kube_is_ready, inf);
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
    /* The debug server reads the informer and the store: it stops first. */
    debug_server_stop(dbg);
    informer_stop(inf);
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
            debug_add_ready(dbg, local_is_ready, NULL);
        }
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
    atomic_store(&local_ready, true);

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
