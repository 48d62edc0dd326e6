#!/bin/sh
# Injection benchmark: requests/s and p50/p99 of /inject over HTTPS with
# keep-alive, the server on 2 threads (see bench/inject.c).
#   sh bench/inject.sh [extra flags of build/bench/inject]
# bench/run.sh calls it as its "inject" section; `make build/bench/inject`
# builds the binary. Targets: >= 5,000 requests/s; p99 < 2 ms at 1,000/s.
BUILD=${BUILD:-build}
bin="$BUILD/bench/inject"
if [ ! -x "$bin" ]; then
    echo "!! $bin is missing (make $bin)"
    exit 1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1; then
    echo "!! openssl could not make the test certificate"
    exit 1
fi
"$bin" --cert "$dir/cert.pem" --key "$dir/key.pem" --threads 2 --conns 8 --seconds 5 --rate 1000 "$@"
