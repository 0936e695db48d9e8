"""What differs between OpenBao and HashiCorp Vault, in one place.

OpenBao 2.7 is tested. The Vault values come from Vault's API documentation and
are untested: Vault is not available where this project is tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flavour:
    """The facts about one server product that change which calls the client makes."""

    name: str
    # Vault 1.16+: sys/plugins/pins sets the version that unpinned mounts of a plugin run.
    has_pins: bool
    # Vault: `<db-mount>/reload/<plugin>` restarts a mount's connections of one plugin.
    # OpenBao answers 404 there; it resets connections one by one (`<db-mount>/reset/<name>`).
    has_database_reload: bool
    # The field of sys/seal-status by which the flavour is recognised.
    marker: str


OPENBAO = Flavour(name="openbao", has_pins=False, has_database_reload=False, marker="commit_date")
VAULT = Flavour(name="vault", has_pins=True, has_database_reload=True, marker="build_date")


def detect_flavour(seal_status: Mapping[str, Any]) -> Flavour:
    """The server's flavour from its sys/seal-status answer (OpenBao when unsure)."""
    if VAULT.marker in seal_status and OPENBAO.marker not in seal_status:
        return VAULT
    return OPENBAO
