#!/usr/bin/env bash
# A/B of two builds on the same machine in one run: starts a 3-node cluster
# (127.0.0.1:18700-18702) with binary BIN, runs `vinzclortho bench` (8 s, 64 in
# flight, 10k keys, 100-byte values, preloaded) with MIX, prints ops/s and p99,
# stops the cluster. Alternate the two binaries, e.g.:
#   for i in 1 2; do bench/ab.sh /tmp/vc-before read=50,write=50 before; bench/ab.sh /tmp/vc-after read=50,write=50 after; done
# KEYS and DURATION (seconds) override the key count and the measured time;
# RSS=1 also prints each node's resident memory after the run, DISK=1 each
# node's data directory in MiB, STATS=1 from each node's RocksDB LOG the last
# "Cumulative writes" and "Cumulative WAL" lines (writes per WAL sync: group
# commit) and the GB its compactions wrote (RocksDB writes these every
# stats_dump_period_sec, so give e.g.
# VINZCLORTHO_ROCKSDB_OPTIONS=stats_dump_period_sec=5). NEW_KEYS=1 preloads
# with --new-keys (the cluster is new; a binary from before the flag refuses
# it). The nodes inherit the environment: VINZCLORTHO_ROCKSDB_OPTIONS or
# VINZCLORTHO_SYNC_WRITES set for this script apply to them, e.g.
#   VINZCLORTHO_ROCKSDB_OPTIONS=compaction_style=kCompactionStyleUniversal bench/ab.sh BIN write=100 universal
set -euo pipefail
BIN=$1; MIX=$2; TAG=${3:-$1}
KEYS=${KEYS:-10000}; DURATION=${DURATION:-8}
D=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
"$BIN" serve -a 127.0.0.1:18700 --cluster-address 127.0.0.1:19700 -p 64 --data-dir "$D/n0" >/dev/null 2>"$D/n0.log" &
PIDS+=($!)
sleep 1
for i in 1 2; do
    "$BIN" serve -a "127.0.0.1:1870$i" --cluster-address "127.0.0.1:1970$i" -p 64 --data-dir "$D/n$i" \
        -j 127.0.0.1:19700 >/dev/null 2>"$D/n$i.log" &
    PIDS+=($!)
done
for _ in $(seq 1 100); do
    up=$(curl -s 127.0.0.1:18700/admin/status | python3 -c "import json,sys; s=json.load(sys.stdin); print(0 if s['ring']['moving'] else sum(1 for m in s['members'] if m['status']=='up' and m['claim']>0))" 2>/dev/null || echo 0)
    [ "$up" = "3" ] && break
    sleep 0.2
done
"$BIN" bench --nodes 127.0.0.1:18700,127.0.0.1:18701,127.0.0.1:18702 --duration "$DURATION" -c 64 --mix "$MIX" \
    --keys "$KEYS" --value-size 100 --preload ${NEW_KEYS:+--new-keys} --json -q >"$D/out.json"
python3 -c "import json; r=json.load(open('$D/out.json')); o=r['overall']; p=r['preload']; print('$TAG', '$MIX', round(o['ops_per_s']), 'ops/s', 'p99_ms', o['latency_ms']['p99'], 'errors', o['errors'], 'preload_keys_per_s', round(p['keys'] / p['elapsed_s']))"
if [ "${RSS:-0}" = 1 ]; then
    echo "$TAG rss_mib $(for p in "${PIDS[@]}"; do echo $(( $(awk '/VmRSS/ {print $2}' /proc/"$p"/status) / 1024 )); done | tr '\n' ' ')"
fi
if [ "${DISK:-0}" = 1 ]; then
    echo "$TAG disk_mib $(for i in 0 1 2; do du -sm "$D/n$i" | cut -f1; done | tr '\n' ' ')"
fi
if [ "${STATS:-0}" = 1 ]; then
    for i in 0 1 2; do
        echo "$TAG n$i $(grep 'Cumulative writes' "$D/n$i/LOG" | tail -1)"
        echo "$TAG n$i $(grep 'Cumulative WAL' "$D/n$i/LOG" | tail -1)"
        echo "$TAG n$i compaction_gb_written $(grep -o 'Cumulative compaction: [0-9.]* GB write' "$D/n$i/LOG" |
            awk '{print $3}' | sort -g | tail -1)"
    done
fi
