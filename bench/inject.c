/*
 * Benchmark: sidecar injection over HTTPS with keep-alive.
 *
 *   build/bench/inject --cert CERT --key KEY [--threads 2] [--conns 8] [--seconds 5] [--rate 1000]
 *
 * A child process serves the webhooks (webhook_server_start, --threads
 * worker threads, 2 by default as on a 2-core node); the parent drives it
 * with --conns keep-alive libcurl clients posting a real Pod CREATE
 * AdmissionReview to /inject:
 *   1. throughput: closed loop for --seconds, requests/s and p50/p99;
 *   2. latency at a fixed rate (--rate requests/s, paced across the
 *      clients; latency counted from each request's scheduled start, so a
 *      stall is not hidden), p50/p99.
 * Targets: >= 5,000 requests/s; p99 < 2 ms at 1,000 requests/s. The clients
 * run on the same machine and take CPU from the server: the figures are a
 * floor for the server alone.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../common/log.h"
#include "../webhook/webhook.h"

static const char review_body[] =
    "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":"
    "\"0d5c2a4e-1b7f-4c39-9a55-2f7a1c3e9b10\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},"
    "\"resource\":{\"group\":\"\",\"version\":\"v1\",\"resource\":\"pods\"},\"requestKind\":{\"group\":\"\","
    "\"version\":\"v1\",\"kind\":\"Pod\"},\"namespace\":\"bookinfo\",\"operation\":\"CREATE\",\"userInfo\":"
    "{\"username\":\"system:serviceaccount:kube-system:replicaset-controller\",\"groups\":"
    "[\"system:serviceaccounts\",\"system:authenticated\"]},\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
    "\"metadata\":{\"generateName\":\"reviews-v1-545db77b95-\",\"namespace\":\"bookinfo\",\"labels\":{\"app\":"
    "\"reviews\",\"pod-template-hash\":\"545db77b95\",\"version\":\"v1\"},\"ownerReferences\":[{\"apiVersion\":"
    "\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"reviews-v1-545db77b95\",\"uid\":"
    "\"b6a9d0f2-5c1e-4a7b-8e3d-0c2f4a6b8d1e\",\"controller\":true,\"blockOwnerDeletion\":true}]},\"spec\":"
    "{\"volumes\":[{\"name\":\"wlp-output\",\"emptyDir\":{}},{\"name\":\"tmp\",\"emptyDir\":{}},{\"name\":"
    "\"kube-api-access-x7k2p\",\"projected\":{\"sources\":[{\"serviceAccountToken\":{\"expirationSeconds\":3607,"
    "\"path\":\"token\"}},{\"configMap\":{\"name\":\"kube-root-ca.crt\",\"items\":[{\"key\":\"ca.crt\",\"path\":"
    "\"ca.crt\"}]}},{\"downwardAPI\":{\"items\":[{\"path\":\"namespace\",\"fieldRef\":{\"apiVersion\":\"v1\","
    "\"fieldPath\":\"metadata.namespace\"}}]}}],\"defaultMode\":420}}],\"containers\":[{\"name\":\"reviews\","
    "\"image\":\"docker.io/istio/examples-bookinfo-reviews-v1:1.18.0\",\"ports\":[{\"containerPort\":9080,"
    "\"protocol\":\"TCP\"}],\"env\":[{\"name\":\"LOG_DIR\",\"value\":\"/tmp/logs\"}],\"resources\":{},"
    "\"volumeMounts\":[{\"name\":\"tmp\",\"mountPath\":\"/tmp\"},{\"name\":\"wlp-output\",\"mountPath\":"
    "\"/opt/ibm/wlp/output\"},{\"name\":\"kube-api-access-x7k2p\",\"readOnly\":true,\"mountPath\":"
    "\"/var/run/secrets/kubernetes.io/serviceaccount\"}],\"terminationMessagePath\":\"/dev/termination-log\","
    "\"terminationMessagePolicy\":\"File\",\"imagePullPolicy\":\"IfNotPresent\"}],\"restartPolicy\":\"Always\","
    "\"terminationGracePeriodSeconds\":30,\"dnsPolicy\":\"ClusterFirst\",\"serviceAccountName\":"
    "\"bookinfo-reviews\",\"serviceAccount\":\"bookinfo-reviews\",\"securityContext\":{},\"schedulerName\":"
    "\"default-scheduler\",\"tolerations\":[{\"key\":\"node.kubernetes.io/not-ready\",\"operator\":\"Exists\","
    "\"effect\":\"NoExecute\",\"tolerationSeconds\":300}],\"priority\":0,\"enableServiceLinks\":true,"
    "\"preemptionPolicy\":\"PreemptLowerPriority\"}},\"oldObject\":null,\"dryRun\":false,\"options\":{\"kind\":"
    "\"CreateOptions\",\"apiVersion\":\"meta.k8s.io/v1\"}}}";

static int enabled(void *ud, const char *ns, webhook_ns_info_t *out)
{
    (void)ud;
    (void)ns;
    memset(out, 0, sizeof(*out));
    out->has_injection = true;
    strcpy(out->injection, "enabled");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static size_t sink(char *d, size_t sz, size_t nm, void *ud)
{
    size_t *n = ud;
    (void)d;
    *n += sz * nm;
    return sz * nm;
}

struct client {
    pthread_t t;
    const char *url;
    const char *ca;
    double until;
    double interval; /* seconds between requests, 0: closed loop */
    double start;
    double *lat; /* ms */
    size_t n, cap;
    size_t errors;
};

static void *client_run(void *arg)
{
    struct client *c = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    size_t got = 0;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, review_body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(sizeof(review_body) - 1));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    double next = c->start;
    for (;;) {
        double t0 = now_s();
        if (c->interval > 0) {
            if (next > t0) {
                double d = next - t0;
                struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
                nanosleep(&ts, NULL);
            }
            t0 = next;
            next += c->interval;
        }
        if (t0 >= c->until)
            break;
        got = 0;
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        double t1 = now_s();
        if (rc != CURLE_OK || status != 200 || got < 1000) {
            c->errors++;
            continue;
        }
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4096;
            c->lat = realloc(c->lat, c->cap * sizeof(double));
        }
        c->lat[c->n++] = (t1 - t0) * 1e3;
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double rps, p50, p99;
    size_t n, errors;
};

static void phase(const char *url, const char *ca, int conns, double seconds, double rate, struct result *r)
{
    struct client *cs = calloc((size_t)conns, sizeof(*cs));
    double start = now_s() + 0.05;
    for (int i = 0; i < conns; i++) {
        cs[i].url = url;
        cs[i].ca = ca;
        cs[i].start = start + (rate > 0 ? (double)i / rate : 0);
        cs[i].until = start + seconds;
        cs[i].interval = rate > 0 ? (double)conns / rate : 0;
        pthread_create(&cs[i].t, NULL, client_run, &cs[i]);
    }
    size_t total = 0;
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < conns; i++) {
        pthread_join(cs[i].t, NULL);
        total += cs[i].n;
        r->errors += cs[i].errors;
    }
    double *all = malloc((total ? total : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < conns; i++) {
        memcpy(all + k, cs[i].lat, cs[i].n * sizeof(double));
        k += cs[i].n;
        free(cs[i].lat);
    }
    qsort(all, total, sizeof(double), cmp_d);
    r->n = total;
    r->rps = (double)total / seconds;
    r->p50 = total ? all[total / 2] : 0;
    r->p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
    free(all);
    free(cs);
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL;
    int threads = 2, conns = 8;
    double seconds = 5, rate = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--cert") == 0)
            cert = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--conns") == 0)
            conns = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else {
            fprintf(stderr, "inject: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (cert == NULL || key == NULL || threads < 1 || conns < 1 || seconds <= 0 || rate <= 0) {
        fprintf(stderr, "usage: inject --cert CERT --key KEY [--threads N] [--conns N] [--seconds S] [--rate R]\n");
        return 2;
    }
    char *cert_pem = slurp(cert), *key_pem = slurp(key);
    if (cert_pem == NULL || key_pem == NULL) {
        fprintf(stderr, "inject: cannot read %s or %s\n", cert, key);
        return 1;
    }
    log_set_level(LOG_WARN);
    int pfd[2];
    if (pipe(pfd) != 0)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        /* The server: serve until killed, report the port first. */
        webhook_opts_t o = {.mesh_ns = "istio-system", .ns_lookup = enabled};
        webhook_t *w = webhook_new(&o);
        char err[256];
        webhook_server_opts_t so = {.addr = "127.0.0.1", .cert_pem = cert_pem, .key_pem = key_pem,
                                    .threads = (unsigned)threads};
        webhook_server_t *s = webhook_server_start(w, &so, err, sizeof(err));
        int port = s ? webhook_server_port(s) : -1;
        if (s == NULL)
            fprintf(stderr, "inject: %s\n", err);
        if (write(pfd[1], &port, sizeof(port)) != (ssize_t)sizeof(port))
            _exit(1);
        close(pfd[1]);
        for (;;)
            pause();
    }
    close(pfd[1]);
    int port = -1;
    if (read(pfd[0], &port, sizeof(port)) != (ssize_t)sizeof(port) || port <= 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return 1;
    }
    close(pfd[0]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/inject", port);

    struct result warm, max, paced;
    phase(url, cert, conns, 0.5, 0, &warm); /* TLS handshakes, caches */
    phase(url, cert, conns, seconds, 0, &max);
    phase(url, cert, conns, seconds, rate, &paced);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    curl_global_cleanup();

    printf("request: Pod CREATE AdmissionReview, %zu bytes; server: %d threads; clients: %d keep-alive HTTPS "
           "connections on the same machine\n",
           sizeof(review_body) - 1, threads, conns);
    printf("throughput:      %8.0f requests/s  p50 %.2f ms  p99 %.2f ms  (%zu requests, %zu errors)  target >= 5000/s: %s\n",
           max.rps, max.p50, max.p99, max.n, max.errors, max.rps >= 5000 ? "met" : "MISSED");
    printf("at %5.0f/s:      %8.0f requests/s  p50 %.2f ms  p99 %.2f ms  (%zu requests, %zu errors)  target p99 < 2 ms: %s\n",
           rate, paced.rps, paced.p50, paced.p99, paced.n, paced.errors, paced.p99 < 2.0 ? "met" : "MISSED");
    free(cert_pem);
    free(key_pem);
    return max.n > 0 && paced.n > 0 && max.errors == 0 && paced.errors == 0 ? 0 : 1;
}
