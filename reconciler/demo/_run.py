"""`reconciler demo`: the product at work on a throw-away OpenBao dev server.

It starts `bao server -dev` on a free loopback port, writes the example
plugins into the server's plugin directory, copies the two example files
next to it, then validates, plans and applies `desired.yaml`, uses the
external plugins (and creates a database connection on demo-db, with
credentials that only the server holds), and upgrades with
`desired-upgrade.yaml`, which re-pins that connection to demo-db v2.0.0. Every step is
narrated through the `echo` callback (this module never prints), with the
command a user would type for it.

The example files and plugins ship inside the package and are found with
`importlib.resources`, so the demo works from any installation of
`reconciler[demo]`, not only from a checkout.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import click
import httpx

from reconciler import reconcile
from reconciler.client import Client
from reconciler.demo.devserver import DevServer, find_bao, start_dev_server
from reconciler.demo.examples.plugins import demo_db
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.errors import ReconcilerError
from reconciler.executor import ProgressEvent
from reconciler.loader import LoadedDesired, load_desired
from reconciler.model import LiveState
from reconciler.plan import Plan
from reconciler.planner import mount_target_name
from reconciler.reconcile import PassHooks, PassInput, plan_for
from reconciler.render import progress_line, render_plan, summary
from reconciler.resolver import runs_builtin
from reconciler.state import read_live_state

Echo = Callable[[str], None]

EXAMPLES_PACKAGE = "reconciler.demo.examples"
DESIRED = "desired.yaml"
DESIRED_UPGRADE = "desired-upgrade.yaml"
# The example files say `plugin_directory: ./plugins`: the server's plugin
# directory is created under that name next to them.
PLUGINS_DIR = "plugins"
HELLO_PATH = "demo/data/hello"
HELLO_DATA = {"greeting": "hello from the reconciler demo"}
# The database connection the demo creates by hand: its credentials live only on the
# server (and in the demo's database file), never in the desired-state files.
CONNECTION = "orders"
DATABASE_FILE = "databases/orders.json"
DATABASE_ROOT = ("demo-root", "demo-root-password")
# Python modules the example plugins import when the server starts them.
_PLUGIN_MODULES = {"grpc": "grpcio", "google.protobuf": "protobuf", "cryptography": "cryptography"}
_INSTALL_HINT = "install it with `pip install 'reconciler[demo]'`"


class DemoFailed(ReconcilerError):
    """A demo step failed; the message names the step, the cause and where the log is."""


def example_file(name: str) -> Traversable:
    """One of the example desired-state files, as shipped inside the installed package."""
    return importlib.resources.files(EXAMPLES_PACKAGE) / name


@dataclass
class DemoOutcome:
    """What the demo left behind; with `keep`, a server still running for the user."""

    seconds: float
    workdir: Path | None = None
    address: str = ""
    token: str = ""
    pid: int | None = None


def run_demo(
    echo: Echo,
    *,
    upgrade: bool = True,
    keep: bool = False,
    colour: bool = False,
    workdir: Path | None = None,
) -> DemoOutcome:
    """Run the demo, narrating through `echo`; raise DemoFailed when a step fails.

    The server is stopped and the workspace deleted at the end, unless `keep`
    asks to leave both for exploring. After a failure the workspace (with
    the server's log) is left in place and named in the error.
    """
    demo = _Demo(_Narrator(echo, colour), upgrade=upgrade, colour=colour, workdir=workdir)
    return demo.run(keep=keep)


# --- narration --------------------------------------------------------------


@dataclass
class _Narrator:
    echo: Echo
    colour: bool

    def _style(self, text: str, **styles: Any) -> str:
        return click.style(text, **styles) if self.colour else text

    def title(self, text: str) -> None:
        self.echo(self._style(text, bold=True))

    def step(self, number: int, total: int, text: str) -> None:
        self.echo("")
        self.echo(self._style(f"[{number}/{total}] {text}", bold=True))

    def note(self, text: str) -> None:
        self.echo(f"  {text}")

    def command(self, text: str) -> None:
        self.echo("  " + self._style(f"$ {text}", fg="cyan"))

    def output(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines() or [""]:
            self.echo(f"    {line}" if line else "")

    def diff(self, lines: list[str]) -> None:
        colours = {"+": "green", "-": "red"}
        for line in lines:
            colour = colours.get(line[:1])
            self.echo("    " + (self._style(line, fg=colour) if colour else line))

    def ok(self, text: str) -> None:
        self.echo("  " + self._style(f"✓ {text}", fg="green"))


# --- the steps ----------------------------------------------------------------


@dataclass
class _Demo:
    say: _Narrator
    upgrade: bool
    colour: bool
    workdir: Path | None
    server: DevServer | None = None
    client: Client | None = None
    http: httpx.Client | None = None
    first_pid: int | None = None
    first_db_user: str = ""
    verifying: bool = False
    started: float = field(default_factory=time.monotonic)

    def run(self, keep: bool) -> DemoOutcome:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("Start a throw-away OpenBao server", self._start_server),
            ("Put the example plugins and files in place", self._prepare_files),
            ("Check the desired-state file (no server needed)", self._validate),
            ("See what apply would change", self._plan_first),
            ("Apply it", self._apply_first),
            ("Use the external plugin", self._use_plugin),
        ]
        if self.upgrade:
            steps += [
                (
                    "Upgrade demo-kv and demo-db to v2.0.0, override the built-in transit",
                    self._plan_upgrade,
                ),
                ("Apply the upgrade", self._apply_upgrade),
                ("Check what every mount runs now", self._show_running),
                ("Read the secret again, issue database credentials", self._read_after_upgrade),
            ]
        self.say.title("reconciler demo: plan, apply and upgrade plugins on a local OpenBao server")
        self.say.note(
            "Nothing outside a temporary directory is touched; it takes about 10 seconds."
        )
        succeeded = False
        try:
            for number, (title, step) in enumerate(steps, start=1):
                self.say.step(number, len(steps), title)
                try:
                    step()
                except (ReconcilerError, OSError, httpx.HTTPError, RuntimeError) as error:
                    raise DemoFailed(self._failure(title, error)) from error
            succeeded = True
        finally:
            if self.http is not None:
                self.http.close()
            if self.client is not None:
                self.client.close()
            if self.server is not None and not (succeeded and keep):
                self.server.stop()
        seconds = time.monotonic() - self.started
        if keep:
            return self._kept(seconds)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.say.echo("")
        self.say.title(f"Done in {seconds:.1f} s: the server is stopped and its files deleted.")
        self.say.note("On your own server, start from what it has:")
        self.say.command("reconciler export --out desired.yaml")
        self.say.command("reconciler plan desired.yaml      # → no changes")
        self.say.note("`reconciler demo --keep` leaves the demo server running to explore.")
        return DemoOutcome(seconds=seconds)

    def _failure(self, title: str, error: BaseException) -> str:
        message = f"demo step {title!r} failed: {error}"
        if self.workdir is not None:
            message += f"\nworkspace kept for inspection: {self.workdir}"
        if self.server is not None:
            message += f"\nserver log: {self.server.log_path}"
        return message

    def _kept(self, seconds: float) -> DemoOutcome:
        server, workdir = self.server, self.workdir
        assert server is not None and workdir is not None
        self.say.echo("")
        self.say.title(
            f"Done in {seconds:.1f} s. The server keeps running (pid {server.process.pid})."
        )
        self.say.note("To explore it from another shell:")
        self.say.command(f"cd {workdir}")
        self.say.command(f"export BAO_ADDR={server.address} BAO_TOKEN={server.token}")
        self.say.command(f"reconciler plan {DESIRED_UPGRADE if self.upgrade else DESIRED}")
        self.say.command(f"bao read {HELLO_PATH}")
        self.say.note("When you are done:")
        self.say.command(f"kill {server.process.pid} && rm -rf {workdir}")
        return DemoOutcome(
            seconds=seconds,
            workdir=workdir,
            address=server.address,
            token=server.token,
            pid=server.process.pid,
        )

    # 1 ------------------------------------------------------------------------

    def _start_server(self) -> None:
        missing = [pkg for mod, pkg in _PLUGIN_MODULES.items() if not _importable(mod)]
        if missing:
            raise DemoFailed(f"the example plugins need {', '.join(missing)}: {_INSTALL_HINT}")
        bao = find_bao()
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="reconciler-demo-"))
        self.say.note(f"workspace: {self.workdir}")
        self.say.note(f"bao server -dev, with plugin_directory = {self.workdir / PLUGINS_DIR}")
        self.server = start_dev_server(self.workdir / PLUGINS_DIR, workdir=self.workdir / "server")
        version = _server_version(self.server)
        self.say.ok(
            f"OpenBao {version} (dev mode: in memory, unsealed) listens on {self.server.address}"
        )
        self.say.note(f"binary: {bao}")
        self.say.note(
            "The commands below are what you would type in the workspace, after\n"
            f"  `export BAO_ADDR={self.server.address} BAO_TOKEN=<the dev root token>`."
        )

    # 2 ------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        server, workdir = self._server(), self._workdir()
        self.say.note(
            f"Each plugin is one executable in the server's plugin directory, {PLUGINS_DIR}/:"
        )
        for plugin in build_plugins(server.plugin_directory):
            self.say.output(
                f"{PLUGINS_DIR}/{plugin.command:<16} {plugin.type:<6} {plugin.name:<9} "
                f"{plugin.version}  sha256 {plugin.sha256[:12]}…"
            )
        for name in (DESIRED, DESIRED_UPGRADE):
            (workdir / name).write_bytes(example_file(name).read_bytes())
        self.say.note(
            f"The desired state: {DESIRED} (and {DESIRED_UPGRADE} for later), next to "
            f"{PLUGINS_DIR}/."
        )
        self.say.note(
            "It declares demo-kv v1.0.0, demo-auth v1.0.0 and the database plugin demo-db\n"
            "  v1.0.0 (external plugins), mounts demo-kv at demo/ and apps/, demo-auth at\n"
            "  auth/demo-login/, and the built-ins kv at kv/, transit at transit/ and database\n"
            "  at db/. Its `plugin_directory: ./plugins` lets the loader hash each binary, so\n"
            "  the file needs no sha256 and a tampered binary is never registered."
        )

    # 3 ------------------------------------------------------------------------

    def _validate(self) -> None:
        loaded = self._load(DESIRED)
        self.say.command(f"reconciler validate {DESIRED}")
        mounts = len(loaded.state.secrets) + len(loaded.state.auth)
        self.say.output(f"{DESIRED}: valid ({len(loaded.state.plugins)} plugins, {mounts} mounts)")

    # 4 ------------------------------------------------------------------------

    def _plan_first(self) -> None:
        self.say.command(f"reconciler plan {DESIRED}")
        self._show_plan(self._plan(DESIRED))
        self.say.note(
            "secret/ is the dev server's own mount: the file does not list it, so it is\n"
            "  reported as unmanaged and left alone. Nothing is written yet: plan only reads."
        )

    # 5 ------------------------------------------------------------------------

    def _apply_first(self) -> None:
        self._apply(DESIRED)

    # 6 ------------------------------------------------------------------------

    def _use_plugin(self) -> None:
        http = self._http()
        value = " ".join(f'{k}="{v}"' for k, v in HELLO_DATA.items())
        self.say.command(f"bao write {HELLO_PATH} {value}")
        _check(http.post(f"/v1/{HELLO_PATH}", json=HELLO_DATA))
        self.say.output(f"Success! Data written to: {HELLO_PATH}")
        self.say.command(f"bao read {HELLO_PATH}")
        data = _data(http.get(f"/v1/{HELLO_PATH}"))
        self.say.output(_table(data))
        if any(data.get(k) != v for k, v in HELLO_DATA.items()):
            raise DemoFailed(f"{HELLO_PATH} read back {data}, expected {HELLO_DATA}")
        info = self._info("demo/info")
        self.first_pid = int(info["pid"])
        self.say.ok(
            f"demo/ is served by {info.get('name')} {info.get('version')}, "
            f"a plugin process with pid {self.first_pid}"
        )
        self._connect_database()

    def _connect_database(self) -> None:
        """Create connection `orders` on db/ with its credentials, as a user does by hand."""
        http, workdir = self._http(), self._workdir()
        database = workdir / DATABASE_FILE
        database.parent.mkdir(parents=True, exist_ok=True)
        user, password = DATABASE_ROOT
        demo_db.create_database(database, user, password)
        self.say.note(
            "A database connection holds credentials, so it is created by hand, never from\n"
            "  the file (demo-db keeps its users in a local file):"
        )
        self.say.command(
            f"bao write db/config/{CONNECTION} plugin_name=demo-db plugin_version=v1.0.0 \\\n"
            f"      connection_url=demo-db://$PWD/{DATABASE_FILE} username={user} "
            "password=... allowed_roles=reader"
        )
        _check(
            http.post(
                f"/v1/db/config/{CONNECTION}",
                json={
                    "plugin_name": "demo-db",
                    "plugin_version": "v1.0.0",
                    "connection_url": demo_db.connection_url(database),
                    "username": user,
                    "password": password,
                    "allowed_roles": ["reader"],
                },
            )
        )
        self.say.command(
            f"bao write db/roles/reader db_name={CONNECTION} creation_statements=- default_ttl=1h"
        )
        _check(
            http.post(
                "/v1/db/roles/reader",
                json={"db_name": CONNECTION, "creation_statements": ["-"], "default_ttl": "1h"},
            )
        )
        self.first_db_user = self._issue_credentials()

    def _issue_credentials(self) -> str:
        self.say.command("bao read db/creds/reader")
        issued = _data(self._http().get("/v1/db/creds/reader"))
        username = str(issued.get("username", ""))
        self.say.output(_table({"username": username, "password": "(not shown)"}))
        self.say.ok(f"demo-db created the user {username} (its name says which version did)")
        return username

    # 7 ------------------------------------------------------------------------

    def _plan_upgrade(self) -> None:
        self.say.note(
            f"{DESIRED_UPGRADE} differs from {DESIRED} in these lines (comments left out):"
        )
        self.say.diff(self._file_diff())
        self.say.command(f"reconciler plan {DESIRED_UPGRADE}")
        self._show_plan(self._plan(DESIRED_UPGRADE))
        self.say.note(
            "Reloads restart exactly the mounts whose plugin changes: one canary mount\n"
            "  first, verified before the others; demo-kv v1.0.0 stays registered, so a\n"
            "  failed upgrade goes back to it. The connection is re-pinned: the server\n"
            "  starts demo-db v2.0.0 with the stored credentials and keeps v1.0.0 running\n"
            "  if v2.0.0 cannot connect. demo-db v1.0.0 is deregistered only after the\n"
            "  connection is verified on v2.0.0."
        )

    def _file_diff(self) -> list[str]:
        workdir = self._workdir()
        before, after = (
            _without_comments((workdir / name).read_text()) for name in (DESIRED, DESIRED_UPGRADE)
        )
        lines = difflib.unified_diff(before, after, lineterm="", n=2)
        return [line for line in lines if not line.startswith(("---", "+++", "@@"))]

    # 8 ------------------------------------------------------------------------

    def _apply_upgrade(self) -> None:
        self._apply(DESIRED_UPGRADE)

    # 9 ------------------------------------------------------------------------

    def _show_running(self) -> None:
        live = read_live_state(self._client())
        self.say.note("Read back from the server's mount tables (sys/mounts, sys/auth):")
        self.say.output(_running_table(live))
        _check_running(live)
        self.say.ok("every external mount runs the binary whose sha256 is in the catalog")
        info = self._info("transit/info")
        self.say.ok(
            f"transit/ is now served by the {info.get('engine', 'external')} plugin "
            f"{info.get('version')} (the built-in has no `info` path)"
        )

    # 10 -----------------------------------------------------------------------

    def _read_after_upgrade(self) -> None:
        self.say.command(f"bao read {HELLO_PATH}")
        data = _data(self._http().get(f"/v1/{HELLO_PATH}"))
        self.say.output(_table(data))
        if any(data.get(k) != v for k, v in HELLO_DATA.items()):
            raise DemoFailed(
                f"{HELLO_PATH} read back {data} after the upgrade, expected {HELLO_DATA}"
            )
        if data.get("engine") != "demo-kv v2":
            raise DemoFailed(f"{HELLO_PATH} is not served by demo-kv v2 after the upgrade: {data}")
        info = self._info("demo/info")
        self.say.ok(
            f"the secret survived the upgrade; engine: {data['engine']} "
            f"(now {info.get('name')} {info.get('version')}, pid {info.get('pid')}, "
            f"was {self.first_pid})"
        )
        self.say.command(f"bao read -field=plugin_version db/config/{CONNECTION}")
        pin = _data(self._http().get(f"/v1/db/config/{CONNECTION}")).get("plugin_version")
        self.say.output(str(pin))
        username = self._issue_credentials()
        users = demo_db.read_database(self._workdir() / DATABASE_FILE)["users"]
        if pin != "v2.0.0" or "-v2.0.0-" not in username:
            raise DemoFailed(f"db/{CONNECTION} does not run demo-db v2.0.0: {pin}, {username}")
        if self.first_db_user not in users:
            raise DemoFailed(f"the user {self.first_db_user} did not survive the upgrade")
        self.say.ok(f"the user {self.first_db_user} created by v1.0.0 is still in the database")

    # --- shared helpers ---------------------------------------------------------

    def _load(self, name: str) -> LoadedDesired:
        return load_desired(self._workdir() / name)

    def _plan(self, name: str) -> Plan:
        plan = plan_for(self._client(), self._load(name))
        if plan.errors:
            raise DemoFailed(
                f"the plan for {name} has errors: "
                + "; ".join(f"{p.target}: {p.message}" for p in plan.errors)
            )
        return plan

    def _show_plan(self, plan: Plan) -> None:
        text = render_plan(plan, colour=self.colour)
        # The workspace is the current directory of the commands shown.
        self.say.output(text.replace(f"{self._workdir()}/", ""))

    def _apply(self, name: str) -> None:
        self.say.command(f"reconciler apply {name} --yes")
        self.verifying = False
        hooks = PassHooks(
            on_plan=lambda plan: self.say.output(f"Plan: {summary(plan)}."),
            progress=self._progress,
        )
        result = reconcile.run_pass(self._client(), PassInput(self._load(name)), hooks=hooks)
        if not result.converged:
            raise DemoFailed(
                f"apply {name}: {result.verdict}:\n"
                + "\n".join(f"  {line}" for line in result.problems())
            )
        self.say.ok(f"applied and verified: {summary(result.plan)}")

    def _progress(self, event: ProgressEvent) -> None:
        line = progress_line(event)
        if event.action is None:
            if self.verifying:
                return
            # Said once, in full, instead of one line per verification step.
            self.verifying = True
            line = (
                "verifying: re-read and re-plan (must be empty), running versions and sha256, "
                "every touched mount answers, every declared connection reports its pin"
            )
        if line is not None:
            self.say.output(line)

    def _info(self, path: str) -> dict[str, Any]:
        self.say.command(f"bao read {path}")
        data = _data(self._http().get(f"/v1/{path}"))
        self.say.output(_table({k: data[k] for k in sorted(data) if k != "started_unix"}))
        return data

    def _client(self) -> Client:
        if self.client is None:
            server = self._server()
            # Not from the environment: a user's BAO_ADDR or BAO_NAMESPACE must not leak in.
            self.client = Client(server.address, server.token)
        return self.client

    def _http(self) -> httpx.Client:
        # Plain HTTP, as an application using the secrets engine would talk to it.
        if self.http is None:
            server = self._server()
            self.http = httpx.Client(
                base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=30
            )
        return self.http

    def _server(self) -> DevServer:
        assert self.server is not None, "the server is started by the first step"
        return self.server

    def _workdir(self) -> Path:
        assert self.workdir is not None, "the workspace is made by the first step"
        return self.workdir


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _server_version(server: DevServer) -> str:
    with httpx.Client(timeout=5) as http:
        body = http.get(f"{server.address}/v1/sys/seal-status").json()
    return str(body.get("version", "?"))


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        errors = "; ".join(response.json().get("errors", [])) if response.content else ""
        raise DemoFailed(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {errors}".rstrip()
        )


def _data(response: httpx.Response) -> dict[str, Any]:
    _check(response)
    return dict(response.json().get("data") or {})


def _table(data: dict[str, Any]) -> str:
    width = max((len(k) for k in data), default=0)
    rows = [f"{'Key':<{width}}    Value", f"{'---':<{width}}    -----"]
    rows += [f"{k:<{width}}    {v}" for k, v in sorted(data.items())]
    return "\n".join(rows)


def _without_comments(text: str) -> list[str]:
    # Good enough for the example files, which have no "#" inside values.
    lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
    return [line for line in lines if line]


def _running_table(live: LiveState) -> str:
    rows = [("MOUNT", "PLUGIN", "RUNNING VERSION", "RUNNING SHA256")]
    for mount in sorted(live.mounts, key=lambda m: (m.kind != "secret", m.path)):
        if mount.reserved:
            continue
        builtin = runs_builtin(mount)
        rows.append(
            (
                mount_target_name(mount.kind, mount.path),
                mount.plugin,
                mount.running_plugin_version + (" (built-in)" if builtin else ""),
                "-" if builtin else mount.running_sha256[:12] + "…",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _check_running(live: LiveState) -> None:
    """Each external mount runs its catalog entry's binary; demo-kv and transit were upgraded."""
    catalog = live.external_sha256()
    expected = {"demo/": "v2.0.0", "apps/": "v2.0.0", "transit/": "v1.0.0"}
    problems = []
    for mount in live.mounts:
        if mount.reserved or runs_builtin(mount):
            continue
        key = (mount.kind, mount.plugin, mount.running_plugin_version)
        if catalog.get(key) != mount.running_sha256:
            problems.append(f"{mount.api_path} runs a binary that is not its catalog entry's")
    for mount in live.mounts:
        want = expected.get(mount.path) if mount.kind == "secret" else None
        if want and (runs_builtin(mount) or mount.running_plugin_version != want):
            problems.append(f"{mount.api_path} runs {mount.running_plugin_version}, not {want}")
    if problems:
        raise DemoFailed("; ".join(problems))
