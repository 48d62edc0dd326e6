/*
 * libFuzzer target: the ADS server's request path (xds/server.c).
 *
 * The input's first byte picks the protocol (even: state of the world, odd:
 * delta); the rest is split into messages, each prefixed by a 2-byte
 * big-endian length. Every message is decoded once directly
 * (DiscoveryRequest and DeltaDiscoveryRequest) and then sent, as is, on one
 * ADS call to an in-process server (a small config store, 127.0.0.1,
 * ephemeral port, started once), so the server decodes it, reads the node,
 * tracks nonces and subscriptions and answers.
 *
 * Invariants checked with __builtin_trap(): every response decodes as the
 * protocol's response message, names a type meshd serves, carries a nonce,
 * and every resource's Any has the response's type URL; the call ends either
 * by our cancel or with INVALID_ARGUMENT/RESOURCE_EXHAUSTED/UNIMPLEMENTED;
 * no stream stays open after the call is cancelled.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/grpc.h"
#include "../../common/log.h"
#include "../../xds/xds.h"
#include "../../xds/xds_server.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

static const char *const WORLD =
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
    "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sleep-a\n  namespace: default\n"
    "  labels: {app: sleep}\nspec:\n  containers: [{name: s, image: s}]\n"
    "status: {podIP: 10.1.0.50}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

static loop_t *loop;
static cfg_store_t *store;
static grpc_server_t *grpc;
static xds_server_t *xs;
static grpc_client_t *client;
static char addr[64];

typedef struct call_state {
    bool delta;
    bool closed;
    int status;
    bool cancelled;
} call_state_t;

static void setup(void)
{
    log_set_level(LOG_NONE);
    loop = loop_new();
    store = cfg_store_new();
    cfg_store_begin(store);
    cfg_load_buffer(WORLD, strlen(WORLD), DOC_FMT_YAML, NULL, cfg_store_put_result, store);
    cfg_store_commit(store);
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    grpc = grpc_server_new(loop, &go, err, sizeof(err));
    if (grpc == NULL)
        __builtin_trap();
    xs = xds_server_start(loop, grpc, store, NULL);
    if (xs == NULL)
        __builtin_trap();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", grpc_server_port(grpc));
}

static void check_any(const Google__Protobuf__Any *a, const char *url)
{
    if (a == NULL || a->type_url == NULL || strcmp(a->type_url, url) != 0)
        __builtin_trap();
}

static void on_message(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    call_state_t *cs = arg;
    if (cs->delta) {
        Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r =
            envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, msg);
        if (r == NULL || xds_type_from_url(r->type_url) < 0 || r->nonce[0] == 0)
            __builtin_trap();
        for (size_t i = 0; i < r->n_resources; i++)
            check_any(r->resources[i]->resource, r->type_url);
        envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
    } else {
        Envoy__Service__Discovery__V3__DiscoveryResponse *r =
            envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
        if (r == NULL || xds_type_from_url(r->type_url) < 0 || r->nonce[0] == 0)
            __builtin_trap();
        for (size_t i = 0; i < r->n_resources; i++)
            check_any(r->resources[i], r->type_url);
        envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
    }
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    (void)message;
    call_state_t *cs = arg;
    cs->closed = true;
    cs->status = status;
}

static const grpc_call_cbs_t CBS = {.on_message = on_message, .on_close = on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (loop == NULL)
        setup();
    if (size < 1)
        return 0;
    if (client == NULL || !grpc_client_alive(client)) {
        if (client)
            grpc_client_free(client);
        char err[256];
        grpc_client_opts_t co = {0};
        client = grpc_client_connect(loop, addr, &co, err, sizeof(err));
        if (client == NULL)
            __builtin_trap();
    }
    call_state_t cs = {.delta = data[0] & 1};
    grpc_call_t *call = grpc_call_start(
        client, cs.delta ? XDS_ADS_DELTA_PATH : XDS_ADS_SOTW_PATH, NULL, 0, &CBS, &cs);
    if (call == NULL)
        return 0;
    size_t off = 1;
    int nmsg = 0;
    while (off + 2 <= size && nmsg < 16) {
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        const uint8_t *m = data + off;
        off += len;
        nmsg++;
        /* the decoders alone */
        Envoy__Service__Discovery__V3__DiscoveryRequest *a =
            envoy__service__discovery__v3__discovery_request__unpack(NULL, len, m);
        if (a)
            envoy__service__discovery__v3__discovery_request__free_unpacked(a, NULL);
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *d =
            envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, m);
        if (d)
            envoy__service__discovery__v3__delta_discovery_request__free_unpacked(d, NULL);
        if (!cs.closed)
            grpc_call_send(call, m, len);
        for (int i = 0; i < 4 && !cs.closed; i++)
            loop_run_once(loop, 0);
    }
    for (int i = 0; i < 20 && !cs.closed; i++)
        loop_run_once(loop, 1);
    if (!cs.closed) {
        cs.cancelled = true;
        grpc_call_cancel(call);
    }
    for (int i = 0; i < 200 && grpc_server_streams(grpc) > 0; i++)
        loop_run_once(loop, 1);
    if (!cs.closed)
        __builtin_trap();
    if (!cs.cancelled && cs.status != GRPC_OK && cs.status != GRPC_INVALID_ARGUMENT &&
        cs.status != GRPC_RESOURCE_EXHAUSTED && cs.status != GRPC_UNIMPLEMENTED &&
        cs.status != GRPC_UNAVAILABLE)
        __builtin_trap();
    if (grpc_server_streams(grpc) > 0)
        __builtin_trap();
    return 0;
}
