#!/usr/bin/env python3
"""How Vinz Clortho's cost grows, measured on this machine in one run.

    bench/scale.py                          # all three parts, defaults below
    bench/scale.py --parts cpu --sizes 3,5,8 --duration 10
    bench/scale.py --parts memory,transfer --memory-keys 1000000
    bench/scale.py --parts transfer --memory-keys 100000 --value-size 4096

Parts (see docs/performance.md, "How cost grows"):

  cpu       For clusters of each size in --sizes: start the nodes (release
            binary, RocksDB, 64 partitions, N=3 R=2 W=2), preload --keys keys,
            then run `vinzclortho bench` (50/50, uniform, 100-byte values,
            --concurrency in flight, requests spread over every node, or
            each sent to a primary of its key with --route preflist) and read
            every node's CPU time (utime + stime from /proc/PID/stat) before
            and after: CPU milliseconds per 1,000 operations, for the whole
            cluster. Also the cluster's idle CPU (gossip and failure detection
            with no client load), measured for 5 s before the load.
  memory    3 nodes; write --memory-keys distinct keys (bench --preload
            --new-keys: the cluster is new, so no read before each write;
            --value-size values, 100 bytes by default), then report each
            node's resident memory (VmRSS, and the peak VmHWM), its data
            directory on disk, the objects it stores (RocksDB's
            estimate), and RocksDB's memtables, table readers and block
            caches (vinzclortho_storage_memory_bytes).
  transfer  On the cluster the memory part filled: a client load runs
            (50/50 over those keys, 16 in flight, on the three nodes) while a
            fourth node joins and, once settled, leaves again; for each move
            it reports how long it took (request to ring settled), the bytes
            and objects every node sent (vinzclortho_partition_transfer_*
            {kind="move"}): MB/s, and the clients' ops/s before the move and
            while the ring moved (requests the nodes answered).

Every server listens on 127.0.0.1 only (HTTP 18900+, gRPC 19900+), with data
in a temporary directory; all are stopped on exit, failure or Ctrl-C, and each
step is bounded in time. Results: a Markdown summary on stdout and in
--out DIR (with each bench run's JSON).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTTP_BASE = int(os.environ.get("SCALE_PORT", "18900"))
# Seconds of client load measured before each move, as its baseline.
BASELINE_S = 4
TICK = os.sysconf("SC_CLK_TCK")


def say(*args):
    print("scale:", *args, file=sys.stderr, flush=True)


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def context_switches(pid):
    """Voluntary and involuntary context switches of every live thread."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except OSError:
            pass  # the thread ended
    return total


def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def dir_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


def metric_sum(text, name, labels=None):
    """Sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3))
    return total


class Cluster:
    """Node processes of one cluster, started from one binary."""

    def __init__(self, binary, workdir, base, env=None):
        self.binary, self.workdir, self.base = binary, workdir, base
        self.env = dict(os.environ, **(env or {}))
        self.procs = []

    def http(self, i):
        return f"127.0.0.1:{self.base + i}"

    def add(self):
        i = len(self.procs)
        args = [self.binary, "serve", "-a", self.http(i), "--cluster-address", f"127.0.0.1:{self.base + 1000 + i}",
                "-p", "64", "--data-dir", self.data_dir(i)]
        if i > 0:
            args += ["-j", f"127.0.0.1:{self.base + 1000}"]
        log = open(os.path.join(self.workdir, f"node{i}.log"), "w")
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=self.env))
        return i

    def data_dir(self, i):
        return os.path.join(self.workdir, f"n{i}")

    def pids(self):
        return [p.pid for p in self.procs]

    def nodes_arg(self):
        return ",".join(self.http(i) for i in range(len(self.procs)))

    def status(self, i):
        return json.loads(http_get(f"http://{self.http(i)}/admin/status"))

    def settled(self, members=None):
        """Nodes 0..members-1 (every node by default) each see that many
        nodes up with partitions, and no move."""
        n = members or len(self.procs)
        for i in range(n):
            s = self.status(i)
            if s["ring"]["moving"]:
                return False
            if sum(1 for m in s["members"] if m["status"] == "up" and m["claim"] > 0) != n:
                return False
        return True

    def wait_settled(self, timeout, poll=0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"scale: a node exited with {p.returncode}; see {self.workdir}")
            try:
                if self.settled():
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(poll)
        raise SystemExit(f"scale: the cluster did not settle within {timeout} s; logs in {self.workdir}")

    def start(self, n):
        self.add()
        # The first node must be listening before the others join through it.
        deadline = time.monotonic() + 20
        while True:
            try:
                self.status(0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("scale: the first node did not start")
                time.sleep(0.1)
        for _ in range(n - 1):
            self.add()
        self.wait_settled(120)

    def metrics(self, i):
        return http_get(f"http://{self.http(i)}/metrics")

    def replica_calls(self):
        """Replica calls (Get, Coordinate, Merge, forwarded writes) made by
        all nodes so far."""
        total = 0.0
        for i in range(len(self.procs)):
            text = self.metrics(i)
            for method in ("Replica/Get", "Replica/Coordinate", "Replica/Merge", "Forward/Write"):
                total += metric_sum(text, "vinzclortho_grpc_client_requests_total", {"method": method})
        return total

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def bench(binary, out, name, nodes, extra, timeout):
    """Runs `vinzclortho bench --json` (100-byte values unless `extra` says
    otherwise); returns the report."""
    path = os.path.join(out, f"{name}.json")
    size = [] if "--value-size" in extra else ["--value-size", "100"]
    args = [binary, "bench", "--nodes", nodes, "--json", "-q", "--seed", "42"] + size + extra
    with open(path, "w") as f:
        r = subprocess.run(args, stdout=f, stderr=subprocess.PIPE, timeout=timeout, text=True)
    if r.returncode != 0:
        raise SystemExit(f"scale: bench {name} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    with open(path) as f:
        return json.load(f)


def part_cpu(a, binary, out, rows):
    rows.append("## CPU per 1,000 operations\n")
    spread = "each request sent to a primary of its key (--route preflist)" if a.route == "preflist" \
        else "requests spread over every node"
    rows.append(f"50/50 read/write, uniform over {a.keys} keys, 100-byte values, {a.concurrency} in flight, "
                f"{a.duration} s, N=3 R=2 W=2, {spread}; CPU of all nodes together.\n")
    rows.append("| nodes | ops/s | p99 ms | cluster CPU s | CPU ms per 1,000 ops | vs 3 nodes | replica calls per op | "
                "context switches per op | idle cluster CPU ms/s | generator CPU ms per 1,000 ops |")
    rows.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    # Passed only when asked for, so that a binary without --route runs too.
    route = ["--route", a.route] if a.route else []
    for n in a.sizes:
        work = tempfile.mkdtemp(prefix=f"cpu{n}-", dir=out)
        c = Cluster(binary, work, HTTP_BASE, a.node_env)
        try:
            say(f"cpu: starting {n} nodes")
            c.start(n)
            bench(binary, out, f"cpu{n}-preload", c.nodes_arg(),
                  ["--keys", str(a.keys), "--preload", "--duration", "1", "-c", str(a.concurrency)], 600)
            idle0 = sum(cpu_seconds(p) for p in c.pids())
            time.sleep(5)
            idle = (sum(cpu_seconds(p) for p in c.pids()) - idle0) / 5
            calls0 = c.replica_calls()
            switches0 = sum(context_switches(p) for p in c.pids())
            before = sum(cpu_seconds(p) for p in c.pids())
            gen0 = os.times()
            report = bench(binary, out, f"cpu{n}", c.nodes_arg(),
                           ["--keys", str(a.keys), "--duration", str(a.duration), "-c", str(a.concurrency),
                            "--mix", "read=50,write=50"] + route, a.duration + 120)
            gen1 = os.times()
            used = sum(cpu_seconds(p) for p in c.pids()) - before
            switches = sum(context_switches(p) for p in c.pids()) - switches0
            calls = c.replica_calls() - calls0
            gen = (gen1.children_user + gen1.children_system) - (gen0.children_user + gen0.children_system)
            o = report["overall"]
            per_k = used * 1000 / (o["ops"] / 1000)
            first = first or per_k
            rows.append(f"| {n} | {o['ops_per_s']:.0f} | {o['latency_ms']['p99']:.1f} | {used:.2f} | {per_k:.0f} | "
                        f"{per_k / first:.2f} | {calls / o['ops']:.2f} | {switches / o['ops']:.1f} | {idle * 1000:.0f} | {gen * 1000 / (o['ops'] / 1000):.0f} |")
            if o["errors"]:
                rows.append(f"\n({n} nodes: {o['errors']} errors: {o['errors_by_kind']})\n")
            say(rows[-1])
        finally:
            c.stop()
            shutil.rmtree(work, ignore_errors=True)
    rows.append("")


def part_memory_and_transfer(a, binary, out, rows, parts):
    work = tempfile.mkdtemp(prefix="mem-", dir=out)
    c = Cluster(binary, work, HTTP_BASE + 50, a.node_env)
    try:
        say("memory: starting 3 nodes")
        c.start(3)
        rss0 = [proc_status_kib(p, "VmRSS") for p in c.pids()]
        say(f"memory: writing {a.memory_keys} keys")
        started = time.monotonic()
        # The cluster is new: the keys need no read before their write
        # (--new-keys, half the requests), if the binary knows the flag.
        blind = ["--new-keys"] if "--new-keys" in subprocess.run(
            [binary, "bench", "--help"], capture_output=True, text=True).stdout else []
        bench(binary, out, "memory-preload", c.nodes_arg(),
              ["--keys", str(a.memory_keys), "--preload", "--duration", "1", "-c", "64", "--mix", "read=100",
               "--key-prefix", "m-", "--value-size", str(a.value_size)] + blind,
              max(3600, a.memory_keys // 500))
        took = time.monotonic() - started
        time.sleep(5)  # let background flushes and compactions finish their burst
        if "memory" in parts:
            rows.append("## Memory per node\n")
            how = "each key written once, blind: the keys are new" if blind else "each key read, then written"
            rows.append(f"{a.memory_keys} distinct keys with {a.value_size}-byte values written through the API in "
                        f"{took:.0f} s ({how}), N=3 on 3 nodes: every node stores every key.\n")
            rows.append("| node | objects stored | RSS idle MiB | RSS with the keys MiB | peak RSS MiB | on disk MiB "
                        "| RocksDB memtables MiB | table readers MiB | block caches MiB |")
            rows.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for i, pid in enumerate(c.pids()):
                text = c.metrics(i)
                objects = metric_sum(text, "vinzclortho_stored_objects")
                rocks = [metric_sum(text, "vinzclortho_storage_memory_bytes", {"part": p}) / 2**20
                         for p in ("memtables", "table_readers", "block_cache")]
                rows.append(f"| {i} | {objects:.0f} | {rss0[i] / 1024:.0f} | {proc_status_kib(pid, 'VmRSS') / 1024:.0f} | "
                            f"{proc_status_kib(pid, 'VmHWM') / 1024:.0f} | {dir_bytes(c.data_dir(i)) / 2**20:.0f} | "
                            + " | ".join(f"{m:.1f}" for m in rocks) + " |")
            rows.append("")
            say("\n".join(rows[-6:]))
        if "transfer" in parts:
            part_transfer(a, binary, out, rows, c)
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


def part_transfer(a, binary, out, rows, c):
    """A fourth node joins under a client load, then leaves again under it."""
    def sent():
        b = o = 0.0
        for i in range(len(c.procs)):
            text = c.metrics(i)
            b += metric_sum(text, "vinzclortho_partition_transfer_bytes_total", {"kind": "move"})
            o += metric_sum(text, "vinzclortho_partition_transfer_objects_total", {"kind": "move"})
        return b, o

    def served():
        """Client requests answered so far by the nodes the load goes to."""
        return time.monotonic(), sum(metric_sum(c.metrics(i), "vinzclortho_requests_total") for i in range(3))

    def rate(before, after):
        return (after[1] - before[1]) / max(after[0] - before[0], 0.001)

    def move(name, start, done):
        """Runs `start`, then waits until `done()`; returns the row's figures."""
        quiet0 = served()
        time.sleep(BASELINE_S)
        quiet1 = served()
        bytes0, objects0 = sent()
        began = time.monotonic()
        start()
        moving_seen = moving0 = None
        deadline = began + 900
        while time.monotonic() < deadline:
            if load.poll() is not None:
                raise SystemExit(f"scale: the client load ended before the {name} did; raise --transfer-load-seconds")
            try:
                s = c.status(0)
                if s["ring"]["moving"] and moving_seen is None:
                    moving_seen, moving0 = time.monotonic(), served()
                if done():
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"scale: the {name} did not finish within 900 s")
        end = time.monotonic()
        moving1 = served()
        bytes1, objects1 = sent()
        moved = bytes1 - bytes0
        took = end - began
        moving = end - (moving_seen or began)
        quiet = rate(quiet0, quiet1)
        during = rate(moving0 or quiet1, moving1)
        return (f"| {name} | {objects1 - objects0:.0f} | {moved / 2**20:.1f} | {took:.1f} | {moving:.1f} | "
                f"{moved / 2**20 / took:.1f} | {moved / 2**20 / max(moving, 0.001):.1f} | {quiet:.0f} | {during:.0f} | "
                f"{during / max(quiet, 1):.2f} |")

    def left():
        if c.status(3)["state"] != "left":
            return False
        return c.settled(members=3)

    def post(node, path):
        req = urllib.request.Request(f"http://{c.http(node)}{path}", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def leave():
        post(3, "/admin/leave")
        # The staged leave reaches node 0 by gossip: until then its commit
        # answers 409 (nothing is staged).
        deadline = time.monotonic() + 30
        while True:
            try:
                return post(0, "/admin/commit")
            except urllib.error.HTTPError as e:
                if e.code != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    load_s = a.transfer_load_seconds
    say(f"transfer: client load for at most {load_s} s; a fourth node joins, then leaves")
    load = subprocess.Popen(
        [binary, "bench", "--nodes", c.nodes_arg(), "--json", "-q", "--keys", str(a.memory_keys), "--key-prefix", "m-",
         "--duration", str(load_s), "-c", "16", "--mix", "read=50,write=50", "--value-size", str(a.value_size),
         "--seed", "7"],
        stdout=open(os.path.join(out, "transfer-load.json"), "w"), stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # the load's connections open
        figures = [move("join", c.add, c.settled)]
        say(figures[-1])
        # The join's aftermath (old holders sweeping what they no longer
        # hold) is not the leave's baseline: wait for the streams to stop.
        quiet_since, last, deadline = time.monotonic(), None, time.monotonic() + 120
        while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline:
            total = sum(metric_sum(c.metrics(i), "vinzclortho_partition_transfer_bytes_total") for i in range(4))
            if total != last:
                quiet_since, last = time.monotonic(), total
            time.sleep(0.5)
        figures.append(move("leave", leave, left))
        say(figures[-1])
        load.send_signal(signal.SIGINT)  # the load reports what it did so far
        _, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    if load.returncode != 0:
        raise SystemExit(f"scale: the client load failed: {err.strip()[-500:]}")
    with open(os.path.join(out, "transfer-load.json")) as f:
        o = json.load(f)["overall"]
    rows.append("## Partition transfer while a node joins, then leaves, under load\n")
    rows.append(f"The 3-node cluster above ({a.memory_keys} keys of {a.value_size} bytes), a client load on its three "
                f"nodes (50/50 over those keys, 16 in flight), a fourth node joining and, once every node sees the "
                f"ring settled, leaving again (`POST /admin/leave` on it, `/admin/commit` on node 0). Each move counts "
                f"from its request to every node seeing the ring settled (for the leave: the leaver says `left`); "
                f"\"moving\" from the first poll that sees the ring moving. Bytes and objects are what every node "
                f"sent (encoded entries, `vinzclortho_partition_transfer_*{{kind=\"move\"}}`). Client ops/s are the "
                f"requests the three nodes answered ({BASELINE_S} s before the move, and while the ring moved); the "
                f"leave's baseline starts once the join's sweeps are over (no transfer bytes for 3 s).\n")
    rows.append("| move | objects moved | MiB moved | request to settled s | ring moving s | MiB/s (request to "
                "settled) | MiB/s (while moving) | client ops/s before | client ops/s while moving | ratio |")
    rows.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows.extend(figures)
    rows.append("")
    rows.append(f"The client load overall ({o['ops_per_s']:.0f} ops/s, stopped after the leave): p99 "
                f"{o['latency_ms']['p99']:.1f} ms, {o['errors']} errors.\n")
    say("\n".join(rows[-7:]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="cpu,memory,transfer", help="which parts, comma separated")
    p.add_argument("--sizes", default="3,5,8", help="cluster sizes for the cpu part")
    p.add_argument("--duration", type=int, default=10, help="seconds of load per cluster size")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--keys", type=int, default=10000, help="keys for the cpu part")
    p.add_argument("--memory-keys", type=int, default=1_000_000, help="keys for the memory and transfer parts")
    p.add_argument("--value-size", type=int, default=100, help="value bytes for the memory and transfer parts")
    p.add_argument("--transfer-load-seconds", type=int, default=120,
                   help="the longest the client load of the transfer part runs (both moves must end within it)")
    p.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the nodes (e.g. TOKIO_WORKER_THREADS=1); repeatable")
    p.add_argument("--route", choices=["any", "preflist"],
                   help="the cpu part's `bench --route` (default: the generator's, any)")
    p.add_argument("--bin", help="use this binary instead of building target/release")
    p.add_argument("--out", help="where results go (default: a new /tmp/vinzclortho-scale.* directory)")
    a = p.parse_args()
    try:
        a.node_env = dict(kv.split("=", 1) for kv in a.node_env)
    except ValueError:
        p.error("--node-env takes KEY=VALUE")
    parts = set(a.parts.split(","))
    unknown = parts - {"cpu", "memory", "transfer"}
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))} (cpu, memory, transfer)")
    try:
        a.sizes = [int(s) for s in a.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes takes numbers separated by commas, not {a.sizes!r}")
    if any(n < 3 for n in a.sizes):
        p.error("--sizes: at least 3 nodes (N=3)")
    out = a.out or tempfile.mkdtemp(prefix="vinzclortho-scale.")
    os.makedirs(out, exist_ok=True)
    if a.bin:
        binary = a.bin
    else:
        say("building the release binary")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(out, "vinzclortho")
        # A copy: a concurrent build cannot swap the binary mid-run.
        shutil.copy2(os.path.join(target, "release", "vinzclortho"), binary)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = [f"# bench/scale.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f}"
            + (f", node environment {a.node_env}" if a.node_env else "") + "\n"]
    if "cpu" in parts:
        part_cpu(a, binary, out, rows)
    if parts & {"memory", "transfer"}:
        part_memory_and_transfer(a, binary, out, rows, parts)
    rows.append(f"load average after: {os.getloadavg()[0]:.2f}")
    text = "\n".join(rows)
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    say(f"results in {out}")


if __name__ == "__main__":
    main()
