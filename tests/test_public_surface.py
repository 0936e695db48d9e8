"""What a library user imports from `reconciler`, and what importing it costs."""

from __future__ import annotations

import importlib
import json
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


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [name for name in json.loads(result.stdout.splitlines()[-1]) if name in HEAVY]


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
