#!/usr/bin/env python3
"""Local benchmark: shoal against the tools' own runners on one machine.

    bench/local.py [--runs N] [--tests N] [--slots N] [--shoal PATH]

Generates a seeded pytest suite and a seeded cargo suite (bench/gen_suite.py),
then, alternating the tools in every round, times:

  pytest:  pytest serial | pytest-xdist -n SLOTS | shoal run -j SLOTS
  cargo:   cargo test -- --test-threads=1 | cargo test (threads) |
           cargo nextest run -j SLOTS | shoal run -j SLOTS

and prints the median wall time of each, shoal's ratio to the parallel
competitor, and shoal's makespan / LB from its JSON events. shoal runs once
before timing so its history (durations) is warm, as it is in real use.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import makespan  # noqa: E402


def timed(argv, cwd, env=None, ok=(0,)):
    """Wall time of argv; exits with its stderr when its exit code is not in ok."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode not in ok:
        sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"{argv} failed with {p.returncode}")
    return dt


def report(name, times, spans, rival):
    print(f"### {name}\n")
    print("| runner | median wall (s) | runs (s) |")
    print("| --- | ---: | --- |")
    for k, ts in times.items():
        print(f"| {k} | {statistics.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    shoal = [k for k in times if k.startswith("shoal")][0]
    ratio = statistics.median(times[shoal]) / statistics.median(times[rival])
    print(f"\nshoal / {rival}: {ratio:.2f}x; makespan/LB {statistics.median(m / lb for m, lb in spans):.3f} "
          f"(makespan {statistics.median(m for m, _ in spans):.2f}s, LB {statistics.median(lb for _, lb in spans):.2f}s)\n",
          flush=True)


def compare(tools, root, events, runs, env=None, warm=True, ok=(0,), after=None):
    """Times each tool `runs` times, rotating their order every round.

    warm: run shoal once untimed first (history and discovery cache warm).
    ok: exit codes that count as a completed run. after(name, round): called
    after every timed run, e.g. to read the reports it wrote.
    """
    shoal = [k for k in tools if k.startswith("shoal")][0]
    if warm:
        timed(tools[shoal], root, env, ok)
    times = {k: [] for k in tools}
    spans = []
    for r in range(runs):
        order = list(tools.items())
        order = order[r % len(order):] + order[:r % len(order)]
        for k, argv in order:
            times[k].append(timed(argv, root, env, ok))
            if k == shoal:
                spans.append(makespan.analyse(events))
            if after is not None:
                after(k, r)
    return times, spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=150)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--shoal", default=None, help="shoal binary (default: build with cargo --release)")
    ap.add_argument("--only", choices=["pytest", "cargo"], default=None)
    a = ap.parse_args()

    repo = os.path.dirname(HERE)
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
        shoal = os.path.join(target, "release", "shoal")
    work = tempfile.mkdtemp(prefix="shoal-bench-")
    j = str(a.slots)
    results = {}
    try:
        suites = []
        if a.only in (None, "pytest"):
            d = os.path.join(work, "py")
            subprocess.run([sys.executable, os.path.join(HERE, "gen_suite.py"), "pytest", d, "--tests", str(a.tests)], check=True)
            py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            suites.append(("pytest", d, {
                "pytest (serial)": py,
                f"pytest-xdist -n {j}": py + ["-n", j],
            }, f"pytest-xdist -n {j}"))
        if a.only in (None, "cargo"):
            d = os.path.join(work, "rs")
            subprocess.run([sys.executable, os.path.join(HERE, "gen_suite.py"), "cargo", d, "--tests", str(a.tests)], check=True)
            env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(d, "target"))
            subprocess.run(["cargo", "test", "--no-run", "-q"], cwd=d, env=env, check=True)
            suites.append(("cargo", d, {
                "cargo test --test-threads=1": ["cargo", "test", "-q", "--", "--test-threads=1"],
                "cargo test (threads)": ["cargo", "test", "-q"],
                f"cargo nextest run -j {j}": ["cargo", "nextest", "run", "-j", j, "--no-fail-fast"],
            }, f"cargo nextest run -j {j}"))
        for name, d, tools, rival in suites:
            env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(d, "target"))
            events = os.path.join(work, f"{name}-events.jsonl")
            shoal_cmd = [shoal, "-C", d, "run", "-j", j, "--json", events, "--color", "never"]
            tools = dict(tools)
            tools[f"shoal run -j {j}"] = shoal_cmd
            times, spans = compare(tools, d, events, a.runs, env)
            results[name] = (times, spans, rival)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n## Local benchmark: {a.tests} tests, {a.slots} slots, median of {a.runs} alternating runs\n")
    for name, (times, spans, rival) in results.items():
        report(name, times, spans, rival)


if __name__ == "__main__":
    main()
