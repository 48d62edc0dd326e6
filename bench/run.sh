#!/bin/sh
# Runs the benchmarks and prints their figures with the machine they ran on.
# `make bench` builds everything first and calls this with BUILD set.
#
#   sh bench/run.sh [SECTION...]     sections: config_load, and inject, ca_sign,
#                                    kube_sync, xds_load, proxy, mtls, tcp_bulk
#                                    (default: all)
#
# Each section is a function bench_<name> that prints a heading, runs one
# benchmark and returns non-zero if it failed; add a section by writing the
# function and appending its name to SECTIONS. Results to keep go to
# bench/RESULTS.md by hand, with the machine and the date.
BUILD=${BUILD:-build}
# A section runs when its script or binary exists (the parts arrive one by one).
SECTIONS="config_load"
for s in inject ca_sign kube_sync xds_load proxy mtls tcp_bulk; do
    [ -f "bench/$s.sh" ] && SECTIONS="$SECTIONS $s"
done

machine() {
    cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}"
    echo "kernel:  $(uname -sr)"
    echo "memory:  $(awk '/^MemTotal:/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)"
    echo "build:   $BUILD ($(${CC:-cc} --version 2>/dev/null | head -1))"
    if git rev-parse --short HEAD >/dev/null 2>&1; then
        echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    fi
}

# Config load: 10,000 VirtualServices + 10,000 DestinationRules + 2,000
# Services decoded, validated and stored on one core.
# Targets: under 1 s wall, under 2 KB resident per object.
bench_config_load() {
    echo "== config_load: load + validate + store a large mesh config on one core"
    bin="$BUILD/bench/config_load"
    if [ ! -x "$bin" ]; then
        echo "!! $bin is missing (make $bin)"
        return 1
    fi
    "$bin"
}

# Sections kept in their own scripts (each prints its heading and figures).
for s in inject ca_sign kube_sync xds_load proxy mtls tcp_bulk; do
    eval "bench_$s() { BUILD=\"\$BUILD\" sh bench/$s.sh; }"
done

echo "meshd benchmarks"
machine
echo

want=${*:-$SECTIONS}
failed=""
for s in $want; do
    case " $SECTIONS " in
    *" $s "*) ;;
    *)
        echo "!! unknown section: $s (sections: $SECTIONS)"
        failed="$failed $s"
        continue
        ;;
    esac
    if ! "bench_$s"; then
        failed="$failed $s"
    fi
    echo
done

if [ -n "$failed" ]; then
    echo "benchmarks failed:$failed"
    exit 1
fi
echo "benchmarks: all sections ran"
