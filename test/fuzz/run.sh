#!/bin/sh
# Builds the libFuzzer targets, writes their seed corpus and runs each one.
#
#   sh test/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS: how long each target runs (default 60). TARGET: fuzz_config,
# fuzz_doc, ... (default: every test/fuzz/fuzz_*.c). Run from the repository
# root. Environment: TESTDATA (default ../shared/testdata), FUZZ_JOBS (parallel
# fuzzing processes per target, default 1), FUZZ_ARGS (extra libFuzzer flags).
#
# Layout (all under build/fuzz/, nothing is committed):
#   seeds/           seed corpus, rewritten on every run: the YAML/JSON files of
#                    TESTDATA (large files split into documents) + hostile inputs
#   corpus/TARGET/   the target's working corpus, grown by libFuzzer, kept
#   crashes/TARGET/  crash-*, leak-*, timeout-*, oom-* reproducers
#   TARGET.log       libFuzzer's output of the last run
# Exits 1 if a target found a crash (the reproducers are listed) or failed to run.
set -u
cd "$(dirname "$0")/../.." || exit 1

SECONDS_PER_TARGET=${1:-60}
[ $# -gt 0 ] && shift
case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac
TESTDATA=${TESTDATA:-../shared/testdata}
FUZZ_JOBS=${FUZZ_JOBS:-1}
MAX_LEN=65536
OUT=build/fuzz

if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=$(for f in test/fuzz/fuzz_*.c; do basename "$f" .c; done)
fi

bins=""
for t in $targets; do bins="$bins $OUT/$t"; done
# shellcheck disable=SC2086
make $bins || exit 1

# ---- seed corpus ----
SEEDS=$OUT/seeds
rm -rf "$SEEDS"
mkdir -p "$SEEDS"

if [ -d "$TESTDATA" ]; then
    n=0
    # Files small enough to be inputs are copied; larger ones are split into
    # their documents (at "---" lines), and pieces over MAX_LEN are dropped.
    find "$TESTDATA" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) | sort |
        while IFS= read -r f; do
            n=$((n + 1))
            ext=${f##*.}
            size=$(wc -c <"$f")
            if [ "$size" -le "$MAX_LEN" ]; then
                cp "$f" "$SEEDS/testdata-$n.$ext"
            else
                awk -v dir="$SEEDS" -v n="$n" -v ext="$ext" '
                    /^---/ { if (buf != "") { k++; f = dir "/testdata-" n "-" k "." ext; printf "%s", buf > f; close(f) } buf = "" }
                    { buf = buf $0 "\n" }
                    END { if (buf != "") { k++; f = dir "/testdata-" n "-" k "." ext; printf "%s", buf > f; close(f) } }
                ' "$f"
            fi
        done
    find "$SEEDS" -type f -size +"$MAX_LEN"c -delete
else
    echo "warning: $TESTDATA not found; only the hostile seeds are used" >&2
fi

seed() { printf '%b' "$2" >"$SEEDS/hostile-$1"; }

# Alias expansion ("billion laughs") in a field the model decodes and in a free-form one.
seed alias-bomb.yaml 'apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bomb, namespace: default}
x0: &a0 [x, x, x, x, x, x, x, x, x, x]
x1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]
x2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]
x3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]
x4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]
x5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]
x6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]
x7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]
spec:
  hosts: *a7
'
seed alias-bomb-routes.yaml 'apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bomb, namespace: default}
spec:
  hosts: [a.example.com]
  http: &h0
  - &r0 {route: [{destination: {host: a}}]}
  - *r0
  - *r0
  - *r0
  tcp: [*h0, *h0, *h0, *h0]
'
seed alias-bomb-configmap.yaml 'apiVersion: v1
kind: ConfigMap
metadata: {name: bomb}
data: &d {a: &l0 [1, 2, 3, 4, 5, 6, 7, 8, 9], b: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0], c: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1], d: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]}
metadata2: [*d, *d, *d, *d, *d, *d, *d, *d]
'
# An alias inside its own anchor, and an alias to an unknown anchor.
seed alias-self.yaml 'a: &a [1, *a]\n'
seed alias-self-map.yaml 'apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: x, labels: *m}\n'
seed alias-self-raw.yaml 'apiVersion: v1\nkind: Service\nmetadata: {name: cycle}\nstatus: &s {loadBalancer: [*s]}\n'
seed alias-unknown.yaml 'kind: *nowhere\n'
# Merge keys: plain, a list of maps, not a map, onto itself, overriding.
seed merge.yaml 'base: &b {apiVersion: networking.istio.io/v1, kind: DestinationRule}
---
<<: *b
metadata: {name: merged, namespace: default}
spec: {host: reviews, subsets: [{<<: {name: v1}, labels: {version: v1}}]}
'
seed merge-list.yaml 'x: &x {a: 1}\ny: &y {b: 2}\nz: {<<: [*x, *y], a: 3}\n'
seed merge-bad.yaml 'x: &x [1, 2]\ny: {<<: *x}\nz: {<<: 7}\nw: {<<: [*x, 3]}\n'
seed merge-self.yaml 'm: &m {a: 1, <<: *m}\n'
seed merge-dup.yaml 'a: 1\na: 2\n<<: {a: 3}\n<<: {b: 4}\n'
# Deep nesting, both formats, just over and far over the limit.
deep() { # $1 open, $2 close, $3 count
    awk -v o="$1" -v c="$2" -v n="$3" 'BEGIN { for (i = 0; i < n; i++) printf "%s", o; for (i = 0; i < n; i++) printf "%s", c; printf "\n" }'
}
deep '[' ']' 129 >"$SEEDS/hostile-deep-129.json"
deep '[' ']' 20000 >"$SEEDS/hostile-deep-20000.json"
deep '{"a":' '}' 5000 | sed 's/:}/:1}/' >"$SEEDS/hostile-deep-map.json"
deep '- ' '' 300 >"$SEEDS/hostile-deep-seq.yaml"
deep '{a: ' '}' 3000 >"$SEEDS/hostile-deep-flow.yaml"
awk 'BEGIN { s = ""; for (i = 0; i < 200; i++) { printf "%sk%d:\n", s, i; s = s " " } printf "%sleaf: 1\n", s }' >"$SEEDS/hostile-deep-block.yaml"
# Numbers: out of every integer range, floats where integers belong, odd bases.
seed numbers.yaml 'apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nums, namespace: default}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a, port: {number: 99999999999999999999999999}}
      weight: -9223372036854775809
    - destination: {host: a, port: {number: 0x7fffffff}}
      weight: 1e400
    retries: {attempts: 4294967296, perTryTimeout: 9223372036854775807s}
    timeout: 1e309s
    mirrorPercentage: {value: .nan}
  - route: [{destination: {host: b}, weight: 0o777}, {destination: {host: b}, weight: 0b101}]
    timeout: -0.0000000000000000001s
    retries: {attempts: -2147483649}
  - route: [{destination: {host: c}, weight: 1_000}, {destination: {host: c}, weight: +.inf}]
    timeout: 2562047h47m16.854775808s
'
seed numbers.json '{"apiVersion":"v1","kind":"Service","metadata":{"name":"n"},"spec":{"ports":[{"port":1e999},{"port":-1e-999},{"port":18446744073709551616},{"port":-0},{"port":2147483648,"targetPort":9223372036854775808},{"port":1.5,"nodePort":1E+2}]}}'
seed durations.yaml 'apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: d
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 99999999999h, tcpKeepalive: {time: .5.5s, interval: 1h-1s}}, http: {idleTimeout: "1e3s"}}
    outlierDetection: {interval: "9223372036.854775808s", baseEjectionTime: "-1ns", consecutive5xxErrors: 4294967295}
'
# NUL bytes, inside a scalar and between documents; broken and overlong UTF-8; a BOM.
seed nul.yaml 'apiVersion: v1\nkind: Service\nmetadata: {name: "a\\0b", namespace: n\0s}\n---\n\0\0\0\n---\nkind: "x\\u0000y"\n'
seed nul.json '{"apiVersion":"v1","kind":"Service","metadata":{"name":"a\\u0000b"}}\0{"x":1}'
seed utf8.yaml 'apiVersion: v1\nkind: Service\nmetadata:\n  name: \0377\0376\0300\0257\n  labels: {"\0355\0240\0200": "\0364\0220\0200\0200", app: "\0342\0202"}\n'
seed utf8.json '{"apiVersion":"v1","kind":"Service","metadata":{"name":"\0303\0050","labels":{"\\ud800":"\\udfff\\u00e9"}}}'
seed bom.yaml '\0357\0273\0277apiVersion: v1\nkind: Namespace\nmetadata: {name: bom}\n'
seed utf16.yaml '\0377\0376a\0:\0 \0b\0\n\0'
# Odd streams: tags, complex keys, empty and bare documents, lists, CRLF.
seed tags.yaml '--- !!map\napiVersion: !!str v1\nkind: !custom Service\nmetadata: {name: !!binary aGVsbG8=, namespace: !!int 3}\nspec: !!set {? a, ? b}\n'
seed complex-key.yaml '? [a, b]\n: c\n? {x: 1}\n: d\n'
seed docs.yaml '---\n...\n---\n# only a comment\n---\n~\n--- 42\n--- [1, 2]\n--- "kind"\n...\n'
seed list.yaml 'apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: List
  items: [{apiVersion: v1, kind: Namespace, metadata: {name: inner}}]
- {apiVersion: networking.istio.io/v1, kind: Gateway, metadata: {name: gw}, spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}}
- 7
- null
'
seed crlf.yaml 'apiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: crlf\r\n'
seed long-key.yaml "$(awk 'BEGIN { for (i = 0; i < 4000; i++) printf "k"; printf ": v\\n" }')"
seed json-trailing.json '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}} {"apiVersion":"v1"} ]'
seed json-dup.json '{"kind":"Namespace","kind":"Service","apiVersion":"v1","metadata":{"name":"a","name":"b"}}'

# HTTP/1.1 for the proxy's codec (fuzz_http1): plain, chunked, smuggling shapes.
seed http-get.txt 'GET /a?b=c HTTP/1.1\r\nHost: web\r\nuser-agent: x\r\n\r\n'
seed http-chunked.txt 'POST /p HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n'
seed http-smuggle.txt 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n'
seed http-response.txt 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'
# HTTP/2 for the proxy's downstream codec (fuzz_h2; the first byte is the read size):
# the h2c preface, SETTINGS, a GET (HEADERS, END_STREAM), a POST with a DATA frame.
seed h2c-get.bin '\0077PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0000\0000\0000\0004\0000\0000\0000\0000\0000\0000\0000\0010\0001\0005\0000\0000\0000\0001\0202\0206\0204A\0003web'
seed h2c-post.bin '\0005PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0000\0000\0000\0004\0000\0000\0000\0000\0000\0000\0000\0010\0001\0004\0000\0000\0000\0001\0203\0206\0204A\0003web\0000\0000\0005\0000\0001\0000\0000\0000\0001hello'
# A TLS 1.2 ClientHello with SNI "reviews" and ALPN istio, http/1.1 (fuzz_tls_hello).
seed tls-hello.bin '\0026\0003\0001\0000\0334\0001\0000\0000\0330\0003\0003\0045\0114\0032\0262\0157\0023\0333\0276\0260\0066\0207\0173\0160\0104\0071\0047\0077\0353\0301\0364\0001\0010\0056\0121\0161\0261\0253\0066\0270\0124\0360\0116\0000\0000\0070\0300\0054\0300\0060\0000\0237\0314\0251\0314\0250\0314\0252\0300\0053\0300\0057\0000\0236\0300\0044\0300\0050\0000\0153\0300\0043\0300\0047\0000\0147\0300\0012\0300\0024\0000\0071\0300\0011\0300\0023\0000\0063\0000\0235\0000\0234\0000\0075\0000\0074\0000\0065\0000\0057\0000\0377\0001\0000\0000\0167\0000\0000\0000\0014\0000\0012\0000\0000\0007\0162\0145\0166\0151\0145\0167\0163\0000\0013\0000\0004\0003\0000\0001\0002\0000\0012\0000\0014\0000\0012\0000\0035\0000\0027\0000\0036\0000\0031\0000\0030\0000\0043\0000\0000\0000\0020\0000\0021\0000\0017\0005\0151\0163\0164\0151\0157\0010\0150\0164\0164\0160\0057\0061\0056\0061\0000\0026\0000\0000\0000\0027\0000\0000\0000\0015\0000\0052\0000\0050\0004\0003\0005\0003\0006\0003\0010\0007\0010\0010\0010\0011\0010\0012\0010\0013\0010\0004\0010\0005\0010\0006\0004\0001\0005\0001\0006\0001\0003\0003\0003\0001\0003\0002\0004\0002\0005\0002\0006\0002'


# A dictionary of the tokens the grammar and the model care about.
DICT=$OUT/yaml.dict
{
    for w in apiVersion kind metadata name namespace labels annotations spec items \
        networking.istio.io/v1 networking.istio.io/v1alpha3 security.istio.io/v1 v1 List \
        VirtualService DestinationRule Gateway ServiceEntry Sidecar PeerAuthentication \
        AuthorizationPolicy RequestAuthentication Service Namespace ConfigMap Pod \
        hosts gateways http tcp tls match route destination host subset port number weight \
        retries attempts perTryTimeout timeout headers exact prefix regex uri \
        trafficPolicy subsets loadBalancer simple connectionPool outlierDetection \
        selector matchLabels rules from to when mtls mode STRICT ISTIO_MUTUAL \
        ports targetPort protocol '<<' '---' '...' '&a' '*a' '!!str' '!!int' '!!binary' \
        '? ' ': ' '- ' '[]' '{}' '\\u0000' '1e400' '.nan' '0x' '1h30m' '100ms'; do
        printf '"%s"\n' "$(printf '%s' "$w" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    done
} >"$DICT"

echo "seeds: $(find "$SEEDS" -type f | wc -l) files in $SEEDS"

# ---- run ----
status=0
for t in $targets; do
    corpus=$OUT/corpus/$t
    crashes=$OUT/crashes/$t
    mkdir -p "$corpus" "$crashes"
    before=$(find "$crashes" -type f | wc -l)
    jobs=""
    [ "$FUZZ_JOBS" -gt 1 ] && jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
    echo "== $t: ${SECONDS_PER_TARGET}s, corpus $corpus, crashes in $crashes"
    # UBSan findings are fatal so libFuzzer keeps their reproducer.
    # shellcheck disable=SC2086
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
        "$OUT/$t" -max_len=$MAX_LEN -max_total_time="$SECONDS_PER_TARGET" -timeout=25 \
        -rss_limit_mb=2560 -dict="$DICT" -artifact_prefix="$crashes/" -print_final_stats=1 \
        $jobs ${FUZZ_ARGS:-} "$corpus" "$SEEDS" \
        >"$OUT/$t.log" 2>&1
    rc=$?
    if [ "$FUZZ_JOBS" -gt 1 ]; then
        cat fuzz-*.log >>"$OUT/$t.log" 2>/dev/null
        rm -f fuzz-*.log
    fi
    grep -E '^(#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss_mb|INFO: (seed corpus|-max_len))' "$OUT/$t.log" | tail -5
    after=$(find "$crashes" -type f | wc -l)
    if [ "$after" -gt "$before" ] || [ "$rc" -ne 0 ]; then
        status=1
        echo "!! $t: exit $rc, $((after - before)) new reproducer(s):"
        find "$crashes" -type f -newer "$DICT" | sed 's/^/   /'
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$OUT/$t.log" | head -5 | sed 's/^/   /'
        echo "   reproduce: $OUT/$t <file>    full log: $OUT/$t.log"
    else
        echo "ok $t: no crash in ${SECONDS_PER_TARGET}s, corpus $(find "$corpus" -type f | wc -l) inputs"
    fi
done
exit $status
