"""A pure model of an OpenBao 2.7.2 server's catalog and mount table.

Property tests apply a plan's actions here and plan again. Each action is
carried out the way the server answers the request the executor sends for
it (SPEC §1 "Server facts"); a request the server would refuse, or one that
would leave a mount without a backend, raises `ServerRefused`, so a plan that
only works on a friendlier server fails the property.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from reconciler.builtin_releases import RELEASES
from reconciler.builtins import SHIPPED_RELEASE
from reconciler.model import CatalogEntry, LiveMount, LiveState
from reconciler.plan import (
    Action,
    DeregisterAction,
    DisableAction,
    EnableAction,
    EnableParams,
    MoveAction,
    Plan,
    RegisterAction,
    RegistrationParams,
    ReloadAction,
    ReloadParams,
    RepinAction,
    ReplaceAction,
    ResetAction,
    Stage,
    TuneAction,
    UpdateAction,
)
from reconciler.resolver import (
    HARD_WIRED_BUILTINS,
    effective_entry,
    is_builtin_version,
    live_builtins,
    newest_version,
    split_api_path,
)

BUILTIN_VERSION = f"v{SHIPPED_RELEASE}+builtin.bao"

# The built-ins `GET sys/plugins/catalog` of the shipped release lists (generated data).
CATALOGUED_BUILTINS: dict[str, tuple[str, ...]] = RELEASES[SHIPPED_RELEASE]

# (running_plugin_version, running_sha256); sha256 "" means a built-in runs.
Running = tuple[str, str]


class ServerRefused(Exception):
    """The server would answer 4xx, or the mount would be left without a backend."""


def builtin_catalog(version: str = BUILTIN_VERSION) -> list[CatalogEntry]:
    """The built-in entries of OpenBao 2.7.2's catalog."""
    return [
        CatalogEntry(type=plugin_type, name=name, version=version, builtin=True)
        for plugin_type, names in sorted(CATALOGUED_BUILTINS.items())
        for name in names
    ]


def reserved_mounts(version: str = BUILTIN_VERSION) -> list[LiveMount]:
    """The mounts every server has and no file may declare."""
    return [
        LiveMount(
            kind=kind,
            path=path,
            plugin=plugin,
            running_plugin_version=version,
            description=description,
        )
        for kind, path, plugin, description in (
            ("secret", "sys/", "system", "system endpoints"),
            ("secret", "identity/", "identity", "identity store"),
            ("secret", "cubbyhole/", "cubbyhole", "per-token private storage"),
            ("auth", "token/", "token", "token based credentials"),
        )
    ]


def resolve(catalog: Iterable[CatalogEntry], kind: str, plugin: str, pin: str) -> Running | None:
    """What a mount with this pin runs after enable or reload; None: no backend."""
    entries = {e.key: e for e in catalog}
    builtins = live_builtins(entries.values())
    external = {key for key, e in entries.items() if not e.builtin}
    target = effective_entry(kind, plugin, pin, external, builtins)
    if target is None:
        return None
    if target.key is None:
        return (builtins.get((kind, plugin)) or BUILTIN_VERSION, "")
    return (target.version, entries[target.key].sha256)


def settle(live: LiveState) -> LiveState:
    """Every mount running what its pin resolves to, as after a restart."""
    mounts = []
    for mount in live.mounts:
        running = resolve(live.catalog, mount.kind, mount.plugin, mount.plugin_version)
        if running is None:
            raise ServerRefused(f"{mount.path}: no backend for {mount.plugin}")
        mounts.append(
            mount.model_copy(
                update={"running_plugin_version": running[0], "running_sha256": running[1]}
            )
        )
    return live.model_copy(update={"mounts": mounts})


def apply_effects(
    plan: Plan,
    live: LiveState,
    *,
    stages: Iterable[Stage] = (Stage.CONVERGE, Stage.CLEANUP),
    tune_keeps_builtin_pin: bool = False,
) -> LiveState:
    """The live state after the server carried out every action of `plan` in `stages`.

    `tune_keeps_builtin_pin` picks between the two readings of the server's answer
    to tuning `plugin_version` to a built-in's version: stored as "" (unpinned) or
    stored as given (it reads back as "" only after a server upgrade). A plan must
    converge under both.
    """
    server = _Server(live, tune_keeps_builtin_pin)
    wanted = set(stages)
    for action in plan.actions:
        if action.stage in wanted:
            server.apply(action)
    return server.state()


class _Server:
    def __init__(self, live: LiveState, tune_keeps_builtin_pin: bool) -> None:
        self.server = live.server
        self.catalog: dict[tuple[str, str, str], CatalogEntry] = {e.key: e for e in live.catalog}
        self.mounts: dict[tuple[str, str], LiveMount] = {(m.kind, m.path): m for m in live.mounts}
        self.tune_keeps_builtin_pin = tune_keeps_builtin_pin
        self.connections = {(c.mount, c.name): c for c in live.connections}

    def state(self) -> LiveState:
        return LiveState(
            server=self.server,
            catalog=[self.catalog[k] for k in sorted(self.catalog)],
            mounts=[self.mounts[k] for k in sorted(self.mounts)],
            connections=[self.connections[k] for k in sorted(self.connections)],
        )

    def apply(self, action: Action) -> None:
        match action:
            case RegisterAction(params=p) | UpdateAction(params=p):
                self._register(p)
            case DeregisterAction(params=p):
                self.catalog.pop((p.type, p.name, p.version), None)
            case EnableAction(params=p):
                self._enable(p)
            case ReplaceAction(params=p):
                self._disable(p.kind, p.path)
                self._enable(p)
            case MoveAction(params=p):
                self._move(p.kind, p.from_path, p.to)
            case TuneAction(params=p):
                self._tune(p.kind, p.path, p.body)
            case DisableAction(params=p):
                self._disable(p.kind, p.path)
            case ReloadAction(params=p):
                self._reload(p)
            case RepinAction(params=p):
                self._repin(p.mount, p.name, p.version)
            case ResetAction():
                pass  # restarts the process; the catalog and the pin stay as they are
            case _:  # pragma: no cover - every kind is handled above
                raise AssertionError(action.kind)

    def _repin(self, mount: str, name: str, version: str) -> None:
        connection = self.connections.get((mount, name))
        if connection is None:
            raise ServerRefused(f"repin {mount}{name}: no such connection")
        runs_unpinned = any(
            (e.type, e.name) == ("database", connection.plugin) and (e.builtin or not e.version)
            for e in self.catalog.values()
        )
        known = ("database", connection.plugin, version) in self.catalog
        if not (known if version else runs_unpinned):
            raise ServerRefused(f"repin {mount}{name}: plugin not found in the catalog")
        self.connections[mount, name] = connection.model_copy(update={"plugin_version": version})

    # --- catalog ---------------------------------------------------------------

    def _register(self, p: RegistrationParams) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", p.sha256):
            raise ServerRefused(f"register {p.name}: invalid sha256")
        if is_builtin_version(p.version):
            raise ServerRefused(f"register {p.name}: a built-in version cannot be registered")
        entry = CatalogEntry(
            type=p.type,
            name=p.name,
            version=p.version,
            sha256=p.sha256,
            command=p.command,
            args=list(p.args),
        )
        self.catalog[entry.key] = entry

    def _externals(self, kind: str, plugin: str) -> list[CatalogEntry]:
        return [
            e for e in self.catalog.values() if not e.builtin and (e.type, e.name) == (kind, plugin)
        ]

    # --- mounts ----------------------------------------------------------------

    def _mount(self, kind: str, path: str) -> LiveMount:
        mount = self.mounts.get((kind, path))
        if mount is None:
            raise ServerRefused(f"no mount {kind} {path}")
        return mount

    def _enable(self, p: EnableParams) -> None:
        kind, path, plugin = p.kind, p.path, p.plugin
        if (kind, path) in self.mounts:
            raise ServerRefused(f"enable {path}: path is already in use")
        pin = self._pin_on_enable(kind, plugin, p.plugin_version or "")
        running = resolve(self.catalog.values(), kind, plugin, pin)
        if running is None:
            raise ServerRefused(f"enable {path}: no plugin {plugin} {pin}")
        self.mounts[(kind, path)] = LiveMount(
            kind=kind,
            path=path,
            plugin=plugin,
            plugin_version=pin,
            running_plugin_version=running[0],
            running_sha256=running[1],
            description=p.description or "",
            config=dict(p.config or {}),
            options=dict(p.options or {}),
            local=bool(p.local),
            seal_wrap=bool(p.seal_wrap),
        )

    def _pin_on_enable(self, kind: str, plugin: str, asked: str) -> str:
        externals = self._externals(kind, plugin)
        if asked and is_builtin_version(asked):
            return ""
        if asked:
            if (kind, plugin, asked) not in self.catalog:
                raise ServerRefused(f"enable: {plugin} {asked} is not in the catalog")
            return asked
        if any(e.version == "" for e in externals):
            return ""
        versioned = [e.version for e in externals]
        if not versioned:
            return ""
        if (kind, plugin) in HARD_WIRED_BUILTINS:
            raise ServerRefused(f"enable {plugin}: a versioned external entry exists (400)")
        # Left to choose, the server pins the newest registered version.
        return newest_version(versioned)

    def _tune(self, kind: str, path: str, body: dict[str, Any]) -> None:
        mount = self._mount(kind, path)
        update: dict[str, Any] = {}
        config = dict(mount.config)
        for key, value in body.items():
            if key == "description":
                update["description"] = value
            elif key == "options":
                update["options"] = {**mount.options, **value}
            elif key == "plugin_version":
                update["plugin_version"] = self._pin_on_tune(mount, value)
            else:
                config[key] = value
        update["config"] = config
        self.mounts[(kind, path)] = mount.model_copy(update=update)

    def _pin_on_tune(self, mount: LiveMount, version: str) -> str:
        if version == "":
            raise ServerRefused(f"tune {mount.path}: plugin_version cannot be cleared (400)")
        if is_builtin_version(version):
            if (mount.kind, mount.plugin) not in live_builtins(self.catalog.values()):
                raise ServerRefused(f"tune {mount.path}: {mount.plugin} is not a built-in")
            return version if self.tune_keeps_builtin_pin else ""
        if (mount.kind, mount.plugin, version) not in self.catalog:
            raise ServerRefused(
                f"tune {mount.path}: {mount.plugin} {version} is not in the catalog"
            )
        return version

    def _move(self, kind: str, source: str, target: str) -> None:
        mount = self._mount(kind, source)
        if (kind, target) in self.mounts:
            raise ServerRefused(f"remount to {target}: path is already in use")
        del self.mounts[(kind, source)]
        self.mounts[(kind, target)] = mount.model_copy(update={"path": target})

    def _disable(self, kind: str, path: str) -> None:
        mount = self._mount(kind, path)
        if mount.reserved:
            raise ServerRefused(f"disable {path}: reserved mount")
        del self.mounts[(kind, path)]

    def _reload(self, p: ReloadParams) -> None:
        if p.plugin is not None:
            if not any(e.name == p.plugin for e in self.catalog.values()):
                raise ServerRefused(f"reload: no plugin {p.plugin}")
            return
        for api_path in p.mounts or []:
            kind, path = split_api_path(api_path)
            mount = self._mount(kind, path)
            running = resolve(self.catalog.values(), kind, mount.plugin, mount.plugin_version)
            if running is None:
                raise ServerRefused(f"reload {api_path}: backend is nil")
            # A reload starts the plugin again: its backend answers (binaries do not fail here).
            answers = None if mount.backend_answers is None else True
            self.mounts[(kind, path)] = mount.model_copy(
                update={
                    "running_plugin_version": running[0],
                    "running_sha256": running[1],
                    "backend_answers": answers,
                }
            )
