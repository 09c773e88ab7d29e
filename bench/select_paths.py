#!/usr/bin/env python3
"""A selected directory of a large third-party test tree: shoal against pytest-xdist.

(Not bench/select.py: as a file beside the other bench scripts it would
shadow the standard library's `select`, which subprocess imports, wherever
`select` is not built into the interpreter, e.g. pyenv's builds.)

    bench/select_paths.py [--runs N] [--slots N] [--shoal PATH] [--only NAME] [--pytest-only]

For each suite below (pinned PyPI sdists that ship their tests, unpacked
under ~/.cache/shoal-bench/select/, each with its own venv of pinned test
dependencies there, venv-NAME, made on first use), with the venv's bin first
on PATH for both tools:

  1. removes the project's .shoal/ and times one `shoal run -j SLOTS PATH`
     (the first run: cold discovery cache, no history);
  2. times N rounds of `pytest -n SLOTS PATH` and `shoal run -j SLOTS PATH`,
     alternating which goes first, and prints the medians, shoal / xdist and
     shoal's makespan / LB;
  3. compares test ids and verdicts, round by round: pytest's (read by a
     small plugin, outcomes mapped as shoal maps them: an error in setup or
     teardown fails, xfail skips, a non-strict xpass passes) against shoal's
     JSON events;
  4. checks that `shoal list PATH` lists exactly the ids that
     `pytest --collect-only -q PATH` prints.

The SQLAlchemy check runs one serial `pytest test/base test/engine test/sql`
for the reference verdicts, then N consecutive `shoal run -j SLOTS` of the
same paths, keeping .shoal/ so history reorders the runs, and prints each
run's failures against the reference.

--pytest-only does everything that needs no shoal (fetch, venvs, collection
counts of the selected paths and of the whole project, one timed pytest run
per suite) so the shoal runs can follow once a shoal binary is built.
--shoal defaults to $CARGO_TARGET_DIR/release/shoal, else
~/.cache/shoal-target/release/shoal; this script never builds it.
"""
import argparse
import collections
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import makespan  # noqa: E402
from local import compare, report, timed  # noqa: E402

CACHE = os.path.expanduser("~/.cache/shoal-bench/select")


class Suite:
    def __init__(self, key, name, version, paths, pins, quiet=("-q",)):
        # key: this check's name (--only, report files); name: the PyPI project.
        self.key, self.name, self.version, self.paths, self.pins = key, name, version, list(paths), list(pins)
        # Options that make `pytest --collect-only` print one id a line
        # (verbosity -1): one more -q where the project's addopts add -v.
        self.quiet = list(quiet)
        self.root = os.path.join(CACHE, f"{name}-{version}")
        self.venv = os.path.join(CACHE, f"venv-{name}")
        self.python = os.path.join(self.venv, "bin", "python")

    @property
    def label(self):
        return f"{self.name} {self.version}: {' '.join(self.paths)}"


# Test dependencies: the pins are what pip resolved for each project's own
# test requirements (its pyproject/requirements files) with Python 3.11.
COMMON = ["execnet==2.1.2", "iniconfig==2.3.1", "packaging==26.4", "pluggy==1.7.0", "Pygments==2.21.0",
          "pytest==9.2.0", "pytest-xdist==3.8.0"]
SQLA_PINS = COMMON + ["typing_extensions==4.16.0"]
SUITES = [
    # sympy 1.14.0 (testpaths: sympy, doc/src; addopts: not slow).
    Suite("sympy", "sympy", "1.14.0", ["sympy/simplify"],
          COMMON + ["mpmath==1.3.0", "hypothesis==6.170.29", "sortedcontainers==2.4.0"]),
    # networkx 3.6.1 with its [default] and [test] extras (numpy, scipy, ...).
    # algorithms/flow (92 tests) runs in well under 10 s under -n 2 on a quiet
    # machine; algorithms/approximation has about twice its work.
    Suite("networkx", "networkx", "3.6.1", ["networkx/algorithms/approximation"],
          COMMON + ["numpy==2.4.6", "scipy==1.17.1", "matplotlib==3.11.2", "pandas==3.1.2", "contourpy==1.3.3",
                    "cycler==0.12.1", "fonttools==4.69.1", "kiwisolver==1.5.1", "pillow==13.0.0",
                    "pyparsing==3.3.3", "python-dateutil==4.0.0", "tzdata==2026.6"]),
    # SQLAlchemy 2.1.9 runs from its lib/ (its test/conftest.py puts it on
    # sys.path; pure Python: the optional Cython extensions are not built), on
    # the default SQLite. Its addopts add -v, hence -qq for a -q listing.
    Suite("sqlalchemy-orm", "sqlalchemy", "2.1.9", ["test/orm/inheritance"], SQLA_PINS, quiet=("-qq",)),
]
# Not Sphinx 9.0.4 (tests/test_domains, 299 of 2,420): its tests share
# build directories and sys.path changes within a process, so verdicts depend
# on how tests are spread over processes (test_domain_cpp_build_semicolon
# fails alone and under some xdist splits), which would blur the comparison.

# Several paths at once, run repeatedly with history (same sdist and venv).
SQLA = Suite("sqlalchemy", "sqlalchemy", "2.1.9", ["test/base", "test/engine", "test/sql"], SQLA_PINS,
             quiet=("-qq",))

# Records every test's verdict the way shoal maps pytest's reports; written
# by the controlling process only (not by xdist's workers).
PLUGIN = '''\
import json
import os

_verdicts = {}


def pytest_runtest_logreport(report):
    v = _verdicts.get(report.nodeid, "pass")
    if report.failed:
        v = "fail" if report.when == "call" else "error"
    elif report.skipped and v == "pass":
        v = "skip"
    _verdicts[report.nodeid] = v


def pytest_sessionfinish(session):
    path = os.environ.get("SHOAL_BENCH_VERDICTS")
    if path and not hasattr(session.config, "workerinput"):
        with open(path, "w") as f:
            json.dump(_verdicts, f)
'''
PLUGIN_DIR = os.path.join(CACHE, "plugin")


def fetch(s):
    """The sdist, downloaded with pip once and unpacked once."""
    if os.path.isdir(s.root):
        return
    os.makedirs(CACHE, exist_ok=True)
    sdist = os.path.join(CACHE, f"{s.name}-{s.version}.tar.gz")
    if not os.path.exists(sdist):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", s.name, "-q",
                        "-d", CACHE, f"{s.name}=={s.version}"], check=True)
    if not os.path.exists(sdist):
        raise SystemExit(f"pip downloaded no {sdist}")
    with tarfile.open(sdist) as t:
        t.extractall(CACHE, filter="data")
    if not os.path.isdir(s.root):
        raise SystemExit(f"{sdist} did not unpack to {s.root}")


def ensure_venv(s):
    """The suite's venv with exactly its pins (reinstalled when they change)."""
    marker = os.path.join(s.venv, "shoal-bench-pins.txt")
    want = "\n".join(s.pins) + "\n"
    if os.path.exists(marker) and open(marker).read() == want:
        return
    if not os.path.exists(s.python):
        subprocess.run([sys.executable, "-m", "venv", s.venv], check=True)
    subprocess.run([s.python, "-m", "pip", "install", "-q", *s.pins], check=True)
    with open(os.path.join(s.venv, "freeze.txt"), "w") as f:
        subprocess.run([s.python, "-m", "pip", "freeze"], stdout=f, check=True)
    with open(marker, "w") as f:
        f.write(want)


def prepare(s):
    fetch(s)
    ensure_venv(s)
    os.makedirs(PLUGIN_DIR, exist_ok=True)
    plugin = os.path.join(PLUGIN_DIR, "shoal_bench_verdicts.py")
    if not os.path.exists(plugin) or open(plugin).read() != PLUGIN:
        with open(plugin, "w") as f:
            f.write(PLUGIN)
    # Explicit, so the projects that zero-config would not detect (networkx
    # has no pytest configuration at its root) run the same way.
    with open(os.path.join(s.root, "shoal.toml"), "w") as f:
        f.write(f'[suites.pytest]\nadapter = "pytest"\npython = "{s.python}"\n')


def env_for(s):
    """The venv's bin first on PATH, for both tools."""
    env = dict(os.environ)
    env["PATH"] = os.path.join(s.venv, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = s.venv
    env.pop("PYTHONHOME", None)
    return env


def pytest_argv(s, extra, verdicts):
    """pytest on the suite's paths, its verdicts written to `verdicts` (the
    plugin's variables set through env(1), so shoal's runs do not see them)."""
    path = os.pathsep.join(p for p in (PLUGIN_DIR, os.environ.get("PYTHONPATH")) if p)
    return ["env", f"PYTHONPATH={path}", f"SHOAL_BENCH_VERDICTS={verdicts}", s.python, "-m", "pytest", "-q",
            "-p", "no:cacheprovider", "-p", "shoal_bench_verdicts", *extra, *s.paths]


ID = re.compile(r"^[^\s=]\S*::")


def collect_ids(s, paths):
    """The ids `pytest --collect-only -q PATHS` prints (the whole project: no paths)."""
    argv = [s.python, "-m", "pytest", "--collect-only", *s.quiet, "-p", "no:cacheprovider", *paths]
    p = subprocess.run(argv, cwd=s.root, env=env_for(s), capture_output=True, text=True)
    if p.returncode not in (0, 5):
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"{argv} failed with {p.returncode}")
    ids = []
    for line in p.stdout.splitlines():
        if ids and not line.strip():
            break
        if ids or ID.match(line):
            ids.append(line)
    return ids


def whole_count(s):
    """Tests the whole project collects (cached: sympy's takes minutes)."""
    path = os.path.join(CACHE, "whole-counts.json")
    counts = json.load(open(path)) if os.path.exists(path) else {}
    key = f"{s.name}-{s.version}"
    if key not in counts:
        counts[key] = len(collect_ids(s, []))
        with open(path, "w") as f:
            json.dump(counts, f, indent=1)
    return counts[key]


def shoal_verdicts(events):
    out = {}
    with open(events) as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("type") == "attempt_finished" and "final_status" in ev:
                st = ev["final_status"]
                out[ev["test"]] = {"passed": "pass", "failed": "fail", "skipped": "skip"}.get(st, st)
    return out


def same(pytest, shoal):
    """(equal, description): ids and verdicts (pytest's errors count as failures, as in shoal)."""
    p = {k: ("fail" if v == "error" else v) for k, v in pytest.items()}
    missing = sorted(set(p) - set(shoal))
    extra = sorted(set(shoal) - set(p))
    differ = sorted(k for k in set(p) & set(shoal) if p[k] != shoal[k])
    if not (missing or extra or differ):
        return True, "same ids and verdicts (" + tally(shoal) + ")"
    parts = []
    if missing:
        parts.append(f"{len(missing)} only in pytest, e.g. {missing[:3]}")
    if extra:
        parts.append(f"{len(extra)} only in shoal, e.g. {extra[:3]}")
    if differ:
        parts.append(f"{len(differ)} verdicts differ, e.g. " +
                     ", ".join(f"{k}: pytest {pytest[k]}, shoal {shoal[k]}" for k in differ[:3]))
    return False, "; ".join(parts)


def tally(verdicts):
    c = collections.Counter(verdicts.values())
    return ", ".join(f"{n} {v}" for v, n in sorted(c.items()))


def run_measured(argv, cwd, env, ok=(0, 1)):
    """Wall and CPU (user+sys of the children) seconds of argv."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in ok:
        sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"{argv} failed with {p.returncode}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def load():
    return "load %.1f" % os.getloadavg()[0]


def sizes(s):
    selected = len(collect_ids(s, s.paths))
    whole = whole_count(s)
    return (f"{selected} tests selected of {whole} the whole project collects ({100 * selected / whole:.1f} %); "
            f"venv {s.venv} (pins in {s.venv}/freeze.txt)")


def header(s):
    print(f"### {s.label}\n\n{sizes(s)}\n", flush=True)


def pytest_only(s, slots):
    """One timed `pytest -n SLOTS PATH` (serial for SQLAlchemy) and its verdicts."""
    header(s)
    verdicts = os.path.join(CACHE, f"{s.key}-pytest-verdicts.json")
    extra = [] if s is SQLA else ["-n", str(slots)]
    what = "pytest (serial)" if s is SQLA else f"pytest -n {slots}"
    before = load()
    wall, cpu = run_measured(pytest_argv(s, extra, verdicts), s.root, env_for(s))
    v = json.load(open(verdicts))
    print(f"{what}: {wall:.2f} s wall, {cpu:.2f} s CPU ({before} before, {load()} after); {tally(v)}")
    bad = sorted(k for k, x in v.items() if x in ("fail", "error"))
    for k in bad:
        print(f"  {v[k]}: {k}")
    print(flush=True)


def timed_suite(s, shoal, runs, slots):
    size = sizes(s)
    j = str(slots)
    env = env_for(s)
    verdicts = os.path.join(CACHE, f"{s.key}-pytest-verdicts.json")
    events = os.path.join(CACHE, f"{s.key}-events.jsonl")
    xdist = f"pytest -n {j}"
    sh = f"shoal run -j {j}"
    shoal_argv = [shoal, "-C", s.root, "run", "-j", j, "--json", events, "--color", "never", *s.paths]
    shutil.rmtree(os.path.join(s.root, ".shoal"), ignore_errors=True)
    before = load()
    cold = timed(shoal_argv, s.root, env, ok=(0, 1))
    cold_verdicts = shoal_verdicts(events)
    got = {xdist: [], sh: []}

    def after(k, r):
        got[k].append(json.load(open(verdicts)) if k == xdist else shoal_verdicts(events))

    tools = {xdist: pytest_argv(s, ["-n", j], verdicts), sh: shoal_argv}
    times, spans = compare(tools, s.root, events, runs, env, warm=False, ok=(0, 1), after=after)
    report(f"{s.label}", times, spans, xdist)
    print(f"{size}; {runs} alternating rounds, {before} at the start, {load()} at the end")
    print(f"first run (cold discovery cache, no history): shoal {cold:.2f} s "
          f"({cold / statistics.median(times[xdist]):.2f}x the median {xdist})")
    results = [same(got[xdist][0], cold_verdicts)] + [same(p, q) for p, q in zip(got[xdist], got[sh])]
    for i, (ok, text) in enumerate(results):
        print(f"- {'cold run' if i == 0 else f'round {i}'} vs {xdist} round {max(i, 1)}: {text}")
    print(flush=True)
    return all(ok for ok, _ in results)


def list_check(s, shoal):
    want = collect_ids(s, s.paths)
    p = subprocess.run([shoal, "-C", s.root, "list", *s.paths, "--format", "json"], cwd=s.root, env=env_for(s),
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"- `shoal list {' '.join(s.paths)}` ({s.key}): exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return False
    got = [t["test"] for t in json.loads(p.stdout)]
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    ok = not missing and not extra and len(got) == len(want)
    print(f"- `shoal list {' '.join(s.paths)}` ({s.key}): {len(got)} ids, `pytest --collect-only "
          f"{' '.join(s.quiet)}`: {len(want)}: {'equal' if ok else 'DIFFERENT'}"
          + (f"; only pytest: {missing[:3]}" if missing else "") + (f"; only shoal: {extra[:3]}" if extra else ""))
    return ok


def sqla_runs(s, shoal, runs, slots):
    header(s)
    j = str(slots)
    verdicts = os.path.join(CACHE, f"{s.key}-pytest-verdicts.json")
    events = os.path.join(CACHE, f"{s.key}-events.jsonl")
    wall, _ = run_measured(pytest_argv(s, [], verdicts), s.root, env_for(s))
    ref = json.load(open(verdicts))
    ref_bad = sorted(k for k, x in ref.items() if x in ("fail", "error"))
    print(f"serial pytest {' '.join(s.paths)}: {wall:.2f} s, {tally(ref)}")
    for k in ref_bad:
        print(f"  {ref[k]}: {k}")
    shutil.rmtree(os.path.join(s.root, ".shoal"), ignore_errors=True)
    green = True
    print(f"\n| run | shoal run -j {j} wall (s) | verdicts | failed | vs serial pytest |")
    print("| ---: | ---: | --- | --- | --- |")
    for r in range(runs):
        t = timed([shoal, "-C", s.root, "run", "-j", j, "--json", events, "--color", "never", *s.paths],
                  s.root, env_for(s), ok=(0, 1))
        v = shoal_verdicts(events)
        ok, text = same(ref, v)
        green &= ok
        failed = sorted(k for k, x in v.items() if x != "pass" and x != "skip")
        print(f"| {r + 1} | {t:.2f} | {tally(v)} | {', '.join(failed[:5]) or '-'}"
              f"{' ...' if len(failed) > 5 else ''} | {text if not ok else 'same'} |", flush=True)
    print()
    return green


def default_shoal():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/shoal-target")
    return os.path.join(target, "release", "shoal")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--shoal", default=None, help="shoal binary (default: $CARGO_TARGET_DIR/release/shoal, "
                    "else ~/.cache/shoal-target/release/shoal)")
    ap.add_argument("--only", choices=[s.key for s in SUITES + [SQLA]], default=None)
    ap.add_argument("--pytest-only", action="store_true", help="fetch, install and time pytest only")
    a = ap.parse_args()
    suites = [s for s in SUITES + [SQLA] if a.only in (None, s.key)]
    shoal = os.path.abspath(a.shoal or default_shoal())
    if not a.pytest_only and not os.access(shoal, os.X_OK):
        raise SystemExit(f"no shoal binary at {shoal}: build it with `cargo build --release -p shoal` "
                         "(with CARGO_TARGET_DIR set as for .ci/run) or pass --shoal PATH")
    for s in suites:
        prepare(s)
    print(f"## Selected paths of third-party suites: {a.slots} slots"
          + ("" if a.pytest_only else f", median of {a.runs} alternating rounds") + "\n")
    if a.pytest_only:
        for s in suites:
            pytest_only(s, a.slots)
        return
    ok = True
    for s in suites:
        ok &= sqla_runs(s, shoal, a.runs, a.slots) if s is SQLA else timed_suite(s, shoal, a.runs, a.slots)
    print("### shoal list against pytest --collect-only\n")
    for s in suites:
        ok &= list_check(s, shoal)
    print(f"\n{'all ids and verdicts equal' if ok else 'MISMATCHES above'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
