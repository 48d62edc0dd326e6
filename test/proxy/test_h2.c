/* End-to-end tests of meshproxy's HTTP/2, with the real build/meshproxy
 * binary on a static config and an nghttp2 client written here: many
 * concurrent streams on one connection, routing by :authority and path,
 * weighted clusters, HTTP/2 to HTTP/1.1 upstreams (threads on 127.0.0.1)
 * and to HTTP/2 upstreams (a small Node http2 server), HTTP/1.1 to HTTP/2,
 * gRPC trailers both ways, bodies larger than the flow-control windows,
 * RST_STREAM from the client, a malformed frame sequence (only that
 * connection ends), fault aborts (HTTP and gRPC trailers-only), retries,
 * gRPC-aware local replies, the access log's "HTTP/2" and the
 * request_protocol metric label. Every process and thread started here is
 * stopped before the test returns. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "../../proxy/config_internal.h"
#include "../../proxy/http1_internal.h"
#include "../../proxy/tls_internal.h"
#include "../proxyharness.h"

/* ---- HTTP/1.1 backends ---- */

#define BIG (1u << 20) /* 1 MiB: larger than every HTTP/2 window on the way */

/* Answers "backend=NAME host=HOST path=PATH len=BODYLEN ac=ATTEMPT"; 503
 * while fail_left lasts; "/slow" waits 300 ms; "/bigresp" answers 1 MiB.
 * Reads Content-Length and chunked bodies. */
static void serve(ph_backend_t *b, int fd)
{
    size_t cap = 4 * BIG;
    char *buf = malloc(cap);
    size_t len = 0;
    px_h1_msg_t *m = malloc(sizeof(*m));
    for (;;) {
        int r = ph_h1_read_head(fd, buf, &len, cap, m);
        if (r < 0)
            break;
        size_t used, blen;
        if (ph_h1_read_body(fd, buf, &len, cap, m, (size_t)r, &used, &blen) < 0)
            break;
        char host[128] = "-", path[256], ac[16] = "-", cookie[128] = "-";
        ph_h1_header(m, "host", host, sizeof(host));
        snprintf(path, sizeof(path), "%.*s", (int)(m->target_len < 255 ? m->target_len : 255), m->target);
        ph_h1_header(m, "cookie", cookie, sizeof(cookie));
        ph_h1_header(m, "x-envoy-attempt-count", ac, sizeof(ac));
        if (strstr(path, "/slow"))
            usleep(300000);
        const char *status = ph_backend_next_status(b);
        char body[900];
        int bl = snprintf(body, sizeof(body), "backend=%s host=%s path=%s len=%zu ac=%s cookie=%s\n", b->name, host,
                          path, blen, ac, cookie);
        bool big = strstr(path, "/bigresp") != NULL;
        size_t total = big ? BIG : (size_t)bl;
        atomic_fetch_add(&b->reqs, 1);
        if (ph_h1_send_head(fd, status, "content-type: text/plain\r\n", total) < 0 ||
            ph_send_all(fd, body, (size_t)bl) < 0)
            break;
        if (big) {
            char *fill = malloc(BIG - (size_t)bl);
            memset(fill, 'z', BIG - (size_t)bl);
            int sr = ph_send_all(fd, fill, BIG - (size_t)bl);
            free(fill);
            if (sr < 0)
                break;
        }
        memmove(buf, buf + used, len - used);
        len -= used;
    }
    free(m);
    free(buf);
}

/* ---- the HTTP/2 backend (Node) ---- */

static const char node_backend[] =
    "const http2 = require('http2');\n"
    "const s = http2.createServer();\n"
    "const seen = [];\n"
    "const flaky = {};\n"
    "s.on('stream', (st, h) => {\n"
    "  st.on('error', () => {}); /* a refused or reset stream is no crash */\n"
    "  seen.push(h[':authority']);\n"
    "  let n = 0;\n"
    "  st.on('data', (c) => { n += c.length; });\n"
    "  st.on('end', () => {\n"
    "    const grpc = (h['content-type'] || '').startsWith('application/grpc');\n"
    "    const body = `h2backend path=${h[':path']} authority=${h[':authority']} len=${n} te=${h['te'] || '-'}\\n`;\n"
    "    if (h[':path'].startsWith('/refuse.') && !flaky[h[':path']]) {\n"
    "      /* refused once per path (never processed), then answered */\n"
    "      flaky[h[':path']] = 1;\n"
    "      st.close(http2.constants.NGHTTP2_REFUSED_STREAM);\n"
    "      return;\n"
    "    }\n"
    "    if (grpc && h[':path'].startsWith('/flaky.')) {\n"
    "      /* UNAVAILABLE (trailers-only) twice per path, then OK */\n"
    "      flaky[h[':path']] = (flaky[h[':path']] || 0) + 1;\n"
    "      if (flaky[h[':path']] <= 2) {\n"
    "        st.respond({':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14'}, {endStream: true});\n"
    "        return;\n"
    "      }\n"
    "      st.respond({':status': 200, 'content-type': 'application/grpc'}, {waitForTrailers: true});\n"
    "      st.on('wantTrailers', () => st.sendTrailers({'grpc-status': '0'}));\n"
    "      st.end(`attempt=${flaky[h[':path']]}\\n`);\n"
    "    } else if (grpc) {\n"
    "      st.respond({':status': 200, 'content-type': 'application/grpc'}, {waitForTrailers: true});\n"
    "      st.on('wantTrailers', () => st.sendTrailers({'grpc-status': '0', 'grpc-message': 'fine'}));\n"
    "      st.end(body);\n"
    "    } else if (h[':path'] === '/h2/seen') {\n"
    "      st.respond({':status': 200});\n"
    "      st.end(seen.join(','));\n"
    "    } else if (h[':path'].startsWith('/h2/bigresp')) {\n"
    "      st.respond({':status': 200, 'content-type': 'text/plain'});\n"
    "      st.end(body + 'y'.repeat(1048576 - body.length));\n"
    "    } else {\n"
    "      st.respond({':status': 200, 'content-type': 'text/plain'});\n"
    "      st.end(body);\n"
    "    }\n"
    "  });\n"
    "});\n"
    "s.listen(+process.argv[2], '127.0.0.1');\n";

/* ---- the processes ---- */

/* Starts the Node backend on port (its script in dir); its pid, or 0 (and
 * nothing left running) when it did not come up, e.g. the port was taken
 * meanwhile. */
static pid_t node_start(const char *dir, int port)
{
    char js[128], arg[16];
    snprintf(js, sizeof(js), "%s/backend.js", dir);
    ph_write_file(js, node_backend);
    snprintf(arg, sizeof(arg), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execlp("node", "node", js, arg, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250 && !ph_port_open(port); i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            break;
        usleep(20000);
    }
    if (ph_port_open(port) && waitpid(pid, NULL, WNOHANG) == 0)
        return pid;
    ph_reap(pid);
    return 0;
}

/* ---- the HTTP/2 client ---- */

typedef struct cstream {
    int32_t id;
    int status;
    char *body;
    size_t len, cap;
    char hdrs[2048];
    char trailers[512];
    bool done;
    uint32_t error; /* RST_STREAM code */
    /* request body */
    const char *req;
    size_t req_len, req_off;
} cstream_t;

typedef struct client {
    int fd;
    nghttp2_session *s;
    cstream_t *st;
    size_t n, done;
    bool goaway, closed, settings;
} client_t;

static cstream_t *cs_of(client_t *c, int32_t id)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->st[i].id == id)
            return &c->st[i];
    return NULL;
}

static ssize_t c_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    client_t *c = ud;
    if (ph_send_all(c->fd, (const char *)data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    cstream_t *cs = cs_of(ud, f->hd.stream_id);
    if (cs == NULL)
        return 0;
    if (nl == 7 && memcmp(name, ":status", 7) == 0) {
        cs->status = atoi((const char *)value);
        return 0;
    }
    char *dst = f->headers.cat == NGHTTP2_HCAT_HEADERS ? cs->trailers : cs->hdrs;
    size_t cap = f->headers.cat == NGHTTP2_HCAT_HEADERS ? sizeof(cs->trailers) : sizeof(cs->hdrs);
    size_t l = strlen(dst);
    snprintf(dst + l, cap - l, "%.*s: %.*s\n", (int)nl, name, (int)vl, value);
    return 0;
}

static int c_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)s;
    (void)flags;
    cstream_t *cs = cs_of(ud, id);
    if (cs == NULL)
        return 0;
    if (cs->len + len + 1 > cs->cap) {
        cs->cap = (cs->len + len + 1) * 2;
        cs->body = realloc(cs->body, cs->cap);
    }
    memcpy(cs->body + cs->len, data, len);
    cs->len += len;
    cs->body[cs->len] = '\0';
    return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t error, void *ud)
{
    (void)s;
    client_t *c = ud;
    cstream_t *cs = cs_of(c, id);
    if (cs && !cs->done) {
        cs->done = true;
        cs->error = error;
        c->done++;
    }
    return 0;
}

static int c_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    if (f->hd.type == NGHTTP2_GOAWAY)
        ((client_t *)ud)->goaway = true;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        ((client_t *)ud)->settings = true;
    return 0;
}

static ssize_t c_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    cstream_t *cs = src->ptr;
    size_t n = cs->req_len - cs->req_off;
    if (n > length)
        n = length;
    memcpy(buf, cs->req + cs->req_off, n);
    cs->req_off += n;
    if (cs->req_off == cs->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* An h2c (prior knowledge) client for up to n streams. */
static void client_open(client_t *c, int port, size_t n)
{
    memset(c, 0, sizeof(*c));
    c->fd = tcp_connect(port);
    c->st = calloc(n, sizeof(*c->st));
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_send_header_block_length(opt, 1 << 20); /* to send oversized heads */
    assert_int_equal(nghttp2_session_client_new2(&c->s, cb, c, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    assert_int_equal(nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1), 0);
    /* the server's SETTINGS first (its stream limit) */
    assert_int_equal(nghttp2_session_send(c->s), 0);
    for (int i = 0; i < 100 && !c->settings; i++) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        uint8_t buf[4096];
        ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
        assert_true(got > 0);
        assert_true(nghttp2_session_mem_recv(c->s, buf, (size_t)got) == got);
    }
    assert_true(c->settings);
}

static void client_close(client_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->st[i].body);
    free(c->st);
    nghttp2_session_del(c->s);
    close(c->fd);
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}

/* Submits a request (a POST with body when body is set); its stream. */
static cstream_t *client_req(client_t *c, const char *authority, const char *path, const char *ctype,
                             const char *body, size_t blen)
{
    cstream_t *cs = &c->st[c->n++];
    char cl[24];
    snprintf(cl, sizeof(cl), "%zu", blen);
    nghttp2_nv nv[6] = {NV(":method", body ? "POST" : "GET"), NV(":scheme", "http"), NV(":authority", authority),
                        NV(":path", path)};
    size_t nnv = 4;
    if (ctype)
        nv[nnv++] = (nghttp2_nv)NV("content-type", ctype);
    if (body)
        nv[nnv++] = (nghttp2_nv)NV("content-length", cl);
    cs->req = body;
    cs->req_len = blen;
    nghttp2_data_provider dp = {.source.ptr = cs, .read_callback = c_body};
    cs->id = nghttp2_submit_request(c->s, NULL, nv, nnv, body ? &dp : NULL, NULL);
    assert_true(cs->id > 0);
    return cs;
}

/* Runs the session until every stream is done, the connection closed or
 * timeout_ms passed. Returns true when every stream is done. */
static bool client_run(client_t *c, int timeout_ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (c->done < c->n && !c->closed) {
        if (nghttp2_session_send(c->s) != 0) {
            c->closed = true;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el > timeout_ms)
            break;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        uint8_t buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            c->closed = true;
            break;
        }
        if (nghttp2_session_mem_recv(c->s, buf, (size_t)n) < 0) {
            c->closed = true;
            break;
        }
    }
    nghttp2_session_send(c->s);
    return c->done == c->n;
}

/* One GET on a connection of its own. */
static void get1(int port, const char *authority, const char *path, const char *ctype, cstream_t *out)
{
    client_t c;
    client_open(&c, port, 1);
    client_req(&c, authority, path, ctype, NULL, 0);
    assert_true(client_run(&c, 5000));
    *out = c.st[0];
    c.st[0].body = NULL;
    client_close(&c);
}

/* ---- config ---- */

#define EP(port) "{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": " port "}}}}"
#define CLUSTER(name, extra, port)                                                                      \
    "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"" name "\", "   \
    "\"connect_timeout\": \"1s\", " extra " \"load_assignment\": {\"cluster_name\": \"" name "\", "    \
    "\"endpoints\": [{\"lb_endpoints\": [" EP(port) "]}]}}"
#define H2OPTS                                                                                          \
    "\"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": " \
    "{\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\", "      \
    "\"explicit_http_config\": {\"http2_protocol_options\": {}}}},"
#define H2IDLE                                                                                          \
    "\"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": " \
    "{\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\", "      \
    "\"common_http_protocol_options\": {\"idle_timeout\": \"0.3s\"}, "                                \
    "\"explicit_http_config\": {\"http2_protocol_options\": {}}}},"
#define FAULT(json)                                                                                     \
    "\"typed_per_filter_config\": {\"envoy.filters.http.fault\": {\"@type\": "                         \
    "\"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\", " json "}}"

static char *make_config(int port, int pa, int pb, int ph2)
{
    char *out = malloc(16384);
    snprintf(out, 16384,
             "{\"resources\": [\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\", \"name\": \"http\", "
             "\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": %d}}, "
             "\"filter_chains\": [{\"filters\": [{\"name\": \"hcm\", \"typed_config\": "
             "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager\", \"stat_prefix\": \"in\", "
             "\"http2_protocol_options\": {\"max_concurrent_streams\": 50}, "
             "\"http_filters\": [{\"name\": \"envoy.filters.http.rbac\", \"typed_config\": {\"@type\": "
             "\"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\", \"rules\": {\"action\": \"DENY\", "
             "\"policies\": {\"no-denied\": {\"permissions\": [{\"url_path\": {\"path\": {\"prefix\": \"/denied\"}}}], "
             "\"principals\": [{\"any\": true}]}}}}}], "
             "\"route_config\": {\"name\": \"main\", \"virtual_hosts\": [\n"
             " {\"name\": \"beta\", \"domains\": [\"beta.test\"], \"routes\": [{\"match\": {\"prefix\": \"/\"}, "
             "\"route\": {\"cluster\": \"b\"}}]},\n"
             " {\"name\": \"all\", \"domains\": [\"*\"], \"include_request_attempt_count\": true, \"routes\": [\n"
             "  {\"match\": {\"prefix\": \"/a\"}, \"route\": {\"cluster\": \"a\"}},\n"
             "  {\"match\": {\"prefix\": \"/b\"}, \"route\": {\"cluster\": \"b\"}},\n"
             "  {\"match\": {\"prefix\": \"/split\"}, \"route\": {\"weighted_clusters\": {\"clusters\": "
             "[{\"name\": \"a\", \"weight\": 50}, {\"name\": \"b\", \"weight\": 50}]}}},\n"
             "  {\"match\": {\"prefix\": \"/h2/\"}, \"route\": {\"cluster\": \"h2\"}},\n"
             "  {\"match\": {\"prefix\": \"/h2idle/\"}, \"route\": {\"cluster\": \"h2idle\"}},\n"
             "  {\"match\": {\"prefix\": \"/pkg.\"}, \"route\": {\"cluster\": \"h2\"}},\n"
             "  {\"match\": {\"prefix\": \"/flaky.\"}, \"route\": {\"cluster\": \"h2\", \"retry_policy\": "
             "{\"retry_on\": \"unavailable,cancelled\", \"num_retries\": 3}}},\n"
             "  {\"match\": {\"prefix\": \"/refuse.\"}, \"route\": {\"cluster\": \"h2\", \"retry_policy\": "
             "{\"retry_on\": \"refused-stream\", \"num_retries\": 1}}},\n"
             "  {\"match\": {\"prefix\": \"/fault\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"abort\": {\"http_status\": 418, \"percentage\": {\"numerator\": 100}}") "},\n"
             "  {\"match\": {\"prefix\": \"/gfault\"}, \"route\": {\"cluster\": \"h2\"}, "
             FAULT("\"abort\": {\"grpc_status\": 14, \"percentage\": {\"numerator\": 100}}") "},\n"
             "  {\"match\": {\"prefix\": \"/retry\"}, \"route\": {\"cluster\": \"a\", \"retry_policy\": "
             "{\"retry_on\": \"5xx\", \"num_retries\": 2, \"retry_back_off\": {\"base_interval\": \"0.01s\"}}}},\n"
             "  {\"match\": {\"prefix\": \"/mirror\"}, \"route\": {\"cluster\": \"a\", "
             "\"request_mirror_policies\": [{\"cluster\": \"h2\"}]}},\n"
             "  {\"match\": {\"prefix\": \"/timeout\"}, \"route\": {\"cluster\": \"a\", \"timeout\": \"0.1s\"}},\n"
             "  {\"match\": {\"prefix\": \"/nocluster\"}, \"route\": {\"cluster\": \"missing\"}}\n"
             " ]}]}}}]}]},\n"
             CLUSTER("a", "", "%d") ",\n" CLUSTER("b", "", "%d") ",\n" CLUSTER("h2", H2OPTS, "%d") ",\n" CLUSTER("h2idle", H2IDLE, "%d") "\n"
             "]}\n",
             port, pa, pb, ph2, ph2);
    return out;
}

typedef struct fixture {
    ph_backend_t *a, *b;
    ph_proxy_t p;
    pid_t node;
    int node_port;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->a = ph_backend_start("A", serve, NULL);
    f->b = ph_backend_start("B", serve, NULL);
    ph_proxy_init(&f->p, "meshproxy-h2");
    /* ports come free from the kernel, but other tests run on this machine
     * too: one taken meanwhile means another try, not a failure */
    for (int i = 0; i < 5 && f->node == 0; i++) {
        f->node_port = ph_free_port();
        f->node = node_start(f->p.dir, f->node_port);
    }
    ph_proxy_opts_t o = {.concurrency = 2, .drain_time = 1, .seed = "4242"};
    bool up = false;
    for (int i = 0; i < 5 && f->node != 0 && !up; i++) {
        f->p.port = ph_free_port();
        f->p.admin_port = ph_free_port();
        f->p.stats_port = f->p.ready_port = 0; /* fresh ones too */
        char *cfg = make_config(f->p.port, f->a->port, f->b->port, f->node_port);
        up = ph_proxy_start(&f->p, cfg, &o);
        free(cfg);
    }
    if (!up) {
        /* setup failed: cmocka runs no teardown, so clean up here */
        ph_reap(f->node);
        ph_remove_dir(f->p.dir);
        ph_backend_stop(f->a);
        ph_backend_stop(f->b);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ph_proxy_stop(&f->p);
    ph_reap(f->node);
    /* under the sanitizers the proxy reports to its stderr */
    char *err = ph_slurp(f->p.err);
    bool clean = strstr(err, "Sanitizer") == NULL && strstr(err, "runtime error") == NULL;
    if (!clean)
        fprintf(stderr, "%s\n", err);
    free(err);
    ph_remove_dir(f->p.dir);
    ph_backend_stop(f->a);
    ph_backend_stop(f->b);
    free(f);
    assert_true(clean);
    return 0;
}

/* ---- tests ---- */

static void test_many_streams_routing(void **state)
{
    fixture_t *f = *state;
    client_t c;
    enum { N = 120 }; /* more than the 50 concurrent streams the listener allows */
    client_open(&c, f->p.port, N + 1);
    char paths[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(paths[i], sizeof(paths[i]), "/%c/%d", i % 2 ? 'b' : 'a', i);
        client_req(&c, "svc.local", paths[i], NULL, NULL, 0);
    }
    client_req(&c, "beta.test", "/a/by-authority", NULL, NULL, 0);
    assert_true(client_run(&c, 10000));
    for (int i = 0; i < N; i++) {
        cstream_t *cs = &c.st[i];
        assert_int_equal(cs->status, 200);
        char want[64];
        snprintf(want, sizeof(want), "backend=%c host=svc.local path=%s ", i % 2 ? 'B' : 'A', paths[i]);
        assert_non_null(cs->body);
        assert_non_null(strstr(cs->body, want));
    }
    /* :authority picks the virtual host */
    assert_non_null(strstr(c.st[N].body, "backend=B host=beta.test path=/a/by-authority"));
    /* the proxy's SETTINGS: the HCM's max_concurrent_streams */
    assert_int_equal(nghttp2_session_get_remote_settings(c.s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 50);
    client_close(&c);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /a/0 HTTP/2\" 200"));
    free(log);
}

static void test_weighted_clusters(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 200);
    for (int i = 0; i < 200; i++)
        client_req(&c, "svc.local", "/split", NULL, NULL, 0);
    assert_true(client_run(&c, 10000));
    int na = 0, nb = 0;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(c.st[i].status, 200);
        na += strstr(c.st[i].body, "backend=A") != NULL;
        nb += strstr(c.st[i].body, "backend=B") != NULL;
    }
    assert_int_equal(na + nb, 200);
    assert_true(na > 50 && nb > 50);
    client_close(&c);
}

static void test_h2_to_h2_with_trailers(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 2);
    cstream_t *g = client_req(&c, "svc.local", "/pkg.Svc/Call", "application/grpc", "\0\0\0\0\0", 5);
    cstream_t *h = client_req(&c, "svc.local", "/h2/plain", NULL, NULL, 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(g->status, 200);
    assert_non_null(strstr(g->body, "h2backend path=/pkg.Svc/Call authority=svc.local len=5 te=trailers"));
    assert_non_null(strstr(g->trailers, "grpc-status: 0\n"));
    assert_non_null(strstr(g->trailers, "grpc-message: fine\n"));
    assert_int_equal(h->status, 200);
    assert_non_null(strstr(h->body, "h2backend path=/h2/plain"));
    client_close(&c);
    /* gRPC is reported as such */
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"POST /pkg.Svc/Call HTTP/2\" 200"));
    free(log);
}

/* HTTP/1.1 client, HTTP/2 upstream: Host becomes :authority, the response
 * comes back with a Content-Length or chunked. */
static void test_h1_to_h2_upstream(void **state)
{
    fixture_t *f = *state;
    int fd = tcp_connect(f->p.port);
    const char *req = "GET /h2/from-h1 HTTP/1.1\r\nHost: h1.client\r\n\r\n";
    assert_int_equal(ph_send_all(fd, req, strlen(req)), 0);
    char buf[8192];
    size_t len = 0;
    px_h1_msg_t *m = malloc(sizeof(*m));
    const char *err;
    int r;
    while ((r = px_h1_parse_response(buf, len, false, false, m, &err)) == -2)
        assert_int_equal(ph_read_more(fd, buf, &len, sizeof(buf) - 1), 0);
    assert_true(r > 0);
    assert_int_equal(m->status_code, 200);
    while (!memmem(buf, len, "te=-\n", 5))
        assert_int_equal(ph_read_more(fd, buf, &len, sizeof(buf) - 1), 0);
    buf[len] = '\0';
    assert_non_null(strstr(buf, "h2backend path=/h2/from-h1 authority=h1.client len=0"));
    free(m);
    close(fd);
}

static void test_bodies_beyond_flow_control(void **state)
{
    fixture_t *f = *state;
    char *big = malloc(3 * BIG);
    memset(big, 'q', 3 * BIG);
    client_t c;
    client_open(&c, f->p.port, 4);
    cstream_t *up1 = client_req(&c, "svc.local", "/a/upload", "application/octet-stream", big, 3 * BIG);
    cstream_t *up2 = client_req(&c, "svc.local", "/h2/upload", "application/octet-stream", big, 3 * BIG);
    cstream_t *dn1 = client_req(&c, "svc.local", "/a/bigresp", NULL, NULL, 0);
    cstream_t *dn2 = client_req(&c, "svc.local", "/h2/bigresp", NULL, NULL, 0);
    assert_true(client_run(&c, 20000));
    assert_int_equal(up1->status, 200);
    assert_non_null(strstr(up1->body, "len=3145728 "));
    assert_int_equal(up2->status, 200);
    assert_non_null(strstr(up2->body, "len=3145728 "));
    assert_int_equal(dn1->status, 200);
    assert_int_equal(dn1->len, BIG);
    assert_int_equal(dn2->status, 200);
    assert_int_equal(dn2->len, BIG);
    client_close(&c);
    free(big);
}

static void test_client_reset_spares_other_streams(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 3);
    cstream_t *s1 = client_req(&c, "svc.local", "/a/slow/1", NULL, NULL, 0);
    cstream_t *s2 = client_req(&c, "svc.local", "/a/slow/2", NULL, NULL, 0);
    cstream_t *s3 = client_req(&c, "svc.local", "/b/slow/3", NULL, NULL, 0);
    nghttp2_session_send(c.s);
    usleep(50000);
    assert_int_equal(nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, s2->id, NGHTTP2_CANCEL), 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(s1->status, 200);
    assert_non_null(strstr(s1->body, "path=/a/slow/1"));
    assert_int_equal(s3->status, 200);
    assert_int_equal(s2->error, NGHTTP2_CANCEL);
    assert_int_equal(s2->status, 0);
    /* the connection still serves new streams */
    client_t *cp = &c;
    cp->st = realloc(cp->st, 4 * sizeof(*cp->st));
    memset(&cp->st[3], 0, sizeof(cp->st[3]));
    cstream_t *s4 = client_req(cp, "svc.local", "/a/after", NULL, NULL, 0);
    assert_true(client_run(cp, 5000));
    assert_int_equal(s4->status, 200);
    client_close(&c);
    /* counted: four streams, the client's reset */
    assert_int_equal(ph_admin_stat(f->p.admin_port, "downstream_rq_http2_total"), 4);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "http2.rx_reset"), 1);
}

/* A malformed frame sequence ends that connection (GOAWAY, close) and
 * nothing else: a stream in flight on another connection completes. */
static void test_malformed_frames_close_only_that_connection(void **state)
{
    fixture_t *f = *state;
    client_t good;
    client_open(&good, f->p.port, 1);
    cstream_t *slow = client_req(&good, "svc.local", "/a/slow/good", NULL, NULL, 0);
    nghttp2_session_send(good.s);

    int fd = tcp_connect(f->p.port);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /* SETTINGS (empty), then DATA on stream 0: a connection error */
    static const unsigned char frames[] = {0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0,
                                           'x', 'y', 'z'};
    assert_int_equal(ph_send_all(fd, preface, 24), 0);
    assert_int_equal(ph_send_all(fd, (const char *)frames, sizeof(frames)), 0);
    char buf[4096];
    size_t len = 0;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (ph_read_more(fd, buf, &len, sizeof(buf)) == 0)
        ;
    /* the server's frames end with a GOAWAY (type 7), then EOF */
    bool goaway = false;
    for (size_t off = 0; off + 9 <= len;) {
        size_t fl = ((size_t)(unsigned char)buf[off] << 16) | ((size_t)(unsigned char)buf[off + 1] << 8) |
                    (unsigned char)buf[off + 2];
        if (buf[off + 3] == 7)
            goaway = true;
        off += 9 + fl;
    }
    assert_true(goaway);
    close(fd);

    /* garbage instead of a preface: closed too */
    fd = tcp_connect(f->p.port);
    assert_int_equal(ph_send_all(fd, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\ngarbage", 31), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    len = 0;
    while (ph_read_more(fd, buf, &len, sizeof(buf)) == 0)
        ;
    close(fd);

    assert_true(client_run(&good, 5000));
    assert_int_equal(slow->status, 200);
    assert_non_null(strstr(slow->body, "path=/a/slow/good"));
    client_close(&good);
    assert_true(ph_admin_stat(f->p.admin_port, "http2.goaway_sent") >= 1);
}

static void test_fault_abort_and_grpc_local_replies(void **state)
{
    fixture_t *f = *state;
    cstream_t r;
    get1(f->p.port, "svc.local", "/fault", NULL, &r);
    assert_int_equal(r.status, 418);
    assert_non_null(strstr(r.body, "fault filter abort"));
    free(r.body);
    /* gRPC abort: trailers-only (HEADERS with END_STREAM, grpc-status there) */
    get1(f->p.port, "svc.local", "/gfault/pkg.S/M", "application/grpc", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.hdrs, "grpc-status: 14\n"));
    assert_non_null(strstr(r.hdrs, "content-type: application/grpc\n"));
    assert_int_equal(r.len, 0);
    assert_string_equal(r.trailers, "");
    free(r.body);
    /* a local error reply to a gRPC request: gRPC status, not an HTTP one */
    get1(f->p.port, "svc.local", "/nocluster/pkg.S/M", "application/grpc", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.hdrs, "grpc-status: 14\n"));
    free(r.body);
    get1(f->p.port, "svc.local", "/nocluster/plain", NULL, &r);
    assert_int_equal(r.status, 503);
    free(r.body);
}

static void test_retries_on_h2(void **state)
{
    fixture_t *f = *state;
    atomic_store(&f->a->fail_left, 1);
    cstream_t r;
    get1(f->p.port, "svc.local", "/retry/x", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A"));
    assert_non_null(strstr(r.body, "ac=2 "));
    free(r.body);
}

/* RBAC denies: 403 for HTTP, PERMISSION_DENIED (7) trailers-only for gRPC;
 * a route timeout on a stream: 504 UT, the other streams unaffected. */
/* gRPC retries: UNAVAILABLE in a trailers-only answer is retried as
 * retry_on "unavailable" asks (meshd's default policy has it). */
static void test_grpc_unavailable_retried(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 2);
    cstream_t *g = client_req(&c, "svc.local", "/flaky.Svc/Call", "application/grpc", "\0\0\0\0\0", 5);
    assert_true(client_run(&c, 5000));
    assert_int_equal(g->status, 200);
    if (g->body == NULL || strstr(g->body, "attempt=3") == NULL)
    {
        char *log = ph_slurp(f->p.log);
        fail_msg("no third attempt: headers [%s] body [%s] trailers [%s] log [%s]", g->hdrs ? g->hdrs : "",
                 g->body ? g->body : "", g->trailers ? g->trailers : "", log ? log : "");
    }
    assert_non_null(strstr(g->trailers, "grpc-status: 0\n"));
    client_close(&c);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_retry"), 2);
}

/* A stream the server refused (REFUSED_STREAM) is retried as refused-stream
 * asks: it was never processed. */
static void test_refused_stream_retried(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 2);
    cstream_t *g = client_req(&c, "svc.local", "/refuse.one", NULL, NULL, 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(g->status, 200);
    assert_non_null(g->body);
    assert_non_null(strstr(g->body, "h2backend path=/refuse.one"));
    client_close(&c);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_retry"), 1);
    /* the refused stream and its retry went to the HTTP/2 upstream; its
     * REFUSED_STREAM reset is counted */
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_http2_total"), 2);
    assert_true(ph_admin_stat(f->p.admin_port, "http2.rx_reset") >= 1);
}

/* An HTTP/2 upstream connection without streams is closed after the
 * cluster's idle_timeout; while busy it stays. */
static void h2idle_requests(fixture_t *f, int n)
{
    for (int i = 0; i < n; i++) {
        ph_resp_t r;
        assert_int_equal(ph_request(f->p.port, "svc.local", "/h2idle/x", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
    }
}

static void test_h2_upstream_idle_timeout(void **state)
{
    fixture_t *f = *state;
    h2idle_requests(f, 16); /* every worker gets its connection */
    long cx0 = ph_admin_stat(f->p.admin_port, "upstream_cx_total");
    h2idle_requests(f, 8); /* at once: the same connections */
    long cx1 = ph_admin_stat(f->p.admin_port, "upstream_cx_total");
    assert_int_equal(cx1, cx0);
    usleep(700000); /* past 0.3 s without streams: closed */
    h2idle_requests(f, 8);
    assert_true(ph_admin_stat(f->p.admin_port, "upstream_cx_total") > cx1);
}

static void test_rbac_and_timeout_on_streams(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 4);
    cstream_t *deny = client_req(&c, "svc.local", "/denied/x", NULL, NULL, 0);
    cstream_t *gdeny = client_req(&c, "svc.local", "/denied/pkg.S/M", "application/grpc", "\0\0\0\0\0", 5);
    cstream_t *slow = client_req(&c, "svc.local", "/timeout/slow", NULL, NULL, 0);
    cstream_t *ok = client_req(&c, "svc.local", "/a/fine", NULL, NULL, 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(deny->status, 403);
    assert_non_null(strstr(deny->body, "RBAC: access denied"));
    assert_int_equal(gdeny->status, 200);
    assert_non_null(strstr(gdeny->hdrs, "grpc-status: 7\n"));
    assert_non_null(strstr(gdeny->hdrs, "grpc-message: RBAC: access denied\n"));
    assert_int_equal(slow->status, 504);
    assert_int_equal(ok->status, 200);
    client_close(&c);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /timeout/slow HTTP/2\" 504 UT"));
    free(log);
}

/* SIGTERM: the proxy sends GOAWAY, the stream in flight still completes. */
static void test_drain_sends_goaway(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 1);
    cstream_t *s1 = client_req(&c, "svc.local", "/a/slow/draining", NULL, NULL, 0);
    nghttp2_session_send(c.s);
    usleep(100000);
    kill(f->p.pid, SIGTERM);
    assert_true(client_run(&c, 5000));
    assert_int_equal(s1->status, 200);
    assert_non_null(strstr(s1->body, "path=/a/slow/draining"));
    /* the GOAWAY may come with the last frames: read until the close */
    for (int i = 0; i < 40 && !c.goaway && !c.closed; i++) {
        struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        uint8_t buf[4096];
        ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        nghttp2_session_mem_recv(c.s, buf, (size_t)n);
    }
    assert_true(c.goaway);
    client_close(&c);
}

/* Streams that break the rules are reset one by one: a header block over
 * the 60 KiB limit, a body shorter than its content-length; a stream
 * beside them is served. */
static void test_bad_streams_reset_alone(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 3);
    /* 40 fields of 2000 bytes */
    static char big[2000];
    memset(big, 'v', sizeof(big));
    nghttp2_nv nv[44] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "svc.local"),
                         NV(":path", "/a/huge")};
    char names[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "x-h%d", i);
        nv[4 + i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)big, strlen(names[i]), sizeof(big),
                                 NGHTTP2_NV_FLAG_NONE};
    }
    cstream_t *huge = &c.st[c.n++];
    huge->id = nghttp2_submit_request(c.s, NULL, nv, 44, NULL, NULL);
    assert_true(huge->id > 0);
    /* content-length 10, 5 bytes sent */
    cstream_t *shortb = &c.st[c.n++];
    nghttp2_nv nv2[5] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", "svc.local"),
                         NV(":path", "/a/short"), NV("content-length", "10")};
    shortb->req = "12345";
    shortb->req_len = 5;
    nghttp2_data_provider dp = {.source.ptr = shortb, .read_callback = c_body};
    shortb->id = nghttp2_submit_request(c.s, NULL, nv2, 5, &dp, NULL);
    assert_true(shortb->id > 0);
    cstream_t *ok = client_req(&c, "svc.local", "/b/beside", NULL, NULL, 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(huge->status, 0);
    assert_int_not_equal(huge->error, 0);
    assert_int_equal(shortb->status, 0);
    assert_int_not_equal(shortb->error, 0);
    assert_int_equal(ok->status, 200);
    assert_non_null(strstr(ok->body, "path=/b/beside"));
    assert_false(c.closed);
    client_close(&c);
}

/* Cookie crumbs (one field per cookie in HTTP/2) reach an HTTP/1.1
 * upstream as one Cookie field joined with "; ". */
static void test_cookie_crumbs_joined(void **state)
{
    fixture_t *f = *state;
    client_t c;
    client_open(&c, f->p.port, 1);
    nghttp2_nv nv[6] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "svc.local"),
                        NV(":path", "/a/cookies"), NV("cookie", "a=1"), NV("cookie", "b=2")};
    cstream_t *cs = &c.st[c.n++];
    cs->id = nghttp2_submit_request(c.s, NULL, nv, 6, NULL, NULL);
    assert_true(cs->id > 0);
    assert_true(client_run(&c, 5000));
    assert_int_equal(cs->status, 200);
    assert_non_null(strstr(cs->body, "cookie=a=1; b=2\n"));
    client_close(&c);
}

/* A mirror on an HTTP/2 cluster gets its "-shadow" copy as a stream. */
static void test_mirror_to_h2_cluster(void **state)
{
    fixture_t *f = *state;
    cstream_t r;
    get1(f->p.port, "shop.local", "/mirror/x", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A host=shop.local"));
    free(r.body);
    bool seen = false;
    for (int i = 0; i < 50 && !seen; i++) {
        get1(f->p.port, "svc.local", "/h2/seen", NULL, &r);
        seen = r.body && strstr(r.body, "shop.local-shadow") != NULL;
        free(r.body);
        if (!seen)
            usleep(20000);
    }
    assert_true(seen);
}

/* The config: HttpProtocolOptions makes a cluster HTTP/2 (explicitly or
 * as the downstream), its max_concurrent_streams is kept, and an upstream
 * TLS context offers "h2" only for an HTTP/2 cluster; an HTTP chain's TLS
 * may select "h2". */
static void test_config_http2_options(void **state)
{
    (void)state;
    static const char json[] =
        "{\"resources\": [\n"
        "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"explicit\", "
        "\"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": "
        "{\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\", "
        "\"explicit_http_config\": {\"http2_protocol_options\": {\"max_concurrent_streams\": 7}}}}, "
        "\"transport_socket\": {\"name\": \"tls\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\", \"sni\": \"x\", "
        "\"common_tls_context\": {\"alpn_protocols\": [\"istio\"]}}}},\n"
        "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"downstream\", "
        "\"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": "
        "{\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\", "
        "\"use_downstream_protocol_config\": {\"http2_protocol_options\": {}}}}},\n"
        "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"h1\", "
        "\"transport_socket\": {\"name\": \"tls\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\", \"sni\": \"y\", "
        "\"common_tls_context\": {\"alpn_protocols\": [\"h2\", \"http/1.1\"]}}}}\n"
        "]}";
    px_bundle_t b;
    memset(&b, 0, sizeof(b));
    char err[512];
    assert_int_equal(px_bundle_load_json(&b, json, strlen(json), err, sizeof(err)), 0);
    px_resources_t r;
    px_bundle_view(&b, &r);
    px_snapshot_t *snap = px_snapshot_build(&r, err, sizeof(err));
    if (snap == NULL)
        fail_msg("%s", err);
    const px_cluster_t *e = px_snapshot_cluster(snap, "explicit");
    const px_cluster_t *d = px_snapshot_cluster(snap, "downstream");
    const px_cluster_t *h = px_snapshot_cluster(snap, "h1");
    assert_true(e->http2 && !e->http2_downstream);
    assert_int_equal(e->h2_max_streams, 7);
    assert_true(!d->http2 && d->http2_downstream);
    assert_true(!h->http2 && !h->http2_downstream);
    /* ALPN: h2 first for the HTTP/2 cluster, dropped for the HTTP/1.1 one */
    assert_true(e->tls->h2);
    assert_int_equal(e->tls->nalpn, 2);
    assert_string_equal(e->tls->alpn[0], "h2");
    assert_string_equal(e->tls->alpn[1], "istio");
    assert_false(h->tls->h2);
    assert_int_equal(h->tls->nalpn, 1);
    assert_string_equal(h->tls->alpn[0], "http/1.1");
    px_snapshot_unref(snap);
    px_bundle_free(&b);
}

/* request_protocol: "grpc" for gRPC, "http" otherwise (Istio's values). */
static void test_request_protocol_metric(void **state)
{
    fixture_t *f = *state;
    cstream_t r;
    get1(f->p.port, "svc.local", "/pkg.Svc/Metric", "application/grpc", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    get1(f->p.port, "svc.local", "/a/metric", NULL, &r);
    free(r.body);
    int fd = tcp_connect(f->p.admin_port);
    const char *req = "GET /stats/prometheus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(ph_send_all(fd, req, strlen(req)), 0);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    while (ph_read_more(fd, buf, &len, cap - 1) == 0)
        ;
    buf[len] = '\0';
    close(fd);
    assert_non_null(strstr(buf, "request_protocol=\"grpc\""));
    assert_non_null(strstr(buf, "request_protocol=\"http\""));
    free(buf);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_streams_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weighted_clusters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2_to_h2_with_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h1_to_h2_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_beyond_flow_control, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_reset_spares_other_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames_close_only_that_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_abort_and_grpc_local_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_on_h2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_unavailable_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_stream_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2_upstream_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_protocol_metric, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rbac_and_timeout_on_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_sends_goaway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mirror_to_h2_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_streams_reset_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cookie_crumbs_joined, setup, teardown),
        cmocka_unit_test(test_config_http2_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
