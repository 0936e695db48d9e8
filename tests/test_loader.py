"""The desired-state loader: every rule of SPEC §1 and §6, positions, hostile input, `validate`."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.builtins import OPENBAO_BUILTINS
from reconciler.cli import cli
from reconciler.errors import DesiredStateError
from reconciler.loader import (
    MAX_ALIAS_NODES,
    check_references,
    load_desired,
    load_desired_text,
)
from reconciler.model import CatalogEntry, DesiredState
from reconciler.resolver import SHIPPED_BUILTINS, live_builtins
from tests.helpers import SLACK

DATA = Path(__file__).parent / "data"
INVALID = sorted(p for p in (DATA / "invalid").iterdir() if p.suffix == ".yaml")
VALID = sorted((DATA / "valid").glob("*.yaml"))
EXAMPLES = Path(__file__).parent.parent / "reconciler" / "demo" / "examples"
FAKE_1 = "0e10b96e4a5298943f7a4f7d45676e9764e5da741b8ea4419e4f7eb26cd243b1"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@dataclass
class Case:
    expected: list[tuple[int, int, str]]
    max_file_size: int = 4 * 1024 * 1024


def read_case(path: Path) -> Case:
    """Expectations: `# expect: LINE:COL fragment` lines at the top, or a `.expect` sidecar."""
    sidecar = path.with_name(path.name + ".expect")
    if sidecar.exists():
        lines = sidecar.read_text().splitlines()
    else:
        lines = []
        for raw in path.read_bytes().decode("latin-1").splitlines():
            if not raw.startswith("# "):
                break
            lines.append(raw[2:])
    case = Case(expected=[])
    for line in lines:
        key, _, value = line.partition(": ")
        if key == "expect":
            position, _, fragment = value.partition(" ")
            row, column = position.split(":")
            case.expected.append((int(row), int(column), fragment))
        elif key == "max-file-size":
            case.max_file_size = int(value)
    assert case.expected, f"{path.name} declares no expectation"
    return case


def problems_of(path: Path, **options: int) -> list[tuple[int, int, str]]:
    with pytest.raises(DesiredStateError) as caught:
        load_desired(path, builtins=SHIPPED_BUILTINS, **options)  # type: ignore[arg-type]
    assert all(p.file == str(path) for p in caught.value.problems)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def test_the_invalid_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 35


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_file_reports_exactly_its_expected_problems(path: Path) -> None:
    case = read_case(path)
    got = problems_of(path, max_file_size=case.max_file_size)
    assert len(got) == len(case.expected), got
    for (row, column, fragment), (got_row, got_column, message) in zip(
        sorted(case.expected), got, strict=True
    ):
        assert (got_row, got_column) == (row, column), (message, got)
        assert fragment in message, got


def test_three_independent_errors_of_different_kinds_are_all_reported() -> None:
    messages = [m for _, _, m in problems_of(DATA / "invalid" / "three-errors.yaml")]
    assert len(messages) == 3
    assert "duplicate key" in messages[0]
    assert "invalid duration" in messages[1]
    assert "neither declared" in messages[2]


def test_env_values_never_appear_in_messages() -> None:
    for name in ("wrong-type-env-value.yaml", "env-secret-not-echoed.yaml"):
        for _, _, message in problems_of(DATA / "invalid" / name):
            assert "s3cr3t" not in message


# --- valid files ----------------------------------------------------------------------


def test_valid_files_load() -> None:
    assert VALID
    for path in VALID:
        loaded = load_desired(path)
        assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_values_are_normalised() -> None:
    state = load_desired(DATA / "valid" / "full.yaml").state
    kv_plus = state.plugins[0]
    assert (kv_plus.name, kv_plus.version) == ("kv-plus", "v1.4.0")
    assert kv_plus.env is not None
    assert kv_plus.env["KV_PLUS_MODE"].get_secret_value() == "fast"
    apps = state.secrets[0]
    assert apps.path == "apps/"
    assert apps.version == "v1.4.0"
    assert apps.config is not None
    assert (apps.config.default_lease_ttl, apps.config.max_lease_ttl) == (3600, 86400)
    assert apps.options == {"version": "2"}
    assert state.secrets[1].moved_from == "team-b-old/"
    assert state.auth[0].path == "approle/"
    assert state.settings.max_destroy == 3


def test_plugin_directory_is_relative_to_the_file_and_fills_in_sha256(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy(DATA / "valid" / "plugin-directory.yaml", tmp_path / "etc" / "desired.yaml")
    shutil.copytree(DATA / "plugins", tmp_path / "plugins")
    loaded = load_desired(tmp_path / "etc" / "desired.yaml")
    assert loaded.plugin_directory == (tmp_path / "plugins").resolve()
    assert [p.sha256 for p in loaded.state.plugins] == [
        FAKE_1,
        "aff398812f00e690d2fb3d4b0cb4756937d913a7606a8c700583b93680ed79a4",
        None,
    ]
    unchecked = load_desired(tmp_path / "etc" / "desired.yaml", check_plugin_files=False)
    assert unchecked.state.plugins[0].sha256 is None


def test_examples_validate_next_to_their_plugin_directory(tmp_path: Path) -> None:
    commands = ("demo-kv-1.0.0", "demo-kv-2.0.0", "demo-auth-1.0.0", "transit-1.0.0")
    for command in (*commands, "demo-db-1.0.0", "demo-db-2.0.0"):
        (tmp_path / "plugins").mkdir(exist_ok=True)
        (tmp_path / "plugins" / command).write_text(f"#!/bin/sh\n# {command}\n")
    for name in ("desired.yaml", "desired-upgrade.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
        loaded = load_desired(tmp_path / name)
        assert all(p.sha256 for p in loaded.state.plugins if p.present)
    upgrade = load_desired(tmp_path / "desired-upgrade.yaml").state
    assert {m.path: m.version for m in upgrade.secrets} == {
        "demo/": "v2.0.0",
        "apps/": "v2.0.0",
        "kv/": None,
        "transit/": "v1.0.0",
        "db/": None,
    }


def test_anchors_and_merge_keys_are_expanded() -> None:
    text = """\
version: 1
secrets:
  - &base {path: a/, plugin: kv, config: {default_lease_ttl: 1h}}
  - <<: *base
    path: b/
"""
    state = load_desired_text(text).state
    assert [m.path for m in state.secrets] == ["a/", "b/"]
    assert state.secrets[1].config is not None
    assert state.secrets[1].config.default_lease_ttl == 3600


def test_yaml_1_2_scalars() -> None:
    text = "version: 1\nsecrets:\n  - {path: on/, plugin: kv, description: 2024-01-01}\n"
    mount = load_desired_text(text).state.secrets[0]
    assert (mount.path, mount.description) == ("on/", "2024-01-01")


# --- cross-references with another built-in list ----------------------------------------


def test_check_references_accepts_a_live_builtin_list() -> None:
    state = DesiredState.model_validate(
        {"version": 1, "secrets": [{"path": "aws/", "plugin": "aws"}]}
    )
    assert [p.code for p in check_references(state)] == ["undeclared"]
    assert ("secret", "aws") not in OPENBAO_BUILTINS
    vault = live_builtins(
        [CatalogEntry(type="secret", name="aws", version="v1.0.0+builtin", builtin=True)]
    )
    assert check_references(state, vault) == []


def test_a_builtin_the_package_does_not_ship_is_left_to_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text("version: 1\nsecrets:\n  - {path: aws/, plugin: aws}\n")
    assert load_desired(path).state.secrets[0].plugin == "aws"
    with pytest.raises(DesiredStateError) as caught:
        load_desired(path, builtins=SHIPPED_BUILTINS)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (3, 26)
    assert "neither declared" in problem.message


def test_check_references_points_into_the_file() -> None:
    state = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": [
                {"type": "secret", "name": "x", "version": "1.0.0", "sha256": SHA},
                {"type": "secret", "name": "x", "version": "2.0.0", "sha256": SHA},
            ],
            "secrets": [{"path": "a/", "plugin": "x"}],
        }
    )
    [problem] = check_references(state)
    assert (problem.pointer, problem.code, problem.where) == (
        ("secrets", 0, "plugin"),
        "ambiguous",
        "secrets[0].plugin",
    )


# --- hostile input: bounded time --------------------------------------------------------

HOSTILE: dict[str, str | bytes] = {
    "flow nesting, 2 MiB": "version: 1\nsecrets: " + "[" * 2_000_000 + "]" * 2_000_000,
    "block nesting": "".join(" " * i + "a:\n" for i in range(2000)),
    "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9)
    ),
    "aliases just over the limit": "a: &a x\nb: ["
    + ", ".join(["*a"] * (MAX_ALIAS_NODES + 1))
    + "]",
    "one long line": "version: 1\ndescription: '" + "x" * 3_000_000 + "'\n",
    "many unknown keys": "version: 1\n" + "".join(f"k{i}: {i}\n" for i in range(20_000)),
    "binary": bytes(range(256)) * 10_000,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_is_rejected_in_bounded_time(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(DesiredStateError) as caught:
        load_desired_text(HOSTILE[name], "hostile.yaml")
    assert time.perf_counter() - started < SLACK
    assert caught.value.problems


def test_oversize_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"version: 1\n" + b"#" * (4 * 1024 * 1024))
    started = time.perf_counter()
    [(row, column, message)] = problems_of(path)
    assert time.perf_counter() - started < SLACK
    assert (row, column) == (1, 1)
    assert "over the limit of 4194304 bytes" in message


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    [(_, _, message)] = problems_of(tmp_path / "absent.yaml")
    assert "cannot read the file" in message


# --- size (a sanity bound; benchmarks/files.py measures the time) -----------------------------------


def thousand_mounts() -> str:
    lines = ["version: 1", "plugins:"]
    for i in range(20):
        lines += [f"  - {{type: secret, name: p{i}, version: 1.{i}.0, sha256: {SHA}}}"]
    lines.append("secrets:")
    for i in range(1000):
        plugin = f"p{i % 20}" if i % 2 else "kv"
        lines += [
            f"  - path: m{i}",
            f"    plugin: {plugin}",
            f"    description: mount number {i}",
            "    config: {default_lease_ttl: 1h, max_lease_ttl: 24h}",
            "    options: {version: 2}",
        ]
    return "\n".join(lines) + "\n"


def test_a_thousand_mounts_load_fast() -> None:
    text = thousand_mounts()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        state = load_desired_text(text).state
        timings.append(time.perf_counter() - started)
    assert len(state.secrets) == 1000
    # Only that it does not run away: benchmarks/files.py measures the parse time.
    assert min(timings) < SLACK


def test_a_thousand_mounts_with_an_error_are_positioned() -> None:
    text = thousand_mounts().replace("mount number 999", "[999]")
    with pytest.raises(DesiredStateError) as caught:
        load_desired_text(text)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (24 + 999 * 5 + 2, 18)
    assert "secrets[999].description: expected a string" in problem.message


# --- the validate command -----------------------------------------------------------------


def test_validate_prints_a_summary_and_exits_0() -> None:
    path = DATA / "valid" / "full.yaml"
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: valid (4 plugins, 3 mounts)\n"
    assert result.stderr == ""


def test_validate_prints_every_problem_and_exits_1() -> None:
    path = DATA / "invalid" / "three-errors.yaml"
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:14:5",
        f"{path}:18:22",
        f"{path}:20:13",
    ]


def test_validate_honours_max_file_size() -> None:
    path = DATA / "valid" / "full.yaml"
    result = CliRunner().invoke(cli, ["validate", "--max-file-size", "10", str(path)])
    assert result.exit_code == 1
    assert "over the limit of 10 bytes" in result.stderr


def test_validate_of_a_missing_file_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read the file" in result.stderr
