#!/usr/bin/env python3
"""Builds every test of the workspace once, then runs the test binaries a few at a time.

`cargo test` runs its test binaries one after another. Most of webcache's tests wait: for an
entry to expire, for a Redis Sentinel to fail over, for a server to start. Run one after
another, those waits add up to most of the suite's time while the machine idles. This runner
asks cargo for the same binaries (`cargo test --no-run`), then runs `--lanes` of them at once
(default 2, or `WEBCACHE_TEST_LANES`), each exactly as `cargo test` would: in its package's
directory, with cargo's variables set, with its own test threads. The doc tests run as one
more job. A binary's output is printed whole when it ends, so outputs never interleave.

Unlike `cargo test`, a failing binary does not stop the others: the summary at the end names
every binary that failed, and the exit status is 1 if any did.

The longest binaries start first, by the durations of the last run here
(`target/test-durations.json`, written by every run) or else by `scripts/test-durations.json`
(a copy of it, committed so that a clean clone starts its slow binaries first too). The
durations only order the runs: a stale or missing one costs time, never a test.

Usage: scripts/run-tests.py [--lanes N] [cargo test options] [-- test binary options]
e.g. scripts/run-tests.py --workspace --all-features -- stale   (only tests named *stale*)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / "target" / "test-durations.json"
COMMITTED_DURATIONS = ROOT / "scripts" / "test-durations.json"


class Job:
    """One test binary (or the doc tests): how to run it and what it printed."""

    def __init__(self, title, argv, cwd, env):
        self.title = title
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.status = None
        self.seconds = 0.0
        self.output = ""


def package_name(package_id, manifest_path):
    """The package's name from cargo's package id (`path+file:///dir#name@1.0` or `...#1.0`)."""
    fragment = package_id.rsplit("#", 1)[-1]
    if "@" in fragment:
        return fragment.split("@", 1)[0]
    return Path(urlparse(package_id).path).name or Path(manifest_path).parent.name


def build(cargo, cargo_args):
    """Builds every test binary; returns one Job per binary, in cargo's order."""
    # Like cargo, put the toolchain's own libraries on the loader's path: a proc-macro crate's
    # unit tests link to libstd dynamically.
    sysroot = subprocess.run(
        ["rustc", "--print", "target-libdir"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.strip()
    command = [cargo, "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    built = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        sys.exit(built.returncode)
    jobs = []
    for line in built.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message.get("profile", {}).get("test"):
            continue
        target = message["target"]
        manifest = Path(message["manifest_path"])
        package_dir = manifest.parent
        name = package_name(message["package_id"], manifest)
        source = Path(target["src_path"])
        try:
            source = source.relative_to(package_dir)
        except ValueError:
            pass
        kind = "unittests" if "test" not in target["kind"] else ""
        title = f"{name}: {kind + ' ' if kind else ''}{source}"
        # What cargo sets when it runs a test binary itself.
        env = dict(os.environ)
        env.update(
            {
                "CARGO": cargo,
                "CARGO_MANIFEST_DIR": str(package_dir),
                "CARGO_MANIFEST_PATH": str(manifest),
                "CARGO_PKG_NAME": name,
                "CARGO_CRATE_NAME": target["name"].replace("-", "_"),
            }
        )
        library_path = [str(Path(message["executable"]).parent), sysroot]
        if os.environ.get("LD_LIBRARY_PATH"):
            library_path.append(os.environ["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
        jobs.append(Job(title, [message["executable"]], str(package_dir), env))
    return jobs


def run(job):
    """Runs one job to its end, keeping what it printed."""
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as output:
        finished = subprocess.run(
            job.argv, cwd=job.cwd, env=job.env, stdout=output, stderr=subprocess.STDOUT
        )
        output.seek(0)
        job.output = output.read()
    job.status = finished.returncode
    job.seconds = time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lanes", type=int, default=int(os.environ.get("WEBCACHE_TEST_LANES", "2")),
        help="test binaries run at once (default 2, or WEBCACHE_TEST_LANES)",
    )
    options, cargo_args = parser.parse_known_args()
    test_args = []
    if "--" in cargo_args:
        split = cargo_args.index("--")
        cargo_args, test_args = cargo_args[:split], cargo_args[split + 1:]
    cargo = os.environ.get("CARGO", "cargo")

    jobs = build(cargo, cargo_args)
    for job in jobs:
        job.argv += test_args
    # The doc tests, through the same `cargo test` as the build (not `cargo test --doc`, whose
    # narrower set of targets unifies dependencies' features differently and rebuilds about a
    # hundred crates): every test binary is started with a filter that only doc tests' names
    # match ("path - item (line N)"), so they list nothing and exit at once.
    # (With filters of one's own, `--doc`: libtest runs what matches any filter.)
    if test_args:
        doc_tests = [cargo, "test", "--doc", *cargo_args, "--", *test_args]
    else:
        doc_tests = [cargo, "test", *cargo_args, "--", "(line "]
    jobs.append(Job("doc tests", doc_tests, str(ROOT), dict(os.environ)))
    known = {}
    for durations in (COMMITTED_DURATIONS, DURATIONS):
        try:
            known.update(json.loads(durations.read_text()))
        except (OSError, ValueError):
            pass
    jobs.sort(key=lambda job: -float(known.get(job.title, 0)))

    pending = list(jobs)
    lock = threading.Lock()
    started = time.monotonic()

    def lane():
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            run(job)
            with lock:
                verdict = "ok" if job.status == 0 else f"FAILED (exit {job.status})"
                print(f"\n==== {job.title}: {verdict} in {job.seconds:.1f}s", flush=True)
                print(job.output, end="", flush=True)

    # Daemon threads: Ctrl-C ends the runner (the terminal sends it to the binaries too).
    lanes = [threading.Thread(target=lane, daemon=True) for _ in range(max(1, options.lanes))]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()

    # Merged with what was known, so that a run of a few packages keeps the others'
    # durations; a run filtered by test name (`-- name`) says nothing of a binary's length.
    if not test_args:
        known.update({job.title: round(job.seconds, 1) for job in jobs})
        DURATIONS.parent.mkdir(parents=True, exist_ok=True)
        DURATIONS.write_text(json.dumps(known, indent=1))
    failed = [job for job in jobs if job.status != 0]
    elapsed = time.monotonic() - started
    print(f"\n{len(jobs)} test binaries in {elapsed:.0f}s, {options.lanes} at a time; "
          f"{len(failed)} failed")
    for job in failed:
        print(f"  FAILED: {job.title} (exit {job.status})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
