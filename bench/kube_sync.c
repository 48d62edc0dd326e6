/*
 * bench/kube_sync: meshd's informers against a real API server.
 *
 *   kube_sync --kubeconfig PATH --meshd build/meshd [--pods 10000] [--services 1000]
 *             [--slices 1000] [--mesh 5000] [--rate 1000] [--seconds 30] [--no-populate]
 *
 * 1. Populates the server with pods, services, EndpointSlices and mesh config
 *    objects through concurrent POSTs (one libcurl multi, HTTP/2).
 * 2. Starts the real meshd binary against it and reports the time until its
 *    /ready answers 200, and its resident memory then.
 * 3. Updates pods at a fixed rate for a while (merge patches of an annotation
 *    holding the send time) and reports meshd's CPU use meanwhile and the
 *    event-to-store latency (p50/p99) seen by an informer of the same code
 *    running in this process.
 *
 * bench/kube_sync.sh starts a private envtest API server and runs this.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../common/log.h"
#include "../controlplane/informer.h"
#include "../controlplane/kube.h"

#define NS_COUNT 10
#define MAX_INFLIGHT 64

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- concurrent requests ---- */

struct req {
    CURL *h;
    struct curl_slist *hdrs;
    char *body;
    long status;
    char resp[512];
    size_t rlen;
};

struct runner {
    kube_client_t *c;
    CURLM *m;
    struct req slots[MAX_INFLIGHT * 4];
    int inflight, max_inflight;
    uint64_t done, failed;
};

static size_t on_resp(char *p, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n, room = sizeof(r->resp) - 1 - r->rlen;
    size_t k = len < room ? len : room;
    memcpy(r->resp + r->rlen, p, k);
    r->rlen += k;
    r->resp[r->rlen] = '\0';
    return len;
}

static void runner_reap(struct runner *rn, int wait_ms)
{
    int running;
    curl_multi_perform(rn->m, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(rn->m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
        /* 409: created by an earlier run */
        if (msg->data.result != CURLE_OK || (r->status >= 300 && r->status != 409)) {
            if (rn->failed++ < 5)
                fprintf(stderr, "kube_sync: request failed: %d %ld %s\n", msg->data.result, r->status, r->resp);
        }
        rn->done++;
        curl_multi_remove_handle(rn->m, r->h);
        curl_easy_cleanup(r->h);
        curl_slist_free_all(r->hdrs);
        free(r->body);
        r->h = NULL;
        rn->inflight--;
    }
    if (wait_ms > 0)
        curl_multi_poll(rn->m, NULL, 0, wait_ms, NULL);
}

/* Starts a request (waits for a free slot first). body is taken over. */
static void runner_add(struct runner *rn, const char *method, const char *path, char *body, const char *ctype)
{
    while (rn->inflight >= rn->max_inflight)
        runner_reap(rn, 10);
    struct req *r = NULL;
    for (size_t i = 0; i < sizeof(rn->slots) / sizeof(rn->slots[0]); i++)
        if (rn->slots[i].h == NULL) {
            r = &rn->slots[i];
            break;
        }
    memset(r, 0, sizeof(*r));
    r->h = curl_easy_init();
    r->body = body;
    r->hdrs = kube_prepare(rn->c, r->h, method, path, ctype);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_resp);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->h, CURLOPT_PIPEWAIT, 1L);
    curl_multi_add_handle(rn->m, r->h);
    rn->inflight++;
    runner_reap(rn, 0);
}

static void runner_drain(struct runner *rn)
{
    while (rn->inflight > 0)
        runner_reap(rn, 50);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void post(struct runner *rn, const char *path, char *body)
{
    runner_add(rn, "POST", path, body, "application/json");
}

static void populate(kube_client_t *c, int pods, int services, int slices, int mesh)
{
    struct runner rn = {.c = c, .m = curl_multi_init(), .max_inflight = MAX_INFLIGHT};
    curl_multi_setopt(rn.m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    uint64_t t0 = mono_ns();
    for (int n = 0; n < NS_COUNT; n++)
        post(&rn, "/api/v1/namespaces",
             fmt("{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"bench-%d\"}}", n));
    runner_drain(&rn);
    const char *es_version = kube_resource_version(c, "discovery.k8s.io", "endpointslices");
    if (es_version == NULL)
        es_version = "v1beta1";
    for (int i = 0; i < services; i++) {
        int n = i % NS_COUNT;
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/namespaces/bench-%d/services", n);
        post(&rn, path,
             fmt("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"svc-%d\"},"
                 "\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"app-%d\"},\"ports\":[{\"name\":\"http\",\"port\":80,"
                 "\"targetPort\":8080}]}}",
                 i, i));
    }
    for (int i = 0; i < slices; i++) {
        int n = i % NS_COUNT;
        char path[128];
        snprintf(path, sizeof(path), "/apis/discovery.k8s.io/%s/namespaces/bench-%d/endpointslices", es_version, n);
        post(&rn, path,
             fmt("{\"apiVersion\":\"discovery.k8s.io/%s\",\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":"
                 "\"svc-%d-x\",\"labels\":{\"kubernetes.io/service-name\":\"svc-%d\"}},\"addressType\":\"IPv4\","
                 "\"ports\":[{\"name\":\"http\",\"port\":8080}],\"endpoints\":[{\"addresses\":[\"10.%d.%d.%d\"],"
                 "\"conditions\":{\"ready\":true}},{\"addresses\":[\"10.%d.%d.%d\"],\"conditions\":{\"ready\":true}}]}",
                 es_version, i, i, 1 + i / 65536, (i / 256) % 256, i % 256, 2 + i / 65536, (i / 256) % 256,
                 i % 256));
    }
    for (int i = 0; i < pods; i++) {
        int n = i % NS_COUNT;
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/namespaces/bench-%d/pods", n);
        post(&rn, path,
             fmt("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"pod-%d\",\"labels\":{\"app\":"
                 "\"app-%d\",\"version\":\"v1\"},\"annotations\":{\"bench/sent-ns\":\"0\"}},\"spec\":{"
                 "\"containers\":[{\"name\":\"app\",\"image\":\"example/app:1\",\"ports\":[{\"containerPort\":8080,"
                 "\"name\":\"http\"}]}]}}",
                 i, i % (services ? services : 1)));
    }
    for (int i = 0; i < mesh; i++) {
        int n = i % NS_COUNT;
        char path[160];
        if (i % 5 < 3) {
            snprintf(path, sizeof(path), "/apis/networking.istio.io/v1/namespaces/bench-%d/virtualservices", n);
            post(&rn, path,
                 fmt("{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\",\"metadata\":{"
                     "\"name\":\"vs-%d\"},\"spec\":{\"hosts\":[\"svc-%d\"],\"http\":[{\"match\":[{\"uri\":{"
                     "\"prefix\":\"/api\"}}],\"timeout\":\"5s\",\"retries\":{\"attempts\":3,\"perTryTimeout\":"
                     "\"2s\"},\"route\":[{\"destination\":{\"host\":\"svc-%d\",\"subset\":\"v1\"},\"weight\":90},"
                     "{\"destination\":{\"host\":\"svc-%d\",\"subset\":\"v2\"},\"weight\":10}]}]}}",
                     i, i % 1000, i % 1000, i % 1000));
        } else {
            snprintf(path, sizeof(path), "/apis/networking.istio.io/v1/namespaces/bench-%d/destinationrules", n);
            post(&rn, path,
                 fmt("{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"DestinationRule\",\"metadata\":{"
                     "\"name\":\"dr-%d\"},\"spec\":{\"host\":\"svc-%d\",\"trafficPolicy\":{\"connectionPool\":{"
                     "\"tcp\":{\"maxConnections\":100}}},\"subsets\":[{\"name\":\"v1\",\"labels\":{\"version\":"
                     "\"v1\"}},{\"name\":\"v2\",\"labels\":{\"version\":\"v2\"}}]}}",
                     i, i % 1000));
        }
    }
    runner_drain(&rn);
    double s = (double)(mono_ns() - t0) / 1e9;
    printf("populate: %d pods, %d services, %d EndpointSlices, %d mesh objects: %" PRIu64 " requests in %.1f s "
           "(%.0f/s), %" PRIu64 " failed\n",
           pods, services, slices, mesh, rn.done, s, (double)rn.done / s, rn.failed);
    curl_multi_cleanup(rn.m);
}

/* ---- meshd ---- */

static long http_status(const char *url)
{
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
}

static long proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* utime + stime of a process, in clock ticks. */
static long long proc_cpu_ticks(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* ---- latency, from an informer in this process ---- */

struct lat {
    uint64_t *v;
    size_t n, cap;
    bool on;
};

static void on_change(void *ud, const cfg_event_t *ev)
{
    struct lat *l = ud;
    if (!l->on || ev->type != CFG_EVENT_UPDATE || ev->kind != CFG_Pod || ev->new->meta == NULL)
        return;
    const cfg_map_t *a = &ev->new->meta->annotations;
    for (uint32_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i].key, "bench/sent-ns") != 0)
            continue;
        uint64_t sent = strtoull(a->v[i].str, NULL, 10), now = real_ns();
        if (sent == 0 || now < sent)
            return;
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 4096;
            l->v = realloc(l->v, l->cap * sizeof(*l->v));
        }
        l->v[l->n++] = now - sent;
        return;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *kubeconfig = NULL, *meshd = "build/meshd";
    int pods = 10000, services = 1000, slices = 1000, mesh = 5000, rate = 1000, seconds = 30, port = 0;
    bool do_populate = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT_S(name, var) if (strcmp(a, name) == 0 && v) { var = v; i++; continue; }
#define OPT_I(name, var) if (strcmp(a, name) == 0 && v) { var = atoi(v); i++; continue; }
        OPT_S("--kubeconfig", kubeconfig)
        OPT_S("--meshd", meshd)
        OPT_I("--pods", pods)
        OPT_I("--services", services)
        OPT_I("--slices", slices)
        OPT_I("--mesh", mesh)
        OPT_I("--rate", rate)
        OPT_I("--seconds", seconds)
        OPT_I("--port", port)
        if (strcmp(a, "--no-populate") == 0) {
            do_populate = false;
            continue;
        }
        fprintf(stderr, "usage: kube_sync --kubeconfig PATH [--meshd BIN] [--pods N] [--services N] [--slices N] "
                        "[--mesh N] [--rate N] [--seconds N] [--port DEBUGPORT] [--no-populate]\n");
        return 2;
    }
    if (kubeconfig == NULL) {
        fprintf(stderr, "kube_sync: --kubeconfig is required\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_WARN);
    char err[512];
    kube_opts_t ko = {.kubeconfig = kubeconfig};
    kube_client_t *c = kube_client_new(&ko, err, sizeof(err));
    if (c == NULL || kube_discover(c) != 0) {
        fprintf(stderr, "kube_sync: %s\n", c ? "discovery failed" : err);
        return 1;
    }
    if (do_populate)
        populate(c, pods, services, slices, mesh);

    /* 2. meshd: time to ready, memory */
    if (port == 0)
        port = 20000 + (int)(getpid() % 20000);
    char addr[64], url[128];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(url, sizeof(url), "http://%s/ready", addr);
    uint64_t t0 = mono_ns();
    pid_t pid = fork();
    if (pid == 0) {
        execl(meshd, meshd, "--kubeconfig", kubeconfig, "--debug-addr", addr, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    bool ready = false;
    while (!ready && mono_ns() - t0 < 120ull * 1000000000u) {
        ready = http_status(url) == 200;
        if (!ready)
            usleep(10000);
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "kube_sync: meshd exited\n");
            return 1;
        }
    }
    double ready_s = (double)(mono_ns() - t0) / 1e9;
    sleep(1); /* let allocations settle */
    long rss = proc_status_kb(pid, "VmRSS"), hwm = proc_status_kb(pid, "VmHWM");
    printf("meshd sync: %s in %.2f s (target < 3 s); resident memory %.1f MB, peak %.1f MB (target < 40 MB)\n",
           ready ? "ready" : "NOT ready", ready_s, (double)rss / 1024.0, (double)hwm / 1024.0);
    if (!ready) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return 1;
    }

    /* 3. updates: an informer here measures event-to-store latency */
    cfg_store_t *store = cfg_store_new();
    struct lat lat = {0};
    cfg_store_subscribe(store, on_change, &lat);
    informer_opts_t io;
    informer_opts_default(&io);
    io.client = c;
    io.store = store;
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        io.kinds[k].enabled = k == CFG_Pod;
    informer_t *inf = informer_start(&io, err, sizeof(err));
    if (inf == NULL || !informer_wait_synced(inf, 120000)) {
        fprintf(stderr, "kube_sync: the in-process informer did not sync\n");
        return 1;
    }
    lat.on = true;
    struct runner rn = {.c = c, .m = curl_multi_init(), .max_inflight = MAX_INFLIGHT * 4};
    curl_multi_setopt(rn.m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    long long cpu0 = proc_cpu_ticks(pid);
    uint64_t u0 = mono_ns(), total = (uint64_t)rate * (uint64_t)seconds, sent = 0;
    while (sent < total) {
        uint64_t due = (mono_ns() - u0) * (uint64_t)rate / 1000000000u;
        if (due > total)
            due = total;
        if (sent >= due) {
            runner_reap(&rn, 1);
            continue;
        }
        int i = (int)(sent % (uint64_t)(pods ? pods : 1));
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/namespaces/bench-%d/pods/pod-%d", i % NS_COUNT, i);
        runner_add(&rn, "PATCH", path,
                   fmt("{\"metadata\":{\"annotations\":{\"bench/sent-ns\":\"%" PRIu64 "\"}}}", real_ns()),
                   "application/merge-patch+json");
        sent++;
    }
    runner_drain(&rn);
    double upd_s = (double)(mono_ns() - u0) / 1e9;
    sleep(1); /* the last events */
    long long cpu1 = proc_cpu_ticks(pid);
    double cpu_s = (double)(cpu1 - cpu0) / (double)sysconf(_SC_CLK_TCK);
    lat.on = false;
    informer_stop(inf);
    qsort(lat.v, lat.n, sizeof(*lat.v), cmp_u64);
    double p50 = lat.n ? (double)lat.v[lat.n / 2] / 1e6 : 0, p99 = lat.n ? (double)lat.v[lat.n * 99 / 100] / 1e6 : 0;
    printf("updates: %" PRIu64 " pod patches in %.1f s (%.0f/s achieved, %d/s asked), %" PRIu64 " failed\n", rn.done,
           upd_s, (double)rn.done / upd_s, rate, rn.failed);
    printf("meshd CPU during updates: %.2f s over %.1f s = %.0f%% of one core\n", cpu_s, upd_s + 1.0,
           100.0 * cpu_s / (upd_s + 1.0));
    printf("event-to-store latency (API write to store, %zu events): p50 %.1f ms, p99 %.1f ms\n", lat.n, p50, p99);
    printf("meshd resident memory after updates: %.1f MB\n", (double)proc_status_kb(pid, "VmRSS") / 1024.0);

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    curl_multi_cleanup(rn.m);
    cfg_store_free(store);
    free(lat.v);
    kube_client_free(c);
    curl_global_cleanup();
    return 0;
}
