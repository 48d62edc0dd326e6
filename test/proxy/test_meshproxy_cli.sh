#!/bin/sh
# meshproxy as a user runs it: check-config on good and bad files, flag
# errors, exit codes. Prints "ok NAME" / "not ok NAME" per check.
BUILD=${MESH_BUILD:-build}
PROXY="$BUILD/meshproxy"
tmp=$(mktemp -d /tmp/meshproxy-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

check() {
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok $name"; else echo "not ok $name"; fi
}

if [ ! -x "$PROXY" ]; then
    echo "not ok meshproxy_built ($PROXY missing)"
    exit 1
fi

cat >"$tmp/good.json" <<'JSON'
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "in",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "in", "rds": {"route_config_name": "r"}}}]}]},
 {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "r",
  "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web", "type": "EDS", "lbPolicy": "LEAST_REQUEST"},
 {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "clusterName": "web",
  "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 9080}}}}]}]}
]}
JSON
"$PROXY" check-config "$tmp/good.json" >"$tmp/out" 2>&1
check check_config_accepts_good_file test $? -eq 0
check check_config_lists_listener grep -q '  listener in 127.0.0.1:8080' "$tmp/out"
check check_config_lists_chain grep -q '    chain -: http' "$tmp/out"
check check_config_counts_endpoints grep -q '  cluster web: 1 healthy endpoints' "$tmp/out"

sed 's/"prefix": "\/"}/"safe_regex": {"regex": "(["}}/' "$tmp/good.json" >"$tmp/bad.json"
"$PROXY" check-config "$tmp/bad.json" >"$tmp/out" 2>&1
check check_config_rejects_bad_regex test $? -eq 1
check bad_regex_error_names_field grep -q 'RouteConfiguration r: virtual_hosts\[0\].routes\[0\].match.safe_regex.regex: invalid regex' "$tmp/out"

printf '{"resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": 5}]}' >"$tmp/type.json"
"$PROXY" check-config "$tmp/type.json" >"$tmp/out" 2>&1
check wrong_json_type_is_named grep -q 'resources\[0\] (Cluster): name: must be a string' "$tmp/out"

"$PROXY" check-config "$tmp/missing.json" >"$tmp/out" 2>&1
check missing_file_fails test $? -eq 1
check missing_file_is_named grep -q "missing.json: No such file" "$tmp/out"

"$PROXY" sidecar >"$tmp/out" 2>&1
check sidecar_needs_a_source test $? -eq 2
check sidecar_source_message grep -q 'exactly one of --config-file and --xds-addr is required' "$tmp/out"

"$PROXY" sidecar --config-file "$tmp/good.json" --concurrency lots >"$tmp/out" 2>&1
check bad_concurrency_rejected test $? -eq 2
check bad_concurrency_message grep -q -- '--concurrency: expects an integer' "$tmp/out"

"$PROXY" frobnicate >"$tmp/out" 2>&1
check unknown_mode_prints_usage grep -q 'usage: meshproxy' "$tmp/out"
