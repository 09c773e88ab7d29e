#!/usr/bin/env python3
"""Container overhead: the same trivial pytest suite run by shoal on the host
and in one container per slot (`environment.image`), and the cost of
starting a slot container.

    bench/containers.py [--runs N] [--tests N] [--shoal PATH]

Needs the Docker engine and `shoal-test/python:1` (scripts/test-images.sh).
Each variant runs twice untimed (history, discovery cache), then N rounds
alternating. Prints medians and the overhead per test and per run.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=500)
    ap.add_argument("--shoal", default=None)
    a = ap.parse_args()
    repo = os.path.dirname(HERE)
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
        shoal = os.path.join(target, "release", "shoal")
    subprocess.run(["bash", os.path.join(repo, "scripts", "test-images.sh")], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="shoal-containers-")
    try:
        host = os.path.join(work, "host")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_suite.py"), "pytest", host,
                        "--tests", str(a.tests), "--trivial", "--per-file", "50"], check=True)
        boxed = os.path.join(work, "container")
        shutil.copytree(host, boxed)
        with open(os.path.join(boxed, "shoal.toml"), "w") as f:
            f.write('[suites.pytest]\nadapter = "pytest"\n\n[suites.pytest.environment]\nimage = "shoal-test/python:1"\n')
        tools = {
            "shoal run -j 2 (host)": [shoal, "-C", host, "run", "-j", "2", "--color", "never"],
            "shoal run -j 2 (container per slot)": [shoal, "-C", boxed, "run", "-j", "2", "--color", "never"],
        }
        for argv in tools.values():
            for _ in range(2):
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = {k: [] for k in tools}
        items = list(tools.items())
        for r in range(a.runs):
            for k, argv in items[r % 2:] + items[:r % 2]:
                times[k].append(timed(argv, work))
        start = []
        for _ in range(a.runs):
            start.append(timed(["docker", "run", "--rm", "shoal-test/python:1", "true"], work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"### {a.tests} trivial pytest tests, 2 slots, median of {a.runs} alternating runs\n")
    print("| runner | median wall (s) | runs (s) |")
    print("| --- | ---: | --- |")
    for k, ts in times.items():
        print(f"| {k} | {med[k]:.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    (h, c) = list(med.values())
    print(f"\ncontainer per slot over the host: {c - h:+.2f} s per run, {(c - h) / a.tests * 1000:+.2f} ms per test; "
          f"`docker run --rm IMAGE true` median {statistics.median(start):.2f} s\n")


if __name__ == "__main__":
    main()
