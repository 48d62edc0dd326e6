/* Tests of the webhooks' HTTPS server on 127.0.0.1: real AdmissionReview
 * bodies through libcurl with certificate verification, keep-alive,
 * refusals of malformed, oversized and hostile requests, concurrent clients,
 * and a server that keeps serving through all of it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "../../webhook/webhook.h"
#include "../testutil.h"

static char tmpdir[64];
static char cert_path[128], key_path[128];
static char *cert_pem, *key_pem;
static webhook_t *wh;
static webhook_server_t *srv;
static int port;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int ns_lookup(void *ud, const char *ns, webhook_ns_info_t *out)
{
    (void)ud;
    memset(out, 0, sizeof(*out));
    if (strcmp(ns, "prod") != 0)
        return 0; /* known, unlabelled */
    out->has_injection = true;
    strcpy(out->injection, "enabled");
    return 0;
}

static int setup(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mesh-webhook-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s -out %s "
             "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
             key_path, cert_path);
    if (system(cmd) != 0)
        return -1;
    cert_pem = slurp(cert_path);
    key_pem = slurp(key_path);
    if (cert_pem == NULL || key_pem == NULL)
        return -1;
    webhook_opts_t o = {.mesh_ns = "istio-system", .ns_lookup = ns_lookup};
    wh = webhook_new(&o);
    char err[256];
    webhook_server_opts_t so = {.addr = "127.0.0.1", .port = 0, .cert_pem = cert_pem, .key_pem = key_pem, .threads = 2};
    srv = webhook_server_start(wh, &so, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    port = webhook_server_port(srv);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    webhook_server_stop(srv);
    webhook_free(wh);
    free(cert_pem);
    free(key_pem);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return -1;
    curl_global_cleanup();
    return 0;
}

struct buf {
    char *p;
    size_t n;
};

static size_t collect(char *d, size_t sz, size_t nm, void *ud)
{
    struct buf *b = ud;
    b->p = realloc(b->p, b->n + sz * nm + 1);
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

static CURL *client(void)
{
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_CAINFO, cert_path);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    return h;
}

/* One request; returns the HTTP status, the body in b (caller frees b->p). */
static long request(CURL *h, const char *method, const char *path, const char *body, size_t len, struct buf *b)
{
    char url[128];
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
    memset(b, 0, sizeof(*b));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static char *pod_review(const char *uid, const char *ns)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"%s\","
                 "\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"resource\":{\"group\":\"\","
                 "\"version\":\"v1\",\"resource\":\"pods\"},\"namespace\":\"%s\",\"operation\":\"CREATE\","
                 "\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"generateName\":\"web-\","
                 "\"namespace\":\"%s\",\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"name\":\"web\","
                 "\"image\":\"nginx\",\"ports\":[{\"containerPort\":80}]}]}}}}",
                 uid, ns, ns) < 0)
        fail();
    return s;
}

static json_object *response_of(const struct buf *b)
{
    json_object *o = json_tokener_parse(b->p);
    assert_non_null(o);
    json_object *r = NULL;
    assert_true(json_object_object_get_ex(o, "response", &r));
    return o;
}

static void test_inject_keepalive(void **state)
{
    (void)state;
    CURL *h = client();
    struct buf b;
    for (int i = 0; i < 3; i++) {
        char uid[32];
        snprintf(uid, sizeof(uid), "uid-%d", i);
        char *body = pod_review(uid, "prod");
        assert_int_equal(request(h, "POST", "/inject", body, strlen(body), &b), 200);
        json_object *o = response_of(&b);
        json_object *r = json_object_object_get(o, "response");
        assert_string_equal(json_object_get_string(json_object_object_get(r, "uid")), uid);
        assert_true(json_object_get_boolean(json_object_object_get(r, "allowed")));
        assert_string_equal(json_object_get_string(json_object_object_get(r, "patchType")), "JSONPatch");
        assert_true(json_object_get_string_len(json_object_object_get(r, "patch")) > 1000);
        json_object_put(o);
        free(b.p);
        free(body);
        long conns = -1;
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
        assert_int_equal(conns, i == 0 ? 1 : 0); /* the connection is reused */
    }
    /* Not injected namespace: allowed, no patch. */
    char *body = pod_review("u-plain", "plain");
    assert_int_equal(request(h, "POST", "/inject", body, strlen(body), &b), 200);
    assert_null(strstr(b.p, "\"patch\""));
    assert_non_null(strstr(b.p, "\"allowed\":true"));
    free(b.p);
    free(body);
    curl_easy_cleanup(h);
}

static void test_refusals(void **state)
{
    (void)state;
    CURL *h = client();
    struct buf b;
    assert_int_equal(request(h, "POST", "/inject", "garbage", 7, &b), 400);
    assert_non_null(strstr(b.p, "invalid AdmissionReview"));
    free(b.p);
    assert_int_equal(request(h, "POST", "/validate", "{\"kind\":\"AdmissionReview\"}", 26, &b), 400);
    free(b.p);
    assert_int_equal(request(h, "GET", "/inject", NULL, 0, &b), 405);
    free(b.p);
    assert_int_equal(request(h, "POST", "/elsewhere", "{}", 2, &b), 404);
    free(b.p);
    assert_int_equal(request(h, "GET", "/ready", NULL, 0, &b), 200);
    assert_string_equal(b.p, "ok\n");
    free(b.p);
    /* Oversized: refused without reading it all into memory. */
    size_t big = 3u << 20;
    char *huge = malloc(big);
    memset(huge, '{', big);
    assert_int_equal(request(h, "POST", "/inject", huge, big, &b), 413);
    assert_non_null(strstr(b.p, "exceeds the limit"));
    free(b.p);
    free(huge);
    curl_easy_cleanup(h);

    /* Hostile peers: plaintext HTTP on the TLS port, a half-sent handshake, a
     * connection that says nothing. */
    const char *probes[] = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ""};
    for (size_t i = 0; i < 3; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        if (probes[i][0] != '\0')
            assert_true(write(fd, probes[i], strlen(probes[i])) > 0);
        close(fd);
    }

    /* Still serving, with a validation answer that names the field. */
    h = client();
    const char *vs = "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"v\","
                     "\"kind\":{\"group\":\"networking.istio.io\",\"version\":\"v1\",\"kind\":\"VirtualService\"},"
                     "\"namespace\":\"prod\",\"operation\":\"CREATE\",\"object\":{\"apiVersion\":\"networking.istio.io/v1\","
                     "\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"r\"},\"spec\":{\"hosts\":[\"r\"],"
                     "\"http\":[{\"route\":[{\"destination\":{\"host\":\"r\"},\"weight\":-1}]}]}}}}";
    assert_int_equal(request(h, "POST", "/validate", vs, strlen(vs), &b), 200);
    assert_non_null(strstr(b.p, "\"allowed\":false"));
    assert_non_null(strstr(b.p, "VirtualService prod/r: spec.http[0].route[0].weight"));
    free(b.p);
    curl_easy_cleanup(h);
}

static void *worker(void *arg)
{
    int *ok = arg;
    CURL *h = client();
    for (int i = 0; i < 40; i++) {
        char uid[32];
        snprintf(uid, sizeof(uid), "c-%d", i);
        char *body = pod_review(uid, "prod");
        struct buf b;
        if (request(h, "POST", "/inject", body, strlen(body), &b) == 200 && strstr(b.p, uid) && strstr(b.p, "\"patch\""))
            (*ok)++;
        free(b.p);
        free(body);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    pthread_t t[4];
    int ok[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, &ok[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(ok[i], 40);
    }
    webhook_stats_t st;
    webhook_get_stats(wh, &st);
    assert_true(st.injected >= 163);
}

static void test_bad_certificate(void **state)
{
    (void)state;
    char err[256];
    webhook_server_opts_t so = {.addr = "127.0.0.1", .port = 0, .cert_pem = "not a cert", .key_pem = "nor a key"};
    assert_null(webhook_server_start(wh, &so, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot serve HTTPS"));
    so.cert_pem = cert_pem;
    so.key_pem = key_pem;
    so.addr = "localhost";
    assert_null(webhook_server_start(wh, &so, err, sizeof(err)));
    assert_non_null(strstr(err, "not an IP address"));
    so.addr = "127.0.0.1";
    so.port = port; /* taken */
    assert_null(webhook_server_start(wh, &so, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inject_keepalive),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_bad_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
