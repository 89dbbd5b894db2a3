#!/usr/bin/env bash
# Bytes a read moves between nodes: starts a 3-node cluster
# (127.0.0.1:18740-18742) with binary BIN, preloads KEYS keys of SIZE bytes,
# runs `vinzclortho bench` (DURATION s, 16 in flight, MIX) and prints the
# replica client's answer bytes of Replica/Get (summed over nodes, from
# vinzclortho_grpc_client_response_bytes_total) per client read, with the
# digest reads and value fetches the run made. Stops the cluster. E.g.:
#   bench/read_bytes.sh /tmp/vc-before 4096 before; bench/read_bytes.sh /tmp/vc-after 4096 after
# KEYS, DURATION and MIX override 1000 keys, 10 s and read=95,write=5.
set -euo pipefail
BIN=$1; SIZE=$2; TAG=${3:-$1}
KEYS=${KEYS:-1000}; DURATION=${DURATION:-10}; MIX=${MIX:-read=95,write=5}
D=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
"$BIN" serve -a 127.0.0.1:18740 --cluster-address 127.0.0.1:19740 -p 64 --data-dir "$D/n0" >/dev/null 2>"$D/n0.log" &
PIDS+=($!)
sleep 1
for i in 1 2; do
    "$BIN" serve -a "127.0.0.1:1874$i" --cluster-address "127.0.0.1:1974$i" -p 64 --data-dir "$D/n$i" \
        -j 127.0.0.1:19740 >/dev/null 2>"$D/n$i.log" &
    PIDS+=($!)
done
for _ in $(seq 1 200); do
    up=$(curl -s 127.0.0.1:18740/admin/status | python3 -c "import json,sys; s=json.load(sys.stdin); print(0 if s['ring']['moving'] else sum(1 for m in s['members'] if m['status']=='up' and m['claim']>0))" 2>/dev/null || echo 0)
    [ "$up" = "3" ] && break
    sleep 0.2
done
NODES=127.0.0.1:18740,127.0.0.1:18741,127.0.0.1:18742
"$BIN" bench --nodes $NODES --ops "$KEYS" -c 16 --mix write=1 --keys "$KEYS" --value-size "$SIZE" --preload -q >/dev/null
# Sums a series over the three nodes' /metrics.
scrape() {
    for p in 18740 18741 18742; do curl -s "127.0.0.1:$p/metrics"; done | python3 -c '
import sys
want = {"bytes": "vinzclortho_grpc_client_response_bytes_total{method=\"Replica/Get\"}",
        "digests": "vinzclortho_read_digests_total",
        "fetches": "vinzclortho_read_value_fetches_total{outcome=\"ok\"}"}
sums = dict.fromkeys(list(want) + ["reads"], 0.0)
for line in sys.stdin:
    name, _, value = line.rpartition(" ")
    for k, series in want.items():
        if name == series:
            sums[k] += float(value)
    if name.startswith("vinzclortho_requests_total{") and "op=\"get\"" in name and "api=\"store\"" in name:
        sums["reads"] += float(value)
print(" ".join(str(int(sums[k])) for k in ["bytes", "reads", "digests", "fetches"]))'
}
read -r b0 r0 d0 f0 < <(scrape)
"$BIN" bench --nodes $NODES --duration "$DURATION" -c 16 --mix "$MIX" --keys "$KEYS" --value-size "$SIZE" \
    --json -q >"$D/out.json"
read -r b1 r1 d1 f1 < <(scrape)
python3 -c "
b, r, d, f = $b1 - $b0, $r1 - $r0, $d1 - $d0, $f1 - $f0
o = __import__('json').load(open('$D/out.json'))['overall']
print('$TAG', 'value_size', $SIZE, 'reads', int(r), 'get_answer_bytes_per_read', round(b / max(r, 1)),
      'digests', int(d), 'fetches', int(f), 'ops/s', round(o['ops_per_s']), 'errors', o['errors'])"
