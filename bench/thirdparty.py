#!/usr/bin/env python3
"""shoal against pytest and pytest-xdist on third-party suites from PyPI.

    bench/thirdparty.py [--runs N] [--slots N] [--shoal PATH] [--only NAME]

Downloads pinned source distributions that ship their tests (none written
here), unpacks them under ~/.cache/shoal-bench/thirdparty, and times, in
alternating order each round: pytest serial, pytest-xdist -n SLOTS and
`shoal run -j SLOTS` (after one untimed shoal run, so its history and
discovery cache are warm, as in everyday use). Prints medians, shoal's ratio
to xdist and its makespan/LB from the JSON events.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import makespan  # noqa: E402
from local import timed  # noqa: E402

# (name, pip requirement, unpacked directory, pytest path argument)
SUITES = [
    ("more-itertools", "more-itertools==11.2.1", "more_itertools-11.2.1", "tests"),
    ("toolz", "toolz==1.2.0", "toolz-1.2.0", "toolz"),
    ("pyflakes", "pyflakes==3.2.0", "pyflakes-3.2.0", "pyflakes"),
]
CACHE = os.path.expanduser("~/.cache/shoal-bench/thirdparty")


def fetch(req, dirname):
    root = os.path.join(CACHE, dirname)
    if os.path.isdir(root):
        return root
    os.makedirs(CACHE, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    "-q", "-d", CACHE, req], check=True)
    name, version = req.split("==")
    for f in os.listdir(CACHE):
        if f.endswith(".tar.gz") and version in f and f.lower().replace("_", "-").startswith(name.lower()):
            with tarfile.open(os.path.join(CACHE, f)) as t:
                t.extractall(CACHE, filter="data")
            return root
    raise SystemExit(f"no sdist for {req} in {CACHE}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--shoal", default=None)
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    repo = os.path.dirname(HERE)
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        shoal = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target")), "release", "shoal")
    j = str(a.slots)
    print(f"## Third-party suites: {a.slots} slots, median of {a.runs} alternating runs\n")
    for name, req, dirname, path in SUITES:
        if a.only and a.only != name:
            continue
        root = fetch(req, dirname)
        with open(os.path.join(root, "shoal.toml"), "w") as f:
            f.write(f'[suites.tests]\nadapter = "pytest"\nargs = ["{path}"]\n')
        events = os.path.join(CACHE, f"{name}-events.jsonl")
        py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path]
        tools = {
            "pytest (serial)": py,
            f"pytest-xdist -n {j}": py + ["-n", j],
            f"shoal run -j {j}": [shoal, "-C", root, "run", "-j", j, "--json", events, "--color", "never"],
        }
        timed(tools[f"shoal run -j {j}"], root)
        times = {k: [] for k in tools}
        spans = []
        for r in range(a.runs):
            order = list(tools.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for k, argv in order:
                times[k].append(timed(argv, root))
                if k.startswith("shoal"):
                    spans.append(makespan.analyse(events))
        print(f"### {name} ({req})\n")
        print("| runner | median wall (s) | runs (s) |")
        print("| --- | ---: | --- |")
        for k, ts in times.items():
            print(f"| {k} | {statistics.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
        ratio = statistics.median(times[f"shoal run -j {j}"]) / statistics.median(times[f"pytest-xdist -n {j}"])
        print(f"\nshoal / xdist: {ratio:.2f}x; makespan/LB {statistics.median(m / lb for m, lb in spans):.3f} "
              f"(makespan {statistics.median(m for m, _ in spans):.2f}s, LB {statistics.median(lb for _, lb in spans):.2f}s)\n",
              flush=True)


if __name__ == "__main__":
    main()
