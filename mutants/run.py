"""`make mutants`: apply each curated mutant to a copy of the repository, run its tests.

Each mutant gets its own temporary copy of the repository with the one snippet
replaced, and only the tests it names run there (`python -m pytest` from the copy,
with this interpreter: the copy's `reconciler/` comes first on the import path).
A mutant is caught when pytest fails (exit code 1); it survived when its tests
pass; it no longer applies when its snippet is not found exactly once. The tests of
every mutant also run once on an unmutated copy (the baseline): a caught mutant
means something only if they pass without it. The run fails unless the baseline
passes and every mutant is caught.

    python -m mutants.run                 # everything, two at a time
    python -m mutants.run --check         # only: does every snippet still apply?
    python -m mutants.run --only NAME ... # some mutants
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mutants.catalog import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parent.parent
# Nothing a test run needs: version control, the environment, caches.
_IGNORED = (
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
)
CAUGHT, SURVIVED, STALE, ERROR = "caught", "survived", "no longer applies", "error"


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


def occurrences(mutant: Mutant, root: Path = ROOT) -> int:
    """How often the mutant's snippet occurs in its file (0 when the file is gone)."""
    path = root / mutant.file
    if not path.is_file():
        return 0
    return path.read_text().count(mutant.original)


def apply_mutant(mutant: Mutant, root: Path) -> None:
    path = root / mutant.file
    text = path.read_text()
    path.write_text(text.replace(mutant.original, mutant.replacement, 1))


# Large and never mutated (installed server releases): linked into each copy, not copied.
_LINKED = (".servers",)


def _copy(into: Path) -> Path:
    copy = into / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*_LINKED, *_IGNORED), symlinks=True)
    for name in _LINKED:
        if (ROOT / name).exists():
            (copy / name).symlink_to(ROOT / name)
    return copy


def _pytest(
    copy: Path, tests: Sequence[str], timeout: float, stop_at_first: bool
) -> tuple[int, str]:
    """(exit code, output) of pytest on `tests`, run from `copy`; -1 on a timeout."""
    # The copy first on every import path, the processes the tests start included (a
    # `python -m reconciler` run from another directory would import the installed tree).
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "400"  # the short summary keeps the reason of a failure
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf"]
    if stop_at_first:
        command.append("-x")
    try:
        done = subprocess.run(
            [*command, *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, f"no result within {timeout:.0f}s"
    return done.returncode, done.stdout + done.stderr


def _imports_from(copy: Path) -> str:
    """Where `reconciler` is imported from when run from `copy` (must be the copy)."""
    done = subprocess.run(
        [sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _first_failure(output: str) -> str:
    """The first `FAILED node - reason` line of pytest's short summary, shortened."""
    match = re.search(r"^((?:FAILED|ERROR) tests/.*)$", output, re.MULTILINE)
    line = match.group(1) if match else ""
    return line if len(line) <= 240 else line[:239] + "…"


def _tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def _run_one(mutant: Mutant, timeout: float, tests: Sequence[str] = ()) -> Outcome:
    started = time.monotonic()
    found = occurrences(mutant)
    if found != 1:
        where = "not found" if found == 0 else f"found {found} times"
        return Outcome(mutant.name, STALE, 0.0, f"{mutant.file}: snippet {where}")
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as scratch:
        copy = _copy(Path(scratch))
        apply_mutant(mutant, copy)
        origin = _imports_from(copy)
        if not origin.startswith(str(copy)):
            return Outcome(mutant.name, ERROR, 0.0, f"reconciler imported from {origin!r}")
        code, output = _pytest(copy, tests or mutant.tests, timeout, stop_at_first=True)
    seconds = time.monotonic() - started
    if code == 1:
        return Outcome(mutant.name, CAUGHT, seconds, _first_failure(output))
    if code == 0:
        ran = ", ".join(tests or mutant.tests)
        return Outcome(mutant.name, SURVIVED, seconds, f"its tests pass: {ran}")
    return Outcome(mutant.name, ERROR, seconds, f"pytest exit {code}:\n{_tail(output)}")


def _run_baseline(mutants: Iterable[Mutant], timeout: float, given: Sequence[str] = ()) -> Outcome:
    """Every named test on the unmutated copy: they must all pass."""
    started = time.monotonic()
    tests = sorted(given) or sorted({test for mutant in mutants for test in mutant.tests})
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as scratch:
        copy = _copy(Path(scratch))
        code, output = _pytest(copy, tests, timeout, stop_at_first=False)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome("(baseline)", "passed", seconds, f"{len(tests)} test ids")
    return Outcome("(baseline)", ERROR, seconds, f"pytest exit {code}:\n{_tail(output, 30)}")


def _summary(outcomes: Sequence[Outcome], seconds: float, jobs: int) -> str:
    counts = {
        status: sum(o.status == status for o in outcomes)
        for status in (CAUGHT, SURVIVED, STALE, ERROR)
    }
    return (
        f"{len(outcomes)} mutants: {counts[CAUGHT]} caught, {counts[SURVIVED]} survived, "
        f"{counts[STALE]} no longer apply, {counts[ERROR]} errors "
        f"({seconds / 60:.1f} min with {jobs} at a time)"
    )


def table(mutants: Iterable[Mutant]) -> str:
    """The markdown table of docs/testing.md: guarantee, mutant, the tests that catch it."""
    rows = ["| Guarantee | Mutant (file) | Tests that catch it |", "|---|---|---|"]
    for mutant in mutants:
        tests = ", ".join(f"`{test.removeprefix('tests/')}`" for test in mutant.tests)
        rows.append(f"| {mutant.breaks} | `{mutant.name}` ({mutant.file}) | {tests} |")
    return "\n".join(rows)


DOCS = ROOT / "docs" / "testing.md"
_TABLE_HEADING = "## Guarantees, their mutants, the tests that catch them\n\n"


def write_table(mutants: Iterable[Mutant], docs: Path = DOCS) -> None:
    """Replace the table under `_TABLE_HEADING` in docs/testing.md with the catalog's."""
    text = docs.read_text()
    start = text.index(_TABLE_HEADING) + len(_TABLE_HEADING)
    end = text.find("\n\n", start)
    docs.write_text(text[:start] + table(mutants) + text[end if end >= 0 else len(text) :])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mutants.run", description="Run the curated mutants (docs/testing.md)."
    )
    parser.add_argument("--check", action="store_true", help="only check every snippet applies")
    parser.add_argument("--table", action="store_true", help="print the docs' markdown table")
    parser.add_argument(
        "--write-table", action="store_true", help="write that table into docs/testing.md"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="NODE",
        default=(),
        help="run these tests instead of each mutant's own (to find which tests catch it)",
    )
    options = parser.parse_args(argv)

    chosen = list(MUTANTS)
    if options.only:
        unknown = sorted(set(options.only) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"no such mutant: {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in options.only]

    if options.table:
        print(table(chosen))
        return 0
    if options.write_table:
        write_table(MUTANTS)
        return 0

    if options.check:
        stale = [m for m in chosen if occurrences(m) != 1]
        for mutant in stale:
            found = occurrences(mutant)
            print(f"no longer applies: {mutant.name} ({mutant.file}: {found} matches)")
        print(f"{len(chosen) - len(stale)} of {len(chosen)} mutants apply")
        return 1 if stale else 0

    started = time.monotonic()
    printing = threading.Lock()
    outcomes: list[Outcome] = []

    def report(outcome: Outcome) -> Outcome:
        with printing:
            print(f"{outcome.status:>17}  {outcome.name}  ({outcome.seconds:.0f}s)", flush=True)
            if outcome.detail:
                print("    " + outcome.detail.replace("\n", "\n    "), flush=True)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        baseline = (
            None
            if options.no_baseline
            else pool.submit(
                lambda: report(_run_baseline(chosen, options.timeout * 2, options.tests))
            )
        )
        futures = [
            pool.submit(
                lambda mutant: report(_run_one(mutant, options.timeout, options.tests)), mutant
            )
            for mutant in chosen
        ]
        outcomes = [future.result() for future in futures]
        baseline_ok = baseline is None or baseline.result().status == "passed"

    elapsed = time.monotonic() - started
    print()
    for outcome in outcomes:
        if outcome.status != CAUGHT:
            first = outcome.detail.splitlines()[0] if outcome.detail else ""
            print(f"{outcome.status}: {outcome.name}: {first}")
    if not baseline_ok:
        print("the baseline failed: the named tests do not pass without a mutant")
    print(_summary(outcomes, elapsed, options.jobs))
    if options.tests:
        print("(with --tests: the catalog's own tests were not run)")
    every_caught = all(o.status == CAUGHT for o in outcomes)
    return 0 if every_caught and baseline_ok else 1


if __name__ == "__main__":
    sys.exit(main())
