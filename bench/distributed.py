#!/usr/bin/env python3
"""Distributed benchmark: one coordinator and 1, 2, 4 workers on loopback.

    bench/distributed.py [--runs N] [--workers 1,2,4] [--slots N] [--sleep SECS]
                         [--suites fixture,sleep200] [--shoal PATH]

Suites (pytest, every test sleeps, none burns CPU):

  fixture   fixtures/distributed-project: 30 tests sleeping SHOAL_FIXTURE_SLEEP
            (--sleep, default 0.3 s; 9 s of test time)
  sleep200  generated here: 200 tests sleeping 0.1 s each (20 s of test time)

For each suite, every distributed configuration gets its own fresh
`shoal serve` (free loopback port, SQLite store in a temp dir) and its own
`shoal worker`s (--slots each, own cache dir, SHOAL_FIXTURE_SLEEP in their
environment). Each configuration, local `shoal run -j SLOTS`, serial pytest
and pytest-xdist -n SLOTS runs on its own copy of the project; shoal's
first run of each is untimed (it warms the history that orders and sizes
batches, the workers' snapshot caches and the client's discovery cache).
Then --runs rounds time every runner, rotating the order each round so that
drift in the machine's load spreads over all of them. Reports median wall
time, and for shoal runs the makespan (first attempt start to last attempt
end), its lower bound LB = max(total attempt time / slots, longest attempt)
and the time from submission (run_started) to the first attempt's start.

The tests sleep, so workers × slots above the core count still scale: on a
2-core machine 4 workers × 2 slots run 8 sleeping tests at once.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gen_sleep_suite(root, tests, secs, per_file=25):
    """A pytest project of `tests` tests that each sleep `secs` seconds."""
    os.makedirs(os.path.join(root, "tests"), exist_ok=True)
    with open(os.path.join(root, "pytest.ini"), "w") as f:
        f.write("[pytest]\ntestpaths = tests\n")
    for start in range(0, tests, per_file):
        with open(os.path.join(root, "tests", f"test_sleep_{start // per_file:03}.py"), "w") as f:
            f.write("import time\n\n")
            for i in range(start, min(tests, start + per_file)):
                f.write(f"def test_{i:04}():\n    time.sleep({secs})\n\n")


class Fleet:
    """A coordinator and its workers, as child processes."""

    def __init__(self, shoal, work, name, workers, slots, env):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.procs = []
        self.log = os.path.join(self.dir, "serve.log")
        self.serve = self._spawn([
            shoal, "serve", "--listen", self.url.removeprefix("http://"),
            "--store", f"sqlite://{os.path.join(self.dir, 'coordinator.db')}",
            "--data-dir", os.path.join(self.dir, "data"),
        ], self.log, env)
        self._wait_listening()
        for w in range(workers):
            self._spawn([
                shoal, "worker", "--server", self.url, "--slots", str(slots),
                "--cache-dir", os.path.join(self.dir, f"cache-w{w}"), "--name", f"w{w}",
            ], os.path.join(self.dir, f"worker-{w}.log"), env)
        self._wait_registered(workers)

    def _spawn(self, argv, log, env):
        with open(log, "w") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def _wait_listening(self):
        host, port = self.url.removeprefix("http://").split(":")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise SystemExit(f"shoal serve exited: {open(self.log).read()[-2000:]}")
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"shoal serve did not listen: {open(self.log).read()[-2000:]}")

    def _wait_registered(self, n):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log) as f:
                if f.read().count("worker registered") >= n:
                    return
            for p in self.procs[1:]:
                if p.poll() is not None:
                    raise SystemExit(f"a worker exited with {p.returncode}: see {self.dir}")
            time.sleep(0.1)
        raise SystemExit(f"{n} workers did not register within 30 s: see {self.dir}")

    def stop(self):
        # Workers first (they drain), then the coordinator.
        for p in self.procs[1:] + self.procs[:1]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def timed(argv, env, cwd=None):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"{argv} failed with {p.returncode}")
    return dt


def spans(events, slots):
    """(makespan, LB, submit-to-first-start) of a shoal run's events."""
    submitted, attempts = None, []
    with open(events) as f:
        for line in f:
            ev = json.loads(line)
            if ev["type"] == "run_started":
                submitted = ev["start"]
            elif ev["type"] == "attempt_finished":
                attempts.append((ev["start"], ev["end"]))
    if not attempts:
        raise SystemExit(f"{events}: no attempts")
    first = min(s for s, _ in attempts)
    makespan = max(e for _, e in attempts) - first
    walls = [e - s for s, e in attempts]
    lb = max(sum(walls) / slots, max(walls))
    return makespan, lb, first - submitted if submitted is not None else float("nan")


def bench_suite(shoal, work, name, source, a, env):
    """Times every runner on one suite; returns rows for the report."""
    runners = {}  # label -> (argv, cwd, slots or None, events or None)
    fleets = []
    j = str(a.slots)

    def copy(label):
        d = os.path.join(work, f"{name}-{label}")
        shutil.copytree(source, d, ignore=shutil.ignore_patterns(".shoal", "__pycache__", ".pytest_cache"))
        return d

    try:
        for n in a.workers:
            fleet = Fleet(shoal, work, f"{name}-fleet-{n}", n, a.slots, env)
            fleets.append(fleet)
            d = copy(f"w{n}")
            events = os.path.join(work, f"{name}-w{n}.jsonl")
            label = f"shoal run --server: {n} worker{'s' if n > 1 else ''} x {a.slots} slots"
            runners[label] = ([shoal, "-C", d, "run", "--server", fleet.url, "--json", events, "--color", "never"],
                              d, n * a.slots, events)
        d = copy("local")
        events = os.path.join(work, f"{name}-local.jsonl")
        runners[f"shoal run -j {j} (local)"] = ([shoal, "-C", d, "run", "-j", j, "--json", events, "--color", "never"],
                                               d, a.slots, events)
        py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        d = copy("pytest")
        runners["pytest (serial)"] = (py, d, 1, None)
        runners[f"pytest-xdist -n {j}"] = (py + ["-n", j], d, a.slots, None)

        # Warm shoal: history, worker caches, discovery cache.
        for label, (argv, cwd, _, _) in runners.items():
            if label.startswith("shoal"):
                timed(argv, env, cwd)
        times = {k: [] for k in runners}
        measured = {k: [] for k in runners}
        labels = list(runners)
        for r in range(a.runs):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for label in order:
                argv, cwd, slots, events = runners[label]
                times[label].append(timed(argv, env, cwd))
                if events:
                    measured[label].append(spans(events, slots))
            print(f"  {name}: round {r + 1}/{a.runs} done", file=sys.stderr, flush=True)
    finally:
        for fleet in fleets:
            fleet.stop()
    return [(label, runners[label][2], times[label], measured[label]) for label in labels]


def report(name, desc, rows):
    print(f"### {name}: {desc}\n")
    print("| runner | slots | median wall (s) | runs (s) | makespan (s) | LB (s) | submit to first start (s) |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for label, slots, ts, ms in rows:
        med = statistics.median(ts)
        cells = ["", "", ""]
        if ms:
            cells = [f"{statistics.median(m[i] for m in ms):.2f}" for i in range(3)]
        print(f"| {label} | {slots} | {med:.2f} | "
              f"{', '.join(f'{t:.2f}' for t in ts)} | {' | '.join(cells)} |")
    print(flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument("--slots", type=int, default=2, help="slots per worker (and -j / -n of the local runs)")
    ap.add_argument("--sleep", type=float, default=0.3, help="SHOAL_FIXTURE_SLEEP for the fixture suite")
    ap.add_argument("--suites", default="fixture,sleep200")
    ap.add_argument("--shoal", default=None, help="shoal binary (default: build with cargo --release)")
    a = ap.parse_args()
    a.workers = [int(w) for w in a.workers.split(",")]

    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=REPO, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        shoal = os.path.join(target, "release", "shoal")
    shoal = os.path.abspath(shoal)

    env = dict(os.environ, SHOAL_FIXTURE_SLEEP=str(a.sleep))
    env.pop("SHOAL_SERVER", None)
    env.pop("SHOAL_TOKEN", None)
    work = tempfile.mkdtemp(prefix="shoal-dist-bench-")
    print(f"## Distributed benchmark: median of {a.runs} rotating rounds, {a.slots} slots per worker, "
          f"{os.cpu_count()} CPUs\n", flush=True)
    try:
        for suite in a.suites.split(","):
            if suite == "fixture":
                source = os.path.join(REPO, "fixtures", "distributed-project")
                desc = f"fixtures/distributed-project, 30 tests x {a.sleep} s sleep"
            elif suite == "sleep200":
                source = os.path.join(work, "sleep200-src")
                gen_sleep_suite(source, 200, 0.1)
                desc = "200 generated tests x 0.1 s sleep"
            else:
                raise SystemExit(f"unknown suite {suite}")
            load = os.getloadavg()[0]
            rows = bench_suite(shoal, work, suite, source, a, env)
            print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after\n", flush=True)
            report(suite, desc, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
