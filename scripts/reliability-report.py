#!/usr/bin/env python3
"""The figures of the fault tests of one build, as a Markdown table (docs/reliability.md).

    scripts/reliability-report.py [--logs-only] BUILD_DIR [LOG.jsonl ...]

Reads the lines the integration tests append to their MLTRACK_RELIABILITY_LOG (the LOG files;
default BUILD_DIR/reliability-*.jsonl) and the `reliability: {...}` lines the unit tests print into
BUILD_DIR/tests/*.log (not with --logs-only). Each line is one passing test: the fault it injected, how many trials and
faults, the runs and metric points it then found exactly as logged (on the server, or in the
journal for the unit tests), lost and duplicated (0, or the test would have failed). A fault
tried by several tests (or parametrized cases) is one row with the sums. Standard library only.
"""

import glob
import json
import os
import sys


def read(build, logs, unit=True):
    rows = []
    for path in logs:
        with open(path, encoding="utf-8") as f:
            rows += [dict({"checked": "server"}, **json.loads(line)) for line in f if line.strip()]
    for path in sorted(glob.glob(os.path.join(build, "tests", "*.log"))) if unit else []:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("reliability: "):
                    rows.append(dict(json.loads(line[len("reliability: "):]), checked="journal"))
    return rows


def main(argv):
    unit = "--logs-only" not in argv
    argv = [a for a in argv if a != "--logs-only"]
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    build = argv[1]
    logs = argv[2:] or sorted(glob.glob(os.path.join(build, "reliability-*.jsonl")))
    rows = read(build, logs, unit)
    if not rows:
        print(f"no reliability figures under {build}", file=sys.stderr)
        return 1
    by_fault = {}
    for r in rows:
        agg = by_fault.setdefault(r["fault"], {"tests": set(), "trials": 0, "faults": 0,
                                               "runs": 0, "points": 0, "lost": 0,
                                               "duplicated": 0, "checked": r["checked"]})
        agg["tests"].add(r["test"].split("[")[0])
        for k in ("trials", "faults", "runs", "points", "lost", "duplicated"):
            agg[k] += int(r.get(k, 0))
    cols = ("trials", "faults", "runs", "points", "lost", "duplicated")
    print("| fault | " + " | ".join(cols) + " | checked in | test |")
    print("|---|" + "---:|" * len(cols) + "---|---|")
    total = dict.fromkeys(cols, 0)
    for fault, a in by_fault.items():
        tests = ", ".join(sorted(t.rsplit("::", 1)[-1] for t in a["tests"]))
        print(f"| {fault} | " + " | ".join(f"{a[c]:,}" for c in cols)
              + f" | {a['checked']} | `{tests}` |")
        for c in cols:
            total[c] += a[c]
    print(f"| **all {len(by_fault)} faults** | " + " | ".join(f"**{total[c]:,}**" for c in cols)
          + " | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
