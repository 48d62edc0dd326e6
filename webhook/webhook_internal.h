/*
 * webhook_internal: what the files of webhook/ share and nobody else uses.
 */
#ifndef MESH_WEBHOOK_INTERNAL_H
#define MESH_WEBHOOK_INTERNAL_H

#include <stdatomic.h>

#include <json-c/json.h>

#include "webhook.h"

/* The values document, decoded (see webhook/TEMPLATE.md). Immutable once
 * built; every string is owned by the config. */
struct webhook_config {
    _Atomic uint32_t refs;
    char *revision;
    char *policy; /* "enabled" or "disabled" */
    char *image;
    char *image_pull_policy; /* NULL: not set */
    char *discovery_address;
    char *ca_address;
    char *mesh_ns;
    char *trust_domain;
    char *cluster_id;
    char *domain_suffix;
    char *log_level;
    int64_t proxy_uid, proxy_gid;
    int64_t outbound_port, inbound_port, status_port, health_port, prometheus_port;
    json_object *resources; /* {"requests":{..},"limits":{..}}, may be empty */
    bool hold_application;
    bool prometheus_merge;
    char *include_outbound_ip_ranges;
    char *exclude_outbound_ip_ranges;
    char *include_inbound_ports;
    char *exclude_inbound_ports;
    char *exclude_outbound_ports;
    int64_t readiness_initial_delay, readiness_period, readiness_timeout, readiness_failure_threshold;
    char *token_audience;
    int64_t token_expiration;
    char *root_cert_configmap;
    json_object *env; /* extra proxy env: name -> string */
    json_object *image_pull_secrets; /* array of names, may be empty */
};

/* Parses a JSON body with json-c's depth limit; NULL with err on failure. */
json_object *webhook_json_parse(const char *buf, size_t len, char *err, size_t errlen);

#endif
