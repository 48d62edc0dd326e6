#!/bin/sh
# Circuit breaking as the tutorials show it: the connection pool of
# ../shared/testdata/tutorials/istio-notes-15.yaml (subset v1: maxConnections
# 3, http1MaxPendingRequests 3, maxRequestsPerConnection 3; its ISTIO_MUTUAL
# is left out, the backend here has no sidecar), a client sidecar, and more
# concurrent clients than the limits allow: some requests are answered 503
# with the UO flag and x-envoy-overloaded, the rest 200; the upstream never
# sees more than 3 connections, each used for at most 3 requests.
#
#   meshd 127.0.0.80 (xDS 25810, debug 25880)   client sidecar 127.0.0.81
#   productpage-v1 127.0.0.82:9080 (300 ms per request)
# Prints ok/not ok lines; stops every process it started.
set -u
. "$(dirname "$0")/../../test/lib.sh"
TESTDATA=${TESTDATA:-../shared/testdata}
DIR=$(cd "$(dirname "$0")" && pwd)
for c in h2load python3 curl; do
    command -v "$c" >/dev/null 2>&1 || { echo "not ok circuit_breaker_tools - $c is missing (make deps)"; exit 1; }
done
tut="$TESTDATA/tutorials/istio-notes-15.yaml"
[ -f "$tut" ] || { echo "not ok circuit_breaker_testdata - $tut missing"; exit 1; }

mkdir -p "$T/config"
# the tutorial's DestinationRule without its mesh-wide ISTIO_MUTUAL
sed '/^  trafficPolicy:$/,/^      mode: ISTIO_MUTUAL$/d' "$tut" >"$T/config/dr.yaml"
grep -q 'maxRequestsPerConnection: 3' "$T/config/dr.yaml" && ! grep -q ISTIO_MUTUAL "$T/config/dr.yaml" ||
    { echo "not ok circuit_breaker_testdata - unexpected shape of $tut"; exit 1; }
cat >"$T/config/mesh.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1, namespace: default, labels: {app: productpage, version: v1}}
spec: {containers: [{name: app, ports: [{containerPort: 9080}]}]}
status: {phase: Running, podIP: 127.0.0.82}
---
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: default, labels: {app: client}}
spec: {containers: [{name: app}]}
status: {phase: Running, podIP: 127.0.0.81}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: productpage-1, namespace: default, labels: {kubernetes.io/service-name: productpage}}
addressType: IPv4
ports: [{name: http, port: 9080, protocol: TCP}]
endpoints:
- {addresses: [127.0.0.82], conditions: {ready: true}, targetRef: {kind: Pod, name: productpage-v1, namespace: default}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http: [{route: [{destination: {host: productpage, subset: v1}}], retries: {attempts: 0}}]
YAML

start backend python3 "$DIR/slow_backend.py" 127.0.0.82 9080
start meshd "$BUILD/meshd" --config-dir "$T/config" --grpc-addr 127.0.0.80:25810 --debug-addr 127.0.0.80:25880 \
    --monitoring-addr off --secure-grpc-addr off --webhook-addr off
wait_url http://127.0.0.80:25880/ready || { notok circuit_breaker_meshd "$(tail -3 "$T/meshd.log")"; exit 1; }
start client "$BUILD/meshproxy" sidecar --xds-addr 127.0.0.80:25810 --node-ip 127.0.0.81 --bind 127.0.0.81 \
    --pod client-0 --namespace default --labels app=client --admin-port 25881 --concurrency 1
wait_url http://127.0.0.81:15021/healthz/ready || { notok circuit_breaker_sidecar "$(tail -3 "$T/client.log")"; exit 1; }
wait_url http://127.0.0.82:9080/ || { notok circuit_breaker_backend "$(cat "$T/backend.log")"; exit 1; }

# 12 clients at once, 60 requests, HTTP/2 to the sidecar (as h2load speaks)
h2load -n60 -c12 -H ':authority: productpage' http://127.0.0.81:9080/ >"$T/h2load.txt" 2>&1
s2=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$T/h2load.txt")
s5=$(sed -n 's/^status codes: .*, \([0-9]*\) 5xx$/\1/p' "$T/h2load.txt")
if [ "${s2:-0}" -gt 0 ] && [ "${s5:-0}" -gt 0 ] && [ $((s2 + s5)) -eq 60 ]; then
    ok "circuit_breaker_some_503 # $s2 x 200, $s5 x 503"
else
    notok circuit_breaker_some_503 "$(grep -E 'status codes|requests:' "$T/h2load.txt")"
fi
grep -q '" 503 UO ' "$T/client.log" && ok circuit_breaker_uo_flag_logged ||
    notok circuit_breaker_uo_flag_logged "no 503 UO in the access log"
st=$(curl -s -m 2 http://127.0.0.1:25881/stats)
ov=$(echo "$st" | sed -n 's/^upstream_rq_pending_overflow: //p')
[ "${ov:-0}" -gt 0 ] && ok circuit_breaker_overflow_counted || notok circuit_breaker_overflow_counted "$st"
cx=$(echo "$st" | sed -n 's/^upstream_cx_total: //p')
# maxRequestsPerConnection 3: at least one upstream connection per 3 answered requests
if [ "${cx:-0}" -ge $(((s2 + 2) / 3)) ]; then
    ok "circuit_breaker_requests_per_connection # $cx connections for $s2 requests"
else
    notok circuit_breaker_requests_per_connection "$cx upstream connections for $s2 requests"
fi
# the overloaded answer carries x-envoy-overloaded (HTTP/1.1 clients this time)
i=0
while [ $i -lt 10 ]; do
    curl -s -m 5 -o /dev/null -D "$T/h$i" -H 'Host: productpage' http://127.0.0.81:9080/ &
    i=$((i + 1))
done
wait_n=0
while [ $wait_n -lt 50 ] && [ "$(ls "$T"/h[0-9] 2>/dev/null | wc -l)" -lt 10 ]; do sleep 0.1; wait_n=$((wait_n + 1)); done
sleep 1
if grep -l '^HTTP/1.1 503' "$T"/h[0-9] 2>/dev/null | xargs -r grep -qi '^x-envoy-overloaded: true'; then
    ok circuit_breaker_overloaded_header
else
    notok circuit_breaker_overloaded_header "no 503 with x-envoy-overloaded among 10 concurrent requests"
fi
# a host the mesh does not know goes to the passthrough cluster; without a
# captured original destination that must not loop back into this listener
sleep 1
n0=$(curl -s -m 2 http://127.0.0.1:25881/stats | sed -n 's/^downstream_rq_total: //p')
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Host: nowhere.example' http://127.0.0.81:9080/)
n1=$(curl -s -m 2 http://127.0.0.1:25881/stats | sed -n 's/^downstream_rq_total: //p')
if [ "$code" = 503 ] && [ $((n1 - n0)) -eq 1 ]; then
    ok circuit_breaker_passthrough_no_loop
else
    notok circuit_breaker_passthrough_no_loop "status $code, $((n1 - n0)) downstream requests for one"
fi
finish
