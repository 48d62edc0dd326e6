#!/bin/sh
# meshproxy's HTTP/2 as curl sees it: h2c with prior knowledge on a plaintext
# listener, h2 negotiated by ALPN on a TLS listener (a self-signed
# certificate made here), HTTP/1.1 still served on both, and h2load's
# multiplexed streams on one connection when it is installed. The backend
# is build/backend. Prints "ok NAME" / "not ok NAME" per check.
BUILD=${MESH_BUILD:-build}
PROXY="$BUILD/meshproxy"
BACKEND="$BUILD/backend"
tmp=$(mktemp -d /tmp/meshproxy-h2curl.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

check() {
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok $name"; else echo "not ok $name"; fi
}

for b in "$PROXY" "$BACKEND"; do
    if [ ! -x "$b" ]; then
        echo "not ok built ($b missing)"
        exit 1
    fi
done

# free ports from the kernel
ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(5)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
HTTP=$1 HTTPS=$2 BE=$3 STATS=$4 ADMIN=$5

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 \
    -subj "/CN=h2.test" -addext "subjectAltName=DNS:h2.test" >/dev/null 2>&1

# the plaintext listener sends /viatls to the TLS listener over HTTP/2 (ALPN h2)
route='"route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/viatls"}, "route": {"cluster": "tlsself"}}, {"match": {"prefix": "/"}, "route": {"cluster": "be"}}]}]}'
route_tls='"route_config": {"name": "t", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "be"}}]}]}'
hcm='"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "stat_prefix": "in"'
cat >"$tmp/config.json" <<JSON
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "plain",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": $HTTP}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {$hcm, $route}}]}]},
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "tls",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": $HTTPS}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {$hcm, $route_tls}}],
   "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
     "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
     "common_tls_context": {"alpn_protocols": ["h2", "http/1.1"],
       "tls_certificates": [{"certificate_chain": {"filename": "$tmp/cert.pem"},
                             "private_key": {"filename": "$tmp/key.pem"}}]}}}}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "be", "connect_timeout": "1s",
  "load_assignment": {"cluster_name": "be", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
   {"socket_address": {"address": "127.0.0.1", "port_value": $BE}}}}]}]}},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "tlsself", "connect_timeout": "1s",
  "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}},
  "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "sni": "h2.test",
    "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "$tmp/cert.pem"}}}}},
  "load_assignment": {"cluster_name": "tlsself", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
   {"socket_address": {"address": "127.0.0.1", "port_value": $HTTPS}}}}]}]}}
]}
JSON

"$BACKEND" --listen "127.0.0.1:$BE" --name curl-be >"$tmp/backend.log" 2>&1 &
pids="$pids $!"
"$PROXY" sidecar --config-file "$tmp/config.json" --concurrency 2 --bind 127.0.0.1 --stats-port "$STATS" \
    --ready-port 0 --admin-port "$ADMIN" >"$tmp/access.log" 2>"$tmp/proxy.err" &
pids="$pids $!"
i=0
while [ $i -lt 100 ]; do
    curl -s -o /dev/null "http://127.0.0.1:$HTTP/" && break
    sleep 0.05
    i=$((i + 1))
done

out=$(curl -s -o "$tmp/body" -w '%{http_version} %{http_code}' --http2-prior-knowledge "http://127.0.0.1:$HTTP/one")
check h2c_prior_knowledge test "$out" = "2 200"
check h2c_body_from_backend grep -q curl-be "$tmp/body"
out=$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http1.1 "http://127.0.0.1:$HTTP/two")
check h1_on_same_listener test "$out" = "1.1 200"
out=$(curl -s -o "$tmp/body" -w '%{http_version} %{http_code}' --http2 --cacert "$tmp/cert.pem" \
    --resolve "h2.test:$HTTPS:127.0.0.1" "https://h2.test:$HTTPS/three")
check h2_over_tls_by_alpn test "$out" = "2 200"
check h2_tls_body_from_backend grep -q curl-be "$tmp/body"
out=$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http1.1 --cacert "$tmp/cert.pem" \
    --resolve "h2.test:$HTTPS:127.0.0.1" "https://h2.test:$HTTPS/four")
check h1_over_tls_by_alpn test "$out" = "1.1 200"
out=$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge -X POST --data-binary "@$tmp/cert.pem" \
    "http://127.0.0.1:$HTTP/post")
check h2c_post_with_body test "$out" = "200"
# an HTTP/2 upstream over TLS (ALPN h2): the proxy's own TLS listener
out=$(curl -s -o "$tmp/body" -w '%{http_version} %{http_code}' --http1.1 "http://127.0.0.1:$HTTP/viatls/five")
check h1_to_h2_upstream_over_tls test "$out" = "1.1 200"
check h2_upstream_tls_body grep -q curl-be "$tmp/body"
sleep 0.2
check upstream_leg_is_http2_over_tls grep -q '"GET /viatls/five HTTP/2" 200' "$tmp/access.log"
# upstream HTTP/2 streams end with the response's END_STREAM, not with a
# reset from us (a reset per stream runs into servers' rapid-reset limits:
# nghttp2 sends GOAWAY after about 1,000, failing the streams in flight)
codes=$(curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$HTTP/viatls/n[1-50]" | sort | uniq -c | tr -s ' ')
check h2_upstream_50_streams_200 test "$codes" = " 50 200"
resets=$(curl -s "http://127.0.0.1:$ADMIN/stats" | sed -n 's/^http2.tx_reset: //p')
check h2_upstream_streams_end_without_reset test "$resets" = 0
check access_log_says_http2 grep -q '"GET /one HTTP/2" 200' "$tmp/access.log"
check access_log_tls_http2 grep -q '"GET /three HTTP/2" 200' "$tmp/access.log"
check access_log_http11 grep -q '"GET /two HTTP/1.1" 200' "$tmp/access.log"

if command -v h2load >/dev/null 2>&1; then
    h2load -n 400 -c 1 -m 40 "http://127.0.0.1:$HTTP/load" >"$tmp/h2load.out" 2>&1
    check h2load_multiplexed_all_2xx grep -q 'status codes: 400 2xx' "$tmp/h2load.out"
    # 200 streams at once, 30 times over: each stream holds an upstream
    # HTTP/1.1 connection while it runs, and the pool keeps them all for the
    # next wave instead of closing most and connecting again
    stat() { curl -s "http://127.0.0.1:$ADMIN/stats" | sed -n "s/^$1: //p"; }
    cx0=$(stat upstream_cx_total)
    h2load -n 6000 -c 2 -m 100 "http://127.0.0.1:$HTTP/burst" >"$tmp/h2load.out" 2>&1
    cx=$(( $(stat upstream_cx_total) - cx0 ))
    check h2load_burst_all_2xx grep -q 'status codes: 6000 2xx' "$tmp/h2load.out"
    echo "# burst: $cx upstream connections"
    check h2_burst_reuses_upstream_connections test "$cx" -le 600
fi
