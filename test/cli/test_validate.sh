#!/bin/sh
# meshctl validate as a user runs it: exit status, one line per rejected document.
BUILD=${MESH_BUILD:-build}
MESHCTL="$BUILD/meshctl"
SHARED=${MESH_SHARED:-../shared}
T="$SHARED/testdata/tutorials"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() { # name, condition-exit-status
    if [ "$2" -eq 0 ]; then echo "ok $1"; else echo "not ok $1"; fi
}

"$MESHCTL" validate -f "$T/istio-notes-01.yaml" >"$tmp/out" 2>"$tmp/err"
check "valid file exits 0" $?
[ ! -s "$tmp/out" ]
check "valid file prints no rejection" $?

"$MESHCTL" validate -f "$T/istio-notes-20.yaml" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ]
check "invalid file exits 1" $?
[ "$(wc -l <"$tmp/out")" -eq 1 ]
check "one line for the rejected document" $?
grep -q 'istio-notes-20.yaml:[0-9]*: AuthorizationPolicy bookinfo/authdenypolicy: spec.rules\[0\].from\[0\].source: unknown field "namespace" (did you mean "namespaces"?)' "$tmp/out"
check "the line names file, line, object, field path and hint" $?

"$MESHCTL" validate -f "$T/modern-devops-ch15-10-mirror-as-printed.yaml" >"$tmp/out" 2>"$tmp/err"
[ "$(wc -l <"$tmp/out")" -eq 1 ] && grep -q 'mirror_percent.*; .*weight\|weight.*; .*mirror_percent' "$tmp/out"
check "every reason of a document on its one line" $?

"$MESHCTL" validate -f "$T" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ]
check "directory with rejections exits 1" $?
grep -q 'rejected' "$tmp/err"
check "summary on stderr" $?
for f in istio-notes-06 istio-notes-20 modern-devops-ch15-02 modern-devops-ch15-03 \
    modern-devops-ch15-08 modern-devops-ch15-10 devsecops-prod-01; do
    grep -q "$f" "$tmp/out" || { echo "missing rejection for $f"; false; }
done
check "every tutorial listed as invalid is rejected" $?
if grep -E 'istio-notes-(0[1-57-9]|1[0-9]|21)|ch15-(01|04|05|06|07|09|11|12)' "$tmp/out"; then false; else true; fi
check "no tutorial listed as valid is rejected" $?

cat "$T/istio-notes-01.yaml" | "$MESHCTL" validate -f - >"$tmp/out" 2>"$tmp/err"
check "stdin" $?

printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n' >"$tmp/cm.json.yaml"
printf '{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"}, "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "port": {"number": 99999}}}]}]}}' >"$tmp/vs.json"
"$MESHCTL" validate -f "$tmp/vs.json" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'vs.json:1: VirtualService default/x: spec.http\[0\].route\[0\].destination.port.number' "$tmp/out"
check "JSON input through the same path" $?

"$MESHCTL" validate >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ]
check "no input is a usage error" $?
"$MESHCTL" validate -f "$tmp/does-not-exist.yaml" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'does-not-exist' "$tmp/err"
check "missing file reported" $?
