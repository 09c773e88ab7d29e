#!/usr/bin/env python3
"""Container overhead: the same trivial pytest suite run by shoal on the host
(the process executor), in one container per slot and in a fresh container
per batch; and what per-slot services add to a run.

    bench/containers.py [--runs N] [--tests N] [--small-batch N] [--shoal PATH] [--quick]

Needs the Docker engine and `shoal-test/python:1` (scripts/test-images.sh).

Overhead variants, on one generated suite of --tests trivial tests
(bench/gen_suite.py --trivial), -j 2, each in its own copy of the suite:

  host                       process executor, a long-lived pytest per slot
  host, pytest per batch     process executor, `persistent = false`
  container per slot         `environment.image`, long-lived pytest per slot
  container per slot, pytest per batch
  container per batch        `isolation = "batch"` (a fresh container and
                             pytest per batch)
  ... and the two per-batch variants again with `max_batch = --small-batch`,
  which forces more, smaller batches: the slope between the two batchings
  is the cost of one more batch, free of the run's fixed costs.

Batches are counted, not assumed: the suite's conftest.py appends one line
per pytest process (host name, pid, collect-only or not, tests run) to a
file in the project, which is mounted into the containers; with a fresh
pytest per batch, processes that ran tests = batches. Every run's `--json`
events are checked (all tests passed) and give its run id.

Service variants, on a suite of 2 trivial tests on the host, -j 2: no
services, 1 and 3 services (`shoal-test/python:1` running
`python3 -m http.server 8080`, `ready = { http = "/", port = 8080 }`), so
each run starts 2 or 6 service containers (per slot, on a private network).
The reference is the engine alone: `docker run -d` of the same service on a
fixed IP, then an HTTP GET every 10 ms until it answers, then `docker rm -f`.

Each variant runs twice untimed (history, discovery cache), then N rounds in
rotating order; medians and every run are printed as markdown, with each
run's wall time split (medians) into: process start to the first test's
start, the tests (first start to last end), and last end to process exit.
At the end the script looks for containers and networks left by its runs.
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from local import timed  # noqa: E402

IMAGE = "shoal-test/python:1"
PROCS = ".procs.log"

# One line per pytest process, written when it ends (not per test, to add
# nothing to the tests themselves).
CONFTEST = '''\
import os
import socket

_ran = 0


def pytest_runtest_logfinish(nodeid, location):
    global _ran
    _ran += 1


def pytest_unconfigure(config):
    kind = "collect" if config.option.collectonly else "run"
    line = f"{socket.gethostname()} {os.getpid()} {kind} {_ran}\\n"
    with open(os.path.join(os.path.dirname(__file__), "..", "%s"), "a") as f:
        f.write(line)
''' % PROCS

SERVICE = '''
[suites.pytest.services.web{i}]
image = "{image}"
command = ["python3", "-m", "http.server", "8080"]
ready = {{ http = "/", port = 8080 }}
'''


def toml(env=None, persistent=True, max_batch=None, services=0):
    s = '[suites.pytest]\nadapter = "pytest"\n'
    if not persistent:
        s += "persistent = false\n"
    if max_batch is not None:
        s += f"max_batch = {max_batch}\n"
    if env is not None:
        s += f'\n[suites.pytest.environment]\nimage = "{IMAGE}"\n'
        if env == "batch":
            s += 'isolation = "batch"\n'
    for i in range(services):
        s += SERVICE.format(i=i, image=IMAGE)
    return s


def make_project(src, dst, config):
    shutil.copytree(src, dst)
    with open(os.path.join(dst, "tests", "conftest.py"), "w") as f:
        f.write(CONFTEST)
    with open(os.path.join(dst, "shoal.toml"), "w") as f:
        f.write(config)


class Variant:
    def __init__(self, name, root, shoal, events):
        self.name = name
        self.root = root
        self.events = events
        self.argv = [shoal, "-C", root, "run", "-j", "2", "--color", "never", "--json", events]
        self.times = []
        self.batches = []  # pytest processes that ran tests, per timed run
        self.collects = []  # collect-only pytest processes, per timed run
        self.run_ids = []
        # (process start → first test starts, first start → last test ends,
        # last end → process exit), from the events, per timed run
        self.phases = []

    def run(self, expect, timed_run=True):
        procs = os.path.join(self.root, PROCS)
        if os.path.exists(procs):
            os.remove(procs)
        t0 = time.time()
        wall = timed(self.argv, self.root)
        t1 = time.time()
        run_id, passed, first, last = None, None, float("inf"), 0.0
        with open(self.events) as f:
            for line in f:
                e = json.loads(line)
                if e["type"] == "run_started":
                    run_id = e["run_id"]
                elif e["type"] == "attempt_started":
                    first = min(first, e["start"])
                elif e["type"] == "attempt_finished":
                    last = max(last, e["end"])
                elif e["type"] == "run_finished":
                    passed = e["counts"]["passed"]
        if passed != expect:
            raise SystemExit(f"{self.name}: {passed} of {expect} tests passed (events: {self.events})")
        self.run_ids.append(run_id)
        lines = []
        if os.path.exists(procs):
            with open(procs) as f:
                lines = [ln.split() for ln in f if ln.strip()]
        ran = [ln for ln in lines if ln[2] == "run"]
        if sum(int(ln[3]) for ln in ran) != expect:
            raise SystemExit(f"{self.name}: pytest processes report {sum(int(ln[3]) for ln in ran)} "
                             f"tests, expected {expect}: {lines}")
        if timed_run:
            self.times.append(wall)
            self.phases.append((first - t0, last - first, t1 - last))
            self.batches.append(len(ran))
            self.collects.append(len(lines) - len(ran))


def rounds(variants, runs, expect, warm):
    for v in variants:
        for _ in range(warm):
            v.run(expect, timed_run=False)
    for r in range(runs):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            v.run(expect)


def docker(*args, check=True):
    return subprocess.run(["docker", *args], check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True).stdout.strip()


def service_reference(runs):
    """`docker run -d` of the service on a fixed IP, HTTP GET every 10 ms
    until it answers, `docker rm -f`: (started, ready, removed) seconds."""
    net = f"shoal-bench-{os.getpid()}"
    subnet = "172.31.250.0/24"
    made = subprocess.run(["docker", "network", "create", "--subnet", subnet, net],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if made.returncode != 0:
        raise SystemExit(f"cannot create the reference network {net} on {subnet} "
                         f"(does another network use that subnet?): {made.stderr.strip()}")
    out = []
    names = []
    try:
        for i in range(runs):
            name = f"{net}-{i}"
            names.append(name)
            t0 = time.perf_counter()
            docker("run", "-d", "--name", name, "--network", net, "--ip", "172.31.250.10",
                   IMAGE, "python3", "-m", "http.server", "8080")
            started = time.perf_counter() - t0
            while True:
                try:
                    with urllib.request.urlopen("http://172.31.250.10:8080/", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 30:
                    raise SystemExit("the reference service did not answer within 30 s")
                time.sleep(0.01)
            ready = time.perf_counter() - t0
            t1 = time.perf_counter()
            docker("rm", "-f", name)
            out.append((started, ready, time.perf_counter() - t1))
    finally:
        # After a failure the last container may still be there.
        docker("rm", "-f", *names, check=False)
        docker("network", "rm", net, check=False)
    return out


def fmt(ts):
    return ", ".join(f"{t:.2f}" for t in ts)


def med(ts):
    return statistics.median(ts)


def phases(v):
    return " | ".join(f"{med([p[i] for p in v.phases]):.2f}" for i in range(3))


def counts(xs):
    lo, hi = min(xs), max(xs)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=500)
    ap.add_argument("--small-batch", type=int, default=10, help="max_batch of the many-batches variants")
    ap.add_argument("--shoal", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 100 tests, 1 warm-up")
    ap.add_argument("--services-only", action="store_true", help="only the service start-up variants")
    ap.add_argument("--baseline", default=None,
                    help="another shoal binary: the service variants also run with it, in the same rounds")
    a = ap.parse_args()
    warm = 2
    if a.quick:
        a.runs, a.tests, warm = 1, 100, 1
    repo = os.path.dirname(HERE)
    shoal = a.shoal
    if shoal is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shoal"], cwd=repo, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
        shoal = os.path.join(target, "release", "shoal")
    subprocess.run(["bash", os.path.join(repo, "scripts", "test-images.sh")], check=True, stdout=subprocess.DEVNULL)
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="shoal-containers-")
    all_runs = []
    try:
        suite = os.path.join(work, "suite")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_suite.py"), "pytest", suite,
                        "--tests", str(a.tests), "--trivial", "--per-file", "50"], check=True)
        small = os.path.join(work, "small")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_suite.py"), "pytest", small,
                        "--tests", "2", "--trivial"], check=True)

        def variant(name, src, key, config):
            root = os.path.join(work, key)
            make_project(src, root, config)
            v = Variant(name, root, shoal, os.path.join(work, f"{key}.jsonl"))
            all_runs.append(v)
            return v

        mb = a.small_batch
        overhead = [] if a.services_only else [
            variant("host", suite, "host", toml()),
            variant("host, pytest per batch", suite, "host-pb", toml(persistent=False)),
            variant("container per slot", suite, "slot", toml(env="slot")),
            variant("container per slot, pytest per batch", suite, "slot-pb", toml(env="slot", persistent=False)),
            variant("container per batch", suite, "batch", toml(env="batch")),
            variant(f"host, pytest per batch, max_batch {mb}", suite, "host-pb-small",
                    toml(persistent=False, max_batch=mb)),
            variant(f"container per batch, max_batch {mb}", suite, "batch-small",
                    toml(env="batch", max_batch=mb)),
        ]
        services = [
            variant("no services", small, "svc0", toml()),
            variant("1 service per slot", small, "svc1", toml(services=1)),
            variant("3 services per slot", small, "svc3", toml(services=3)),
        ]
        if a.baseline:
            for n in (1, 3):
                root = os.path.join(work, f"svc{n}-base")
                make_project(small, root, toml(services=n))
                v = Variant(f"{n} service(s) per slot, baseline", root, a.baseline,
                            os.path.join(work, f"svc{n}-base.jsonl"))
                all_runs.append(v)
                services.append(v)
        if overhead:
            rounds(overhead, a.runs, a.tests, warm)
        rounds(services, a.runs, 2, warm)
        reference = service_reference(a.runs)
        start = [timed(["docker", "run", "--rm", IMAGE, "true"], work) for _ in range(a.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    ids = {i for v in all_runs for i in v.run_ids}
    leftovers = [ln for ln in docker("ps", "-a", "--filter", "label=org.shoal.run",
                                     "--format", '{{.Names}} {{.Label "org.shoal.run"}}').splitlines()
                 if ln.split()[-1] in ids]
    leftovers += [ln for ln in docker("network", "ls", "--filter", "label=org.shoal.run",
                                      "--format", '{{.Name}} {{.Label "org.shoal.run"}}').splitlines()
                  if ln.split()[-1] in ids]

    print(f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in load_after)}\n")
    if overhead:
        print(f"### {a.tests} trivial pytest tests, -j 2, median of {a.runs} rotating rounds\n")
        print("| variant | pytest processes running tests | median wall (s) | over host (s) "
              "| to first test (s) | tests (s) | after last test (s) | runs (s) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        host = med(overhead[0].times)
        for v in overhead:
            print(f"| {v.name} | {counts(v.batches)} | {med(v.times):.2f} | {med(v.times) - host:+.2f} | {phases(v)} "
                  f"| {fmt(v.times)} |")
        collects = sum(sum(v.collects) for v in overhead)
        print(f"\n(collect-only pytest processes during timed runs: {collects}; the discovery cache was warm)\n")

        by = {v.name: v for v in overhead}
        slot, batch = by["container per slot"], by["container per batch"]
        print(f"- container per slot over host: {med(slot.times) - host:+.2f} s per run, "
              f"{(med(slot.times) - host) / a.tests * 1000:+.2f} ms per test")
        print(f"- container per batch over host: {med(batch.times) - host:+.2f} s per run, "
              f"{(med(batch.times) - host) / a.tests * 1000:+.2f} ms per test, "
              f"{(med(batch.times) - host) / med(batch.batches):+.3f} s per batch ({med(batch.batches):g} batches)")
        pb = by["host, pytest per batch"]
        print(f"- container per batch over host with a pytest per batch: {med(batch.times) - med(pb.times):+.2f} s per run")
        for few, many in ((pb, by[f"host, pytest per batch, max_batch {mb}"]),
                          (batch, by[f"container per batch, max_batch {mb}"])):
            db = med(many.batches) - med(few.batches)
            if db:
                print(f"- {few.name}: one more batch costs {(med(many.times) - med(few.times)) / db:.3f} s of wall time "
                      f"({med(few.batches):g} → {med(many.batches):g} batches, "
                      f"{med(few.times):.2f} → {med(many.times):.2f} s)")
        print()

    print(f"### Services: 2 trivial tests on the host, -j 2, median of {a.runs} rotating rounds\n")
    print("| variant | service containers per run | median wall (s) | added (s) "
          "| to first test (s) | tests (s) | after last test (s) | runs (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    none = med(services[0].times)
    for v, n in zip(services, (0, 2, 6, 2, 6)):
        print(f"| {v.name} | {n} | {med(v.times):.2f} | {med(v.times) - none:+.2f} | {phases(v)} | {fmt(v.times)} |")
    print(f"\nReference, the engine alone, one service, {a.runs} runs:\n")
    print("| step | median (s) | runs (s) |")
    print("| --- | ---: | --- |")
    print(f"| `docker run -d` returns | {med([r[0] for r in reference]):.2f} | {fmt([r[0] for r in reference])} |")
    print(f"| start to first HTTP 200 (10 ms polls) | {med([r[1] for r in reference]):.2f} | "
          f"{fmt([r[1] for r in reference])} |")
    print(f"| `docker rm -f` | {med([r[2] for r in reference]):.2f} | {fmt([r[2] for r in reference])} |")
    print(f"| `docker run --rm {IMAGE} true` | {med(start):.2f} | {fmt(start)} |")
    print()
    if leftovers:
        print("**Left behind by these runs:**\n")
        for ln in leftovers:
            print(f"- {ln}")
    else:
        print(f"No container or network of these {len(ids)} runs was left behind.")


if __name__ == "__main__":
    main()
