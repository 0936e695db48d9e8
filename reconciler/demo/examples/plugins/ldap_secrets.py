"""`ldap` secrets stand-in (see `ldap_standin`): takes the removed built-in's name."""

from __future__ import annotations

from reconciler.demo.examples.plugins.framework import Backend
from reconciler.demo.examples.plugins.ldap_standin import standin


def backend(version: str) -> Backend:
    """The secrets stand-in as it behaves in `version`."""
    return standin(version, "secret")
