/*
 * rbac: meshproxy's authorization (private to proxy/) — the RBAC filters
 * meshd compiles AuthorizationPolicies into (envoy.filters.http.rbac and
 * envoy.filters.network.rbac, both carrying an envoy.config.rbac.v3.RBAC),
 * compiled into a tree the request path evaluates without allocating.
 *
 * A px_rbac_t lives in a snapshot's arena (its regexes registered with the
 * snapshot, freed with it); evaluation is a pure function of the compiled
 * rules and the attributes of one connection or request.
 *
 * Evaluation follows Envoy: each filter has one action. ALLOW: the request
 * is allowed when some policy matches, else denied. DENY: denied when some
 * policy matches. LOG (Istio's AUDIT): never denies, reports the match.
 * Filters run in the order the chain lists them (meshd emits CUSTOM, DENY,
 * then ALLOW), the first denial wins. A policy matches when any of its
 * permissions and any of its principals match (and its condition, which
 * meshd never emits and which compilation refuses).
 */
#ifndef MESH_PROXY_RBAC_INTERNAL_H
#define MESH_PROXY_RBAC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config_internal.h"

typedef struct px_rbac px_rbac_t;

typedef enum { PX_RBAC_ALLOW = 0, PX_RBAC_DENY, PX_RBAC_LOG } px_rbac_action_t;

/* Compiles one filter's rules: `msg` is an envoy.config.rbac.v3.RBAC
 * (Envoy__Config__Rbac__V3__RBAC) or NULL (no rules: the filter allows
 * everything); `shadow` the shadow_rules (evaluated for stats only) or NULL.
 * Memory from `a`; each compiled regex is handed to keep_re(ud, code) so the
 * snapshot frees it (keep_re returns -1 on failure). `stat_prefix` names the
 * filter in logs and stats. NULL with err naming the policy, the field and
 * the reason on what cannot be enforced as written (an unknown matcher, a bad
 * regex, a condition). */
px_rbac_t *px_rbac_compile(arena_t *a, const ProtobufCMessage *msg, const ProtobufCMessage *shadow,
                           const char *stat_prefix, int (*keep_re)(void *ud, pcre2_code *re),
                           void *ud, char *err, size_t errlen);

/* What one connection or request is judged on. Strings need not be
 * NUL-terminated where a length is given; NULL / 0 means absent. */
typedef struct px_rbac_attrs {
    const struct sockaddr *peer;   /* the downstream connection's remote address (direct_remote_ip, source_ip) */
    const struct sockaddr *remote; /* the original client (x-forwarded-for aware, remote_ip); NULL: peer */
    const struct sockaddr *local;  /* the destination address and port (destination_ip/_port) */
    const char *principal;         /* the peer certificate's URI SAN "spiffe://..." ("" or NULL: plaintext) */
    const char *sni;               /* requested_server_name */
    bool http;                     /* false: a TCP connection (only network attributes) */
    const char *method;
    size_t method_len;
    const char *path;              /* request target incl. query (url_path matches the path without it) */
    size_t path_len;
    const char *host;              /* :authority / Host */
    size_t host_len;
    const px_h1_header_t *headers; /* the request headers (":method", ":path", ":authority" are served
                                    * from the fields above) */
    size_t nheaders;
} px_rbac_attrs_t;

typedef struct px_rbac_result {
    bool allowed;
    const char *policy;        /* the matched policy's name (DENY/LOG hit, ALLOW hit) or NULL */
    const char *shadow_policy; /* the matched shadow policy or NULL */
    bool shadow_allowed;
} px_rbac_result_t;

/* Evaluates one filter. */
void px_rbac_eval(const px_rbac_t *r, const px_rbac_attrs_t *a, px_rbac_result_t *out);
/* The filter's action and stat prefix. */
px_rbac_action_t px_rbac_action(const px_rbac_t *r);
const char *px_rbac_stat_prefix(const px_rbac_t *r);

#endif
