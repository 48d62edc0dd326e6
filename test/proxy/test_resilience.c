/* End-to-end tests of meshproxy's resilience features with the real
 * build/meshproxy binary (MESHPROXY_SEED fixed), a static config file and
 * small HTTP/1.1 backends (threads on 127.0.0.1): fault injection (abort
 * with a percentage, gRPC abort, fixed delay), retries (retriable status,
 * connect failure, per-try timeout, body replay, x-envoy-attempt-count),
 * circuit breaking (max_connections / max_pending_requests -> 503 UO),
 * request mirroring (Host "-shadow", dead mirror harmless) and outlier
 * detection (ejection, return), with their response flags in the access log
 * and metrics and their /stats counters. Every process and thread started
 * here is stopped before the test returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../proxy/config_internal.h"
#include "../../proxy/http1_internal.h"
#include "../proxyharness.h"

/* ---- backends ---- */

/* What a backend saw, comma-separated, under b->mu: the
 * x-envoy-attempt-count and body length of each request ("1/0,2/5") and
 * the Host of each. */
typedef struct trail {
    char seen[512];
    char hosts[1024];
} trail_t;

static trail_t *trail(ph_backend_t *b)
{
    return b->data;
}

/* Answers each request 200 with "backend=NAME host=HOST" (keep-alive); 503
 * while fail_left lasts; a path with "slowtry" takes 600 ms. Reads Content-Length bodies. */
static void serve(ph_backend_t *b, int fd)
{
    enum { CAP = 65536 };
    char *buf = malloc(CAP);
    size_t len = 0;
    px_h1_msg_t *m = malloc(sizeof(*m));
    for (;;) {
        int r = ph_h1_read_head(fd, buf, &len, CAP, m);
        if (r < 0 || m->body == PX_H1_BODY_CHUNKED || m->body == PX_H1_BODY_EOF || m->content_length > 32768)
            break;
        size_t used, blen;
        if (ph_h1_read_body(fd, buf, &len, CAP, m, (size_t)r, &used, &blen) < 0)
            break;
        char host[128] = "-", body[256], ac[16] = "-";
        ph_h1_header(m, "host", host, sizeof(host));
        ph_h1_header(m, "x-envoy-attempt-count", ac, sizeof(ac));
        pthread_mutex_lock(&b->mu);
        trail_t *t = trail(b);
        size_t sl = strlen(t->seen);
        snprintf(t->seen + sl, sizeof(t->seen) - sl, "%s%s/%zu", sl ? "," : "", ac, blen);
        sl = strlen(t->hosts);
        snprintf(t->hosts + sl, sizeof(t->hosts) - sl, "%s%s", sl ? "," : "", host);
        pthread_mutex_unlock(&b->mu);
        if (memmem(m->target, m->target_len, "slowtry", 7))
            usleep(600000);
        const char *status = ph_backend_next_status(b);
        int bl = snprintf(body, sizeof(body), "backend=%s host=%s\n", b->name, host);
        atomic_fetch_add(&b->reqs, 1);
        if (ph_h1_reply(fd, status, "", body, (size_t)bl) < 0)
            break;
        memmove(buf, buf + used, len - used);
        len -= used;
    }
    free(m);
    free(buf);
}

static ph_backend_t *backend_start(const char *name)
{
    return ph_backend_start(name, serve, calloc(1, sizeof(trail_t)));
}

static void backend_stop(ph_backend_t *b)
{
    trail_t *t = trail(b);
    ph_backend_stop(b);
    free(t);
}

/* ---- the proxy process ---- */

/* Stops meshproxy and removes its directory. */
static void proxy_stop(ph_proxy_t *p)
{
    ph_proxy_stop(p);
    ph_remove_dir(p->dir);
}

/* ---- client ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One request to svc.local on a new connection (a POST when reqbody is set); 0 or -1. */
static int request_body(int port, const char *path, const char *extra, const char *reqbody, ph_resp_t *r)
{
    return ph_request(port, "svc.local", path, extra, reqbody, r);
}

static int request(int port, const char *path, const char *extra, ph_resp_t *r)
{
    return request_body(port, path, extra, NULL, r);
}

/* ---- config ---- */

#define FAULT(json)                                                                                     \
    "\"typed_per_filter_config\": {\"envoy.filters.http.fault\": {\"@type\": "                         \
    "\"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\", " json "}}"

#define RETRY(json) "\"retry_policy\": {" json "}"
#define EP(port) "{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": " port "}}}}"

static char *make_config(int port, int pa, int pb, int dead, int ps)
{
    char *out = malloc(16384);
    snprintf(out, 16384,
             "{\"resources\": [\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\", \"name\": \"http\", "
             "\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": %d}}, "
             "\"filter_chains\": [{\"filters\": [{\"name\": \"hcm\", \"typed_config\": "
             "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager\", \"stat_prefix\": \"in\", \"rds\": {\"route_config_name\": \"main\"}}}]}]},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"a\", "
             "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"a\", \"endpoints\": "
             "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": %d}}}}]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"mixed\", "
             "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"mixed\", \"endpoints\": "
             "[{\"lb_endpoints\": [" EP("%d") ", " EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"cb\", "
             "\"connect_timeout\": \"1s\", \"circuit_breakers\": {\"thresholds\": [{\"max_connections\": 1, "
             "\"max_pending_requests\": 1, \"max_requests\": 100, \"max_retries\": 3}]}, "
             "\"load_assignment\": {\"cluster_name\": \"cb\", \"endpoints\": [{\"lb_endpoints\": [" EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"od\", "
             "\"connect_timeout\": \"1s\", \"outlier_detection\": {\"consecutive_5xx\": 3, \"interval\": \"0.1s\", "
             "\"base_ejection_time\": \"1s\", \"max_ejection_percent\": 100}, "
             "\"load_assignment\": {\"cluster_name\": \"od\", \"endpoints\": [{\"lb_endpoints\": ["
             EP("%d") ", " EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"rb\", "
             "\"connect_timeout\": \"1s\", \"circuit_breakers\": {\"thresholds\": [{\"retry_budget\": "
             "{\"budget_percent\": {\"value\": 0}, \"min_retry_concurrency\": 1}}]}, "
             "\"load_assignment\": {\"cluster_name\": \"rb\", \"endpoints\": [{\"lb_endpoints\": [" EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"shadow\", "
             "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"shadow\", \"endpoints\": "
             "[{\"lb_endpoints\": [" EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\", \"name\": \"deadmirror\", "
             "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"deadmirror\", \"endpoints\": "
             "[{\"lb_endpoints\": [" EP("%d") "]}]}},\n"
             "{\"@type\": \"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\", \"name\": \"main\", "
             "\"virtual_hosts\": [{\"name\": \"all\", \"domains\": [\"*\"], "
             "\"include_request_attempt_count\": true, \"routes\": [\n"
             " {\"match\": {\"prefix\": \"/mirrordead\"}, \"route\": {\"cluster\": \"a\", "
             "\"request_mirror_policies\": [{\"cluster\": \"deadmirror\"}]}},\n"
             " {\"match\": {\"prefix\": \"/mirror\"}, \"route\": {\"cluster\": \"a\", "
             "\"request_mirror_policies\": [{\"cluster\": \"shadow\", \"runtime_fraction\": "
             "{\"default_value\": {\"numerator\": 100}}}]}},\n"
             " {\"match\": {\"prefix\": \"/od\"}, \"route\": {\"cluster\": \"od\"}},\n"
             " {\"match\": {\"prefix\": \"/rbudget\"}, \"route\": {\"cluster\": \"rb\", \"timeout\": \"10s\", "
             RETRY("\"retry_on\": \"5xx\", \"num_retries\": 1") "}},\n"
             " {\"match\": {\"prefix\": \"/cb\"}, \"route\": {\"cluster\": \"cb\", \"timeout\": \"10s\"}},\n"
             " {\"match\": {\"prefix\": \"/retry\"}, \"route\": {\"cluster\": \"a\", \"timeout\": \"5s\", "
             RETRY("\"retry_on\": \"connect-failure,refused-stream,retriable-status-codes\", "
                   "\"num_retries\": 2, \"retriable_status_codes\": [503]") "}},\n"
             " {\"match\": {\"prefix\": \"/noretry\"}, \"route\": {\"cluster\": \"a\", "
             RETRY("\"retry_on\": \"retriable-4xx\", \"num_retries\": 2") "}},\n"
             " {\"match\": {\"prefix\": \"/cf\"}, \"route\": {\"cluster\": \"mixed\", "
             RETRY("\"retry_on\": \"connect-failure\", \"num_retries\": 2") "}},\n"
             " {\"match\": {\"prefix\": \"/slowtry\"}, \"route\": {\"cluster\": \"a\", \"timeout\": \"5s\", "
             RETRY("\"retry_on\": \"5xx\", \"num_retries\": 1, \"per_try_timeout\": \"0.2s\"") "}},\n"
             " {\"match\": {\"prefix\": \"/budget\"}, \"route\": {\"cluster\": \"a\", \"timeout\": \"0.3s\", "
             RETRY("\"retry_on\": \"5xx\", \"num_retries\": 5, \"per_try_timeout\": \"0.2s\"") "}},\n"
             " {\"match\": {\"prefix\": \"/abort\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"abort\": {\"http_status\": 503, \"percentage\": {\"numerator\": 50}}") "},\n"
             " {\"match\": {\"prefix\": \"/tiny\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"abort\": {\"http_status\": 500, \"percentage\": {\"numerator\": 1000, "
                   "\"denominator\": \"MILLION\"}}") "},\n"
             " {\"match\": {\"prefix\": \"/grpc\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"abort\": {\"grpc_status\": 14, \"percentage\": {\"numerator\": 100}}") "},\n"
             " {\"match\": {\"prefix\": \"/delay\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"delay\": {\"fixed_delay\": \"0.3s\", \"percentage\": {\"numerator\": 100}}") "},\n"
             " {\"match\": {\"prefix\": \"/both\"}, \"route\": {\"cluster\": \"a\"}, "
             FAULT("\"delay\": {\"fixed_delay\": \"0.1s\", \"percentage\": {\"numerator\": 100}}, "
                   "\"abort\": {\"http_status\": 429, \"percentage\": {\"numerator\": 100}}") "},\n"
             " {\"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"a\"}}\n"
             "]}]}\n"
             "]}\n",
             port, pa, dead, pb, pa, pa, pb, pa, ps, dead);
    return out;
}

typedef struct fixture {
    ph_backend_t *a, *b, *s;
    ph_proxy_t p;
} fixture_t;

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f == NULL)
        return 0;
    proxy_stop(&f->p);
    backend_stop(f->a);
    backend_stop(f->b);
    backend_stop(f->s);
    free(f);
    return 0;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->a = backend_start("A");
    f->b = backend_start("B");
    f->s = backend_start("S");
    f->p.port = ph_free_port();
    f->p.admin_port = ph_free_port();
    char *cfg = make_config(f->p.port, f->a->port, f->b->port, ph_free_port(), f->s->port);
    ph_proxy_init(&f->p, "meshproxy-res");
    ph_proxy_opts_t o = {.concurrency = 1, .drain_time = 1, .seed = "12345"};
    bool up = ph_proxy_start(&f->p, cfg, &o);
    free(cfg);
    *state = f;
    if (!up) {
        char *err = ph_slurp(f->p.err);
        print_error("meshproxy did not start: %s\n", err);
        free(err);
        teardown(state);
        *state = NULL;
        return -1;
    }
    return 0;
}


/* Whether the admin /stats/prometheus output has an istio_requests_total
 * series with this response_flags value. */
static bool prom_has_flag(int admin_port, const char *flag)
{
    ph_resp_t *r = malloc(sizeof(*r));
    char want[64];
    snprintf(want, sizeof(want), "response_flags=\"%s\"", flag);
    bool ok = request(admin_port, "/stats/prometheus", NULL, r) == 0 && r->status == 200 &&
              strstr(r->body, "istio_requests_total{") && strstr(r->body, want);
    free(r);
    return ok;
}

/* ---- tests ---- */

static void test_fraction_ppm(void **state)
{
    (void)state;
    assert_int_equal(px_fraction_ppm(50, 0), 500000);    /* 50/100 */
    assert_int_equal(px_fraction_ppm(10, 1), 1000);      /* 10/10000 = 0.1% */
    assert_int_equal(px_fraction_ppm(1000, 2), 1000);    /* 1000/1e6 = 0.1% */
    assert_int_equal(px_fraction_ppm(250, 0), 1000000);  /* capped at 100% */
}

static void test_retry_on_parse(void **state)
{
    (void)state;
    /* meshd's default policy, gRPC names included; unknown names are ignored */
    uint32_t on = px_retry_on_parse("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,nope");
    assert_int_equal(on, PX_RETRY_CONNECT | PX_RETRY_REFUSED | PX_RETRY_STATUS | PX_RETRY_GRPC_UNAVAILABLE |
                             PX_RETRY_GRPC_CANCELLED);
    px_retry_t g = {.set = true, .on = on};
    assert_true(px_retry_grpc(&g, 14));  /* UNAVAILABLE */
    assert_true(px_retry_grpc(&g, 1));   /* CANCELLED */
    assert_false(px_retry_grpc(&g, 13)); /* INTERNAL: not asked for */
    assert_false(px_retry_grpc(&g, -1)); /* no grpc-status */
    g.on = px_retry_on_parse("deadline-exceeded,internal,resource-exhausted");
    assert_true(px_retry_grpc(&g, 4) && px_retry_grpc(&g, 13) && px_retry_grpc(&g, 8));
    assert_int_equal(px_retry_on_parse(" 5xx , gateway-error,reset,retriable-4xx"),
                     PX_RETRY_5XX | PX_RETRY_GATEWAY | PX_RETRY_RESET | PX_RETRY_4XX);
    uint32_t codes[] = {503, 429};
    px_retry_t r = {.set = true, .on = PX_RETRY_STATUS, .codes = codes, .ncodes = 2};
    assert_true(px_retry_status(&r, 429));
    assert_false(px_retry_status(&r, 500));
    r.on = PX_RETRY_GATEWAY;
    assert_true(px_retry_status(&r, 504));
    assert_false(px_retry_status(&r, 500));
    r.on = PX_RETRY_5XX | PX_RETRY_4XX;
    assert_true(px_retry_status(&r, 500));
    assert_true(px_retry_status(&r, 409));
    assert_false(px_retry_status(&r, 404));
}

static void test_fault_abort_half(void **state)
{
    fixture_t *f = *state;
    int n503 = 0, n200 = 0, other = 0;
    for (int i = 0; i < 400; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/abort", NULL, &r), 0);
        if (r.status == 503) {
            n503++;
            assert_non_null(strstr(r.body, "fault filter abort"));
        } else if (r.status == 200) {
            n200++;
            assert_non_null(strstr(r.body, "backend=A"));
        } else {
            other++;
        }
    }
    /* 50% of 400: mean 200, sd 10; bounds at about 5 sd */
    assert_int_equal(other, 0);
    assert_in_range(n503, 150, 250);
    assert_int_equal(n200, 400 - n503);
    assert_int_equal(atomic_load(&f->a->reqs), n200);
    /* 0.1% of 400 requests: almost always none, never many */
    int tiny = 0;
    for (int i = 0; i < 400; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/tiny", NULL, &r), 0);
        if (r.status == 500)
            tiny++;
        else
            assert_int_equal(r.status, 200);
    }
    assert_in_range(tiny, 0, 5);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "http.fault.aborts_injected"), n503 + tiny);
    usleep(200000);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /abort HTTP/1.1\" 503 FI "));
    assert_non_null(strstr(log, "\"GET /abort HTTP/1.1\" 200 - "));
    free(log);
    assert_true(prom_has_flag(f->p.admin_port, "FI"));
}

static void test_fault_grpc_abort(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    assert_int_equal(request(f->p.port, "/grpc/pkg.Svc/Call", "content-type: application/grpc\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "grpc-status: 14\r\n"));
    assert_non_null(strstr(r.head, "content-type: application/grpc\r\n"));
    assert_int_equal(atomic_load(&f->a->reqs), 0);
}

static void test_fault_delay(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 4; i++) {
        ph_resp_t r;
        uint64_t t0 = now_ms();
        assert_int_equal(request(f->p.port, "/delay", NULL, &r), 0);
        uint64_t took = now_ms() - t0;
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "backend=A"));
        assert_true(took >= 295);
        assert_true(took < 3000);
    }
    /* a delayed request does not hold up the others on the same worker */
    ph_resp_t r;
    uint64_t t0 = now_ms();
    assert_int_equal(request(f->p.port, "/plain", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(now_ms() - t0 < 250);
    /* delay then abort */
    t0 = now_ms();
    assert_int_equal(request(f->p.port, "/both", NULL, &r), 0);
    assert_int_equal(r.status, 429);
    assert_true(now_ms() - t0 >= 95);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "http.fault.delays_injected"), 5);
    usleep(200000);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /delay HTTP/1.1\" 200 DI "));
    assert_non_null(strstr(log, "\"GET /both HTTP/1.1\" 429 DI,FI "));
    free(log);
    assert_true(prom_has_flag(f->p.admin_port, "DI"));
    assert_true(prom_has_flag(f->p.admin_port, "DI,FI"));
}

/* While one request is held by a delay, another on its own connection is
 * answered at once (the delay is a timer, not a blocked worker). */
static void *delayed_main(void *arg)
{
    int port = *(int *)arg;
    ph_resp_t r;
    return (void *)(intptr_t)(request(port, "/delay", NULL, &r) == 0 ? r.status : -1);
}

static void test_fault_delay_does_not_block_worker(void **state)
{
    fixture_t *f = *state;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delayed_main, &f->p.port), 0);
    usleep(50000);
    ph_resp_t r;
    uint64_t t0 = now_ms();
    assert_int_equal(request(f->p.port, "/plain", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(now_ms() - t0 < 200);
    void *rv;
    pthread_join(th, &rv);
    assert_int_equal((int)(intptr_t)rv, 200);
}

static void test_retry_until_success(void **state)
{
    fixture_t *f = *state;
    atomic_store(&f->a->fail_left, 2);
    ph_resp_t r;
    assert_int_equal(request(f->p.port, "/retry", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A"));
    assert_int_equal(atomic_load(&f->a->reqs), 3);
    assert_string_equal(trail(f->a)->seen, "1/0,2/0,3/0");
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_retry"), 2);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_retry_success"), 1);
    /* a buffered body is sent again with each attempt */
    atomic_store(&f->a->fail_left, 1);
    trail(f->a)->seen[0] = '\0';
    assert_int_equal(request_body(f->p.port, "/retry", NULL, "hello", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(trail(f->a)->seen, "1/5,2/5");
    /* out of retries: the last 503 is relayed with flag URX */
    atomic_store(&f->a->fail_left, 10);
    trail(f->a)->seen[0] = '\0';
    assert_int_equal(request(f->p.port, "/retry/x", NULL, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(trail(f->a)->seen, "1/0,2/0,3/0");
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_retry_limit_exceeded"), 1);
    /* a status the policy does not cover is not retried */
    trail(f->a)->seen[0] = '\0';
    assert_int_equal(request(f->p.port, "/noretry", NULL, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(trail(f->a)->seen, "1/0");
    atomic_store(&f->a->fail_left, 0);
    usleep(200000);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /retry/x HTTP/1.1\" 503 URX "));
    free(log);
    assert_true(prom_has_flag(f->p.admin_port, "URX"));
}

static void test_retry_connect_failure_to_live_endpoint(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/cf", NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "backend=B"));
    }
    assert_int_equal(atomic_load(&f->b->reqs), 10);
    /* half of the first attempts went to the dead endpoint */
    long retries = ph_admin_stat(f->p.admin_port, "upstream_rq_retry");
    assert_in_range(retries, 3, 10);
}

static void test_retry_per_try_timeout(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    uint64_t t0 = now_ms();
    assert_int_equal(request(f->p.port, "/slowtry", NULL, &r), 0);
    uint64_t took = now_ms() - t0;
    /* two attempts of 200 ms each, then 504 UT; well under the route's 5 s */
    assert_int_equal(r.status, 504);
    assert_true(took >= 390);
    assert_true(took < 2500);
    usleep(700000);
    assert_int_equal(atomic_load(&f->a->reqs), 2);
    /* the route timeout (300 ms) covers all the attempts */
    t0 = now_ms();
    assert_int_equal(request(f->p.port, "/budget/slowtry", NULL, &r), 0);
    took = now_ms() - t0;
    assert_int_equal(r.status, 504);
    assert_true(took >= 290);
    assert_true(took < 1500);
    usleep(700000);
    assert_in_range(atomic_load(&f->a->reqs), 3, 4);
}

/* One of several clients sending the same request at once. */
typedef struct cb_client {
    int port;
    const char *path;
    ph_resp_t r;
    int rc;
} cb_client_t;

static void *cb_client_main(void *arg)
{
    cb_client_t *c = arg;
    c->rc = request(c->port, c->path, NULL, &c->r);
    return NULL;
}

enum { NCLIENTS = 6 };

/* Sends GET path from NCLIENTS threads at once and waits for every answer;
 * the clients, with rc and response each, in a static array. */
static cb_client_t *concurrent_requests(int port, const char *path)
{
    static cb_client_t cl[NCLIENTS]; /* each holds a 1 MiB response: not on the stack */
    memset(cl, 0, sizeof(cl));
    pthread_t th[NCLIENTS];
    int started = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i].port = port;
        cl[i].path = path;
        if (pthread_create(&th[i], NULL, cb_client_main, &cl[i]) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(started, NCLIENTS);
    return cl;
}

static void test_circuit_breaker_overflow(void **state)
{
    fixture_t *f = *state;
    enum { N = NCLIENTS };
    cb_client_t *cl = concurrent_requests(f->p.port, "/cb/slowtry");
    int ok = 0, uo = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(cl[i].rc, 0);
        if (cl[i].r.status == 200) {
            ok++;
        } else {
            assert_int_equal(cl[i].r.status, 503);
            assert_non_null(strstr(cl[i].r.head, "x-envoy-overloaded: true\r\n"));
            uo++;
        }
    }
    /* one request on the only connection, one pending; the rest overflow
     * (unless a client came late enough to find room) */
    assert_true(ok >= 2);
    assert_true(uo >= 1);
    assert_int_equal(ok + uo, N);
    assert_int_equal(atomic_load(&f->a->reqs), ok);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "upstream_rq_pending_overflow"), uo);
    assert_true(ph_admin_stat(f->p.admin_port, "upstream_cx_overflow") >= 1);
    /* the breaker closes again: a later request goes through */
    ph_resp_t r;
    assert_int_equal(request(f->p.port, "/cb/x", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    usleep(200000);
    char *log = ph_slurp(f->p.log);
    assert_non_null(strstr(log, "\"GET /cb/slowtry HTTP/1.1\" 503 UO "));
    free(log);
    assert_true(prom_has_flag(f->p.admin_port, "UO"));
}

static void test_mirror(void **state)
{
    fixture_t *f = *state;
    ph_resp_t r;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(request(f->p.port, "/mirror", NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "backend=A host=svc.local\n"));
    }
    assert_int_equal(request_body(f->p.port, "/mirror/post", NULL, "hello", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "backend=A"));
    for (int i = 0; i < 100 && atomic_load(&f->s->reqs) < 6; i++)
        usleep(20000);
    assert_int_equal(atomic_load(&f->s->reqs), 6);
    assert_int_equal(atomic_load(&f->a->reqs), 6);
    pthread_mutex_lock(&f->s->mu);
    assert_string_equal(trail(f->s)->hosts, "svc.local-shadow,svc.local-shadow,svc.local-shadow,svc.local-shadow,"
                                     "svc.local-shadow,svc.local-shadow");
    assert_non_null(strstr(trail(f->s)->seen, "-/5"));
    pthread_mutex_unlock(&f->s->mu);
    /* a port stays after the suffix */
    assert_int_equal(ph_request(f->p.port, "svc.local:8080", "/mirror/port", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "host=svc.local:8080\n"));
    for (int i = 0; i < 100 && atomic_load(&f->s->reqs) < 7; i++)
        usleep(20000);
    pthread_mutex_lock(&f->s->mu);
    assert_non_null(strstr(trail(f->s)->hosts, ",svc.local-shadow:8080"));
    pthread_mutex_unlock(&f->s->mu);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "http.shadow.requests_sent"), 7);
    /* a dead mirror never fails nor slows the request */
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = now_ms();
        assert_int_equal(request(f->p.port, "/mirrordead", NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "backend=A"));
        assert_true(now_ms() - t0 < 500);
    }
    long failed = -1;
    for (int i = 0; i < 100 && failed < 3; i++) {
        failed = ph_admin_stat(f->p.admin_port, "http.shadow.requests_failed");
        usleep(20000);
    }
    assert_int_equal(failed, 3);
}

/* A retry budget of 0 % with at least one retry in flight: six requests
 * that fail together get one retry between them; the rest are answered with
 * their first 503, counted as retry overflows. */
static void test_retry_budget(void **state)
{
    fixture_t *f = *state;
    enum { N = NCLIENTS };
    atomic_store(&f->a->fail_left, 1000000);
    cb_client_t *cl = concurrent_requests(f->p.port, "/rbudget/slowtry");
    for (int i = 0; i < N; i++) {
        assert_int_equal(cl[i].rc, 0);
        assert_int_equal(cl[i].r.status, 503);
    }
    atomic_store(&f->a->fail_left, 0);
    long retried = ph_admin_stat(f->p.admin_port, "upstream_rq_retry");
    long over = ph_admin_stat(f->p.admin_port, "upstream_rq_retry_overflow");
    assert_int_equal(retried + over, N);
    assert_in_range(retried, 1, 2); /* a client late enough may find the budget free */
    assert_int_equal(atomic_load(&f->a->reqs), N + retried);
}

/* A stops failing; after its ejection time (1 s) ten requests to /od are all answered 200. */
static void od_recover(fixture_t *f)
{
    atomic_store(&f->a->fail_left, 0);
    usleep(1300000);
    for (int i = 0; i < 10; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/od", NULL, &r), 0);
        assert_int_equal(r.status, 200);
    }
}

static void test_outlier_ejection_and_return(void **state)
{
    fixture_t *f = *state;
    atomic_store(&f->a->fail_left, 1000000);
    int n503 = 0;
    for (int i = 0; i < 20; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/od", NULL, &r), 0);
        if (r.status == 503)
            n503++;
        else
            assert_non_null(strstr(r.body, "backend=B"));
    }
    /* A failed 3 times in a row, then was ejected: the rest went to B */
    assert_int_equal(atomic_load(&f->a->reqs), 3);
    assert_int_equal(n503, 3);
    assert_int_equal(atomic_load(&f->b->reqs), 17);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "outlier_detection.ejections_enforced_total"), 1);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "outlier_detection.ejections_enforced_consecutive_5xx"), 1);
    /* after the ejection time (1 s) A is back */
    od_recover(f);
    assert_in_range(atomic_load(&f->a->reqs), 6, 10);
    /* failing again after being back for several intervals (0.1 s each):
     * the multiplier has worn off, so the second ejection is 1 s again, not 2 */
    int before = atomic_load(&f->a->reqs);
    atomic_store(&f->a->fail_left, 1000000);
    for (int i = 0; i < 8; i++) {
        ph_resp_t r;
        assert_int_equal(request(f->p.port, "/od", NULL, &r), 0);
    }
    assert_int_equal(atomic_load(&f->a->reqs), before + 3);
    assert_int_equal(ph_admin_stat(f->p.admin_port, "outlier_detection.ejections_enforced_total"), 2);
    od_recover(f);
    assert_true(atomic_load(&f->a->reqs) > before + 3);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fraction_ppm),
        cmocka_unit_test(test_retry_on_parse),
        cmocka_unit_test_setup_teardown(test_fault_abort_half, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_grpc_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_delay_does_not_block_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_until_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_connect_failure_to_live_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_per_try_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_circuit_breaker_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mirror, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outlier_ejection_and_return, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
