#!/bin/bash
# Three pods the way Kubernetes runs them, in network namespaces: meshd in a
# control namespace (10.78.0.1, plaintext xDS), a "sleep" pod (10.78.0.2), an
# "httpbin" pod (10.78.0.3) and a "ratings" pod (10.78.0.4, ports 8080 and
# 8081), each with `meshproxy init`'s capture rules
# and a `meshproxy sidecar` running as uid 1337 with its SPIFFE certificate
# (Istio's mounted-certificate layout: cert-chain.pem, key.pem,
# root-cert.pem). Mesh config: Services, Pods, EndpointSlices,
# PeerAuthentication STRICT for the mesh, PERMISSIVE for ratings (STRICT again
# on its port 8081) and an AuthorizationPolicy on httpbin, as YAML in meshd's
# directory.
#
# What a user sees: sleep's plain `curl http://httpbin:8000/headers` (to the
# ClusterIP) is captured, sent over mTLS, and httpbin's app sees
# x-forwarded-client-cert naming sleep's identity; a client without a
# sidecar is refused (STRICT: connection reset); the policy answers 403
# "RBAC: access denied" for what it does not allow; httpbin's certificate
# verifies against the mesh root with openssl; the sidecars' metrics carry
# source_principal and connection_security_policy="mutual_tls".
#
# PERMISSIVE: ratings answers both a plaintext client from outside the mesh
# and sleep's sidecar (over mTLS: its app sees sleep's identity); its metrics
# say connection_security_policy="none" for the first and "mutual_tls" for
# the second; on 8081 the port-level STRICT refuses the plaintext client.
#
# Rotation: httpbin's certificate files are replaced (new key, new serial)
# while sleep keeps sending requests: none fails, and a new TLS connection to
# httpbin's sidecar presents the new serial within a few seconds, without a
# restart.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
BUILD=$(cd "$BUILD" && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "ok mesh_netns # SKIP needs root (network namespaces, iptables)"
    exit 0
fi
for c in ip iptables-restore openssl node curl setpriv; do
    command -v "$c" >/dev/null 2>&1 || { echo "not ok mesh_netns_tools - $c is missing (make deps installs it)"; exit 1; }
done

ID=$$
NS_CTL=mshc$ID
NS_A=msha$ID
NS_B=mshb$ID
NS_C=mshr$ID
WORK=$(mktemp -d /tmp/meshd-netns.XXXXXX)
PIDS=()
FAILED=0

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_CTL"; do ip netns del "$ns" 2>/dev/null; done
    if [ "$FAILED" = 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "# logs kept in $WORK"; fi
}
trap cleanup EXIT

ok() { echo "ok $1"; }
bad() { # name, why, [log]
    echo "not ok $1 - $2"
    FAILED=1
    if [ $# -ge 3 ] && [ -f "$3" ]; then sed 's/^/#   /' "$3" | tail -25; fi
}
fatal() { bad "$@"; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
start() { # log, ns, command...
    local log=$1 ns=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    PIDS+=($!)
}

# ---- network: a bridge in the control namespace, a veth per pod ----
{
    ip netns add "$NS_CTL" && ip netns add "$NS_A" && ip netns add "$NS_B" && ip netns add "$NS_C" &&
        ip -n "$NS_CTL" link set lo up &&
        ip -n "$NS_CTL" link add br0 type bridge &&
        ip -n "$NS_CTL" addr add 10.78.0.1/24 dev br0 &&
        ip -n "$NS_CTL" link set br0 up &&
        for pod in "$NS_A:2" "$NS_B:3" "$NS_C:4"; do
            ns=${pod%%:*}
            n=${pod##*:}
            ip link add "vp$n" netns "$NS_CTL" type veth peer name eth0 netns "$ns" &&
                ip -n "$NS_CTL" link set "vp$n" master br0 up &&
                ip -n "$ns" link set lo up &&
                ip -n "$ns" addr add "10.78.0.$n/24" dev eth0 &&
                ip -n "$ns" link set eth0 up &&
                ip -n "$ns" route add default via 10.78.0.1 || exit 1
        done
} >"$WORK/net.log" 2>&1 || fatal mesh_netns_network "cannot build the namespaces" "$WORK/net.log"
ok mesh_netns_network

# ---- certificates: the mesh root, one per workload (SPIFFE URI SANs) ----
CERTS="$WORK/certs"
mkdir -p "$CERTS"
leaf() { # SA
    local d="$CERTS/$1"
    mkdir -p "$d"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=cluster.local" \
        -keyout "$d/key.pem" -out "$d/csr.pem" &&
        printf 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' \
            "$1" >"$d/ext.cnf" &&
        openssl x509 -req -in "$d/csr.pem" -CA "$CERTS/root.pem" -CAkey "$CERTS/root.key" -CAcreateserial \
            -days 1 -extfile "$d/ext.cnf" -out "$d/cert-chain.pem" &&
        cp "$CERTS/root.pem" "$d/root-cert.pem"
}
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/O=cluster.local/CN=root" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$CERTS/root.key" -out "$CERTS/root.pem" &&
        leaf sleep && leaf httpbin && leaf ratings &&
        chown -R 1337:1337 "$CERTS/sleep" "$CERTS/httpbin" "$CERTS/ratings"
} >"$WORK/openssl.log" 2>&1 || fatal mesh_netns_certificates "openssl failed" "$WORK/openssl.log"
chmod 755 "$WORK" "$CERTS"

# ---- mesh configuration ----
CFG="$WORK/config"
mkdir -p "$CFG"
cat >"$CFG/workloads.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: httpbin}
  ports:
  - {name: http, port: 8000, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: sleep, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: sleep}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.12
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: http-admin, port: 9081, targetPort: 8081}
---
apiVersion: v1
kind: Pod
metadata:
  name: ratings-0
  namespace: default
  labels: {app: ratings, security.istio.io/tlsMode: istio}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  serviceAccountName: ratings
  containers:
  - name: ratings
    ports: [{containerPort: 8080}, {containerPort: 8081}]
status: {phase: Running, podIP: 10.78.0.4}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-x1
  namespace: default
  labels: {kubernetes.io/service-name: ratings}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: http-admin, port: 8081, protocol: TCP}
endpoints:
- addresses: ["10.78.0.4"]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: ratings-0, namespace: default}
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-0
  namespace: default
  labels: {app: httpbin, security.istio.io/tlsMode: istio}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  serviceAccountName: httpbin
  containers:
  - name: httpbin
    ports: [{containerPort: 8080}]
status: {phase: Running, podIP: 10.78.0.3}
---
apiVersion: v1
kind: Pod
metadata:
  name: sleep-0
  namespace: default
  labels: {app: sleep, security.istio.io/tlsMode: istio}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  serviceAccountName: sleep
  containers:
  - name: sleep
status: {phase: Running, podIP: 10.78.0.2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-x1
  namespace: default
  labels: {kubernetes.io/service-name: httpbin}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.78.0.3"]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: httpbin-0, namespace: default}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sleep-x1
  namespace: default
  labels: {kubernetes.io/service-name: sleep}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.78.0.2"]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: sleep-0, namespace: default}
EOF
cat >"$CFG/security.yaml" <<'EOF'
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: default}
spec:
  selector:
    matchLabels: {app: ratings}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    8081: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-viewer, namespace: default}
spec:
  selector:
    matchLabels: {app: httpbin}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    to:
    - operation: {methods: ["GET"], paths: ["/headers", "/ip"]}
EOF
"$BUILD/meshctl" validate -f "$CFG" >"$WORK/validate.log" 2>&1 ||
    fatal mesh_netns_config "meshctl validate refuses the test config" "$WORK/validate.log"

# ---- control plane, applications, capture, sidecars ----
start "$WORK/meshd.log" "$NS_CTL" "$BUILD/meshd" --config-dir "$CFG" --grpc-addr 10.78.0.1:15010 \
    --debug-addr 10.78.0.1:15080 --monitoring-addr 10.78.0.1:15014
MESHD_PID=${PIDS[-1]}
start "$WORK/httpbin.log" "$NS_B" node "$HERE/echo.js" 0.0.0.0:8080 httpbin
start "$WORK/sleep-app.log" "$NS_A" node "$HERE/echo.js" 0.0.0.0:8080 sleep
start "$WORK/ratings.log" "$NS_C" node "$HERE/echo.js" 0.0.0.0:8080 ratings
start "$WORK/ratings-admin.log" "$NS_C" node "$HERE/echo.js" 0.0.0.0:8081 ratings-admin

INIT_FLAGS=(-p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020)
for ns in "$NS_A" "$NS_B" "$NS_C"; do
    in_ns "$ns" "$BUILD/meshproxy" init "${INIT_FLAGS[@]}" >"$WORK/init-$ns.log" 2>&1 ||
        fatal mesh_netns_init "meshproxy init failed in $ns" "$WORK/init-$ns.log"
done
in_ns "$NS_B" iptables-save -t nat >"$WORK/nat-httpbin.txt" 2>&1
grep -q -- "-j REDIRECT --to-ports 15006" "$WORK/nat-httpbin.txt" ||
    fatal mesh_netns_init "no inbound redirect to 15006" "$WORK/nat-httpbin.txt"
ok mesh_netns_init

sidecar() { # ns, pod, sa, app, ip
    start "$WORK/sidecar-$2.log" "$1" setpriv --reuid=1337 --regid=1337 --clear-groups \
        "$BUILD/meshproxy" sidecar --xds-addr 10.78.0.1:15010 --node-ip "$5" --pod "$2" --namespace default \
        --labels "app=$4" --service-account "$3" --cert-dir "$CERTS/$3" --concurrency 1
}
sidecar "$NS_A" sleep-0 sleep sleep 10.78.0.2
sidecar "$NS_B" httpbin-0 httpbin httpbin 10.78.0.3
sidecar "$NS_C" ratings-0 ratings ratings 10.78.0.4
SIDECARS=("${PIDS[-3]}" "${PIDS[-2]}" "${PIDS[-1]}")
HTTPBIN_SIDECAR=${PIDS[-2]}

ready() { # ns, name, log
    for _ in $(seq 1 100); do
        in_ns "$1" curl -sf -o /dev/null -m 1 http://127.0.0.1:15021/healthz/ready && return 0
        sleep 0.1
    done
    fatal mesh_netns_ready "$2's sidecar did not become ready" "$3"
}
ready "$NS_A" sleep "$WORK/sidecar-sleep-0.log"
ready "$NS_B" httpbin "$WORK/sidecar-httpbin-0.log"
ready "$NS_C" ratings "$WORK/sidecar-ratings-0.log"
for app in httpbin ratings ratings-admin; do
    for _ in $(seq 1 50); do grep -q '^ready' "$WORK/$app.log" && break; sleep 0.1; done
done
ok mesh_netns_ready

# ---- traffic ----
# sleep -> httpbin through the ClusterIP: captured, mTLS, allowed
code=""
for _ in $(seq 1 30); do
    code=$(in_ns "$NS_A" curl -s -o "$WORK/headers.json" -w '%{http_code}' -m 3 http://10.96.0.10:8000/headers)
    [ "$code" = 200 ] && break
    sleep 0.2
done
if [ "$code" = 200 ] && grep -q '"name":"httpbin"' "$WORK/headers.json"; then
    ok mesh_netns_mtls_request
else
    bad mesh_netns_mtls_request "sleep -> httpbin answered ${code:-nothing}" "$WORK/sidecar-sleep-0.log"
    sed 's/^/#   /' "$WORK/sidecar-httpbin-0.log" | tail -15
fi
if grep -q 'x-forwarded-client-cert' "$WORK/headers.json" &&
    grep -q 'URI=spiffe://cluster.local/ns/default/sa/sleep' "$WORK/headers.json" &&
    grep -q 'By=spiffe://cluster.local/ns/default/sa/httpbin' "$WORK/headers.json"; then
    ok mesh_netns_peer_identity
else
    bad mesh_netns_peer_identity "httpbin's app did not see sleep's identity" "$WORK/headers.json"
fi

# the authorization policy: wrong method, wrong path -> 403
code=$(in_ns "$NS_A" curl -s -o "$WORK/denied.txt" -w '%{http_code}' -m 3 -X POST http://10.96.0.10:8000/headers)
code2=$(in_ns "$NS_A" curl -s -o /dev/null -w '%{http_code}' -m 3 http://10.96.0.10:8000/status/200)
if [ "$code" = 403 ] && [ "$code2" = 403 ] && grep -q 'RBAC: access denied' "$WORK/denied.txt"; then
    ok mesh_netns_authz_denied
else
    bad mesh_netns_authz_denied "POST /headers gave $code, GET /status/200 gave $code2 (want 403, 403)" \
        "$WORK/denied.txt"
fi

# STRICT: a client without a sidecar (the control namespace) is refused
in_ns "$NS_CTL" curl -s -o /dev/null -m 3 http://10.78.0.3:8080/headers
rc=$?
if [ "$rc" = 56 ] || [ "$rc" = 52 ] || [ "$rc" = 35 ]; then
    ok mesh_netns_strict_refuses_plaintext
else
    bad mesh_netns_strict_refuses_plaintext "plaintext curl exited $rc (want a reset: 56)"
fi

# the certificate httpbin's sidecar presents verifies against the mesh root
echo | in_ns "$NS_CTL" timeout 5 openssl s_client -connect 10.78.0.3:8080 -alpn istio \
    -servername outbound_.8000_._.httpbin.default.svc.cluster.local -cert "$CERTS/sleep/cert-chain.pem" \
    -key "$CERTS/sleep/key.pem" -showcerts >"$WORK/s_client.txt" 2>&1
awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' "$WORK/s_client.txt" | awk 'BEGIN{n=0} /BEGIN/{n++} n==1' \
    >"$WORK/presented.pem"
if [ -s "$WORK/presented.pem" ] && openssl verify -CAfile "$CERTS/root.pem" "$WORK/presented.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$WORK/presented.pem" -noout -ext subjectAltName 2>/dev/null |
    grep -q 'spiffe://cluster.local/ns/default/sa/httpbin'; then
    ok mesh_netns_certificate_verifies
else
    bad mesh_netns_certificate_verifies "the presented certificate does not verify" "$WORK/s_client.txt"
fi

# metrics: the server side reports the client's identity and mTLS
in_ns "$NS_B" curl -s -m 3 http://127.0.0.1:15090/stats/prometheus >"$WORK/metrics-httpbin.txt"
if grep 'istio_requests_total{reporter="destination"' "$WORK/metrics-httpbin.txt" |
    grep 'source_principal="spiffe://cluster.local/ns/default/sa/sleep"' |
    grep 'destination_service="httpbin.default.svc.cluster.local"' |
    grep 'destination_service_namespace="default"' |
    grep 'source_workload="sleep-0"' | grep 'source_workload_namespace="default"' |
    grep 'source_app="sleep"' | grep 'destination_app="httpbin"' | grep 'source_canonical_service="sleep"' |
    grep -q 'connection_security_policy="mutual_tls"'; then
    ok mesh_netns_metrics
else
    bad mesh_netns_metrics "no destination-reported request from sleep over mutual_tls" "$WORK/metrics-httpbin.txt"
fi

# the client side learned the server's workload from the metadata exchange,
# and neither app saw the exchange's headers
in_ns "$NS_A" curl -s -m 3 http://127.0.0.1:15090/stats/prometheus >"$WORK/metrics-sleep.txt"
if grep 'istio_requests_total{reporter="source"' "$WORK/metrics-sleep.txt" |
    grep 'destination_canonical_service="httpbin"' |
    grep -q 'destination_workload="httpbin-0"' && ! grep -qi 'x-envoy-peer-metadata' "$WORK/headers.json"; then
    ok mesh_netns_peer_metadata_exchange
else
    bad mesh_netns_peer_metadata_exchange "no destination_workload from the exchange, or the app saw its headers" \
        "$WORK/metrics-sleep.txt"
fi

# ---- PERMISSIVE (ratings), with STRICT on its port 8081 ----
# a client outside the mesh, in plaintext, straight to the pod
code=$(in_ns "$NS_CTL" curl -s -o "$WORK/permissive-plain.json" -w '%{http_code}' -m 3 http://10.78.0.4:8080/headers)
# sleep's sidecar: mTLS
code2=""
for _ in $(seq 1 30); do
    code2=$(in_ns "$NS_A" curl -s -o "$WORK/permissive-mtls.json" -w '%{http_code}' -m 3 http://10.96.0.12:9080/headers)
    [ "$code2" = 200 ] && break
    sleep 0.2
done
if [ "$code" = 200 ] && grep -q '"name":"ratings"' "$WORK/permissive-plain.json" &&
    ! grep -q 'x-forwarded-client-cert' "$WORK/permissive-plain.json" &&
    [ "$code2" = 200 ] && grep -q 'URI=spiffe://cluster.local/ns/default/sa/sleep' "$WORK/permissive-mtls.json"; then
    ok mesh_netns_permissive_plaintext_and_mtls
else
    bad mesh_netns_permissive_plaintext_and_mtls "plaintext client got ${code:-nothing}, sleep's sidecar ${code2:-nothing} (want 200 both, mTLS for the second)" \
        "$WORK/sidecar-ratings-0.log"
fi
in_ns "$NS_C" curl -s -m 3 http://127.0.0.1:15090/stats/prometheus >"$WORK/metrics-ratings.txt"
dest=$(grep '^istio_requests_total{reporter="destination"' "$WORK/metrics-ratings.txt")
if echo "$dest" | grep 'source_principal="spiffe://cluster.local/ns/default/sa/sleep"' |
    grep -q 'connection_security_policy="mutual_tls"' &&
    echo "$dest" | grep -v 'source_principal="spiffe' | grep -q 'connection_security_policy="none"'; then
    ok mesh_netns_permissive_metrics
else
    bad mesh_netns_permissive_metrics "want one destination series with mutual_tls (sleep) and one with none" \
        "$WORK/metrics-ratings.txt"
fi
# port-level STRICT on 8081: plaintext refused, the sidecar client served
in_ns "$NS_CTL" curl -s -o /dev/null -m 3 http://10.78.0.4:8081/headers
rc=$?
code=$(in_ns "$NS_A" curl -s -o "$WORK/port-strict.json" -w '%{http_code}' -m 3 http://10.96.0.12:9081/headers)
if { [ "$rc" = 56 ] || [ "$rc" = 52 ] || [ "$rc" = 35 ]; } && [ "$code" = 200 ] &&
    grep -q '"name":"ratings-admin"' "$WORK/port-strict.json"; then
    ok mesh_netns_port_level_strict
else
    bad mesh_netns_port_level_strict "plaintext to 8081: curl exit $rc (want a reset); sleep -> 9081: ${code:-nothing}" \
        "$WORK/sidecar-ratings-0.log"
fi

# ---- certificate rotation under load (httpbin's mounted files) ----
serial_of() { openssl x509 -noout -serial -in "$1" 2>/dev/null | sed 's/.*=//'; }
presented_serial() {
    echo | in_ns "$NS_CTL" timeout 5 openssl s_client -connect 10.78.0.3:8080 -alpn istio \
        -servername outbound_.8000_._.httpbin.default.svc.cluster.local -cert "$CERTS/sleep/cert-chain.pem" \
        -key "$CERTS/sleep/key.pem" 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | sed 's/.*=//'
}
OLD_SERIAL=$(serial_of "$CERTS/httpbin/cert-chain.pem")
NEW="$CERTS/httpbin-next"
mkdir -p "$NEW"
{
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=cluster.local" \
        -keyout "$NEW/key.pem" -out "$NEW/csr.pem" &&
        openssl x509 -req -in "$NEW/csr.pem" -CA "$CERTS/root.pem" -CAkey "$CERTS/root.key" -set_serial 0x5eed01 \
            -days 1 -extfile "$CERTS/httpbin/ext.cnf" -out "$NEW/cert-chain.pem" && chown -R 1337:1337 "$NEW"
} >"$WORK/openssl-rotate.log" 2>&1 || fatal mesh_netns_rotation "openssl failed" "$WORK/openssl-rotate.log"
NEW_SERIAL=$(serial_of "$NEW/cert-chain.pem")
: >"$WORK/rotation-codes.txt"
(
    while [ ! -e "$WORK/rotation-stop" ]; do
        in_ns "$NS_A" curl -s -o /dev/null -w '%{http_code}\n' -m 3 http://10.96.0.10:8000/headers \
            >>"$WORK/rotation-codes.txt"
    done
) &
LOOP=$!
PIDS+=($LOOP)
sleep 0.5
before=$(presented_serial)
# each file replaced through a rename, the key first: for a moment the
# directory holds the new key with the old certificate
mv "$NEW/key.pem" "$CERTS/httpbin/key.pem" && mv "$NEW/cert-chain.pem" "$CERTS/httpbin/cert-chain.pem"
t0=$(date +%s%N)
seen=""
for _ in $(seq 1 50); do
    if [ "$(presented_serial)" = "$NEW_SERIAL" ]; then
        seen=$((($(date +%s%N) - t0) / 1000000))
        break
    fi
    sleep 0.2
done
sleep 0.5
touch "$WORK/rotation-stop"
wait "$LOOP" 2>/dev/null
total=$(grep -c . "$WORK/rotation-codes.txt")
failed=$(grep -vc '^200$' "$WORK/rotation-codes.txt")
if [ "$before" = "$OLD_SERIAL" ] && [ -n "$seen" ] && [ "$total" -ge 5 ] && [ "$failed" = 0 ] &&
    kill -0 "$HTTPBIN_SIDECAR" 2>/dev/null; then
    ok "mesh_netns_rotation_under_load # serial $NEW_SERIAL presented after ${seen} ms; $total requests, none failed"
else
    bad mesh_netns_rotation_under_load "serial before: ${before:-none} (want $OLD_SERIAL), new $NEW_SERIAL seen: ${seen:-never}; $failed of $total requests failed: $(sort "$WORK/rotation-codes.txt" | uniq -c | tr '\n' ' ')" \
        "$WORK/sidecar-httpbin-0.log"
fi

# ---- a clean stop: the sidecars and meshd exit 0 on SIGTERM, no sanitizer
# report in any log ----
rcs=""
for p in "${SIDECARS[@]}" "$MESHD_PID"; do kill "$p" 2>/dev/null; done
for p in "${SIDECARS[@]}" "$MESHD_PID"; do
    wait "$p"
    rcs="$rcs $?"
done
reports=$(grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error:' "$WORK"/*.log 2>/dev/null | tr '\n' ' ')
if [ "$rcs" = " 0 0 0 0" ] && [ -z "$reports" ]; then
    ok mesh_netns_clean_exit
else
    bad mesh_netns_clean_exit "exit statuses (sidecars sleep, httpbin, ratings; meshd):$rcs; sanitizer reports in: ${reports:-none}"
fi
exit "$FAILED"
