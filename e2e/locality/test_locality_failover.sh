#!/bin/sh
# Locality failover as in Istio's "Locality failover" task, with the real
# binaries on loopback: a client sidecar in region1/zone-a calls "web", which
# has one pod in its zone, one in region1/zone-b and one in region2. With
# outlier detection and a failover rule, all traffic stays in zone-a; when
# that pod dies it moves to zone-b, then to region2, and back to zone-a once
# it returns and its ejection has expired. Then retryRemoteLocalities: with
# both zone-a pods of "api" answering 503, a retry goes to zone-b (200);
# without it ("api-local") the retry stays in zone-a (503). Last,
# failoverPriority [version]: the client (version v1) calls "ver", whose v1
# pod runs in region2 and v2 pod in its own zone: v1 first, wherever it runs,
# and v2 once v1 is gone.
#
#   meshd    127.0.0.70 (xDS 25710, debug 25780), config in a temp dir
#   client   127.0.0.71 (meshproxy sidecar, outbound listener :8080)
#   web-a    127.0.0.72:8080  region1/zone-a     web-b 127.0.0.73:8080  region1/zone-b
#   web-c    127.0.0.74:8080  region2/zone-c
#   api-a1, api-a2  127.0.0.75/76:8080 (503)  region1/zone-a    api-b 127.0.0.77:8080  region1/zone-b
#   ver-1    127.0.0.78:8080  region2/zone-c, v1    ver-2 127.0.0.79:8080  region1/zone-a, v2
# Prints ok/not ok lines; stops every process it started.
set -u
. "$(dirname "$0")/../../test/lib.sh"
pod() { # name, ip, locality (region.zone), app, version
    cat <<YAML
---
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: demo
  labels: {app: ${4:-web}, version: ${5:-v1}, istio-locality: $3}
spec:
  containers: [{name: app, ports: [{containerPort: 8080}]}]
status: {phase: Running, podIP: $2}
YAML
}
service() { # name, app, then pod=ip for each endpoint
    name=$1 app=$2
    shift 2
    cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: demo}
spec:
  selector: {app: $app}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name-1, namespace: demo, labels: {kubernetes.io/service-name: $name}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
YAML
    for ep in "$@"; do
        echo "- {addresses: [${ep#*=}], conditions: {ready: true}, targetRef: {kind: Pod, name: ${ep%%=*}, namespace: demo}}"
    done
}
mkdir -p "$T/config"
{
    service web web web-a=127.0.0.72 web-b=127.0.0.73 web-c=127.0.0.74
    cat <<'YAML'
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: demo}
spec:
  host: web.demo.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover: [{from: region1, to: region2}]
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}
YAML
    pod web-a 127.0.0.72 region1.zone-a
    pod web-b 127.0.0.73 region1.zone-b
    pod web-c 127.0.0.74 region2.zone-c
    pod client-0 127.0.0.71 region1.zone-a client
    pod api-a1 127.0.0.75 region1.zone-a api
    pod api-a2 127.0.0.76 region1.zone-a api
    pod api-b 127.0.0.77 region1.zone-b api
    for svc in api api-local; do
        service $svc api api-a1=127.0.0.75 api-a2=127.0.0.76 api-b=127.0.0.77
        cat <<YAML
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: $svc, namespace: demo}
spec:
  host: $svc.demo.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1000}
YAML
    done
    pod ver-1 127.0.0.78 region2.zone-c ver v1
    pod ver-2 127.0.0.79 region1.zone-a ver v2
    service ver ver ver-1=127.0.0.78 ver-2=127.0.0.79
    cat <<'YAML'
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ver, namespace: demo}
spec:
  host: ver.demo.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
    loadBalancer: {localityLbSetting: {failoverPriority: [version]}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: demo}
spec:
  hosts: [api.demo.svc.cluster.local]
  http: [{route: [{destination: {host: api.demo.svc.cluster.local}}],
          retries: {attempts: 1, retryOn: 5xx, retryRemoteLocalities: true}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-local, namespace: demo}
spec:
  hosts: [api-local.demo.svc.cluster.local]
  http: [{route: [{destination: {host: api-local.demo.svc.cluster.local}}],
          retries: {attempts: 1, retryOn: 5xx}}]
YAML
} >"$T/config/mesh.yaml"

start web-a "$BUILD/backend" --listen 127.0.0.72:8080 --name zone-a
start web-b "$BUILD/backend" --listen 127.0.0.73:8080 --name zone-b
start web-c "$BUILD/backend" --listen 127.0.0.74:8080 --name region2
DIR=$(cd "$(dirname "$0")" && pwd)
start api-a1 python3 "$DIR/fail_backend.py" 127.0.0.75 8080 api-a1
start api-a2 python3 "$DIR/fail_backend.py" 127.0.0.76 8080 api-a2
start api-b "$BUILD/backend" --listen 127.0.0.77:8080 --name api-b
start ver-1 "$BUILD/backend" --listen 127.0.0.78:8080 --name ver-v1
start ver-2 "$BUILD/backend" --listen 127.0.0.79:8080 --name ver-v2
start meshd "$BUILD/meshd" --config-dir "$T/config" --grpc-addr 127.0.0.70:25710 --debug-addr 127.0.0.70:25780 \
    --monitoring-addr off --secure-grpc-addr off --webhook-addr off
wait_url http://127.0.0.70:25780/ready || { notok locality_meshd "$(tail -3 "$T/meshd.log")"; exit 1; }
start client "$BUILD/meshproxy" sidecar --xds-addr 127.0.0.70:25710 --node-ip 127.0.0.71 --bind 127.0.0.71 \
    --pod client-0 --namespace demo --labels app=client,version=v1 --no-access-log
wait_url http://127.0.0.71:15021/healthz/ready || { notok locality_sidecar "$(tail -3 "$T/client.log")"; exit 1; }

# n requests to host; prints how many each named backend answered
# (x-backend), then the failures
tally() { # host, n, names...
    host=$1 n=$2
    shift 2
    got="" i=0
    while [ $i -lt "$n" ]; do
        got="$got $(curl -s -m 3 -D - -o /dev/null -H "Host: $host" http://127.0.0.71:8080/ |
            tr -d '\r' | sed -n 's/^x-backend: //Ip')"
        i=$((i + 1))
    done
    out="" f=$n
    for name in "$@"; do
        c=0
        for w in $got; do [ "$w" = "$name" ] && c=$((c + 1)); done
        out="$out $c" f=$((f - c))
    done
    echo $out $f
}
send() { tally web.demo.svc.cluster.local "$1" zone-a zone-b region2; }
set -- $(send 20)
[ "$1" = 20 ] && ok locality_same_zone_first || notok locality_same_zone_first "zone-a $1, zone-b $2, region2 $3, failed $4"

stop web-a
send 3 >/dev/null # the failures that eject zone-a's pod (retried elsewhere)
set -- $(send 20)
[ "$2" = 20 ] && ok locality_fails_over_to_zone_b || notok locality_fails_over_to_zone_b "zone-a $1, zone-b $2, region2 $3, failed $4"

stop web-b
send 3 >/dev/null
set -- $(send 20)
[ "$3" = 20 ] && ok locality_fails_over_to_region2 || notok locality_fails_over_to_region2 "zone-a $1, zone-b $2, region2 $3, failed $4"

# zone-a comes back; once its ejection (2 s) is over, traffic returns
start web-a2 "$BUILD/backend" --listen 127.0.0.72:8080 --name zone-a
sleep 3
set -- $(send 20)
[ "$1" = 20 ] && ok locality_returns_to_zone_a || notok locality_returns_to_zone_a "zone-a $1, zone-b $2, region2 $3, failed $4"
# retryRemoteLocalities: the retry after zone-a's 503 goes to zone-b
for a in 127.0.0.75 127.0.0.76; do # the failing backends are up (they answer 503)
    i=0
    while [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$a:8080/")" != 503 ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
done
codes() { # host, n -> "200s 503s"
    o=0 e=0 i=0
    while [ $i -lt "$2" ]; do
        c=$(curl -s -m 3 -o /dev/null -w '%{http_code}' -H "Host: $1" http://127.0.0.71:8080/)
        case "$c" in 200) o=$((o + 1)) ;; *) e=$((e + 1)) ;; esac
        i=$((i + 1))
    done
    echo "$o $e"
}
set -- $(codes api.demo.svc.cluster.local 10)
[ "$1" = 10 ] && ok locality_retry_remote_localities || notok locality_retry_remote_localities "$1 x 200, $2 failed"
set -- $(codes api-local.demo.svc.cluster.local 10)
[ "$2" = 10 ] && ok locality_retry_stays_local_by_default || notok locality_retry_stays_local_by_default "$1 x 200, $2 failed"

# failoverPriority: the v1 pod in region2 first, then v2 in the client's zone
versions() { tally ver.demo.svc.cluster.local "$1" ver-v1 ver-v2; }
set -- $(versions 10)
[ "$1" = 10 ] && ok locality_failover_priority_same_version_first || notok locality_failover_priority_same_version_first "v1 $1, v2 $2, failed $3"
stop ver-1
versions 3 >/dev/null # the failures that eject the v1 pod
set -- $(versions 10)
[ "$2" = 10 ] && ok locality_failover_priority_next_rank || notok locality_failover_priority_next_rank "v1 $1, v2 $2, failed $3"
finish
