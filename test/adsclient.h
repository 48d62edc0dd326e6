/*
 * adsclient: an ADS client for tests of meshd's xDS server, on the test's
 * own event loop. Every response is kept, decoded and as received (raw), in
 * arrival order; tads_wait() hands them out one by one.
 *
 *   tads_t *a = tads_open(loop, "127.0.0.1:15010", "sidecar~10.1.0.1~a.default~...", false);
 *   tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
 *   Envoy__Service__Discovery__V3__DiscoveryResponse *r = tads_wait(a, 3000);
 *   tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, r->version_info, r->nonce, NULL);   (ACK)
 *   tads_close(a);
 */
#ifndef MESH_TEST_ADSCLIENT_H
#define MESH_TEST_ADSCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/grpc.h"
#include "../common/loop.h"
#include "envoy/config/core/v3/base.pb-c.h"

#define TADS_MAXMSG 128

typedef struct tads {
    loop_t *loop;
    grpc_client_t *c;
    grpc_call_t *call;
    bool delta;     /* DeltaAggregatedResources; responses are DeltaDiscoveryResponse */
    bool sent_node; /* the first request carried the node */
    const char *node_id;
    /* The node the first request carries; NULL: one with node_id alone. Set
     * before the first send; must outlive it. */
    Envoy__Config__Core__V3__Node *node;
    void *msgs[TADS_MAXMSG];
    uint8_t *raw[TADS_MAXMSG];
    size_t rawlen[TADS_MAXMSG];
    int nmsgs, next;
    bool closed; /* the server ended the stream */
    int status;
    char message[256];
} tads_t;

/* Opens a stream to addr; fails the test if it cannot connect. */
tads_t *tads_open(loop_t *loop, const char *addr, const char *node_id, bool delta);
void tads_close(tads_t *a);
/* A DiscoveryRequest; error (if not NULL) goes in error_detail, making it a NACK. */
void tads_send(tads_t *a, const char *type_url, const char *const *names, size_t nnames,
               const char *version, const char *nonce, const char *error);
/* A DeltaDiscoveryRequest. */
void tads_send_delta(tads_t *a, const char *type_url, const char *const *sub, size_t nsub,
                     const char *const *unsub, size_t nunsub, const char *nonce, const char *error);
/* The next response within timeout_ms, or NULL (none, or the stream ended). */
void *tads_wait(tads_t *a, int timeout_ms);

#endif
