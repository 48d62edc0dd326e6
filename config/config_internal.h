/*
 * config_internal: what the config part's own files share: the per-kind
 * validators (validate_*.c) and the rule helpers they use (rules.c).
 * Not for use outside config/.
 */
#ifndef MESH_CONFIG_INTERNAL_H
#define MESH_CONFIG_INTERNAL_H

#include "config.h"

/* One validator per kind, named cfg_validate_<Kind>; body is the kind's
 * struct cfg_<Kind>Object. They report through cfg_verr() and never fail
 * otherwise. The path starts empty: validators push ".spec" etc. themselves. */
#define CFG_X_VALIDATOR_DECL(K) void cfg_validate_##K(cfg_vctx_t *v, const void *body);
CFG_ALL_KINDS(CFG_X_VALIDATOR_DECL)

/* Decodes node into a zeroed struct described by desc, reporting through v.
 * Returns 0, or -1 when any error was reported. */
int cfg_decode_message(cfg_vctx_t *v, arena_t *a, const cfg_desc_t *desc, const doc_node_t *n,
                       void *out);

/* Copies a decoded object into an arena of exactly its size (one
 * allocation). Returns a new object with one reference; o is untouched. */
cfg_object_t *cfg_object_compact(const cfg_object_t *o);

/* ---- names ---- */
bool cfg_is_dns1123_label(const char *s); /* [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63 */
bool cfg_is_dns1123_subdomain(const char *s); /* dot-separated labels, <= 253 */
/* Kubernetes label key (optional DNS prefix "/" name) and value rules. */
bool cfg_is_label_key(const char *s, const char **why);
bool cfg_is_label_value(const char *s, const char **why);
/* Checks every key and value of a label map; reports at path + "." + field. */
void cfg_check_labels(cfg_vctx_t *v, const char *field, const cfg_map_t *labels);

/* ---- hosts ---- */
/* A DNS name, optionally with a leading "*." or equal to "*" (Istio's
 * ValidateWildcardDomain). */
bool cfg_is_wildcard_domain(const char *host, const char **why);
/* A DNS name without wildcard. */
bool cfg_is_fqdn(const char *host, const char **why);
/* "ns/host" form used by Sidecar egress and Gateway servers: namespace part
 * is "*", "." , "~" or a DNS label; host part a wildcard domain. */
bool cfg_is_namespaced_host(const char *s, const char **why);
/* Gateway reference in a VirtualService: "mesh", "name", "ns/name". */
bool cfg_is_gateway_ref(const char *s, const char **why);

/* ---- addresses ---- */
/* An IPv4 or IPv6 address. */
bool cfg_is_ip(const char *s);
/* An address or address/prefix (CIDR). */
bool cfg_is_ip_or_cidr(const char *s, const char **why);
bool cfg_is_cidr(const char *s);

/* ---- ports and protocols ---- */
bool cfg_is_port(int64_t p); /* 1..65535 */
/* Istio port protocols: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, MYSQL,
 * REDIS, TCP, TLS, UDP (case-insensitive as Istio parses them). */
bool cfg_is_protocol(const char *p);
/* Istio port name rule: a DNS label (IANA service names allow [-a-z0-9]). */
bool cfg_is_port_name(const char *s);

/* ---- values ---- */
/* Compiles an RE2-style regex with PCRE2 under match limits; rejects what RE2
 * would refuse (backreferences, lookaround, possessive and atomic groups,
 * recursion). */
bool cfg_is_regex(const char *re, char *why, size_t why_size);
/* Reports "must be >= <min>" when ns < min (and the field is set). */
void cfg_check_duration_min(cfg_vctx_t *v, const char *field, int64_t ns, int64_t min_ns);
/* An http(s) URL with scheme and host (jwksUri etc.). */
bool cfg_is_url(const char *s, const char **why);
/* HTTP header name (RFC 7230 token, lower or mixed case). */
bool cfg_is_header_name(const char *s);

#endif
