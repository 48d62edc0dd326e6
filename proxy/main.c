/*
 * meshproxy: the data-plane proxy. Thin main: parses flags, loads the
 * configuration, runs the engine (proxy/proxy.h) until SIGTERM.
 *
 *   meshproxy sidecar|router (--config-file FILE | --xds-addr HOST:PORT)
 *             [--node-ip IP] [--pod NAME] [--namespace NS] [--labels k=v,...]
 *             [--service-account SA] [--cluster-id ID] [--concurrency N]
 *             [--drain-time SECONDS] [--bind IP] [--no-access-log]
 *             [--stats-port P] [--ready-port P] [--admin-port P] [--log-level LEVEL]
 * Ports default to Istio's: 15090 /stats/prometheus, 15021 /healthz/ready,
 * 15000 admin (localhost); 0 turns one off.
 * The node identity defaults to the environment Istio's injector sets:
 * INSTANCE_IP, POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
 * ISTIO_META_CLUSTER_ID, ISTIO_META_WORKLOAD_NAME.
 *   meshproxy check-config FILE
 *
 * SIGHUP reloads the config file (a bad file is logged and the running
 * configuration stays); SIGTERM/SIGINT stop accepting, let in-flight
 * requests finish for up to the drain time, and exit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "config_internal.h"
#include "proxy.h"
#include "admin_internal.h"
#include "xds_client_internal.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: meshproxy sidecar|router (--config-file FILE | --xds-addr HOST:PORT)\n"
               "                 [--node-ip IP] [--pod NAME] [--namespace NS] [--labels k=v,...]\n"
               "                 [--service-account SA] [--cluster-id ID] [--concurrency N]\n"
               "                 [--drain-time SECONDS] [--bind IP] [--no-access-log] [--log-level LEVEL]\n"
               "                 [--stats-port P] [--ready-port P] [--admin-port P]\n"
               "       meshproxy check-config FILE\n");
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
static px_snapshot_t *load_snapshot(const char *path, char *err, size_t errlen)
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
    px_snapshot_t *s = load_snapshot(path, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s: %zu listeners, %zu route configurations, %zu clusters\n", path, s->nlisteners,
           s->nroute_configs, s->nclusters);
    for (size_t i = 0; i < s->nlisteners; i++) {
        const px_listener_t *l = &s->listeners[i];
        printf("  listener %s %s:%u %s%s%s\n", l->name, l->address, l->port,
               l->kind == PX_LISTENER_TCP ? "tcp_proxy -> " : "http",
               l->kind == PX_LISTENER_TCP ? l->tcp_cluster : "",
               l->kind == PX_LISTENER_HTTP && l->rds_name && !l->route_config ? " (route config missing)" : "");
    }
    for (size_t i = 0; i < s->nclusters; i++)
        printf("  cluster %s: %zu healthy endpoints\n", s->clusters[i].name, s->clusters[i].nendpoints);
    px_snapshot_unref(s);
    return 0;
}

static bool xds_ready(void *arg)
{
    return px_xds_ready(arg);
}

static int parse_uint(const char *flag, const char *v, long max, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v ? v : "", &end, 10);
    if (v == NULL || errno || end == v || *end || x < 0 || x > max) {
        fprintf(stderr, "meshproxy: %s: expects an integer in 0..%ld\n", flag, max);
        return -1;
    }
    *out = x;
    return 0;
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
    if (strcmp(mode, "sidecar") != 0 && strcmp(mode, "router") != 0) {
        fprintf(stderr, "meshproxy: unknown mode \"%s\"\n", mode);
        usage(stderr);
        return 2;
    }
    px_options_t opt = {.concurrency = 0, .drain_ms = 5000, .access_log_fd = 1};
    const char *config_file = NULL;
    const char *env;
    long stats_port = 15090, ready_port = 15021, admin_port = 15000;
    px_xds_opts_t xo = {
        .router = strcmp(mode, "router") == 0,
        .ip = (env = getenv("INSTANCE_IP")) ? env : "127.0.0.1",
        .pod = (env = getenv("POD_NAME")) ? env : "meshproxy",
        .ns = (env = getenv("POD_NAMESPACE")) ? env : "default",
        .service_account = getenv("SERVICE_ACCOUNT"),
        .cluster_id = getenv("ISTIO_META_CLUSTER_ID"),
        .workload = getenv("ISTIO_META_WORKLOAD_NAME"),
    };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (strcmp(a, "--config-file") == 0 && v) {
            config_file = v;
            i++;
        } else if (strcmp(a, "--concurrency") == 0) {
            if (parse_uint(a, v, 256, &x) < 0)
                return 2;
            opt.concurrency = (int)x;
            i++;
        } else if (strcmp(a, "--drain-time") == 0) {
            if (parse_uint(a, v, 86400, &x) < 0)
                return 2;
            opt.drain_ms = (uint64_t)x * 1000;
            i++;
        } else if (strcmp(a, "--bind") == 0 && v) {
            opt.bind_override = v;
            i++;
        } else if (strcmp(a, "--stats-port") == 0) {
            if (parse_uint(a, v, 65535, &stats_port) < 0)
                return 2;
            i++;
        } else if (strcmp(a, "--ready-port") == 0) {
            if (parse_uint(a, v, 65535, &ready_port) < 0)
                return 2;
            i++;
        } else if (strcmp(a, "--admin-port") == 0) {
            if (parse_uint(a, v, 65535, &admin_port) < 0)
                return 2;
            i++;
        } else if (strcmp(a, "--no-access-log") == 0) {
            opt.access_log_fd = -1;
        } else if (strcmp(a, "--log-level") == 0 && v) {
            int lv = log_level_parse(v);
            if (lv < 0) {
                fprintf(stderr, "meshproxy: --log-level: unknown level \"%s\"\n", v);
                return 2;
            }
            log_set_level((log_level_t)lv);
            i++;
        } else if (strcmp(a, "--xds-addr") == 0 && v) {
            xo.addr = v;
            i++;
        } else if (strcmp(a, "--node-ip") == 0 && v) {
            xo.ip = v;
            i++;
        } else if (strcmp(a, "--pod") == 0 && v) {
            xo.pod = v;
            i++;
        } else if (strcmp(a, "--namespace") == 0 && v) {
            xo.ns = v;
            i++;
        } else if (strcmp(a, "--labels") == 0 && v) {
            xo.labels = v;
            i++;
        } else if (strcmp(a, "--service-account") == 0 && v) {
            xo.service_account = v;
            i++;
        } else if (strcmp(a, "--cluster-id") == 0 && v) {
            xo.cluster_id = v;
            i++;
        } else {
            fprintf(stderr, "meshproxy: unknown or incomplete flag \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
    }
    if ((config_file == NULL) == (xo.addr == NULL)) {
        fprintf(stderr, "meshproxy: exactly one of --config-file and --xds-addr is required\n");
        return 2;
    }

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
    char err[1200];
    px_snapshot_t *snap = NULL;
    px_xds_t *xds = NULL;
    px_admin_t *admin = NULL;
    if (config_file) {
        snap = load_snapshot(config_file, err, sizeof(err));
        if (snap == NULL) {
            log_error("%s", err);
            return 1;
        }
    }
    px_server_t *srv = px_server_new(&opt, err, sizeof(err));
    if (srv == NULL) {
        log_error("%s", err);
        px_snapshot_unref(snap);
        return 1;
    }
    int rc = 0;
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
    px_admin_opts_t ao = {.server = srv,
                          .xds = xds,
                          .stats_ip = opt.bind_override,
                          .stats_port = (int)stats_port,
                          .ready_port = (int)ready_port,
                          .admin_port = (int)admin_port,
                          .ready = xds ? xds_ready : NULL,
                          .ready_arg = xds};
    admin = px_admin_start(&ao, err, sizeof(err));
    if (admin == NULL) {
        log_error("%s", err);
        rc = 1;
        goto out;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP && config_file == NULL)
            continue;
        if (sig == SIGHUP) {
            px_snapshot_t *next = load_snapshot(config_file, err, sizeof(err));
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
    px_admin_stop(admin);
    px_xds_stop(xds);
    px_server_drain_and_stop(srv);
    px_server_free(srv);
    px_snapshot_unref(snap);
    return rc;
}
