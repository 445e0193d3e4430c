#!/usr/bin/env python3
"""Renders charts/grafana/capstan-dashboard.json from a live Prometheus into a PNG.

Each panel is drawn where its gridPos puts it, from its own queries (variables set to
"All"), so the picture shows what the dashboard shows. Grafana itself is not needed.

    python3 scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 \
        --minutes 10 --out docs/dashboard.png
"""
import argparse
import json
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or expr_name(metric)


def expr_name(metric):
    return ",".join(f"{k}={v}" for k, v in metric.items()) or "value"


def threshold_color(panel, value, default):
    """The colour of the panel's last threshold step at or below `value`, as Grafana picks it."""
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    names = {"green": "#73bf69", "red": "#f2495c"}
    color = default
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            color = names.get(step["color"], step["color"])
    return color


def fill(expr, rate_interval):
    return expr.replace("$stack", ".*").replace("$service", ".*").replace("$__rate_interval", rate_interval)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default="charts/grafana/capstan-dashboard.json")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate-interval", default="30s")
    ap.add_argument("--out", default="docs/dashboard.png")
    args = ap.parse_args()

    dash = json.load(open(args.dashboard))
    end = time.time()
    start = end - args.minutes * 60
    step = max(2, int(args.minutes * 60 / 300))
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, rows * 0.42), facecolor="#111217")
    gs = GridSpec(rows, 24, figure=fig, hspace=2.6, wspace=1.2, top=0.96, bottom=0.03, left=0.03, right=0.99)
    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            ax = fig.add_subplot(gs[g["y"], :])
            ax.axis("off")
            ax.text(0, 0.2, p["title"], color="#d8d9da", fontsize=14, fontweight="bold", transform=ax.transAxes)
            continue
        ax = fig.add_subplot(gs[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        ax.set_title(p["title"], color="#d8d9da", fontsize=11, loc="left")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            texts, color = [], "#73bf69"
            for t in p["targets"]:
                for series in query_range(args.prometheus, fill(t["expr"], args.rate_interval), start, end, step):
                    last = float(series["values"][-1][1])
                    texts.append(f"{legend(t['legendFormat'], series['metric'])}: {last:g}")
                    color = threshold_color(p, last, color)
            ax.text(0.5, 0.5, "\n".join(texts) or "no data", color=color, fontsize=16, ha="center", va="center", transform=ax.transAxes)
            continue
        for t in p["targets"]:
            for series in query_range(args.prometheus, fill(t["expr"], args.rate_interval), start, end, step):
                xs = [(float(v[0]) - end) / 60 for v in series["values"]]
                ys = [float(v[1]) for v in series["values"]]
                ax.plot(xs, ys, linewidth=1.4, label=legend(t["legendFormat"], series["metric"]))
        ax.set_xlim(-args.minutes, 0)
        ax.set_xlabel("minutes ago", color="#9fa7b3", fontsize=8)
        if unit:
            ax.set_ylabel(unit, color="#9fa7b3", fontsize=8)
        ax.grid(color="#2c3235", linewidth=0.5)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da", ncol=2)
    fig.suptitle(dash["title"] + " (rendered from a live Prometheus)", color="#d8d9da", fontsize=16, x=0.03, y=0.995, ha="left")
    fig.savefig(args.out, dpi=60, facecolor=fig.get_facecolor(), bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
