#!/bin/sh
# Runs every test binary and shell test; prints "N passed, N failed" last.
# cmocka binaries report "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)";
# shell tests (test/*/test_*.sh) print "ok NAME" / "not ok NAME" lines.
BUILD=${BUILD:-build}
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export MESH_BUILD="$BUILD"
for t in $(find "$BUILD/test" -type f -perm -u+x -name 'test_*' | sort); do
    echo "== $t"
    t0=$(date +%s)
    "$t" >"$log" 2>&1
    rc=$?
    echo "   ($(( $(date +%s) - t0 )) s)" >>"$log"
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $t exited with status $rc"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
for t in $(find test e2e -name 'test_*.sh' -not -path '*/node_modules/*' 2>/dev/null | sort); do
    echo "== $t"
    interp=$(sed -n '1s/^#! *//p' "$t")
    t0=$(date +%s)
    ${interp:-sh} "$t" >"$log" 2>&1
    rc=$?
    echo "   ($(( $(date +%s) - t0 )) s)" >>"$log"
    cat "$log"
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^not ok ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $t exited with status $rc"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
