/*
 * serve: meshd's servers on one loop thread (see serve.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../ca/ca.h"
#include "../common/arena.h"
#include "../common/grpc.h"
#include "../common/log.h"
#include "../common/loop.h"
#include "../common/workq.h"
#include "../webhook/webhook.h"
#include "../xds/xds_server.h"
#include "kube.h"
#include "serve.h"

#define ROTATE_CHECK_MS (15u * 60u * 1000u) /* serving certificates: checked every 15 min */
#define WEBHOOK_CERT_TTL_S (365 * 24 * 3600)

struct serve {
    serve_opts_t o;
    loop_t *loop;
    pthread_t thread;
    bool thread_started;
    workq_t *wq;
    ca_t *ca;
    ca_authn_t *authn;
    ca_serving_t *serving;
    ca_service_t *ca_svc;
    grpc_server_t *grpc, *sgrpc;
    xds_server_t *xds, *sxds;
    debug_server_t *mon;
    webhook_t *wh;
    webhook_server_t *whs;
    loop_timer_t *rotate;
    loop_timer_t *reregister; /* kube mode: caBundles re-checked while leading */
    serve_ports_t ports;
    /* kube mode: only the leader writes (root ConfigMaps, webhook registration) */
    kube_leader_t *leader;
    _Atomic bool leading;
};

static bool off(const char *addr)
{
    return addr == NULL || addr[0] == '\0' || strcmp(addr, "off") == 0;
}

/* ---- certificates ---- */

static void rotate_work(void *arg)
{
    serve_t *s = arg;
    char err[256];
    int r = ca_serving_rotate(s->serving, false, err, sizeof(err));
    if (r < 0)
        log_error("serving certificate for the secure gRPC port: %s", err);
    else if (r > 0)
        log_info("serving certificate for the secure gRPC port rotated");
}

static void rotate_tick(loop_timer_t *t, void *arg)
{
    (void)t;
    serve_t *s = arg;
    workq_submit(s->wq, NULL, rotate_work, NULL, s); /* signing stays off the loop */
}

/* The DNS names meshd answers to in its namespace (as istiod does). */
static size_t service_names(const char *ns, char names[][128], size_t max)
{
    const char *const svc[] = {"istiod", "meshd"};
    size_t n = 0;
    for (size_t i = 0; i < 2 && n + 2 <= max; i++) {
        snprintf(names[n++], 128, "%s.%s.svc", svc[i], ns);
        snprintf(names[n++], 128, "%s.%s.svc.cluster.local", svc[i], ns);
    }
    if (n < max)
        snprintf(names[n++], 128, "localhost");
    return n;
}

/* ---- /metrics on the monitoring port ---- */

static void append(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char **buf, size_t *len, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    *buf = mesh_xrealloc(*buf, *len + (size_t)n + 1);
    memcpy(*buf + *len, line, (size_t)n + 1);
    *len += (size_t)n;
}

static void metrics_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    (void)req;
    serve_t *s = ud;
    char *buf = NULL;
    size_t len = 0;
    /* one set of pilot_* series: the plaintext server's, else the TLS one's */
    if (s->xds != NULL || s->sxds != NULL)
        xds_server_metrics_text(s->xds != NULL ? s->xds : s->sxds, &buf, &len);
    if (s->ca != NULL) {
        ca_stats_t st;
        ca_get_stats(s->ca, &st);
        append(&buf, &len, "# HELP citadel_server_csr_count The number of CSRs received by the CA.\n"
                           "# TYPE citadel_server_csr_count counter\n"
                           "citadel_server_csr_count %" PRIu64 "\n", st.csr_count);
        append(&buf, &len, "# HELP citadel_server_success_cert_issuance_count The number of certificates issued.\n"
                           "# TYPE citadel_server_success_cert_issuance_count counter\n"
                           "citadel_server_success_cert_issuance_count %" PRIu64 "\n", st.success);
        append(&buf, &len, "# HELP citadel_server_csr_sign_err_count The number of CSRs refused or failed.\n"
                           "# TYPE citadel_server_csr_sign_err_count counter\n"
                           "citadel_server_csr_sign_err_count %" PRIu64 "\n", st.refused + st.errors);
        ca_bundle_t *b = ca_bundle_get(s->ca);
        if (b != NULL) {
            append(&buf, &len, "# HELP citadel_server_root_cert_expiry_timestamp Unix time the root (or intermediate) expires.\n"
                               "# TYPE citadel_server_root_cert_expiry_timestamp gauge\n"
                               "citadel_server_root_cert_expiry_timestamp %" PRId64 "\n", ca_bundle_not_after(b));
            ca_bundle_release(b);
        }
    }
    if (s->wh != NULL) {
        webhook_stats_t st;
        webhook_get_stats(s->wh, &st);
        append(&buf, &len, "# TYPE sidecar_injection_requests_total counter\n"
                           "sidecar_injection_requests_total %" PRIu64 "\n"
                           "# TYPE sidecar_injection_success_total counter\n"
                           "sidecar_injection_success_total %" PRIu64 "\n"
                           "# TYPE sidecar_injection_skip_total counter\n"
                           "sidecar_injection_skip_total %" PRIu64 "\n"
                           "# TYPE sidecar_injection_failure_total counter\n"
                           "sidecar_injection_failure_total %" PRIu64 "\n",
               st.inject_requests, st.injected, st.inject_skipped, st.inject_errors);
        append(&buf, &len, "# TYPE galley_validation_passed counter\n"
                           "galley_validation_passed %" PRIu64 "\n"
                           "# TYPE galley_validation_failed counter\n"
                           "galley_validation_failed %" PRIu64 "\n",
               st.validate_requests - st.validate_denied, st.validate_denied);
    }
    resp->status = 200;
    resp->body = buf ? buf : mesh_xstrdup("");
    resp->len = len;
    resp->content_type = "text/plain; version=0.0.4";
}

/* ---- start and stop ---- */

static void *loop_thread(void *arg)
{
    serve_t *s = arg;
    loop_run(s->loop);
    return NULL;
}

static grpc_server_t *grpc_start(serve_t *s, const char *addr, tp_tls_ctx_t *tls, char *err,
                                 size_t errlen)
{
    /* ":15010" means every address, as Go's listeners spell it */
    char full[256];
    snprintf(full, sizeof(full), "%s%s", addr[0] == ':' ? "0.0.0.0" : "", addr);
    grpc_server_opts_t go = {.listen = full, .tls = tls, .keepalive_ms = 30000};
    return grpc_server_new(s->loop, &go, err, errlen);
}

static int start_ca(serve_t *s, char *err, size_t errlen)
{
    const serve_opts_t *o = &s->o;
    char root_file[512] = "";
    if (o->kube == NULL && o->cacerts_dir == NULL) {
        snprintf(root_file, sizeof(root_file), "%s",
                 o->ca_root_file ? o->ca_root_file : "/var/lib/meshd/ca-root.pem");
        char *slash = strrchr(root_file, '/');
        if (slash != NULL && slash != root_file) {
            *slash = '\0';
            if (mkdir(root_file, 0700) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "cannot create %s for the CA root: %s", root_file, strerror(errno));
                return -1;
            }
            *slash = '/';
        }
    }
    ca_opts_t co = {.trust_domain = o->trust_domain,
                    .ns = o->ns,
                    .kube = o->kube,
                    .cacerts_dir = o->cacerts_dir,
                    .root_file = root_file[0] ? root_file : NULL,
                    .root_key_type = o->ca_ecdsa ? CA_KEY_ECDSA : CA_KEY_RSA,
                    .reload_interval_ms = o->kube ? 30000 : 0};
    /* In a cluster the root lives in a Secret: an API server that is slow to
     * answer at start is waited for (with backoff), not fatal at once. */
    for (int attempt = 0, delay_ms = 500;; attempt++, delay_ms *= 2) {
        if ((s->ca = ca_new(&co, err, errlen)) != NULL)
            break;
        if (o->kube == NULL || attempt == 5)
            return -1;
        log_warn("%s; retrying in %d ms", err, delay_ms);
        usleep((useconds_t)delay_ms * 1000);
    }
    if (o->kube != NULL || o->jwt_key_file != NULL) {
        ca_authn_opts_t ao = {.kube = o->kube,
                              .jwt_key_file = o->jwt_key_file,
                              .issuer = o->jwt_issuer,
                              .trust_domain = o->trust_domain};
        if ((s->authn = ca_authn_new(&ao, err, errlen)) == NULL)
            return -1;
    } else {
        log_warn("CA: no --jwt-key-file: workload certificate requests will be refused in local mode");
    }
    char names[8][128];
    const char *dns[8];
    size_t n = service_names(o->ns, names, 8);
    for (size_t i = 0; i < n; i++)
        dns[i] = names[i];
    if ((s->serving = ca_serving_new(s->ca, dns, n, 0, err, errlen)) == NULL)
        return -1;
    return 0;
}

static int start_webhook(serve_t *s, char *err, size_t errlen)
{
    const serve_opts_t *o = &s->o;
    webhook_config_t *cfg = NULL;
    if (o->injector_config != NULL &&
        (cfg = webhook_config_load(o->injector_config, o->ns, err, errlen)) == NULL)
        return -1;
    webhook_opts_t wo = {.config = cfg, .mesh_ns = o->ns};
    s->wh = webhook_new(&wo);
    webhook_config_unref(cfg);
    if (webhook_watch_store(s->wh, o->store) != 0) {
        snprintf(err, errlen, "webhook: cannot follow the config store");
        return -1;
    }
    /* The webhook's certificate comes from meshd's own CA. */
    char names[8][128];
    const char *dns[8];
    size_t n = service_names(o->ns, names, 8);
    for (size_t i = 0; i < n; i++)
        dns[i] = names[i];
    char *key = NULL, *chain_pem = NULL;
    ca_chain_t chain = {0};
    int rc = -1;
    if (ca_issue_serving(s->ca, dns, n, NULL, WEBHOOK_CERT_TTL_S, CA_KEY_ECDSA, &key, &chain, err,
                         errlen) != 0)
        goto out;
    chain_pem = ca_chain_join(&chain, 0);
    char host[256] = "";
    int port = 0;
    const char *colon = strrchr(o->webhook_addr, ':');
    if (colon == NULL || (port = atoi(colon + 1)) < 0 || port > 65535) {
        snprintf(err, errlen, "webhook address \"%s\": expected HOST:PORT or :PORT", o->webhook_addr);
        goto out;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - o->webhook_addr), o->webhook_addr);
    webhook_server_opts_t so = {.addr = host[0] ? host : NULL, .port = port, .cert_pem = chain_pem,
                                .key_pem = key};
    if ((s->whs = webhook_server_start(s->wh, &so, err, errlen)) == NULL)
        goto out;
    s->ports.webhook = webhook_server_port(s->whs);
    rc = 0;
out:
    ca_chain_free(&chain);
    free(chain_pem);
    ca_free_secret(key);
    return rc;
}

/* Keeps both webhook configurations pointing at meshd's CA (leader only):
 * at the start of leadership and then every minute, so that a rotated root
 * or an edited configuration is repaired (an unchanged one costs a GET). */
static void register_webhooks(serve_t *s, bool periodic)
{
    const serve_opts_t *o = &s->o;
    {
        char *root = ca_root_pem(s->ca);
        webhook_register_opts_t ro = {.mutating = o->mutating_name ? o->mutating_name : "istio-sidecar-injector",
                                      .validating = o->validating_name,
                                      .ca_pem = root,
                                      .ready = true};
        char e2[512];
        char vname[300];
        if (ro.validating == NULL) {
            snprintf(vname, sizeof(vname), "istio-validator-%s", o->ns);
            ro.validating = vname;
        }
        if (webhook_register(o->kube, &ro, e2, sizeof(e2)) != 0)
            log_warn("webhook registration: %s", e2);
        else
            log_msg(periodic ? LOG_DEBUG : LOG_INFO, "webhook configurations %s and %s: caBundle checked",
                    ro.mutating, ro.validating);
        free(root);
    }
}

/* ---- leader election (kube mode) ---- */

static void ca_event_if_leader(void *ud, const cfg_event_t *ev)
{
    serve_t *s = ud;
    if (atomic_load(&s->leading))
        ca_on_store_event(s->ca, ev);
}

static void on_leading(void *ud)
{
    serve_t *s = ud;
    log_info("leader election: leading; publishing the root and registering webhooks");
    atomic_store(&s->leading, true);
    if (s->ca != NULL)
        ca_publish_all(s->ca);
    if (s->whs != NULL)
        register_webhooks(s, false);
}

static void reregister_work(void *arg)
{
    serve_t *s = arg;
    if (atomic_load(&s->leading))
        register_webhooks(s, true);
}

static void reregister_tick(loop_timer_t *t, void *arg)
{
    (void)t;
    serve_t *s = arg;
    workq_submit(s->wq, NULL, reregister_work, NULL, s); /* HTTP stays off the loop */
}

static void on_not_leading(void *ud)
{
    serve_t *s = ud;
    atomic_store(&s->leading, false);
    log_info("leader election: not leading; another replica writes");
}

serve_t *serve_start(const serve_opts_t *o, char *err, size_t errlen)
{
    serve_t *s = mesh_xcalloc(1, sizeof(*s));
    s->o = *o;
    if ((s->loop = loop_new()) == NULL || (s->wq = workq_new(2)) == NULL) {
        snprintf(err, errlen, "cannot create the event loop or its worker threads");
        goto fail;
    }
    bool need_ca = !off(o->secure_grpc_addr) || !off(o->webhook_addr);
    if (need_ca && start_ca(s, err, errlen) != 0)
        goto fail;
    /* translations run on the worker pool, never on the loop */
    xds_server_opts_t xo = {.debounce_ms = o->debounce_ms, .trust_domain = o->trust_domain,
                            .workq = s->wq};
    if (!off(o->grpc_addr)) {
        if ((s->grpc = grpc_start(s, o->grpc_addr, NULL, err, errlen)) == NULL) {
            if (!o->best_effort)
                goto fail;
            log_warn("%s; running without the plaintext xDS port", err);
        } else {
            s->ports.grpc = grpc_server_port(s->grpc);
            s->xds = xds_server_start(s->loop, s->grpc, o->store, &xo);
            log_info("xDS (plaintext) listening on %s (port %d)", o->grpc_addr, s->ports.grpc);
        }
    }
    if (!off(o->secure_grpc_addr)) {
        if ((s->sgrpc = grpc_start(s, o->secure_grpc_addr, ca_serving_tls(s->serving), err, errlen)) == NULL)
            goto fail;
        s->ports.secure_grpc = grpc_server_port(s->sgrpc);
        s->sxds = xds_server_start(s->loop, s->sgrpc, o->store, &xo);
        if (s->authn != NULL &&
            (s->ca_svc = ca_service_new(s->ca, s->authn, s->wq, s->sgrpc, err, errlen)) == NULL)
            goto fail;
        log_info("xDS and CA (TLS) listening on %s (port %d)", o->secure_grpc_addr, s->ports.secure_grpc);
        s->rotate = loop_timer_new(s->loop, rotate_tick, s);
        loop_timer_start(s->rotate, ROTATE_CHECK_MS, ROTATE_CHECK_MS);
    }
    if (o->debug != NULL && s->xds != NULL)
        xds_server_add_debug(s->xds, o->debug);
    if (!off(o->webhook_addr)) {
        if (start_webhook(s, err, errlen) != 0)
            goto fail;
        log_info("webhooks (HTTPS) listening on %s (port %d)", o->webhook_addr, s->ports.webhook);
    }
    if (o->kube != NULL) {
        /* the root in every namespace's istio-ca-root-cert, kept current by
         * whichever replica leads */
        if (s->ca != NULL)
            cfg_store_subscribe(o->store, ca_event_if_leader, s);
        char identity[256], host[128] = "meshd";
        const char *pod = getenv("POD_NAME");
        gethostname(host, sizeof(host) - 1);
        snprintf(identity, sizeof(identity), "%s_%d", pod && *pod ? pod : host, (int)getpid());
        kube_leader_opts_t lo = {.ns = o->ns,
                                 .name = "meshd-leader",
                                 .identity = identity,
                                 .lease_duration_ms = 15000,
                                 .renew_deadline_ms = 10000,
                                 .retry_period_ms = 2000,
                                 .on_started = on_leading,
                                 .on_stopped = on_not_leading,
                                 .ud = s};
        if ((s->leader = kube_leader_start(o->kube, &lo, err, errlen)) == NULL)
            goto fail;
        if (s->whs != NULL) {
            s->reregister = loop_timer_new(s->loop, reregister_tick, s);
            loop_timer_start(s->reregister, 60000, 60000);
        }
    }
    if (!off(o->monitoring_addr)) {
        char full[256];
        snprintf(full, sizeof(full), "%s%s", o->monitoring_addr[0] == ':' ? "0.0.0.0" : "",
                 o->monitoring_addr);
        s->mon = debug_server_start(full, err, errlen);
        if (s->mon == NULL && !o->best_effort)
            goto fail;
    }
    if (s->mon != NULL) {
        debug_handle(s->mon, "/metrics", "Prometheus metrics (pilot_*, citadel_*, sidecar_injection_*)",
                     metrics_page, s);
        s->ports.monitoring = debug_server_port(s->mon);
        log_info("monitoring listening on %s (port %d)", o->monitoring_addr, s->ports.monitoring);
    } else if (!off(o->monitoring_addr)) {
        log_warn("%s; running without the monitoring port", err);
    }
    if (pthread_create(&s->thread, NULL, loop_thread, s) != 0) {
        snprintf(err, errlen, "cannot start the serving thread");
        goto fail;
    }
    s->thread_started = true;
    return s;
fail:
    serve_stop(s);
    return NULL;
}

void serve_ports(const serve_t *s, serve_ports_t *out)
{
    *out = s->ports;
}

/* Runs on the loop thread: the gRPC servers close their streams first, then
 * the services that registered on them go. */
static void teardown_on_loop(void *arg)
{
    serve_t *s = arg;
    loop_timer_free(s->rotate);
    loop_timer_free(s->reregister);
    s->rotate = s->reregister = NULL;
    grpc_server_free(s->grpc);
    grpc_server_free(s->sgrpc);
    s->grpc = s->sgrpc = NULL;
    xds_server_stop(s->xds);
    xds_server_stop(s->sxds);
    s->xds = s->sxds = NULL;
    ca_service_free(s->ca_svc);
    s->ca_svc = NULL;
    loop_stop(s->loop);
}

void serve_stop(serve_t *s)
{
    if (s == NULL)
        return;
    debug_server_stop(s->mon); /* its page reads the parts below */
    kube_leader_stop(s->leader); /* releases the lease: another replica takes over at once */
    webhook_server_stop(s->whs);
    if (s->o.kube != NULL && s->ca != NULL)
        cfg_store_unsubscribe(s->o.store, ca_event_if_leader, s);
    if (s->loop != NULL) {
        if (s->thread_started) {
            loop_post(s->loop, teardown_on_loop, s);
            pthread_join(s->thread, NULL);
        } else {
            teardown_on_loop(s); /* the loop never ran: this thread owns it */
        }
    }
    workq_free(s->wq);
    if (s->loop != NULL)
        loop_run_once(s->loop, 0); /* the last worker completions */
    webhook_free(s->wh);
    ca_serving_free(s->serving);
    ca_authn_free(s->authn);
    ca_free(s->ca);
    loop_free(s->loop);
    free(s);
}

bool serve_xds_at(serve_t *s, uint64_t version)
{
    if (s == NULL)
        return true;
    return (s->xds == NULL || xds_server_store_version(s->xds) >= version) &&
           (s->sxds == NULL || xds_server_store_version(s->sxds) >= version);
}
