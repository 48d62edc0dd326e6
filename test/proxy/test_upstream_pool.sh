#!/bin/sh
# Upstream connection-pool settings as a DestinationRule's connectionPool
# writes them (HttpProtocolOptions and upstream_connection_options):
# max_requests_per_connection closes a connection after N requests,
# idle_timeout closes a pooled connection left idle, tcp_keepalive turns on
# TCP keepalive probes. meshproxy from a static config on 127.0.0.66, a
# backend on 127.0.0.67:8080; ok/not ok lines; stops what it started.
set -u
. "$(dirname "$0")/../lib.sh"
cat >"$T/config.json" <<'JSON'
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "in",
  "address": {"socket_address": {"address": "127.0.0.66", "port_value": 8080}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "in", "rds": {"route_config_name": "r"}}}]}]},
 {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "r",
  "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
   {"match": {"prefix": "/ka"}, "route": {"cluster": "ka"}},
   {"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web", "type": "STATIC",
  "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
   "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
   "common_http_protocol_options": {"max_requests_per_connection": 3, "idle_timeout": "1s"},
   "explicit_http_config": {"http_protocol_options": {}}}},
  "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
   {"socket_address": {"address": "127.0.0.67", "port_value": 8080}}}}]}]}},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "ka", "type": "STATIC",
  "upstream_connection_options": {"tcp_keepalive": {"keepalive_probes": 4, "keepalive_time": 77, "keepalive_interval": 9}},
  "load_assignment": {"cluster_name": "ka", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
   {"socket_address": {"address": "127.0.0.67", "port_value": 8081}}}}]}]}}
]}
JSON
start backend "$BUILD/backend" --listen 127.0.0.67:8080 --name web
start backend2 "$BUILD/backend" --listen 127.0.0.67:8081 --name ka
start proxy "$BUILD/meshproxy" sidecar --config-file "$T/config.json" --bind 127.0.0.66 --admin-port 25666 --no-access-log \
    --concurrency 1
wait_url http://127.0.0.66:15021/healthz/ready
cx() { curl -s -m 2 http://127.0.0.1:25666/stats | sed -n 's/^upstream_cx_total: //p'; }
get() { curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.66:8080$1"; }

# 9 requests, one after the other: 3 upstream connections of 3 requests
for i in 1 2 3 4 5 6 7 8 9; do get / >/dev/null; done
n=$(cx)
check max_requests_per_connection "9 requests used $n upstream connections (want 3)" test "$n" = 3
# two more share a fourth connection, which then stays pooled
get / >/dev/null
get / >/dev/null
n=$(cx)
check pooled_connection_reused "11 requests used $n connections (want 4)" test "$n" = 4
# idle for longer than idle_timeout (1 s): closed; the next request opens a fifth
sleep 1.6
code=$(get /)
n=$(cx)
check idle_timeout_closes "after 1.6 s idle the next request used connection $n (want 5), status $code" \
    test "$n" = 5 -a "$code" = 200

# keepalive: the pooled connection to the "ka" backend carries a keepalive timer
get /ka >/dev/null
ss -tnoH state established dst 127.0.0.67:8081 >"$T/ss" 2>&1
check tcp_keepalive_on "no 77 s keepalive timer on the upstream socket: $(cat "$T/ss")" grep -Eq "timer:\(keepalive,1min1[0-7]" "$T/ss"
finish
