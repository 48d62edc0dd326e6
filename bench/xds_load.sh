#!/bin/sh
# ADS load benchmark (see bench/xds_load.c): a child process runs the xDS
# server over a config store of 1,000 services (2 ports, DestinationRule with
# 3 subsets, VirtualService each) and 10,000 endpoints; the parent connects
# 2,000 simulated sidecars over 200 HTTP/2 connections (10 streams each: the
# load tool's gRPC client gives up on a connection holding more than 256 MB of
# partial messages, which 100 streams of 7 MB responses exceed) and reports the time to
# the full state, the time to push a mesh-wide change to all, p50/p99 of a
# single VirtualService change (change -> ACK, debounce included), and the
# server's resident memory and CPU time.
#   sh bench/xds_load.sh [extra flags of build/bench/xds_load]
# e.g. sh bench/xds_load.sh --services 100 --endpoints 1000 --proxies 200
# Targets: server under 150 MB resident, full push under 2 s, single-change
# p99 under 200 ms.
BUILD=${BUILD:-build}
bin="$BUILD/bench/xds_load"
if [ ! -x "$bin" ]; then
    echo "!! $bin is missing (make $bin)"
    exit 1
fi
echo "== xds_load"
exec "$bin" --services 1000 --endpoints 10000 --proxies 2000 --conns 200 --changes 5 "$@"
