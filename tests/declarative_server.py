"""A second dev server whose configuration declares plugins (OpenBao declarative plugins).

The server is started with `plugin_auto_register = true` and one
`plugin "TYPE" "NAME" { command, version, sha256sum }` stanza per declared
example plugin. Tests rewrite the stanzas, send SIGHUP and wait until the
catalog (or the server log) shows that the server has acted on them.

Only tests that ask for the `declarative_server` fixture start it; it is separate
from the session's plain server because its catalog is owned by its configuration.

In dev mode every SIGHUP also logs "[ERROR] no listener configured": the dev
listener comes from the command line, not from the configuration. It is harmless.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from reconciler.demo.devserver import DevServer, start_dev_server
from reconciler.demo.examples.plugins.build import BuiltPlugin, build_plugins
from tests.server_reset import reset_server

# A SIGHUP re-registers every stanza, and registering runs the plugin once to
# ask its version: a Python plugin takes a few hundred ms on a loaded machine.
RELOAD_TIMEOUT = 60.0

CatalogKey = tuple[str, str, str]  # (type, name, version)


class ReloadTimeout(AssertionError):
    """The server did not show the expected effect of a SIGHUP in time."""


@dataclass(frozen=True)
class Stanza:
    """One `plugin` block of the server configuration."""

    type: str
    name: str
    version: str
    command: str
    sha256: str

    @classmethod
    def of(cls, plugin: BuiltPlugin) -> Stanza:
        return cls(plugin.type, plugin.name, plugin.version, plugin.command, plugin.sha256)

    @property
    def key(self) -> CatalogKey:
        return (self.type, self.name, self.version)

    def hcl(self) -> str:
        return (
            f'plugin "{self.type}" "{self.name}" {{\n'
            f'  command   = "{self.command}"\n'
            f'  version   = "{self.version}"\n'
            f'  sha256sum = "{self.sha256}"\n'
            "}\n"
        )


def config_text(stanzas: Iterable[Stanza]) -> str:
    """The declarative part of the server configuration (the dev server adds the rest)."""
    return "plugin_auto_register = true\n\n" + "\n".join(stanza.hcl() for stanza in stanzas)


class DeclarativeServer:
    """A running dev server with a configuration file of `plugin` stanzas."""

    def __init__(self, server: DevServer, config_path: Path, built: Sequence[BuiltPlugin]):
        self.server = server
        self.config_path = config_path
        self._built = {(p.type, p.name, p.version): p for p in built}

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def token(self) -> str:
        return self.server.token

    def stanza(self, type_: str, name: str, version: str) -> Stanza:
        """The stanza for an example plugin that was built into the plugin directory."""
        return Stanza.of(self._built[type_, name, version])

    def http(self) -> httpx.Client:
        """A plain HTTP client, independent of the code under test."""
        return httpx.Client(
            base_url=self.address, headers={"X-Vault-Token": self.token}, timeout=30
        )

    # --- configuration and signals -------------------------------------------------

    def write_stanzas(self, stanzas: Iterable[Stanza]) -> None:
        """Replace the configuration's stanzas (the server reads them at the next SIGHUP)."""
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(config_text(stanzas))
        temporary.replace(self.config_path)

    def sighup(self) -> int:
        """Ask the server to re-read its configuration; returns the log offset before it."""
        offset = self.log_size()
        self.server.process.send_signal(signal.SIGHUP)
        return offset

    def reconfigure(self, stanzas: Iterable[Stanza]) -> int:
        """Write the stanzas and send SIGHUP; returns the log offset before the signal."""
        self.write_stanzas(stanzas)
        return self.sighup()

    def reconfigure_and_wait(self, stanzas: Sequence[Stanza]) -> int:
        """Reconfigure, then wait until exactly these stanzas are declarative entries."""
        offset = self.reconfigure(stanzas)
        wanted = {stanza.key for stanza in stanzas}
        self.wait_for_catalog(
            lambda: self.declarative_keys() == wanted,
            f"declarative entries {sorted(wanted)}",
        )
        return offset

    # --- the log --------------------------------------------------------------------

    def log_size(self) -> int:
        return self.server.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.server.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def wait_for_log(self, text: str, since: int, timeout: float = RELOAD_TIMEOUT) -> str:
        """The log written after `since`, once it contains `text`."""
        deadline = time.monotonic() + timeout
        while True:
            written = self.log_since(since)
            if text in written:
                return written
            self._check_alive()
            if time.monotonic() > deadline:
                raise ReloadTimeout(f"no {text!r} in the server log after SIGHUP:\n{written}")
            time.sleep(0.05)

    # --- the catalog ----------------------------------------------------------------

    def catalog_entry(self, type_: str, name: str, version: str) -> dict[str, Any] | None:
        """The catalog's full entry (what a read returns), or None when absent."""
        with self.http() as http:
            answer = http.get(
                f"/v1/sys/plugins/catalog/{type_}/{name}", params={"version": version}
            )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return dict(answer.json()["data"])

    def listed_external(self) -> list[dict[str, Any]]:
        """The external entries of the catalog list (`detailed`), as the server lists them."""
        with self.http() as http:
            answer = http.get("/v1/sys/plugins/catalog")
        answer.raise_for_status()
        detailed = answer.json()["data"].get("detailed") or []
        return [dict(entry) for entry in detailed if not entry.get("builtin")]

    def external_keys(self) -> set[CatalogKey]:
        return {(e["type"], e["name"], e["version"]) for e in self.listed_external()}

    def declarative_keys(self) -> set[CatalogKey]:
        """External entries whose read says `declarative: true`."""
        keys = set()
        for key in self.external_keys():
            entry = self.catalog_entry(*key)
            if entry is not None and entry.get("declarative"):
                keys.add(key)
        return keys

    def wait_for_catalog(
        self, condition: Callable[[], bool], what: str, timeout: float = RELOAD_TIMEOUT
    ) -> None:
        """Poll until `condition()` holds: the server acts on a SIGHUP asynchronously."""
        deadline = time.monotonic() + timeout
        while not condition():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ReloadTimeout(
                    f"the catalog never showed {what}; it lists {sorted(self.external_keys())}\n"
                    f"{self.server.log_tail()}"
                )
            time.sleep(0.1)

    # --- lifecycle --------------------------------------------------------------------

    def reset(self, stanzas: Sequence[Stanza]) -> None:
        """No mounts, and a catalog of exactly these stanzas, each declarative."""
        self._check_alive()
        # Removes every external entry too, declarative or not: the SIGHUP brings back
        # the declared ones as declarative entries, whatever a test made of them.
        reset_server(self.address, self.token)
        self.reconfigure_and_wait(stanzas)

    def _check_alive(self) -> None:
        if self.server.process.poll() is not None:
            raise AssertionError(
                f"the declarative dev server died (exit {self.server.process.returncode}):\n"
                f"{self.server.log_tail()}"
            )

    def stop(self) -> None:
        self.server.stop()


def start_declarative_server(
    workdir: Path, stanzas: Sequence[tuple[str, str, str]]
) -> DeclarativeServer:
    """Build the example plugins, write their stanzas and start the server on them."""
    plugin_directory = workdir / "plugins"
    built = build_plugins(plugin_directory)
    by_key = {(p.type, p.name, p.version): p for p in built}
    config_path = workdir / "declarative.hcl"
    config_path.write_text(config_text(Stanza.of(by_key[key]) for key in stanzas))
    # The dev server writes its own file with plugin_directory; OpenBao merges both files
    # (and re-reads both on SIGHUP).
    server = start_dev_server(
        plugin_directory, workdir=workdir, extra_args=[f"-config={config_path}"]
    )
    return DeclarativeServer(server, config_path, built)
