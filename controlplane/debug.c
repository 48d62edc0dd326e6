/*
 * The debug HTTP server: libmicrohttpd with its own polling thread, a table
 * of GET handlers, and the built-in pages (configz, ready, informerz).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "../common/log.h"
#include "debug.h"

struct route {
    char *path;
    char *doc;
    debug_handler_fn fn;
    void *ud;
};

struct debug_server {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t lock; /* the routes */
    struct route *routes;
    size_t nroutes;
    void **owned; /* handler contexts the server frees */
    size_t nowned;
};

struct debug_req {
    struct MHD_Connection *conn;
    const char *path;
};

const char *debug_req_arg(const debug_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *debug_req_path(const debug_req_t *req)
{
    return req->path;
}

void debug_resp_text(debug_resp_t *resp, int status, const char *content_type, const char *text)
{
    free(resp->body);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = mesh_xstrdup(text);
    resp->len = strlen(text);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, debug_resp_t *r)
{
    struct MHD_Response *mr =
        MHD_create_response_from_buffer(r->len, r->body ? r->body : (void *)"", r->body ? MHD_RESPMEM_MUST_FREE
                                                                                     : MHD_RESPMEM_PERSISTENT);
    if (mr == NULL) {
        free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type : "application/json");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)(r->status ? r->status : 200), mr);
    MHD_destroy_response(mr);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    debug_server_t *s = cls;
    (void)version;
    (void)upload_data;
    (void)con_cls;
    debug_resp_t r = {0};
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        if (*upload_data_size != 0) {
            *upload_data_size = 0; /* ignore a body: the answer is the same */
            return MHD_YES;
        }
        debug_resp_text(&r, 405, "text/plain", "only GET is served here\n");
        return send_resp(conn, &r);
    }
    debug_handler_fn fn = NULL;
    void *ud = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nroutes; i++) {
        if (strcmp(s->routes[i].path, url) == 0) {
            fn = s->routes[i].fn;
            ud = s->routes[i].ud;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (fn == NULL) {
        char msg[512];
        snprintf(msg, sizeof(msg), "no page %.300s here; see /debug for the list\n", url);
        debug_resp_text(&r, 404, "text/plain", msg);
        return send_resp(conn, &r);
    }
    debug_req_t req = {conn, url};
    fn(ud, &req, &r);
    return send_resp(conn, &r);
}

/* Parses "host:port", ":port" or "[v6]:port" into a socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, bool *v6, char *err,
                      size_t errlen)
{
    char host[256];
    const char *port;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host))
            goto bad;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
            goto bad;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (port[0] == '\0' || *end != '\0' || p < 0 || p > 65535)
        goto bad;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : "0.0.0.0", port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "debug address \"%s\": %s", addr, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, errlen, "debug address \"%s\": expected HOST:PORT, :PORT or [IPv6]:PORT", addr);
    return -1;
}

static void index_page(void *ud, const debug_req_t *req, debug_resp_t *resp);

debug_server_t *debug_server_start(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    bool v6 = false;
    if (parse_addr(addr, &ss, &sl, &v6, err, errlen) != 0)
        return NULL;
    debug_server_t *s = mesh_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (v6)
        flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_END);
    if (s->d == NULL) {
        snprintf(err, errlen, "debug server: cannot listen on %s (address in use or not local?)", addr);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    debug_handle(s, "/debug", "this list", index_page, s);
    return s;
}

int debug_server_port(const debug_server_t *s)
{
    return s->port;
}

int debug_handle(debug_server_t *s, const char *path, const char *doc, debug_handler_fn fn, void *ud)
{
    pthread_mutex_lock(&s->lock);
    size_t i;
    for (i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].path, path) == 0)
            break;
    if (i == s->nroutes) {
        s->routes = mesh_xrealloc(s->routes, (s->nroutes + 1) * sizeof(*s->routes));
        s->routes[i].path = mesh_xstrdup(path);
        s->nroutes++;
    } else {
        free(s->routes[i].doc);
    }
    s->routes[i].doc = mesh_xstrdup(doc ? doc : "");
    s->routes[i].fn = fn;
    s->routes[i].ud = ud;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void debug_server_stop(debug_server_t *s)
{
    if (s == NULL)
        return;
    if (s->d != NULL)
        MHD_stop_daemon(s->d);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].path);
        free(s->routes[i].doc);
    }
    free(s->routes);
    for (size_t i = 0; i < s->nowned; i++)
        free(s->owned[i]);
    free(s->owned);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Zeroed memory that lives as long as the server. */
static void *server_alloc(debug_server_t *s, size_t size)
{
    void *p = mesh_xcalloc(1, size);
    pthread_mutex_lock(&s->lock);
    s->owned = mesh_xrealloc(s->owned, (s->nowned + 1) * sizeof(*s->owned));
    s->owned[s->nowned++] = p;
    pthread_mutex_unlock(&s->lock);
    return p;
}

static void index_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    debug_server_t *s = ud;
    (void)req;
    size_t cap = 256, len = 0;
    char *out = mesh_xmalloc(cap);
    out[0] = '\0';
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nroutes; i++) {
        size_t need = strlen(s->routes[i].path) + strlen(s->routes[i].doc) + 8;
        if (len + need >= cap) {
            cap = (cap + need) * 2;
            out = mesh_xrealloc(out, cap);
        }
        len += (size_t)snprintf(out + len, cap - len, "%-24s %s\n", s->routes[i].path, s->routes[i].doc);
    }
    pthread_mutex_unlock(&s->lock);
    resp->status = 200;
    resp->body = out;
    resp->len = len;
    resp->content_type = "text/plain; charset=utf-8";
}

/* ---- /debug/configz ---- */

struct configz {
    const char *ns, *name;
    char *out;
    size_t len, cap;
    size_t count;
};

static void out_append(struct configz *c, const char *s, size_t n)
{
    if (c->len + n + 1 > c->cap) {
        c->cap = (c->len + n + 1) * 2;
        c->out = mesh_xrealloc(c->out, c->cap);
    }
    memcpy(c->out + c->len, s, n);
    c->len += n;
    c->out[c->len] = '\0';
}

static void redact(json_object *obj, const char *field)
{
    json_object *m = NULL;
    if (!json_object_object_get_ex(obj, field, &m) || !json_object_is_type(m, json_type_object))
        return;
    json_object_object_foreach(m, key, val)
    {
        (void)val;
        json_object_object_add(m, key, json_object_new_string("<redacted>"));
    }
}

static int configz_one(void *ud, cfg_object_t *o)
{
    struct configz *c = ud;
    if ((c->ns != NULL && strcmp(c->ns, o->namespace ? o->namespace : "") != 0) ||
        (c->name != NULL && strcmp(c->name, o->name) != 0))
        return 0;
    json_object *j = cfg_object_to_json(o);
    if (j == NULL)
        return 0;
    if (o->kind == CFG_Secret) {
        redact(j, "data");
        redact(j, "stringData");
        /* kubectl apply keeps the whole object, values included, here */
        json_object *meta = NULL, *ann = NULL;
        if (json_object_object_get_ex(j, "metadata", &meta) && json_object_object_get_ex(meta, "annotations", &ann) &&
            json_object_object_get_ex(ann, "kubectl.kubernetes.io/last-applied-configuration", NULL))
            json_object_object_add(ann, "kubectl.kubernetes.io/last-applied-configuration",
                                   json_object_new_string("<redacted>"));
    }
    size_t n = 0;
    const char *s = json_object_to_json_string_length(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (c->count++ > 0)
        out_append(c, ",\n", 2);
    out_append(c, s, n);
    json_object_put(j);
    return 0;
}

static cfg_kind_t kind_by_any_name(const char *s)
{
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        const cfg_kind_info_t *ki = cfg_kind_info((cfg_kind_t)k);
        if (strcasecmp(ki->name, s) == 0 || strcasecmp(ki->plural, s) == 0)
            return (cfg_kind_t)k;
    }
    return CFG_KIND_NONE;
}

static void configz_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    cfg_store_t *store = ud;
    const char *kind = debug_req_arg(req, "kind");
    cfg_kind_t only = CFG_KIND_NONE;
    if (kind != NULL && (only = kind_by_any_name(kind)) == CFG_KIND_NONE) {
        char msg[512];
        snprintf(msg, sizeof(msg), "unknown kind \"%.200s\"", kind);
        json_object *e = json_object_new_object();
        json_object_object_add(e, "error", json_object_new_string(msg));
        debug_resp_text(resp, 400, "application/json",
                        json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(e);
        return;
    }
    struct configz c = {.ns = debug_req_arg(req, "namespace"), .name = debug_req_arg(req, "name")};
    cfg_snap_t *snap = cfg_store_snapshot(store);
    out_append(&c, "[", 1);
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        if (only == CFG_KIND_NONE || (int)only == k)
            cfg_snap_each(snap, (cfg_kind_t)k, configz_one, &c);
    cfg_snap_release(snap);
    out_append(&c, "]\n", 2);
    resp->status = 200;
    resp->body = c.out;
    resp->len = c.len;
    resp->content_type = "application/json";
}

void debug_add_configz(debug_server_t *s, cfg_store_t *store)
{
    debug_handle(s, "/debug/configz",
                 "the config store's objects as JSON (?kind=, ?namespace=, ?name= filter)", configz_page,
                 store);
}

/* ---- /ready ---- */

struct ready_ctx {
    bool (*ready)(void *ud);
    void *ud;
};

static void ready_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    struct ready_ctx *c = ud;
    (void)req;
    if (c->ready(c->ud))
        debug_resp_text(resp, 200, "text/plain", "ready\n");
    else
        debug_resp_text(resp, 503, "text/plain", "not ready\n");
}

void debug_add_ready(debug_server_t *s, bool (*ready)(void *ud), void *ud)
{
    struct ready_ctx *c = server_alloc(s, sizeof(*c));
    c->ready = ready;
    c->ud = ud;
    debug_handle(s, "/ready", "200 once the configuration sources have synced, else 503", ready_page, c);
}

/* ---- /debug/informerz ---- */

static void informerz_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    informer_t *inf = ud;
    (void)req;
    informer_kind_stats_t st[CFG_KIND_COUNT];
    size_t n = informer_stats(inf, st, CFG_KIND_COUNT);
    json_object *root = json_object_new_object();
    json_object_object_add(root, "synced", json_object_new_boolean(informer_synced(inf)));
    json_object *kinds = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *k = json_object_new_object();
        json_object_object_add(k, "kind", json_object_new_string(cfg_kind_info(st[i].kind)->name));
        json_object_object_add(k, "state", json_object_new_string(st[i].state));
        json_object_object_add(k, "version", json_object_new_string(st[i].version));
        json_object_object_add(k, "resourceVersion", json_object_new_string(st[i].resource_version));
        json_object_object_add(k, "synced", json_object_new_boolean(st[i].synced));
#define N(f, name) json_object_object_add(k, name, json_object_new_int64((int64_t)st[i].f))
        N(objects, "objects");
        N(lists, "lists");
        N(relists, "relists");
        N(watches, "watches");
        N(watch_restarts, "watchRestarts");
        N(events, "events");
        N(bookmarks, "bookmarks");
        N(invalid, "invalid");
        N(malformed, "malformed");
        N(failures, "failures");
#undef N
        json_object_object_add(k, "lastError", json_object_new_string(st[i].last_error));
        json_object_array_add(kinds, k);
    }
    json_object_object_add(root, "kinds", kinds);
    debug_resp_text(resp, 200, "application/json",
                    json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
}

void debug_add_informerz(debug_server_t *s, informer_t *inf)
{
    debug_handle(s, "/debug/informerz", "the Kubernetes informers: state and counters per kind",
                 informerz_page, inf);
}
