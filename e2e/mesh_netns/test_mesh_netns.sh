#!/bin/bash
# Two pods the way Kubernetes runs them, in network namespaces: meshd in a
# control namespace (10.78.0.1, plaintext xDS), a "sleep" pod (10.78.0.2) and
# an "httpbin" pod (10.78.0.3), each with `meshproxy init`'s capture rules
# and a `meshproxy sidecar` running as uid 1337 with its SPIFFE certificate
# (Istio's mounted-certificate layout: cert-chain.pem, key.pem,
# root-cert.pem). Mesh config: Services, Pods, EndpointSlices,
# PeerAuthentication STRICT for the mesh and an AuthorizationPolicy on
# httpbin, as YAML in meshd's directory.
#
# What a user sees: sleep's plain `curl http://httpbin:8000/headers` (to the
# ClusterIP) is captured, sent over mTLS, and httpbin's app sees
# x-forwarded-client-cert naming sleep's identity; a client without a
# sidecar is refused (STRICT: connection reset); the policy answers 403
# "RBAC: access denied" for what it does not allow; httpbin's certificate
# verifies against the mesh root with openssl; the sidecars' metrics carry
# source_principal and connection_security_policy="mutual_tls".
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
WORK=$(mktemp -d /tmp/meshd-netns.XXXXXX)
PIDS=()
FAILED=0

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for ns in "$NS_A" "$NS_B" "$NS_CTL"; do ip netns del "$ns" 2>/dev/null; done
    if [ "$FAILED" = 0 ]; then rm -rf "$WORK"; else echo "# logs kept in $WORK"; fi
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
    ip netns add "$NS_CTL" && ip netns add "$NS_A" && ip netns add "$NS_B" &&
        ip -n "$NS_CTL" link set lo up &&
        ip -n "$NS_CTL" link add br0 type bridge &&
        ip -n "$NS_CTL" addr add 10.78.0.1/24 dev br0 &&
        ip -n "$NS_CTL" link set br0 up &&
        for pod in "$NS_A:2" "$NS_B:3"; do
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
        leaf sleep && leaf httpbin && chown -R 1337:1337 "$CERTS/sleep" "$CERTS/httpbin"
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
start "$WORK/httpbin.log" "$NS_B" node "$HERE/echo.js" 0.0.0.0:8080 httpbin
start "$WORK/sleep-app.log" "$NS_A" node "$HERE/echo.js" 0.0.0.0:8080 sleep

INIT_FLAGS=(-p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020)
for ns in "$NS_A" "$NS_B"; do
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

ready() { # ns, name, log
    for _ in $(seq 1 100); do
        in_ns "$1" curl -sf -o /dev/null -m 1 http://127.0.0.1:15021/healthz/ready && return 0
        sleep 0.1
    done
    fatal mesh_netns_ready "$2's sidecar did not become ready" "$3"
}
ready "$NS_A" sleep "$WORK/sidecar-sleep-0.log"
ready "$NS_B" httpbin "$WORK/sidecar-httpbin-0.log"
grep -q '^ready' "$WORK/httpbin.log" || sleep 1
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
    grep -q 'connection_security_policy="mutual_tls"'; then
    ok mesh_netns_metrics
else
    bad mesh_netns_metrics "no destination-reported request from sleep over mutual_tls" "$WORK/metrics-httpbin.txt"
fi
exit "$FAILED"
