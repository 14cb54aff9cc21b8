import importlib.machinery, importlib.util, subprocess, sys, time, os, re, glob
path = "/work/main/scripts/bench-scale"
loader = importlib.machinery.SourceFileLoader("bench_scale", path)
bs = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
loader.exec_module(bs)
bs.EXAMPLE = "/tmp/sb-new"
import tempfile
state = tempfile.mkdtemp(prefix="sys-"); os.chmod(state, 0o777)
stack = bs.Stack(state, "2G")
urls = dict(stack.start(["static", "webcache", "varnish", "nginx"]))
_, u1 = bs.start_example(["static", "site"], env={"TOKIO_WORKER_THREADS": "1"}, pid_of="static-1w")
urls["static-1w"] = u1["static"]; urls["webcache-1w"] = u1["site"]
bs.CPU_PIDS["webcache-1w"] = bs.CPU_PIDS["static-1w"]
def pids(name):
    return bs.CPU_PIDS[name]()
def ctx(name):
    v = n = 0
    for pid in pids(name):
        for st in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                t = open(st).read()
            except OSError:
                continue
            v += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", t).group(1))
            n += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", t).group(1))
    return v, n
for name, url in urls.items():
    bs.warm(url, 5120, 1)
order = ["static", "webcache", "varnish", "nginx", "static-1w", "webcache-1w"]
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    for name in order:
        url = urls[name]
        c0 = ctx(name); cpu0 = bs.cpu_of(name)
        p = ",".join(str(x) for x in pids(name))
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", p, "--", "sleep", "8"], stderr=subprocess.PIPE, text=True)
        r = bs.wrk(url, 5120, 1, "uniform", 8, 16)
        err = perf.communicate()[1]
        c1 = ctx(name); cpu1 = bs.cpu_of(name)
        reqs = r["rps"] * 8
        m = re.search(r"^([\d.]+),,raw_syscalls", err, re.M)
        sysc = float(m.group(1)) if m else float("nan")
        print(f"{rnd} {name:12s} {r['rps']:8.0f} req/s  cpu {1e6*(cpu1-cpu0)/reqs:6.1f} us/req  syscalls/req {sysc/reqs:5.2f}  vol ctx/req {(c1[0]-c0[0])/reqs:5.2f}  invol/req {(c1[1]-c0[1])/reqs:5.2f}", flush=True)
bs.cleanup()
