/*
 * xDS client: one ADS stream (state of the world) to the control plane, on a
 * thread and loop of its own. Subscribes to CDS and LDS (wildcard), then to
 * EDS for the EDS clusters and RDS for the route names the listeners need.
 * Every response is compiled into a candidate snapshot together with the
 * other types; a response that does not compile is NACKed with the error and
 * the previous resources stay. A snapshot is handed to the engine only when
 * it is warm: every EDS cluster has its ClusterLoadAssignment and every RDS
 * name its RouteConfiguration. While the control plane is unreachable the
 * proxy keeps serving its last config and reconnects with backoff.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/grpc.h"
#include "../common/b64.h"
#include "../common/log.h"
#include "../common/transport.h"
#include "../common/loop.h"
#include "config_internal.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy.h"
#include "xds_client_internal.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define TYPE_PREFIX "type.googleapis.com/"

static const char *const type_urls[PX_RES_NTYPES] = {
    [PX_RES_LISTENER] = TYPE_PREFIX "envoy.config.listener.v3.Listener",
    [PX_RES_ROUTE] = TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration",
    [PX_RES_CLUSTER] = TYPE_PREFIX "envoy.config.cluster.v3.Cluster",
    [PX_RES_ENDPOINT] = TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
    [PX_RES_SECRET] = TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret",
};

static const ProtobufCMessageDescriptor *const type_desc[PX_RES_NTYPES] = {
    [PX_RES_LISTENER] = &envoy__config__listener__v3__listener__descriptor,
    [PX_RES_ROUTE] = &envoy__config__route__v3__route_configuration__descriptor,
    [PX_RES_CLUSTER] = &envoy__config__cluster__v3__cluster__descriptor,
    [PX_RES_ENDPOINT] = &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    [PX_RES_SECRET] = &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
};

/* Order of the initial subscriptions. */
static const int sub_order[PX_RES_NTYPES] = {PX_RES_CLUSTER, PX_RES_LISTENER, PX_RES_ENDPOINT, PX_RES_ROUTE,
                                             PX_RES_SECRET};

typedef struct names {
    char **v;
    size_t n;
} names_t;

struct px_xds {
    px_xds_opts_t opt;
    px_server_t *srv;
    pthread_t thread;
    loop_t *loop;
    grpc_client_t *client;
    tp_tls_ctx_t *tls; /* NULL: plaintext */
    grpc_call_t *call;
    loop_timer_t *retry;
    uint64_t backoff_ms;
    Envoy__Config__Core__V3__Node *node;

    px_bundle_t state; /* accepted resources */
    char *version[PX_RES_NTYPES];
    char *nonce[PX_RES_NTYPES];
    names_t subs[PX_RES_NTYPES]; /* EDS/RDS subscriptions; CDS/LDS are wildcard */
    bool sent[PX_RES_NTYPES];
    bool received[PX_RES_NTYPES];

    px_snapshot_t *applied;
    atomic_bool ready;
    atomic_uint_fast64_t acks, nacks, applies;
    pthread_mutex_t mu;
    char last_error[512];
};

/* ---- node ---- */

static Google__Protobuf__Value *str_value(const char *s)
{
    Google__Protobuf__Value *v = malloc(sizeof(*v));
    if (v == NULL)
        return NULL;
    google__protobuf__value__init(v);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v->string_value = strdup(s);
    return v;
}

static int struct_add(Google__Protobuf__Struct *st, const char *key, Google__Protobuf__Value *v)
{
    if (v == NULL)
        return -1;
    Google__Protobuf__Struct__FieldsEntry **n = realloc(st->fields, (st->n_fields + 1) * sizeof(*n));
    if (n == NULL) {
        protobuf_c_message_free_unpacked(&v->base, NULL);
        return -1;
    }
    st->fields = n;
    Google__Protobuf__Struct__FieldsEntry *e = malloc(sizeof(*e));
    if (e == NULL) {
        protobuf_c_message_free_unpacked(&v->base, NULL);
        return -1;
    }
    google__protobuf__struct__fields_entry__init(e);
    e->key = strdup(key);
    e->value = v;
    st->fields[st->n_fields++] = e;
    return 0;
}

/* Builds the Node: id TYPE~IP~POD.NS~NS.svc.cluster.local and Istio's metadata. */
static Envoy__Config__Core__V3__Node *make_node(const px_xds_opts_t *o)
{
    Envoy__Config__Core__V3__Node *n = malloc(sizeof(*n));
    if (n == NULL)
        return NULL;
    envoy__config__core__v3__node__init(n);
    char id[512];
    snprintf(id, sizeof(id), "%s~%s~%s.%s~%s.svc.cluster.local", o->router ? "router" : "sidecar", o->ip,
             o->pod, o->ns, o->ns);
    n->id = strdup(id);
    char cl[300];
    snprintf(cl, sizeof(cl), "%s.%s", o->workload ? o->workload : o->pod, o->ns);
    n->cluster = strdup(cl);
    n->user_agent_name = strdup("meshproxy");
    Google__Protobuf__Struct *md = malloc(sizeof(*md));
    if (md == NULL)
        return n;
    google__protobuf__struct__init(md);
    n->metadata = md;
    struct_add(md, "NAMESPACE", str_value(o->ns));
    struct_add(md, "NAME", str_value(o->pod));
    struct_add(md, "SERVICE_ACCOUNT", str_value(o->service_account ? o->service_account : "default"));
    struct_add(md, "INSTANCE_IPS", str_value(o->ip));
    struct_add(md, "CLUSTER_ID", str_value(o->cluster_id ? o->cluster_id : "Kubernetes"));
    if (o->workload)
        struct_add(md, "WORKLOAD_NAME", str_value(o->workload));
    Google__Protobuf__Struct *labels = malloc(sizeof(*labels));
    Google__Protobuf__Value *lv = malloc(sizeof(*lv));
    if (labels && lv) {
        google__protobuf__struct__init(labels);
        google__protobuf__value__init(lv);
        lv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        lv->struct_value = labels;
        /* "k=v,k2=v2" */
        const char *p = o->labels ? o->labels : "";
        while (*p) {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            const char *eq = memchr(p, '=', len);
            if (eq && eq > p) {
                char k[256], v[256];
                snprintf(k, sizeof(k), "%.*s", (int)(eq - p), p);
                snprintf(v, sizeof(v), "%.*s", (int)(len - (size_t)(eq - p) - 1), eq + 1);
                struct_add(labels, k, str_value(v));
            }
            p += len;
            if (*p == ',')
                p++;
        }
        struct_add(md, "LABELS", lv);
    } else {
        free(labels);
        free(lv);
    }
    return n;
}

int px_peer_metadata(const px_xds_opts_t *o, char **id, char **b64)
{
    *id = *b64 = NULL;
    Envoy__Config__Core__V3__Node *n = make_node(o);
    if (n == NULL)
        return -1;
    int rc = -1;
    if (n->metadata && (o->workload || struct_add(n->metadata, "WORKLOAD_NAME", str_value(o->pod)) == 0)) {
        size_t len = google__protobuf__struct__get_packed_size(n->metadata);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            google__protobuf__struct__pack(n->metadata, buf);
            *b64 = b64_encode(buf, len);
            *id = strdup(n->id);
            free(buf);
            rc = *id ? 0 : -1;
        }
    }
    protobuf_c_message_free_unpacked(&n->base, NULL);
    return rc;
}

/* ---- resources ---- */

static const char *res_name(int t, const ProtobufCMessage *m)
{
    switch (t) {
    case PX_RES_LISTENER:
        return ((const Envoy__Config__Listener__V3__Listener *)m)->name;
    case PX_RES_ROUTE:
        return ((const Envoy__Config__Route__V3__RouteConfiguration *)m)->name;
    case PX_RES_CLUSTER:
        return ((const Envoy__Config__Cluster__V3__Cluster *)m)->name;
    case PX_RES_SECRET:
        return ((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)m)->name;
    default:
        return ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)m)->cluster_name;
    }
}

static void names_free(names_t *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->v[i]);
    free(n->v);
    n->v = NULL;
    n->n = 0;
}

static bool names_has(const names_t *n, const char *s)
{
    for (size_t i = 0; i < n->n; i++)
        if (strcmp(n->v[i], s) == 0)
            return true;
    return false;
}

static void names_add(names_t *n, const char *s)
{
    if (s == NULL || !s[0] || names_has(n, s))
        return;
    char **v = realloc(n->v, (n->n + 1) * sizeof(*v));
    if (v == NULL)
        return;
    n->v = v;
    n->v[n->n] = strdup(s);
    if (n->v[n->n])
        n->n++;
}

static bool names_equal(const names_t *a, const names_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!names_has(b, a->v[i]))
            return false;
    return true;
}

/* ---- requests ---- */

static void send_request(px_xds_t *x, int t, const char *error)
{
    if (x->call == NULL)
        return;
    Envoy__Service__Discovery__V3__DiscoveryRequest rq = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    rq.version_info = x->version[t] ? x->version[t] : "";
    rq.response_nonce = x->nonce[t] ? x->nonce[t] : "";
    rq.type_url = (char *)type_urls[t];
    rq.node = x->node;
    rq.n_resource_names = x->subs[t].n;
    rq.resource_names = x->subs[t].v;
    if (error) {
        st.code = 3; /* INVALID_ARGUMENT */
        st.message = (char *)error;
        rq.error_detail = &st;
    }
    size_t len = protobuf_c_message_get_packed_size(&rq.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    protobuf_c_message_pack(&rq.base, buf);
    grpc_call_send(x->call, buf, len);
    free(buf);
    x->sent[t] = true;
}

/* The EDS names a resource set needs. */
static void wanted_names(const px_bundle_t *b, names_t *eds)
{
    for (size_t i = 0; i < b->n[PX_RES_CLUSTER]; i++) {
        const Envoy__Config__Cluster__V3__Cluster *c = (const void *)b->msgs[PX_RES_CLUSTER][i];
        if (c->cluster_discovery_type_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
            c->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
            names_add(eds, c->eds_cluster_config && c->eds_cluster_config->service_name &&
                                   c->eds_cluster_config->service_name[0]
                               ? c->eds_cluster_config->service_name
                               : c->name);
    }
}

/* RDS names come from the compiled listeners (the HCM is inside an Any). */
static void rds_names(const px_snapshot_t *s, names_t *rds)
{
    for (size_t i = 0; i < s->nlisteners; i++) {
        const px_listener_t *l = &s->listeners[i];
        for (size_t k = 0; k <= l->nchains; k++) {
            const px_chain_t *ch = k < l->nchains ? &l->chains[k] : l->default_chain;
            if (ch && ch->rds_name)
                names_add(rds, ch->rds_name);
        }
    }
}

/* ---- responses ---- */

/* Builds the candidate set for a response of type t into cand (sharing the
 * unchanged messages with the state). */
static int candidate(px_xds_t *x, int t, ProtobufCMessage **fresh, size_t nfresh, px_bundle_t *cand)
{
    for (int k = 0; k < PX_RES_NTYPES; k++) {
        if (k == t) {
            if (t == PX_RES_LISTENER || t == PX_RES_CLUSTER) {
                for (size_t i = 0; i < nfresh; i++)
                    if (px_bundle_add(cand, k, fresh[i]) < 0)
                        return -1;
            } else {
                /* EDS/RDS: named resources are replaced, others kept */
                for (size_t i = 0; i < x->state.n[k]; i++) {
                    const char *nm = res_name(k, x->state.msgs[k][i]);
                    bool replaced = false;
                    for (size_t j = 0; j < nfresh; j++)
                        if (strcmp(res_name(k, fresh[j]), nm) == 0)
                            replaced = true;
                    if (!replaced && names_has(&x->subs[k], nm) && px_bundle_add(cand, k, x->state.msgs[k][i]) < 0)
                        return -1;
                }
                for (size_t i = 0; i < nfresh; i++)
                    if (px_bundle_add(cand, k, fresh[i]) < 0)
                        return -1;
            }
        } else {
            for (size_t i = 0; i < x->state.n[k]; i++)
                if (px_bundle_add(cand, k, x->state.msgs[k][i]) < 0)
                    return -1;
        }
    }
    return 0;
}

static bool in_bundle(const px_bundle_t *b, int t, const ProtobufCMessage *m)
{
    for (size_t i = 0; i < b->n[t]; i++)
        if (b->msgs[t][i] == m)
            return true;
    return false;
}

/* Frees the arrays of a bundle whose messages are owned elsewhere. */
static void bundle_release(px_bundle_t *b)
{
    for (int t = 0; t < PX_RES_NTYPES; t++)
        free(b->msgs[t]);
    memset(b, 0, sizeof(*b));
}

/* Warm: every EDS name has an assignment and every RDS name a route config. */
static bool warm(const px_bundle_t *b, const names_t *eds, const names_t *rds)
{
    for (size_t i = 0; i < eds->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n[PX_RES_ENDPOINT] && !found; j++)
            found = strcmp(res_name(PX_RES_ENDPOINT, b->msgs[PX_RES_ENDPOINT][j]), eds->v[i]) == 0;
        if (!found)
            return false;
    }
    for (size_t i = 0; i < rds->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n[PX_RES_ROUTE] && !found; j++)
            found = strcmp(res_name(PX_RES_ROUTE, b->msgs[PX_RES_ROUTE][j]), rds->v[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static void set_error(px_xds_t *x, const char *e)
{
    size_t n = e ? strlen(e) : 0; /* longer reasons are cut */
    if (n >= sizeof(x->last_error))
        n = sizeof(x->last_error) - 1;
    pthread_mutex_lock(&x->mu);
    memcpy(x->last_error, e ? e : "", n);
    x->last_error[n] = '\0';
    pthread_mutex_unlock(&x->mu);
}

static void handle_response(px_xds_t *x, const Envoy__Service__Discovery__V3__DiscoveryResponse *r)
{
    int t = -1;
    for (int k = 0; k < PX_RES_NTYPES; k++)
        if (r->type_url && strcmp(r->type_url, type_urls[k]) == 0)
            t = k;
    if (t < 0) {
        log_warn("xds: ignoring a response of unknown type %s", r->type_url ? r->type_url : "");
        return;
    }
    char err[1024] = "";
    ProtobufCMessage **fresh = calloc(r->n_resources ? r->n_resources : 1, sizeof(*fresh));
    size_t nfresh = 0;
    px_bundle_t cand = {0};
    px_snapshot_t *snap = NULL;
    if (fresh == NULL)
        return;
    for (size_t i = 0; i < r->n_resources; i++) {
        const Google__Protobuf__Any *a = r->resources[i];
        if (a->type_url == NULL || strcmp(a->type_url, type_urls[t]) != 0) {
            snprintf(err, sizeof(err), "resources[%zu]: type %s in a %s response", i,
                     a->type_url ? a->type_url : "(none)", type_urls[t]);
            goto nack;
        }
        fresh[nfresh] = protobuf_c_message_unpack(type_desc[t], NULL, a->value.len, a->value.data);
        if (fresh[nfresh] == NULL) {
            snprintf(err, sizeof(err), "resources[%zu]: undecodable %s", i, type_desc[t]->short_name);
            goto nack;
        }
        nfresh++;
    }
    if (candidate(x, t, fresh, nfresh, &cand) < 0) {
        snprintf(err, sizeof(err), "out of memory");
        goto nack;
    }
    if (t == PX_RES_SECRET && px_bundle_install_secrets(&cand, px_server_secrets(x->srv), err, sizeof(err)) < 0)
        goto nack;
    px_resources_t view;
    px_bundle_view(&cand, &view);
    snap = px_snapshot_build(&view, err, sizeof(err));
    if (snap == NULL)
        goto nack;

    names_t eds = {0}, rds = {0}, sds = {0};
    wanted_names(&cand, &eds);
    rds_names(snap, &rds);
    /* secrets the config names (a TLS chain whose secret has not arrived
     * refuses handshakes until it does; the rest of the config applies) */
    for (size_t i = 0; i < snap->nsds_names; i++)
        names_add(&sds, snap->sds_names[i]);
    if (warm(&cand, &eds, &rds)) {
        if (px_server_apply(x->srv, snap, err, sizeof(err)) < 0) {
            names_free(&eds);
            names_free(&rds);
            names_free(&sds);
            goto nack;
        }
        px_snapshot_unref(x->applied);
        x->applied = px_snapshot_ref(snap);
        atomic_fetch_add(&x->applies, 1);
        /* ready once a full config is in: clusters and listeners both
         * received (and, being warm, their endpoints and routes) */
        bool full = (x->received[PX_RES_CLUSTER] || t == PX_RES_CLUSTER) &&
                    (x->received[PX_RES_LISTENER] || t == PX_RES_LISTENER);
        if (full && !atomic_load(&x->ready)) {
            log_info("xds: first config applied (%zu listeners, %zu clusters)", snap->nlisteners, snap->nclusters);
            atomic_store(&x->ready, true);
        }
    }
    px_snapshot_unref(snap);
    snap = NULL;

    /* commit: messages of the state not in the candidate are freed */
    for (int k = 0; k < PX_RES_NTYPES; k++)
        for (size_t i = 0; i < x->state.n[k]; i++)
            if (!in_bundle(&cand, k, x->state.msgs[k][i]))
                protobuf_c_message_free_unpacked(x->state.msgs[k][i], NULL);
    bundle_release(&x->state);
    x->state = cand;
    free(fresh);
    free(x->version[t]);
    free(x->nonce[t]);
    x->version[t] = strdup(r->version_info ? r->version_info : "");
    x->nonce[t] = strdup(r->nonce ? r->nonce : "");
    x->received[t] = true;
    atomic_fetch_add(&x->acks, 1);
    send_request(x, t, NULL); /* ACK */
    /* follow-up subscriptions */
    if (!names_equal(&eds, &x->subs[PX_RES_ENDPOINT])) {
        names_free(&x->subs[PX_RES_ENDPOINT]);
        x->subs[PX_RES_ENDPOINT] = eds;
        send_request(x, PX_RES_ENDPOINT, NULL);
    } else {
        names_free(&eds);
    }
    if (!names_equal(&rds, &x->subs[PX_RES_ROUTE])) {
        names_free(&x->subs[PX_RES_ROUTE]);
        x->subs[PX_RES_ROUTE] = rds;
        send_request(x, PX_RES_ROUTE, NULL);
    } else {
        names_free(&rds);
    }
    if (!names_equal(&sds, &x->subs[PX_RES_SECRET])) {
        names_free(&x->subs[PX_RES_SECRET]);
        x->subs[PX_RES_SECRET] = sds;
        send_request(x, PX_RES_SECRET, NULL);
    } else {
        names_free(&sds);
    }
    return;
nack:
    log_warn("xds: rejecting %s version %s: %s", type_desc[t]->short_name, r->version_info ? r->version_info : "",
             err);
    set_error(x, err);
    for (size_t i = 0; i < nfresh; i++)
        protobuf_c_message_free_unpacked(fresh[i], NULL);
    free(fresh);
    bundle_release(&cand);
    free(x->nonce[t]);
    x->nonce[t] = strdup(r->nonce ? r->nonce : "");
    atomic_fetch_add(&x->nacks, 1);
    send_request(x, t, err); /* NACK: the last accepted version, this nonce */
}

/* ---- connection ---- */

static void connect_ads(px_xds_t *x);

static void retry_cb(loop_timer_t *t, void *arg)
{
    (void)t;
    connect_ads(arg);
}

static void schedule_retry(px_xds_t *x, const char *why)
{
    if (x->call == NULL && x->client == NULL && loop_timer_active(x->retry))
        return;
    log_warn("xds: %s: %s; retrying in %llu ms (serving the last config)", x->opt.addr, why,
             (unsigned long long)x->backoff_ms);
    loop_timer_start(x->retry, x->backoff_ms, 0);
    x->backoff_ms = x->backoff_ms * 2 > 15000 ? 15000 : x->backoff_ms * 2;
}

static void on_message(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    px_xds_t *x = arg;
    Envoy__Service__Discovery__V3__DiscoveryResponse *r =
        envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    if (r == NULL) {
        log_warn("xds: undecodable DiscoveryResponse (%zu bytes)", len);
        return;
    }
    x->backoff_ms = 500;
    handle_response(x, r);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    px_xds_t *x = arg;
    if (x->call != call)
        return;
    x->call = NULL;
    char why[512];
    snprintf(why, sizeof(why), "stream closed: %s %s", grpc_status_name(status), message ? message : "");
    if (x->client) {
        grpc_client_free(x->client);
        x->client = NULL;
    }
    schedule_retry(x, why);
}

static void on_disconnect(grpc_client_t *c, const char *reason, void *arg)
{
    px_xds_t *x = arg;
    if (x->client != c)
        return;
    grpc_client_free(c);
    x->client = NULL;
    x->call = NULL;
    schedule_retry(x, reason ? reason : "disconnected");
}

static void connect_ads(px_xds_t *x)
{
    grpc_client_opts_t co = {.on_disconnect = on_disconnect, .arg = x, .connect_timeout_ms = 5000,
                             .tls = x->tls, .sni = x->opt.tls_server_name, .keepalive_ms = 30000};
    if (x->tls) {
        /* the root may have been rotated since the last connection */
        char terr[256];
        const char *alpn[] = {"h2", NULL};
        tp_tls_config_t tc = {.ca_file = x->opt.tls_root_file, .verify = TP_VERIFY_REQUIRE, .alpn = alpn,
                              .verify_name = x->opt.tls_server_name};
        if (tp_tls_ctx_update(x->tls, &tc, terr, sizeof(terr)) < 0)
            log_warn("xds: keeping the previous control-plane root: %s", terr);
    }
    char err[256] = "cannot connect";
    x->client = grpc_client_connect(x->loop, x->opt.addr, &co, err, sizeof(err));
    if (x->client == NULL) {
        schedule_retry(x, err);
        return;
    }
    grpc_call_cbs_t cbs = {.on_message = on_message, .on_close = on_close};
    x->call = grpc_call_start(x->client, ADS_PATH, NULL, 0, &cbs, x);
    if (x->call == NULL) {
        grpc_client_free(x->client);
        x->client = NULL;
        schedule_retry(x, "cannot open the ADS stream");
        return;
    }
    /* a new stream: subscribe again, with the versions already accepted */
    for (int i = 0; i < PX_RES_NTYPES; i++) {
        int t = sub_order[i];
        free(x->nonce[t]);
        x->nonce[t] = NULL;
        if (t == PX_RES_CLUSTER || t == PX_RES_LISTENER || x->subs[t].n)
            send_request(x, t, NULL);
    }
}

static void *xds_main(void *arg)
{
    px_xds_t *x = arg;
    loop_run(x->loop);
    return NULL;
}

static void start_on_loop(void *arg)
{
    connect_ads(arg);
}

px_xds_t *px_xds_start(const px_xds_opts_t *o, px_server_t *srv, char *err, size_t errlen)
{
    px_xds_t *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    x->opt = *o;
    x->srv = srv;
    x->backoff_ms = 500;
    pthread_mutex_init(&x->mu, NULL);
    x->node = make_node(o);
    x->loop = loop_new();
    if (x->node == NULL || x->loop == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (o->tls_root_file) {
        if (x->opt.tls_server_name == NULL)
            x->opt.tls_server_name = "istiod.istio-system.svc";
        const char *alpn[] = {"h2", NULL};
        tp_tls_config_t tc = {.ca_file = o->tls_root_file, .verify = TP_VERIFY_REQUIRE, .alpn = alpn,
                              .verify_name = x->opt.tls_server_name};
        char terr[256];
        x->tls = tp_tls_client_new(&tc, terr, sizeof(terr));
        if (x->tls == NULL) {
            snprintf(err, errlen, "xDS TLS root %s: %s", o->tls_root_file, terr);
            goto fail;
        }
    }
    x->retry = loop_timer_new(x->loop, retry_cb, x);
    loop_post(x->loop, start_on_loop, x);
    if (pthread_create(&x->thread, NULL, xds_main, x) != 0) {
        snprintf(err, errlen, "cannot start the xDS thread");
        goto fail;
    }
    return x;
fail:
    if (x->tls)
        tp_tls_ctx_unref(x->tls);
    if (x->loop)
        loop_free(x->loop);
    if (x->node)
        protobuf_c_message_free_unpacked(&x->node->base, NULL);
    pthread_mutex_destroy(&x->mu);
    free(x);
    return NULL;
}

static void stop_on_loop(void *arg)
{
    px_xds_t *x = arg;
    if (x->client)
        grpc_client_free(x->client);
    x->client = NULL;
    x->call = NULL;
    loop_timer_free(x->retry);
    x->retry = NULL;
    loop_stop(x->loop);
}

void px_xds_stop(px_xds_t *x)
{
    if (x == NULL)
        return;
    loop_post(x->loop, stop_on_loop, x);
    pthread_join(x->thread, NULL);
    loop_run_once(x->loop, 0);
    loop_free(x->loop);
    px_bundle_free(&x->state);
    for (int t = 0; t < PX_RES_NTYPES; t++) {
        free(x->version[t]);
        free(x->nonce[t]);
        names_free(&x->subs[t]);
    }
    px_snapshot_unref(x->applied);
    if (x->tls)
        tp_tls_ctx_unref(x->tls);
    protobuf_c_message_free_unpacked(&x->node->base, NULL);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

bool px_xds_ready(px_xds_t *x)
{
    return atomic_load(&x->ready);
}

void px_xds_status(px_xds_t *x, px_xds_status_t *st)
{
    st->acks = atomic_load(&x->acks);
    st->nacks = atomic_load(&x->nacks);
    st->applies = atomic_load(&x->applies);
    pthread_mutex_lock(&x->mu);
    snprintf(st->last_error, sizeof(st->last_error), "%s", x->last_error);
    pthread_mutex_unlock(&x->mu);
}
