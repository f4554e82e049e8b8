#!/usr/bin/env python3
"""How often each test passes: run a set of tests N times and report every test's pass rate.

    python bench/flaky.py --runs 10 -m ros                                  # every ROS / DDS test
    python bench/flaky.py --runs 10 --fresh-clone src/clap_sim/test/test_closed_loop.py

Each run is one ``pytest`` process over the given paths (the project's own runner,
scripts/run_tests.sh, so domain ids, timeouts and environment are the suite's), with a JUnit XML
report per run. ``--fresh-clone`` runs every repetition in a new ``git clone`` of HEAD set up by
``make setup`` there, as CI does. The table gives, per test, passes / runs with a 95 % Wilson
interval, the failure messages' first lines and the longest duration; the JSON goes to ``--out``
(default bench/results/flaky.json). A test that fails one run in ten has a pass rate below 99 %
with high probability; one that passes 10 of 10 is only shown to be above 69 % (the interval's
lower bound), so the rates of several reports are pooled in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from clap_sim.eval_report import wilson

ROOT = pathlib.Path(__file__).resolve().parents[1]


def junit_outcomes(path: pathlib.Path) -> dict[str, tuple[str, float, str]]:
    """Map test id -> (passed | failed | error | skipped, seconds, first line of the message)."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or node.text or "").strip().splitlines()[:1]
                message = message[0][:200] if message else ""
                break
        out[test_id] = (outcome, float(case.get("time", 0.0)), message)
    return out


def fresh_clone(dest: pathlib.Path, env: dict[str, str]) -> pathlib.Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    subprocess.run(["make", "setup"], cwd=dest, env=env, check=True, stdout=subprocess.DEVNULL)
    return dest


def run_once(workdir: pathlib.Path, pytest_args: list[str], report: pathlib.Path, env: dict[str, str]) -> int:
    cmd = ["bash", "-c", 'source scripts/env.sh && bash scripts/run_tests.sh "$@"', "run_tests",
           f"--junitxml={report}", "-q", *pytest_args]
    return subprocess.run(cmd, cwd=workdir, env=env).returncode


def summarise(runs: list[dict[str, tuple[str, float, str]]]) -> list[dict]:
    tests = sorted({t for r in runs for t in r})
    rows = []
    for t in tests:
        outcomes = [r[t] for r in runs if t in r and r[t][0] != "skipped"]
        passed = sum(o == "passed" for o, _, _ in outcomes)
        lo, hi = wilson(passed, len(outcomes)) if outcomes else (0.0, 1.0)
        failures = collections.Counter(m for o, _, m in outcomes if o != "passed")
        rows.append({"test": t, "runs": len(outcomes), "passed": passed, "ci95": [round(lo, 3), round(hi, 3)],
                     "max_seconds": round(max((s for _, s, _ in outcomes), default=0.0), 1),
                     "failures": dict(failures)})
    return rows


def write_result(out: pathlib.Path, runs, codes, walls, fresh: bool, pytest_args) -> dict:
    """The report so far (rewritten after every run, so a killed study keeps its finished runs)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    result = {"runs": len(codes), "green_runs": sum(c == 0 for c in codes), "exit_codes": codes, "wall_s": walls,
              "fresh_clone": fresh, "commit": head.strip(), "pytest_args": pytest_args, "tests": summarise(runs),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--fresh-clone", action="store_true", help="each run in a new clone of HEAD, set up from scratch")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "flaky.json")
    args, pytest_args = p.parse_known_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    env = dict(os.environ)
    reports = pathlib.Path(tempfile.mkdtemp(prefix="flaky-"))
    runs, codes, walls = [], [], []
    for i in range(args.runs):
        t0 = time.monotonic()
        workdir = ROOT
        if args.fresh_clone:
            workdir = fresh_clone(reports / f"clone-{i}", env)
        report = reports / f"run-{i}.xml"
        codes.append(run_once(workdir, pytest_args, report, env))
        walls.append(round(time.monotonic() - t0, 1))
        runs.append(junit_outcomes(report) if report.is_file() else {})
        if args.fresh_clone:
            shutil.rmtree(workdir, ignore_errors=True)
        green = sum(c == 0 for c in codes)
        print(f"flaky: run {i + 1}/{args.runs}: exit {codes[-1]} in {walls[-1]:.0f} s ({green} green so far)",
              flush=True)
        result = write_result(args.out, runs, codes, walls, args.fresh_clone, pytest_args)  # nothing lost on a kill
    rows = result["tests"]
    print(f"\n{result['green_runs']}/{args.runs} runs green; per test (passed/runs, 95 % Wilson interval):")
    for r in rows:
        note = "" if not r["failures"] else f"  FAILED: {r['failures']}"
        print(f"  {r['passed']:>3}/{r['runs']:<3} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
              f"{r['max_seconds']:>7.1f}s  {r['test']}{note}")
    print(f"results: {args.out}")
    return 0 if result["green_runs"] == len(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
