/* The meshproxy end-to-end test harness (see proxyharness.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxyharness.h"

/* ---- loopback sockets ---- */

int ph_listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 256) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

int ph_free_port(void)
{
    int port;
    int fd = ph_listen_any(&port);
    assert_true(fd >= 0);
    close(fd);
    return port;
}

static int connect_to(const char *ip, int port, bool timeout)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (timeout) {
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool ph_port_open_on(const char *ip, int port)
{
    int fd = connect_to(ip, port, false);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

bool ph_port_open(int port)
{
    return ph_port_open_on("127.0.0.1", port);
}

int ph_connect_on(const char *ip, int port)
{
    return connect_to(ip, port, true);
}

int ph_connect(int port)
{
    return ph_connect_on("127.0.0.1", port);
}

int ph_read_more(int fd, char *buf, size_t *len, size_t cap)
{
    if (*len >= cap)
        return -1;
    ssize_t n = recv(fd, buf + *len, cap - *len, 0);
    if (n <= 0)
        return -1;
    *len += (size_t)n;
    return 0;
}

int ph_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- files ---- */

void ph_write_file(const char *path, const char *text)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

char *ph_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void ph_remove_dir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- in-test HTTP upstreams ---- */

struct ph_conn {
    ph_backend_t *b;
    int fd;
};

static void *conn_main(void *arg)
{
    struct ph_conn *c = arg;
    ph_backend_t *b = c->b;
    int fd = c->fd;
    free(c);
    b->_serve(b, fd);
    shutdown(fd, SHUT_RDWR);
    return NULL;
}

static void *accept_main(void *arg)
{
    ph_backend_t *b = arg;
    while (!atomic_load(&b->_stop)) {
        int fd = accept(b->_lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&b->mu);
        if (b->_ncl >= PH_MAX_CONNS || atomic_load(&b->_stop)) {
            pthread_mutex_unlock(&b->mu);
            close(fd);
            continue;
        }
        struct ph_conn *c = malloc(sizeof(*c));
        c->b = b;
        c->fd = fd;
        b->_cfds[b->_ncl] = fd;
        atomic_fetch_add(&b->conns, 1);
        if (pthread_create(&b->_cth[b->_ncl], NULL, conn_main, c) == 0)
            b->_ncl++;
        else {
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&b->mu);
    }
    return NULL;
}

ph_backend_t *ph_backend_start(const char *name, ph_serve_fn serve, void *data)
{
    ph_backend_t *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->name = name;
    b->data = data;
    b->_serve = serve;
    pthread_mutex_init(&b->mu, NULL);
    b->_lfd = ph_listen_any(&b->port);
    assert_true(b->_lfd >= 0);
    assert_int_equal(pthread_create(&b->_thread, NULL, accept_main, b), 0);
    return b;
}

void ph_backend_stop(ph_backend_t *b)
{
    atomic_store(&b->_stop, true);
    shutdown(b->_lfd, SHUT_RDWR);
    pthread_join(b->_thread, NULL);
    close(b->_lfd);
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->_ncl; i++)
        shutdown(b->_cfds[i], SHUT_RDWR);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->_ncl; i++) {
        pthread_join(b->_cth[i], NULL);
        close(b->_cfds[i]);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

const char *ph_backend_next_status(ph_backend_t *b)
{
    return atomic_fetch_sub(&b->fail_left, 1) > 0 ? "503 Service Unavailable" : "200 OK";
}

int ph_h1_read_head(int fd, char *buf, size_t *len, size_t cap, px_h1_msg_t *m)
{
    const char *err;
    int r;
    while ((r = px_h1_parse_request(buf, *len, m, &err)) == -2)
        if (ph_read_more(fd, buf, len, cap) < 0)
            return -1;
    return r < 0 ? -1 : r;
}

int ph_h1_read_body(int fd, char *buf, size_t *len, size_t cap, const px_h1_msg_t *m, size_t head, size_t *used,
                    size_t *body_len)
{
    *used = head;
    *body_len = 0;
    if (m->body == PX_H1_BODY_LENGTH) {
        while (*len - head < m->content_length)
            if (ph_read_more(fd, buf, len, cap) < 0)
                return -1;
        *body_len = (size_t)m->content_length;
        *used = head + *body_len;
    } else if (m->body == PX_H1_BODY_CHUNKED) {
        px_h1_chunked_t ck;
        px_h1_chunked_init(&ck);
        size_t pos = head;
        for (;;) {
            size_t u, dl;
            const char *data, *err;
            int k = px_h1_chunked_decode(&ck, buf + pos, *len - pos, &u, &data, &dl, &err);
            if (k == -1)
                return -1;
            pos += u;
            if (k == 1) {
                *body_len += dl;
                continue;
            }
            if (k == 0)
                break;
            if (ph_read_more(fd, buf, len, cap) < 0)
                return -1;
        }
        *used = pos;
    }
    return 0;
}

bool ph_h1_header(const px_h1_msg_t *m, const char *name, char *out, size_t cap)
{
    const px_h1_header_t *h = px_h1_find(m, name);
    if (h == NULL)
        return false;
    snprintf(out, cap, "%.*s", (int)h->value_len, h->value);
    return true;
}

int ph_h1_send_head(int fd, const char *status, const char *headers, size_t content_length)
{
    char head[1024];
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 %s\r\n%scontent-length: %zu\r\n\r\n", status, headers,
                      content_length);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return -1;
    return ph_send_all(fd, head, (size_t)hl);
}

int ph_h1_reply(int fd, const char *status, const char *headers, const char *body, size_t len)
{
    size_t cap = strlen(status) + strlen(headers) + len + 64;
    char *out = malloc(cap);
    int hl = snprintf(out, cap, "HTTP/1.1 %s\r\n%scontent-length: %zu\r\n\r\n", status, headers, len);
    memcpy(out + hl, body, len);
    int rc = ph_send_all(fd, out, (size_t)hl + len);
    free(out);
    return rc;
}

/* ---- the meshproxy process ---- */

void ph_proxy_init(ph_proxy_t *p, const char *prefix)
{
    p->pid = 0;
    snprintf(p->dir, sizeof(p->dir), "/tmp/%s-XXXXXX", prefix);
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->config, sizeof(p->config), "%s/config.json", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/access.log", p->dir);
    snprintf(p->err, sizeof(p->err), "%s/stderr.log", p->dir);
}

static bool child_running(pid_t pid)
{
    return waitpid(pid, NULL, WNOHANG) == 0;
}

bool ph_proxy_start(ph_proxy_t *p, const char *config_text, const ph_proxy_opts_t *o)
{
    ph_write_file(p->config, config_text);
    if (p->admin_port == 0)
        p->admin_port = ph_free_port();
    if (p->stats_port == 0)
        p->stats_port = ph_free_port();
    if (p->ready_port == 0)
        p->ready_port = ph_free_port();
    const char *build = getenv("MESH_BUILD") ? getenv("MESH_BUILD") : "build";
    char bin[256], conc[16], drain[16], sp[16], rp[16], ap[16];
    snprintf(bin, sizeof(bin), "%s/meshproxy", build);
    snprintf(conc, sizeof(conc), "%d", o->concurrency > 0 ? o->concurrency : 1);
    snprintf(drain, sizeof(drain), "%d", o->drain_time > 0 ? o->drain_time : 1);
    snprintf(sp, sizeof(sp), "%d", p->stats_port);
    snprintf(rp, sizeof(rp), "%d", p->ready_port);
    snprintf(ap, sizeof(ap), "%d", p->admin_port);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        FILE *out = freopen(p->log, "w", stdout);
        FILE *err = freopen(p->err, "w", stderr);
        (void)out;
        (void)err;
        if (o->seed)
            setenv("MESHPROXY_SEED", o->seed, 1);
        execl(bin, bin, "sidecar", "--config-file", p->config, "--concurrency", conc, "--drain-time", drain,
              "--pod", "client-7f9", "--namespace", "shop", "--bind", "127.0.0.1", "--stats-port", sp,
              "--ready-port", rp, "--admin-port", ap, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !ph_port_open(p->port); i++) {
        if (!child_running(p->pid))
            break;
        usleep(20000);
    }
    char *err = ph_slurp(p->err);
    bool up = ph_port_open(p->port) && child_running(p->pid) && !strstr(err, "cannot listen");
    free(err);
    if (!up)
        ph_proxy_stop(p);
    return up;
}

int ph_reap(pid_t pid)
{
    if (pid <= 0)
        return -1;
    int status = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

int ph_proxy_stop(ph_proxy_t *p)
{
    int status = ph_reap(p->pid);
    p->pid = 0;
    return status;
}

/* ---- HTTP/1.1 client ---- */

/* bytes read past one response stay for the next call on the same fd */
static __thread char rt_buf[524288];
static __thread size_t rt_len;
static __thread int rt_fd = -1;

int ph_roundtrip(int fd, const char *raw, ph_resp_t *r)
{
    size_t rl = strlen(raw);
    if (ph_send_all(fd, raw, rl) < 0)
        return -1;
    if (rt_fd != fd)
        rt_len = 0;
    rt_fd = fd;
    px_h1_msg_t *m = malloc(sizeof(*m));
    const char *err;
    int h;
    bool head_req = strncmp(raw, "HEAD ", 5) == 0;
    while ((h = px_h1_parse_response(rt_buf, rt_len, head_req, false, m, &err)) == -2)
        if (ph_read_more(fd, rt_buf, &rt_len, sizeof(rt_buf)) < 0)
            goto fail;
    if (h < 0)
        goto fail;
    memset(r, 0, sizeof(*r));
    r->status = m->status_code;
    r->closed = !m->keep_alive;
    snprintf(r->head, sizeof(r->head), "%.*s", h, rt_buf);
    if (m->body == PX_H1_BODY_LENGTH) {
        while (rt_len - (size_t)h < m->content_length)
            if (ph_read_more(fd, rt_buf, &rt_len, sizeof(rt_buf)) < 0)
                goto fail;
        r->body_len = m->content_length < sizeof(r->body) - 1 ? m->content_length : sizeof(r->body) - 1;
        memcpy(r->body, rt_buf + h, r->body_len);
        size_t used = (size_t)h + m->content_length;
        memmove(rt_buf, rt_buf + used, rt_len - used);
        rt_len -= used;
    } else if (m->body == PX_H1_BODY_CHUNKED) {
        px_h1_chunked_t d;
        px_h1_chunked_init(&d);
        size_t pos = (size_t)h;
        for (;;) {
            size_t u, dl;
            const char *data;
            int k = px_h1_chunked_decode(&d, rt_buf + pos, rt_len - pos, &u, &data, &dl, &err);
            if (k == -1)
                goto fail;
            pos += u;
            if (k == 1) {
                if (r->body_len + dl < sizeof(r->body)) {
                    memcpy(r->body + r->body_len, data, dl);
                    r->body_len += dl;
                }
                continue;
            }
            if (k == 0)
                break;
            if (ph_read_more(fd, rt_buf, &rt_len, sizeof(rt_buf)) < 0)
                goto fail;
        }
        memmove(rt_buf, rt_buf + pos, rt_len - pos);
        rt_len -= pos;
    } else {
        memmove(rt_buf, rt_buf + h, rt_len - (size_t)h);
        rt_len -= (size_t)h;
    }
    r->body[r->body_len] = '\0';
    free(m);
    return 0;
fail:
    rt_len = 0;
    free(m);
    return -1;
}

int ph_request(int port, const char *host, const char *path, const char *extra, const char *body, ph_resp_t *r)
{
    size_t cap = strlen(host) + strlen(path) + (extra ? strlen(extra) : 0) + (body ? strlen(body) : 0) + 128;
    char *raw = malloc(cap);
    if (body)
        snprintf(raw, cap, "POST %s HTTP/1.1\r\nHost: %s\r\ncontent-length: %zu\r\n%s\r\n%s", path, host,
                 strlen(body), extra ? extra : "", body);
    else
        snprintf(raw, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, extra ? extra : "");
    int rc = -1;
    int fd = ph_connect(port);
    if (fd >= 0) {
        rt_fd = -1; /* a new connection: nothing left over */
        rc = ph_roundtrip(fd, raw, r);
        close(fd);
        rt_fd = -1;
    }
    free(raw);
    return rc;
}

long ph_admin_stat(int admin_port, const char *name)
{
    ph_resp_t *r = malloc(sizeof(*r));
    long v = -1;
    if (ph_request(admin_port, "svc.local", "/stats", NULL, NULL, r) == 0 && r->status == 200) {
        char key[128];
        snprintf(key, sizeof(key), "%s: ", name);
        const char *p = strstr(r->body, key);
        if (p)
            v = strtol(p + strlen(key), NULL, 10);
    }
    free(r);
    return v;
}
