#!/usr/bin/env bash
# End-to-end: a proxyless gRPC client that nobody here wrote (@grpc/grpc-js-xds)
# takes its configuration from meshd's xDS server.
#
# Starts four plain gRPC echo backends on 127.0.0.11-14 (pods echo-v1-a,
# echo-v1-b, echo-v2-a, echo-v2-b) and one that requires mutual TLS on
# 127.0.0.15 (certificates made here with openssl, SPIFFE URI SANs), writes a
# config directory (Services, Pods, EndpointSlices, DestinationRules,
# VirtualServices), runs `build/meshd --config-dir DIR` with its plaintext xDS
# address on 127.0.0.1, and runs client.js, which checks an 80/20 split, a
# header route, a 50% fault abort, ring-hash affinity, ISTIO_MUTUAL through
# the bootstrap's certificate provider, and a live edit of the VirtualService.
# Prints "ok NAME" / "not ok NAME # why"; exits non-zero on any failure.
#
# Needs: build/meshd, node, openssl, and e2e/grpc_xds/node_modules (`npm ci`
# here). MESHD overrides the binary.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MESHD=${MESHD:-$ROOT/build/meshd}

WORK=$(mktemp -d /tmp/meshd-grpc-xds.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "not ok $1 # $2"
    for f in "$WORK"/*.log; do
        [ -s "$f" ] && { echo "# --- $(basename "$f") (last lines)"; tail -n 20 "$f" | sed 's/^/# /'; }
    done
    exit 1
}

# ---- prerequisites ----
[ -x "$MESHD" ] || fail meshd_binary "$MESHD is missing: run make"
command -v node >/dev/null || fail node "node is not installed"
command -v openssl >/dev/null || fail openssl "openssl is not installed"
[ -d "$HERE/node_modules/@grpc/grpc-js-xds" ] || fail npm_deps "$HERE/node_modules is missing: run npm ci in $HERE (make deps)"

grep -q -- "--grpc-addr" <<<"$("$MESHD" --help 2>&1)" ||
    fail meshd_grpc_addr "$MESHD --help shows no --grpc-addr (meshd's plaintext xDS address)"

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}
# waits until HOST:PORT accepts connections (at most $3 tenths of a second)
wait_port() {
    for _ in $(seq 1 "$3"); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

XDS_PORT=$(free_port)
BACKEND_PORT=$(free_port)
[ -n "$XDS_PORT" ] && [ -n "$BACKEND_PORT" ] || fail ports "cannot pick free ports"

# ---- certificates: a root, the mTLS backend (service account echo), the client ----
CERTS="$WORK/certs"
mkdir -p "$CERTS"
leaf() { # NAME SPIFFE-ID
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=meshd-e2e/CN=$1" \
        -keyout "$CERTS/$1.key" -out "$CERTS/$1.csr" &&
        printf 'subjectAltName=URI:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
            "$2" >"$CERTS/$1.ext" &&
        openssl x509 -req -in "$CERTS/$1.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
            -CAcreateserial -days 1 -extfile "$CERTS/$1.ext" -out "$CERTS/$1.pem"
}
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/O=meshd-e2e/CN=root" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" &&
        leaf server spiffe://cluster.local/ns/default/sa/echo &&
        leaf client spiffe://cluster.local/ns/default/sa/default
} >"$WORK/openssl.log" 2>&1 || fail certificates "openssl could not make the test certificates"

# ---- backends ----
ECHO_TLS_DIR="$CERTS" node "$HERE/backends.js" \
    "v1-a=127.0.0.11:$BACKEND_PORT" "v1-b=127.0.0.12:$BACKEND_PORT" \
    "v2-a=127.0.0.13:$BACKEND_PORT" "v2-b=127.0.0.14:$BACKEND_PORT" \
    "mtls:mtls-a=127.0.0.15:$BACKEND_PORT" \
    >"$WORK/backends.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    grep -q '^ready' "$WORK/backends.log" && break
    kill -0 "${PIDS[0]}" 2>/dev/null || break
    sleep 0.1
done
grep -q '^ready' "$WORK/backends.log" || fail backends "echo backends did not start"
echo "ok backends_listening"

# ---- mesh configuration ----
CFG="$WORK/config"
mkdir -p "$CFG"
{
    for svc in echo:7070 echo-fault:7071 echo-hash:7072; do
        cat <<EOF
---
apiVersion: v1
kind: Service
metadata:
  name: ${svc%%:*}
  namespace: default
spec:
  selector:
    app: echo
  ports:
  - name: grpc
    port: ${svc##*:}
    targetPort: $BACKEND_PORT
EOF
    done
    cat <<EOF
---
apiVersion: v1
kind: Service
metadata:
  name: echo-mtls
  namespace: default
spec:
  selector:
    app: echo-mtls
  ports:
  - name: grpc
    port: 7073
    targetPort: $BACKEND_PORT
EOF
} >"$CFG/services.yaml"
{
    for p in v1-a:11 v1-b:12 v2-a:13 v2-b:14; do
        name=${p%%:*}
        cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-$name
  namespace: default
  labels:
    app: echo
    version: ${name%%-*}
spec:
  containers:
  - name: echo
    ports:
    - containerPort: $BACKEND_PORT
status:
  phase: Running
  podIP: 127.0.0.${p##*:}
EOF
    done
    cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-mtls-a
  namespace: default
  labels:
    app: echo-mtls
spec:
  serviceAccountName: echo
  containers:
  - name: echo
status:
  phase: Running
  podIP: 127.0.0.15
EOF
} >"$CFG/pods.yaml"
{
    for svc in echo echo-fault echo-hash; do
        cat <<EOF
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $svc-x1
  namespace: default
  labels:
    kubernetes.io/service-name: $svc
addressType: IPv4
ports:
- name: grpc
  port: $BACKEND_PORT
  protocol: TCP
endpoints:
EOF
        for p in v1-a:11 v1-b:12 v2-a:13 v2-b:14; do
            cat <<EOF
- addresses: ["127.0.0.${p##*:}"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: echo-${p%%:*}
    namespace: default
EOF
        done
    done
    cat <<EOF
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-mtls-x1
  namespace: default
  labels:
    kubernetes.io/service-name: echo-mtls
addressType: IPv4
ports:
- name: grpc
  port: $BACKEND_PORT
  protocol: TCP
endpoints:
- addresses: ["127.0.0.15"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: echo-mtls-a
    namespace: default
EOF
} >"$CFG/endpointslices.yaml"
cat >"$CFG/destinationrules.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  namespace: default
spec:
  host: echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo-hash
  namespace: default
spec:
  host: echo-hash.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo-mtls
  namespace: default
spec:
  host: echo-mtls
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
EOF
cat >"$CFG/vs-echo.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - echo
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: echo
        subset: v2
  - route:
    - destination:
        host: echo
        subset: v1
      weight: 80
    - destination:
        host: echo
        subset: v2
      weight: 20
EOF
cat >"$CFG/vs-fault.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo-fault
  namespace: default
spec:
  hosts:
  - echo-fault.default.svc.cluster.local
  http:
  - fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 50
    route:
    - destination:
        host: echo-fault.default.svc.cluster.local
EOF

# ---- meshd ----
# xDS on an ephemeral loopback port; its other servers are not needed here and
# are off, so that their fixed ports never collide with another test
"$MESHD" --config-dir "$CFG" --grpc-addr "127.0.0.1:$XDS_PORT" --debug-addr off \
    --secure-grpc-addr off --webhook-addr off --monitoring-addr off \
    >"$WORK/meshd.log" 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 "$XDS_PORT" 100 || fail meshd_xds_listening "meshd does not accept connections on 127.0.0.1:$XDS_PORT (--grpc-addr)"
echo "ok meshd_xds_listening"

# ---- the client ----
cat >"$WORK/bootstrap.json" <<EOF
{
  "xds_servers": [
    {
      "server_uri": "127.0.0.1:$XDS_PORT",
      "channel_creds": [{"type": "insecure"}],
      "server_features": ["xds_v3"]
    }
  ],
  "certificate_providers": {
    "default": {
      "plugin_name": "file_watcher",
      "config": {
        "certificate_file": "$CERTS/client.pem",
        "private_key_file": "$CERTS/client.key",
        "ca_certificate_file": "$CERTS/ca.pem",
        "refresh_interval": "600s"
      }
    }
  },
  "node": {
    "id": "sidecar~127.0.0.1~e2e-client.default~default.svc.cluster.local",
    "cluster": "e2e-client.default",
    "locality": {},
    "metadata": {
      "GENERATOR": "grpc",
      "NAMESPACE": "default",
      "SERVICE_ACCOUNT": "default"
    }
  }
}
EOF
GRPC_XDS_BOOTSTRAP="$WORK/bootstrap.json" timeout 180 node "$HERE/client.js" \
    --split echo.default.svc.cluster.local:7070 \
    --fault echo-fault.default.svc.cluster.local:7071 \
    --hash echo-hash:7072 \
    --mtls echo-mtls.default:7073 \
    --vs-file "$CFG/vs-echo.yaml" >"$WORK/client.out" 2>"$WORK/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait "$CLIENT"
status=$?
cat "$WORK/client.out"
if [ "$status" -ne 0 ]; then
    grep -q '^not ok' "$WORK/client.out" || echo "not ok client # exited with status $status"
    fail grpc_xds "the proxyless client's checks failed (status $status)"
fi
kill -0 "${PIDS[1]}" 2>/dev/null || fail meshd_alive "meshd exited during the test"
echo "ok meshd_alive"
exit 0
