"""mutmut on one module against a narrow, fast test selection, in a scratch copy of the tree.

``score.py`` runs every module of ``critical.txt`` against the whole ``[tool.mutmut]``
selection: the stats run alone did not finish in 40 minutes on the shared 2-core machine.
A piece copies the tree (tracked and untracked files, git's ignores left out) to a scratch
directory, narrows ``[tool.mutmut]`` there to one module, its test files and a ``-k``, runs
mutmut niced, and prints the module's line of the score table. Nothing in the tree changes.

    python mutations/piece.py app/services/conditional.py tests/test_conditional.py \\
        -k "not linear_time" --ref HEAD          # HEAD's code and tests: a "before"
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "mutations"))
from score import STATUS, _row  # noqa: E402


def copy_tree(destination: Path, ref: str | None) -> None:
    """The working tree as it is, or the tree of a git ref (``git archive``)."""
    if ref:
        archive = subprocess.run(
            ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (destination / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name.decode())


def narrow(
    pyproject: Path,
    module: str,
    tests: list[str],
    keyword: str,
    timeout_constant: float,
    test_timeout: float,
) -> None:
    text = pyproject.read_text()
    start = text.index("[tool.mutmut]")
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    section = re.sub(
        r"only_mutate = \[.*?\n\]", f'only_mutate = ["{module}"]', text[start:end], flags=re.S
    )
    selection = ", ".join(f'"{test}"' for test in tests)
    section = re.sub(
        r"pytest_add_cli_args_test_selection = \[.*?\n\]",
        f"pytest_add_cli_args_test_selection = [{selection}]",
        section,
        flags=re.S,
    )
    section = re.sub(
        r'"-k",\s*"[^"]*",', f'"--timeout", "{test_timeout:g}", "-k", "{keyword}",', section
    )
    section = re.sub(r"timeout_constant = .*", f"timeout_constant = {timeout_constant}", section)
    pyproject.write_text(text[:start] + section + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="the file to mutate, e.g. app/services/conditional.py")
    parser.add_argument("tests", nargs="+", help="the test files to run against it")
    parser.add_argument("-k", dest="keyword", default="not full and not queue")
    parser.add_argument("--ref", help="a git ref to copy instead of the working tree")
    parser.add_argument("--children", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument(
        "--timeout-constant",
        type=float,
        default=2.0,
        help="a mutant's CPU-time limit is (its tests' time + this) x 30: a mutant that loops"
        " forever costs that much (the trainer's 20 s suits slow tests, not unit tests)",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=30.0,
        help="pytest-timeout's limit per test, in seconds: a mutant that leaves a test waiting"
        " (a request never answered uses no CPU, so the CPU limit above never ends it) fails"
        " after this instead of the suite's 300 s",
    )
    parser.add_argument(
        "--mutants",
        nargs="+",
        default=["x*"],
        help="globs of the mutants to run, after the module's name: 'xǁ_Trialsǁsmallest*' for"
        " one method's, to check a few functions again against new tests (default: all)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        help="write each mutant's exit code (null: not checked) to this JSON file, so that two"
        " bounded runs can be compared on the mutants both checked",
    )
    args = parser.parse_args()
    dotted = args.module.removesuffix(".py").replace("/", ".")
    with tempfile.TemporaryDirectory(prefix="srstore-mutmut-") as scratch:
        tree = Path(scratch)
        copy_tree(tree, args.ref)
        narrow(
            tree / "pyproject.toml",
            args.module,
            args.tests,
            args.keyword,
            args.timeout_constant,
            args.test_timeout,
        )
        mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
        command = ["nice", "-n", "15", mutmut, "run", "--max-children", str(args.children)]
        try:
            subprocess.run(
                [*command, *(f"{dotted}.{glob}" for glob in args.mutants)],
                cwd=tree,
                timeout=args.minutes * 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"stopped after {args.minutes} minutes; the rest counts as not checked")
        counts: Counter[str] = Counter()
        survivors = []
        codes: dict[str, int | None] = {}
        for meta in (tree / "mutants").rglob("*.py.meta"):
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
        if args.save:
            args.save.write_text(json.dumps(codes, indent=0, sort_keys=True))
        for name, code in codes.items():
            status = "not checked" if code is None else STATUS.get(code, "suspicious")
            counts[status] += 1
            if status == "survived":
                survivors.append(name)
        for name in sorted(survivors):  # each with its diff, to kill or to explain
            subprocess.run([mutmut, "show", name], cwd=tree, check=False)
    columns = ["killed", "survived", "timeout", "no tests", "suspicious", "not checked"]
    print(f"{'module':<22}" + "".join(f"{c:>12}" for c in columns) + f"{'score':>8}")
    print(_row(dotted, counts, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
