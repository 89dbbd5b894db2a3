#!/usr/bin/env bash
# Vinz Clortho next to a 3-member etcd cluster and a 3-node Garage cluster
# (the Rust Dynamo-style store, through its K2V API), and one redis-server as
# a reference line, driven by the same generator (`vinzclortho bench`) with
# the same workloads, in one run on this machine, so the numbers compare as
# ratios. Ours runs twice: with the default durability (writes reach the OS,
# not the disk) and with --sync-writes (every acknowledged write fsynced, as
# etcd does). See docs/performance.md.
#
#   bench/compare.sh                     # 10 s per workload and system
#   bench/compare.sh --duration 5 --no-redis --no-garage
#
# After the workloads, the latency step: every system at one open-loop rate
# (half the slowest system's 50/50 uniform throughput, `bench --rate`), and
# ours at half its own, drawn into latency.svg by bench/plot_latency.py.
#
# It builds the release binary, installs etcd-server, redis-server, jq and
# curl with apt-get when missing, builds Garage 2.5.0 with `cargo install`
# into ~/.cache/vinzclortho/garage unless it is there (the first time takes
# most of an hour on 2 cores), starts every server on 127.0.0.1 only with
# data under a temporary directory, and stops them all on exit, failure or
# Ctrl-C. Results (one JSON report per run, the table, the machine) are kept
# in --out DIR (default: a new /tmp/vinzclortho-compare.* directory).
#
# Options (or the environment variable in brackets):
#   --duration SECS      per workload and system [DURATION, 10]
#   --concurrency N      requests in flight [CONCURRENCY, 64]
#   --keys N             distinct keys [KEYS, 10000]
#   --value-size BYTES   [VALUE_SIZE, 100]
#   --rounds N           run every workload N times, systems alternating, and
#                        report the median (a shared machine is noisy) [ROUNDS, 1]
#   --no-redis           skip the redis reference line [REDIS=0]
#   --no-garage          skip Garage (and its build) [GARAGE=0]
#   --vinz-sync-writes   ours with --sync-writes only [VINZ_MODES=sync]
#   --no-sync-writes     ours with the default durability only [VINZ_MODES=default]
#   --no-latency         skip the latency step and its plot [LATENCY=0]
#   --out DIR            where results go [OUT]
#   Ports: VINZ_PORT (18780: HTTP 18780-18782, --sync-writes 18783-18785, gRPC +1000), ETCD_PORT (12379: client
#   12379/12389/12399, peer +1), REDIS_PORT (16379), GARAGE_PORT (13900: node i at +10i: S3 +0, RPC +1,
#   admin +3, K2V +4).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-64}"
KEYS="${KEYS:-10000}"
VALUE_SIZE="${VALUE_SIZE:-100}"
REDIS="${REDIS:-1}"
GARAGE="${GARAGE:-1}"
ROUNDS="${ROUNDS:-1}"
VINZ_MODES="${VINZ_MODES:-default sync}"
LATENCY="${LATENCY:-1}"
OUT="${OUT:-}"
VINZ_PORT="${VINZ_PORT:-18780}"
ETCD_PORT="${ETCD_PORT:-12379}"
REDIS_PORT="${REDIS_PORT:-16379}"
GARAGE_PORT="${GARAGE_PORT:-13900}"
SEED=42
# The Garage we compare with: pinned, built from crates.io by cargo install
# (default features: lmdb, sqlite, k2v), kept between runs.
GARAGE_VERSION=2.5.0
GARAGE_ROOT="${HOME}/.cache/vinzclortho/garage"
GARAGE_BIN="$GARAGE_ROOT/bin/garage"

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --keys) KEYS="$2"; shift 2 ;;
        --value-size) VALUE_SIZE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --no-redis) REDIS=0; shift ;;
        --no-garage) GARAGE=0; shift ;;
        --vinz-sync-writes) VINZ_MODES=sync; shift ;;
        --no-sync-writes) VINZ_MODES=default; shift ;;
        --no-latency) LATENCY=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$ROUNDS" "$CONCURRENCY" "$KEYS"; do
    case "$n" in ''|*[!0-9]*|0) echo "compare: --duration, --rounds, --concurrency and --keys take whole numbers above 0, not '$n'" >&2; exit 2 ;; esac
done

say() { echo "compare: $*" >&2; }

# --- what it needs ------------------------------------------------------------
./scripts/ensure-deps
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "$REDIS" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then missing+=(redis-server); fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # policy-rc.d or not, the packages' own services are not what we measure.
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "building the release binary"
cargo build --release --locked
if [ "$GARAGE" = 1 ] && [ ! -x "$GARAGE_BIN" ]; then
    say "building Garage $GARAGE_VERSION with cargo install (once; into $GARAGE_ROOT)"
    cargo install --locked garage --version "$GARAGE_VERSION" --root "$GARAGE_ROOT" \
        --target-dir "${HOME}/.cache/vinzclortho/garage-build"
fi
WORK="$(mktemp -d -t vinzclortho-compare-work.XXXXXX)"
[ -n "$OUT" ] || OUT="$(mktemp -d -t vinzclortho-compare.XXXXXX)"
mkdir -p "$OUT" "$WORK/logs"
# A private copy: another build in the same target directory cannot swap it mid-run.
BIN="$WORK/vinzclortho"
cp "${CARGO_TARGET_DIR:-target}/release/vinzclortho" "$BIN"

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
garage_ports=()
if [ "$GARAGE" = 1 ]; then
    for i in 0 1 2; do for d in 0 1 3 4; do garage_ports+=("$((GARAGE_PORT + 10 * i + d))"); done; done
fi
for p in $(seq "$VINZ_PORT" "$((VINZ_PORT + 5))") $(seq "$((VINZ_PORT + 1000))" "$((VINZ_PORT + 1005))") "$ETCD_PORT" "$((ETCD_PORT + 1))" "$((ETCD_PORT + 10))" "$((ETCD_PORT + 11))" \
    "$((ETCD_PORT + 20))" "$((ETCD_PORT + 21))" "$REDIS_PORT" "${garage_ports[@]}"; do
    port_free "$p" || { say "port $p on 127.0.0.1 is in use; pick others (VINZ_PORT, ETCD_PORT, REDIS_PORT, GARAGE_PORT)"; exit 1; }
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

# --- Vinz Clortho: 3 nodes per durability mode --------------------------------
# mode default on VINZ_PORT..+2, mode sync (--sync-writes) on VINZ_PORT+3..+5.
declare -A VINZ_NODES=()
start_vinz() { # mode base-port
    local mode="$1" base="$2" nodes=() flags=()
    [ "$mode" = sync ] && flags=(--sync-writes)
    for i in 0 1 2; do
        local http="127.0.0.1:$((base + i))"
        local args=(serve -a "$http" --cluster-address "127.0.0.1:$((base + 1000 + i))" -p 64
            --data-dir "$WORK/vinz-$mode/node$i" "${flags[@]}")
        [ "$i" -gt 0 ] && args+=(-j "127.0.0.1:$((base + 1000))")
        "$BIN" "${args[@]}" >"$WORK/logs/vinz-$mode$i.log" 2>&1 &
        PIDS+=($!)
        nodes+=("$http")
        wait_until "vinz ($mode) node $i" curl -sf "http://$http/ping"
    done
    VINZ_NODES[$mode]="$(IFS=,; echo "${nodes[*]}")"
}
vinz_converged() { # comma-separated nodes
    local http
    for http in ${1//,/ }; do
        curl -sf "http://$http/admin/status" | jq -e '([.members[] | select(.status == "up" and .claim > 0)] | length) == 3
            and .ring.moving == false' >/dev/null || return 1
    done
}
VINZ_SYSTEMS=()
for mode in $VINZ_MODES; do
    case "$mode" in
        default) start_vinz default "$VINZ_PORT"; VINZ_SYSTEMS+=(vinz) ;;
        sync) start_vinz sync "$((VINZ_PORT + 3))"; VINZ_SYSTEMS+=(vinzsync) ;;
        *) say "VINZ_MODES takes default and sync, not '$mode'"; exit 2 ;;
    esac
    wait_until "the vinz ($mode) cluster to converge" vinz_converged "${VINZ_NODES[$mode]}"
    say "vinz ($mode): 3 nodes at ${VINZ_NODES[$mode]}"
done

# --- etcd: 3 members, default fsync -------------------------------------------
ETCD_NODES=()
initial=""
for i in 0 1 2; do initial+="${initial:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 10 * i + 1))"; done
for i in 0 1 2; do
    client="127.0.0.1:$((ETCD_PORT + 10 * i))"
    peer="http://127.0.0.1:$((ETCD_PORT + 10 * i + 1))"
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i" \
        --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token vinzclortho-compare \
        --logger zap --log-level warn >"$WORK/logs/etcd$i.log" 2>&1 &
    PIDS+=($!)
    ETCD_NODES+=("$client")
done
for client in "${ETCD_NODES[@]}"; do
    wait_until "etcd at $client" sh -c "curl -sf http://$client/health | grep -q '\"health\":\"true\"'"
done
say "etcd: 3 members at ${ETCD_NODES[*]} ($(etcd --version | head -1))"

# --- Garage: 3 nodes, replication factor 3, K2V API ---------------------------
# LMDB for metadata (its docs' recommendation) with its default durability:
# metadata_fsync and data_fsync off, so a write is in the OS page cache on a
# quorum of 2 when acknowledged, like ours by default. Logging at warn: ours
# does not log each request either.
GARAGE_NODES=()
if [ "$GARAGE" = 1 ]; then
    garage_secret="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    garage_admin_token="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    for i in 0 1 2; do
        base=$((GARAGE_PORT + 10 * i))
        mkdir -p "$WORK/garage/n$i"
        cat >"$WORK/garage/n$i.toml" <<EOF
metadata_dir = "$WORK/garage/n$i/meta"
data_dir = "$WORK/garage/n$i/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$((base + 1))"
rpc_public_addr = "127.0.0.1:$((base + 1))"
rpc_secret = "$garage_secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$base"
root_domain = ".s3.garage.localhost"

[k2v_api]
api_bind_addr = "127.0.0.1:$((base + 4))"

[admin]
api_bind_addr = "127.0.0.1:$((base + 3))"
admin_token = "$garage_admin_token"
EOF
        RUST_LOG=warn "$GARAGE_BIN" -c "$WORK/garage/n$i.toml" server >"$WORK/logs/garage$i.log" 2>&1 &
        PIDS+=($!)
        GARAGE_NODES+=("127.0.0.1:$((base + 4))")
    done
    garage0() { "$GARAGE_BIN" -c "$WORK/garage/n0.toml" "$@"; }
    garage_ids=()
    for i in 0 1 2; do
        wait_until "garage node $i" "$GARAGE_BIN" -c "$WORK/garage/n$i.toml" node id -q
        garage_ids+=("$("$GARAGE_BIN" -c "$WORK/garage/n$i.toml" node id -q 2>/dev/null | tail -n 1)")
    done
    for i in 1 2; do
        wait_until "garage node 0 to connect to node $i" garage0 node connect "${garage_ids[$i]}"
    done
    for id in "${garage_ids[@]}"; do
        garage0 layout assign -z dc1 -c 1G "${id%@*}" >/dev/null
    done
    garage0 layout apply --version 1 >/dev/null
    garage_bucket() { garage0 bucket info bench || garage0 bucket create bench; }
    wait_until "the garage layout to take (bucket creation)" garage_bucket
    # A key we name ourselves (GK and 12 bytes in hex, a 32-byte secret in
    # hex): nothing to scrape from the CLI's output.
    GARAGE_KEY_ID="GK$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
    GARAGE_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    garage0 key import --yes -n bench "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null
    garage0 bucket allow --read --write --owner bench --key "$GARAGE_KEY_ID" >/dev/null
    # The key and its permission reach every node asynchronously: wait
    # until each answers a signed ReadItem.
    for node in "${GARAGE_NODES[@]}"; do
        wait_until "garage K2V at $node" env AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" \
            "$BIN" bench --target garage --nodes "$node" --bucket bench --ops 1 -c 1 --keys 1 --mix read=1,write=0 --quiet
    done
    say "garage: 3 nodes, K2V at ${GARAGE_NODES[*]} ($("$GARAGE_BIN" --version 2>/dev/null | head -1))"
fi

# --- redis: one node, in memory (the reference line) --------------------------
if [ "$REDIS" = 1 ]; then
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --daemonize no \
        --dir "$WORK" >"$WORK/logs/redis.log" 2>&1 &
    PIDS+=($!)
    wait_until "redis" sh -c "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG"
    say "redis: 1 node at 127.0.0.1:$REDIS_PORT ($(redis-server --version | awk '{print $3}'))"
fi

# --- the workloads ------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "kernel: $(uname -sr)"
    echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running shares the cores)"
    echo "vinzclortho: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (ours: default durability; ours sync: --sync-writes; runs: ${VINZ_SYSTEMS[*]})"
    echo "etcd: $(etcd --version | head -1 | awk '{print $3}')"
    [ "$GARAGE" = 1 ] && echo "garage: $("$GARAGE_BIN" --version 2>/dev/null | head -1) (K2V API, LMDB, replication factor 3, default fsync settings)"
    [ "$REDIS" = 1 ] && echo "redis: $(redis-server --version | awk '{print $3}')"
    echo "per run: ${DURATION} s, ${CONCURRENCY} in flight, ${KEYS} keys, ${VALUE_SIZE}-byte values; ${ROUNDS} round(s), median shown"
} >"$OUT/machine.txt"

PEERS=(etcd)
[ "$GARAGE" = 1 ] && PEERS+=(garage)
SYSTEMS=("${VINZ_SYSTEMS[@]}" "${PEERS[@]}")
[ "$REDIS" = 1 ] && SYSTEMS+=(redis)
nodes_of() {
    case "$1" in
        vinz) echo "${VINZ_NODES[default]}" ;;
        vinzsync) echo "${VINZ_NODES[sync]}" ;;
        etcd) (IFS=,; echo "${ETCD_NODES[*]}") ;;
        garage) (IFS=,; echo "${GARAGE_NODES[*]}") ;;
        redis) echo "127.0.0.1:$REDIS_PORT" ;;
    esac
}
name_of() {
    case "$1" in
        vinz) echo "ours" ;;
        vinzsync) echo "ours sync" ;;
        *) echo "$1" ;;
    esac
}
WORKLOADS=("50/50 uniform|read=50,write=50|uniform" "50/50 zipf|read=50,write=50|zipf"
    "95/5 uniform|read=95,write=5|uniform" "95/5 zipf|read=95,write=5|zipf")

bench_run() { # system name args...
    local system="$1" name="$2"; shift 2
    local creds=()
    # Garage's key goes in the environment, not on a command line others can read.
    if [ "$system" = garage ]; then
        creds=(AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET")
        set -- --bucket bench "$@"
    fi
    # Bounded even if something hangs: the run, its preload, and a margin.
    env "${creds[@]}" timeout --kill-after=5 "$((DURATION + 120))" "$BIN" bench --target "${system%sync}" --nodes "$(nodes_of "$system")" \
        -c "$CONCURRENCY" --keys "$KEYS" --value-size "$VALUE_SIZE" --seed "$SEED" --json --quiet "$@" \
        >"$OUT/$name.json" 2>"$OUT/$name.err" || say "$name: exit $? ($(tail -n 1 "$OUT/$name.err"))"
}
for round in $(seq "$ROUNDS"); do
    for workload in "${WORKLOADS[@]}"; do
        IFS='|' read -r label mix dist <<<"$workload"
        slug="$(echo "$label" | tr '/ ' '-_')"
        for system in "${SYSTEMS[@]}"; do
            say "round $round/$ROUNDS: $label on $system (${DURATION} s)"
            # --preload: every key exists (so reads find values) and, on
            # ours, every key's context is known, so no write is blind (a
            # blind write adds a sibling next to the stored value).
            bench_run "$system" "$system-$slug-$round" --duration "$DURATION" --mix "$mix" --distribution "$dist" --preload
        done
    done
done
# A fast wrong answer never counts: a checked run per system (every read
# compared with the last acknowledged write of its single writer).
for system in "${SYSTEMS[@]}"; do
    say "checked 50/50 uniform on $system (${DURATION} s)"
    bench_run "$system" "$system-check-1" --duration "$DURATION" --mix read=50,write=50 --check
done

# --- latency at the same load ------------------------------------------------
# The median of a field over the rounds of one system and workload.
field() {
    local files=("$OUT/$1"-[0-9]*.json)
    [ -s "${files[0]}" ] || { echo ""; return; }
    jq -s -r "[.[] | $2] | sort | .[(length - 1) / 2 | floor]" "${files[@]}" 2>/dev/null || echo ""
}
half() { [ -n "$1" ] && awk -v s="$1" 'BEGIN { printf "%d", s / 2 }'; }
SAME_RATE=""
if [ "$LATENCY" = 1 ]; then
    # Every system (redis too) at half the slowest one's 50/50 uniform
    # throughput, so each can serve it; then ours at half its own.
    slowest=""
    for system in "${VINZ_SYSTEMS[@]}" "${PEERS[@]}"; do
        o="$(field "$system-50-50_uniform" .overall.ops_per_s)"
        [ -n "$o" ] && slowest="$(awk -v a="$slowest" -v b="$o" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }')"
    done
    SAME_RATE="$(half "$slowest")"
    if [ -n "$SAME_RATE" ] && [ "$SAME_RATE" -gt 0 ]; then
        for system in "${SYSTEMS[@]}"; do
            say "latency: 50/50 uniform on $system at $SAME_RATE requests/s (${DURATION} s)"
            bench_run "$system" "$system-same-1" --duration "$DURATION" --mix read=50,write=50 --preload --rate "$SAME_RATE"
        done
        for system in "${VINZ_SYSTEMS[@]}"; do
            own="$(half "$(field "$system-50-50_uniform" .overall.ops_per_s)")"
            [ -n "$own" ] && [ "$own" -gt 0 ] || continue
            say "latency: 50/50 uniform on $system at half its own throughput, $own requests/s (${DURATION} s)"
            bench_run "$system" "$system-half-1" --duration "$DURATION" --mix read=50,write=50 --preload --rate "$own"
        done
        # The plot, in a virtual environment with matplotlib (PyPI); a
        # missing plot does not fail the comparison.
        venv="${HOME}/.cache/vinzclortho/plot-venv"
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
            say "creating $venv for the plot (matplotlib from PyPI)"
            { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib==3.9.2; } >&2 || say "no plot: cannot install matplotlib"
        fi
        plots=()
        for system in "${SYSTEMS[@]}"; do
            [ -s "$OUT/$system-same-1.json" ] && plots+=("$(name_of "$system")=$OUT/$system-same-1.json")
        done
        if [ ${#plots[@]} -gt 0 ] && [ -x "$venv/bin/python" ]; then
            "$venv/bin/python" bench/plot_latency.py --out "$OUT/latency.svg" \
                --title "50/50 uniform, ${VALUE_SIZE}-byte values, every system at $SAME_RATE requests/s (open loop)" \
                "${plots[@]}" || say "no plot: plot_latency.py failed"
        fi
    fi
fi

# --- the tables ---------------------------------------------------------------
# shellcheck disable=SC2059 # the formats are our own
fmt() { [ -n "$2" ] && printf "$1" "$2" || printf "failed"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }' || printf -- "-"; }
{
    header="| workload |"; rule="|---|"
    for system in "${SYSTEMS[@]}"; do
        header+=" $(name_of "$system") ops/s | $(name_of "$system") p99 ms |"; rule+="---:|---:|"
    done
    for peer in "${PEERS[@]}"; do
        for system in "${VINZ_SYSTEMS[@]}"; do
            header+=" ops/s $(name_of "$system")/$peer | p99 $(name_of "$system")/$peer |"; rule+="---:|---:|"
        done
    done
    echo "$header"; echo "$rule"
    for workload in "${WORKLOADS[@]}" "checked 50/50 uniform|check|"; do
        IFS='|' read -r label _ _ <<<"$workload"
        slug="$(echo "$label" | tr '/ ' '-_')"
        [ "$label" = "checked 50/50 uniform" ] && slug=check
        line="| $label |"
        for system in "${SYSTEMS[@]}"; do
            line+=" $(fmt %.0f "$(field "$system-$slug" .overall.ops_per_s)") | $(fmt %.1f "$(field "$system-$slug" .overall.latency_ms.p99)") |"
        done
        for peer in "${PEERS[@]}"; do
            po="$(field "$peer-$slug" .overall.ops_per_s)"; pp="$(field "$peer-$slug" .overall.latency_ms.p99)"
            for system in "${VINZ_SYSTEMS[@]}"; do
                line+=" $(ratio "$(field "$system-$slug" .overall.ops_per_s)" "$po") | $(ratio "$(field "$system-$slug" .overall.latency_ms.p99)" "$pp") |"
            done
        done
        echo "$line"
    done
    if [ -n "$SAME_RATE" ]; then
        echo
        echo "Latency under an open-loop load of 50/50 uniform (\`bench --rate\`; from when each request was due):"
        echo
        echo "| system | load | ops/s | p50 ms | p99 ms | p99.9 ms | errors |"
        echo "|---|---|---:|---:|---:|---:|---:|"
        for run in "${SYSTEMS[@]/%/-same}" "${VINZ_SYSTEMS[@]/%/-half}"; do
            f="$OUT/$run-1.json"
            [ -s "$f" ] || continue
            system="${run%-*}"
            case "$run" in *-same) load="$SAME_RATE/s, the same for all" ;; *) load="$(jq -r '.rate | floor' "$f")/s, half its own" ;; esac
            jq -r --arg s "$(name_of "$system")" --arg load "$load" \
                '"| \($s) | \($load) | \(.overall.ops_per_s | floor) | \(.overall.latency_ms.p50) | \(.overall.latency_ms.p99) | \(.overall.latency_ms.p99_9) | \(.overall.errors) |"' "$f"
        done
        [ -s "$OUT/latency.svg" ] && echo && echo "Plot: $OUT/latency.svg"
    fi
    echo
    echo "Per system, over every run (the JSON reports are in $OUT):"
    for system in "${SYSTEMS[@]}"; do
        jq -s -r --arg s "$(name_of "$system")" '
            ([.[] | select(.check | not)]) as $runs | ([.[] | select(.check)] | first) as $c
            | "  \($s): \($runs | length) runs, \([$runs[].overall.ops] | add) ops, \([$runs[].overall.errors] | add) errors"
              + ", \([$runs[].reads_siblings] | add) reads with siblings"
              + (if $c then "; checked run: \($c.reads_checked) reads checked, \($c.mismatches) mismatches, \($c.overall.errors) errors"
                 else "; checked run: no report" end)
              + ([.[] | .overall.errors_by_kind | to_entries[]] | if length > 0 then "; errors: \(map("\(.key)=\(.value)") | join(", "))" else "" end)
        ' "$OUT/$system"-*.json 2>/dev/null || echo "  $system: no report"
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
