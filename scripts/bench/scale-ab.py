#!/usr/bin/env python3
"""Two scale_bench servers side by side, alternating wrk rounds: the ratio B/A of their req/s.

    scripts/bench/scale-ab.py BIN_A BIN_B ROLE_A ROLE_B SIZE PAGES DIST CONNS SECONDS ROUNDS

BIN_A/BIN_B are scale_bench binaries (the same one twice to compare two roles, e.g. `static
layer`; two builds to compare two revisions of one role). Each runs in its own process on a
free port; both are warmed with a 3 s wrk run (pages.lua, the same DIST), then measured in
alternating rounds (A B A B ...) with `wrk -t1`. Prints each round and the medians: requests
per second, and the server's CPU time per request (user and system, from /proc/PID/stat over
the round). CPU per request moves far less than the rate on a machine whose scheduling is
noisy (the rate of a closed loop sharing two cores with its load generator follows every
stall), so it is the figure to compare two builds by.
Example: the layer against the static answer, 5 KB pages, 100 of them:
    B=target/release/examples/scale_bench
    scripts/bench/scale-ab.py $B $B static layer 5120 100 uniform 16 6 6
"""
import importlib.machinery
import importlib.util
import os
import statistics
import subprocess
import sys
import time


def bench_scale():
    """scripts/bench-scale as a module: its ports and its wrk runs (one home for how wrk is run
    with pages.lua and how its output is read)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench-scale")
    loader = importlib.machinery.SourceFileLoader("bench_scale", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def cpu_seconds(pid):
    """The user and system CPU seconds process `pid` has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main():
    if len(sys.argv) != 11:
        sys.exit(__doc__)
    bin_a, bin_b, role_a, role_b, size, pages, dist, conns, seconds, rounds = sys.argv[1:]
    bs = bench_scale()
    procs, urls = [], {}
    try:
        for name, binary, role in (("A", bin_a, role_a), ("B", bin_b, role_b)):
            port = bs.free_port()
            procs.append(subprocess.Popen([binary, f"{role}={port}"], stdout=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
        time.sleep(1)

        pids = dict(zip(("A", "B"), (p.pid for p in procs)))

        def wrk(name, secs):
            """One wrk run against `name`: its req/s and the server's CPU µs per request
            (user, system)."""
            before = cpu_seconds(pids[name])
            run = bs.wrk(urls[name], int(size), int(pages), dist, int(secs), int(conns))
            after = cpu_seconds(pids[name])
            n = max(run["requests"], 1)
            return run["rps"], tuple((a - b) * 1e6 / n for a, b in zip(after, before))

        for name in urls:
            wrk(name, 3)
        runs = {"A": [], "B": []}
        for i in range(int(rounds)):
            for name in ("A", "B"):
                runs[name].append(wrk(name, seconds))
            (ra, (ua, sa)), (rb, (ub, sb)) = runs["A"][-1], runs["B"][-1]
            print(f"round {i}: A {ra:.0f} req/s, {ua + sa:.1f} us/req (user {ua:.1f}) | "
                  f"B {rb:.0f} req/s, {ub + sb:.1f} us/req (user {ub:.1f}) | "
                  f"B/A rate {rb / ra:.3f}, A/B cpu per request {(ua + sa) / (ub + sb):.3f}",
                  flush=True)

        def med(name, pick):
            return statistics.median(pick(r) for r in runs[name])

        a, b = med("A", lambda r: r[0]), med("B", lambda r: r[0])
        ca, cb = med("A", lambda r: sum(r[1])), med("B", lambda r: sum(r[1]))
        ua, ub = med("A", lambda r: r[1][0]), med("B", lambda r: r[1][0])
        print(f"median A {a:.0f} req/s, {ca:.1f} us/req (user {ua:.1f}); "
              f"B {b:.0f} req/s, {cb:.1f} us/req (user {ub:.1f}); "
              f"B/A rate {b / a:.3f}, A/B cpu per request {ca / cb:.3f}")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
