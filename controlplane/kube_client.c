/*
 * The API client proper: preparing curl handles, synchronous requests,
 * messages users can act on, and discovery.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "kube_internal.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* json helpers */

const char *kube_json_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

struct json_object *kube_json_path(struct json_object *o, ...)
{
    va_list ap;
    va_start(ap, o);
    for (const char *k = va_arg(ap, const char *); k != NULL && o != NULL;
         k = va_arg(ap, const char *)) {
        struct json_object *v;
        o = json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, k, &v) ? v
                                                                                            : NULL;
    }
    va_end(ap);
    return o;
}

struct json_object *kube_json_obj(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_object))
        return v;
    v = json_object_new_object();
    json_object_object_add(o, key, v);
    return v;
}

struct json_object *kube_resp_json(const kube_resp_t *r)
{
    if (r->body == NULL || r->len == 0)
        return NULL;
    struct json_tokener *t = json_tokener_new_ex(64);
    if (t == NULL)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(t, r->body, (int)r->len);
    if (json_tokener_get_error(t) != json_tokener_success ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(t);
    return o;
}

/* client */

kube_client_t *kube_client_new(const kube_opts_t *o, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    kube_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->dmu, NULL);
    atomic_init(&c->conflicts, 0);
    if (kube_config_load(c, o, err, errlen) != 0) {
        kube_client_free(c);
        return NULL;
    }
    if (c->server == NULL || c->ns == NULL || c->source == NULL) {
        mesh_errf(err, errlen, "out of memory");
        kube_client_free(c);
        return NULL;
    }
    log_debug("kube: API server %s (from %s), namespace %s", c->server, c->source, c->ns);
    return c;
}

void kube_client_free(kube_client_t *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    for (size_t i = 0; i < c->nres; i++) {
        free(c->res[i].group);
        free(c->res[i].plural);
    }
    free(c->res);
    for (size_t i = 0; i < c->nversions; i++)
        free(c->versions[i]);
    free(c->versions);
    if (c->key != NULL)
        memset(c->key, 0, c->key_len);
    if (c->token != NULL)
        memset(c->token, 0, strlen(c->token));
    if (c->basic != NULL)
        memset(c->basic, 0, strlen(c->basic));
    free(c->server);
    free(c->source);
    free(c->ns);
    free(c->tls_server_name);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->token);
    free(c->token_file);
    free(c->basic);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->dmu);
    free(c);
}

const char *kube_client_server(const kube_client_t *c)
{
    return c->server;
}

const char *kube_client_namespace(const kube_client_t *c)
{
    return c->ns;
}

const char *kube_client_source(const kube_client_t *c)
{
    return c->source;
}

unsigned long kube_client_conflicts(kube_client_t *c)
{
    return atomic_load(&c->conflicts);
}

struct curl_slist *kube_prepare(kube_client_t *c, CURL *h, const char *method, const char *path,
                                const char *content_type)
{
    if (path == NULL || path[0] != '/')
        return NULL;
    size_t ulen = strlen(c->server) + strlen(path) + 1;
    char *url = malloc(ulen);
    if (url == NULL)
        return NULL;
    snprintf(url, ulen, "%s%s", c->server, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url); /* libcurl copies string options */

    if (method == NULL || strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "meshd");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, KUBE_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, KUBE_REQUEST_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");

    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    if (c->ca != NULL) {
        struct curl_blob blob = {.data = c->ca, .len = c->ca_len, .flags = CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (c->cert != NULL) {
        struct curl_blob cb = {.data = c->cert, .len = c->cert_len, .flags = CURL_BLOB_NOCOPY};
        struct curl_blob kb = {.data = c->key, .len = c->key_len, .flags = CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cb);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &kb);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }

    struct curl_slist *hdrs = NULL, *t;
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (hdrs == NULL)
        return NULL;
#define ADD(s)                                                                                     \
    do {                                                                                           \
        t = curl_slist_append(hdrs, (s));                                                          \
        if (t == NULL)                                                                             \
            goto fail;                                                                             \
        hdrs = t;                                                                                  \
    } while (0)
    ADD("Expect:");
    if (content_type != NULL) {
        char ct[160];
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        ADD(ct);
    }
    pthread_mutex_lock(&c->mu);
    kube_token_refresh_locked(c, false);
    if (c->token != NULL) {
        size_t n = strlen(c->token) + 32;
        char *auth = malloc(n);
        if (auth == NULL) {
            pthread_mutex_unlock(&c->mu);
            goto fail;
        }
        snprintf(auth, n, "Authorization: Bearer %s", c->token);
        t = curl_slist_append(hdrs, auth);
        memset(auth, 0, n);
        free(auth);
        if (t == NULL) {
            pthread_mutex_unlock(&c->mu);
            goto fail;
        }
        hdrs = t;
    } else if (c->basic != NULL) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERPWD, c->basic);
    }
    pthread_mutex_unlock(&c->mu);
#undef ADD
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    return hdrs;
fail:
    curl_slist_free_all(hdrs);
    return NULL;
}

const char *kube_transport_error(kube_client_t *c, CURL *h, CURLcode rc, const char *errbuf,
                                 char *buf, size_t len)
{
    const char *detail = errbuf != NULL && errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    long oserr = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        snprintf(buf, len, "cannot connect to %s: %s", c->server,
                 oserr != 0 ? strerror((int)oserr) : "Connection refused");
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(buf, len, "cannot connect to %s: cannot resolve the host name (%s)", c->server,
                 detail);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(buf, len, "request to %s timed out (%s)", c->server, detail);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        snprintf(buf, len, "TLS: certificate verify failed for %s: %s", c->server, detail);
        break;
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        snprintf(buf, len, "TLS: cannot use the configured certificates for %s: %s", c->server,
                 detail);
        break;
    case CURLE_SSL_CONNECT_ERROR:
        snprintf(buf, len, "TLS: handshake with %s failed: %s", c->server, detail);
        break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        snprintf(buf, len, "connection to %s lost: %s", c->server, detail);
        break;
    default:
        snprintf(buf, len, "request to %s failed: %s", c->server, detail);
        break;
    }
    return buf;
}

/* request */

typedef struct sink {
    char *buf;
    size_t len, cap;
    bool overflow;
} sink_t;

#define KUBE_MAX_BODY (512u << 20)

static size_t sink_write(char *p, size_t sz, size_t n, void *ud)
{
    sink_t *s = ud;
    size_t add = sz * n;
    if (s->len + add + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 16384;
        while (cap < s->len + add + 1)
            cap *= 2;
        if (cap > KUBE_MAX_BODY) {
            s->overflow = true;
            return 0;
        }
        char *nb = realloc(s->buf, cap);
        if (nb == NULL)
            return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, add);
    s->len += add;
    s->buf[s->len] = '\0';
    return add;
}

static CURL *handle_get(kube_client_t *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->npool > 0)
        h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->mu);
    return h != NULL ? h : curl_easy_init();
}

static void handle_put(kube_client_t *c, CURL *h)
{
    curl_easy_reset(h); /* keeps the connection cache */
    pthread_mutex_lock(&c->mu);
    if (c->npool < KUBE_POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h != NULL)
        curl_easy_cleanup(h);
}

static int request_once(kube_client_t *c, const char *method, const char *path, const char *body,
                        const char *content_type, kube_resp_t *resp)
{
    memset(resp, 0, sizeof(*resp));
    CURL *h = handle_get(c);
    if (h == NULL) {
        snprintf(resp->err, sizeof(resp->err), "out of memory");
        return -1;
    }
    struct curl_slist *hdrs = kube_prepare(c, h, method, path, body != NULL ? content_type : NULL);
    if (hdrs == NULL) {
        snprintf(resp->err, sizeof(resp->err), "cannot prepare a request for %s", path);
        handle_put(c, h);
        return -1;
    }
    sink_t s = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        if (s.overflow)
            snprintf(resp->err, sizeof(resp->err), "response from %s%s is larger than %u MiB",
                     c->server, path, KUBE_MAX_BODY >> 20);
        else
            kube_transport_error(c, h, rc, errbuf, resp->err, sizeof(resp->err));
        free(s.buf);
        ret = -1;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
        resp->body = s.buf;
        resp->len = s.len;
    }
    curl_slist_free_all(hdrs);
    handle_put(c, h);
    return ret;
}

int kube_request(kube_client_t *c, const char *method, const char *path, const char *body,
                 const char *content_type, kube_resp_t *resp)
{
    if (content_type == NULL)
        content_type = "application/json";
    int rc = request_once(c, method, path, body, content_type, resp);
    if (rc == 0 && resp->status == 401 && c->token_file != NULL) {
        /* the token may have rotated within the last second: look now */
        pthread_mutex_lock(&c->mu);
        char *before = c->token != NULL ? strdup(c->token) : NULL;
        kube_token_refresh_locked(c, true);
        bool changed = before != NULL && c->token != NULL && strcmp(before, c->token) != 0;
        pthread_mutex_unlock(&c->mu);
        free(before);
        if (changed) {
            kube_resp_free(resp);
            rc = request_once(c, method, path, body, content_type, resp);
        }
    }
    return rc;
}

void kube_resp_free(kube_resp_t *r)
{
    if (r == NULL)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

/* messages */

/* Copies the value of `key "VALUE"` from s into out. */
static bool quoted_after(const char *s, const char *key, char *out, size_t len)
{
    const char *p = s != NULL ? strstr(s, key) : NULL;
    if (p == NULL)
        return false;
    p += strlen(key);
    const char *e = strchr(p, '"');
    if (e == NULL || (size_t)(e - p) >= len)
        return false;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

const char *kube_status_message(const kube_resp_t *r, const char *verb, const char *resource,
                                char *buf, size_t len)
{
    if (r->status == 0) {
        snprintf(buf, len, "%s", r->err[0] ? r->err : "no response from the API server");
        return buf;
    }
    struct json_object *st = kube_resp_json(r);
    const char *msg = kube_json_str(st, "message");
    char raw[200] = "";
    if (msg == NULL && r->body != NULL) {
        size_t n = r->len < sizeof(raw) - 1 ? r->len : sizeof(raw) - 1;
        memcpy(raw, r->body, n);
        raw[n] = '\0';
        for (char *p = raw; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        msg = raw;
    }
    if (msg == NULL)
        msg = "";
    verb = verb != NULL ? verb : "access";
    resource = resource != NULL ? resource : "the resource";
    switch (r->status) {
    case 401:
        if (msg[0])
            snprintf(buf, len, "unauthorized: the token was rejected (%s)", msg);
        else
            snprintf(buf, len, "unauthorized: the token was rejected");
        break;
    case 403: {
        char ns[128], user[256];
        bool has_ns = quoted_after(msg, "in the namespace \"", ns, sizeof(ns));
        bool has_user = quoted_after(msg, "User \"", user, sizeof(user));
        char who[300] = "";
        if (has_user)
            snprintf(who, sizeof(who), " (as %s)", user);
        if (has_ns)
            snprintf(buf, len, "forbidden: cannot %s %s in namespace %s%s: %s", verb, resource, ns,
                     who, msg);
        else
            snprintf(buf, len, "forbidden: cannot %s %s at cluster scope%s: %s", verb, resource,
                     who, msg);
        break;
    }
    case 404:
        snprintf(buf, len, "not found: %s", msg[0] ? msg : resource);
        break;
    case 409:
        snprintf(buf, len, "conflict: %s", msg);
        break;
    case 410:
        snprintf(buf, len, "gone: %s (the resourceVersion is too old; list again)", msg);
        break;
    case 422:
        snprintf(buf, len, "invalid: %s", msg);
        break;
    case 429:
        snprintf(buf, len, "too many requests: %s", msg);
        break;
    default:
        if (r->status >= 500)
            snprintf(buf, len, "API server error (HTTP %ld) on %s %s: %s", r->status, verb,
                     resource, msg);
        else
            snprintf(buf, len, "HTTP %ld on %s %s: %s", r->status, verb, resource, msg);
        break;
    }
    json_object_put(st);
    return buf;
}

void kube_path_parts(const char *path, char *plural, size_t plen, char *ns, size_t nslen)
{
    plural[0] = '\0';
    ns[0] = '\0';
    const char *p = path;
    if (strncmp(p, "/api/", 5) == 0) {
        p += 5;
        p = strchr(p, '/'); /* past the version */
    } else if (strncmp(p, "/apis/", 6) == 0) {
        p += 6;
        p = strchr(p, '/');                        /* past the group */
        p = p != NULL ? strchr(p + 1, '/') : NULL; /* past the version */
    } else {
        return;
    }
    if (p == NULL)
        return;
    p++;
    if (strncmp(p, "namespaces/", 11) == 0) {
        const char *n = p + 11;
        size_t l = strcspn(n, "/?");
        if (n[l] == '/') {
            snprintf(ns, nslen, "%.*s", (int)l, n);
            p = n + l + 1;
        }
    }
    size_t l = strcspn(p, "/?");
    snprintf(plural, plen, "%.*s", (int)l, p);
}

void kube_fail(const kube_resp_t *r, const char *verb, const char *path, char *err, size_t errlen)
{
    char plural[96], ns[128], msg[600];
    kube_path_parts(path, plural, sizeof(plural), ns, sizeof(ns));
    kube_status_message(r, verb, plural, msg, sizeof(msg));
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s %s: %s", verb, path, msg);
}

/* discovery */

/* Kubernetes' version order: GA > beta > alpha, then higher numbers;
 * anything else sorts last. */
static int version_priority(const char *v)
{
    if (v[0] != 'v' || !isdigit((unsigned char)v[1]))
        return 0;
    char *end;
    long major = strtol(v + 1, &end, 10);
    if (major > 999)
        major = 999;
    int tier;
    long minor = 0;
    if (*end == '\0') {
        tier = 3;
    } else if (strncmp(end, "beta", 4) == 0 && isdigit((unsigned char)end[4])) {
        tier = 2;
        minor = strtol(end + 4, &end, 10);
    } else if (strncmp(end, "alpha", 5) == 0 && isdigit((unsigned char)end[5])) {
        tier = 1;
        minor = strtol(end + 5, &end, 10);
    } else {
        return 0;
    }
    if (*end != '\0')
        return 0;
    if (minor > 999)
        minor = 999;
    return tier * 1000000 + (int)major * 1000 + (int)minor;
}

static const char *intern_version_locked(kube_client_t *c, const char *v)
{
    for (size_t i = 0; i < c->nversions; i++)
        if (strcmp(c->versions[i], v) == 0)
            return c->versions[i];
    char **nv = realloc(c->versions, (c->nversions + 1) * sizeof(*nv));
    if (nv == NULL)
        return NULL;
    c->versions = nv;
    char *s = strdup(v);
    if (s == NULL)
        return NULL;
    c->versions[c->nversions++] = s;
    return s;
}

typedef struct res_list {
    kube_api_resource_t *v;
    size_t n, cap;
} res_list_t;

static void res_list_free(res_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].group);
        free(l->v[i].plural);
    }
    free(l->v);
}

/* Adds the resources of one group-version document. */
static int add_resources(kube_client_t *c, res_list_t *l, const char *group, const char *version,
                         struct json_object *doc)
{
    struct json_object *arr = kube_json_path(doc, "resources", NULL);
    if (arr == NULL || !json_object_is_type(arr, json_type_array))
        return 0;
    pthread_mutex_lock(&c->dmu);
    const char *iv = intern_version_locked(c, version);
    pthread_mutex_unlock(&c->dmu);
    if (iv == NULL)
        return -1;
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(arr, i);
        const char *name = kube_json_str(r, "name");
        if (name == NULL || strchr(name, '/') != NULL)
            continue; /* subresources */
        struct json_object *nsd = kube_json_path(r, "namespaced", NULL);
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 256;
            kube_api_resource_t *nv = realloc(l->v, cap * sizeof(*nv));
            if (nv == NULL)
                return -1;
            l->v = nv;
            l->cap = cap;
        }
        kube_api_resource_t *e = &l->v[l->n];
        e->group = strdup(group);
        e->plural = strdup(name);
        if (e->group == NULL || e->plural == NULL) {
            free(e->group);
            free(e->plural);
            return -1;
        }
        e->version = iv;
        e->priority = version_priority(version);
        e->namespaced = nsd != NULL && json_object_get_boolean(nsd);
        l->n++;
    }
    return 0;
}

static int get_json(kube_client_t *c, const char *path, struct json_object **out, char *err,
                    size_t errlen)
{
    kube_resp_t r;
    *out = NULL;
    if (kube_request(c, "GET", path, NULL, NULL, &r) != 0) {
        snprintf(err, errlen, "%s", r.err);
        return -1;
    }
    if (r.status != 200) {
        kube_fail(&r, "get", path, err, errlen);
        kube_resp_free(&r);
        return -1;
    }
    *out = kube_resp_json(&r);
    kube_resp_free(&r);
    if (*out == NULL) {
        snprintf(err, errlen, "GET %s: the API server's answer is not a JSON object", path);
        return -1;
    }
    return 0;
}

int kube_discover(kube_client_t *c)
{
    res_list_t l = {0};
    struct json_object *doc = NULL, *groups = NULL;
    char err[512];
    int rc = -1;
    if (get_json(c, "/api/v1", &doc, err, sizeof(err)) != 0)
        goto out;
    if (add_resources(c, &l, "", "v1", doc) != 0)
        goto oom;
    json_object_put(doc);
    doc = NULL;
    if (get_json(c, "/apis", &groups, err, sizeof(err)) != 0)
        goto out;
    struct json_object *ga = kube_json_path(groups, "groups", NULL);
    size_t ng =
        ga != NULL && json_object_is_type(ga, json_type_array) ? json_object_array_length(ga) : 0;
    for (size_t i = 0; i < ng; i++) {
        struct json_object *g = json_object_array_get_idx(ga, i);
        const char *gname = kube_json_str(g, "name");
        struct json_object *vs = kube_json_path(g, "versions", NULL);
        if (gname == NULL || vs == NULL || !json_object_is_type(vs, json_type_array))
            continue;
        size_t nv = json_object_array_length(vs);
        for (size_t j = 0; j < nv; j++) {
            const char *gv = kube_json_str(json_object_array_get_idx(vs, j), "groupVersion");
            const char *v = kube_json_str(json_object_array_get_idx(vs, j), "version");
            if (gv == NULL || v == NULL)
                continue;
            char path[512], gerr[512];
            snprintf(path, sizeof(path), "/apis/%s", gv);
            if (get_json(c, path, &doc, gerr, sizeof(gerr)) != 0) {
                /* an unavailable aggregated API must not hide the others */
                log_debug("kube: discovery of %s skipped: %s", gv, gerr);
                continue;
            }
            int arc = add_resources(c, &l, gname, v, doc);
            json_object_put(doc);
            doc = NULL;
            if (arc != 0)
                goto oom;
        }
    }
    pthread_mutex_lock(&c->dmu);
    for (size_t i = 0; i < c->nres; i++) {
        free(c->res[i].group);
        free(c->res[i].plural);
    }
    free(c->res);
    c->res = l.v;
    c->nres = l.n;
    c->discovered = true;
    pthread_mutex_unlock(&c->dmu);
    l = (res_list_t){0};
    log_debug("kube: discovery found %zu resources", c->nres);
    rc = 0;
    goto out;
oom:
    snprintf(err, sizeof(err), "out of memory");
out:
    if (rc != 0)
        log_warn("kube: API discovery on %s failed: %s", c->server, err);
    json_object_put(doc);
    json_object_put(groups);
    res_list_free(&l);
    return rc;
}

static const kube_api_resource_t *best_locked(kube_client_t *c, const char *group,
                                              const char *plural)
{
    if (group == NULL || strcmp(group, "core") == 0)
        group = "";
    const kube_api_resource_t *best = NULL;
    for (size_t i = 0; i < c->nres; i++) {
        const kube_api_resource_t *r = &c->res[i];
        if (strcmp(r->plural, plural) != 0 || strcmp(r->group, group) != 0)
            continue;
        if (best == NULL || r->priority > best->priority ||
            (r->priority == best->priority && strcmp(r->version, best->version) > 0))
            best = r;
    }
    return best;
}

static void ensure_discovered(kube_client_t *c)
{
    pthread_mutex_lock(&c->dmu);
    bool d = c->discovered;
    pthread_mutex_unlock(&c->dmu);
    if (!d)
        kube_discover(c);
}

const char *kube_resource_version(kube_client_t *c, const char *group, const char *plural)
{
    ensure_discovered(c);
    pthread_mutex_lock(&c->dmu);
    const kube_api_resource_t *r = best_locked(c, group, plural);
    const char *v = r != NULL ? r->version : NULL;
    pthread_mutex_unlock(&c->dmu);
    return v;
}

int kube_resource_namespaced(kube_client_t *c, const char *group, const char *plural)
{
    ensure_discovered(c);
    pthread_mutex_lock(&c->dmu);
    const kube_api_resource_t *r = best_locked(c, group, plural);
    int ns = r == NULL ? -1 : r->namespaced ? 1 : 0;
    pthread_mutex_unlock(&c->dmu);
    return ns;
}

int kube_path(kube_client_t *c, const char *group, const char *version, const char *plural,
              const char *ns, const char *name, const char *query, char *buf, size_t len)
{
    bool core = group == NULL || group[0] == '\0' || strcmp(group, "core") == 0;
    if (version == NULL)
        version = kube_resource_version(c, group, plural);
    if (version == NULL || plural == NULL)
        return -1;
    int n;
    char base[300];
    if (core)
        n = snprintf(base, sizeof(base), "/api/%s", version);
    else
        n = snprintf(base, sizeof(base), "/apis/%s/%s", group, version);
    if (n < 0 || (size_t)n >= sizeof(base))
        return -1;
    bool has_ns = ns != NULL && ns[0] != '\0', has_name = name != NULL && name[0] != '\0';
    bool has_q = query != NULL && query[0] != '\0';
    n = snprintf(buf, len, "%s%s%s/%s%s%s%s%s", base, has_ns ? "/namespaces/" : "",
                 has_ns ? ns : "", plural, has_name ? "/" : "", has_name ? name : "",
                 has_q ? "?" : "", has_q ? query : "");
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
