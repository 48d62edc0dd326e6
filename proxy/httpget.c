/* httpget: see httpget.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "http1_internal.h"
#include "httpget.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "http://HOST[:PORT][/PATH]" -> address, host text, path. */
static int parse_url(const char *url, struct sockaddr_storage *sa, socklen_t *salen, char *host, size_t hostlen,
                     const char **path, char *err, size_t errlen)
{
    if (strncmp(url, "http://", 7) != 0)
        return mesh_errf(err, errlen, "%s: only http:// URLs are supported", url);
    const char *h = url + 7;
    const char *end = h + strcspn(h, "/?#");
    *path = *end == '/' ? end : "/";
    char hp[300];
    if ((size_t)(end - h) >= sizeof(hp) || end == h)
        return mesh_errf(err, errlen, "%s: bad host", url);
    memcpy(hp, h, (size_t)(end - h));
    hp[end - h] = '\0';
    snprintf(host, hostlen, "%s", hp);
    char *name = hp, *port = NULL;
    if (hp[0] == '[') { /* [v6]:port */
        char *rb = strchr(hp, ']');
        if (rb == NULL)
            return mesh_errf(err, errlen, "%s: bad host", url);
        *rb = '\0';
        name = hp + 1;
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb[1] != '\0')
            return mesh_errf(err, errlen, "%s: bad host", url);
    } else if ((port = strrchr(hp, ':')) != NULL) {
        *port++ = '\0';
    }
    long p = 80;
    if (port) {
        char *e;
        p = strtol(port, &e, 10);
        if (*port == '\0' || *e != '\0' || p < 1 || p > 65535)
            return mesh_errf(err, errlen, "%s: bad port", url);
    }
    if (strcmp(name, "localhost") == 0)
        name = "127.0.0.1";
    memset(sa, 0, sizeof(*sa));
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, name, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p);
        *salen = sizeof(*s4);
    } else if (inet_pton(AF_INET6, name, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p);
        *salen = sizeof(*s6);
    } else {
        return mesh_errf(err, errlen, "%s: the host must be an IP address or localhost", url);
    }
    return 0;
}

/* Waits for fd to be ready for ev until the deadline; -1 on timeout/error. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

int px_http_get(const char *url, int timeout_ms, size_t max_body, int *status, char **body, size_t *body_len,
                char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    char host[300];
    const char *path = "/";
    if (body)
        *body = NULL;
    if (parse_url(url, &sa, &salen, host, sizeof(host), &path, err, errlen) < 0)
        return -1;
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1000);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mesh_errf(err, errlen, "%s: socket: %s", url, strerror(errno));
    char *buf = NULL;
    int rc = -1;
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0) {
        int so = 0;
        socklen_t sl = sizeof(so);
        if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0 || so != 0) {
            mesh_errf(err, errlen, "%s: cannot connect: %s", url, so ? strerror(so) : "timed out");
            goto out;
        }
    }
    char req[2048];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshproxy\r\nAccept: */*\r\n"
                                        "Connection: close\r\n\r\n",
                      path, host);
    if (rl <= 0 || (size_t)rl >= sizeof(req)) {
        mesh_errf(err, errlen, "%s: URL too long", url);
        goto out;
    }
    for (int off = 0; off < rl;) {
        ssize_t n = send(fd, req + off, (size_t)(rl - off), MSG_NOSIGNAL);
        if (n > 0) {
            off += (int)n;
        } else if (n < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline) == 0) {
            continue;
        } else {
            mesh_errf(err, errlen, "%s: cannot send the request", url);
            goto out;
        }
    }
    /* the whole response, up to the head limit plus max_body (and framing) */
    size_t cap = PX_H1_MAX_HEAD + max_body + 4096, len = 0;
    buf = malloc(cap + 1);
    if (buf == NULL) {
        mesh_errf(err, errlen, "out of memory");
        goto out;
    }
    px_h1_msg_t *m = malloc(sizeof(*m));
    if (m == NULL) {
        mesh_errf(err, errlen, "out of memory");
        goto out;
    }
    int head = -2;
    bool eof = false;
    const char *why = NULL;
    for (;;) {
        if (head == -2) {
            head = px_h1_parse_response(buf, len, false, false, m, &why);
            if (head == -1) {
                mesh_errf(err, errlen, "%s: malformed response: %s", url, why ? why : "?");
                free(m);
                goto out;
            }
        }
        if (head >= 0) {
            size_t have = len - (size_t)head;
            bool done = m->body == PX_H1_BODY_NONE || (m->body == PX_H1_BODY_LENGTH && have >= m->content_length) ||
                        (m->body != PX_H1_BODY_LENGTH && eof);
            if (m->body == PX_H1_BODY_LENGTH && m->content_length > max_body) {
                mesh_errf(err, errlen, "%s: the body is larger than %zu bytes", url, max_body);
                free(m);
                goto out;
            }
            if (done)
                break;
        }
        if (eof) {
            mesh_errf(err, errlen, "%s: the connection closed before the response ended", url);
            free(m);
            goto out;
        }
        if (len == cap) {
            mesh_errf(err, errlen, "%s: the response is larger than %zu bytes", url, cap);
            free(m);
            goto out;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n > 0) {
            len += (size_t)n;
        } else if (n == 0) {
            eof = true;
        } else if (errno != EAGAIN || wait_fd(fd, POLLIN, deadline) < 0) {
            mesh_errf(err, errlen, "%s: %s", url, errno == EAGAIN ? "timed out" : strerror(errno));
            free(m);
            goto out;
        }
    }
    *status = m->status_code;
    if (body) {
        /* the body: as it is, or de-chunked in place */
        char *b = buf + head;
        size_t bl = len - (size_t)head, out = 0;
        if (m->body == PX_H1_BODY_LENGTH && bl > m->content_length)
            bl = (size_t)m->content_length;
        if (m->body == PX_H1_BODY_CHUNKED) {
            px_h1_chunked_t ch;
            px_h1_chunked_init(&ch);
            size_t pos = 0;
            for (;;) {
                const char *data;
                size_t dl, used;
                int r = px_h1_chunked_decode(&ch, b + pos, bl - pos, &used, &data, &dl, &why);
                pos += used;
                if (r == 1) {
                    memmove(buf + out, data, dl);
                    out += dl;
                    continue;
                }
                if (r == 0)
                    break;
                mesh_errf(err, errlen, "%s: bad chunked body: %s", url, r == -1 && why ? why : "truncated");
                free(m);
                goto out;
            }
        } else {
            memmove(buf, b, bl);
            out = bl;
        }
        if (out > max_body) {
            mesh_errf(err, errlen, "%s: the body is larger than %zu bytes", url, max_body);
            free(m);
            goto out;
        }
        buf[out] = '\0';
        *body = buf;
        if (body_len)
            *body_len = out;
        buf = NULL;
    }
    free(m);
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}
