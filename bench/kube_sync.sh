#!/bin/sh
# Informer benchmark: meshd's initial sync of 10,000 pods + 1,000 services +
# 1,000 EndpointSlices + 5,000 mesh config objects from a real API server
# (a private envtest), then 1,000 pod updates/s for 30 s (see bench/kube_sync.c).
#   sh bench/kube_sync.sh [extra flags of build/bench/kube_sync]
# bench/run.sh calls it as its "kube_sync" section; `make build/bench/kube_sync
# build/meshd` builds what it runs. Targets: ready in < 3 s, < 40 MB resident;
# CPU and event-to-store latency p50/p99 reported.
BUILD=${BUILD:-build}
bin="$BUILD/bench/kube_sync"
meshd="$BUILD/meshd"
SHARED=${MESH_SHARED:-../shared}
ENVTEST="$SHARED/tools/envtest"
for f in "$bin" "$meshd"; do
    if [ ! -x "$f" ]; then
        echo "!! $f is missing (make $f)"
        exit 1
    fi
done
if [ ! -x "$ENVTEST/start.sh" ]; then
    echo "!! $ENVTEST/start.sh not found (the shared folder must sit beside the checkout)"
    exit 1
fi
run=$(mktemp -d /tmp/meshd-bench-envtest.XXXXXX)
cleanup() {
    ENVTEST_RUN="$run" bash "$ENVTEST/stop.sh" >/dev/null 2>&1
    rm -rf "$run"
}
trap cleanup EXIT INT TERM
started=0
for attempt in 1 2 3; do
    base=$((20000 + ($$ * 7 + attempt * 997) % 30000))
    if ENVTEST_RUN="$run" APISERVER_PORT=$base ETCD_PORT=$((base + 1)) ETCD_PEER_PORT=$((base + 2)) \
        CLEAN=1 bash "$ENVTEST/start.sh" >"$run/start.out" 2>&1; then
        started=1
        break
    fi
    ENVTEST_RUN="$run" bash "$ENVTEST/stop.sh" >/dev/null 2>&1
done
if [ $started = 0 ]; then
    echo "!! the envtest API server did not start:"
    tail -5 "$run/start.out"
    exit 1
fi
if ! kubectl --kubeconfig "$run/kubeconfig" apply --server-side -f crds/ >"$run/crds.out" 2>&1; then
    echo "!! installing the CRDs failed:"
    cat "$run/crds.out"
    exit 1
fi
# the CRDs must be served before objects are posted
sleep 3
"$bin" --kubeconfig "$run/kubeconfig" --meshd "$meshd" --port $((base + 3)) "$@"
