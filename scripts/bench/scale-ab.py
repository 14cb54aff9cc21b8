#!/usr/bin/env python3
"""scale_bench servers side by side (two, or more), alternating wrk rounds: each one's req/s and CPU per
request against the first (A).

    scripts/bench/scale-ab.py BIN_A BIN_B ROLE_A ROLE_B SIZE PAGES DIST CONNS SECONDS ROUNDS [BIN_C:ROLE_C ...]

BIN_A/BIN_B are scale_bench binaries (the same one twice to compare two roles, e.g. `static
layer`; two builds to compare two revisions of one role). Each runs in its own process on a
free port; both are warmed (every page once, in order: bench-scale's warm, then a 3 s wrk run
with the same DIST), then measured in alternating rounds (A B A B ...) with `wrk -t1`. Prints
each round and the medians: requests per second, and the server's CPU time per request (user
and system, from /proc/PID/stat over the round); then the median of each round's ratio to A
(bench-scale's `paired`). CPU per request moves far less than the rate on a machine whose
scheduling is noisy (the rate of a closed loop sharing two cores with its load generator
follows every stall), so it is the figure to compare two builds by.
Example: the layer against the static answer, 5 KB pages, 100 of them:
    B=target/release/examples/scale_bench
    scripts/bench/scale-ab.py $B $B static layer 5120 100 uniform 16 6 6
More targets (C, D, ...) given as BIN:ROLE after ROUNDS join the same alternating rounds, each
compared with A (three builds or roles measured under the same conditions, which two separate
A/B runs on a noisy machine are not).
"""
import importlib.machinery
import importlib.util
import os
import statistics
import subprocess
import sys
import time


def bench_scale():
    """scripts/bench-scale as a module: its ports, its wrk runs and its CPU time of a process
    (one home for how wrk is run with pages.lua, how its output is read, how CPU is read)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench-scale")
    loader = importlib.machinery.SourceFileLoader("bench_scale", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def main():
    if len(sys.argv) < 11:
        sys.exit(__doc__)
    bin_a, bin_b, role_a, role_b, size, pages, dist, conns, seconds, rounds = sys.argv[1:11]
    targets = [("A", bin_a, role_a), ("B", bin_b, role_b)]
    for i, extra in enumerate(sys.argv[11:]):
        binary, sep, role = extra.rpartition(":")
        if not sep or not binary or not role:
            sys.exit(f"an extra target is BIN:ROLE, got `{extra}`")
        targets.append((chr(ord("C") + i), binary, role))
    names = [name for name, _, _ in targets]
    bs = bench_scale()
    procs, urls = [], {}
    try:
        for name, binary, role in targets:
            port = bs.free_port()
            procs.append(subprocess.Popen([binary, f"{role}={port}"], stdout=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
        time.sleep(1)

        pids = dict(zip(names, (p.pid for p in procs)))

        def wrk(name, secs):
            """One wrk run against `name`: its req/s and the server's CPU µs per request
            (user, system)."""
            before = bs.cpu_seconds(pids[name])
            run = bs.wrk(urls[name], int(size), int(pages), dist, int(secs), int(conns))
            after = bs.cpu_seconds(pids[name])
            n = max(run["requests"], 1)
            return run["rps"], tuple((a - b) * 1e6 / n for a, b in zip(after, before))

        def compared(name, rps, cpu, rps_a, cpu_a):
            """How `name` did against A: its rate over A's, A's CPU per request over its own."""
            return "" if name == "A" else f", {name}/A rate {rps / rps_a:.3f}, A/{name} cpu per request {cpu_a / cpu:.3f}"

        for name in urls:
            # Every page once (so that a large working set is cached before it is measured),
            # then 3 s as measured.
            bs.warm(urls[name], int(size), int(pages))
            wrk(name, 3)
        runs = {name: [] for name in names}
        for i in range(int(rounds)):
            for name in names:
                runs[name].append(wrk(name, seconds))
            ra, (ua, sa) = runs["A"][-1]
            print(f"round {i}: " + " | ".join(
                f"{name} {r:.0f} req/s, {u + s:.1f} us/req (user {u:.1f})"
                + compared(name, r, u + s, ra, ua + sa)
                for name in names for r, (u, s) in [runs[name][-1]]), flush=True)

        def med(name, pick):
            return statistics.median(pick(r) for r in runs[name])

        rate = {name: med(name, lambda r: r[0]) for name in names}
        cpu = {name: med(name, lambda r: sum(r[1])) for name in names}
        user = {name: med(name, lambda r: r[1][0]) for name in names}
        print("median " + "; ".join(
            f"{name} {rate[name]:.0f} req/s, {cpu[name]:.1f} us/req (user {user[name]:.1f})"
            for name in names))
        # Paired: the median of each round's ratio (both sides from the same stretch of the
        # machine), as bench-scale reports its ratios.
        print("median of the rounds' ratios " + "; ".join(
            f"{name}/A rate {bs.paired(runs[name], runs['A'], lambda r, a: r[0] / a[0]):.3f}, "
            f"A/{name} cpu per request {bs.paired(runs[name], runs['A'], lambda r, a: sum(a[1]) / sum(r[1])):.3f}"
            for name in names if name != "A"))
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
