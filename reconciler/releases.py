"""What each OpenBao release ships as built-ins (pure; the data is generated).

`reconciler/builtin_releases.py` holds each release's built-in catalog as read
from its own binary; these functions answer the questions an upgrade asks of
it: which built-ins a target release ships, and which release last shipped a
built-in the live server lacks.
"""

from __future__ import annotations

from reconciler.builtin_releases import RELEASES
from reconciler.builtins import UNCATALOGUED_BUILTINS, BuiltinKey


class UnknownRelease(ValueError):
    """No built-in list is shipped for the release asked about."""


def known_releases() -> tuple[str, ...]:
    """Every release with a built-in list, oldest first."""
    return tuple(sorted(RELEASES, key=_order))


def known_release(version: str) -> str:
    """The release `version` names ("2.7.2" or "v2.7.2") as its list is keyed: "2.7.2";
    UnknownRelease when no list ships for it."""
    wanted = version.strip().removeprefix("v")
    if wanted not in RELEASES:
        raise UnknownRelease(
            f"no built-in list for OpenBao {wanted}: known releases are "
            f"{', '.join(known_releases())} (regenerate them with scripts/builtin_releases.py)"
        )
    return wanted


def builtins_of_release(version: str) -> frozenset[BuiltinKey]:
    """The built-ins `version` ships ("2.7.2" or "v2.7.2"), the uncatalogued ones included."""
    by_type = RELEASES[known_release(version)]
    return (
        frozenset((plugin_type, name) for plugin_type, names in by_type.items() for name in names)
        | UNCATALOGUED_BUILTINS
    )


def last_release_shipping(key: BuiltinKey) -> str | None:
    """The newest known release whose built-ins include `key`, None if none ever did."""
    shipping = [v for v in known_releases() if key in builtins_of_release(v)]
    return shipping[-1] if shipping else None


def _order(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
