/*
 * Benchmark client: TLS handshakes against a server, full or resumed, with a
 * client certificate (the mTLS handshake a sidecar's inbound port takes).
 *
 *   build/bench/tls_handshakes --connect IP:PORT --cert F --key F --ca F
 *       [--sni NAME] [--alpn a,b] [--resume] [--seconds 5] [--conns 1]
 *
 * Each of --conns threads opens one connection after another for --seconds:
 * TCP connect, TLS handshake (the server's certificate verified against --ca;
 * --sni and --alpn sent when given), then close_notify and close; no request
 * is sent. With --resume every connection offers the last session ticket its
 * thread received (TLS 1.3 tickets arrive after the handshake, so each
 * connection waits for one before closing); without it every handshake is a
 * full one. Prints one line:
 *   handshakes=N resumed=N failed=N seconds=S rate=N/s
 * and the first failure's reason on stderr. Exits 1 when nothing succeeded or
 * (with --resume) when no handshake was resumed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static struct {
    struct sockaddr_in addr;
    const char *cert, *key, *ca, *sni;
    unsigned char alpn[256];
    unsigned alpn_len;
    bool resume;
    double seconds;
    int conns;
} O = {.seconds = 5, .conns = 1};

static atomic_long n_ok, n_resumed, n_failed;
static atomic_flag reported = ATOMIC_FLAG_INIT;

static _Thread_local SSL_SESSION *tl_session; /* the newest ticket this thread received */
static _Thread_local bool tl_got_session;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *what)
{
    if (atomic_flag_test_and_set(&reported))
        return;
    char buf[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "tls_handshakes: first failure: %s%s%s\n", what, buf[0] ? ": " : "", buf);
}

static int on_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (!SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(tl_session);
    tl_session = sess; /* keep the reference OpenSSL handed us */
    tl_got_session = true;
    return 1;
}

static SSL_CTX *make_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, O.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, O.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, O.ca, NULL) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (O.alpn_len > 0 && SSL_CTX_set_alpn_protos(ctx, O.alpn, O.alpn_len) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_session);
    return ctx;
}

/* One connection; 1 full, 2 resumed, 0 failed. */
static int one(SSL_CTX *ctx)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        report("socket");
        return 0;
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = 0;
    SSL *ssl = NULL;
    if (connect(fd, (struct sockaddr *)&O.addr, sizeof O.addr) != 0) {
        report(strerror(errno));
        goto out;
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        report("SSL_new");
        goto out;
    }
    if (O.sni != NULL)
        SSL_set_tlsext_host_name(ssl, O.sni);
    if (O.resume && tl_session != NULL)
        SSL_set_session(ssl, tl_session);
    tl_got_session = false;
    if (SSL_connect(ssl) != 1) {
        report("handshake");
        goto out;
    }
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        report(X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        goto out;
    }
    rc = SSL_session_reused(ssl) ? 2 : 1;
    if (O.resume) {
        /* TLS 1.3: the ticket follows the handshake; read until it came
         * (non-application records make SSL_read return without data) */
        SSL_clear_mode(ssl, SSL_MODE_AUTO_RETRY);
        char buf[256];
        for (int i = 0; i < 8 && !tl_got_session && SSL_version(ssl) == TLS1_3_VERSION; i++) {
            int r = SSL_read(ssl, buf, sizeof buf);
            if (r <= 0 && SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ)
                break;
        }
    }
    SSL_shutdown(ssl);
out:
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return rc;
}

static void *worker(void *arg)
{
    (void)arg;
    SSL_CTX *ctx = make_ctx();
    if (ctx == NULL) {
        report("client context");
        atomic_fetch_add(&n_failed, 1);
        return NULL;
    }
    double end = now_s() + O.seconds;
    while (now_s() < end) {
        int r = one(ctx);
        if (r == 0)
            atomic_fetch_add(&n_failed, 1);
        else
            atomic_fetch_add(&n_ok, 1);
        if (r == 2)
            atomic_fetch_add(&n_resumed, 1);
    }
    SSL_SESSION_free(tl_session);
    tl_session = NULL;
    SSL_CTX_free(ctx);
    return NULL;
}

static int parse_alpn(const char *list)
{
    unsigned len = 0;
    const char *p = list;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n == 0 || n > 255 || len + 1 + n > sizeof O.alpn)
            return -1;
        O.alpn[len++] = (unsigned char)n;
        memcpy(O.alpn + len, p, n);
        len += (unsigned)n;
        p += n + (c ? 1 : 0);
    }
    O.alpn_len = len;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: tls_handshakes --connect IP:PORT --cert F --key F --ca F [--sni NAME] [--alpn a,b]\n"
                    "                      [--resume] [--seconds 5] [--conns 1]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *connect_to = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--resume") == 0) {
            O.resume = true;
            continue;
        }
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(a, "--connect") == 0)
            connect_to = v;
        else if (strcmp(a, "--cert") == 0)
            O.cert = v;
        else if (strcmp(a, "--key") == 0)
            O.key = v;
        else if (strcmp(a, "--ca") == 0)
            O.ca = v;
        else if (strcmp(a, "--sni") == 0)
            O.sni = v;
        else if (strcmp(a, "--alpn") == 0) {
            if (parse_alpn(v) < 0) {
                fprintf(stderr, "tls_handshakes: bad --alpn list \"%s\"\n", v);
                return 2;
            }
        } else if (strcmp(a, "--seconds") == 0)
            O.seconds = atof(v);
        else if (strcmp(a, "--conns") == 0)
            O.conns = atoi(v);
        else
            return usage();
    }
    if (connect_to == NULL || O.cert == NULL || O.key == NULL || O.ca == NULL || O.seconds <= 0 ||
        O.conns < 1 || O.conns > 256)
        return usage();
    char host[64];
    const char *colon = strrchr(connect_to, ':');
    if (colon == NULL || (size_t)(colon - connect_to) >= sizeof host) {
        fprintf(stderr, "tls_handshakes: --connect wants IP:PORT\n");
        return 2;
    }
    memcpy(host, connect_to, (size_t)(colon - connect_to));
    host[colon - connect_to] = '\0';
    O.addr.sin_family = AF_INET;
    O.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &O.addr.sin_addr) != 1 || O.addr.sin_port == 0) {
        fprintf(stderr, "tls_handshakes: --connect wants IP:PORT (IPv4)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    pthread_t th[256];
    double t0 = now_s();
    int started = 0;
    for (int i = 0; i < O.conns; i++)
        if (pthread_create(&th[started], NULL, worker, NULL) == 0)
            started++;
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    long ok = atomic_load(&n_ok), res = atomic_load(&n_resumed), bad = atomic_load(&n_failed);
    long counted = O.resume ? res : ok;
    printf("handshakes=%ld resumed=%ld failed=%ld seconds=%.2f rate=%.0f/s\n", ok, res, bad, secs,
           secs > 0 ? (double)counted / secs : 0.0);
    if (ok == 0 || (O.resume && res == 0))
        return 1;
    return 0;
}
