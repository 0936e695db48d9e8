"""The loader gives the same values and positions with ruamel's C parser and without it.

`ruamel.yaml.clib` (the C parser) is a dependency on CPython, yet pip may skip it (no
wheel for the platform, another interpreter); ruamel then parses in pure Python. Every
file of the corpus is loaded both ways here, and a subprocess without the C extension
proves that the fallback is what a user without it gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ruamel.yaml.main

from reconciler.errors import DesiredStateError
from reconciler.loader import _yaml, load_desired, load_desired_text
from tests.helpers import SLACK
from tests.test_loader import HOSTILE, INVALID, VALID, read_case

REPO = Path(__file__).parent.parent
Outcome = tuple[str, object]


@pytest.fixture
def pure_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Load with ruamel's pure-Python parser for the duration of a test."""
    monkeypatch.setattr(_yaml, "use_c_parser", False)
    yield


def _problems(error: DesiredStateError) -> list[tuple[int, int, str]]:
    return [(p.line, p.column, p.message) for p in error.problems]


def _load(path: Path, max_file_size: int, *, c_parser: bool) -> Outcome:
    previous, _yaml.use_c_parser = _yaml.use_c_parser, c_parser
    try:
        return ("loaded", load_desired(path, max_file_size=max_file_size).state)
    except DesiredStateError as error:
        return ("refused", _problems(error))
    finally:
        _yaml.use_c_parser = previous


def test_the_c_parser_is_what_the_other_tests_use() -> None:
    # Otherwise the rest of the suite would test the pure-Python path twice.
    assert ruamel.yaml.main.CParser is not None
    assert _yaml.use_c_parser


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_file_gives_the_same_problems_without_the_c_parser(path: Path) -> None:
    case = read_case(path)
    with_c = _load(path, case.max_file_size, c_parser=True)
    pure = _load(path, case.max_file_size, c_parser=False)
    assert pure[0] == with_c[0] == "refused"
    got, expected = pure[1], with_c[1]
    assert isinstance(got, list) and isinstance(expected, list)
    assert [(line, column) for line, column, _ in got] == [(r, c) for r, c, _ in expected]
    for (row, column, fragment), (line, at_column, message), (_, _, c_message) in zip(
        sorted(case.expected), got, expected, strict=True
    ):
        assert (line, at_column) == (row, column), got
        assert fragment in message, got
        # Only a syntax error's wording comes from the parser; every other message is ours.
        if not message.startswith("invalid YAML:"):
            assert message == c_message


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_file_gives_the_same_state_without_the_c_parser(path: Path) -> None:
    with_c = _load(path, 4 * 1024 * 1024, c_parser=True)
    pure = _load(path, 4 * 1024 * 1024, c_parser=False)
    assert with_c[0] == "loaded"
    assert pure == with_c


@pytest.mark.parametrize(
    "name",
    ["flow nesting, 2 MiB", "block nesting", "billion laughs", "aliases just over the limit"],
)
@pytest.mark.usefixtures("pure_python")
def test_depth_and_alias_bounds_hold_without_the_c_parser(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(DesiredStateError) as caught:
        load_desired_text(HOSTILE[name], "hostile.yaml")
    # Pure Python parses slower; the bound only says that no case runs away.
    assert time.perf_counter() - started < SLACK
    [problem] = caught.value.problems
    assert "nesting deeper than" in problem.message or "aliases expand to" in problem.message


_WITHOUT_CLIB = """
import json, sys
from pathlib import Path
sys.modules["_ruamel_yaml"] = None  # as if ruamel.yaml.clib were not installed
import ruamel.yaml.main
assert ruamel.yaml.main.CParser is None
from reconciler.errors import DesiredStateError
from reconciler.loader import load_desired
outcomes = []
for path in sys.argv[1:]:
    try:
        load_desired(Path(path))
        outcomes.append(["loaded"])
    except DesiredStateError as error:
        outcomes.append([[p.line, p.column, p.message] for p in error.problems])
print(json.dumps(outcomes))
"""


def test_loading_works_where_ruamel_yaml_clib_is_missing() -> None:
    paths = [*VALID, *(p for p in INVALID if p.name in {"invalid-syntax.yaml", "tabs.yaml"})]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_CLIB, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    for path, outcome in zip(paths, outcomes, strict=True):
        if path in VALID:
            assert outcome == ["loaded"], (path.name, outcome)
        else:
            expected = _load(path, 4 * 1024 * 1024, c_parser=False)[1]
            assert [tuple(problem) for problem in outcome] == expected, path.name
