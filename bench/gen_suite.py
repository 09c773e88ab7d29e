#!/usr/bin/env python3
"""Generates a benchmark suite with seeded log-normal test durations.

    gen_suite.py pytest DIR [--tests N] [--seed S] [--median SECS] [--sigma X]
    gen_suite.py cargo  DIR [...]

Each test sleeps for its drawn duration (capped at --max), half of it busy
(CPU) and half asleep, so both scheduling and CPU contention show up. The same
seed gives the same suite for pytest and cargo, so their figures compare.
"""
import argparse
import math
import os
import random


def durations(n, seed, median, sigma, cap):
    rng = random.Random(seed)
    return [min(cap, rng.lognormvariate(math.log(median), sigma)) for _ in range(n)]


def gen_pytest(root, ds, per_file):
    os.makedirs(os.path.join(root, "tests"), exist_ok=True)
    with open(os.path.join(root, "pytest.ini"), "w") as f:
        f.write("[pytest]\ntestpaths = tests\n")
    helper = (
        "import time\n\n"
        "def work(secs):\n"
        "    end = time.perf_counter() + secs / 2\n"
        "    while time.perf_counter() < end:\n"
        "        pass\n"
        "    time.sleep(secs / 2)\n"
    )
    with open(os.path.join(root, "tests", "conftest.py"), "w") as f:
        f.write("")
    with open(os.path.join(root, "tests", "benchwork.py"), "w") as f:
        f.write(helper)
    for start in range(0, len(ds), per_file):
        chunk = ds[start:start + per_file]
        with open(os.path.join(root, "tests", f"test_bench_{start // per_file:03}.py"), "w") as f:
            f.write("import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\nfrom benchwork import work\n\n")
            for i, d in enumerate(chunk):
                body = "pass" if d == 0 else f"work({d:.4f})"
                f.write(f"def test_{start + i:04}():\n    {body}\n\n")


def gen_cargo(root, ds, per_file):
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "tests"), exist_ok=True)
    with open(os.path.join(root, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "bench-suite"\nversion = "0.1.0"\nedition = "2021"\n\n[workspace]\n')
    with open(os.path.join(root, "src", "lib.rs"), "w") as f:
        f.write(
            "pub fn work(secs: f64) {\n"
            "    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs / 2.0);\n"
            "    while std::time::Instant::now() < end { std::hint::spin_loop(); }\n"
            "    std::thread::sleep(std::time::Duration::from_secs_f64(secs / 2.0));\n"
            "}\n"
        )
    for start in range(0, len(ds), per_file):
        chunk = ds[start:start + per_file]
        with open(os.path.join(root, "tests", f"bench_{start // per_file:03}.rs"), "w") as f:
            for i, d in enumerate(chunk):
                body = "" if d == 0 else f" bench_suite::work({d:.4f}); "
                f.write(f"#[test]\nfn t{start + i:04}() {{{body}}}\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["pytest", "cargo"])
    p.add_argument("dir")
    p.add_argument("--tests", type=int, default=150)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--median", type=float, default=0.05)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--max", type=float, default=2.0)
    p.add_argument("--per-file", type=int, default=25)
    p.add_argument("--trivial", action="store_true", help="every test does nothing (measures overhead)")
    a = p.parse_args()
    ds = [0.0] * a.tests if a.trivial else durations(a.tests, a.seed, a.median, a.sigma, a.max)
    (gen_pytest if a.kind == "pytest" else gen_cargo)(a.dir, ds, a.per_file)
    print(f"{a.kind}: {a.tests} tests, total {sum(ds):.2f}s, longest {max(ds):.2f}s")


if __name__ == "__main__":
    main()
