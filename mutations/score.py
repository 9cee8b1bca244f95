"""mutmut on the critical functions (``mutations/critical.txt``), then their mutation score.

mutmut's configuration (which files, which fast tests) is ``[tool.mutmut]`` in
pyproject.toml. The run is bounded (``--minutes``); mutants it did not reach count as not
checked, and the score is killed / checked, per module and in all.

    python mutations/score.py                # run, then print the table
    python mutations/score.py --report-only  # the table of the last run
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = Path(__file__).with_name("critical.txt")
# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code).
STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", -24: "timeout", 24: "timeout"}


def targets(only: list[str] | None = None) -> list[str]:
    """The patterns of critical.txt; with ``only``, those matching one of its patterns (a run
    in pieces: ``--only 'app.services.conditional.*'``)."""
    lines = TARGETS.read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not only:
        return listed
    return [t for t in listed if any(fnmatch.fnmatchcase(t, o) for o in only)]


def run(minutes: float, children: int, only: list[str]) -> int:
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    command = [mutmut, "run", "--max-children", str(children), *targets(only)]
    # Its own process group: at the bound, mutmut's forked runners stop with it.
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        return process.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        print(f"stopped after {minutes} minutes; the rest counts as not checked")
        return 0


def results(only: list[str]) -> dict[str, Counter[str]]:
    """Status counts of the targeted mutants, by module."""
    by_module: dict[str, Counter[str]] = {}
    patterns = targets(only)
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in exit_codes.items():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                module = name.split(".x", 1)[0]
                status = "not checked" if code is None else STATUS.get(code, "suspicious")
                by_module.setdefault(module, Counter())[status] += 1
    return by_module


def report(by_module: dict[str, Counter[str]]) -> None:
    columns = ["killed", "survived", "timeout", "no tests", "suspicious", "not checked"]
    print(f"{'module':<22}" + "".join(f"{c:>12}" for c in columns) + f"{'score':>8}")
    total: Counter[str] = Counter()
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        print(_row(module, counts, columns))
    print(_row("all", total, columns))


def _row(label: str, counts: Counter[str], columns: list[str]) -> str:
    checked = sum(n for status, n in counts.items() if status != "not checked")
    score = f"{100 * counts['killed'] / checked:.0f}%" if checked else "-"
    return f"{label:<22}" + "".join(f"{counts[c]:>12}" for c in columns) + f"{score:>8}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--only", action="append", default=[], help="a pattern of critical.txt (repeatable)"
    )
    args = parser.parse_args()
    if not args.report_only and run(args.minutes, args.children, args.only) != 0:
        return 1
    report(results(args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
