#!/bin/sh
# Locality failover as in Istio's "Locality failover" task, with the real
# binaries on loopback: a client sidecar in region1/zone-a calls "web", which
# has one pod in its zone, one in region1/zone-b and one in region2. With
# outlier detection and a failover rule, all traffic stays in zone-a; when
# that pod dies it moves to zone-b, then to region2, and back to zone-a once
# it returns and its ejection has expired.
#
#   meshd    127.0.0.70 (xDS 25710, debug 25780), config in a temp dir
#   client   127.0.0.71 (meshproxy sidecar, outbound listener :8080)
#   web-a    127.0.0.72:8080  region1/zone-a     web-b 127.0.0.73:8080  region1/zone-b
#   web-c    127.0.0.74:8080  region2/zone-c
# Prints ok/not ok lines; stops every process it started.
set -u
BUILD=${BUILD:-${MESH_BUILD:-build}}
T=$(mktemp -d /tmp/locality.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "ok $1"; }
notok() {
    echo "not ok $1 - $2"
    fails=$((fails + 1))
}
start() { # name, command...
    n=$1
    shift
    "$@" >"$T/$n.log" 2>&1 &
    echo $! >"$T/$n.pid"
    pids="$pids $!"
}
stop() { kill "$(cat "$T/$1.pid")" 2>/dev/null; }

pod() { # name, ip, locality (region.zone)
    cat <<YAML
---
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: demo
  labels: {app: ${4:-web}, istio-locality: $3}
spec:
  containers: [{name: app, ports: [{containerPort: 8080}]}]
status: {phase: Running, podIP: $2}
YAML
}
mkdir -p "$T/config"
{
    cat <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [127.0.0.72], conditions: {ready: true}, targetRef: {kind: Pod, name: web-a, namespace: demo}}
- {addresses: [127.0.0.73], conditions: {ready: true}, targetRef: {kind: Pod, name: web-b, namespace: demo}}
- {addresses: [127.0.0.74], conditions: {ready: true}, targetRef: {kind: Pod, name: web-c, namespace: demo}}
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
} >"$T/config/mesh.yaml"

start web-a "$BUILD/backend" --listen 127.0.0.72:8080 --name zone-a
start web-b "$BUILD/backend" --listen 127.0.0.73:8080 --name zone-b
start web-c "$BUILD/backend" --listen 127.0.0.74:8080 --name region2
start meshd "$BUILD/meshd" --config-dir "$T/config" --grpc-addr 127.0.0.70:25710 --debug-addr 127.0.0.70:25780 \
    --monitoring-addr off --secure-grpc-addr off --webhook-addr off
wait_url() {
    i=0
    until curl -sf -o /dev/null -m 1 "$1"; do
        i=$((i + 1))
        [ $i -lt 100 ] || return 1
        sleep 0.1
    done
}
wait_url http://127.0.0.70:25780/ready || { notok locality_meshd "$(tail -3 "$T/meshd.log")"; exit 1; }
start client "$BUILD/meshproxy" sidecar --xds-addr 127.0.0.70:25710 --node-ip 127.0.0.71 --bind 127.0.0.71 \
    --pod client-0 --namespace demo --labels app=client --no-access-log
wait_url http://127.0.0.71:15021/healthz/ready || { notok locality_sidecar "$(tail -3 "$T/client.log")"; exit 1; }

# N requests; prints how many each backend answered, and the failures
send() { # n
    a=0 b=0 c=0 f=0
    i=0
    while [ $i -lt "$1" ]; do
        who=$(curl -s -m 3 -D - -o /dev/null -H 'Host: web.demo.svc.cluster.local' http://127.0.0.71:8080/ |
            tr -d '\r' | sed -n 's/^x-backend: //Ip')
        case "$who" in
        zone-a) a=$((a + 1)) ;;
        zone-b) b=$((b + 1)) ;;
        region2) c=$((c + 1)) ;;
        *) f=$((f + 1)) ;;
        esac
        i=$((i + 1))
    done
    echo "$a $b $c $f"
}
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
[ $fails -eq 0 ]
