#!/usr/bin/env python3
"""Latency histograms of `vinzclortho bench --json` reports, one line per
system, drawn into one SVG (or PNG) file.

    bench/plot_latency.py --out latency.svg ours=vinz.json etcd=etcd.json
    bench/plot_latency.py --out latency.png --title "50/50 at 5,000 ops/s" ours=a.json

Each report's `latency_histogram` (buckets 10 % wider each, from 10 µs) is
drawn as the share of requests per bucket against latency on a log axis,
with the report's p50 and p99 marked and given in the legend. Reports made
with `--rate` at the same rate compare latency at the same load.

Needs matplotlib: `bench/compare.sh` runs it in a virtual environment
(`~/.cache/vinzclortho/plot-venv`, `pip install matplotlib==3.9.2`).
"""

import argparse
import json
import sys


def load(spec):
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise SystemExit(f"plot_latency: '{spec}' is not LABEL=REPORT.json")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"plot_latency: cannot read {path}: {e}")
    buckets = report.get("latency_histogram")
    if not buckets:
        raise SystemExit(f"plot_latency: {path} has no latency_histogram (an older generator, or no request answered)")
    return label, report, buckets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the file to write (.svg or .png)")
    parser.add_argument("--title", default=None, help="the plot's title [default: from the first report]")
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT.json")
    args = parser.parse_args()
    series = [load(spec) for spec in args.reports]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for label, report, buckets in series:
        total = sum(b["count"] for b in buckets)
        xs = [b["le_ms"] for b in buckets]
        ys = [100.0 * b["count"] / total for b in buckets]
        lat = report["overall"]["latency_ms"]
        rate = report["overall"]["ops_per_s"]
        (line,) = ax.step(
            xs,
            ys,
            where="pre",
            label=f"{label}: {rate:,.0f} ops/s, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms",
        )
        for q, style in (("p50", ":"), ("p99", "--")):
            ax.axvline(lat[q], color=line.get_color(), linestyle=style, linewidth=0.8)
    first = series[0][1]
    if args.title:
        title = args.title
    else:
        load_text = f"open loop at {first['rate']:,.0f} requests/s" if first.get("rate") else f"{first['concurrency']} in flight"
        title = f"mix {first['mix']}, {first['value_size_bytes']}-byte values, {load_text}"
    ax.set_title(title)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log scale; dotted p50, dashed p99)")
    ax.set_ylabel("% of requests per bucket (buckets 10 % wide)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"plot_latency: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
