/* The fault-injecting proxy of the tests (see faultproxy.h). */
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

struct conn {
    fp_t *p;
    int cfd, ufd; /* client side, upstream side */
    SSL *cssl, *ussl;
    pthread_t thread;
    atomic_bool done;
    struct conn *next;
};

struct fp {
    int lfd;
    int port, upstream_port;
    SSL_CTX *sctx, *cctx; /* TLS mode: toward clients, toward the server */
    pthread_t thread;
    atomic_bool stop, refuse, stall;
    atomic_uint accepted;
    pthread_mutex_t lock; /* conns, inject */
    struct conn *conns;
    char *inject_match, *inject_body;
    bool injected;
};

static int io_read(int fd, SSL *ssl, char *buf, size_t len)
{
    if (ssl != NULL) {
        int n = SSL_read(ssl, buf, (int)len);
        return n > 0 ? n : -1;
    }
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n > 0 ? (int)n : -1;
}

static int io_write_all(int fd, SSL *ssl, const char *buf, size_t len)
{
    while (len > 0) {
        int n;
        if (ssl != NULL) {
            n = SSL_write(ssl, buf, (int)len);
        } else {
            ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            n = (int)w;
        }
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int connect_upstream(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* TLS mode: reads the first request head; answers it when the injection
 * matches (returns 1), else leaves the bytes read in head (returns 0). */
static int maybe_inject(struct conn *c, char *head, size_t cap, size_t *hlen)
{
    fp_t *p = c->p;
    *hlen = 0;
    while (*hlen < cap - 1) {
        int n = io_read(c->cfd, c->cssl, head + *hlen, cap - 1 - *hlen);
        if (n <= 0)
            return -1;
        *hlen += (size_t)n;
        head[*hlen] = '\0';
        if (strstr(head, "\r\n\r\n") != NULL)
            break;
    }
    char *eol = strstr(head, "\r\n");
    if (eol == NULL)
        return 0;
    pthread_mutex_lock(&p->lock);
    bool hit = false;
    char *body = NULL;
    if (p->inject_match != NULL && !p->injected) {
        *eol = '\0';
        hit = strstr(head, p->inject_match) != NULL;
        *eol = '\r';
        if (hit) {
            p->injected = true;
            body = p->inject_body;
            p->inject_body = NULL;
            free(p->inject_match);
            p->inject_match = NULL;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (!hit)
        return 0;
    char hdr[256];
    size_t blen = strlen(body);
    snprintf(hdr, sizeof(hdr),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n",
             blen);
    io_write_all(c->cfd, c->cssl, hdr, strlen(hdr));
    io_write_all(c->cfd, c->cssl, body, blen);
    io_write_all(c->cfd, c->cssl, "\r\n0\r\n\r\n", 7);
    free(body);
    return 1;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    fp_t *p = c->p;
    char buf[16384];
    if (atomic_load(&p->refuse))
        goto out;
    pthread_mutex_lock(&p->lock);
    c->ufd = connect_upstream(p->upstream_port);
    pthread_mutex_unlock(&p->lock);
    if (c->ufd < 0)
        goto out;
    if (p->sctx != NULL) {
        c->cssl = SSL_new(p->sctx);
        c->ussl = SSL_new(p->cctx);
        if (c->cssl == NULL || c->ussl == NULL)
            goto out;
        SSL_set_fd(c->cssl, c->cfd);
        SSL_set_fd(c->ussl, c->ufd);
        if (SSL_accept(c->cssl) != 1 || SSL_connect(c->ussl) != 1)
            goto out;
        size_t hlen = 0;
        int rc = maybe_inject(c, buf, sizeof(buf), &hlen);
        if (rc != 0)
            goto out;
        if (io_write_all(c->ufd, c->ussl, buf, hlen) != 0)
            goto out;
    }
    for (;;) {
        if (atomic_load(&p->stop))
            break;
        if (atomic_load(&p->stall)) {
            usleep(20000);
            continue;
        }
        struct pollfd pf[2] = {{.fd = c->cfd, .events = POLLIN}, {.fd = c->ufd, .events = POLLIN}};
        int ready = 0;
        if (c->cssl && SSL_pending(c->cssl) > 0) {
            pf[0].revents = POLLIN;
            ready = 1;
        }
        if (c->ussl && SSL_pending(c->ussl) > 0) {
            pf[1].revents = POLLIN;
            ready = 1;
        }
        if (!ready) {
            int n = poll(pf, 2, 50);
            if (n < 0 && errno != EINTR)
                break;
            if (n <= 0)
                continue;
        }
        if (atomic_load(&p->stall))
            continue;
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int n = io_read(c->cfd, c->cssl, buf, sizeof(buf));
            if (n <= 0 || io_write_all(c->ufd, c->ussl, buf, (size_t)n) != 0)
                break;
        }
        if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            int n = io_read(c->ufd, c->ussl, buf, sizeof(buf));
            if (n <= 0 || io_write_all(c->cfd, c->cssl, buf, (size_t)n) != 0)
                break;
        }
    }
out:
    pthread_mutex_lock(&p->lock);
    if (c->cssl != NULL)
        SSL_free(c->cssl);
    if (c->ussl != NULL)
        SSL_free(c->ussl);
    c->cssl = c->ussl = NULL;
    if (c->cfd >= 0)
        close(c->cfd);
    if (c->ufd >= 0)
        close(c->ufd);
    c->cfd = c->ufd = -1;
    pthread_mutex_unlock(&p->lock);
    atomic_store(&c->done, true);
    return NULL;
}

/* Joins and frees the connections that ended. */
static void reap(fp_t *p, bool all)
{
    for (;;) {
        struct conn *dead = NULL;
        pthread_mutex_lock(&p->lock);
        for (struct conn **pp = &p->conns; *pp; pp = &(*pp)->next) {
            if (all || atomic_load(&(*pp)->done)) {
                dead = *pp;
                *pp = dead->next;
                break;
            }
        }
        pthread_mutex_unlock(&p->lock);
        if (dead == NULL)
            return;
        pthread_join(dead->thread, NULL);
        free(dead);
    }
}

static void *accept_main(void *arg)
{
    fp_t *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0) {
            reap(p, false);
            continue;
        }
        int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        atomic_fetch_add(&p->accepted, 1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->p = p;
        c->cfd = fd;
        c->ufd = -1;
        atomic_init(&c->done, false);
        pthread_mutex_lock(&p->lock);
        c->next = p->conns;
        p->conns = c;
        pthread_mutex_unlock(&p->lock);
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            /* run it inline: it closes the connection at once when refusing */
            close(fd);
            c->cfd = -1;
            atomic_store(&c->done, true);
            pthread_mutex_lock(&p->lock);
            p->conns = c->next;
            pthread_mutex_unlock(&p->lock);
            free(c);
        }
        reap(p, false);
    }
    return NULL;
}

fp_t *fp_start(int upstream_port, const fp_tls_t *tls)
{
    /* SSL_write on a connection the other side closed raises SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    fp_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->upstream_port = upstream_port;
    p->lfd = -1;
    pthread_mutex_init(&p->lock, NULL);
    if (tls != NULL) {
        p->sctx = SSL_CTX_new(TLS_server_method());
        p->cctx = SSL_CTX_new(TLS_client_method());
        if (p->sctx == NULL || p->cctx == NULL ||
            SSL_CTX_use_certificate_chain_file(p->sctx, tls->cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(p->sctx, tls->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_load_verify_locations(p->cctx, tls->ca, NULL) != 1) {
            fprintf(stderr, "faultproxy: cannot load the TLS files\n");
            goto fail;
        }
        SSL_CTX_set_verify(p->cctx, SSL_VERIFY_PEER, NULL);
    }
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->lfd < 0)
        goto fail;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(p->lfd, 128) != 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &al) != 0)
        goto fail;
    p->port = ntohs(a.sin_port);
    if (pthread_create(&p->thread, NULL, accept_main, p) != 0)
        goto fail;
    return p;
fail:
    if (p->lfd >= 0)
        close(p->lfd);
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}

int fp_port(const fp_t *p)
{
    return p->port;
}

void fp_cut(fp_t *p)
{
    pthread_mutex_lock(&p->lock);
    for (struct conn *c = p->conns; c; c = c->next) {
        if (c->cfd >= 0)
            shutdown(c->cfd, SHUT_RDWR);
        if (c->ufd >= 0)
            shutdown(c->ufd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&p->lock);
}

void fp_refuse(fp_t *p, bool on)
{
    atomic_store(&p->refuse, on);
}

void fp_stall(fp_t *p, bool on)
{
    atomic_store(&p->stall, on);
}

void fp_inject(fp_t *p, const char *match, const char *body)
{
    pthread_mutex_lock(&p->lock);
    free(p->inject_match);
    free(p->inject_body);
    p->inject_match = strdup(match);
    p->inject_body = strdup(body);
    p->injected = false;
    pthread_mutex_unlock(&p->lock);
}

bool fp_injected(fp_t *p)
{
    pthread_mutex_lock(&p->lock);
    bool done = p->injected;
    pthread_mutex_unlock(&p->lock);
    return done;
}

unsigned fp_accepted(fp_t *p)
{
    return atomic_load(&p->accepted);
}

void fp_stop(fp_t *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    fp_cut(p);
    reap(p, true);
    close(p->lfd);
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
    free(p->inject_match);
    free(p->inject_body);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
