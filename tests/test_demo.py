"""`reconciler demo` end to end, and where it finds the files it ships with."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import reconciler
from reconciler import demo
from reconciler.demo.devserver import DevServerError, find_bao

REPO = Path(__file__).resolve().parents[1]


def _environment(**extra: str) -> dict[str, str]:
    # A user's BAO_ADDR must not matter: the demo talks to its own server only.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["BAO_ADDR"] = "http://127.0.0.1:9"  # nothing listens there
    env["BAO_NAMESPACE"] = "team-a"  # the dev server has no such namespace
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def bao() -> str:
    try:
        return find_bao()
    except DevServerError as error:
        # A missing `bao` must fail the run, never skip the end-to-end tests.
        pytest.fail(f"the demo needs the OpenBao binary: {error}", pytrace=False)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def section(self, start: str, end: str | None = None) -> str:
        """The output from the step titled `start` up to the step titled `end`."""
        text = self.stdout[self.stdout.index(start) :]
        return text[: text.index(end)] if end else text


def _run_demo(cwd: Path, *args: str) -> Run:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", *args],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def full_run(bao: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    # Run from an unrelated directory: nothing may be found relative to the checkout.
    return _run_demo(tmp_path_factory.mktemp("elsewhere"))


def test_demo_succeeds(full_run: Run) -> None:
    assert full_run.returncode == 0, full_run.stdout + full_run.stderr
    assert "Traceback" not in full_run.stdout + full_run.stderr
    assert "the server is stopped" in full_run.stdout


def test_demo_validates_plans_and_applies_the_first_file(full_run: Run) -> None:
    assert "desired.yaml: valid (3 plugins, 6 mounts)" in full_run.stdout
    first_plan = full_run.section("$ reconciler plan desired.yaml", "$ reconciler apply")
    assert "+ register secret/demo-kv/v1.0.0" in first_plan
    assert "+ enable secrets/demo/" in first_plan
    assert "+ enable auth/demo-login/" in first_plan
    first_apply = full_run.section("$ reconciler apply desired.yaml", "Use the external plugin")
    assert "✓ applied and verified" in first_apply


def test_demo_uses_the_external_plugin(full_run: Run) -> None:
    before_upgrade = full_run.section("Use the external plugin", "Upgrade demo-kv")
    assert "$ bao write demo/data/hello" in before_upgrade
    assert "hello from the reconciler demo" in before_upgrade
    assert re.search(r"version\s+v1\.0\.0", before_upgrade)


def test_demo_upgrade_plan_registers_tunes_and_reloads_canary_first(full_run: Run) -> None:
    plan = full_run.section(
        "$ reconciler plan desired-upgrade.yaml", "$ reconciler apply desired-upgrade.yaml"
    )
    assert "+ register secret/demo-kv/v2.0.0" in plan
    assert "+ register secret/transit/v1.0.0" in plan
    assert "~ tune secrets/demo/" in plan
    # The two demo-kv mounts onto v2.0.0: a canary, then the other.
    assert plan.count("↻ reload") == 2
    assert "canary for demo-kv v2.0.0" in plan
    assert "overrides the built-in secret plugin 'transit'" in plan
    assert "+ register database/demo-db/v2.0.0" in plan
    assert "⇢ repin secrets/db/connections/orders" in plan
    assert "- deregister database/demo-db/v1.0.0" in plan
    assert "sys/plugins/reload" not in plan


def test_demo_shows_what_every_mount_runs_after_the_upgrade(full_run: Run) -> None:
    table = full_run.section("MOUNT", "Read the secret again")
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert rows["secrets/demo/"][1:3] == ["demo-kv", "v2.0.0"]
    assert rows["secrets/apps/"][1:3] == ["demo-kv", "v2.0.0"]
    assert rows["secrets/transit/"][1:3] == ["transit", "v1.0.0"]
    assert re.fullmatch(r"[0-9a-f]{12}…", rows["secrets/transit/"][3])
    assert "(built-in)" in " ".join(rows["secrets/kv/"])
    assert rows["auth/demo-login/"][1:3] == ["demo-auth", "v1.0.0"]


def test_demo_reads_the_secret_back_from_v2(full_run: Run) -> None:
    after = full_run.section("Read the secret again")
    assert "hello from the reconciler demo" in after
    assert re.search(r"engine\s+demo-kv v2", after)
    assert "the secret survived the upgrade" in after


def test_demo_upgrades_the_database_connection_and_never_shows_its_password(
    full_run: Run,
) -> None:
    before = full_run.section("Use the external plugin", "Upgrade demo-kv")
    assert re.search(r"username\s+reader-v1\.0\.0-", before)
    after = full_run.section("Read the secret again")
    assert re.search(r"username\s+reader-v2\.0\.0-", after)
    assert "created by v1.0.0 is still in the database" in after
    assert "demo-root-password" not in full_run.stdout + full_run.stderr


def test_demo_keep_leaves_a_usable_server(bao: str, tmp_path: Path) -> None:
    run = _run_demo(tmp_path, "--no-upgrade", "--keep")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Upgrade demo-kv" not in run.stdout
    # The last export line is the one with the real token (step 1 shows a placeholder).
    exports = re.findall(r"export BAO_ADDR=(\S+) BAO_TOKEN=(\S+)", run.stdout)
    stop = re.search(r"kill (\d+) && rm -rf (\S+)", run.stdout)
    assert exports and stop, run.stdout
    address, token = exports[-1]
    pid, workdir = int(stop.group(1)), Path(stop.group(2))
    try:
        with httpx.Client(base_url=address, headers={"X-Vault-Token": token}) as http:
            read = http.get("/v1/demo/data/hello")
        assert read.status_code == 200, read.text
        assert read.json()["data"]["greeting"] == "hello from the reconciler demo"
        assert (workdir / "desired.yaml").is_file()
    finally:
        os.kill(pid, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


def test_demo_fails_cleanly_without_bao(tmp_path: Path) -> None:
    # An interpreter whose directory has no `bao` and a PATH that has none either.
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_BAO],
        cwd=tmp_path,
        env=_environment(PATH=str(tmp_path)),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'reconciler[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


_WITHOUT_BAO = """
import sys
from pathlib import Path
sys.executable = str(Path.cwd() / "python")
sys.argv = ["reconciler", "demo"]
from reconciler.cli import main
main()
"""


# --- the files ship inside the package ----------------------------------------


def test_example_files_are_package_resources() -> None:
    for name in (demo.DESIRED, demo.DESIRED_UPGRADE):
        found = demo.example_file(name)
        assert found.is_file()
        assert Path(str(found)) == Path(reconciler.__file__).parent / "demo" / "examples" / name


def test_example_files_follow_the_package_not_the_checkout(tmp_path: Path) -> None:
    """A copy of the package elsewhere finds its own files, wherever it is run from."""
    site = tmp_path / "site"
    shutil.copytree(
        Path(reconciler.__file__).parent,
        site / "reconciler",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    probe = (
        "import reconciler, reconciler.demo as d;"
        "print(reconciler.__file__);"
        "print(d.example_file('desired.yaml'));"
        "print(d.example_file('desired-upgrade.yaml').read_text()[:40])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=_environment(PYTHONPATH=str(site)),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    package, desired, upgrade_head = result.stdout.splitlines()[:3]
    assert Path(package).is_relative_to(site)
    assert Path(desired) == site / "reconciler" / "demo" / "examples" / "desired.yaml"
    assert upgrade_head.startswith("# The demo's second step")


def test_wheel_ships_what_the_demo_needs(tmp_path: Path) -> None:
    """`pip install 'reconciler[demo]'` gets the example files and plugins."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "reconciler", source / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(tmp_path / "dist"), str(source)),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    # setuptools and wheel come with the dev extra: a missing one is a broken setup.
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("reconciler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "reconciler/demo/__init__.py",
        "reconciler/demo/_run.py",
        "reconciler/demo/devserver.py",
        "reconciler/demo/examples/desired.yaml",
        "reconciler/demo/examples/desired-upgrade.yaml",
        "reconciler/demo/examples/plugins/build.py",
        "reconciler/demo/examples/plugins/demo_kv.py",
        "reconciler/demo/examples/plugins/proto/backend_pb2.py",
    ):
        assert needed in names
