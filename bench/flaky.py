#!/usr/bin/env python3
"""Flake detection measured on real runs: `shoal stress` over the flaky
fixture (fixtures/flaky-project: tests failing with probability 0, 0.5%,
1%, 5% and 20%) with many seeds, and how often each probability is flagged.

    bench/flaky.py [--seeds N] [--first-seed S] [--slots N] [--shoal PATH]

Each seed changes every test's failure sequence (the fixture hashes the
seed, the test and the run's number), so the seeds are independent trials
of the same rates. Prints, per failure probability, the share of trials
flagged flaky / decided stable / undecided, the mean and median runs until
the SPRT decided, and the wall time per stress run. Default SPRT settings
(H0 p <= 0.1%, H1 p >= 1%, alpha = beta = 5%); --until-decided, at most
5000 runs per test.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RATES = {
    "test_never_fails": 0.0,
    "test_never_fails_either": 0.0,
    "test_fails_half_a_percent": 0.005,
    "test_fails_one_percent": 0.01,
    "test_fails_five_percent": 0.05,
    "test_fails_twenty_percent": 0.20,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--shoal", default=None)
    a = ap.parse_args()
    repo = os.path.dirname(HERE)
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
        shoal = os.path.join(target, "release", "shoal")
    fixture = os.path.join(repo, "fixtures", "flaky-project")
    by_rate = {}
    walls = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        work = tempfile.mkdtemp(prefix="shoal-flaky-")
        try:
            proj = os.path.join(work, "p")
            shutil.copytree(fixture, proj, ignore=shutil.ignore_patterns(".shoal", ".flaky-state"))
            env = dict(os.environ, FLAKY_SEED=str(seed))
            t0 = time.perf_counter()
            p = subprocess.run(
                [shoal, "-C", proj, "stress", "test_rates", "--until-decided", "--max-runs", "5000",
                 "-j", str(a.slots), "--seed", str(seed), "--format", "json"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            walls.append(time.perf_counter() - t0)
            if p.returncode not in (0, 1):
                sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
                raise SystemExit(f"shoal stress failed with {p.returncode}")
            for r in json.loads(p.stdout):
                name = r["test"].rsplit("::", 1)[-1]
                by_rate.setdefault(RATES[name], []).append(r)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"seed {seed}: {walls[-1]:.1f}s", file=sys.stderr)

    print(f"{a.seeds} seeds ({a.first_seed}..{a.first_seed + a.seeds - 1}), -j {a.slots}; "
          f"median wall time per stress run {statistics.median(walls):.1f}s\n")
    print("| failure probability | trials | flagged flaky | decided stable | undecided | mean runs to decide | median |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate in sorted(by_rate):
        rs = by_rate[rate]
        n = len(rs)
        share = lambda v: sum(1 for r in rs if r["verdict"] == v) / n * 100  # noqa: E731
        decided = [r["decided_after"] for r in rs if r.get("decided_after")]
        mean = f"{statistics.mean(decided):.0f}" if decided else "-"
        med = f"{statistics.median(decided):.0f}" if decided else "-"
        print(f"| {rate * 100:g}% | {n} | {share('flaky'):.0f}% | {share('stable'):.0f}% | "
              f"{share('undecided'):.0f}% | {mean} | {med} |")


if __name__ == "__main__":
    main()
