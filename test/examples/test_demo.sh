#!/bin/sh
# make demo's script, end to end on loopback addresses of its own: meshd on a
# copy of examples/demo, a gateway and a sidecar meshproxy, two backends; the
# traffic follows the VirtualService, and a live edit reaches both proxies.
BUILD=${MESH_BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp examples/demo/*.yaml "$tmp/"
# the backends' addresses move with the copy
sed -i "s/127\\.0\\.0\\.2\\b/127.0.0.32/g; s/127\\.0\\.0\\.3\\b/127.0.0.33/g" "$tmp/services.yaml"
BUILD=$BUILD DEMO_ONCE=1 DEMO_EDIT=1 DEMO_CONFIG="$tmp" \
    DEMO_XDS=127.0.0.31:15010 DEMO_DEBUG=127.0.0.31:15080 DEMO_METRICS=127.0.0.31:15014 \
    DEMO_GW_IP=127.0.0.31 DEMO_SC_IP=127.0.0.34 DEMO_V1_IP=127.0.0.32 DEMO_V2_IP=127.0.0.33 \
    DEMO_GW_PORTS=25100,25190,25121 DEMO_SC_PORTS=25200,25290,25221 \
    sh examples/demo/run.sh >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
if [ $rc -eq 0 ]; then echo "ok demo_traffic_and_live_edit"; else echo "not ok demo_traffic_and_live_edit"; fi
