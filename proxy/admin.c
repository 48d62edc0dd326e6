/*
 * Operations endpoints on a thread of their own: Prometheus metrics
 * (/stats/prometheus, port 15090), readiness (/healthz/ready, 15021), the
 * status port (15020: /stats/prometheus with the application's own metrics
 * merged in, as the injector's prometheus.io annotations point scrapers
 * there, and /healthz/ready) and the admin interface on localhost (15000:
 * /ready, /stats, /clusters, /config_dump). One request per connection,
 * answered and closed.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/loop.h"
#include "admin_internal.h"
#include "config_internal.h"
#include "http1_internal.h"
#include "httpget.h"

enum { EP_STATS, EP_READY, EP_ADMIN, EP_STATUS, EP_N };

#define APP_SCRAPE_TIMEOUT_MS 5000 /* the app's metrics: at most this long (the status port has a thread of its own) */
#define APP_SCRAPE_MAX (16u << 20)  /* and at most this much */

typedef struct ops_listener {
    struct px_admin *a;
    int kind;
    int fd;
    loop_io_t *io;
} ops_listener_t;

struct px_admin {
    px_admin_opts_t opt;
    pthread_t thread;
    loop_t *loop;
    ops_listener_t ls[EP_N];
    struct ops_conn *conns;
};

typedef struct ops_conn {
    struct ops_conn *next, *prev;
    struct px_admin *a;
    int kind;
    int fd;
    loop_io_t *io;
    loop_timer_t *timer;
    char in[8192];
    size_t len;
    char *out;
    size_t out_len, out_off;
    bool done;
} ops_conn_t;

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return;
        b->p = p;
        b->cap = cap;
    }
}

static void histogram(sbuf_t *b, const char *name, const char *labels, const double *bounds, size_t nb,
                      const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < nb; i++) {
        cum += counts[i];
        sb_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, bounds[i], (unsigned long long)cum);
    }
    cum += counts[nb];
    sb_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    sb_printf(b, "%s_sum{%s} %.17g\n", name, labels, sum);
    sb_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

/* Renders Istio's metrics in the Prometheus text format. */
static void render_prometheus(struct px_admin *a, sbuf_t *b)
{
    px_metric_t *m = NULL;
    size_t n = px_server_metrics(a->opt.server, &m);
    static const char *const heads[] = {
        "istio_requests_total counter", "istio_request_duration_milliseconds histogram",
        "istio_request_bytes histogram", "istio_response_bytes histogram",
        "istio_tcp_connections_opened_total counter", "istio_tcp_connections_closed_total counter",
        "istio_tcp_sent_bytes_total counter", "istio_tcp_received_bytes_total counter"};
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        char name[80];
        const char *sp = strchr(heads[h], ' ');
        snprintf(name, sizeof(name), "%.*s", (int)(sp - heads[h]), heads[h]);
        sb_printf(b, "# TYPE %s %s\n", name, sp + 1);
        for (size_t i = 0; i < n; i++) {
            const px_metric_t *x = &m[i];
            const char *labels = x->labels + 1; /* past the h/t kind prefix */
            if ((h < 4) == x->tcp)
                continue;
            switch (h) {
            case 0:
                sb_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)x->requests);
                break;
            case 1:
                histogram(b, name, labels, px_dur_bounds, PX_DUR_BUCKETS, x->dur, x->dur_sum);
                break;
            case 2:
                histogram(b, name, labels, px_size_bounds, PX_SIZE_BUCKETS, x->req_size, (double)x->req_size_sum);
                break;
            case 3:
                histogram(b, name, labels, px_size_bounds, PX_SIZE_BUCKETS, x->resp_size,
                          (double)x->resp_size_sum);
                break;
            case 4:
                sb_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)x->tcp_opened);
                break;
            case 5:
                sb_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)x->tcp_closed);
                break;
            case 6:
                sb_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)x->tcp_sent);
                break;
            default:
                sb_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)x->tcp_received);
                break;
            }
        }
    }
    px_metrics_free(m, n);
}

/* Appends the application's metrics (the status port's merge). A scrape that
 * fails leaves the proxy's own metrics and is logged. Blocks this admin
 * thread only (meshproxy runs the status port on one of its own), for at
 * most APP_SCRAPE_TIMEOUT_MS. */
static void merge_app_metrics(struct px_admin *a, sbuf_t *b)
{
    char err[512];
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    if (px_http_get(a->opt.app_metrics_url, APP_SCRAPE_TIMEOUT_MS, APP_SCRAPE_MAX, &status, &body, &len, err,
                    sizeof(err)) < 0) {
        log_warn("status port: application metrics from %s", err);
        return;
    }
    if (status != 200) {
        log_warn("status port: application metrics from %s: HTTP %d", a->opt.app_metrics_url, status);
        free(body);
        return;
    }
    if (b->len && b->p[b->len - 1] != '\n')
        sb_printf(b, "\n");
    sb_printf(b, "%.*s", (int)len, body);
    if (len && body[len - 1] != '\n')
        sb_printf(b, "\n");
    free(body);
}

static bool is_ready(struct px_admin *a)
{
    return a->opt.ready ? a->opt.ready(a->opt.ready_arg) : true;
}

/* Builds the response for a path; returns the status. */
/* /logging: GET shows the level; POST ?level=L sets it, with Envoy's names
 * (trace and debug are debug here, warning is warn, critical is error). */
static int logging_page(bool post, const char *query, sbuf_t *b)
{
    static const char *const names[] = {"debug", "info", "warning", "error", "off"};
    if (query && strncmp(query, "level=", 6) == 0) {
        if (!post) {
            sb_printf(b, "changing the level needs POST\n");
            return 405;
        }
        char v[32];
        snprintf(v, sizeof(v), "%.*s", (int)strcspn(query + 6, "&"), query + 6);
        const char *lv = strcmp(v, "trace") == 0      ? "debug"
                         : strcmp(v, "warning") == 0  ? "warn"
                         : strcmp(v, "critical") == 0 ? "error"
                         : strcmp(v, "off") == 0      ? "none"
                                                      : v;
        int l = log_level_parse(lv);
        if (l < 0) {
            sb_printf(b, "unknown level \"%s\" (trace, debug, info, warning, error, critical, off)\n", v);
            return 400;
        }
        log_set_level((log_level_t)l);
        log_info("admin: log level set to %s", names[l]);
    } else if (query && *query) {
        sb_printf(b, "usage: POST /logging?level=<trace|debug|info|warning|error|critical|off>\n");
        return 400;
    }
    sb_printf(b, "active loggers:\n  meshproxy: %s\n", names[log_get_level()]);
    return 200;
}

static int handle(struct px_admin *a, int kind, bool post, const char *path, size_t plen, sbuf_t *b,
                  const char **ctype)
{
    char p[256];
    snprintf(p, sizeof(p), "%.*s", (int)plen, path);
    char *q = strchr(p, '?');
    if (q)
        *q++ = '\0';
    *ctype = "text/plain";
    if ((kind == EP_STATS || kind == EP_STATUS) && strcmp(p, "/stats/prometheus") == 0) {
        *ctype = "text/plain; version=0.0.4";
        render_prometheus(a, b);
        if (kind == EP_STATUS && a->opt.app_metrics_url != NULL)
            merge_app_metrics(a, b);
        return 200;
    }
    if (((kind == EP_READY || kind == EP_STATUS) && strcmp(p, "/healthz/ready") == 0) ||
        (kind == EP_ADMIN && strcmp(p, "/ready") == 0)) {
        bool r = is_ready(a);
        sb_printf(b, "%s\n", r ? "LIVE" : "PRE_INITIALIZING");
        return r ? 200 : 503;
    }
    if (kind != EP_ADMIN) {
        sb_printf(b, "not found\n");
        return 404;
    }
    if (strcmp(p, "/stats/prometheus") == 0) {
        *ctype = "text/plain; version=0.0.4";
        render_prometheus(a, b);
        return 200;
    }
    if (strcmp(p, "/logging") == 0)
        return logging_page(post, q, b);
    if (strcmp(p, "/stats") == 0) {
        px_counters_t c;
        px_server_counters(a->opt.server, &c);
        sb_printf(b,
                  "downstream_cx_total: %llu\ndownstream_cx_active: %llu\ndownstream_rq_total: %llu\n"
                  "downstream_rq_2xx: %llu\ndownstream_rq_3xx: %llu\ndownstream_rq_4xx: %llu\n"
                  "downstream_rq_5xx: %llu\nupstream_cx_total: %llu\nupstream_rq_total: %llu\n"
                  "upstream_cx_pool_reused: %llu\n",
                  (unsigned long long)c.downstream_cx_total, (unsigned long long)c.downstream_cx_active,
                  (unsigned long long)c.downstream_rq_total, (unsigned long long)c.rq_2xx,
                  (unsigned long long)c.rq_3xx, (unsigned long long)c.rq_4xx, (unsigned long long)c.rq_5xx,
                  (unsigned long long)c.upstream_cx_total, (unsigned long long)c.upstream_rq_total,
                  (unsigned long long)c.upstream_cx_reused);
        sb_printf(b, "http.fault.aborts_injected: %llu\nhttp.fault.delays_injected: %llu\n",
                  (unsigned long long)c.fault_abort, (unsigned long long)c.fault_delay);
        sb_printf(b, "upstream_rq_retry: %llu\nupstream_rq_retry_success: %llu\n"
                  "upstream_rq_retry_limit_exceeded: %llu\n",
                  (unsigned long long)c.retry, (unsigned long long)c.retry_success,
                  (unsigned long long)c.retry_exhausted);
        sb_printf(b, "upstream_cx_overflow: %llu\nupstream_rq_pending_overflow: %llu\n"
                  "upstream_rq_retry_overflow: %llu\n",
                  (unsigned long long)c.cx_overflow, (unsigned long long)c.rq_pending_overflow,
                  (unsigned long long)c.retry_overflow);
        sb_printf(b, "http.shadow.requests_sent: %llu\nhttp.shadow.requests_failed: %llu\n",
                  (unsigned long long)c.shadow_sent, (unsigned long long)c.shadow_failed);
        sb_printf(b,
                  "outlier_detection.ejections_enforced_total: %llu\n"
                  "outlier_detection.ejections_enforced_consecutive_5xx: %llu\n"
                  "outlier_detection.ejections_enforced_consecutive_gateway_failure: %llu\n"
                  "outlier_detection.ejections_overflow: %llu\n",
                  (unsigned long long)c.od_ejections, (unsigned long long)c.od_eject_5xx,
                  (unsigned long long)c.od_eject_gw, (unsigned long long)c.od_overflow);
        sb_printf(b, "ssl.handshake: %llu\nssl.connection_error: %llu\n"
                  "rbac.allowed: %llu\nrbac.denied: %llu\nrbac.shadow_denied: %llu\n"
                  "listener.no_filter_chain_match: %llu\ntcp.tunnels_spliced: %llu\n",
                  (unsigned long long)c.ssl_handshake, (unsigned long long)c.ssl_fail,
                  (unsigned long long)c.rbac_allowed, (unsigned long long)c.rbac_denied,
                  (unsigned long long)c.rbac_shadow_denied, (unsigned long long)c.no_filter_chain,
                  (unsigned long long)c.tunnels_spliced);
        sb_printf(b, "downstream_rq_http2_total: %llu\nupstream_rq_http2_total: %llu\n"
                  "http2.rx_reset: %llu\nhttp2.tx_reset: %llu\nhttp2.goaway_sent: %llu\n"
                  "http2.goaway_received: %llu\n",
                  (unsigned long long)c.h2_streams_down, (unsigned long long)c.h2_streams_up,
                  (unsigned long long)c.h2_rx_reset, (unsigned long long)c.h2_tx_reset,
                  (unsigned long long)c.h2_goaway_sent, (unsigned long long)c.h2_goaway_rx);
        if (a->opt.xds) {
            px_xds_status_t st;
            px_xds_status(a->opt.xds, &st);
            sb_printf(b, "xds.update_success: %llu\nxds.update_rejected: %llu\nxds.config_applied: %llu\n",
                      (unsigned long long)st.acks, (unsigned long long)st.nacks, (unsigned long long)st.applies);
            if (st.last_error[0])
                sb_printf(b, "xds.last_rejection: %s\n", st.last_error);
        }
        return 200;
    }
    px_snapshot_t *s = px_server_snapshot(a->opt.server);
    if (strcmp(p, "/clusters") == 0) {
        for (size_t i = 0; s && i < s->nclusters; i++) {
            const px_cluster_t *c = &s->clusters[i];
            if (c->nendpoints == 0)
                sb_printf(b, "%s::no_healthy_endpoints\n", c->name);
            for (size_t e = 0; e < c->nendpoints; e++)
                sb_printf(b, "%s::%s::weight::%u\n", c->name, c->endpoints[e].address, c->endpoints[e].weight);
        }
        px_snapshot_unref(s);
        return 200;
    }
    if (strcmp(p, "/config_dump") == 0) {
        *ctype = "application/json";
        json_object *root = json_object_new_object();
        json_object *ls = json_object_new_array(), *rs = json_object_new_array(), *cs = json_object_new_array();
        for (size_t i = 0; s && i < s->nlisteners; i++) {
            const px_listener_t *l = &s->listeners[i];
            json_object *o = json_object_new_object();
            json_object_object_add(o, "name", json_object_new_string(l->name));
            char addr[300];
            snprintf(addr, sizeof(addr), "%s:%u", l->address, l->port);
            json_object_object_add(o, "address", json_object_new_string(addr));
            if (!l->bind)
                json_object_object_add(o, "bind_to_port", json_object_new_boolean(false));
            json_object *chs = json_object_new_array();
            for (size_t k = 0; k <= l->nchains; k++) {
                const px_chain_t *ch = k < l->nchains ? &l->chains[k] : l->default_chain;
                if (ch == NULL)
                    continue;
                json_object *co = json_object_new_object();
                json_object_object_add(co, "name", json_object_new_string(ch->name));
                if (k == l->nchains)
                    json_object_object_add(co, "default", json_object_new_boolean(true));
                json_object_object_add(co, "kind",
                                       json_object_new_string(ch->kind == PX_LISTENER_TCP ? "tcp_proxy" : "http"));
                if (ch->rds_name)
                    json_object_object_add(co, "rds", json_object_new_string(ch->rds_name));
                if (ch->tcp_cluster)
                    json_object_object_add(co, "cluster", json_object_new_string(ch->tcp_cluster));
                if (ch->tls)
                    json_object_object_add(co, "tls", json_object_new_boolean(true));
                if (ch->nnet_rbac + ch->nhttp_rbac)
                    json_object_object_add(co, "rbac_filters", json_object_new_int((int)(ch->nnet_rbac + ch->nhttp_rbac)));
                json_object_array_add(chs, co);
            }
            json_object_object_add(o, "filter_chains", chs);
            json_object_array_add(ls, o);
        }
        for (size_t i = 0; s && i < s->nroute_configs; i++) {
            const px_route_config_t *rc = &s->route_configs[i];
            json_object *o = json_object_new_object();
            json_object_object_add(o, "name", json_object_new_string(rc->name));
            json_object *vhs = json_object_new_array();
            for (size_t v = 0; v < rc->nvhosts; v++) {
                json_object *vo = json_object_new_object();
                json_object_object_add(vo, "name", json_object_new_string(rc->vhosts[v].name));
                json_object_object_add(vo, "routes", json_object_new_int64((int64_t)rc->vhosts[v].nroutes));
                json_object_array_add(vhs, vo);
            }
            json_object_object_add(o, "virtual_hosts", vhs);
            json_object_array_add(rs, o);
        }
        static const char *const lbn[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "ORIGINAL_DST"};
        for (size_t i = 0; s && i < s->nclusters; i++) {
            const px_cluster_t *c = &s->clusters[i];
            json_object *o = json_object_new_object();
            json_object_object_add(o, "name", json_object_new_string(c->name));
            json_object_object_add(o, "type", json_object_new_string(c->eds ? "EDS" : "STATIC"));
            json_object_object_add(o, "lb_policy", json_object_new_string(lbn[c->lb]));
            json_object_object_add(o, "healthy_endpoints", json_object_new_int64((int64_t)c->nendpoints));
            json_object_array_add(cs, o);
        }
        json_object_object_add(root, "listeners", ls);
        json_object_object_add(root, "route_configurations", rs);
        json_object_object_add(root, "clusters", cs);
        sb_printf(b, "%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
        json_object_put(root);
        px_snapshot_unref(s);
        return 200;
    }
    px_snapshot_unref(s);
    sb_printf(b, "admin: /ready /stats /stats/prometheus /clusters /config_dump\n");
    return 404;
}

static void conn_free(void *arg)
{
    ops_conn_t *c = arg;
    free(c->out);
    free(c);
}

static void conn_close(ops_conn_t *c)
{
    if (c->done)
        return;
    c->done = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    loop_io_del(c->io);
    loop_timer_free(c->timer);
    close(c->fd);
    loop_defer(c->a->loop, conn_free, c);
}

static void conn_timeout(loop_timer_t *t, void *arg)
{
    (void)t;
    conn_close(arg);
}

static void conn_io(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    ops_conn_t *c = arg;
    if (c->done)
        return;
    if (c->out == NULL && (ev & LOOP_READ)) {
        ssize_t n = recv(fd, c->in + c->len, sizeof(c->in) - c->len, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            conn_close(c);
            return;
        }
        c->len += (size_t)n;
        px_h1_msg_t *m = malloc(sizeof(*m));
        const char *err;
        int r = m ? px_h1_parse_request(c->in, c->len, m, &err) : -1;
        if (r == -2 && c->len < sizeof(c->in)) {
            free(m);
            return;
        }
        sbuf_t body = {0};
        const char *ctype = "text/plain";
        int status = 400;
        if (r > 0)
            status = handle(c->a, c->kind, px_h1_ieq(m->method, m->method_len, "POST"), m->target, m->target_len,
                            &body, &ctype);
        free(m);
        sbuf_t resp = {0};
        sb_printf(&resp, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\nconnection: close\r\n\r\n",
                  status, status == 200 ? "OK" : status == 503 ? "Service Unavailable" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed" : "Bad Request",
                  ctype, body.len);
        if (body.len)
            sb_printf(&resp, "%.*s", (int)body.len, body.p);
        free(body.p);
        c->out = resp.p;
        c->out_len = resp.len;
        loop_io_modify(c->io, LOOP_WRITE);
        return;
    }
    if (c->out && (ev & LOOP_WRITE)) {
        while (c->out_off < c->out_len) {
            ssize_t n = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN)
                    return;
                break;
            }
            c->out_off += (size_t)n;
        }
        conn_close(c);
    }
}

static void accept_io(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    (void)ev;
    ops_listener_t *l = arg;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        ops_conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(cfd);
            continue;
        }
        c->a = l->a;
        c->kind = l->kind;
        c->fd = cfd;
        c->io = loop_io_add(l->a->loop, cfd, LOOP_READ, conn_io, c);
        c->timer = loop_timer_new(l->a->loop, conn_timeout, c);
        if (c->io == NULL) {
            loop_timer_free(c->timer);
            close(cfd);
            free(c);
            continue;
        }
        loop_timer_start(c->timer, 10000, 0);
        c->next = l->a->conns;
        if (c->next)
            c->next->prev = c;
        l->a->conns = c;
    }
}

static int listen_on(const char *ip, int port, char *err, size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "%s is not an IPv4 address", ip);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", ip, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void *admin_main(void *arg)
{
    struct px_admin *a = arg;
    loop_run(a->loop);
    return NULL;
}

px_admin_t *px_admin_start(const px_admin_opts_t *o, char *err, size_t errlen)
{
    struct px_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->opt = *o;
    a->loop = loop_new();
    const int ports[EP_N] = {o->stats_port, o->ready_port, o->admin_port, o->status_port};
    const char *any = o->stats_ip ? o->stats_ip : "0.0.0.0";
    const char *ips[EP_N] = {any, any, "127.0.0.1", any};
    for (int k = 0; k < EP_N; k++) {
        a->ls[k].fd = -1;
        a->ls[k].a = a;
        a->ls[k].kind = k;
    }
    if (a->loop == NULL)
        goto fail;
    for (int k = 0; k < EP_N; k++) {
        if (ports[k] <= 0)
            continue;
        a->ls[k].fd = listen_on(ips[k], ports[k], err, errlen);
        if (a->ls[k].fd < 0)
            goto fail;
        a->ls[k].io = loop_io_add(a->loop, a->ls[k].fd, LOOP_READ, accept_io, &a->ls[k]);
    }
    if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
        snprintf(err, errlen, "cannot start the admin thread");
        goto fail;
    }
    return a;
fail:
    for (int k = 0; k < EP_N; k++)
        if (a->ls[k].fd >= 0)
            close(a->ls[k].fd);
    if (a->loop)
        loop_free(a->loop);
    free(a);
    return NULL;
}

static void stop_cb(void *arg)
{
    struct px_admin *a = arg;
    while (a->conns)
        conn_close(a->conns);
    loop_stop(a->loop);
}

void px_admin_stop(px_admin_t *a)
{
    if (a == NULL)
        return;
    loop_post(a->loop, stop_cb, a);
    pthread_join(a->thread, NULL);
    for (int k = 0; k < EP_N; k++)
        if (a->ls[k].fd >= 0) {
            loop_io_del(a->ls[k].io);
            close(a->ls[k].fd);
        }
    loop_run_once(a->loop, 0);
    loop_free(a->loop);
    free(a);
}
