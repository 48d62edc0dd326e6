/*
 * transport: plaintext and TLS connections behind one interface, and the
 * socket helpers that make them. See transport.h.
 */
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "arena.h"

/* One generation of a context's OpenSSL configuration. Connections keep a
 * reference on the generation they started with. */
typedef struct tls_gen {
    atomic_int refs;
    SSL_CTX *ssl;
    bool server;
    unsigned char alpn[256]; /* wire format */
    size_t alpn_len;
    char *verify_name;
} tls_gen_t;

struct tp_tls_ctx {
    atomic_int refs;
    bool server;
    pthread_mutex_t mu;
    tls_gen_t *cur;
};

struct tp_conn {
    int fd;
    SSL *ssl;
    tls_gen_t *gen;
    bool hs_done;
    unsigned want;
    char peer[64];
    char err[160];
};

static void gen_unref(tls_gen_t *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) {
        SSL_CTX_free(g->ssl);
        free(g->verify_name);
        free(g);
    }
}

static void set_ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    if (err && errlen)
        snprintf(err, errlen, "tls: %s%s%s", what, buf[0] ? ": " : "", buf);
    ERR_clear_error();
}

/* Reads a whole file into a NUL-terminated malloc'd string. */
static char *slurp(const char *path, char *err, size_t errlen, const char *field)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "tls: %s %s: %s", field, path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = mesh_xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = mesh_xrealloc(buf, cap);
        }
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* The PEM text of a field: text if given, else the file's contents. *owned
 * receives what to free. NULL (no error) when neither is set. */
static const char *pem_of(const char *pem, const char *file, char **owned, char *err, size_t errlen,
                          const char *field, bool *failed)
{
    *owned = NULL;
    if (pem)
        return pem;
    if (!file)
        return NULL;
    *owned = slurp(file, err, errlen, field);
    if (!*owned)
        *failed = true;
    return *owned;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    tls_gen_t *g = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, g->alpn, (unsigned)g->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int encode_alpn(tls_gen_t *g, const char *const *alpn)
{
    static const char *const def[] = {"h2", NULL};
    if (!alpn)
        alpn = def;
    size_t off = 0;
    for (size_t i = 0; alpn[i]; i++) {
        size_t n = strlen(alpn[i]);
        if (n == 0 || n > 255 || off + 1 + n > sizeof(g->alpn))
            return -1;
        g->alpn[off++] = (unsigned char)n;
        memcpy(g->alpn + off, alpn[i], n);
        off += n;
    }
    g->alpn_len = off;
    return 0;
}

static int load_cert_chain(SSL_CTX *ssl, const char *pem, char *err, size_t errlen)
{
    int rc = -1;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *leaf = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (!leaf) {
        set_ssl_err(err, errlen, "certificate: no PEM certificate found");
        goto out;
    }
    if (SSL_CTX_use_certificate(ssl, leaf) != 1) {
        set_ssl_err(err, errlen, "certificate: not usable");
        goto out;
    }
    SSL_CTX_clear_chain_certs(ssl);
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ssl, x) != 1) {
            X509_free(x);
            set_ssl_err(err, errlen, "certificate chain: not usable");
            goto out;
        }
    }
    ERR_clear_error(); /* the end of the PEM stream */
    rc = 0;
out:
    X509_free(leaf);
    BIO_free(bio);
    return rc;
}

static int load_key(SSL_CTX *ssl, const char *pem, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    int rc = -1;
    if (!k)
        set_ssl_err(err, errlen, "key: no PEM private key found");
    else if (SSL_CTX_use_PrivateKey(ssl, k) != 1)
        set_ssl_err(err, errlen, "key: not usable");
    else if (SSL_CTX_check_private_key(ssl) != 1)
        set_ssl_err(err, errlen, "key: does not match the certificate");
    else
        rc = 0;
    EVP_PKEY_free(k);
    BIO_free(bio);
    return rc;
}

static int load_trust(SSL_CTX *ssl, const char *pem, char *err, size_t errlen)
{
    X509_STORE *st = SSL_CTX_get_cert_store(ssl);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    int n = 0;
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(st, x);
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (n == 0) {
        snprintf(err, errlen, "tls: trust bundle: no PEM certificate found");
        return -1;
    }
    return 0;
}

static tls_gen_t *gen_new(const tp_tls_config_t *cfg, bool server, char *err, size_t errlen)
{
    char *cert_o = NULL, *key_o = NULL, *ca_o = NULL;
    bool failed = false;
    tls_gen_t *g = mesh_xcalloc(1, sizeof(*g));
    atomic_init(&g->refs, 1);
    g->server = server;
    const char *cert =
        pem_of(cfg->cert_pem, cfg->cert_file, &cert_o, err, errlen, "cert_file", &failed);
    const char *key =
        failed ? NULL
               : pem_of(cfg->key_pem, cfg->key_file, &key_o, err, errlen, "key_file", &failed);
    const char *ca =
        failed ? NULL : pem_of(cfg->ca_pem, cfg->ca_file, &ca_o, err, errlen, "ca_file", &failed);
    if (failed)
        goto fail;
    if (server && (!cert || !key)) {
        snprintf(err, errlen, "tls: a server needs a certificate and a key");
        goto fail;
    }
    if (!!cert != !!key) {
        snprintf(err, errlen, "tls: %s given without %s", cert ? "certificate" : "key",
                 cert ? "key" : "certificate");
        goto fail;
    }
    if (cfg->verify != TP_VERIFY_NONE && !ca) {
        snprintf(err, errlen, "tls: peer verification needs a trust bundle (ca_pem or ca_file)");
        goto fail;
    }
    if (encode_alpn(g, cfg->alpn) < 0) {
        snprintf(err, errlen, "tls: alpn: bad protocol list");
        goto fail;
    }
    g->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!g->ssl) {
        set_ssl_err(err, errlen, "cannot create context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(g->ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(g->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(g->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    if (cert &&
        (load_cert_chain(g->ssl, cert, err, errlen) < 0 || load_key(g->ssl, key, err, errlen) < 0))
        goto fail;
    if (ca && load_trust(g->ssl, ca, err, errlen) < 0)
        goto fail;
    if (server) {
        int mode = SSL_VERIFY_NONE;
        if (cfg->verify == TP_VERIFY_REQUEST)
            mode = SSL_VERIFY_PEER;
        else if (cfg->verify == TP_VERIFY_REQUIRE)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(g->ssl, mode, NULL);
        SSL_CTX_set_alpn_select_cb(g->ssl, alpn_select, g);
        SSL_CTX_set_session_cache_mode(g->ssl, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(g->ssl, 0);
        /* With client certificates, OpenSSL wants a session id context. */
        static const unsigned char sid[] = "meshd";
        SSL_CTX_set_session_id_context(g->ssl, sid, sizeof(sid) - 1);
    } else {
        SSL_CTX_set_verify(
            g->ssl, cfg->verify == TP_VERIFY_REQUIRE ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        if (SSL_CTX_set_alpn_protos(g->ssl, g->alpn, (unsigned)g->alpn_len) != 0) {
            set_ssl_err(err, errlen, "alpn");
            goto fail;
        }
        if (cfg->verify_name)
            g->verify_name = mesh_xstrdup(cfg->verify_name);
    }
    free(cert_o);
    if (key_o)
        OPENSSL_cleanse(key_o, strlen(key_o));
    free(key_o);
    free(ca_o);
    return g;
fail:
    free(cert_o);
    if (key_o)
        OPENSSL_cleanse(key_o, strlen(key_o));
    free(key_o);
    free(ca_o);
    gen_unref(g);
    return NULL;
}

static tp_tls_ctx_t *ctx_new(const tp_tls_config_t *cfg, bool server, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    tls_gen_t *g = gen_new(cfg, server, err, errlen);
    if (!g)
        return NULL;
    tp_tls_ctx_t *c = mesh_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    c->server = server;
    pthread_mutex_init(&c->mu, NULL);
    c->cur = g;
    return c;
}

tp_tls_ctx_t *tp_tls_server_new(const tp_tls_config_t *cfg, char *err, size_t errlen)
{
    return ctx_new(cfg, true, err, errlen);
}

tp_tls_ctx_t *tp_tls_client_new(const tp_tls_config_t *cfg, char *err, size_t errlen)
{
    return ctx_new(cfg, false, err, errlen);
}

int tp_tls_ctx_update(tp_tls_ctx_t *ctx, const tp_tls_config_t *cfg, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    tls_gen_t *g = gen_new(cfg, ctx->server, err, errlen);
    if (!g)
        return -1;
    pthread_mutex_lock(&ctx->mu);
    tls_gen_t *old = ctx->cur;
    ctx->cur = g;
    pthread_mutex_unlock(&ctx->mu);
    gen_unref(old);
    return 0;
}

tp_tls_ctx_t *tp_tls_ctx_ref(tp_tls_ctx_t *ctx)
{
    atomic_fetch_add(&ctx->refs, 1);
    return ctx;
}

void tp_tls_ctx_unref(tp_tls_ctx_t *ctx)
{
    if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1) {
        gen_unref(ctx->cur);
        pthread_mutex_destroy(&ctx->mu);
        free(ctx);
    }
}

/* --- sockets ---------------------------------------------------------------- */

int tp_parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen)
{
    if (!addr)
        return -1;
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return -1;
    char host[128];
    size_t hl = (size_t)(colon - addr);
    const char *h = addr;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        h = addr + 1;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, h, hl);
    host[hl] = 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == 0 || *end || errno || port < 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (hl == 0 || strcmp(host, "0.0.0.0") == 0) {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
    } else {
        return -1;
    }
    if (ss->ss_family == AF_INET) {
        v4->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*v4);
    } else {
        v6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*v6);
    }
    return 0;
}

char *tp_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(v4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(v6->sin6_port));
    } else {
        snprintf(buf, len, "unknown");
    }
    return buf;
}

int tp_listen(const char *addr, int backlog, int *port_out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (tp_parse_addr(addr, &ss, &sl) < 0) {
        snprintf(err, errlen, "listen address \"%s\": expected host:port with a numeric host",
                 addr ? addr : "");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, backlog > 0 ? backlog : 1024) < 0) {
        snprintf(err, errlen, "listen %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    if (port_out) {
        struct sockaddr_storage b;
        socklen_t bl = sizeof(b);
        getsockname(fd, (struct sockaddr *)&b, &bl);
        *port_out = ntohs(b.ss_family == AF_INET ? ((struct sockaddr_in *)&b)->sin_port
                                                 : ((struct sockaddr_in6 *)&b)->sin6_port);
    }
    return fd;
}

int tp_connect_start(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (tp_parse_addr(addr, &ss, &sl) < 0) {
        snprintf(err, errlen, "address \"%s\": expected host:port with a numeric host",
                 addr ? addr : "");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "connect %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tp_connect_result(int fd)
{
    int e = 0;
    socklen_t l = sizeof(e);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
        return errno;
    return e;
}

/* --- connections -------------------------------------------------------------- */

static tp_conn_t *conn_new(int fd)
{
    tp_conn_t *c = mesh_xcalloc(1, sizeof(*c));
    c->fd = fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        tp_format_addr((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
    else
        snprintf(c->peer, sizeof(c->peer), "unknown");
    return c;
}

tp_conn_t *tp_conn_plain(int fd)
{
    tp_conn_t *c = conn_new(fd);
    c->hs_done = true;
    return c;
}

/* A socket BIO that sends with MSG_NOSIGNAL: a peer that went away gives
 * EPIPE, never a SIGPIPE that would end the process. */
static int sock_write(BIO *b, const char *buf, int len)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int sock_read(BIO *b, char *buf, int len)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(fd, buf, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)n;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP ? 1 : 0;
}

static int sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int sock_destroy(BIO *b)
{
    (void)b;
    return 1;
}

static pthread_once_t sock_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *sock_method;

static void sock_method_init(void)
{
    sock_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "meshd socket");
    if (!sock_method)
        abort();
    BIO_meth_set_write(sock_method, sock_write);
    BIO_meth_set_read(sock_method, sock_read);
    BIO_meth_set_ctrl(sock_method, sock_ctrl);
    BIO_meth_set_create(sock_method, sock_create);
    BIO_meth_set_destroy(sock_method, sock_destroy);
}

static tp_conn_t *conn_tls(int fd, tp_tls_ctx_t *ctx, bool server, const char *sni)
{
    pthread_mutex_lock(&ctx->mu);
    tls_gen_t *g = ctx->cur;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&ctx->mu);
    pthread_once(&sock_once, sock_method_init);
    SSL *ssl = SSL_new(g->ssl);
    BIO *bio = ssl ? BIO_new(sock_method) : NULL;
    if (bio)
        BIO_set_data(bio, (void *)(intptr_t)fd);
    if (!ssl || !bio) {
        ERR_clear_error();
        BIO_free(bio);
        SSL_free(ssl);
        gen_unref(g);
        close(fd);
        return NULL;
    }
    SSL_set_bio(ssl, bio, bio);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (sni)
            SSL_set_tlsext_host_name(ssl, sni);
        if (g->verify_name)
            SSL_set1_host(ssl, g->verify_name);
    }
    tp_conn_t *c = conn_new(fd);
    c->ssl = ssl;
    c->gen = g;
    return c;
}

tp_conn_t *tp_conn_tls_server(int fd, tp_tls_ctx_t *ctx)
{
    return conn_tls(fd, ctx, true, NULL);
}

tp_conn_t *tp_conn_tls_client(int fd, tp_tls_ctx_t *ctx, const char *sni)
{
    return conn_tls(fd, ctx, false, sni);
}

/* Maps an SSL failure to TP_AGAIN / 0 / TP_ERROR. */
static int ssl_fail(tp_conn_t *c, int ret, const char *op)
{
    int e = SSL_get_error(c->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        c->want = LOOP_READ;
        return TP_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->want = LOOP_WRITE;
        return TP_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->want = LOOP_READ;
            return TP_AGAIN;
        }
        snprintf(c->err, sizeof(c->err), "tls %s: %s", op,
                 errno ? strerror(errno) : "connection closed");
        ERR_clear_error();
        return TP_ERROR;
    default: {
        unsigned long le = ERR_peek_last_error();
        char buf[120] = "protocol error";
        if (le)
            ERR_error_string_n(le, buf, sizeof(buf));
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK)
            snprintf(c->err, sizeof(c->err), "tls %s: %s (%s)", op, buf,
                     X509_verify_cert_error_string(vr));
        else
            snprintf(c->err, sizeof(c->err), "tls %s: %s", op, buf);
        ERR_clear_error();
        return TP_ERROR;
    }
    }
}

int tp_handshake(tp_conn_t *c)
{
    if (c->hs_done)
        return 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->hs_done = true;
        return 0;
    }
    int rc = ssl_fail(c, r, "handshake");
    if (rc == 0) {
        snprintf(c->err, sizeof(c->err), "tls handshake: connection closed");
        return TP_ERROR;
    }
    return rc;
}

ssize_t tp_read(tp_conn_t *c, void *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n;
        do
            n = recv(c->fd, buf, len, 0);
        while (n < 0 && errno == EINTR);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->want = LOOP_READ;
            return TP_AGAIN;
        }
        snprintf(c->err, sizeof(c->err), "read: %s", strerror(errno));
        return TP_ERROR;
    }
    if (!c->hs_done) {
        int r = tp_handshake(c);
        if (r < 0)
            return r;
    }
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    if (SSL_read_ex(c->ssl, buf, len, &got) == 1)
        return (ssize_t)got;
    return ssl_fail(c, 0, "read");
}

ssize_t tp_write(tp_conn_t *c, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    if (!c->ssl) {
        ssize_t n;
        do
            n = send(c->fd, buf, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->want = LOOP_WRITE;
            return TP_AGAIN;
        }
        snprintf(c->err, sizeof(c->err), "write: %s", strerror(errno));
        return TP_ERROR;
    }
    if (!c->hs_done) {
        int r = tp_handshake(c);
        if (r < 0)
            return r;
    }
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    if (SSL_write_ex(c->ssl, buf, len, &put) == 1)
        return (ssize_t)put;
    int r = ssl_fail(c, 0, "write");
    if (r == 0) {
        snprintf(c->err, sizeof(c->err), "tls write: connection closed");
        return TP_ERROR;
    }
    return r;
}

unsigned tp_want(const tp_conn_t *c)
{
    return c->want ? c->want : LOOP_READ;
}

void tp_shutdown(tp_conn_t *c)
{
    if (c->ssl && c->hs_done) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
}

void tp_close(tp_conn_t *c)
{
    if (!c)
        return;
    if (c->ssl)
        SSL_free(c->ssl);
    gen_unref(c->gen);
    close(c->fd);
    free(c);
}

int tp_fd(const tp_conn_t *c)
{
    return c->fd;
}
bool tp_is_tls(const tp_conn_t *c)
{
    return c->ssl != NULL;
}
bool tp_handshake_done(const tp_conn_t *c)
{
    return c->hs_done;
}

const char *tp_alpn(const tp_conn_t *c)
{
    static _Thread_local char buf[64];
    if (!c->ssl || !c->hs_done)
        return NULL;
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    if (!p || n == 0 || n >= sizeof(buf))
        return NULL;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

const char *tp_sni(const tp_conn_t *c)
{
    return c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

X509 *tp_peer_cert(const tp_conn_t *c)
{
    return c->ssl && c->hs_done ? SSL_get0_peer_certificate(c->ssl) : NULL;
}

bool tp_peer_verified(const tp_conn_t *c)
{
    return tp_peer_cert(c) && SSL_get_verify_result(c->ssl) == X509_V_OK;
}

int tp_peer_uri_sans(const tp_conn_t *c, char **out, int max)
{
    X509 *x = tp_peer_cert(c);
    if (!x)
        return 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!names)
        return 0;
    int n = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && n < max; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *s = gn->d.uniformResourceIdentifier;
        char *v = mesh_xmalloc((size_t)s->length + 1);
        memcpy(v, s->data, (size_t)s->length);
        v[s->length] = 0;
        out[n++] = v;
    }
    GENERAL_NAMES_free(names);
    return n;
}

const char *tp_peer_addr(const tp_conn_t *c)
{
    return c->peer;
}
const char *tp_error(const tp_conn_t *c)
{
    return c->err;
}
