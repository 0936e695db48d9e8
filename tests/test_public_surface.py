"""What a library user imports from `reconciler`, and what importing it costs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler
from reconciler.demo.devserver import DevServer
from tests.helpers import mount_entry, write_desired

REPO = Path(__file__).parent.parent
# Modules that take most of the start-up time; `--help` and `import reconciler` need none.
HEAVY = ["deepdiff", "httpx", "pydantic", "reconciler.client", "reconciler.planner"]


# What a no-op `plan` and `validate` never need: the diff library (only a change is
# described with it), and the code of the other commands.
NOT_FOR_PLAN = ["deepdiff", "reconciler.demo", "reconciler.export", "reconciler.watch"]
NOT_FOR_VALIDATE = [*NOT_FOR_PLAN, "httpx", "reconciler.client", "reconciler.planner"]


def _all_loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    probe = (
        f"import atexit\n"
        f"def _report():\n"
        f"    import json, sys\n"
        f"    print(json.dumps(sorted(sys.modules)))\n"
        f"atexit.register(_report)\n"
        f"{code}"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def _loaded_after(code: str) -> list[str]:
    return [name for name in _all_loaded_after(code) if name in HEAVY]


def _command(*argv: str) -> str:
    return (
        f"import sys\nsys.argv = ['reconciler', *{list(argv)!r}]\n"
        "from reconciler.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code"
    )


def _among(loaded: list[str], packages: list[str]) -> list[str]:
    return [n for n in loaded if any(n == p or n.startswith(p + ".") for p in packages)]


def test_every_public_name_is_the_object_of_its_home_module() -> None:
    assert sorted(reconciler.__all__) == sorted([*reconciler._PUBLIC, "__version__"])
    for name, (module, attribute) in reconciler._PUBLIC.items():
        assert getattr(reconciler, name) is getattr(importlib.import_module(module), attribute)
    with pytest.raises(AttributeError):
        _ = reconciler.no_such_name  # type: ignore[attr-defined]


def test_make_plan_is_the_planner_even_after_the_plan_module_is_imported() -> None:
    import reconciler.plan  # noqa: F401, PLC0415 - the submodule that shares the word
    from reconciler import make_plan  # noqa: PLC0415
    from reconciler.planner import plan  # noqa: PLC0415

    assert make_plan is plan


def test_importing_the_package_loads_nothing_heavy() -> None:
    assert _loaded_after("import reconciler") == []


def test_help_loads_nothing_heavy() -> None:
    code = (
        "import sys\nsys.argv = ['reconciler', '--help']\nfrom reconciler.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []


def test_the_documented_library_pass_applies_a_file(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler import Client, apply, load_desired, make_plan, read_live_state  # noqa: PLC0415

    monkeypatch.setenv("BAO_ADDR", server.address)
    monkeypatch.setenv("BAO_TOKEN", server.token)
    path = write_desired(
        tmp_path, "version: 1\nsecrets:\n  - {path: library/, plugin: kv, options: {version: 2}}\n"
    )
    loaded = load_desired(path)
    with Client.from_environment() as client:
        the_plan = make_plan(loaded.state, read_live_state(client))
        result = apply(client, the_plan, loaded)
    assert result.converged, result.failures
    entry = mount_entry(server, "secret", "library/")
    assert (entry["type"], entry["options"]["version"]) == ("kv", "2")


def _many_mounts(tmp_path: Path) -> Path:
    mounts = "".join(f"  - {{path: m{n}/, plugin: kv}}\n" for n in range(20))
    return write_desired(tmp_path, f"version: 1\nsecrets:\n{mounts}")


def test_validate_loads_neither_the_client_nor_the_planner(tmp_path: Path) -> None:
    loaded = _all_loaded_after(_command("validate", str(_many_mounts(tmp_path))))
    assert "reconciler.loader" in loaded  # the probe ran the command
    assert _among(loaded, NOT_FOR_VALIDATE) == []


def test_a_no_op_plan_loads_no_diff_library_and_no_other_command(
    server: DevServer, tmp_path: Path
) -> None:
    from reconciler import Client, export_desired, read_live_state  # noqa: PLC0415

    with Client(server.address, server.token) as client:
        desired = tmp_path / "desired.yaml"
        desired.write_text(export_desired(read_live_state(client)))
    env = {**os.environ, "BAO_ADDR": server.address, "BAO_TOKEN": server.token}
    code = _command("plan", str(desired), "--detailed-exitcode")
    loaded = _all_loaded_after(code, env)
    assert "reconciler.planner" in loaded  # the probe planned
    assert _among(loaded, NOT_FOR_PLAN) == []


def test_a_changed_entry_is_still_described_field_by_field() -> None:
    # The other side of the lazy import: a changed entry still gets its field changes.
    from reconciler.planner._context import changes_between  # noqa: PLC0415

    changes = changes_between({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
    assert [(c.field, c.before, c.after) for c in changes] == [("b", {"c": 2}, {"c": 3})]
