#!/usr/bin/env python3
"""Two scale_bench servers side by side, alternating wrk rounds: the ratio B/A of their req/s.

    scripts/bench/scale-ab.py BIN_A BIN_B ROLE_A ROLE_B SIZE PAGES DIST CONNS SECONDS ROUNDS

BIN_A/BIN_B are scale_bench binaries (the same one twice to compare two roles, e.g. `static
layer`; two builds to compare two revisions of one role). Each runs in its own process on a
free port; both are warmed with a 3 s wrk run (pages.lua, the same DIST), then measured in
alternating rounds (A B A B ...) with `wrk -t1`. Prints each round and the medians.
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

        def wrk(url, secs):
            return bs.wrk(url, int(size), int(pages), dist, int(secs), int(conns))["rps"]

        for url in urls.values():
            wrk(url, 3)
        runs = {"A": [], "B": []}
        for i in range(int(rounds)):
            for name in ("A", "B"):
                runs[name].append(wrk(urls[name], seconds))
            print(f"round {i}: A {runs['A'][-1]:.0f} B {runs['B'][-1]:.0f} "
                  f"B/A {runs['B'][-1] / runs['A'][-1]:.3f}", flush=True)
        a, b = statistics.median(runs["A"]), statistics.median(runs["B"])
        print(f"median A {a:.0f} B {b:.0f} B/A {b / a:.3f}")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
