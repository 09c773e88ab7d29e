#!/usr/bin/env python3
"""Checks the deployment files in deploy/ without a cluster or a container engine.

- every YAML file parses (PyYAML) and, when the `kubernetes-validate` package
  is installed, each manifest matches the Kubernetes schema (strict);
- the manifests agree with each other: selectors match pod labels, the
  Service targets the coordinator's named port, every Secret referenced has an
  example, the coordinator is a single Recreate replica, and workers' grace
  periods outlast their --drain-timeout;
- the systemd units pass `systemd-analyze verify` when it is available (with
  the `shoal` binary path replaced by an executable that exists here), the
  worker unit's TimeoutStopSec outlasts its --drain-timeout, and a worker
  template unit gives each instance its own --name (with %i) or none;
- the Containerfile's entry point is shoal.

Usage: python3 deploy/check.py   (exit status 0 when every check passes)
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES: list[str] = []


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"FAIL {msg}")


def ok(msg: str) -> None:
    print(f"ok   {msg}")


def seconds(text: str) -> float:
    """'60s', '2m', '1m30s', '90' -> seconds."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+)(ms|s|min|m|h)", text):
        if m.start() != pos:
            break
        n, unit = int(m.group(1)), m.group(2)
        total += n * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    return total


def flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_kubernetes() -> None:
    kdir = os.path.join(HERE, "kubernetes")
    objs: dict[tuple[str, str], dict] = {}
    files = sorted(glob.glob(os.path.join(kdir, "*.yaml")))
    if not files:
        fail("no manifests in deploy/kubernetes")
        return
    for path in files:
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{path}: {e}")
            continue
        ok(f"{os.path.relpath(path, HERE)} parses ({len(docs)} document(s))")
        for d in docs:
            if "namespace" in d.get("metadata", {}):
                fail(f"{path}: sets a namespace; the manifests must be namespace-agnostic")
            objs[(d["kind"], d.get("metadata", {}).get("name", ""))] = d

    try:
        import kubernetes_validate  # noqa: F401

        schema = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
            + [p for p in files if not p.endswith("kustomization.yaml")],
            capture_output=True,
            text=True,
        )
        if schema.returncode == 0:
            ok("manifests match the Kubernetes schema (kubernetes-validate --strict)")
        else:
            fail("kubernetes-validate: " + (schema.stdout + schema.stderr).strip())
    except ImportError:
        print("skip schema validation: the kubernetes-validate package is not installed")

    kust = objs.get(("Kustomization", ""))
    if kust:
        for res in kust.get("resources", []):
            if not os.path.exists(os.path.join(kdir, res)):
                fail(f"kustomization lists a missing file: {res}")

    coord = objs.get(("Deployment", "shoal-coordinator"))
    worker = objs.get(("Deployment", "shoal-worker"))
    svc = objs.get(("Service", "shoal-coordinator"))
    if not (coord and worker and svc):
        fail("expected Deployments shoal-coordinator and shoal-worker and Service shoal-coordinator")
        return

    for dep in (coord, worker):
        name = dep["metadata"]["name"]
        sel = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            fail(f"{name}: selector {sel} does not match pod labels {labels}")
        else:
            ok(f"{name}: selector matches its pod labels")
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                secret = objs.get(("Secret", ref["name"]))
                if secret is None or ref["key"] not in secret.get("stringData", {}):
                    fail(f"{name}: env {env['name']} uses Secret {ref['name']}/{ref['key']}, which has no example")
        pvcs = [
            v["persistentVolumeClaim"]["claimName"]
            for v in dep["spec"]["template"]["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        ]
        for claim in pvcs:
            if ("PersistentVolumeClaim", claim) not in objs:
                fail(f"{name}: volume claims {claim}, which is not defined")

    spec = coord["spec"]
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        fail("coordinator must be replicas 1 with strategy Recreate (one coordinator per store)")
    else:
        ok("coordinator: one replica, Recreate")
    cc = spec["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in cc.get("ports", [])}
    listen = flag(cc["args"], "--listen") or ""
    for probe in ("readinessProbe", "livenessProbe"):
        port = cc.get(probe, {}).get("tcpSocket", {}).get("port")
        if port is None:
            fail(f"coordinator: {probe} is not a TCP socket probe")
        elif ports.get(port, port) != 7878:
            fail(f"coordinator: {probe} probes {port}, not 7878")
    if not listen.endswith(":7878"):
        fail(f"coordinator: --listen {listen!r} is not port 7878")
    sel = svc["spec"]["selector"]
    labels = spec["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in sel.items()):
        fail("Service selector does not select the coordinator's pods")
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        if ports.get(target, target) != 7878 or p["port"] != 7878:
            fail(f"Service port {p} does not lead to the coordinator's 7878")
    ok("Service shoal-coordinator:7878 reaches the coordinator's port")

    wspec = worker["spec"]["template"]["spec"]
    wc = wspec["containers"][0]
    drain = seconds(flag(wc["args"], "--drain-timeout") or "60s")
    grace = wspec.get("terminationGracePeriodSeconds", 30)
    if grace <= drain:
        fail(f"worker: terminationGracePeriodSeconds {grace} must exceed --drain-timeout {drain:g}s")
    else:
        ok(f"worker: grace period {grace}s outlasts the {drain:g}s drain")
    server = next((e.get("value") for e in wc.get("env", []) if e["name"] == "SHOAL_SERVER"), "")
    if server != f"http://{svc['metadata']['name']}:7878":
        fail(f"worker: SHOAL_SERVER {server!r} does not name the Service")
    if "requests" not in wc.get("resources", {}) or "limits" not in wc.get("resources", {}):
        fail("worker: resources need requests and limits")


def unit_options(path: str) -> dict[str, list[str]]:
    """Key -> values of a systemd unit (continuation lines joined)."""
    opts: dict[str, list[str]] = {}
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        opts.setdefault(k.strip(), []).append(v.strip())
    return opts


def check_systemd() -> None:
    sdir = os.path.join(HERE, "systemd")
    units = sorted(glob.glob(os.path.join(sdir, "*.service")))
    if len(units) != 2:
        fail(f"expected two units in deploy/systemd, found {len(units)}")
        return
    for path in units:
        o = unit_options(path)
        name = os.path.basename(path)
        exec_start = o.get("ExecStart", [""])[-1]
        if "SHOAL_TOKEN" in exec_start or "--token" in exec_start:
            fail(f"{name}: the token must come from the EnvironmentFile, not the command line")
        for key, want in (("Restart", "always"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes")):
            if o.get(key, [None])[-1] != want:
                fail(f"{name}: {key} should be {want}")
        if not o.get("User") or o["User"][-1] in ("root", "0"):
            fail(f"{name}: needs a dedicated User=")
        if not o.get("EnvironmentFile"):
            fail(f"{name}: needs an EnvironmentFile")
        if "worker" in name:
            if o.get("ProtectSystem", [""])[-1] == "strict":
                fail(f"{name}: ProtectSystem=strict stops tests from writing files")
            if o.get("KillMode", [""])[-1] != "mixed":
                fail(f"{name}: KillMode=mixed lets the worker drain before its tests are killed")
            args = exec_start.split()
            # Every instance of a template unit runs its own worker: a fixed
            # --name would be refused by all but the first on the host.
            wname = flag(args, "--name")
            if "@" in name and wname is not None and "%i" not in wname and "%I" not in wname:
                fail(f"{name}: --name {wname} is the same for every instance; use %i in it or leave it out")
            drain = seconds(flag(args, "--drain-timeout") or "60s")
            stop = seconds(o.get("TimeoutStopSec", ["90s"])[-1])
            if stop <= drain:
                fail(f"{name}: TimeoutStopSec {stop:g}s must exceed --drain-timeout {drain:g}s")
            else:
                ok(f"{name}: TimeoutStopSec {stop:g}s outlasts the {drain:g}s drain")
        ok(f"{name}: restart, user, environment file and hardening as required")

    env = os.path.join(sdir, "shoal.env.example")
    with open(env) as f:
        text = f.read()
    for var in ("SHOAL_TOKEN", "SHOAL_STORE", "SHOAL_SERVER"):
        if not re.search(rf"^#?{var}=", text, re.M):
            fail(f"shoal.env.example: no {var} placeholder")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("skip systemd-analyze verify: not installed here")
        return
    stand_in = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryDirectory() as tmp:
        for path in units:
            with open(path) as f:
                text = f.read().replace("/usr/local/bin/shoal", stand_in)
            with open(os.path.join(tmp, os.path.basename(path)), "w") as f:
                f.write(text)
        res = subprocess.run(
            [analyze, "verify"] + sorted(glob.glob(os.path.join(tmp, "*.service"))),
            capture_output=True,
            text=True,
        )
        if res.returncode != 0 or res.stderr.strip():
            fail("systemd-analyze verify: " + (res.stdout + res.stderr).strip())
        else:
            ok("systemd-analyze verify passes (shoal's path replaced by a stand-in executable)")


def check_container() -> None:
    path = os.path.join(HERE, "container", "Containerfile")
    with open(path) as f:
        text = f.read()
    entry = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    if not entry or yaml.safe_load(entry[-1])[-1] != "shoal":
        fail("Containerfile: ENTRYPOINT must end in shoal")
    if not re.search(r"^USER\s+(?!root\b|0\b)\S+", text, re.M):
        fail("Containerfile: must switch to a non-root USER")
    if "cargo install --locked --path crates/shoal" not in text:
        fail("Containerfile: must build with cargo install --locked --path crates/shoal")
    ok("Containerfile: shoal entry point, non-root user, locked build")


def main() -> int:
    check_kubernetes()
    check_systemd()
    check_container()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("all deployment checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
