/*
 * xds_load: ADS load benchmark.
 *
 * A child process plays meshd's xDS part: a config store with S services
 * (2 HTTP ports, a DestinationRule with 3 subsets and a VirtualService each)
 * and E endpoints (pods behind EndpointSlices), the ADS server of
 * xds/xds_server.h on 127.0.0.1, debounce 100 ms, translations on a pool
 * of 2 threads. The parent opens P
 * simulated sidecars (ADS streams spread over C HTTP/2 connections) that
 * subscribe like Envoy (CDS, EDS of every EDS cluster, LDS, RDS of the route
 * names of the ports) and ACK every response at once.
 *
 * Reported: time until every sidecar holds the full state; time to push a
 * mesh-wide change (a new Service, visible to every sidecar) to all of them;
 * p50/p99 over all sidecars and K changes of the time from a single
 * VirtualService change to the sidecar's ACK of the new routes (the debounce
 * included); the server's resident memory and CPU time.
 *
 *   xds_load [--services N] [--endpoints N] [--proxies N] [--conns N] [--changes N]
 *   xds_load --translate N [--services N] [--endpoints N] [--dump FILE]
 *
 * --translate N skips the ADS part: it loads the same mesh in-process, times
 * a whole xds_translate() of up to 20 of N sidecars spread over the
 * namespaces, then the translation meshd's push uses for all N (outbound part
 * shared per namespace, tx_translate_shared). --dump writes every resource's
 * name and hash of the whole translations (all N) and checks that the shared
 * ones have the same sets.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/grpc.h"
#include "../common/log.h"
#include "../xds/translate_internal.h"
#include "../xds/xds.h"
#include "../xds/xds_server.h"

static int nservices = 1000, nendpoints = 10000, nproxies = 2000, nconns = 20, nchanges = 10;
static int ntranslate = 0;
static const char *dump_path; /* --dump FILE: every resource's name and hash (--translate) */
#define NNS 10

/* ---- config ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (b->p && b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n + 4096;
        b->p = realloc(b->p, b->cap);
    }
}

static void pod_ip(char *buf, size_t size, int svc, int j)
{
    snprintf(buf, size, "10.%d.%d.%d", 1 + (svc >> 8), svc & 255, 1 + j);
}

static void vs_yaml(sbuf_t *b, int i, int gen)
{
    int w = gen == 0 ? 90 : 10 + gen % 80; /* every change differs from the last */
    sb_printf(b,
              "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
              "metadata: {name: svc-%d, namespace: ns-%d}\n"
              "spec:\n  hosts: [svc-%d]\n  http:\n"
              "  - match: [{headers: {end-user: {exact: jason}}}]\n"
              "    route: [{destination: {host: svc-%d, subset: v3}}]\n"
              "  - route:\n    - {destination: {host: svc-%d, subset: v1}, weight: %d}\n"
              "    - {destination: {host: svc-%d, subset: v2}, weight: %d}\n",
              i, i % NNS, i, i, i, w, i, 100 - w);
}

static char *world_yaml(void)
{
    sbuf_t b = {0};
    int per = nendpoints / nservices;
    if (per < 2)
        per = 2;
    for (int n = 0; n < NNS; n++)
        sb_printf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-%d}\n", n);
    for (int i = 0; i < nservices; i++) {
        int ns = i % NNS;
        sb_printf(&b,
                  "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: "
                  "ns-%d}\nspec:\n  selector: {app: svc-%d}\n  ports:\n"
                  "  - {name: http-a, port: 8080, targetPort: 8080}\n"
                  "  - {name: http-b, port: 9090, targetPort: 9090}\n",
                  i, ns, i);
        sb_printf(&b,
                  "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                  "metadata:\n  name: svc-%d-x\n  namespace: ns-%d\n"
                  "  labels: {kubernetes.io/service-name: svc-%d}\naddressType: IPv4\n"
                  "ports: [{name: http-a, port: 8080}, {name: http-b, port: 9090}]\n"
                  "endpoints:\n",
                  i, ns, i);
        for (int j = 0; j < per; j++) {
            char ip[32];
            pod_ip(ip, sizeof(ip), i, j);
            sb_printf(&b,
                      "- addresses: [%s]\n  targetRef: {kind: Pod, name: svc-%d-%d, namespace: "
                      "ns-%d}\n",
                      ip, i, j, ns);
        }
        for (int j = 0; j < per; j++) {
            char ip[32];
            pod_ip(ip, sizeof(ip), i, j);
            sb_printf(&b,
                      "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-%d-%d\n"
                      "  namespace: ns-%d\n  labels: {app: svc-%d, version: v%d}\n"
                      "  annotations: {sidecar.istio.io/status: '{}'}\n"
                      "spec:\n  containers: [{name: app, image: app}]\nstatus: {podIP: %s}\n",
                      i, j, ns, i, j < 2 ? 1 : 1 + j % 3, ip); /* pods 0, 1: replicas */
        }
        sb_printf(&b,
                  "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                  "metadata: {name: svc-%d, namespace: ns-%d}\n"
                  "spec:\n  host: svc-%d\n  subsets:\n  - {name: v1, labels: {version: v1}}\n"
                  "  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n",
                  i, ns, i);
        vs_yaml(&b, i, 0);
    }
    return b.p;
}

/* ---- the server (child) ---- */

typedef struct child {
    loop_t *loop;
    cfg_store_t *store;
    int gen;
    int extra;
} child_t;

static void child_cmd(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    (void)ev;
    child_t *c = arg;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0) {
        loop_stop(c->loop);
        return;
    }
    buf[n] = 0;
    sbuf_t b = {0};
    if (buf[0] == 'v') { /* one VirtualService */
        vs_yaml(&b, atoi(buf + 1), ++c->gen);
        cfg_store_apply_yaml(c->store, b.p);
    } else if (buf[0] == 'm') { /* mesh-wide: a new service */
        sb_printf(&b,
                  "apiVersion: v1\nkind: Service\nmetadata: {name: extra-%d, namespace: ns-0}\n"
                  "spec:\n  ports: [{name: http-a, port: 8080}]\n",
                  c->extra++);
        cfg_store_apply_yaml(c->store, b.p);
    }
    free(b.p);
}

static int run_child(int cmd_fd, int port_fd)
{
    log_set_level(LOG_WARN);
    child_t c = {0};
    c.loop = loop_new();
    c.store = cfg_store_new();
    char *yaml = world_yaml();
    uint64_t t0 = loop_clock_ms();
    cfg_store_apply_yaml(c.store, yaml);
    free(yaml);
    fprintf(stderr, "server: %zu objects loaded in %" PRIu64 " ms\n",
            cfg_snap_count(cfg_store_snapshot(c.store), CFG_KIND_NONE), loop_clock_ms() - t0);
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0", .write_low_water = 64 * 1024};
    grpc_server_t *gs = grpc_server_new(c.loop, &go, err, sizeof(err));
    if (gs == NULL) {
        fprintf(stderr, "server: %s\n", err);
        return 1;
    }
    workq_t *wq = workq_new(2); /* as meshd: translations off the loop */
    xds_server_opts_t xo = {.debounce_ms = 100, .workq = wq};
    xds_server_t *xs = xds_server_start(c.loop, gs, c.store, &xo);
    loop_io_add(c.loop, cmd_fd, LOOP_READ, child_cmd, &c);
    int port = grpc_server_port(gs);
    if (write(port_fd, &port, sizeof(port)) != sizeof(port))
        return 1;
    close(port_fd);
    loop_run(c.loop);
    xds_server_stats_t st;
    xds_server_stats(xs, &st);
    fprintf(stderr,
            "server: %" PRIu64 " translations, %" PRIu64 " responses encoded, %" PRIu64
            " shared, %" PRIu64 " translations shared, %" PRIu64 " resources (%.1f MB) interned\n",
            st.translations, st.responses_encoded, st.responses_shared, st.translations_shared,
            st.resources_interned, st.resources_bytes / 1048576.0);
    return 0;
}

/* ---- translation only (--translate) ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int run_translate(void)
{
    log_set_level(LOG_WARN);
    cfg_store_t *store = cfg_store_new();
    char *yaml = world_yaml();
    cfg_store_apply_yaml(store, yaml);
    free(yaml);
    cfg_snap_t *snap = cfg_store_snapshot(store);
    double t0 = now_s();
    reg_t *reg = reg_build(snap);
    printf("translate: %d services, %d endpoints; registry built in %.3f s, rss peak %.1f MB\n",
           nservices, nendpoints, now_s() - t0, peak_rss_kb() / 1024.0);
    xds_input_t in = {.snap = snap, .reg = reg};
    xds_proxy_t **px = calloc((size_t)ntranslate, sizeof(*px));
    for (int i = 0; i < ntranslate; i++) {
        int svc = (int)(((long)i * nservices / ntranslate + i) % nservices); /* all namespaces */
        char ip[32], pod[64], ns[32];
        pod_ip(ip, sizeof(ip), svc, 0);
        snprintf(pod, sizeof(pod), "svc-%d-0", svc);
        snprintf(ns, sizeof(ns), "ns-%d", svc % NNS);
        px[i] = xds_proxy_new(XDS_SIDECAR, ip, pod, ns, "default", NULL);
    }
    uint64_t sum[XDS_NTYPES] = {0};
    uint32_t cnt[XDS_NTYPES] = {0};
    FILE *dump = dump_path ? fopen(dump_path, "w") : NULL;
    int nfull = dump_path || ntranslate < 20 ? ntranslate : 20; /* the slow one: a sample */
    t0 = now_s();
    for (int i = 0; i < nfull; i++) {
        xds_resources_t *r = xds_translate(&in, px[i]);
        for (int t = 0; t < XDS_NTYPES; t++) {
            uint32_t n;
            const xds_resource_t *res = xds_resources_get(r, (xds_type_t)t, &n);
            cnt[t] = n;
            for (uint32_t k = 0; k < n; k++) {
                sum[t] += res[k].len;
                if (dump)
                    fprintf(dump, "%s %d %s %016" PRIx64 "\n", px[i]->id, t, res[k].name,
                            res[k].hash);
            }
        }
        xds_resources_unref(r);
    }
    double full = now_s() - t0;
    if (dump)
        fclose(dump);
    uint64_t bytes = 0;
    for (int t = 0; t < XDS_NTYPES; t++)
        bytes += sum[t];
    printf("full translation: %.1f ms per proxy (%d proxies), rss peak %.1f MB; last proxy: "
           "%u listeners, %u routes, %u clusters, %u endpoints, %.1f MB serialized\n",
           full * 1000 / nfull, nfull, peak_rss_kb() / 1024.0, cnt[XDS_LISTENER],
           cnt[XDS_ROUTE], cnt[XDS_CLUSTER], cnt[XDS_ENDPOINT],
           bytes / 1048576.0 / nfull);
    /* as the push does: outbound part per namespace, inbound part per proxy */
    tx_shared_t *sh = tx_shared_new(&in);
    size_t differ = 0;
    t0 = now_s();
    for (int i = 0; i < ntranslate; i++) {
        xds_resources_t *r = tx_translate_shared(sh, &in, px[i]);
        if (dump) { /* the shared path must give the bytes the full one gives */
            xds_resources_t *f = xds_translate(&in, px[i]);
            for (int t = 0; t < XDS_NTYPES; t++)
                differ += xds_resources_hash(r, (xds_type_t)t) !=
                          xds_resources_hash(f, (xds_type_t)t);
            xds_resources_unref(f);
        }
        xds_resources_unref(r);
    }
    double shared = now_s() - t0;
    uint64_t built, reused;
    tx_shared_stats(sh, &built, &reused);
    tx_shared_unref(sh);
    printf("shared translation: %.1f ms per proxy%s (outbound part built %" PRIu64
           " times, reused %" PRIu64 " times), rss peak %.1f MB%s\n",
           shared * 1000 / ntranslate, dump ? ", with the full one to compare" : "", built,
           reused, peak_rss_kb() / 1024.0,
           !dump    ? ""
           : differ ? ", DIFFERENT from the full translation"
                    : ", identical to the full translation");
    for (int i = 0; i < ntranslate; i++)
        xds_proxy_free(px[i]);
    free(px);
    reg_unref(reg);
    cfg_snap_release(snap);
    cfg_store_free(store);
    return 0;
}

/* ---- the sidecars (parent) ---- */

static const char *const TYPES[4] = {XDS_CLUSTER_TYPE, XDS_ENDPOINT_TYPE, XDS_LISTENER_TYPE,
                                     XDS_ROUTE_TYPE};
enum { T_CDS, T_EDS, T_LDS, T_RDS };

typedef struct sidecar {
    grpc_call_t *call;
    char node[128];
    bool sent_node;
    bool closed;
    uint32_t got[4];
    uint64_t rx_ms[4]; /* last response time */
    char nonce[4][32];
    char version[4][32];
    char **eds;
    size_t neds;
} sidecar_t;

static loop_t *ploop;
static sidecar_t *cars;
static uint64_t total_rx;

/* Minimal protobuf reading. */
static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

typedef struct fld {
    int num, wt;
    uint64_t v;
    const uint8_t *data;
    size_t len;
} fld_t;

static int rd_field(const uint8_t **p, const uint8_t *end, fld_t *f)
{
    uint64_t key;
    if (*p >= end || rd_varint(p, end, &key) < 0)
        return -1;
    f->num = (int)(key >> 3);
    f->wt = (int)(key & 7);
    if (f->wt == 0)
        return rd_varint(p, end, &f->v);
    if (f->wt == 2) {
        uint64_t l;
        if (rd_varint(p, end, &l) < 0 || l > (uint64_t)(end - *p))
            return -1;
        f->data = *p;
        f->len = (size_t)l;
        *p += l;
        return 0;
    }
    if (f->wt == 5) {
        *p += 4;
        return 0;
    }
    if (f->wt == 1) {
        *p += 8;
        return 0;
    }
    return -1;
}

static size_t vlen(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *wr_ld(uint8_t *p, int num, const void *d, size_t len)
{
    *p++ = (uint8_t)(num << 3 | 2);
    uint64_t v = len;
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    memcpy(p, d, len);
    return p + len;
}

static void send_req(sidecar_t *c, int t, char *const *names, size_t nnames)
{
    size_t len = 0;
    size_t idlen = strlen(c->node);
    size_t nodelen = 1 + vlen(idlen) + idlen;
    if (!c->sent_node)
        len += 1 + vlen(nodelen) + nodelen;
    for (size_t i = 0; i < nnames; i++)
        len += 1 + vlen(strlen(names[i])) + strlen(names[i]);
    const char *url = TYPES[t];
    len += 3 * 6 + strlen(url) + strlen(c->version[t]) + strlen(c->nonce[t]);
    uint8_t *buf = malloc(len + 16), *p = buf;
    p = wr_ld(p, 1, c->version[t], strlen(c->version[t]));
    if (!c->sent_node) {
        uint8_t nb[160];
        uint8_t *q = wr_ld(nb, 1, c->node, idlen);
        p = wr_ld(p, 2, nb, (size_t)(q - nb));
        c->sent_node = true;
    }
    for (size_t i = 0; i < nnames; i++)
        p = wr_ld(p, 3, names[i], strlen(names[i]));
    p = wr_ld(p, 4, url, strlen(url));
    p = wr_ld(p, 5, c->nonce[t], strlen(c->nonce[t]));
    grpc_call_send(c->call, buf, (size_t)(p - buf));
    free(buf);
}

static char *RDS_NAMES[] = {"8080", "9090"};

static void on_resp(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    sidecar_t *c = arg;
    const uint8_t *p = msg, *end = msg + len;
    fld_t f;
    int t = -1;
    char version[32] = "", nonce[32] = "";
    /* first pass: type, version, nonce */
    while (p < end && rd_field(&p, end, &f) == 0) {
        if (f.wt != 2)
            continue;
        if (f.num == 4) {
            for (int i = 0; i < 4; i++)
                if (f.len == strlen(TYPES[i]) && memcmp(f.data, TYPES[i], f.len) == 0)
                    t = i;
        } else if (f.num == 1 && f.len < sizeof(version)) {
            memcpy(version, f.data, f.len);
            version[f.len] = 0;
        } else if (f.num == 5 && f.len < sizeof(nonce)) {
            memcpy(nonce, f.data, f.len);
            nonce[f.len] = 0;
        }
    }
    if (t < 0)
        return;
    total_rx++;
    c->got[t]++;
    c->rx_ms[t] = loop_clock_ms();
    memcpy(c->version[t], version, sizeof(version));
    memcpy(c->nonce[t], nonce, sizeof(nonce));
    if (t == T_CDS) {
        /* EDS clusters: Cluster.name (1), type (2) == EDS (3) */
        for (size_t i = 0; i < c->neds; i++)
            free(c->eds[i]);
        c->neds = 0;
        size_t cap = 0;
        p = msg;
        while (p < end && rd_field(&p, end, &f) == 0) {
            if (f.num != 2 || f.wt != 2)
                continue;
            const uint8_t *a = f.data, *ae = f.data + f.len;
            fld_t g;
            while (a < ae && rd_field(&a, ae, &g) == 0) {
                if (g.num != 2 || g.wt != 2)
                    continue;
                const uint8_t *q = g.data, *qe = g.data + g.len;
                fld_t h;
                const uint8_t *name = NULL;
                size_t nl = 0;
                bool eds = false;
                while (q < qe && rd_field(&q, qe, &h) == 0) {
                    if (h.num == 1 && h.wt == 2) {
                        name = h.data;
                        nl = h.len;
                    } else if (h.num == 2 && h.wt == 0) {
                        eds = h.v == 3;
                    }
                }
                if (name && eds) {
                    if (c->neds == cap) {
                        cap = cap ? cap * 2 : 64;
                        c->eds = realloc(c->eds, cap * sizeof(char *));
                    }
                    c->eds[c->neds++] = strndup((const char *)name, nl);
                }
            }
        }
        send_req(c, T_CDS, NULL, 0);
        send_req(c, T_EDS, c->eds, c->neds);
        if (c->got[T_CDS] == 1)
            send_req(c, T_LDS, NULL, 0);
    } else if (t == T_EDS) {
        send_req(c, T_EDS, c->eds, c->neds);
    } else if (t == T_LDS) {
        send_req(c, T_LDS, NULL, 0);
        send_req(c, T_RDS, RDS_NAMES, 2);
    } else {
        send_req(c, T_RDS, RDS_NAMES, 2);
    }
}

static void on_end(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    sidecar_t *c = arg;
    c->closed = true;
    c->call = NULL;
    if (status != GRPC_CANCELLED)
        fprintf(stderr, "sidecar %s: stream closed: %s %s\n", c->node, grpc_status_name(status),
                message);
}

static const grpc_call_cbs_t CBS = {.on_message = on_resp, .on_close = on_end};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct proc_use {
    long rss_kb, hwm_kb;
    double cpu_s;
} proc_use_t;

static proc_use_t proc_usage(pid_t pid)
{
    proc_use_t u = {0};
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &u.rss_kb);
        sscanf(line, "VmHWM: %ld", &u.hwm_kb);
    }
    if (f)
        fclose(f);
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f && fgets(line, sizeof(line), f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                        &st) == 2)
            u.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    if (f)
        fclose(f);
    return u;
}

static void run_for(uint64_t ms)
{
    uint64_t end = loop_clock_ms() + ms;
    while (loop_clock_ms() < end)
        loop_run_once(ploop, 5);
}

/* Runs the loop until every sidecar has got[t] > base[i] (or timeout). */
static bool wait_all(int t, const uint32_t *base, uint64_t timeout_ms)
{
    uint64_t end = loop_clock_ms() + timeout_ms;
    for (;;) {
        int missing = 0;
        for (int i = 0; i < nproxies; i++)
            if (cars[i].got[t] <= (base ? base[i] : 0))
                missing++;
        if (missing == 0)
            return true;
        if (loop_clock_ms() > end) {
            fprintf(stderr, "timeout: %d sidecars still waiting for %s\n", missing, TYPES[t]);
            return false;
        }
        loop_run_once(ploop, 5);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--services") == 0)
            nservices = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--endpoints") == 0)
            nendpoints = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--proxies") == 0)
            nproxies = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--conns") == 0)
            nconns = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--changes") == 0)
            nchanges = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--translate") == 0)
            ntranslate = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dump") == 0)
            dump_path = argv[i + 1];
        else {
            fprintf(stderr, "usage: xds_load [--services N] [--endpoints N] [--proxies N] "
                            "[--conns N] [--changes N] | --translate N [--dump FILE]\n");
            return 2;
        }
    }
    if (ntranslate > 0 && nservices >= 1 && nendpoints >= nservices * 2)
        return run_translate();
    if (nservices < 1 || nproxies < 1 || nconns < 1 || nproxies > nservices * 2 ||
        nendpoints < nservices * 2) {
        fprintf(stderr, "xds_load: need services >= 1, proxies <= 2 * services, "
                        "endpoints >= 2 * services\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int cmd[2], portp[2];
    if (pipe(cmd) < 0 || pipe(portp) < 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(cmd[1]);
        close(portp[0]);
        _exit(run_child(cmd[0], portp[1]));
    }
    close(cmd[0]);
    close(portp[1]);
    int port = 0;
    if (read(portp[0], &port, sizeof(port)) != sizeof(port)) {
        fprintf(stderr, "xds_load: the server did not start\n");
        return 1;
    }
    proc_use_t u0 = proc_usage(pid);
    printf("config: %d services x 2 ports, DestinationRule (3 subsets) + VirtualService each, "
           "%d endpoints; %d sidecars over %d connections\n",
           nservices, nendpoints, nproxies, nconns);
    printf("server after load: rss %.1f MB, cpu %.2f s\n", u0.rss_kb / 1024.0, u0.cpu_s);

    log_set_level(LOG_WARN);
    ploop = loop_new();
    char addr[64], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    grpc_client_t **conns = calloc((size_t)nconns, sizeof(*conns));
    grpc_client_opts_t co = {.max_recv_msg = 256u << 20};
    for (int i = 0; i < nconns; i++) {
        conns[i] = grpc_client_connect(ploop, addr, &co, err, sizeof(err));
        if (conns[i] == NULL) {
            fprintf(stderr, "xds_load: %s\n", err);
            return 1;
        }
    }
    cars = calloc((size_t)nproxies, sizeof(*cars));
    uint64_t t0 = loop_clock_ms();
    for (int i = 0; i < nproxies; i++) {
        int svc = i / 2, j = i % 2;
        char ip[32];
        pod_ip(ip, sizeof(ip), svc, j);
        snprintf(cars[i].node, sizeof(cars[i].node),
                 "sidecar~%s~svc-%d-%d.ns-%d~ns-%d.svc.cluster.local", ip, svc, j, svc % NNS,
                 svc % NNS);
        cars[i].call = grpc_call_start(conns[i % nconns], XDS_ADS_SOTW_PATH, NULL, 0, &CBS,
                                       &cars[i]);
        send_req(&cars[i], T_CDS, NULL, 0);
    }
    bool ok = wait_all(T_RDS, NULL, 300000) && wait_all(T_EDS, NULL, 60000);
    uint64_t t_full = loop_clock_ms() - t0;
    run_for(300);
    proc_use_t u1 = proc_usage(pid);
    printf("initial: every sidecar has CDS+EDS+LDS+RDS after %.3f s (%s); server rss %.1f MB, "
           "cpu %.2f s\n",
           t_full / 1000.0, ok ? "ok" : "TIMEOUT", u1.rss_kb / 1024.0, u1.cpu_s - u0.cpu_s);

    /* mesh-wide change */
    uint32_t *base = calloc((size_t)nproxies, sizeof(*base));
    for (int i = 0; i < nproxies; i++)
        base[i] = cars[i].got[T_CDS];
    proc_use_t u2 = proc_usage(pid);
    t0 = loop_clock_ms();
    if (write(cmd[1], "m", 1) != 1)
        return 1;
    ok = wait_all(T_CDS, base, 120000);
    uint64_t t_cds = 0;
    for (int i = 0; i < nproxies; i++)
        if (cars[i].rx_ms[T_CDS] - t0 > t_cds)
            t_cds = cars[i].rx_ms[T_CDS] - t0;
    for (int i = 0; i < nproxies; i++)
        base[i] = cars[i].got[T_RDS];
    bool ok2 = wait_all(T_RDS, NULL, 60000);
    run_for(500);
    uint64_t t_all = 0;
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < nproxies; i++)
            if (cars[i].rx_ms[t] > t0 && cars[i].rx_ms[t] - t0 > t_all)
                t_all = cars[i].rx_ms[t] - t0;
    proc_use_t u3 = proc_usage(pid);
    printf("mesh-wide change (new Service): CDS at every sidecar after %.3f s, last response "
           "after %.3f s (%s); server cpu %.2f s\n",
           t_cds / 1000.0, t_all / 1000.0, ok && ok2 ? "ok" : "TIMEOUT", u3.cpu_s - u2.cpu_s);

    /* single VirtualService changes */
    uint64_t *lat = calloc((size_t)nproxies * (size_t)nchanges, sizeof(*lat));
    size_t nlat = 0;
    int missed = 0;
    proc_use_t u4 = proc_usage(pid);
    for (int k = 0; k < nchanges; k++) {
        for (int i = 0; i < nproxies; i++)
            base[i] = cars[i].got[T_RDS];
        char c[32];
        int n = snprintf(c, sizeof(c), "v%d", (k * 7919) % nservices);
        t0 = loop_clock_ms();
        if (write(cmd[1], c, (size_t)n) != n)
            return 1;
        if (!wait_all(T_RDS, base, 30000))
            missed++;
        for (int i = 0; i < nproxies; i++)
            if (cars[i].got[T_RDS] > base[i])
                lat[nlat++] = cars[i].rx_ms[T_RDS] - t0;
        run_for(300);
    }
    proc_use_t u5 = proc_usage(pid);
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    if (nlat > 0)
        printf("single VirtualService change -> ACK of the new routes: p50 %" PRIu64
               " ms, p99 %" PRIu64 " ms, max %" PRIu64 " ms (%zu samples, %d changes, %d "
               "incomplete); server cpu %.2f s\n",
               lat[nlat / 2], lat[nlat * 99 / 100], lat[nlat - 1], nlat, nchanges, missed,
               u5.cpu_s - u4.cpu_s);
    printf("server: rss %.1f MB, peak rss %.1f MB, cpu total %.2f s\n", u5.rss_kb / 1024.0,
           u5.hwm_kb / 1024.0, u5.cpu_s);
    printf("responses received: %" PRIu64 "\n", total_rx);

    for (int i = 0; i < nconns; i++)
        grpc_client_free(conns[i]);
    for (int i = 0; i < 10; i++)
        loop_run_once(ploop, 0);
    close(cmd[1]);
    int status;
    waitpid(pid, &status, 0);
    for (int i = 0; i < nproxies; i++) {
        for (size_t j = 0; j < cars[i].neds; j++)
            free(cars[i].eds[j]);
        free(cars[i].eds);
    }
    free(cars);
    free(conns);
    free(base);
    free(lat);
    loop_free(ploop);
    return 0;
}
