/*
 * backend: a tiny HTTP/1.1 server for the demo and the benchmarks. Answers
 * every request with 200, a body naming the backend ("web v1\n", or N bytes
 * with --body-size), and the header x-backend: NAME, with keep-alive.
 *
 *   backend --listen 127.0.0.1:9081 --name "web v1" [--body-size 1024]
 *
 * One thread, poll(), requests without bodies (GET/HEAD) or with a
 * Content-Length body it reads and discards.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define BUF 16384

struct conn {
    int fd;
    size_t len;
    char buf[BUF];
};

static char *response;
static size_t response_len;

static int listen_on(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host[0] ? host : "127.0.0.1", &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Bytes of one complete request at the start of buf, 0 if incomplete, -1 if bad. */
static long request_size(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= BUF ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    size_t body = 0;
    for (const char *p = buf; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            body = strtoul(p + 15, NULL, 10);
        p = eol + 2;
    }
    if (body > BUF)
        return -1;
    return head + body <= len ? (long)(head + body) : 0;
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:9081", *name = "backend";
    long body_size = -1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 || argc % 2 == 0) {
            fprintf(argc % 2 == 0 ? stderr : stdout,
                    "usage: backend --listen HOST:PORT --name NAME [--body-size N]\n");
            return argc % 2 == 0 ? 2 : 0;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen_addr = argv[i + 1];
        else if (strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--body-size") == 0)
            body_size = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: backend --listen HOST:PORT --name NAME [--body-size N]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    size_t blen = body_size >= 0 ? (size_t)body_size : strlen(name) + 1;
    char *body = malloc(blen + 1);
    if (body_size >= 0)
        memset(body, 'x', blen);
    else
        snprintf(body, blen + 1, "%s\n", name);
    response = malloc(blen + 256);
    response_len = (size_t)snprintf(response, 256,
                                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: %s\r\n"
                                    "content-length: %zu\r\n\r\n",
                                    name, blen);
    memcpy(response + response_len, body, blen);
    response_len += blen;
    free(body);

    int lfd = listen_on(listen_addr);
    if (lfd < 0) {
        fprintf(stderr, "backend: cannot listen on %s: %s\n", listen_addr, strerror(errno));
        return 1;
    }
    static struct pollfd pfd[MAX_CONNS + 1];
    static struct conn *conns[MAX_CONNS + 1];
    nfds_t n = 1;
    pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (;;) {
        if (poll(pfd, n, -1) < 0 && errno != EINTR)
            return 1;
        if (pfd[0].revents & POLLIN) {
            int fd;
            while (n <= MAX_CONNS && (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                conns[n] = calloc(1, sizeof(struct conn));
                conns[n]->fd = fd;
                pfd[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
            }
        }
        for (nfds_t i = 1; i < n; i++) {
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct conn *c = conns[i];
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            bool dead = r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
            if (r > 0)
                c->len += (size_t)r;
            long sz;
            while (!dead && (sz = request_size(c->buf, c->len)) != 0) {
                if (sz < 0 || write(c->fd, response, response_len) != (ssize_t)response_len) {
                    dead = true;
                    break;
                }
                memmove(c->buf, c->buf + sz, c->len - (size_t)sz);
                c->len -= (size_t)sz;
            }
            if (dead) {
                close(c->fd);
                free(c);
                pfd[i] = pfd[n - 1];
                conns[i] = conns[n - 1];
                n--;
                i--;
            }
        }
    }
}
