#!/usr/bin/env python3
"""Makespan and lower bound of a shoal run from its JSON-lines events.

    makespan.py EVENTS.jsonl

makespan = last attempt end - first attempt start; LB = max(total/slots,
longest), where total sums the measured wall time (end - start) of every
attempt. Prints `makespan LB ratio`.
"""
import json
import sys


def analyse(path):
    slots, attempts = 1, []
    with open(path) as f:
        for line in f:
            ev = json.loads(line)
            if ev["type"] == "run_started":
                slots = ev["slots"]
            elif ev["type"] == "attempt_finished":
                attempts.append((ev["start"], ev["end"]))
    if not attempts:
        raise SystemExit(f"{path}: no attempts")
    makespan = max(e for _, e in attempts) - min(s for s, _ in attempts)
    walls = [e - s for s, e in attempts]
    lb = max(sum(walls) / slots, max(walls))
    return makespan, lb


if __name__ == "__main__":
    m, lb = analyse(sys.argv[1])
    print(f"{m:.3f} {lb:.3f} {m / lb:.3f}")
