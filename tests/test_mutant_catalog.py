"""The mutant catalog is well-formed: `make mutants` can trust every entry (no server)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from mutants.catalog import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _test_functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    )


def test_names_are_unique_and_readable() -> None:
    names = [mutant.name for mutant in MUTANTS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in names), names


def test_there_are_enough_and_each_changes_its_snippet() -> None:
    assert len(MUTANTS) >= 45
    assert all(m.original != m.replacement for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_entry_says_what_it_breaks_and_names_existing_tests(mutant: Mutant) -> None:
    assert mutant.breaks.strip() and "\n" not in mutant.breaks
    assert mutant.file.startswith("reconciler/") and (ROOT / mutant.file).is_file()
    assert mutant.original.strip()
    assert mutant.tests
    for node_id in mutant.tests:
        file, _, rest = node_id.partition("::")
        assert (ROOT / file).is_file(), node_id
        if rest:
            function = rest.split("[", 1)[0]
            assert function in _test_functions(ROOT / file), node_id


def test_every_mutant_is_listed_in_the_testing_docs() -> None:
    # The table of docs/testing.md comes from `python -m mutants.run --table`.
    documented = (ROOT / "docs" / "testing.md").read_text()
    missing = [m.name for m in MUTANTS if f"`{m.name}`" not in documented]
    assert not missing, f"run `python -m mutants.run --table` into docs/testing.md: {missing}"
