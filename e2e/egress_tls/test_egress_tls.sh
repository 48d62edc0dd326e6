#!/bin/sh
# TLS origination to services outside the mesh, as in Istio's "Egress TLS
# Origination" task: the app speaks plain HTTP to the sidecar, a
# DestinationRule makes the sidecar originate TLS (SIMPLE) or mutual TLS
# (MUTUAL, with a client certificate from files) to a ServiceEntry's
# endpoint, and verifies the server against the given CA and SAN.
#
#   meshd    127.0.0.1:25010 (xDS), debug 127.0.0.1:25080   (config in a temp dir)
#   sidecar  127.0.0.50 (meshproxy, outbound listeners bound there)
#   api.example.com     127.0.0.51:8443  openssl s_server, server cert only
#   secure.example.com  127.0.0.52:8443  openssl s_server, requires a client cert
#
# Prints ok/not ok lines; stops every process it started.
set -u
. "$(dirname "$0")/../../test/lib.sh"
for c in openssl curl; do
    command -v "$c" >/dev/null 2>&1 || { echo "not ok egress_tls_tools - $c is missing"; exit 1; }
done

# ---- certificates: a root, two servers, a client ----
cd "$T" || exit 1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/O=example Inc./CN=example.com" \
    -keyout root.key -out root.crt 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=other root" \
    -keyout other.key -out other.crt 2>/dev/null
leaf() { # name, cn
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA root.crt -CAkey root.key -CAcreateserial -days 2 -extfile "$1.ext" \
        -out "$1.crt" 2>/dev/null
}
leaf api api.example.com
leaf secure secure.example.com
leaf client client.example.com
cd - >/dev/null || exit 1

start api openssl s_server -accept 127.0.0.51:8443 -cert "$T/api.crt" -key "$T/api.key" -www -quiet
start secure openssl s_server -accept 127.0.0.52:8443 -cert "$T/secure.crt" -key "$T/secure.key" \
    -Verify 1 -verify_return_error -CAfile "$T/root.crt" -www -quiet

# ---- the mesh config ----
mkdir -p "$T/config"
cat >"$T/config/egress.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: demo}
spec:
  hosts: [api.example.com, wrongsan.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 8443}]
  endpoints: [{address: 127.0.0.51}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: demo}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: $T/root.crt, subjectAltNames: [api.example.com]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrongsan, namespace: demo}
spec:
  host: wrongsan.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: $T/root.crt, sni: api.example.com, subjectAltNames: [billing.example.com]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: demo}
spec:
  hosts: [secure.example.com, nocert.example.com, wrongca.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 8443}]
  endpoints: [{address: 127.0.0.52}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: demo}
spec:
  host: secure.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: $T/client.crt
      privateKey: $T/client.key
      caCertificates: $T/root.crt
      sni: secure.example.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: nocert, namespace: demo}
spec:
  host: nocert.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: $T/root.crt, sni: secure.example.com}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrongca, namespace: demo}
spec:
  host: wrongca.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: $T/other.crt, sni: secure.example.com}
YAML

start meshd "$BUILD/meshd" --config-dir "$T/config" --grpc-addr 127.0.0.1:25010 --debug-addr 127.0.0.1:25080 \
    --monitoring-addr off --secure-grpc-addr off --webhook-addr off
i=0
until curl -sf -o /dev/null http://127.0.0.1:25080/ready; do
    i=$((i + 1))
    [ $i -lt 100 ] || { notok egress_tls_meshd "meshd not ready: $(tail -3 "$T/meshd.log")"; exit 1; }
    sleep 0.1
done
start sidecar "$BUILD/meshproxy" sidecar --xds-addr 127.0.0.1:25010 --node-ip 127.0.0.50 --bind 127.0.0.50 \
    --pod client-0 --namespace demo --labels app=client
i=0
until curl -sf -o /dev/null http://127.0.0.50:15021/healthz/ready; do
    i=$((i + 1))
    [ $i -lt 100 ] || { notok egress_tls_sidecar "sidecar not ready: $(tail -3 "$T/sidecar.log")"; exit 1; }
    sleep 0.1
done
ok egress_tls_ready

get() { # host -> "code body-first-line"
    curl -s -m 5 -o "$T/body" -w '%{http_code}' -H "Host: $1" http://127.0.0.50:8080/
}

# SIMPLE: the sidecar verifies api.example.com against the root and the SAN
code=$(get api.example.com)
if [ "$code" = 200 ] && grep -q "s_server" "$T/body"; then
    ok egress_tls_simple
else
    notok egress_tls_simple "api.example.com answered $code: $(head -c 200 "$T/body")"
fi
# the server saw TLS from the sidecar (the -www page reports the cipher)
grep -q "Cipher" "$T/body" && ok egress_tls_simple_is_tls || notok egress_tls_simple_is_tls "no TLS session on the server's page"

# MUTUAL: the client certificate from the DestinationRule's files
code=$(get secure.example.com)
if [ "$code" = 200 ] && grep -q "s_server" "$T/body"; then
    ok egress_tls_mutual
else
    notok egress_tls_mutual "secure.example.com answered $code: $(head -c 200 "$T/body")"
fi

# the same server without a client certificate: the handshake fails -> 503
code=$(get nocert.example.com)
[ "$code" = 503 ] && ok egress_tls_mutual_needs_client_cert ||
    notok egress_tls_mutual_needs_client_cert "nocert.example.com answered $code (want 503)"

# a CA that did not sign the server: verification fails -> 503
code=$(get wrongca.example.com)
[ "$code" = 503 ] && ok egress_tls_untrusted_server_refused ||
    notok egress_tls_untrusted_server_refused "wrongca.example.com answered $code (want 503)"

# a trusted server whose certificate does not name the expected SAN -> 503
code=$(get wrongsan.example.com)
[ "$code" = 503 ] && ok egress_tls_san_mismatch_refused ||
    notok egress_tls_san_mismatch_refused "wrongsan.example.com answered $code (want 503)"

# and the good routes still work afterwards
code=$(get api.example.com)
[ "$code" = 200 ] && ok egress_tls_still_serving || notok egress_tls_still_serving "api.example.com answered $code"

finish
