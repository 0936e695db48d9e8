"""Rough edges a new user met on the command line, each kept fixed by a test.

(Interruptions: tests/test_interrupted.py. The planner's part: the cases
`errors_list_no_reload_onto_a_missing_entry` and
`replace_names_unmanaged_mounts_without_repeating_the_hash` in tests/planner_cases/.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.model import ServerIdentity
from reconciler.plan import Plan, Problem
from reconciler.render import render_plan
from tests.helpers import SCHEMAS_DIR, CliRun, api, run_cli, write_desired
from tests.lying_proxy import LyingProxy

ONE_MOUNT = "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_plan_out_into_a_missing_directory_is_a_clean_error(
    server: DevServer, tmp_path: Path, as_json: bool
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    out = tmp_path / "nonexistent" / "dir" / "p.json"
    result = run_cli(server, "plan", str(desired), "--out", str(out), *(["--json"] * as_json))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    assert f"cannot write the plan to {out}" in result.stderr and "--out" in result.stderr
    if as_json:
        document = json.loads(result.stdout)  # the error document alone, schema-checked
        assert "cannot write the plan" in document["error"]
    else:
        assert result.stdout == ""
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("-v", "plan", "FILE"),
        ("plan", "-v", "FILE"),
        ("plan", "FILE", "-vv"),
        ("plan", "-q", "FILE"),
        ("-q", "plan", "FILE", "--json"),
    ],
)
def test_verbosity_flags_work_before_or_after_the_command(
    server: DevServer, tmp_path: Path, args: tuple[str, ...]
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    root = logging.getLogger()
    before = root.level
    try:
        result = run_cli(server, *(str(desired) if a == "FILE" else a for a in args))
        level = root.level
    finally:
        root.setLevel(before)
    assert result.exit_code == 0, result.output
    assert "enable secrets/app/" in result.stdout or '"enable"' in result.stdout
    # The level took effect wherever the flag stood.
    expected = {"-v": logging.INFO, "-vv": logging.DEBUG, "-q": logging.ERROR}
    assert level == next(expected[a] for a in args if a in expected)


def test_plan_header_names_the_file_as_given_when_saved_elsewhere(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_desired(tmp_path, ONE_MOUNT, name="desired.yaml")
    (tmp_path / "plans").mkdir()
    result = run_cli(server, "plan", "desired.yaml", "--out", "plans/p.json")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert header.endswith(" from desired.yaml"), header
    # The saved plan names it relative to itself, so the two can move together.
    saved = json.loads((tmp_path / "plans" / "p.json").read_text())
    assert saved["desired"]["path"] == "../desired.yaml"


def _unmanaged(count: int) -> Plan:
    return Plan(
        server=ServerIdentity(address="http://127.0.0.1:8200"),
        warnings=[
            *(
                Problem(
                    target=f"secrets/loose-{n:02d}/", message="unmanaged mount (kv): left alone"
                )
                for n in range(count)
            ),
            Problem(target="auth/odd/", message="unmanaged mount (userpass): left alone"),
            Problem(target="secret/x/v1.0.0", message="unmanaged catalog entry: left registered"),
        ],
    )


def test_warnings_of_one_kind_fold_into_one_line_with_a_count() -> None:
    text = render_plan(_unmanaged(22))
    lines = [line for line in text.splitlines() if "⚠" in line]
    assert len(lines) == 2, text
    assert "23 × unmanaged mount: left alone: secrets/loose-00/, secrets/loose-01/" in lines[0]
    assert "and 20 more (--verbose lists each)" in lines[0]
    assert lines[1].endswith("secret/x/v1.0.0: unmanaged catalog entry: left registered")


def test_verbose_lists_every_warning() -> None:
    lines = [line for line in render_plan(_unmanaged(22), verbose=True).splitlines() if "⚠" in line]
    assert len(lines) == 24
    assert any("auth/odd/: unmanaged mount (userpass): left alone" in line for line in lines)


def test_plan_folds_the_warnings_of_a_real_server_unless_verbose(
    server: DevServer, tmp_path: Path
) -> None:
    http = api(server)
    for n in range(4):
        http.post(f"/v1/sys/mounts/loose-{n}", json={"type": "kv"}).raise_for_status()
    desired = write_desired(tmp_path, ONE_MOUNT)
    folded = run_cli(server, "plan", str(desired))
    assert folded.ok, folded.output
    assert "4 × unmanaged mount: left alone" in folded.stdout
    listed = run_cli(server, "plan", str(desired), "-v")
    assert listed.ok, listed.output
    assert listed.stdout.count("unmanaged mount (kv): left alone") == 4


# Properties whose values form a closed set: each must be enumerated in its schema.
CLOSED_SETS = {
    "apply.schema.json": [
        ("properties", "verdict"),
        ("$defs", "ActionRef", "properties", "kind"),
        ("$defs", "ReloadParams", "properties", "scope"),
        ("$defs", "ReloadAction", "properties", "reason_code"),
        ("$defs", "ReloadAction", "properties", "safety"),
        ("$defs", "ReloadAction", "properties", "stage"),
    ],
    "plan.schema.json": [
        ("$defs", "ReloadParams", "properties", "scope"),
        ("$defs", "RegistrationParams", "properties", "type"),
        ("$defs", "TuneParams", "properties", "kind"),
    ],
    "error.schema.json": [("properties", "kind")],
}


@pytest.mark.parametrize(
    ("name", "where"), [(n, w) for n, paths in CLOSED_SETS.items() for w in paths]
)
def test_every_closed_set_is_enumerated_in_its_schema(name: str, where: tuple[str, ...]) -> None:
    schema = json.loads((SCHEMAS_DIR / name).read_text())
    node = schema
    for key in where:
        node = node[key]
    while "$ref" in node or "allOf" in node:
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = schema["$defs"][ref.rsplit("/", 1)[1]]
    assert "enum" in node or "const" in node, f"{name} {'/'.join(where)}: {node}"


def test_writes_count_a_reload_sent_whose_answer_was_lost(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    desired = write_desired(
        tmp_path,
        f"version: 1\nplugin_directory: {plugins}\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}\n"
        "secrets:\n  - {path: one/, plugin: demo-kv}\n",
    )
    assert run_cli(server, "apply", str(desired), "--yes").ok
    with LyingProxy(server.address) as proxy:
        # The reload runs on the server; its answer never comes back.
        proxy.drop_answer("POST", "/v1/sys/plugins/reload/backend", forward=True)
        result = CliRun.invoke(
            ["apply", str(desired), "--yes", "--json", "--replace", "secret/demo-kv/v1.0.0"],
            env={"BAO_ADDR": proxy.address, "BAO_TOKEN": server.token},
        )
        sent = proxy.writes()
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert ("POST", "/v1/sys/plugins/reload/backend") in sent
    # The re-register and the reload: both were sent, both count.
    assert document["writes"] == len(sent) == 2, sent
