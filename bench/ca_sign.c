/*
 * Benchmark: CSR signings through the certificate service
 * (/istio.v1.auth.IstioCertificateService/CreateCertificate over TLS, JWT
 * authentication in local mode), the way workloads call it.
 *
 *   build/bench/ca_sign [--key rsa|ecdsa] [--csr-key rsa|ecdsa] [--threads 1]
 *                       [--conns 16] [--seconds 5] [--rate 500]
 *
 * A child process is meshd's side: a self-signed CA with a --key root, JWT
 * verification, the gRPC server with a serving certificate from the CA, and
 * --threads signing threads (workq). The parent drives it over one HTTP/2
 * connection with a pool of distinct pre-generated CSRs (every request makes
 * the CA verify a new CSR signature and sign a new certificate):
 *   1. throughput: --conns calls in flight for --seconds; signings/s by the
 *      wall clock, and per CPU-second of the server process (its utime +
 *      stime from /proc), the "per core" figure;
 *   2. latency at a fixed rate (--rate calls/s, latency counted from each
 *      call's scheduled start), p50/p99.
 * The last line, "RESULT key=... per_cpu=... wall=... p50_ms=... p99_ms=...",
 * is what bench/ca_sign.sh reads to put the figures beside `openssl speed`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../ca/ca.h"
#include "../common/caclient.h"
#include "../common/grpc.h"
#include "../common/log.h"
#include "../common/workq.h"
#include "istio/v1/auth/ca.pb-c.h"

#define NCSR 2048

typedef struct opts {
    ca_key_type_t key;
    caclient_key_t csr_key;
    int threads, conns, seconds, rate;
} opts_t;

/* ---- meshd's side (child process) ---- */

static void run_server(int wfd, const opts_t *o, const char *dir)
{
    char err[1024], root_file[600], key_file[600];
    snprintf(root_file, sizeof root_file, "%s/root.pem", dir);
    snprintf(key_file, sizeof key_file, "%s/jwt.pub", dir);
    log_set_level(LOG_ERROR);
    ca_opts_t co = {.root_file = root_file, .root_key_type = o->key, .reload_interval_ms = -1};
    ca_t *ca = ca_new(&co, err, sizeof err);
    ca_authn_opts_t ao = {.jwt_key_file = key_file};
    ca_authn_t *authn = ca ? ca_authn_new(&ao, err, sizeof err) : NULL;
    ca_serving_t *sv = authn ? ca_serving_new(ca, NULL, 0, 0, err, sizeof err) : NULL;
    loop_t *loop = loop_new();
    workq_t *wq = workq_new(o->threads);
    grpc_server_opts_t so = {.listen = "127.0.0.1:0", .tls = sv ? ca_serving_tls(sv) : NULL};
    grpc_server_t *srv = sv ? grpc_server_new(loop, &so, err, sizeof err) : NULL;
    ca_service_t *svc = srv ? ca_service_new(ca, authn, wq, srv, err, sizeof err) : NULL;
    int port = svc ? grpc_server_port(srv) : -1;
    if (port < 0)
        fprintf(stderr, "ca_sign server: %s\n", err);
    char *root = ca ? ca_root_pem(ca) : NULL;
    size_t rl = root ? strlen(root) : 0;
    if (write(wfd, &port, sizeof port) != sizeof port || write(wfd, &rl, sizeof rl) != sizeof rl ||
        (rl && write(wfd, root, rl) != (ssize_t)rl))
        _exit(1);
    close(wfd);
    if (port < 0)
        _exit(1);
    loop_run(loop); /* until the parent kills us */
    _exit(0);
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long ut = 0, st = 0;
    /* fields after the command: state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- a service-account token for the bench identity ---- */

static char *b64url(const unsigned char *d, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = malloc(n * 4 / 3 + 4), *p = o;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = a[v >> 18], *p++ = a[(v >> 12) & 63], *p++ = a[(v >> 6) & 63], *p++ = a[v & 63];
    }
    if (n - i >= 1) {
        uint32_t v = (uint32_t)d[i] << 16 | (n - i == 2 ? (uint32_t)d[i + 1] << 8 : 0);
        *p++ = a[v >> 18], *p++ = a[(v >> 12) & 63];
        if (n - i == 2)
            *p++ = a[(v >> 6) & 63];
    }
    *p = 0;
    return o;
}

static char *mint_token(EVP_PKEY *k)
{
    char payload[512];
    long now = (long)time(NULL);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"bench\",\"aud\":[\"istio-ca\"],\"sub\":\"system:serviceaccount:bench:bench\",\"exp\":%ld,"
             "\"iat\":%ld}",
             now + 7200, now);
    const char *hdr = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
    char *h = b64url((const unsigned char *)hdr, strlen(hdr));
    char *p = b64url((const unsigned char *)payload, strlen(payload));
    char in[2048];
    snprintf(in, sizeof in, "%s.%s", h, p);
    unsigned char der[128], raw[64];
    size_t dl = sizeof der;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(m, der, &dl, (const unsigned char *)in, strlen(in));
    EVP_MD_CTX_free(m);
    const unsigned char *q = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    ECDSA_SIG_free(es);
    char *s = b64url(raw, 64);
    size_t tl = strlen(in) + strlen(s) + 2;
    char *tok = malloc(tl);
    snprintf(tok, tl, "%s.%s", in, s);
    free(h);
    free(p);
    free(s);
    return tok;
}

/* ---- the workloads' side (parent) ---- */

typedef struct req {
    uint8_t *buf;
    size_t len;
} req_t;

typedef struct bench {
    loop_t *loop;
    grpc_client_t *cli;
    const char *hdrs[3];
    req_t reqs[NCSR];
    size_t next_req;
    int outstanding;
    bool closed_loop, running;
    uint64_t ok, failed;
    char first_error[512];
    double *lat_ms;
    size_t nlat, cap_lat;
    int rate;
    uint64_t started_at_ns, sent;
    loop_timer_t *pacer;
} bench_t;

typedef struct call_ctx {
    bench_t *b;
    uint64_t t0_ns;
} call_ctx_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void start_call(bench_t *b, uint64_t t0_ns);

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    call_ctx_t *c = arg;
    bench_t *b = c->b;
    b->outstanding--;
    if (status == GRPC_OK) {
        b->ok++;
        if (!b->closed_loop && b->nlat < b->cap_lat)
            b->lat_ms[b->nlat++] = (double)(now_ns() - c->t0_ns) / 1e6;
    } else {
        if (!b->failed)
            snprintf(b->first_error, sizeof b->first_error, "%s: %s", grpc_status_name(status), message);
        b->failed++;
    }
    if (b->closed_loop && b->running)
        start_call(b, now_ns());
    free(c);
}

static void start_call(bench_t *b, uint64_t t0_ns)
{
    static const grpc_call_cbs_t cbs = {.on_close = on_close};
    call_ctx_t *c = malloc(sizeof *c);
    c->b = b;
    c->t0_ns = t0_ns;
    grpc_call_t *call = grpc_call_start(b->cli, CA_SERVICE_PATH, b->hdrs, 30000, &cbs, c);
    if (!call) {
        b->failed++;
        snprintf(b->first_error, sizeof b->first_error, "the connection is gone");
        free(c);
        b->running = false;
        return;
    }
    req_t *r = &b->reqs[b->next_req++ % NCSR];
    grpc_call_send(call, r->buf, r->len);
    grpc_call_close_send(call);
    b->outstanding++;
}

static void on_pace(loop_timer_t *t, void *arg)
{
    (void)t;
    bench_t *b = arg;
    if (!b->running)
        return;
    uint64_t now = now_ns();
    uint64_t due = (now - b->started_at_ns) * (uint64_t)b->rate / 1000000000ull;
    while (b->sent < due) {
        /* latency counts from the scheduled start, so a stall is not hidden */
        uint64_t sched = b->started_at_ns + b->sent * 1000000000ull / (uint64_t)b->rate;
        start_call(b, sched);
        b->sent++;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fputs("usage: ca_sign [--key rsa|ecdsa] [--csr-key rsa|ecdsa] [--threads N] [--conns N] [--seconds N] "
          "[--rate N]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    opts_t o = {.key = CA_KEY_ECDSA, .csr_key = CACLIENT_ECDSA, .threads = 1, .conns = 16, .seconds = 5, .rate = 500};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--key"))
            o.key = !strcmp(v, "rsa") ? CA_KEY_RSA : CA_KEY_ECDSA;
        else if (!strcmp(a, "--csr-key"))
            o.csr_key = !strcmp(v, "rsa") ? CACLIENT_RSA : CACLIENT_ECDSA;
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--conns"))
            o.conns = atoi(v);
        else if (!strcmp(a, "--seconds"))
            o.seconds = atoi(v);
        else if (!strcmp(a, "--rate"))
            o.rate = atoi(v);
        else
            usage();
    }
    if (o.threads < 1 || o.conns < 1 || o.seconds < 1 || o.rate < 1)
        usage();
    log_set_level(LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);

    char dir[] = "/tmp/meshd-bench-ca-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    EVP_PKEY *jk = EVP_EC_gen("P-256");
    char path[600];
    snprintf(path, sizeof path, "%s/jwt.pub", dir);
    FILE *f = fopen(path, "w");
    PEM_write_PUBKEY(f, jk);
    fclose(f);

    int pfd[2];
    if (pipe(pfd) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        run_server(pfd[1], &o, dir);
    }
    close(pfd[1]);
    int port = -1;
    size_t rl = 0;
    char *root = NULL;
    if (read(pfd[0], &port, sizeof port) == sizeof port && port > 0 && read(pfd[0], &rl, sizeof rl) == sizeof rl) {
        root = calloc(1, rl + 1);
        size_t got = 0;
        while (got < rl) {
            ssize_t r = read(pfd[0], root + got, rl - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
    }
    close(pfd[0]);
    int rc = 1;
    bench_t b = {0};
    if (port <= 0 || !root) {
        fprintf(stderr, "ca_sign: the server did not start\n");
        goto out;
    }

    /* distinct CSRs, made before the clock starts */
    printf("preparing %d CSRs (%s keys)...\n", NCSR, o.csr_key == CACLIENT_RSA ? "RSA 2048" : "ECDSA P-256");
    fflush(stdout);
    for (int i = 0; i < NCSR; i++) {
        char *key = caclient_make_key(o.csr_key), *csr = NULL, err[256];
        if (!key || caclient_make_csr(key, "spiffe://cluster.local/ns/bench/sa/bench", &csr, err, sizeof err) != 0) {
            fprintf(stderr, "ca_sign: cannot make a CSR\n");
            goto out;
        }
        Istio__V1__Auth__IstioCertificateRequest rq = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
        rq.csr = csr;
        rq.validity_duration = 3600;
        b.reqs[i].len = istio__v1__auth__istio_certificate_request__get_packed_size(&rq);
        b.reqs[i].buf = malloc(b.reqs[i].len);
        istio__v1__auth__istio_certificate_request__pack(&rq, b.reqs[i].buf);
        caclient_free_secret(key);
        free(csr);
    }
    char *tok = mint_token(jk);
    size_t al = strlen(tok) + 8;
    char *authz = malloc(al);
    snprintf(authz, al, "Bearer %s", tok);
    free(tok);
    b.hdrs[0] = "authorization";
    b.hdrs[1] = authz;
    b.hdrs[2] = NULL;

    char addr[64], err[512];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    tp_tls_config_t tc = {.ca_pem = root, .verify = TP_VERIFY_REQUIRE, .verify_name = "istiod.istio-system.svc"};
    tp_tls_ctx_t *tls = tp_tls_client_new(&tc, err, sizeof err);
    b.loop = loop_new();
    grpc_client_opts_t go = {.tls = tls, .sni = "istiod.istio-system.svc"};
    b.cli = grpc_client_connect(b.loop, addr, &go, err, sizeof err);
    tp_tls_ctx_unref(tls);
    if (!b.cli) {
        fprintf(stderr, "ca_sign: %s\n", err);
        goto out;
    }

    /* warm-up */
    b.closed_loop = false;
    b.running = true;
    start_call(&b, now_ns());
    while (b.outstanding && b.running)
        loop_run_once(b.loop, 100);
    if (b.failed) {
        fprintf(stderr, "ca_sign: the first call failed: %s\n", b.first_error);
        goto out;
    }

    /* 1. throughput */
    b.ok = b.failed = 0;
    b.closed_loop = true;
    double cpu0 = proc_cpu_s(pid);
    uint64_t t0 = now_ns();
    for (int i = 0; i < o.conns; i++)
        start_call(&b, t0);
    while (now_ns() - t0 < (uint64_t)o.seconds * 1000000000ull && b.running)
        loop_run_once(b.loop, 50);
    b.running = false;
    uint64_t ok1 = b.ok;
    double wall = (double)(now_ns() - t0) / 1e9;
    double cpu = proc_cpu_s(pid) - cpu0;
    while (b.outstanding)
        loop_run_once(b.loop, 100);
    double per_s = (double)ok1 / wall, per_cpu = cpu > 0 ? (double)ok1 / cpu : 0;
    char kd[32];
    snprintf(kd, sizeof kd, "%s", o.key == CA_KEY_RSA ? "RSA 2048" : "ECDSA P-256");
    printf("CA key %s, CSR keys %s, %d signing thread(s), %d calls in flight on one TLS connection\n", kd,
           o.csr_key == CACLIENT_RSA ? "RSA 2048" : "ECDSA P-256", o.threads, o.conns);
    printf("throughput: %llu signings in %.2f s = %.0f/s wall; server CPU %.2f s => %.0f signings per CPU-second"
           "%s%s\n",
           (unsigned long long)ok1, wall, per_s, cpu, per_cpu, b.failed ? "; errors: " : "",
           b.failed ? b.first_error : "");

    /* 2. latency at a fixed rate */
    b.ok = b.failed = 0;
    b.closed_loop = false;
    b.running = true;
    b.cap_lat = (size_t)o.rate * (size_t)o.seconds + 16;
    b.lat_ms = calloc(b.cap_lat, sizeof *b.lat_ms);
    b.nlat = 0;
    b.rate = o.rate;
    b.sent = 0;
    b.pacer = loop_timer_new(b.loop, on_pace, &b);
    b.started_at_ns = now_ns();
    loop_timer_start(b.pacer, 1, 1);
    while (now_ns() - b.started_at_ns < (uint64_t)o.seconds * 1000000000ull && b.running)
        loop_run_once(b.loop, 10);
    b.running = false;
    loop_timer_stop(b.pacer);
    uint64_t drain0 = now_ns();
    while (b.outstanding && now_ns() - drain0 < 30000000000ull)
        loop_run_once(b.loop, 100);
    qsort(b.lat_ms, b.nlat, sizeof *b.lat_ms, cmp_double);
    double p50 = b.nlat ? b.lat_ms[b.nlat / 2] : 0, p99 = b.nlat ? b.lat_ms[(b.nlat * 99) / 100] : 0;
    printf("latency at %d/s: %zu calls, p50 %.2f ms, p99 %.2f ms%s%s\n", o.rate, b.nlat, p50, p99,
           b.failed ? "; errors: " : "", b.failed ? b.first_error : "");
    printf("RESULT key=%s per_cpu=%.0f wall=%.0f p50_ms=%.2f p99_ms=%.2f errors=%llu\n",
           o.key == CA_KEY_RSA ? "rsa" : "ecdsa", per_cpu, per_s, p50, p99, (unsigned long long)b.failed);
    rc = b.failed ? 1 : 0;
    loop_timer_free(b.pacer);
    free(authz);
out:
    if (b.cli)
        grpc_client_free(b.cli);
    if (b.loop) {
        loop_run_once(b.loop, 0);
        loop_free(b.loop);
    }
    for (int i = 0; i < NCSR; i++)
        free(b.reqs[i].buf);
    free(b.lat_ms);
    free(root);
    EVP_PKEY_free(jk);
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "ca_sign: could not remove %s\n", dir);
    return rc;
}
