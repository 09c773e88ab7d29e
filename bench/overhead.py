#!/usr/bin/env python3
"""Overhead benchmark: what shoal adds per test, and how fast it dispatches.

    bench/overhead.py [--runs N] [--tests N] [--shoal PATH] [--only pytest|cargo|sched]

Generates suites of N trivial tests (bench/gen_suite.py --trivial: every test
does nothing), then, alternating the tools in every round, times:

  pytest: pytest serial | shoal run -j 1 | pytest-xdist -n 2 | shoal run -j 2
  cargo:  cargo test (one thread) | nextest -j 1 | shoal -j 1 (auto)
          | shoal -j 1 (share_processes = "never") | nextest -j 2 | shoal -j 2

Every shoal variant runs twice before timing (history and discovery cache
warm, as in an edit-run loop). Prints medians and the per-test overhead
(shoal -j 1 minus the tool's own serial run, divided by N) and end-to-end
throughput (N / wall time of shoal -j 2). `--only sched` runs the in-process
benchmarks: the scheduler (`cargo bench -p shoal-sched --bench throughput`)
and event fan-out to the terminal, JUnit and JSON reporters
(`cargo bench -p shoal-report --bench fanout`).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from local import timed  # noqa: E402


def rounds(tools, cwd, runs, env):
    for argv in tools.values():
        if "shoal" in os.path.basename(argv[0]):
            for _ in range(2):
                subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = {k: [] for k in tools}
    items = list(tools.items())
    for r in range(runs):
        order = items[r % len(items):] + items[:r % len(items)]
        for k, argv in order:
            times[k].append(timed(argv, cwd, env))
    return times


def table(title, times, n, serial, shoal1, shoal2):
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"### {title}: {n} trivial tests\n")
    print("| runner | median wall (s) | runs (s) |")
    print("| --- | ---: | --- |")
    for k, ts in times.items():
        print(f"| {k} | {med[k]:.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    over = (med[shoal1] - med[serial]) / n * 1000
    print(f"\nshoal overhead per test vs {serial}: {over:.2f} ms; "
          f"end-to-end throughput of `{shoal2}`: {n / med[shoal2]:.0f} tests/s\n", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=2000)
    ap.add_argument("--shoal", default=None, help="shoal binary (default: build with cargo --release)")
    ap.add_argument("--only", choices=["pytest", "cargo", "sched"], default=None)
    a = ap.parse_args()
    repo = os.path.dirname(HERE)
    if a.only in (None, "sched"):
        subprocess.run(["cargo", "bench", "--locked", "-p", "shoal-sched", "--bench", "throughput"], cwd=repo, check=True)
        subprocess.run(["cargo", "bench", "--locked", "-p", "shoal-report", "--bench", "fanout"], cwd=repo, check=True)
    if a.only == "sched":
        return
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
        shoal = os.path.join(target, "release", "shoal")
    work = tempfile.mkdtemp(prefix="shoal-overhead-")
    n = str(a.tests)
    gen = [sys.executable, os.path.join(HERE, "gen_suite.py")]
    try:
        if a.only in (None, "pytest"):
            d = os.path.join(work, "py")
            subprocess.run(gen + ["pytest", d, "--tests", n, "--trivial", "--per-file", "100"], check=True)
            py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            sh = [shoal, "-C", d, "run", "--color", "never"]
            times = rounds({
                "pytest (serial)": py,
                "shoal run -j 1": sh + ["-j", "1"],
                "pytest-xdist -n 2": py + ["-n", "2"],
                "shoal run -j 2": sh + ["-j", "2"],
            }, d, a.runs, None)
            table("pytest", times, a.tests, "pytest (serial)", "shoal run -j 1", "shoal run -j 2")
        if a.only in (None, "cargo"):
            d = os.path.join(work, "rs")
            subprocess.run(gen + ["cargo", d, "--tests", n, "--trivial", "--per-file", "250"], check=True)
            never = os.path.join(work, "rs-never")
            shutil.copytree(d, never)
            with open(os.path.join(never, "shoal.toml"), "w") as f:
                f.write('[suites.cargo]\nadapter = "cargo"\nshare_processes = "never"\n')
            env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(work, "rs-target"))
            subprocess.run(["cargo", "test", "--no-run", "-q"], cwd=d, env=env, check=True)
            subprocess.run(["cargo", "test", "--no-run", "-q"], cwd=never, env=env, check=True)
            nx = ["cargo", "nextest", "run", "--no-fail-fast", "--cargo-quiet"]
            times = rounds({
                "cargo test --test-threads=1": ["cargo", "test", "-q", "--", "--test-threads=1"],
                "cargo nextest run -j 1": nx + ["-j", "1"],
                "shoal run -j 1": [shoal, "-C", d, "run", "-j", "1", "--color", "never"],
                "shoal run -j 1 (share_processes = never)": [shoal, "-C", never, "run", "-j", "1", "--color", "never"],
                "cargo nextest run -j 2": nx + ["-j", "2"],
                "shoal run -j 2": [shoal, "-C", d, "run", "-j", "2", "--color", "never"],
            }, d, a.runs, env)
            table("cargo", times, a.tests, "cargo test --test-threads=1", "shoal run -j 1", "shoal run -j 2")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
