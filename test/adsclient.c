/* adsclient: see adsclient.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../xds/xds.h"
#include "../xds/xds_server.h"
#include "adsclient.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "testutil.h"

static void on_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    tads_t *a = arg;
    assert_true(a->nmsgs < TADS_MAXMSG);
    void *m = a->delta
                  ? (void *)envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, msg)
                  : (void *)envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    assert_non_null(m);
    a->raw[a->nmsgs] = malloc(len ? len : 1);
    assert_non_null(a->raw[a->nmsgs]);
    memcpy(a->raw[a->nmsgs], msg, len);
    a->rawlen[a->nmsgs] = len;
    a->msgs[a->nmsgs++] = m;
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    tads_t *a = arg;
    a->closed = true;
    a->call = NULL;
    a->status = status;
    snprintf(a->message, sizeof(a->message), "%s", message ? message : "");
}

static const grpc_call_cbs_t CBS = {.on_message = on_msg, .on_close = on_close};

tads_t *tads_open(loop_t *loop, const char *addr, const char *node_id, bool delta)
{
    tads_t *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->loop = loop;
    a->delta = delta;
    a->node_id = node_id;
    char err[256];
    grpc_client_opts_t co = {0};
    a->c = grpc_client_connect(loop, addr, &co, err, sizeof(err));
    if (a->c == NULL)
        fail_msg("connect %s: %s", addr, err);
    a->call = grpc_call_start(a->c, delta ? XDS_ADS_DELTA_PATH : XDS_ADS_SOTW_PATH, NULL, 0, &CBS, a);
    assert_non_null(a->call);
    return a;
}

void tads_close(tads_t *a)
{
    grpc_client_free(a->c);
    for (int i = 0; i < 5; i++)
        loop_run_once(a->loop, 0);
    for (int i = 0; i < a->nmsgs; i++) {
        if (a->delta)
            envoy__service__discovery__v3__delta_discovery_response__free_unpacked(a->msgs[i], NULL);
        else
            envoy__service__discovery__v3__discovery_response__free_unpacked(a->msgs[i], NULL);
        free(a->raw[i]);
    }
    free(a);
}

/* The node for the stream's first request, into *plain when a->node is unset. */
static Envoy__Config__Core__V3__Node *first_node(tads_t *a, Envoy__Config__Core__V3__Node *plain)
{
    if (a->sent_node)
        return NULL;
    a->sent_node = true;
    if (a->node != NULL)
        return a->node;
    plain->id = (char *)a->node_id;
    return plain;
}

static void send_packed(tads_t *a, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

void tads_send(tads_t *a, const char *type_url, const char *const *names, size_t nnames,
               const char *version, const char *nonce, const char *error)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    req.node = first_node(a, &node);
    req.type_url = (char *)type_url;
    req.resource_names = (char **)names;
    req.n_resource_names = nnames;
    req.version_info = (char *)(version ? version : "");
    req.response_nonce = (char *)(nonce ? nonce : "");
    if (error) {
        st.code = 3;
        st.message = (char *)error;
        req.error_detail = &st;
    }
    send_packed(a, &req.base);
}

void tads_send_delta(tads_t *a, const char *type_url, const char *const *sub, size_t nsub,
                     const char *const *unsub, size_t nunsub, const char *nonce, const char *error)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    req.node = first_node(a, &node);
    req.type_url = (char *)type_url;
    req.resource_names_subscribe = (char **)sub;
    req.n_resource_names_subscribe = nsub;
    req.resource_names_unsubscribe = (char **)unsub;
    req.n_resource_names_unsubscribe = nunsub;
    req.response_nonce = (char *)(nonce ? nonce : "");
    if (error) {
        st.code = 3;
        st.message = (char *)error;
        req.error_detail = &st;
    }
    send_packed(a, &req.base);
}

void *tads_wait(tads_t *a, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    while (a->next >= a->nmsgs && !a->closed && loop_clock_ms() < end)
        loop_run_once(a->loop, 5);
    return a->next < a->nmsgs ? a->msgs[a->next++] : NULL;
}
