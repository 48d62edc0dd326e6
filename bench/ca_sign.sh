#!/bin/sh
# CA signing benchmark: CSR signings per CPU-second of meshd's side through
# the gRPC endpoint (local-mode JWT authentication, TLS), for an RSA 2048 and
# an ECDSA P-256 CA key, beside `openssl speed` for the same signature
# algorithm measured in the same run, and p50/p99 latency at 500 signings/s.
#   sh bench/ca_sign.sh [SECONDS]
# bench/run.sh calls it as its "ca_sign" section; `make build/bench/ca_sign`
# builds the binary. Target: >= 70% of the raw signature rate for ECDSA.
# Each signing also verifies the CSR's signature (an ECDSA P-256 verify) and
# the caller's JWT (ES256 verify); the crypto floor printed below counts
# those, so the ratio to it shows the overhead around the cryptography.
BUILD=${BUILD:-build}
SECS=${1:-5}
bin="$BUILD/bench/ca_sign"
if [ ! -x "$bin" ]; then
    echo "!! $bin is missing (make $bin)"
    exit 1
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "!! openssl is missing"
    exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# sign/s and verify/s of one algorithm from `openssl speed` (one core)
speed() {
    openssl speed -seconds 3 "$1" 2>/dev/null | awk -v alg="$1" '
        alg ~ /^rsa/ && $1 == "rsa" && $2 ~ /^2048/ { print $6, $7; exit }
        alg ~ /^ecdsa/ && $1 == "256" && $2 == "bits" && $3 == "ecdsa" { print $(NF-1), $NF; exit }'
}

rc=0
ec_verify=""
for key in ecdsa rsa; do
    case $key in
    ecdsa) alg=ecdsap256 ;;
    rsa) alg=rsa2048 ;;
    esac
    set -- $(speed $alg)
    raw_sign=${1:-0}
    raw_verify=${2:-0}
    [ $key = ecdsa ] && ec_verify=$raw_verify
    [ -z "$ec_verify" ] && { set -- $(speed ecdsap256); ec_verify=${2:-0}; }
    echo "-- CA key $key: openssl speed $alg: $raw_sign sign/s, $raw_verify verify/s (one core)"
    if ! "$bin" --key $key --csr-key ecdsa --threads 1 --seconds "$SECS" --rate 500 >"$out" 2>&1; then
        cat "$out"
        echo "!! ca_sign --key $key failed"
        rc=1
        continue
    fi
    grep -v '^RESULT' "$out"
    line=$(grep '^RESULT' "$out")
    per_cpu=$(echo "$line" | sed -n 's/.*per_cpu=\([0-9.]*\).*/\1/p')
    awk -v s="$raw_sign" -v ev="$ec_verify" -v p="$per_cpu" -v k="$key" 'BEGIN {
        if (s <= 0 || ev <= 0) { print "!! openssl speed gave no figure"; exit 1 }
        floor = 1 / (1 / s + 2 / ev)
        printf "ratio (%s): %.0f signings per CPU-second = %.1f%% of the raw %s sign rate; crypto floor (CA sign + CSR verify + JWT verify) %.0f/s, reached at %.1f%%\n",
            k, p, 100 * p / s, k, floor, 100 * p / floor
    }' || rc=1
    echo
done
exit $rc
