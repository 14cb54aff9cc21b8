#!/usr/bin/python3
"""Charts and tables of scripts/bench-scale, from the scale-*.json files in OUT.

    /usr/bin/python3 scripts/bench/charts.py OUT

Writes OUT/scale-workingset.png, scale-sizes.png, scale-conns.png, scale-latency.png (for the
segments whose results are there) and OUT/scale-tables.md (every figure, with the command that
produced it). Needs matplotlib (Debian's python3-matplotlib; scripts/bench-scale installs it).
"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"static": "#999999", "webcache": "#d62728", "varnish": "#1f77b4", "nginx": "#2ca02c",
          "webcache-redis": "#ff7f0e", "webcache-redis-unix": "#9467bd"}
ORDER = ["static", "webcache", "webcache-redis", "webcache-redis-unix", "varnish", "nginx"]


def load(out):
    data = {}
    for path in glob.glob(os.path.join(out, "scale-*.json")):
        with open(path) as f:
            d = json.load(f)
        data[d["segment"]] = d
    return data


def names_of(targets):
    return [n for n in ORDER if n in targets]


def title(ax, text, d):
    ax.set_title(f"{text}\n{d['label']}, {d['cores']} cores, load {d['load_average'][0]:.1f}",
                 fontsize=9)


def human(n):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:g}{unit}"
    return f"{n:g}"


def size_name(b):
    return f"{b // 1048576} MB" if b >= 1048576 else f"{b // 1024} KB"


def chart_lines(d, out, name, x_of, xlabel, text, split=None):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = sorted({split(r) for r in d["results"]}) if split else [None]
    styles = ["-", "--", ":"]
    for gi, g in enumerate(groups):
        rs = [r for r in d["results"] if split is None or split(r) == g]
        rs.sort(key=x_of)
        for t in names_of(rs[0]["targets"]):
            xs = [x_of(r) for r in rs]
            ys = [r["targets"][t]["rps"] for r in rs]
            ax.plot(xs, ys, styles[gi % 3], marker="o", color=COLORS[t],
                    label=t if g is None else f"{t} ({g})")
    ax.set_xscale("log")
    ax.set_xticks(sorted({x_of(r) for r in d["results"]}))
    ax.set_xticklabels([human(x) for x in sorted({x_of(r) for r in d["results"]})])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests per second (median)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    title(ax, text, d)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)


def chart_sizes(d, out):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    rs = sorted(d["results"], key=lambda r: r["size"])
    xs = [r["size"] for r in rs]
    for t in names_of(rs[0]["targets"]):
        a1.plot(xs, [r["targets"][t]["rps"] for r in rs], "-o", color=COLORS[t], label=t)
        a2.plot(xs, [r["targets"][t]["body_bytes_per_s"] / 1e6 for r in rs], "-o", color=COLORS[t], label=t)
    for ax, yl in ((a1, "requests per second (median)"), (a2, "body MB/s (median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([size_name(x) for x in xs])
        ax.set_xlabel("page size")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title(a1, f"Throughput against page size ({rs[0]['pages']} pages each, uniform, "
              f"{rs[0]['connections']} connections)", d)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scale-sizes.png"), dpi=110)
    plt.close(fig)


def chart_latency(d, out):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = names_of(d["targets"])
    qs = [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    width = 0.8 / len(names)
    for i, t in enumerate(names):
        ys = [d["targets"][t][k] for k, _ in qs]
        ax.bar([j + i * width for j in range(len(qs))], ys, width, color=COLORS[t], label=t)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(qs))])
    ax.set_xticklabels([q for _, q in qs])
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log scale)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    title(ax, f"Latency at {d['rate']:,} req/s (half of {d['slowest']}'s maximum), "
              f"{d['pages']:,} pages uniform, oha", d)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scale-latency.png"), dpi=110)
    plt.close(fig)


def latency_errors(r):
    """A latency row's failed requests; those oha aborted when its -z ended (in flight at the
    deadline, not a failure of the target) counted apart where the run recorded them."""
    total = r["non_200"] + r["errors"]
    aborted = r.get("aborted_at_deadline")
    return f"{total} ({aborted} in flight at the end)" if aborted else str(total)


def f0(x):
    return "" if x is None else f"{x:,.0f}"


def f2(x):
    return "" if x is None else f"{x:.2f}"


def placement(d):
    """Where webcache's layer was in the run (runs before the option had it on its routes)."""
    return {"front": "webcache's layer around the router",
            "route": "webcache's layer on the routes (Router::layer)"}[d.get("placement", "route")]


def throughput_table(d, lines, with_bytes=False):
    lines.append(f"`{d['command']}`: {d['label']} ({d['date']}; {d['rounds']} round(s) of "
                 f"{d['seconds']} s, wrk -t{d['wrk_threads']}; load average {d['load_average'][0]:.1f} "
                 f"at the start, {d['load_average'][1]:.1f} at the end; {placement(d)}).\n")
    head = "| pages | distribution | size | connections | target | req/s | vs static | vs Varnish | vs nginx |"
    head += " body MB/s |" if with_bytes else ""
    head += " p50 ms | p99 ms | origin calls | errors |"
    # The server's CPU time per request, where the run measured it (the scale_bench targets):
    # steadier than the rate on a machine whose cores wrk shares.
    with_cpu = any("cpu_us" in row for r in d["results"] for row in r["targets"].values())
    head += " µs CPU / req | CPU vs static | CPU vs Varnish |" if with_cpu else ""
    lines.append(head)
    lines.append("|" + "---|" * 5 + "---:|" * (head.count("|") - 6))
    for r in d["results"]:
        for t in names_of(r["targets"]):
            row = r["targets"][t]
            # A cell measured apart: each cache beside the static answer alone (bench-scale's
            # --apart-from); its ratios to other caches are ratios of ratios to the static answer.
            mark = " ᵃ" if row.get("apart") else ""
            cells = [f"{r['pages']:,}", r["dist"], size_name(r["size"]), str(r["connections"]), t + mark,
                     f0(row["rps"]), f2(row.get("vs_static")), f2(row.get("vs_varnish")), f2(row.get("vs_nginx"))]
            if with_bytes:
                cells.append(f"{row['body_bytes_per_s'] / 1e6:,.0f}")
            cells += [f2(row["p50_ms"]), f2(row["p99_ms"]), str(row["origin_calls"]),
                      str(row["non_2xx"] + row["socket_errors"])]
            if with_cpu:
                cpu = f"{row['cpu_us']:.1f}" if "cpu_us" in row else ""
                if "helper_cpu_us" in row:
                    cpu += f" + {row['helper_cpu_us']:.1f} redis-server"
                cells += [cpu, f2(row.get("cpu_vs_static")), f2(row.get("cpu_vs_varnish"))]
            lines.append("| " + " | ".join(cells) + " |")
    if with_cpu:
        peers = any("cpu_us" in r["targets"].get(t, {}) for r in d["results"] for t in ("varnish", "nginx"))
        whose = ("Varnish's manager and child, nginx's master and workers" if peers
                 else "measured for the scale_bench processes only in this run")
        lines.append(f"CPU per request: user and system time of the target's processes over each round "
                     f"({whose}), median of the rounds; \"CPU vs\" is the peer's over this target's, "
                     f"round by round, a redis-server's time counted with the webcache that reads from it.\n")
    if any(row.get("apart") for r in d["results"] for row in r["targets"].values()):
        lines.append("ᵃ measured apart: this cache and the static answer alone on the machine, rounds "
                     "alternating the two (the other caches stopped, their memory given back); its "
                     "vs Varnish and vs nginx are the ratios of each one's vs static.\n")
    lines.append("")


def main():
    out = sys.argv[1]
    data = load(out)
    lines = ["<!-- written by scripts/bench/charts.py from the scale-*.json files beside it -->", ""]
    if "workingset" in data:
        d = data["workingset"]
        chart_lines(d, out, "scale-workingset.png", lambda r: r["pages"], "distinct pages (working set)",
                    "Throughput against working set (5 KB pages, 16 connections)", split=lambda r: r["dist"])
        lines.append("### Working set\n")
        throughput_table(d, lines)
    if "sizes" in data:
        chart_sizes(data["sizes"], out)
        lines.append("### Page size\n")
        throughput_table(data["sizes"], lines, with_bytes=True)
    if "conns" in data:
        d = data["conns"]
        chart_lines(d, out, "scale-conns.png", lambda r: r["connections"], "connections",
                    f"Throughput against connections ({d['results'][0]['pages']:,} pages of 5 KB, Zipf)")
        lines.append("### Connections\n")
        throughput_table(d, lines)
    if "latency" in data:
        d = data["latency"]
        chart_latency(d, out)
        lines.append("### Latency at a fixed rate\n")
        n = len(next(iter(d["targets"].values())).get("rounds", [None]))
        rounds = (f"{n} rounds of {d['oha_seconds']} s alternating the targets, medians; max is the largest of any round"
                  if n > 1 else "one run per target")
        lines.append(f"`{d['command']}`: {d['label']} ({d['date']}; oha -q {d['rate']} "
                     f"--latency-correction, {d['connections']} connections, {d['pages']:,} pages of 5 KB "
                     f"uniform; the rate is half of {d['slowest']}'s {d['peak'][d['slowest']]['rps']:,.0f} "
                     f"req/s ({d.get('peak_from', 'measured just before')}, wrk -c16); {rounds}"
                     + ("; measured apart: each cache's rounds alternate with the static answer's, "
                        "the other caches stopped; static's row is the median of all its rounds, "
                        "and 'static beside' its median beside that cache" if d.get("apart") else "")
                     + ").\n")
        lines.append("| target | max req/s (wrk) | req/s sent | p50 ms | p99 ms | p99.9 ms | max ms | origin calls | errors |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in names_of(d["targets"]):
            r = d["targets"][t]
            lines.append(f"| {t} | {f0(d['peak'][t]['rps'])} | {f0(r['rps'])} | {r['p50_ms']:.3f} | "
                         f"{r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['max_ms']:.1f} | {r['origin_calls']} | "
                         f"{latency_errors(r)} |")
            if "static_beside" in r:
                s = r["static_beside"]
                lines.append(f"| static beside {t} | | {f0(s['rps'])} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                             f"{s['p999_ms']:.3f} | {s['max_ms']:.1f} | {s['origin_calls']} | "
                             f"{latency_errors(s)} |")
        lines.append("")
    if "memory" in data:
        d = data["memory"]
        stored = d["body_bytes"] + d["header_bytes"]
        lines.append("### Memory per cached page\n")
        lines.append(f"`{d['command']}`: {d['label']} ({d['date']}; {d['pages']:,} pages of "
                     f"{d['body_bytes']:,} B body + {d['header_bytes']} B of origin headers = {stored:,} B; "
                     f"proportional set size after the fill minus before, per page).\n")
        lines.append("| target | resident per page | / (body + headers) | page cache per page | "
                     "resident + page cache | on disk per page (apparent / allocated) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for t in names_of(d["targets"]):
            r = d["targets"][t]
            pc = r.get("page_cache_per_page")
            total = r.get("per_page_with_page_cache")
            disk = (f"{r['disk_apparent_per_page']:,.0f} / {r['disk_allocated_per_page']:,.0f}"
                    if "disk_apparent_per_page" in r else "")
            lines.append(f"| {t} | {r['per_page']:,.0f} B | {r['per_page'] / stored:.2f} | "
                         f"{'' if pc is None else f'{pc:,.0f} B'} | "
                         f"{'' if total is None else f'{total:,.0f} B ({total / stored:.2f})'} | {disk} |")
        lines.append("")
    if "redis" in data:
        lines.append("### Redis without a near tier\n")
        throughput_table(data["redis"], lines)
    with open(os.path.join(out, "scale-tables.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"charts and {os.path.join(out, 'scale-tables.md')} written")


if __name__ == "__main__":
    main()
