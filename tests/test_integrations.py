"""The integrations shipped with the project: pre-commit hook, shell completion, and the
GitHub Actions, systemd and Kubernetes examples, kept in step with the command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from reconciler.cli import cli
from tests.helpers import CliRun, write_desired

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
VALID = "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n"
INVALID = "version: 1\nsecrets:\n  - {path: app/}\n"


def _yaml_documents(path: Path) -> list[Any]:
    return list(YAML(typ="safe").load_all(path.read_text()))


def _check_invocation(words: list[str], where: str) -> None:
    """`reconciler COMMAND [args]`: the command exists and every --flag is one of its own."""
    assert words, where
    command = cli.commands.get(words[0])
    assert isinstance(command, click.Command), f"{where}: no command {words[0]!r}"
    flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    for word in words[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in flags, f"{where}: `{words[0]} {flag}` is not a flag of the CLI"


def _shell_invocations(script: str) -> list[list[str]]:
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part.split(">", 1)[0], comments=True)
            # The program of a simple command (not `pip install reconciler`).
            if words and (words[0] == "reconciler" or words[0].endswith("/reconciler")):
                found.append(words[1:])
    return found


def test_the_systemd_unit_uses_existing_flags_and_matches_the_docs() -> None:
    unit = (EXAMPLES / "systemd" / "reconciler.service").read_text()
    exec_start = re.search(r"^ExecStart=((?:.*\\\n)*.*)", unit, re.MULTILINE)
    assert exec_start is not None
    (invocation,) = _shell_invocations(exec_start.group(1))
    assert invocation[0] == "watch"
    _check_invocation(invocation, "systemd ExecStart")
    assert unit in (ROOT / "docs" / "watch.md").read_text(), "docs/watch.md shows another unit"


def test_the_kubernetes_sidecar_uses_existing_flags_and_matches_the_docs(tmp_path: Path) -> None:
    path = EXAMPLES / "kubernetes" / "sidecar.yaml"
    documents = _yaml_documents(path)
    containers = documents[1]["spec"]["template"]["spec"]["containers"]
    (sidecar,) = [c for c in containers if c["name"] == "reconciler"]
    _check_invocation([str(arg) for arg in sidecar["args"]], "Kubernetes sidecar args")
    desired = documents[0]["data"]["desired.yaml"]
    assert CliRun.invoke(["validate", str(write_desired(tmp_path, desired))]).ok
    assert path.read_text() in (ROOT / "docs" / "watch.md").read_text()


def test_the_github_actions_example_is_a_workflow_using_existing_flags() -> None:
    (workflow,) = _yaml_documents(EXAMPLES / "github-actions" / "reconcile.yml")
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
    assert set(triggers) == {"pull_request", "push"}
    invocations = []
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] and job["steps"], name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{name}: a step runs or uses"
            invocations += _shell_invocations(step.get("run", ""))
    for words in invocations:
        _check_invocation(words, "GitHub Actions step")
    commands = [
        " ".join(words[:1] + [w for w in words if w.startswith("--")]) for words in invocations
    ]
    assert "plan --detailed-exitcode --out" in commands  # plan on pull requests
    assert any(c.startswith("apply") for c in commands)
    assert any(w[:2] == ["apply", "plan.json"] for w in invocations)  # the saved plan


def test_the_pre_commit_hook_validates_the_files_it_is_given(tmp_path: Path) -> None:
    (hooks,) = _yaml_documents(ROOT / ".pre-commit-hooks.yaml")
    (hook,) = hooks
    assert hook["id"] == "reconciler-validate" and hook["language"] == "python"
    assert re.search(hook["files"], "deploy/desired.yaml")
    assert not re.search(hook["files"], ".github/workflows/ci.yaml")
    # pre-commit runs `entry` with the changed files appended.
    entry = shlex.split(hook["entry"])
    assert entry[0] == "reconciler"
    good = write_desired(tmp_path, VALID, name="desired.yaml")
    bad = write_desired(tmp_path, INVALID, name="desired-broken.yaml")
    assert CliRun.invoke([*entry[1:], str(good)]).ok
    both = CliRun.invoke([*entry[1:], str(good), str(bad)])
    assert both.exit_code == 1
    assert f"{good}: valid" in both.stdout and f"{bad}:3:5:" in both.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion(shell: str) -> None:
    script = CliRun.invoke(["completion", shell])
    assert script.ok and "_RECONCILER_COMPLETE" in script.stdout
    completed = CliRunner().invoke(
        cli,
        [],
        prog_name="reconciler",
        env={
            "_RECONCILER_COMPLETE": "bash_complete",
            "COMP_WORDS": "reconciler pl",
            "COMP_CWORD": "1",
        },
    )
    assert "plan" in completed.output and "apply" not in completed.output
