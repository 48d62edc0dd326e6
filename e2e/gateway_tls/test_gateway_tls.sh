#!/bin/bash
# An ingress gateway that terminates TLS, as in Istio's "Secure Gateways"
# task, on loopback addresses of its own: meshd in local mode on a temporary
# config directory (Gateways, VirtualServices, Services, EndpointSlices and
# the credentials as `kind: Secret` files in istio-system, the gateway's
# namespace), two HTTP backends (build/backend: httpbin on 127.0.0.42:8000,
# helloworld on 127.0.0.43:5000), a TLS backend for passthrough (openssl
# s_server on 127.0.0.44:8443) and a `meshproxy router` on 127.0.0.40 that
# takes its listeners, routes and certificates (SDS) from meshd.
#
# The certificates are made here with openssl the way the task makes them:
# an example.com root, httpbin.example.com and helloworld.example.com server
# certificates, a client certificate for MUTUAL, and nginx.example.com for
# the passthrough backend.
#
# What a user sees, checked with curl --cacert ROOT --resolve HOST:PORT:IP:
#   SIMPLE       HTTPS 200 through the gateway; the certificate presented
#                verifies against the root (8443)
#   SNI          two hosts with two credentials on one port: each gets its own
#                certificate (8443)
#   MUTUAL       no client certificate: refused; with one: 200; one from
#                another CA: refused (8444: the CA in the credential's ca.crt;
#                8445: the CA in the NAME-cacert Secret)
#   redirect     plain HTTP for a server with httpsRedirect: 301 to https; a
#                plain server on the same port still answers 200 (8080)
#   TLS          protocol TLS with SIMPLE: terminated here, then the
#                VirtualService's tcp route to a plain backend (9444)
#   PASSTHROUGH  routed by SNI (VirtualService tls.match.sniHosts) to the TLS
#                backend: the client sees the backend's own certificate (9443)
#   rotation     the Secret file rewritten with a new certificate while
#                requests keep flowing: new handshakes present it within a few
#                seconds, no request fails, no process restarts
#   hostile      garbage, a truncated ClientHello and an unknown SNI on the
#                HTTPS port do not disturb a concurrent request; the proxy
#                keeps running
# Prints "ok NAME" / "not ok NAME - why"; exits non-zero on any failure.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${MESH_BUILD:-${BUILD:-$ROOT/build}}
BUILD=$(cd "$BUILD" && pwd)

for c in openssl curl base64 timeout; do
    command -v "$c" >/dev/null 2>&1 || { echo "not ok gateway_tls_tools - $c is missing"; exit 1; }
done
for b in meshd meshproxy meshctl backend; do
    [ -x "$BUILD/$b" ] || { echo "not ok gateway_tls_binaries - $BUILD/$b is missing: run make"; exit 1; }
done

GW=127.0.0.40
XDS=127.0.0.41:15010
DEBUG=127.0.0.41:15080
METRICS=127.0.0.41:15014
HTTPBIN=127.0.0.42
HELLO=127.0.0.43
NGINX=127.0.0.44
ADMIN=25400
STATS=25490
READY=25421

WORK=$(mktemp -d /tmp/meshd-gateway-tls.XXXXXX)
CFG="$WORK/config"
CERTS="$WORK/certs"
mkdir -p "$CFG" "$CERTS"
PIDS=()
FAILED=0

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$FAILED" = 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "# logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { echo "ok $1"; }
bad() { # name, why, [log]
    echo "not ok $1 - $2"
    FAILED=1
    if [ $# -ge 3 ] && [ -f "$3" ]; then sed 's/^/#   /' "$3" | tail -25; fi
}
fatal() { bad "$@"; exit 1; }
start() { # log, command...
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    PIDS+=($!)
}

# ---- certificates (Istio's Secure Gateways task) ----
server_cert() { # name, serial, [dir]
    local d=${3:-$CERTS}
    openssl req -out "$d/$1.csr" -newkey rsa:2048 -nodes -keyout "$d/$1.key" \
        -subj "/CN=$1/O=$1 organization" &&
        openssl x509 -req -sha256 -days 1 -CA "$CERTS/example.com.crt" -CAkey "$CERTS/example.com.key" \
            -set_serial "$2" -in "$d/$1.csr" -out "$d/$1.crt"
}
{
    openssl req -x509 -sha256 -nodes -days 1 -newkey rsa:2048 -subj '/O=example Inc./CN=example.com' \
        -keyout "$CERTS/example.com.key" -out "$CERTS/example.com.crt" &&
        server_cert httpbin.example.com 0 &&
        server_cert helloworld.example.com 1 &&
        server_cert client.example.com 2 &&
        server_cert nginx.example.com 3 &&
        mkdir -p "$CERTS/other" &&
        openssl req -x509 -sha256 -nodes -days 1 -newkey rsa:2048 -subj '/O=other Inc./CN=other.com' \
            -keyout "$CERTS/other/other.com.key" -out "$CERTS/other/other.com.crt" &&
        openssl req -out "$CERTS/other/client.csr" -newkey rsa:2048 -nodes -keyout "$CERTS/other/client.key" \
            -subj "/CN=client.other.com" &&
        openssl x509 -req -sha256 -days 1 -CA "$CERTS/other/other.com.crt" -CAkey "$CERTS/other/other.com.key" \
            -set_serial 9 -in "$CERTS/other/client.csr" -out "$CERTS/other/client.crt"
} >"$WORK/openssl.log" 2>&1 || fatal gateway_tls_certificates "openssl failed" "$WORK/openssl.log"
ROOTCA="$CERTS/example.com.crt"

b64() { base64 -w0 <"$1"; }
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" 2>/dev/null | sed 's/.*=//'; }

# ---- configuration ----
tls_secret() { # name, cert base, [ca file]
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n' \
        "$1" "$(b64 "$2.crt")" "$(b64 "$2.key")"
    [ $# -ge 3 ] && printf '  ca.crt: %s\n' "$(b64 "$3")"
    return 0
}
# Secrets are rewritten whole, through a rename, as a tool that edits a file
# safely would.
write_file() { # path (content on stdin)
    cat >"$(dirname "$1")/.$(basename "$1").new" && mv "$(dirname "$1")/.$(basename "$1").new" "$1"
}
tls_secret httpbin-credential "$CERTS/httpbin.example.com" | write_file "$CFG/secret-httpbin.yaml"
tls_secret helloworld-credential "$CERTS/helloworld.example.com" | write_file "$CFG/secret-helloworld.yaml"
tls_secret httpbin-mtls-credential "$CERTS/httpbin.example.com" "$ROOTCA" | write_file "$CFG/secret-httpbin-mtls.yaml"
cat >"$CFG/secret-helloworld-cacert.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: helloworld-credential-cacert
  namespace: istio-system
type: Opaque
data:
  ca.crt: $(b64 "$ROOTCA")
EOF

cat >"$CFG/services.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  selector: {app: httpbin}
  ports:
  - {name: http, port: 8000, targetPort: 8000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-a1
  namespace: default
  labels: {kubernetes.io/service-name: httpbin}
addressType: IPv4
ports:
- {name: http, port: 8000, protocol: TCP}
endpoints:
- addresses: ["$HTTPBIN"]
  conditions: {ready: true}
---
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: default}
spec:
  selector: {app: helloworld}
  ports:
  - {name: http, port: 5000, targetPort: 5000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: helloworld-a1
  namespace: default
  labels: {kubernetes.io/service-name: helloworld}
addressType: IPv4
ports:
- {name: http, port: 5000, protocol: TCP}
endpoints:
- addresses: ["$HELLO"]
  conditions: {ready: true}
---
apiVersion: v1
kind: Service
metadata: {name: my-nginx, namespace: default}
spec:
  selector: {run: my-nginx}
  ports:
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-nginx-a1
  namespace: default
  labels: {kubernetes.io/service-name: my-nginx}
addressType: IPv4
ports:
- {name: https, port: 8443, protocol: TCP}
endpoints:
- addresses: ["$NGINX"]
  conditions: {ready: true}
EOF

cat >"$CFG/gateway.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    tls: {httpsRedirect: true}
    hosts: [httpbin.example.com]
  - port: {number: 8080, name: http-helloworld, protocol: HTTP}
    hosts: [helloworld.example.com]
  - port: {number: 8443, name: https-httpbin, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
    hosts: [httpbin.example.com]
  - port: {number: 8443, name: https-helloworld, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: helloworld-credential}
    hosts: [helloworld.example.com]
  - port: {number: 8444, name: https-mutual, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: httpbin-mtls-credential}
    hosts: [httpbin.example.com]
  - port: {number: 8445, name: https-mutual-cacert, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: helloworld-credential}
    hosts: [helloworld.example.com]
  - port: {number: 9444, name: tls-terminated, protocol: TLS}
    tls: {mode: SIMPLE, credentialName: helloworld-credential}
    hosts: [helloworld.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: passthrough-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: [nginx.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [mygateway]
  http:
  - route:
    - destination: {host: httpbin.default.svc.cluster.local, port: {number: 8000}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: helloworld, namespace: default}
spec:
  hosts: [helloworld.example.com]
  gateways: [mygateway]
  http:
  - route:
    - destination: {host: helloworld.default.svc.cluster.local, port: {number: 5000}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: helloworld-tcp, namespace: default}
spec:
  hosts: [helloworld.example.com]
  gateways: [mygateway]
  tcp:
  - match: [{port: 9444}]
    route:
    - destination: {host: helloworld.default.svc.cluster.local, port: {number: 5000}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nginx, namespace: default}
spec:
  hosts: [nginx.example.com]
  gateways: [passthrough-gateway]
  tls:
  - match:
    - port: 9443
      sniHosts: [nginx.example.com]
    route:
    - destination: {host: my-nginx.default.svc.cluster.local, port: {number: 443}}
EOF
"$BUILD/meshctl" validate -f "$CFG" >"$WORK/validate.log" 2>&1 ||
    fatal gateway_tls_config "meshctl validate refuses the test config" "$WORK/validate.log"
ok gateway_tls_config

# ---- processes ----
start "$WORK/httpbin.log" "$BUILD/backend" --listen "$HTTPBIN:8000" --name httpbin
start "$WORK/helloworld.log" "$BUILD/backend" --listen "$HELLO:5000" --name helloworld
start "$WORK/nginx.log" openssl s_server -www -accept "$NGINX:8443" -cert "$CERTS/nginx.example.com.crt" \
    -key "$CERTS/nginx.example.com.key" -quiet
start "$WORK/meshd.log" "$BUILD/meshd" --config-dir "$CFG" --grpc-addr "$XDS" --debug-addr "$DEBUG" \
    --monitoring-addr "$METRICS"
MESHD_PID=${PIDS[-1]}
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -m 1 "http://$DEBUG/ready" && break
    sleep 0.1
done
start "$WORK/router.log" "$BUILD/meshproxy" router --xds-addr "$XDS" --node-ip "$GW" --bind "$GW" \
    --pod istio-ingressgateway-0 --namespace istio-system --labels istio=ingressgateway,app=istio-ingressgateway \
    --concurrency 1 --admin-port "$ADMIN" --stats-port "$STATS" --ready-port "$READY"
ROUTER_PID=${PIDS[-1]}

ready=0
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -m 1 "http://$GW:$READY/healthz/ready" && { ready=1; break; }
    sleep 0.1
done
[ $ready = 1 ] || fatal gateway_tls_ready "the router did not become ready" "$WORK/router.log"

# HTTPS through the gateway: curl's exit status and the answer's code
https() { # host, port, out, [curl args...]
    local host=$1 port=$2 out=$3
    shift 3
    curl -s -o "$out" -w '%{http_code}' -m 5 --cacert "$ROOTCA" --resolve "$host:$port:$GW" "$@" \
        "https://$host:$port/status/200"
}
# The certificate presented for a server name (PEM on stdout).
presented() { # port, sni, [s_client args...]
    local port=$1 sni=$2
    shift 2
    echo | timeout 5 openssl s_client -connect "$GW:$port" -servername "$sni" "$@" 2>/dev/null |
        awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' | awk 'BEGIN{n=0} /BEGIN/{n++} n==1'
}

# Ready means configured; the credentials come by SDS: wait for the first 200.
code=""
for _ in $(seq 1 50); do
    code=$(https httpbin.example.com 8443 "$WORK/simple.txt")
    [ "$code" = 200 ] && break
    sleep 0.1
done
[ "$code" = 200 ] || { bad gateway_tls_ready "no HTTPS answer (${code:-none}) through the gateway" "$WORK/router.log";
    sed 's/^/#   /' "$WORK/meshd.log" | tail -15; exit 1; }
ok gateway_tls_ready

# ---- SIMPLE ----
presented 8443 httpbin.example.com >"$WORK/httpbin-presented.pem"
if [ "$code" = 200 ] && grep -q '^httpbin' "$WORK/simple.txt" &&
    openssl verify -CAfile "$ROOTCA" "$WORK/httpbin-presented.pem" >/dev/null 2>&1 &&
    [ "$(fingerprint "$WORK/httpbin-presented.pem")" = "$(fingerprint "$CERTS/httpbin.example.com.crt")" ]; then
    ok gateway_tls_simple
else
    bad gateway_tls_simple "https://httpbin.example.com:8443 answered $code; presented: $(fingerprint "$WORK/httpbin-presented.pem")" \
        "$WORK/router.log"
fi

# ---- SNI: two hosts, two credentials, one port ----
code=$(https helloworld.example.com 8443 "$WORK/sni.txt")
presented 8443 helloworld.example.com >"$WORK/helloworld-presented.pem"
if [ "$code" = 200 ] && grep -q '^helloworld' "$WORK/sni.txt" &&
    [ "$(fingerprint "$WORK/helloworld-presented.pem")" = "$(fingerprint "$CERTS/helloworld.example.com.crt")" ] &&
    [ "$(fingerprint "$WORK/httpbin-presented.pem")" = "$(fingerprint "$CERTS/httpbin.example.com.crt")" ]; then
    ok gateway_tls_sni_selects_credential
else
    bad gateway_tls_sni_selects_credential "helloworld.example.com answered $code with $(fingerprint "$WORK/helloworld-presented.pem")" \
        "$WORK/router.log"
fi

# ---- MUTUAL ----
mutual() { # name, host, port
    local name=$1 host=$2 port=$3
    local none with other rc_none
    none=$(https "$host" "$port" /dev/null)
    rc_none=$?
    with=$(https "$host" "$port" "$WORK/$name.txt" --cert "$CERTS/client.example.com.crt" \
        --key "$CERTS/client.example.com.key")
    other=$(https "$host" "$port" /dev/null --cert "$CERTS/other/client.crt" --key "$CERTS/other/client.key")
    if [ "$rc_none" != 0 ] && [ "$none" = 000 ] && [ "$with" = 200 ] && [ "$other" = 000 ] &&
        grep -q "^${host%%.*}" "$WORK/$name.txt"; then
        ok "$name"
    else
        bad "$name" "$host:$port without a client certificate: $none (curl $rc_none), with: $with, from another CA: $other" \
            "$WORK/router.log"
    fi
}
mutual gateway_tls_mutual httpbin.example.com 8444
mutual gateway_tls_mutual_cacert_secret helloworld.example.com 8445

# ---- TLS terminated at the gateway, then TCP to the backend ----
code=$(https helloworld.example.com 9444 "$WORK/tls-tcp.txt")
presented 9444 helloworld.example.com >"$WORK/tls-tcp-presented.pem"
if [ "$code" = 200 ] && grep -q '^helloworld' "$WORK/tls-tcp.txt" &&
    [ "$(fingerprint "$WORK/tls-tcp-presented.pem")" = "$(fingerprint "$CERTS/helloworld.example.com.crt")" ]; then
    ok gateway_tls_terminated_tcp
else
    bad gateway_tls_terminated_tcp "https://helloworld.example.com:9444 (TLS, SIMPLE, tcp route) answered ${code:-nothing}" \
        "$WORK/router.log"
fi

# ---- httpsRedirect ----
out=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -m 5 --resolve "httpbin.example.com:8080:$GW" \
    http://httpbin.example.com:8080/status/200?x=1)
plain=$(curl -s -o "$WORK/plain.txt" -w '%{http_code}' -m 5 --resolve "helloworld.example.com:8080:$GW" \
    http://helloworld.example.com:8080/)
case "$out" in
"301 https://httpbin.example.com"*/status/200?x=1)
    if [ "$plain" = 200 ] && grep -q '^helloworld' "$WORK/plain.txt"; then
        ok gateway_tls_https_redirect
    else
        bad gateway_tls_https_redirect "the plain server beside the redirecting one answered $plain" "$WORK/router.log"
    fi
    ;;
*) bad gateway_tls_https_redirect "http://httpbin.example.com:8080 answered '$out' (want 301 to https)" "$WORK/router.log" ;;
esac

# ---- PASSTHROUGH ----
code=""
for _ in $(seq 1 20); do
    code=$(curl -s -o "$WORK/passthrough.txt" -w '%{http_code}' -m 5 --cacert "$ROOTCA" \
        --resolve "nginx.example.com:9443:$GW" https://nginx.example.com:9443/)
    [ "$code" = 200 ] && break
    sleep 0.1
done
presented 9443 nginx.example.com >"$WORK/nginx-presented.pem"
if [ "$code" = 200 ] && grep -qi 's_server' "$WORK/passthrough.txt" &&
    [ "$(fingerprint "$WORK/nginx-presented.pem")" = "$(fingerprint "$CERTS/nginx.example.com.crt")" ]; then
    ok gateway_tls_passthrough
else
    bad gateway_tls_passthrough "https://nginx.example.com:9443 answered ${code:-nothing}; presented $(fingerprint "$WORK/nginx-presented.pem")" \
        "$WORK/router.log"
fi
# an SNI no route names is not passed anywhere
presented 9443 other.example.com >"$WORK/unknown-passthrough.pem"
if [ ! -s "$WORK/unknown-passthrough.pem" ]; then
    ok gateway_tls_passthrough_unknown_sni
else
    bad gateway_tls_passthrough_unknown_sni "other.example.com got a certificate on the passthrough port"
fi

# ---- rotation ----
# requests on new connections, back to back, while the Secret file changes:
# through a rename (serial 100), then rewritten in place (serial 101)
rotate() { # name, serial, how (rename | in-place)
    local name=$1 serial=$2 how=$3 dir="$CERTS/rotated-$2" fp seen total failed loop
    mkdir -p "$dir"
    server_cert httpbin.example.com "$serial" "$dir" >"$WORK/openssl-$serial.log" 2>&1 ||
        fatal "$name" "openssl failed" "$WORK/openssl-$serial.log"
    fp=$(fingerprint "$dir/httpbin.example.com.crt")
    rm -f "$WORK/rotation-stop"
    : >"$WORK/rotation-codes.txt"
    (
        while [ ! -e "$WORK/rotation-stop" ]; do
            https httpbin.example.com 8443 /dev/null >>"$WORK/rotation-codes.txt"
            echo >>"$WORK/rotation-codes.txt"
        done
    ) &
    loop=$!
    PIDS+=($loop)
    sleep 0.5
    if [ "$how" = rename ]; then
        tls_secret httpbin-credential "$dir/httpbin.example.com" | write_file "$CFG/secret-httpbin.yaml"
    else
        tls_secret httpbin-credential "$dir/httpbin.example.com" >"$CFG/secret-httpbin.yaml"
    fi
    local t0
    t0=$(date +%s%N)
    seen=""
    for _ in $(seq 1 100); do
        presented 8443 httpbin.example.com >"$WORK/rotated-presented.pem"
        if [ "$(fingerprint "$WORK/rotated-presented.pem")" = "$fp" ]; then
            seen=$((($(date +%s%N) - t0) / 1000000))
            break
        fi
        sleep 0.1
    done
    sleep 0.5
    touch "$WORK/rotation-stop"
    wait "$loop" 2>/dev/null
    total=$(grep -c . "$WORK/rotation-codes.txt")
    failed=$(grep -vc '^200$' "$WORK/rotation-codes.txt")
    if [ -n "$seen" ] && [ "$seen" -le 5000 ] && [ "$total" -ge 5 ] && [ "$failed" = 0 ] &&
        kill -0 "$MESHD_PID" 2>/dev/null && kill -0 "$ROUTER_PID" 2>/dev/null &&
        openssl verify -CAfile "$ROOTCA" "$WORK/rotated-presented.pem" >/dev/null 2>&1; then
        ok "$name # new certificate after ${seen} ms, $total requests, none failed"
    else
        bad "$name" "new certificate seen: ${seen:-never}; $failed of $total requests failed: $(sort "$WORK/rotation-codes.txt" | uniq -c | tr '\n' ' ')" \
            "$WORK/router.log"
        sed 's/^/#   /' "$WORK/meshd.log" | tail -10
    fi
}
rotate gateway_tls_rotation 100 rename
rotate gateway_tls_rotation_in_place 101 in-place

# ---- a broken Secret: the certificate in place keeps being served ----
# (a key that does not match the certificate, as a botched rotation makes)
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: httpbin-credential\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n' \
    "$(b64 "$CERTS/helloworld.example.com.crt")" "$(b64 "$CERTS/httpbin.example.com.key")" |
    write_file "$CFG/secret-httpbin.yaml"
sleep 1.5
code=$(https httpbin.example.com 8443 /dev/null)
presented 8443 httpbin.example.com >"$WORK/broken-presented.pem"
if [ "$code" = 200 ] &&
    [ "$(fingerprint "$WORK/broken-presented.pem")" = "$(fingerprint "$CERTS/rotated-101/httpbin.example.com.crt")" ] &&
    grep -q 'Secret istio-system/httpbin-credential' "$WORK/meshd.log"; then
    ok gateway_tls_broken_secret_keeps_serving
else
    bad gateway_tls_broken_secret_keeps_serving "after a Secret with a mismatched key: $code, presented $(fingerprint "$WORK/broken-presented.pem")" \
        "$WORK/router.log"
    sed 's/^/#   /' "$WORK/meshd.log" | tail -5
fi
tls_secret httpbin-credential "$CERTS/rotated-101/httpbin.example.com" | write_file "$CFG/secret-httpbin.yaml"

# ---- hostile input on the HTTPS port ----
# the first bytes of a ClientHello: a record header announcing 512 bytes and
# the start of the handshake message
TRUNC='\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'
# a complete ClientHello record whose extensions length runs past its end
ZEROS=$(printf '\\x00%.0s' $(seq 1 32))
MALFORMED='\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03'"$ZEROS"'\x00\x00\x02\x00\x2f\x01\x00\xff\xff'
hostile() { # one attacker, several kinds of bad connections, repeatedly
    for _ in $(seq 1 20); do
        # garbage
        head -c 4096 /dev/urandom | timeout 2 bash -c "cat >/dev/tcp/$GW/8443" 2>/dev/null
        # a truncated ClientHello, then the connection closes
        timeout 2 bash -c "printf '$TRUNC' >/dev/tcp/$GW/8443" 2>/dev/null
        # a malformed ClientHello
        timeout 2 bash -c "printf '$MALFORMED' >/dev/tcp/$GW/8443" 2>/dev/null
        # an SNI the gateway does not serve
        echo | timeout 2 openssl s_client -connect "$GW:8443" -servername unknown.example.org >/dev/null 2>&1
        # a MUTUAL handshake without the client certificate
        echo | timeout 2 openssl s_client -connect "$GW:8444" -servername httpbin.example.com >/dev/null 2>&1
    done
}
hostile &
H1=$!
PIDS+=($H1)
# hold many truncated hellos open at once
HOLD=()
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/$GW/8443" && printf "$TRUNC" >&3 && sleep 3) 2>/dev/null &
    HOLD+=($!)
    PIDS+=($!)
done
good=0
goodn=0
for _ in $(seq 1 20); do
    c=$(https httpbin.example.com 8443 /dev/null)
    goodn=$((goodn + 1))
    [ "$c" = 200 ] && good=$((good + 1))
    sleep 0.05
done
unknown=$(https unknown.example.org 8443 /dev/null)
wait "$H1" 2>/dev/null
for p in "${HOLD[@]}"; do wait "$p" 2>/dev/null; done
after=$(https httpbin.example.com 8443 /dev/null)
if [ "$good" = "$goodn" ] && [ "$after" = 200 ] && [ "$unknown" = 000 ] && kill -0 "$ROUTER_PID" 2>/dev/null; then
    ok "gateway_tls_hostile_input # $good/$goodn good requests answered during the attack"
else
    bad gateway_tls_hostile_input "$good of $goodn good requests got 200 during the attack, $after after; unknown SNI: $unknown" \
        "$WORK/router.log"
fi

# ---- a clean stop: both exit 0 on SIGTERM, no sanitizer report in any log ----
kill "$ROUTER_PID" "$MESHD_PID" 2>/dev/null
wait "$ROUTER_PID"
rc_router=$?
wait "$MESHD_PID"
rc_meshd=$?
reports=$(grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error:' "$WORK"/*.log 2>/dev/null | tr '\n' ' ')
if [ "$rc_router" = 0 ] && [ "$rc_meshd" = 0 ] && [ -z "$reports" ]; then
    ok gateway_tls_clean_exit
else
    bad gateway_tls_clean_exit "router exited $rc_router, meshd $rc_meshd; sanitizer reports in: ${reports:-none}" \
        "$WORK/router.log"
fi
exit "$FAILED"
