#!/bin/sh
# A virtual host with require_tls: plaintext requests get a 301 to the same
# URL over https, other virtual hosts on the listener are served as usual.
# The access log is written as JSON (--access-log-format json).
# meshproxy from a static config on 127.0.0.64; ok/not ok lines.
set -u
. "$(dirname "$0")/../lib.sh"
cat >"$T/config.json" <<'JSON'
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "in",
  "address": {"socket_address": {"address": "127.0.0.64", "port_value": 8080}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "in", "rds": {"route_config_name": "r"}}}]}]},
 {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "r",
  "virtual_hosts": [
   {"name": "secure", "domains": ["secure.example.com", "secure.example.com:*"], "require_tls": "ALL",
    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]},
   {"name": "plain", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web", "type": "STATIC",
  "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
   {"socket_address": {"address": "127.0.0.65", "port_value": 8080}}}}]}]}}
]}
JSON
start backend "$BUILD/backend" --listen 127.0.0.65:8080 --name web
start proxy "$BUILD/meshproxy" sidecar --config-file "$T/config.json" --bind 127.0.0.64 --admin-port 0 \
    --access-log-format json
wait_url http://127.0.0.64:15021/healthz/ready
curl -s -m 3 -D "$T/h1" -o /dev/null -H 'Host: secure.example.com:8080' 'http://127.0.0.64:8080/a/b?c=d'
check require_tls_redirects "" grep -q '^HTTP/1.1 301' "$T/h1"
check require_tls_location "" grep -qi '^location: https://secure.example.com:8080/a/b?c=d' "$T/h1"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' -H 'Host: other.example.com' http://127.0.0.64:8080/)
check require_tls_other_hosts_served "" test "$code" = 200
# the JSON access log: one object per request, strings escaped
curl -s -m 3 -o /dev/null -A 'agent "quoted" \ back' -H 'Host: other.example.com' http://127.0.0.64:8080/json
sleep 0.3
check access_log_json "" python3 - "$T/proxy.log" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('{')]
objs = [json.loads(l) for l in lines]
assert len(objs) == 3, len(objs)
last = objs[-1]
assert last["path"] == "/json" and last["method"] == "GET" and last["response_code"] == 200, last
assert last["user_agent"] == 'agent "quoted" \\ back', last["user_agent"]
assert last["authority"] == "other.example.com" and last["upstream_cluster"] == "web", last
assert last["protocol"] == "HTTP/1.1" and last["response_flags"] == "-", last
assert objs[0]["response_code"] == 301, objs[0]
PY
finish
