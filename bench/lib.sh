# Shell helpers the benchmark scripts share; sourced, not run.
#
#   bench_tmp NAME   makes TMP (/tmp/NAME.XXXXXX) and sets the traps that stop
#                    every process in PIDS and remove TMP on exit
#   wait_http HOST:PORT [PATH]   waits (5 s at most) for a 200
#   rss_kb PID / cpu_ticks PID   resident KB / CPU ticks of a process and its children
#   mb KB            KB -> "12.3" MB
#   to_ms 1.2ms      wrk's latency ("850.00us", "1.23ms", "1.02s") -> milliseconds

PIDS=""
bench_cleanup() {
    for p in $PIDS; do
        kill "$p" 2>/dev/null
    done
    sleep 0.3
    for p in $PIDS; do
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
bench_tmp() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX") || exit 1
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM HUP
}

wait_http() {
    i=0
    while [ $i -lt 50 ]; do
        if curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$1/${2:-}" 2>/dev/null | grep -q '^200$'; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# A process and its children (nginx, h2o may fork helpers).
tree() {
    echo "$1"
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        tree "$c"
    done
}
rss_kb() {
    s=0
    for p in $(tree "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status 2>/dev/null)
        s=$((s + ${v:-0}))
    done
    echo $s
}
cpu_ticks() {
    s=0
    for p in $(tree "$1"); do
        v=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }')
        s=$((s + ${v:-0}))
    done
    echo $s
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

to_ms() {
    echo "$1" | awk '{
        v = $1 + 0
        if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v = v; else if ($1 ~ /s$/) v *= 1000
        printf "%.3f", v }'
}

# need TOOL... / need_built FILE...: exit 1 naming the first one missing.
need() {
    for t; do
        command -v "$t" >/dev/null 2>&1 || { echo "!! $t is missing (make deps-bench)"; exit 1; }
    done
}
need_built() {
    for b; do
        [ -x "$b" ] || { echo "!! $b is missing (make $b)"; exit 1; }
    done
}

# pin WHAT_ON_1 WHAT_ON_0: PROXY_CPU ("taskset -c 1") for what is measured and
# LOAD_CPU ("taskset -c 0") for the load, empty on a one-CPU machine.
pin() {
    if [ "$(nproc)" -ge 2 ]; then
        PROXY_CPU="taskset -c 1"
        LOAD_CPU="taskset -c 0"
        echo "placement: $1 on CPU 1; $2 on CPU 0"
    else
        PROXY_CPU=""
        LOAD_CPU=""
        echo "placement: one CPU only: $1 and $2 share it"
    fi
}

# The machine line every benchmark prints.
machine_line() {
    echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1), $(uname -sr), $(date -u '+%Y-%m-%d %H:%M UTC')"
}
