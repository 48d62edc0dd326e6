/* End-to-end tests of the real build/meshproxy binary: a static config file,
 * small HTTP/1.1 backends written here (threads on 127.0.0.1), requests over
 * loopback. Routing by path and header, weighted split, 404/503 with their
 * response flags, keep-alive reuse towards the upstream, request smuggling
 * refused, chunked bodies, TCP proxying, a config reload under load with no
 * failed request, and SIGTERM draining. Every process and thread started here
 * is stopped before the test returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../proxy/http1_internal.h"
#include "../proxyharness.h"

/* ---- backends ---- */

/* A raw echo (for TCP proxying), not HTTP. */
static void serve_echo(ph_backend_t *b, int fd)
{
    (void)b;
    static __thread char buf[1 << 17];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
            break;
    }
    shutdown(fd, SHUT_WR);
}

/* Answers "backend=NAME path=PATH host=HOST xff=XFF rid=yes|no route=X-ROUTE
 * body=LEN" with "server: test" (".../long-reason": with a 600-byte reason
 * phrase); a body over 64 KiB is counted and dropped
 * as it comes; a WebSocket upgrade switches protocols, then echoes; "/slow"
 * waits 800 ms; "/a/close-late" drops the connection 100 ms after the answer. */
static void serve_http(ph_backend_t *b, int fd)
{
    static __thread char buf[1 << 17];
    size_t len = 0;
    px_h1_msg_t *m = malloc(sizeof(*m));
    for (;;) {
        int r = ph_h1_read_head(fd, buf, &len, sizeof(buf), m);
        if (r < 0)
            break;
        size_t head = (size_t)r, body_len, used;
        char body[4096];
        if (m->body == PX_H1_BODY_LENGTH && len - head < m->content_length && m->content_length > 65536) {
            /* a large body: counted and dropped as it comes (the head's
             * slices are not used after this) */
            char path[64];
            snprintf(path, sizeof(path), "%.*s", (int)(m->target_len < 60 ? m->target_len : 60), m->target);
            uint64_t need = m->content_length - (len - head);
            while (need > 0) {
                size_t want = need < sizeof(buf) ? (size_t)need : sizeof(buf);
                ssize_t n = recv(fd, buf, want, 0);
                if (n <= 0)
                    goto out;
                need -= (uint64_t)n;
            }
            int bl = snprintf(body, sizeof(body), "backend=%s path=%s body=%llu\n", b->name, path,
                              (unsigned long long)m->content_length);
            atomic_fetch_add(&b->reqs, 1);
            if (ph_h1_reply(fd, "200 OK", "", body, (size_t)bl) < 0)
                goto out;
            len = 0;
            continue;
        }
        if (ph_h1_read_body(fd, buf, &len, sizeof(buf), m, head, &used, &body_len) < 0)
            goto out;
        if (m->upgrade && m->websocket) {
            /* switch protocols, then echo whatever comes */
            static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                     "Upgrade: websocket\r\n\r\n";
            if (send(fd, sw, sizeof(sw) - 1, MSG_NOSIGNAL) < 0)
                goto out;
            if (len > used && send(fd, buf + used, len - used, MSG_NOSIGNAL) < 0)
                goto out;
            for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n <= 0 || send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
                    break;
            }
            shutdown(fd, SHUT_WR);
            goto out;
        }
        if (m->target_len >= 5 && memcmp(m->target, "/slow", 5) == 0)
            usleep(800000);
        const px_h1_header_t *h;
        char xff[128] = "-", rid[8] = "no", host[128] = "-", xt[64] = "-";
        ph_h1_header(m, "x-forwarded-for", xff, sizeof(xff));
        if ((h = px_h1_find(m, "x-request-id")) && h->value_len >= 8)
            snprintf(rid, sizeof(rid), "yes");
        ph_h1_header(m, "host", host, sizeof(host));
        ph_h1_header(m, "x-route", xt, sizeof(xt));
        int bl = snprintf(body, sizeof(body), "backend=%s path=%.*s host=%s xff=%s rid=%s route=%s body=%zu\n",
                          b->name, (int)m->target_len, m->target, host, xff, rid, xt, body_len);
        atomic_fetch_add(&b->reqs, 1);
        char status[640] = "200 OK";
        if (memmem(m->target, m->target_len, "/long-reason", 12)) {
            memcpy(status, "200 ", 4); /* a 600-byte reason phrase */
            memset(status + 4, 'R', 600);
            status[604] = 0;
        }
        if (ph_h1_reply(fd, status, "server: test\r\n", body, (size_t)bl) < 0)
            goto out;
        if (m->target_len >= 12 && memcmp(m->target, "/a/close-late", 12) == 0) {
            /* a keep-alive response, then the connection is dropped a little
             * later without reading what came meanwhile */
            usleep(100000);
            goto out;
        }
        memmove(buf, buf + used, len - used);
        len -= used;
    }
out:
    free(m);
}

/* ---- the proxy's config ---- */

#define LISTENER(name, port, hcm_body)                                                                 \
    "{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\", \"name\": \"" name "\", " \
    "\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": " port "}}, "     \
    "\"filter_chains\": [{\"filters\": [{\"name\": \"f\", \"typed_config\": " hcm_body "}]}]}"
#define HCM_RDS(rds)                                                                                    \
    "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."  \
    "HttpConnectionManager\", \"stat_prefix\": \"in\", \"rds\": {\"route_config_name\": \"" rds "\"}}"
#define TCP_PROXY(cluster)                                                                              \
    "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "   \
    "\"stat_prefix\": \"tcp\", \"cluster\": \"" cluster "\"}"
#define CLUSTER(name, port)                                                                             \
    "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"" name "\", "   \
    "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"" name "\", \"endpoints\": " \
    "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "           \
    "\"127.0.0.1\", \"port_value\": " port "}}}}]}]}}"
#define ROUTE_TYPE "\"@type\": \"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\""


/* The whole config: listener `port` -> RDS "main" routes; tcp listener;
 * clusters a, b, c (backends), empty (no endpoints), dead (closed port). */
static char *make_config(int port, int tcp_port, int pa, int pb, int pc, int dead, int echo,
                         const char *default_cluster)
{
    char *out = malloc(16384);
    char tmpl[16384];
    snprintf(tmpl, sizeof(tmpl),
             "{\"resources\": [\n%s,\n%s,\n%s,\n%s,\n%s,\n%s,\n%s,\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"empty\", "
             "\"type\": \"EDS\"},\n"
             "{" ROUTE_TYPE ", \"name\": \"main\", \"virtual_hosts\": [{\"name\": \"all\", \"domains\": [\"*\"], "
             "\"response_headers_to_add\": [{\"header\": {\"key\": \"x-vhost\", \"value\": \"all\"}}], "
             "\"routes\": [\n"
             " {\"match\": {\"prefix\": \"/h\", \"headers\": [{\"name\": \"x-user\", \"string_match\": "
             "{\"exact\": \"jason\"}}]}, \"route\": {\"cluster\": \"b\"}},\n"
             " {\"match\": {\"prefix\": \"/a\"}, \"route\": {\"cluster\": \"a\"}},\n"
             " {\"match\": {\"prefix\": \"/b\"}, \"route\": {\"cluster\": \"b\"}},\n"
             " {\"match\": {\"prefix\": \"/rw/\"}, \"route\": {\"cluster\": \"a\", \"prefix_rewrite\": "
             "\"/inner/\", \"host_rewrite_literal\": \"inner.local\"},"
             " \"request_headers_to_add\": [{\"header\": {\"key\": \"x-route\", \"value\": \"rw\"}}],"
             " \"response_headers_to_remove\": [\"server\"]},\n"
             " {\"match\": {\"prefix\": \"/split\"}, \"route\": {\"weighted_clusters\": {\"clusters\": "
             "[{\"name\": \"a\", \"weight\": 80}, {\"name\": \"c\", \"weight\": 20}]}}},\n"
             " {\"match\": {\"prefix\": \"/empty\"}, \"route\": {\"cluster\": \"empty\"}},\n"
             " {\"match\": {\"prefix\": \"/slow\"}, \"route\": {\"cluster\": \"c\", \"timeout\": \"0.2s\"}},\n"
             " {\"match\": {\"prefix\": \"/dead\"}, \"route\": {\"cluster\": \"dead\"}},\n"
             " {\"match\": {\"prefix\": \"/nocluster\"}, \"route\": {\"cluster\": \"missing\"}},\n"
             " {\"match\": {\"prefix\": \"/redirect\"}, \"redirect\": {\"path_redirect\": \"/there\"}},\n"
             " {\"match\": {\"prefix\": \"/load\"}, \"route\": {\"cluster\": \"%s\"}}\n"
             "]}, {\"name\": \"none\", \"domains\": [\"nothing.here\"], \"routes\": []}]}\n"
             "]}\n",
             LISTENER("http", "%d", HCM_RDS("main")), LISTENER("tcp", "%d", TCP_PROXY("echo")),
             CLUSTER("a", "%d"), CLUSTER("b", "%d"), CLUSTER("c", "%d"), CLUSTER("dead", "%d"),
             CLUSTER("echo", "%d"), "%s");
    /* tmpl is built above from literals; its %d/%s slots are filled here */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, 16384, tmpl, port, tcp_port, pa, pb, pc, dead, echo, default_cluster);
#pragma GCC diagnostic pop
    return out;
}

/* ---- client ---- */

/* One GET to svc.local on a new connection; 0 or -1. */
static int get(int port, const char *path, const char *extra, ph_resp_t *r)
{
    return ph_request(port, "svc.local", path, extra, NULL, r);
}

/* ---- fixture ---- */

typedef struct fixture {
    ph_backend_t *a, *b, *c, *echo;
    int port, tcp_port, dead;
    ph_proxy_t p;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->a = ph_backend_start("A", serve_http, NULL);
    f->b = ph_backend_start("B", serve_http, NULL);
    f->c = ph_backend_start("C", serve_http, NULL);
    f->echo = ph_backend_start("echo", serve_echo, NULL);
    f->port = ph_free_port();
    f->tcp_port = ph_free_port();
    f->dead = ph_free_port();
    char *cfg = make_config(f->port, f->tcp_port, f->a->port, f->b->port, f->c->port, f->dead, f->echo->port, "a");
    ph_proxy_init(&f->p, "meshproxy-e2e");
    f->p.port = f->port;
    ph_proxy_opts_t o = {.concurrency = 2, .drain_time = 3};
    assert_true(ph_proxy_start(&f->p, cfg, &o));
    free(cfg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ph_proxy_stop(&f->p);
    ph_remove_dir(f->p.dir);
    ph_backend_stop(f->a);
    ph_backend_stop(f->b);
    ph_backend_stop(f->c);
    ph_backend_stop(f->echo);
    free(f);
    return 0;
}

static void test_routing_by_path_and_header(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    assert_int_equal(get(f->port, "/a/x", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A path=/a/x host=svc.local xff=127.0.0.1 rid=yes"));
    assert_non_null(strstr(r.head, "x-envoy-upstream-service-time: "));
    assert_non_null(strstr(r.head, "x-vhost: all\r\n"));
    assert_int_equal(get(f->port, "/b", NULL, &r), 0);
    assert_non_null(strstr(r.body, "backend=B"));
    assert_int_equal(get(f->port, "/h", "x-user: jason\r\n", &r), 0);
    assert_non_null(strstr(r.body, "backend=B"));
    assert_int_equal(get(f->port, "/h", "x-user: other\r\n", &r), 0);
    assert_int_equal(r.status, 404);
    /* prefix and host rewrite, header add/remove */
    assert_int_equal(get(f->port, "/rw/deep?q=1", "X-Forwarded-For: 10.1.2.3\r\n", &r), 0);
    assert_non_null(strstr(r.body, "backend=A path=/inner/deep?q=1 host=inner.local xff=10.1.2.3, 127.0.0.1"));
    assert_non_null(strstr(r.body, "route=rw"));
    assert_null(strstr(r.head, "server:"));
    assert_int_equal(get(f->port, "/a", NULL, &r), 0);
    assert_non_null(strstr(r.head, "server: test"));
    /* a long reason phrase goes through whole, followed by the headers */
    assert_int_equal(get(f->port, "/a/long-reason", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char want[640] = "HTTP/1.1 200 ";
    memset(want + 13, 'R', 600);
    memcpy(want + 613, "\r\n", 3);
    assert_memory_equal(r.head, want, 615);
    /* absolute-form target: routed on its path, Host from the URI */
    int afd = ph_connect(f->port);
    assert_int_equal(ph_roundtrip(afd, "GET http://svc.other/a/abs?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n", &r), 0);
    close(afd);
    assert_non_null(strstr(r.body, "backend=A path=/a/abs?x=1 host=svc.other "));
    /* redirect */
    assert_int_equal(get(f->port, "/redirect/x", NULL, &r), 0);
    assert_int_equal(r.status, 301);
    assert_non_null(strstr(r.head, "location: http://svc.local/there\r\n"));
}

static void test_no_route_and_no_upstream_flags(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    assert_int_equal(get(f->port, "/nothing-matches", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(get(f->port, "/empty", NULL, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "no healthy upstream");
    assert_int_equal(get(f->port, "/dead", NULL, &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "upstream connect error or disconnect/reset before headers"));
    assert_int_equal(get(f->port, "/nocluster", NULL, &r), 0);
    assert_int_equal(r.status, 503);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(get(f->port, "/slow", NULL, &r), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(r.status, 504);
    assert_string_equal(r.body, "upstream request timeout");
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.15 && secs < 2.0); /* the 504 itself shows the upstream (0.8 s) was not awaited */
    usleep(100000);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /nothing-matches HTTP/1.1\" 404 NR "));
    assert_non_null(strstr(log, "\"GET /empty HTTP/1.1\" 503 UH "));
    assert_non_null(strstr(log, "\"GET /dead HTTP/1.1\" 503 UF "));
    assert_non_null(strstr(log, "\"GET /nocluster HTTP/1.1\" 503 NC "));
    assert_non_null(strstr(log, "\"GET /slow HTTP/1.1\" 504 UT "));
    /* Envoy's default format: ... flags bytes_in bytes_out duration service_time "xff" "ua" "id" "authority" "upstream" */
    assert_non_null(strstr(log, "\"GET /nothing-matches HTTP/1.1\" 404 NR 0 0 "));
    const char *ok_line = strstr(log, "\"GET /a/x HTTP/1.1\" 200 - 0 ");
    assert_non_null(ok_line);
    char upstream[64];
    snprintf(upstream, sizeof(upstream), "\"svc.local\" \"127.0.0.1:%d\"\n", f->a->port);
    const char *eol = strchr(ok_line, '\n');
    const char *up = strstr(ok_line, upstream);
    assert_true(up != NULL && up < eol);
    free(log);
}

static void test_weighted_split(void **state)
{
    fixture_t *f = *state;
    int a = 0, c = 0;
    int fd = ph_connect(f->port);
    for (int i = 0; i < 500; i++) {
        ph_resp_t r;
        assert_int_equal(ph_roundtrip(fd, "GET /split HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
        if (strstr(r.body, "backend=A"))
            a++;
        else if (strstr(r.body, "backend=C"))
            c++;
    }
    close(fd);
    assert_int_equal(a + c, 500);
    /* 80/20: 400 expected, generous bounds */
    assert_in_range(a, 340, 460);
}

static void test_keep_alive_reuses_upstream(void **state)
{
    fixture_t *f = *state;
    int before = atomic_load(&f->b->conns), reqs = atomic_load(&f->b->reqs);
    for (int round = 0; round < 3; round++) {
        int fd = ph_connect(f->port);
        for (int i = 0; i < 20; i++) {
            ph_resp_t r;
            assert_int_equal(ph_roundtrip(fd, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
            assert_int_equal(r.status, 200);
            assert_false(r.closed);
        }
        close(fd);
    }
    /* sequential requests on one client connection stay on one worker: at
     * most one new upstream connection (none if an earlier test left one in
     * that worker's pool) serves all 60 */
    assert_int_equal(atomic_load(&f->b->reqs) - reqs, 60);
    assert_in_range(atomic_load(&f->b->conns) - before, 0, 1);
}

static void test_stale_pooled_connection_is_retried(void **state)
{
    fixture_t *f = *state;
    int fd = ph_connect(f->port);
    ph_resp_t r;
    /* the first response leaves a pooled connection the backend drops 100 ms
     * later; the second request goes out on it at once, finds it closed
     * without an answer and is sent again on a fresh connection */
    assert_int_equal(ph_roundtrip(fd, "GET /a/close-late HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    int conns = atomic_load(&f->a->conns);
    assert_int_equal(ph_roundtrip(fd, "GET /a/next HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A path=/a/next"));
    assert_int_equal(atomic_load(&f->a->conns), conns + 1);
    close(fd);
}

static void test_smuggling_is_refused(void **state)
{
    fixture_t *f = *state;
    int before = atomic_load(&f->a->reqs);
    static const char *const attacks[] = {
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\n folded: yes\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++) {
        int fd = ph_connect(f->port);
        ph_resp_t r;
        assert_int_equal(ph_roundtrip(fd, attacks[i], &r), 0);
        assert_int_equal(r.status, 400);
        assert_true(r.closed);
        close(fd);
    }
    assert_int_equal(atomic_load(&f->a->reqs), before);
    /* an oversized head: 431 */
    char *big = malloc(80000);
    int n = snprintf(big, 80000, "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 70000);
    strcpy(big + n + 70000, "\r\n\r\n");
    int fd = ph_connect(f->port);
    ph_resp_t r;
    assert_int_equal(ph_roundtrip(fd, big, &r), 0);
    assert_int_equal(r.status, 431);
    close(fd);
    free(big);
}

static void test_bodies_and_pipelining(void **state)
{
    fixture_t *f = *state;
    int fd = ph_connect(f->port);
    ph_resp_t r;
    assert_int_equal(ph_roundtrip(fd, "POST /a/post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", &r), 0);
    assert_non_null(strstr(r.body, "body=5"));
    assert_int_equal(
        ph_roundtrip(fd, "POST /a/chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
                  &r),
        0);
    assert_non_null(strstr(r.body, "body=7"));
    assert_int_equal(
        ph_roundtrip(fd, "PUT /a/cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", &r), 0);
    /* the proxy answers 100 Continue itself, then the real response */
    assert_int_equal(r.status, 100);
    assert_int_equal(ph_roundtrip(fd, "", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "body=2"));
    /* a large upload streams through (the proxy holds back reading while
     * the upstream is slower, then resumes) */
    size_t big = 3 * 1024 * 1024;
    char *up = malloc(big + 256);
    int hl = snprintf(up, 256, "POST /a/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", big);
    memset(up + hl, 'u', big);
    up[hl + big] = '\0';
    assert_int_equal(ph_roundtrip(fd, up, &r), 0);
    free(up);
    assert_int_equal(r.status, 200);
    char want[64];
    snprintf(want, sizeof(want), "body=%zu", big);
    assert_non_null(strstr(r.body, want));
    /* two pipelined requests: answered in order */
    const char *two = "GET /a/one HTTP/1.1\r\nHost: x\r\n\r\nGET /b/two HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(ph_roundtrip(fd, two, &r), 0);
    assert_non_null(strstr(r.body, "backend=A path=/a/one"));
    assert_int_equal(ph_roundtrip(fd, "", &r), 0);
    assert_non_null(strstr(r.body, "backend=B path=/b/two"));
    /* HTTP/1.0 without keep-alive: the proxy closes after the response */
    assert_int_equal(ph_roundtrip(fd, "GET /a HTTP/1.0\r\n\r\n", &r), 0);
    assert_true(r.closed);
    char c;
    assert_int_equal(recv(fd, &c, 1, 0), 0);
    close(fd);
}

static void test_websocket_upgrade_passthrough(void **state)
{
    fixture_t *f = *state;
    int fd = ph_connect(f->port);
    ph_resp_t r;
    assert_int_equal(ph_roundtrip(fd, "GET /a/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n",
                               &r),
                     0);
    assert_int_equal(r.status, 101);
    assert_non_null(strstr(r.head, "Upgrade: websocket\r\n"));
    /* after the switch the bytes go both ways untouched */
    const char msg[] = "\x81\x05hello raw frame bytes";
    assert_int_equal(send(fd, msg, sizeof(msg) - 1, 0), (ssize_t)(sizeof(msg) - 1));
    char back[64];
    size_t got = 0;
    while (got < sizeof(msg) - 1) {
        ssize_t n = recv(fd, back + got, sizeof(back) - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    assert_int_equal(got, sizeof(msg) - 1);
    assert_memory_equal(back, msg, got);
    close(fd);
}

static void test_tcp_proxy(void **state)
{
    fixture_t *f = *state;
    int fd = ph_connect(f->tcp_port);
    assert_true(fd >= 0);
    char msg[20000], back[20000];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (char)('a' + i % 26);
    assert_int_equal(send(fd, msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
    size_t got = 0;
    while (got < sizeof(back)) {
        ssize_t n = recv(fd, back + got, sizeof(back) - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    assert_int_equal(got, sizeof(msg));
    assert_memory_equal(msg, back, sizeof(msg));
    close(fd);
}

/* A bulk transfer: 8 MiB each way through the TCP listener, the client's
 * half-close passed on (the echo then ends its side), every byte in order,
 * moved by splice past the first 256 KiB and counted in Istio's TCP metrics. */
#define BULK (8u << 20)

static uint8_t bulk_byte(size_t i)
{
    return (uint8_t)(i * 7 + i / 4093);
}

static void *bulk_send(void *arg)
{
    int fd = *(int *)arg;
    static uint8_t chunk[65536];
    for (size_t off = 0; off < BULK;) {
        size_t n = BULK - off < sizeof(chunk) ? BULK - off : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = bulk_byte(off + i);
        ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    return NULL;
}

static void test_tcp_proxy_bulk(void **state)
{
    fixture_t *f = *state;
    long spliced = ph_admin_stat(f->p.admin_port, "tcp.tunnels_spliced");
    int fd = ph_connect(f->tcp_port);
    assert_true(fd >= 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bulk_send, &fd), 0);
    static uint8_t buf[65536];
    size_t got = 0, bad = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != bulk_byte(got + (size_t)i);
        got += (size_t)n;
    }
    pthread_join(th, NULL);
    close(fd);
    assert_int_equal(got, BULK); /* all of it, then the echo's end */
    assert_int_equal(bad, 0);
    assert_true(ph_admin_stat(f->p.admin_port, "tcp.tunnels_spliced") > spliced);
    /* the connection's bytes reach the metrics when it closes */
    ph_resp_t r;
    long long recvd = 0;
    for (int i = 0; i < 50 && recvd < (long long)BULK; i++) {
        int sfd = ph_connect(f->p.stats_port);
        assert_int_equal(ph_roundtrip(sfd, "GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
        close(sfd);
        const char *line = strstr(r.body, "istio_tcp_received_bytes_total{");
        while (line && !strstr(line, "destination_service=\"echo\""))
            line = strstr(line + 1, "istio_tcp_received_bytes_total{");
        const char *val = line ? strchr(line, '}') : NULL;
        recvd = val ? atoll(val + 2) : 0;
        if (recvd < (long long)BULK)
            usleep(20000);
    }
    assert_true(recvd >= (long long)BULK);
}

/* ---- config update under load ---- */

struct loader {
    int port;
    atomic_bool stop;
    atomic_int ok, failed, from_b;
    pthread_t th;
};

static void *load_main(void *arg)
{
    struct loader *l = arg;
    int fd = -1;
    while (!atomic_load(&l->stop)) {
        if (fd < 0)
            fd = ph_connect(l->port);
        ph_resp_t r;
        if (fd < 0 || ph_roundtrip(fd, "GET /load HTTP/1.1\r\nHost: x\r\n\r\n", &r) < 0 || r.status != 200) {
            atomic_fetch_add(&l->failed, 1);
            if (fd >= 0)
                close(fd);
            fd = -1;
            continue;
        }
        atomic_fetch_add(&l->ok, 1);
        if (strstr(r.body, "backend=B"))
            atomic_fetch_add(&l->from_b, 1);
        if (r.closed) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void test_reload_under_load_fails_no_request(void **state)
{
    fixture_t *f = *state;
    struct loader l[4];
    memset(l, 0, sizeof(l));
    for (int i = 0; i < 4; i++) {
        l[i].port = f->port;
        assert_int_equal(pthread_create(&l[i].th, NULL, load_main, &l[i]), 0);
    }
    /* a TCP connection through the listener the update removes */
    int tfd = ph_connect(f->tcp_port);
    assert_true(tfd >= 0);
    assert_int_equal(send(tfd, "before", 6, 0), 6);
    char tb[16];
    assert_int_equal(recv(tfd, tb, sizeof(tb), 0), 6);
    usleep(300000);
    /* the route moves from A to B; the TCP listener moves to another port
     * (the old one is removed, a new one added) */
    int new_tcp = ph_free_port();
    char *cfg = make_config(f->port, new_tcp, f->a->port, f->b->port, f->c->port, f->dead, f->echo->port, "b");
    ph_write_file(f->p.config, cfg);
    free(cfg);
    kill(f->p.pid, SIGHUP);
    usleep(500000);
    assert_false(ph_port_open(f->tcp_port));
    assert_true(ph_port_open(new_tcp));
    /* the accepted connection was not dropped */
    assert_int_equal(send(tfd, "after!", 6, 0), 6);
    assert_int_equal(recv(tfd, tb, sizeof(tb), 0), 6);
    assert_memory_equal(tb, "after!", 6);
    close(tfd);
    /* a broken file is refused and the running config stays */
    ph_write_file(f->p.config, "{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", "
                            "\"name\": \"x\", \"lb_policy\": \"BOGUS\"}]}");
    kill(f->p.pid, SIGHUP);
    usleep(300000);
    int b_before = 0;
    for (int i = 0; i < 4; i++)
        b_before += atomic_load(&l[i].from_b);
    usleep(200000);
    int ok = 0, failed = 0, b_after = 0;
    for (int i = 0; i < 4; i++) {
        atomic_store(&l[i].stop, true);
        pthread_join(l[i].th, NULL);
        ok += atomic_load(&l[i].ok);
        failed += atomic_load(&l[i].failed);
        b_after += atomic_load(&l[i].from_b);
    }
    assert_int_equal(failed, 0);
    assert_true(ok > 100);
    assert_true(b_before > 0);
    assert_true(b_after > b_before); /* still serving B after the bad reload */
    char *err = ph_slurp(f->p.err);
    assert_non_null(strstr(err, "reload rejected, keeping the running config"));
    assert_non_null(strstr(err, "unknown LbPolicy value \"BOGUS\""));
    free(err);
    ph_resp_t r;
    assert_int_equal(get(f->port, "/load", NULL, &r), 0);
    assert_non_null(strstr(r.body, "backend=B"));
}

static void test_stats_readiness_and_admin(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    /* fresh traffic of known shape */
    assert_int_equal(get(f->port, "/nothing-matches", NULL, &r), 0);
    assert_int_equal(get(f->port, "/b/stats", NULL, &r), 0);
    int fd = ph_connect(f->p.stats_port);
    assert_true(fd >= 0);
    assert_int_equal(ph_roundtrip(fd, "GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE istio_requests_total counter\n"));
    assert_non_null(strstr(r.body, "istio_requests_total{reporter=\"source\",source_workload=\"client-7f9\","
                                   "source_workload_namespace=\"shop\""));
    assert_non_null(strstr(r.body, "destination_service=\"b\",destination_service_name=\"b\""));
    assert_non_null(strstr(r.body, "response_code=\"404\",response_flags=\"NR\""));
    assert_non_null(strstr(r.body, "response_code=\"503\",response_flags=\"UH\""));
    assert_non_null(strstr(r.body, "istio_request_duration_milliseconds_bucket{"));
    assert_non_null(strstr(r.body, "le=\"+Inf\"}"));
    assert_non_null(strstr(r.body, "istio_response_bytes_sum{"));
    assert_non_null(strstr(r.body, "istio_tcp_connections_opened_total{reporter=\"source\""));
    assert_non_null(strstr(r.body, "destination_service=\"echo\""));
    /* the 60 keep-alive requests to b and more are counted */
    const char *line = strstr(r.body, "istio_requests_total{reporter=\"source\",source_workload=\"client-7f9\","
                                      "source_workload_namespace=\"shop\",destination_workload=\"unknown\","
                                      "destination_workload_namespace=\"unknown\",destination_service=\"b\",");
    assert_non_null(line);
    const char *val = strstr(line, "response_code=\"200\"");
    assert_non_null(val);
    val = strchr(val, ' ');
    assert_true(atoi(val + 1) >= 60);

    fd = ph_connect(f->p.ready_port);
    assert_int_equal(ph_roundtrip(fd, "GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    fd = ph_connect(f->p.admin_port);
    assert_int_equal(ph_roundtrip(fd, "GET /clusters HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    close(fd);
    char want[64];
    snprintf(want, sizeof(want), "a::127.0.0.1:%d::weight::1\n", f->a->port);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "empty::no_healthy_endpoints\n"));
    fd = ph_connect(f->p.admin_port);
    assert_int_equal(ph_roundtrip(fd, "GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    close(fd);
    assert_non_null(strstr(r.body, "\"listeners\""));
    assert_non_null(strstr(r.body, "\"rds\":\"main\""));
    fd = ph_connect(f->p.admin_port);
    assert_int_equal(ph_roundtrip(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    close(fd);
    assert_non_null(strstr(r.body, "upstream_cx_pool_reused: "));
}

static void test_sigterm_drains_and_exits(void **state)
{
    fixture_t *f = *state;
    /* an idle keep-alive client does not hold the proxy up */
    int fd = ph_connect(f->port);
    ph_resp_t r;
    assert_int_equal(ph_roundtrip(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = ph_proxy_stop(&f->p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    f->p.pid = 0;
    assert_int_equal(status, 0);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 2.5);
    char c;
    assert_true(recv(fd, &c, 1, 0) <= 0);
    close(fd);
    assert_false(ph_port_open(f->port));
}

/* ---- xDS from meshd ---- */

static pid_t spawn(const char *const *argv, const char *out)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *o = freopen(out, "w", stdout);
        (void)o;
        dup2(1, 2); /* one file offset for both streams */
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void test_xds_from_meshd(void **state)
{
    (void)state;
    const char *build = getenv("MESH_BUILD") ? getenv("MESH_BUILD") : "build";
    char meshd[256], proxy[256];
    snprintf(meshd, sizeof(meshd), "%s/meshd", build);
    snprintf(proxy, sizeof(proxy), "%s/meshproxy", build);
    if (access(meshd, X_OK) != 0) {
        fprintf(stderr, "%s not built: xDS test skipped\n", meshd);
        skip();
    }
    ph_backend_t *a = ph_backend_start("A", serve_http, NULL);
    char dir[] = "/tmp/meshproxy-xds-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int svc_port = ph_free_port(), grpc_port = ph_free_port();
    /* the proxy's listeners bind a loopback address of their own */
    char ip[32];
    snprintf(ip, sizeof(ip), "127.0.%d.%d", 1 + getpid() % 200, 2 + (getpid() / 200) % 200);
    char yaml[4096], path[256];
    snprintf(yaml, sizeof(yaml),
             "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo, labels: {app: web}}\n"
             "spec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: %d, targetPort: %d}\n---\n"
             "apiVersion: v1\nkind: Pod\nmetadata: {name: web-v1, namespace: demo, labels: {app: web}}\n"
             "spec:\n  containers:\n  - {name: web, image: x, ports: [{containerPort: %d}]}\n"
             "status: {phase: Running, podIP: 127.0.0.1}\n---\n"
             "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
             "metadata: {name: web-v1, namespace: demo, labels: {kubernetes.io/service-name: web}}\n"
             "addressType: IPv4\nports:\n- {name: http, port: %d, protocol: TCP}\n"
             "endpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions: {ready: true}\n"
             "  targetRef: {kind: Pod, name: web-v1, namespace: demo}\n",
             svc_port, a->port, a->port, a->port);
    snprintf(path, sizeof(path), "%s/services.yaml", dir);
    ph_write_file(path, yaml);
    char grpc_addr[64], meshd_log[256], proxy_log[256];
    snprintf(grpc_addr, sizeof(grpc_addr), "127.0.0.1:%d", grpc_port);
    snprintf(meshd_log, sizeof(meshd_log), "%s/meshd.log", dir);
    snprintf(proxy_log, sizeof(proxy_log), "%s/proxy.log", dir);
    const char *margv[] = {meshd, "--config-dir", dir, "--grpc-addr", grpc_addr, "--debug-addr", "off",
                           "--monitoring-addr", "off", NULL};
    pid_t mpid = spawn(margv, meshd_log);
    for (int i = 0; i < 200 && !ph_port_open(grpc_port); i++)
        usleep(20000);
    int rport = ph_free_port(), aport = ph_free_port();
    char ready[16], admin[16];
    snprintf(ready, sizeof(ready), "%d", rport);
    snprintf(admin, sizeof(admin), "%d", aport);
    const char *pargv[] = {proxy, "sidecar", "--xds-addr", grpc_addr, "--node-ip", "10.9.9.9", "--pod", "client-1",
                           "--namespace", "demo", "--labels", "app=client", "--bind", ip, "--concurrency", "1",
                           "--drain-time", "1", "--stats-port", "0", "--admin-port", admin, "--ready-port",
                           ready, NULL};
    pid_t ppid = spawn(pargv, proxy_log);
    /* ready only once the first complete config is in */
    for (int i = 0; i < 250 && !ph_port_open_on(ip, rport); i++)
        usleep(20000);
    ph_resp_t rr = {0};
    int rrc = -1;
    for (int i = 0; i < 100; i++) {
        int fd = ph_connect_on(ip, rport);
        rrc = fd >= 0 ? ph_roundtrip(fd, "GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n", &rr) : -1;
        if (fd >= 0)
            close(fd);
        if (rrc == 0 && rr.status == 200)
            break;
        usleep(20000);
    }
    for (int i = 0; i < 250 && !ph_port_open_on(ip, svc_port); i++)
        usleep(20000);
    bool up = ph_port_open_on(ip, svc_port);
    char host[128], raw[512];
    snprintf(host, sizeof(host), "web.demo.svc.cluster.local:%d", svc_port);
    snprintf(raw, sizeof(raw), "GET /via-xds HTTP/1.1\r\nHost: %s\r\n\r\n", host);
    ph_resp_t r1 = {0}, r2 = {0};
    int rc1 = -1, rc2 = -1;
    if (up) {
        int fd = ph_connect_on(ip, svc_port);
        rc1 = ph_roundtrip(fd, raw, &r1);
        close(fd);
    }
    /* a cluster the proxy cannot serve (DNS) is NACKed with the reason and
     * the accepted config keeps serving */
    snprintf(path, sizeof(path), "%s/external.yaml", dir);
    ph_write_file(path, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                     "metadata: {name: ext, namespace: demo}\n"
                     "spec:\n  hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n"
                     "  ports:\n  - {number: 80, name: http, protocol: HTTP}\n");
    ph_resp_t st = {0};
    bool rejected = false;
    for (int i = 0; i < 150 && !rejected; i++) {
        usleep(20000);
        int fd = ph_connect_on("127.0.0.1", aport);
        if (fd >= 0 && ph_roundtrip(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", &st) == 0)
            rejected = strstr(st.body, "xds.last_rejection: Cluster outbound|80||ext.example.com: type: DNS "
                                       "clusters are not supported") != NULL;
        if (fd >= 0)
            close(fd);
    }
    ph_resp_t r3 = {0};
    int rc3 = -1;
    if (up) {
        int fd = ph_connect_on(ip, svc_port);
        rc3 = ph_roundtrip(fd, raw, &r3);
        close(fd);
    }
    /* the control plane goes away: the proxy keeps its config */
    ph_reap(mpid);
    usleep(200000);
    if (up) {
        int fd = ph_connect_on(ip, svc_port);
        rc2 = ph_roundtrip(fd, raw, &r2);
        close(fd);
    }
    ph_reap(ppid);
    ph_backend_stop(a);
    char *plog = ph_slurp(proxy_log);
    if (!up || rc1 != 0 || rc2 != 0 || !rejected || !strstr(plog, "serving the last config"))
        fprintf(stderr, "proxy log:\n%s\nadmin /stats:\n%s\n", plog, st.body);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    assert_int_equal(rrc, 0);
    assert_int_equal(rr.status, 200);
    assert_true(up);
    assert_int_equal(rc1, 0);
    assert_int_equal(r1.status, 200);
    assert_non_null(strstr(r1.body, "backend=A path=/via-xds"));
    assert_true(rejected);
    assert_int_equal(rc3, 0);
    assert_int_equal(r3.status, 200);
    assert_int_equal(rc2, 0);
    assert_int_equal(r2.status, 200);
    assert_non_null(strstr(plog, "xds: first config applied"));
    assert_non_null(strstr(plog, "serving the last config"));
    free(plog);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing_by_path_and_header),
        cmocka_unit_test(test_no_route_and_no_upstream_flags),
        cmocka_unit_test(test_weighted_split),
        cmocka_unit_test(test_keep_alive_reuses_upstream),
        cmocka_unit_test(test_stale_pooled_connection_is_retried),
        cmocka_unit_test(test_smuggling_is_refused),
        cmocka_unit_test(test_bodies_and_pipelining),
        cmocka_unit_test(test_websocket_upgrade_passthrough),
        cmocka_unit_test(test_tcp_proxy),
        cmocka_unit_test(test_tcp_proxy_bulk),
        cmocka_unit_test(test_reload_under_load_fails_no_request),
        cmocka_unit_test(test_stats_readiness_and_admin),
        cmocka_unit_test(test_sigterm_drains_and_exits),
        cmocka_unit_test(test_xds_from_meshd), /* its own meshd and proxy */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
