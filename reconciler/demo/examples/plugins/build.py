"""Write the example plugins into a plugin directory, one executable file each.

Each file is a short Python script whose first line names the interpreter
that has this package and its gRPC dependencies installed. The name and
version are written into the script, so every (name, version) is a different
file with its own SHA-256, as the plugin catalog expects.

    python -m reconciler.demo.examples.plugins.build DEST [--python PATH]

prints type, name, version, command and SHA-256 of each plugin it wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PluginSpec:
    """One example plugin, described without building it."""

    type: str  # catalog type: "secret", "auth" or "database"
    name: str
    # As registered and as the plugin reports it ("v" prefix); "" for an
    # unversioned build, which reports no version.
    version: str
    # Module under reconciler.demo.examples.plugins with `backend(version)`,
    # or `database(version)` for a database plugin.
    module: str
    description: str
    # The file exits before the go-plugin handshake: a binary that cannot start.
    broken: bool = False
    # The file name's start when the name alone is not unique (an auth and a
    # secrets plugin of the same name).
    file_stem: str = ""

    @property
    def command(self) -> str:
        """File name inside the plugin directory."""
        return f"{self.file_stem or self.name}-{self.version.removeprefix('v') or 'unversioned'}"


@dataclass(frozen=True)
class BuiltPlugin:
    """A plugin file written to a plugin directory, with what registering it needs."""

    type: str
    name: str
    version: str
    command: str
    sha256: str
    path: Path


PLUGINS: tuple[PluginSpec, ...] = (
    PluginSpec("secret", "demo-kv", "v1.0.0", "demo_kv", "key/value secrets engine"),
    PluginSpec(
        "secret",
        "demo-kv",
        "v2.0.0",
        "demo_kv",
        "key/value secrets engine; adds engine: demo-kv v2 to reads and info",
    ),
    PluginSpec("auth", "demo-auth", "v1.0.0", "demo_auth", "static-secret auth method"),
    PluginSpec(
        "secret", "transit", "v1.0.0", "transit", "external plugin overriding built-in transit"
    ),
    PluginSpec("database", "demo-db", "v1.0.0", "demo_db", "database plugin, users in a file"),
    PluginSpec(
        "database",
        "demo-db",
        "v2.0.0",
        "demo_db",
        "same; its usernames and records say v2.0.0",
    ),
    PluginSpec(
        "database",
        "demo-db",
        "v3.0.0",
        "demo_db",
        "cannot start: exits before the handshake",
        broken=True,
    ),
    PluginSpec(
        "database",
        "demo-db",
        "",
        "demo_db",
        "reports no version: registers unversioned, overrides demo-db",
    ),
    # Stand-ins for the built-in `ldap` plugins that OpenBao 2.7 no longer ships.
    PluginSpec(
        "auth",
        "ldap",
        "v1.0.0",
        "ldap_auth",
        "stand-in for the removed built-in",
        False,
        "ldap-auth",
    ),
    PluginSpec(
        "secret",
        "ldap",
        "v1.0.0",
        "ldap_secrets",
        "stand-in for the removed built-in",
        False,
        "ldap-secrets",
    ),
)


def find_spec(name: str, version: str, plugin_type: str = "") -> PluginSpec:
    """The example plugin `name` at `version` (leading "v" optional; "" for unversioned),
    of `plugin_type` when the name alone is ambiguous (`ldap`)."""
    wanted = version and "v" + version.removeprefix("v")
    for spec in PLUGINS:
        if spec.name == name and spec.version == wanted and plugin_type in {"", spec.type}:
            return spec
    known = ", ".join(f"{s.name} {s.version or '(unversioned)'}" for s in PLUGINS)
    raise KeyError(f"no example plugin {name} {version}; known: {known}")


# Linux limits the "#!" line to 255 bytes and splits it at whitespace.
_PLAIN_SHEBANG = re.compile(r"/\S{1,200}")


def script_text(spec: PluginSpec, python: str = sys.executable) -> str:
    """The content of the plugin file for `spec`, run by `python`."""
    if _PLAIN_SHEBANG.fullmatch(python):
        head = f"#!{python}\n"
    else:
        # Valid as sh and as Python: sh runs the exec line, Python reads it
        # as a harmless string expression.
        head = f'#!/bin/sh\n"exec" {shlex.quote(python)} "$0" "$@"\n'
    title = f"# {spec.name} {spec.version or '(unversioned)'}: example external OpenBao/Vault"
    if spec.broken:
        return (
            f"{head}{title} {spec.type} plugin that cannot start.\n"
            "import sys\n"
            "\n"
            f'sys.stderr.write("{spec.name} {spec.version}: broken on purpose, exits before '
            'the plugin handshake\\n")\n'
            "raise SystemExit(1)\n"
        )
    database = spec.type == "database"
    factory, runtime = ("database", "database_runtime") if database else ("backend", "runtime")
    return (
        f"{head}{title} {spec.type} plugin.\n"
        "# The server runs this file; running it by hand only prints why not.\n"
        f"from reconciler.demo.examples.plugins.{spec.module} import {factory}\n"
        f"from reconciler.demo.examples.plugins.{runtime} import serve\n"
        "\n"
        f'raise SystemExit(serve({factory}("{spec.version}")))\n'
    )


def build_plugin(spec: PluginSpec, dest: Path, python: str = sys.executable) -> BuiltPlugin:
    """Write one plugin file into `dest` (created if needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    content = script_text(spec, python).encode()
    target = dest / spec.command
    # Replace atomically: a server may be starting the old file right now.
    fd, temporary = tempfile.mkstemp(prefix=f".{spec.command}.", dir=dest)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, 0o755)  # noqa: S103 - the server must be able to execute it
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return BuiltPlugin(
        type=spec.type,
        name=spec.name,
        version=spec.version,
        command=spec.command,
        sha256=hashlib.sha256(content).hexdigest(),
        path=target,
    )


def build_plugins(dest: Path, python: str = sys.executable) -> list[BuiltPlugin]:
    """Write every example plugin into `dest`; the list follows `PLUGINS`."""
    return [build_plugin(spec, Path(dest), python) for spec in PLUGINS]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build into DEST and print what was written."""
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.demo.examples.plugins.build",
        description="Write the example OpenBao/Vault plugins into a plugin directory.",
    )
    parser.add_argument("dest", type=Path, help="the server's plugin directory")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs the plugins (needs this package installed)",
    )
    args = parser.parse_args(argv)
    for plugin in build_plugins(args.dest, args.python):
        print(f"{plugin.type}\t{plugin.name}\t{plugin.version}\t{plugin.command}\t{plugin.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
