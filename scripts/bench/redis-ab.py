#!/usr/bin/env python3
"""Two scale_bench processes over one redis-server (role `redis-site`: the page cache over
Redis without a near tier), alternating wrk rounds: each one's req/s, its own CPU per
request, redis-server's CPU per request, and how many commands redis-server took per read of
a client socket (`INFO stats`: total_commands_processed / total_reads_processed), which says
how many `GET`s travelled together.

    scripts/bench/redis-ab.py PAGES CONNS SECONDS ROUNDS TARGET_A TARGET_B

A target is a scale_bench binary, reaching the server over loopback TCP
(`redis://127.0.0.1:PORT/0`), or BIN@unix, through the server's Unix socket
(`redis+unix:///...sock?db=0`). Two builds over TCP compare revisions (session 17's
batching); one build both ways compares the transports (session 18).

Pages of 5 KB, uniform, as bench-scale's redis segment. The other servers of a round are
idle, so redis-server's counters in a round are the measured target's.

Pages of 5 KB, uniform, as bench-scale's redis segment. The other servers of a round are
idle, so redis-server's counters in a round are the measured target's.
"""
import importlib.machinery
import importlib.util
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))


def bench_scale():
    path = os.path.join(ROOT, "scripts", "bench-scale")
    loader = importlib.machinery.SourceFileLoader("bench_scale", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def info(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "all"], capture_output=True,
                         text=True, check=True).stdout
    fields = dict(l.split(":", 1) for l in out.splitlines() if ":" in l and not l.startswith("#"))
    return {
        "reads": int(fields["total_reads_processed"]),
        "commands": int(fields["total_commands_processed"]),
        "cpu": float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"]),
    }


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    pages, conns, seconds, rounds, target_a, target_b = sys.argv[1:]
    pages, conns, seconds, rounds = int(pages), int(conns), int(seconds), int(rounds)
    size = 5120
    bs = bench_scale()
    rport = bs.free_port()
    socket_path = f"/tmp/webcache-redis-ab-{rport}.sock"
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--unixsocket", socket_path,
                              "--unixsocketperm", "700"], stdout=subprocess.DEVNULL)
    procs, urls, pids = [redis], {}, {}
    try:
        time.sleep(0.5)
        urls_of = {"tcp": f"redis://127.0.0.1:{rport}/0", "unix": f"redis+unix://{socket_path}?db=0"}
        for name, target in (("A", target_a), ("B", target_b)):
            binary, _, over = target.partition("@")
            if over not in ("", "unix"):
                sys.exit(f"`{target}`: a target is BIN or BIN@unix")
            env = dict(os.environ, SCALE_BENCH_REDIS=urls_of[over or "tcp"])
            port = bs.free_port()
            p = subprocess.Popen([binary, f"redis-site={port}"], env=env, stdout=subprocess.DEVNULL)
            procs.append(p)
            urls[name], pids[name] = f"http://127.0.0.1:{port}", p.pid
        time.sleep(1)

        def run(name, secs):
            before, cpu_before = info(rport), bs.cpu_seconds(pids[name])
            r = bs.wrk(urls[name], size, pages, "uniform", secs, conns)
            after, cpu_after = info(rport), bs.cpu_seconds(pids[name])
            n = max(r["requests"], 1)
            # The two INFO calls' own reads and commands are noise of two in thousands.
            return {
                "rps": r["rps"],
                "cpu": sum(a - b for a, b in zip(cpu_after, cpu_before)) * 1e6 / n,
                "redis_cpu": (after["cpu"] - before["cpu"]) * 1e6 / n,
                "per_read": (after["commands"] - before["commands"]) / max(after["reads"] - before["reads"], 1),
            }

        for name in urls:
            bs.warm(urls[name], size, pages)
            run(name, 3)
        runs = {name: [] for name in urls}
        for i in range(rounds):
            for name in urls:
                runs[name].append(run(name, seconds))
            print(f"round {i}: " + " | ".join(
                f"{n} {r['rps']:.0f} req/s, {r['cpu']:.1f} us/req + redis {r['redis_cpu']:.1f}, "
                f"{r['per_read']:.2f} cmds/read" for n in urls for r in [runs[n][-1]]), flush=True)
        for name in urls:
            med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
            print(f"median {name}: {med['rps']:.0f} req/s, {med['cpu']:.1f} us/req, redis "
                  f"{med['redis_cpu']:.1f} us/req, {med['per_read']:.2f} commands per read")
        print("B/A rate (median of rounds' ratios): "
              f"{bs.paired(runs['B'], runs['A'], lambda b, a: b['rps'] / a['rps']):.3f}; "
              "A/B CPU per request (webcache + redis): "
              f"{bs.paired(runs['B'], runs['A'], lambda b, a: (a['cpu'] + a['redis_cpu']) / (b['cpu'] + b['redis_cpu'])):.3f}")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
