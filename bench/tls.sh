#!/usr/bin/env bash
# The cost of mutual TLS between nodes, in one run on this machine: two
# 3-node Vinz Clortho clusters on 127.0.0.1, the same but for the cluster
# port (one plaintext, one with certificates from `vinzclortho certs`), driven
# by the same generator (`vinzclortho bench`) with the same workloads, the two
# clusters alternating within each workload and round. Prints ops/s and p99
# for each and the on/off ratios. See docs/performance.md, "Cost of mutual
# TLS between nodes". Clients speak plain HTTP to both: what differs is the
# traffic between nodes (replica calls, gossip), over TLS or not.
#
#   bench/tls.sh                          # 10 s per workload and cluster, one round
#   bench/tls.sh --rounds 3 --duration 8  # the median of 3 rounds
#   bench/tls.sh --full                   # "on" is the README's production set-up
#
# It builds the release binary (`cargo build --release --locked`) and copies
# it aside, unless --bin names one to use instead; starts every node on
# 127.0.0.1 only with data and certificates under a temporary directory, and
# stops them all on exit, failure or Ctrl-C; every bench run is bounded
# (`timeout`). Results (one JSON report per run, table.md, machine.txt) are
# kept in --out DIR (default: a new /tmp/vinzclortho-tls.* directory).
#
# Options (or the environment variable in brackets):
#   --duration SECS      per workload and cluster [DURATION, 10]
#   --concurrency N      requests in flight [CONCURRENCY, 64]
#   --keys N             distinct keys [KEYS, 10000]
#   --value-size BYTES   [VALUE_SIZE, 100]
#   --rounds N           every workload N times, clusters alternating (the
#                        first in each round changes too); the median is shown [ROUNDS, 1]
#   --full               "on" also serves HTTPS to clients (--http-tls-cert) and
#                        runs with --security, the generator sending --cacert and
#                        the admin token: the whole production set-up against
#                        plaintext, no tokens [FULL=1]
#   --bin PATH           use this vinzclortho binary, no build (say which profile
#                        it is when you quote the figures) [BIN]
#   --out DIR            where results go [OUT]
#   Ports: TLS_PORT (18840: HTTP 18840-18842 plaintext cluster, 18850-18852 TLS
#   cluster; gRPC +1000).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-64}"
KEYS="${KEYS:-10000}"
VALUE_SIZE="${VALUE_SIZE:-100}"
ROUNDS="${ROUNDS:-1}"
FULL="${FULL:-0}"
BIN_GIVEN="${BIN:-}"
OUT="${OUT:-}"
PORT="${TLS_PORT:-18840}"
SEED=42

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --keys) KEYS="$2"; shift 2 ;;
        --value-size) VALUE_SIZE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --full) FULL=1; shift ;;
        --bin) BIN_GIVEN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "tls: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$ROUNDS" "$CONCURRENCY" "$KEYS" "$VALUE_SIZE"; do
    case "$n" in ''|*[!0-9]*|0) echo "tls: --duration, --rounds, --concurrency, --keys and --value-size take whole numbers above 0, not '$n'" >&2; exit 2 ;; esac
done

say() { echo "tls: $*" >&2; }

for tool in jq curl; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool is needed (apt-get install $tool)"; exit 1; }
done

WORK="$(mktemp -d -t vinzclortho-tls-work.XXXXXX)"
[ -n "$OUT" ] || OUT="$(mktemp -d -t vinzclortho-tls.XXXXXX)"
mkdir -p "$OUT" "$WORK/logs"
BIN="$WORK/vinzclortho"
if [ -n "$BIN_GIVEN" ]; then
    cp "$BIN_GIVEN" "$BIN"
    PROFILE="the binary given with --bin ($BIN_GIVEN)"
else
    ./scripts/ensure-deps
    say "building the release binary"
    cargo build --release --locked
    # A private copy: another build in the same target directory cannot swap it mid-run.
    cp "${CARGO_TARGET_DIR:-target}/release/vinzclortho" "$BIN"
    PROFILE="release build"
fi

# --- every process we start is stopped on the way out -------------------------
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for base in "$PORT" "$((PORT + 10))"; do
    for i in 0 1 2; do
        for p in "$((base + i))" "$((base + 1000 + i))"; do
            port_free "$p" || { say "port $p on 127.0.0.1 is in use; pick others (TLS_PORT)"; exit 1; }
        done
    done
done

# Polls `$@` for up to 60 s.
wait_until() {
    local what="$1"; shift
    for _ in $(seq 600); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "timed out waiting for $what (logs: see below)"
    tail -n 20 "$WORK"/logs/* >&2 || true
    return 1
}

# --- the certificates ---------------------------------------------------------
CERTS="$WORK/certs"
"$BIN" certs init --dir "$CERTS" >/dev/null
for i in 0 1 2; do
    "$BIN" certs node --dir "$CERTS" --name "n$i" --host 127.0.0.1 >/dev/null
done

# --- two clusters: off (plaintext cluster port) and on (mutual TLS) -----------
declare -A NODES
TOKEN=""
# curl for a node of `mode`: over HTTPS with the admin token when on is the
# full production set-up.
ccurl() { # mode curl-args...
    local mode="$1"; shift
    if [ "$mode" = on ] && [ "$FULL" = 1 ]; then
        curl --cacert "$CERTS/ca.pem" ${TOKEN:+-H "Authorization: Bearer $TOKEN"} "${@/#http:/https:}"
    else
        curl "$@"
    fi
}
start_cluster() { # mode base
    local mode="$1" base="$2" list=()
    for i in 0 1 2; do
        local http="127.0.0.1:$((base + i))"
        local args=(serve -a "$http" --cluster-address "127.0.0.1:$((base + 1000 + i))" -p 64
            --data-dir "$WORK/$mode/node$i")
        if [ "$mode" = on ]; then
            args+=(--tls-ca "$CERTS/ca.pem" --tls-cert "$CERTS/n$i.pem" --tls-key "$CERTS/n$i.key")
            if [ "$FULL" = 1 ]; then
                args+=(--http-tls-cert "$CERTS/n$i.pem" --http-tls-key "$CERTS/n$i.key" --security)
            fi
        fi
        [ "$i" -gt 0 ] && args+=(-j "127.0.0.1:$((base + 1000))")
        "$BIN" "${args[@]}" >"$WORK/logs/$mode$i.log" 2>&1 &
        PIDS+=($!)
        list+=("$http")
        wait_until "node $i of the $mode cluster" ccurl "$mode" -sf "http://$http/ping"
        if [ "$mode" = on ] && [ "$FULL" = 1 ] && [ "$i" = 0 ]; then
            TOKEN="$(cat "$WORK/on/node0/admin.token")"
        fi
    done
    NODES[$mode]="$(IFS=,; echo "${list[*]}")"
}
# Every node sees 3 members up with a claim, nothing moving, and (on) each
# member's id bound to its certificate's name, which only a TLS join records.
converged() { # mode
    local mode="$1" want_cert="false"
    [ "$mode" = on ] && want_cert="true"
    for http in ${NODES[$mode]//,/ }; do
        ccurl "$mode" -sf "http://$http/admin/status" | jq -e --argjson cert "$want_cert" '
            ([.members[] | select(.status == "up" and .claim > 0 and ((.certificate != null) == $cert))] | length) == 3
            and .ring.moving == false' >/dev/null || return 1
    done
}
start_cluster off "$PORT"
start_cluster on "$((PORT + 10))"
wait_until "the plaintext cluster to converge" converged off
wait_until "the TLS cluster to converge" converged on
# The plaintext cluster's cluster port answers an HTTP/2 request without TLS
# (as a gRPC client would send it); the TLS cluster's turns it away at the
# handshake.
if ! curl -s --max-time 3 --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$((PORT + 1000))/"; then
    say "the plaintext cluster did not answer a plaintext request on its cluster port"; exit 1
fi
if curl -s --max-time 3 --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$((PORT + 1010))/"; then
    say "the TLS cluster answered a plaintext request on its cluster port"; exit 1
fi
if [ "$FULL" = 1 ]; then
    # HTTPS only, and nothing without the token.
    curl -s --max-time 3 -o /dev/null "http://${NODES[on]%%,*}/ping" && { say "the full cluster answered plain HTTP"; exit 1; }
    code="$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca.pem" "https://${NODES[on]%%,*}/store/x")"
    [ "$code" = 401 ] || { say "the full cluster answered $code without a token, not 401"; exit 1; }
    say "off: ${NODES[off]} (plaintext, no tokens); on: ${NODES[on]} (mutual TLS, HTTPS, --security)"
else
    say "off: ${NODES[off]} (plaintext cluster port); on: ${NODES[on]} (mutual TLS)"
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "kernel: $(uname -sr)"
    echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running shares the cores)"
    echo "vinzclortho: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $PROFILE"
    [ "$FULL" = 1 ] && echo "on: mutual TLS between nodes, HTTPS for clients, --security with a bearer token"
    echo "per run: ${DURATION} s, ${CONCURRENCY} in flight, ${KEYS} keys, ${VALUE_SIZE}-byte values, preloaded; ${ROUNDS} round(s), median shown"
} >"$OUT/machine.txt"

# --- the workloads ------------------------------------------------------------
WORKLOADS=("50/50 uniform|read=50,write=50|uniform" "95/5 uniform|read=95,write=5|uniform"
    "50/50 zipf|read=50,write=50|zipf")
bench_run() { # mode name args...
    local mode="$1" name="$2"; shift 2
    if [ "$mode" = on ] && [ "$FULL" = 1 ]; then set -- "$@" --cacert "$CERTS/ca.pem" --token "$TOKEN"; fi
    timeout --kill-after=5 "$((DURATION + 120))" "$BIN" bench --nodes "${NODES[$mode]}" \
        -c "$CONCURRENCY" --keys "$KEYS" --value-size "$VALUE_SIZE" --seed "$SEED" --json --quiet "$@" \
        >"$OUT/$name.json" 2>"$OUT/$name.err" || say "$name: exit $? ($(tail -n 1 "$OUT/$name.err"))"
}
for round in $(seq "$ROUNDS"); do
    # Odd rounds start with off, even ones with on: a drift in the machine's
    # load does not always favour the same side.
    if [ $((round % 2)) = 1 ]; then ORDER=(off on); else ORDER=(on off); fi
    for workload in "${WORKLOADS[@]}"; do
        IFS='|' read -r label mix dist <<<"$workload"
        slug="$(echo "$label" | tr '/ ' '-_')"
        for mode in "${ORDER[@]}"; do
            say "round $round/$ROUNDS: $label, TLS $mode (${DURATION} s)"
            bench_run "$mode" "$mode-$slug-$round" --duration "$DURATION" --mix "$mix" --distribution "$dist" --preload
        done
    done
done

# --- the table ----------------------------------------------------------------
field() { # prefix jq-path: the median over the rounds
    local files=("$OUT/$1"-[0-9]*.json)
    [ -s "${files[0]}" ] || { echo ""; return; }
    jq -s -r "[.[] | $2] | sort | .[(length - 1) / 2 | floor]" "${files[@]}" 2>/dev/null || echo ""
}
# shellcheck disable=SC2059 # the formats are our own
fmt() { [ -n "$2" ] && printf "$1" "$2" || printf "failed"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }' || printf -- "-"; }
{
    echo "| workload | off ops/s | off p99 ms | on ops/s | on p99 ms | ops/s on/off | p99 on/off |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for workload in "${WORKLOADS[@]}"; do
        IFS='|' read -r label _ _ <<<"$workload"
        slug="$(echo "$label" | tr '/ ' '-_')"
        fo="$(field "off-$slug" .overall.ops_per_s)"; fp="$(field "off-$slug" .overall.latency_ms.p99)"
        no="$(field "on-$slug" .overall.ops_per_s)"; np="$(field "on-$slug" .overall.latency_ms.p99)"
        echo "| $label | $(fmt %.0f "$fo") | $(fmt %.1f "$fp") | $(fmt %.0f "$no") | $(fmt %.1f "$np") | $(ratio "$no" "$fo") | $(ratio "$np" "$fp") |"
    done
    echo
    for mode in off on; do
        jq -s -r --arg m "$mode" '
            "  TLS \($m): \(length) runs, \([.[].overall.ops] | add) ops, \([.[].overall.errors] | add) errors"
            + ([.[] | .overall.errors_by_kind | to_entries[]] | if length > 0 then " (\(map("\(.key)=\(.value)") | join(", ")))" else "" end)
        ' "$OUT/$mode"-*.json 2>/dev/null || echo "  TLS $mode: no report"
    done
    for f in "$OUT"/*.err; do
        [ -s "$f" ] && echo "  $(basename "$f" .err): $(tail -n 1 "$f")"
    done
    true
} >"$OUT/table.md"

echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo
cat "$OUT/machine.txt"
echo
cat "$OUT/table.md"
echo
echo "results: $OUT"
