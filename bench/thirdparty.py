#!/usr/bin/env python3
"""shoal against the usual runners on third-party suites from package registries.

    bench/thirdparty.py [--runs N] [--slots N] [--shoal PATH] [--only NAME]

Downloads pinned PyPI source distributions and crates.io crates that ship
their tests (none written here), unpacks them under ~/.cache/shoal-bench/,
and times, in alternating order each round: pytest serial, pytest-xdist -n
SLOTS and `shoal run -j SLOTS` for the Python suites; `cargo test --tests`,
`cargo nextest run -j SLOTS` and `shoal run -j SLOTS` for the crates (test
binaries built once beforehand). shoal runs once untimed first, so its
history and discovery cache are warm, as in everyday use. Prints medians,
shoal's ratio to xdist / nextest and its makespan/LB from the JSON events.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from local import compare, report  # noqa: E402

# (name, pip requirement, unpacked directory, pytest path argument)
SUITES = [
    ("more-itertools", "more-itertools==11.2.1", "more_itertools-11.2.1", "tests"),
    ("toolz", "toolz==1.2.0", "toolz-1.2.0", "toolz"),
    ("pyflakes", "pyflakes==3.2.0", "pyflakes-3.2.0", "pyflakes"),
]
# (crate, version): its own tests, run from the published crate.
CRATES = [("itertools", "0.13.0")]
CACHE = os.path.expanduser("~/.cache/shoal-bench/thirdparty")
CRATE_CACHE = os.path.expanduser("~/.cache/shoal-bench/thirdparty-cargo")


def fetch_crate(name, version):
    """The crate's published source, made a workspace of its own."""
    root = os.path.join(CRATE_CACHE, f"{name}-{version}")
    if os.path.isdir(root):
        return root
    os.makedirs(CRATE_CACHE, exist_ok=True)
    probe = os.path.join(CRATE_CACHE, "fetch-probe")
    if not os.path.isdir(probe):
        subprocess.run(["cargo", "new", "-q", "--lib", probe], check=True)
    subprocess.run(["cargo", "add", "-q", f"{name}@={version}"], cwd=probe, check=True)
    subprocess.run(["cargo", "fetch", "-q"], cwd=probe, check=True)
    registry = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry", "src")
    for index in os.listdir(registry):
        src = os.path.join(registry, index, f"{name}-{version}")
        if os.path.isdir(src):
            shutil.copytree(src, root)
            with open(os.path.join(root, "Cargo.toml"), "a") as f:
                f.write("\n[workspace]\n")
            return root
    raise SystemExit(f"{name} {version} not found in {registry}")


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
        times, spans = compare(tools, root, events, a.runs)
        report(f"{name} ({req})", times, spans, f"pytest-xdist -n {j}")
    for crate, version in CRATES:
        if a.only and a.only != crate:
            continue
        root = fetch_crate(crate, version)
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(root, "target"))
        subprocess.run(["cargo", "test", "--tests", "--no-run", "-q"], cwd=root, env=env, check=True)
        events = os.path.join(CRATE_CACHE, f"{crate}-events.jsonl")
        tools = {
            "cargo test --tests (threads)": ["cargo", "test", "--tests", "-q"],
            f"cargo nextest run -j {j}": ["cargo", "nextest", "run", "-j", j, "--no-fail-fast"],
            f"shoal run -j {j}": [shoal, "-C", root, "run", "-j", j, "--json", events, "--color", "never"],
        }
        times, spans = compare(tools, root, events, a.runs, env)
        report(f"{crate} {version} (crates.io)", times, spans, f"cargo nextest run -j {j}")


if __name__ == "__main__":
    main()
