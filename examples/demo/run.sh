#!/bin/sh
# The local demo: meshd on examples/demo (local mode), an ingress gateway and
# a sidecar (meshproxy) on loopback configured by meshd over xDS, two
# versions of a backend, and real traffic through both proxies.
#
#   web v1  127.0.0.2:8080        web v2  127.0.0.3:8080
#   gateway 127.0.0.1:8080        sidecar 127.0.0.4:8080 (outbound)
#   meshd   xDS 127.0.0.1:15010, debug 127.0.0.1:15080, metrics 127.0.0.1:15014
#
# Edit examples/demo/*.yaml while it runs: meshd pushes the change and the
# traffic follows within a second. Ctrl-C stops everything.
# DEMO_ONCE=1 sends the traffic, prints it, checks it and stops (tests).
# Ports and addresses can be moved with the variables below.
set -u
BUILD=${BUILD:-build}
DIR=$(cd "$(dirname "$0")" && pwd)
XDS=${DEMO_XDS:-127.0.0.1:15010}
DEBUG=${DEMO_DEBUG:-127.0.0.1:15080}
METRICS=${DEMO_METRICS:-127.0.0.1:15014}
GW_IP=${DEMO_GW_IP:-127.0.0.1}
SC_IP=${DEMO_SC_IP:-127.0.0.4}
V1_IP=${DEMO_V1_IP:-127.0.0.2}
V2_IP=${DEMO_V2_IP:-127.0.0.3}
GW_PORTS=${DEMO_GW_PORTS:-15000,15090,15021}     # admin, stats, ready
SC_PORTS=${DEMO_SC_PORTS:-15100,15190,15121}
CONFIG=${DEMO_CONFIG:-$DIR}
LOGS=$(mktemp -d /tmp/meshd-demo.XXXXXX)
pids=""

stop() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap 'stop; echo; echo "demo stopped; logs were in $LOGS"; exit 0' INT TERM
trap 'stop' EXIT

start() { # name, command...
    name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    pids="$pids $!"
}

port() { echo "$1" | cut -d, -f"$2"; }

wait_ready() { # url, what
    i=0
    while [ $i -lt 100 ]; do
        curl -sf -o /dev/null "$1" 2>/dev/null && return 0
        i=$((i + 1))
        sleep 0.1
    done
    echo "!! $2 did not become ready; its log:"
    tail -20 "$LOGS/$3.log"
    exit 1
}

# The YAML mentions the backends' addresses: the demo's files say 127.0.0.2/3.
"$BUILD/meshctl" validate -f "$CONFIG" >/dev/null || { "$BUILD/meshctl" validate -f "$CONFIG"; exit 1; }

start web-v1 "$BUILD/backend" --listen "$V1_IP:8080" --name "web v1"
start web-v2 "$BUILD/backend" --listen "$V2_IP:8080" --name "web v2"
start meshd "$BUILD/meshd" --config-dir "$CONFIG" --grpc-addr "$XDS" --debug-addr "$DEBUG" \
    --monitoring-addr "$METRICS"
wait_ready "http://$DEBUG/ready" meshd meshd
start gateway "$BUILD/meshproxy" router --xds-addr "$XDS" --node-ip "$GW_IP" --bind "$GW_IP" \
    --pod ingressgateway-demo --namespace demo --labels istio=ingressgateway \
    --admin-port "$(port "$GW_PORTS" 1)" --stats-port "$(port "$GW_PORTS" 2)" --ready-port "$(port "$GW_PORTS" 3)"
start sidecar "$BUILD/meshproxy" sidecar --xds-addr "$XDS" --node-ip "$SC_IP" --bind "$SC_IP" \
    --pod client-demo --namespace demo --labels app=client \
    --admin-port "$(port "$SC_PORTS" 1)" --stats-port "$(port "$SC_PORTS" 2)" --ready-port "$(port "$SC_PORTS" 3)"
wait_ready "http://$GW_IP:$(port "$GW_PORTS" 3)/healthz/ready" gateway gateway
wait_ready "http://$SC_IP:$(port "$SC_PORTS" 3)/healthz/ready" sidecar sidecar

# Ready means configured; wait until each proxy also routes a first request.
serves() { # url, host, what, log
    i=0
    while [ $i -lt 50 ]; do
        curl -sf -o /dev/null -m 1 -H "Host: $2" "$1" 2>/dev/null && return 0
        i=$((i + 1))
        sleep 0.1
    done
    echo "!! $3 does not route requests; its log:"
    tail -20 "$LOGS/$4.log"
    exit 1
}
serves "http://$GW_IP:8080/" web.example.com gateway gateway
serves "http://$SC_IP:8080/" web sidecar sidecar

traffic() { # label, url, host, [header]
    out="$LOGS/traffic.txt"
    : >"$out"
    i=0
    while [ $i -lt 100 ]; do
        if [ $# -ge 4 ]; then
            curl -s -m 2 -H "Host: $3" -H "$4" "$2" >>"$out" || echo "failed" >>"$out"
        else
            curl -s -m 2 -H "Host: $3" "$2" >>"$out" || echo "failed" >>"$out"
        fi
        i=$((i + 1))
    done
    v1=$(grep -c 'web v1' "$out")
    v2=$(grep -c 'web v2' "$out")
    other=$((100 - v1 - v2))
    printf '  %-44s v1: %3d   v2: %3d   other: %d\n' "$1" "$v1" "$v2" "$other"
}

echo
echo "== 100 requests each, routed by meshd's VirtualService (90/10 canary; end-user: jason -> v2)"
traffic "gateway  Host: web.example.com" "http://$GW_IP:8080/" web.example.com
gw_v1=$v1 gw_v2=$v2 gw_other=$other
traffic "gateway  Host: web.example.com, jason" "http://$GW_IP:8080/" web.example.com "end-user: jason"
gwj_v2=$v2
traffic "sidecar  Host: web (short name)" "http://$SC_IP:8080/" web
sc_v1=$v1 sc_v2=$v2
traffic "sidecar  Host: web, jason" "http://$SC_IP:8080/" web "end-user: jason"
scj_v2=$v2
echo
echo "== the gateway's metrics (istio_requests_total)"
curl -s "http://$GW_IP:$(port "$GW_PORTS" 2)/stats/prometheus" | grep '^istio_requests_total' | sed 's/^/  /'

if [ "${DEMO_ONCE:-0}" = 1 ]; then
    # the checks the demo's test relies on: a 90/10 split within a wide margin
    ok=1
    [ "$gw_other" -eq 0 ] || ok=0
    [ "$gw_v1" -ge 75 ] && [ "$gw_v2" -ge 2 ] || ok=0
    [ "$sc_v1" -ge 75 ] && [ "$sc_v2" -ge 2 ] || ok=0
    [ "$gwj_v2" -eq 100 ] && [ "$scj_v2" -eq 100 ] || ok=0
    if [ $ok = 1 ] && [ "${DEMO_EDIT:-0}" = 1 ]; then
        # a live edit (of a copy: DEMO_CONFIG) reaches both proxies within a second
        sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' "$CONFIG/routes.yaml"
        sleep 1
        echo "== after editing routes.yaml to 50/50 (1 s later)"
        traffic "gateway  Host: web.example.com" "http://$GW_IP:8080/" web.example.com
        [ "$v2" -ge 30 ] && [ "$v1" -ge 30 ] || ok=0
        traffic "sidecar  Host: web (short name)" "http://$SC_IP:8080/" web
        [ "$v2" -ge 30 ] && [ "$v1" -ge 30 ] || ok=0
    fi
    [ $ok = 1 ] && echo "demo: traffic as configured" && exit 0
    echo "demo: traffic NOT as configured; logs in $LOGS"
    exit 1
fi

cat <<MSG

== Running. Try, in another terminal:
  curl -H 'Host: web.example.com' http://$GW_IP:8080/                       # through the gateway
  curl -H 'Host: web' -H 'end-user: jason' http://$SC_IP:8080/              # through the sidecar
  sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' examples/demo/routes.yaml
      # meshd pushes the new split to both proxies within a second
  build/meshctl proxy-status --debug-addr $DEBUG                       # what each proxy has ACKed
  curl http://$DEBUG/debug/configz | head                                   # what meshd holds
  git checkout examples/demo/routes.yaml                                    # back to 90/10
Logs: $LOGS   Ctrl-C stops the demo.
MSG
while :; do sleep 3600 & wait $!; done
