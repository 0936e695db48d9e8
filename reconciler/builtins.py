"""The built-in plugins of OpenBao 2.7, as shipped with the package (data only).

The per-release lists are generated from the real binaries
(`reconciler/builtin_releases.py`, written by `scripts/builtin_releases.py`).

`validate` has no server to ask, so it checks mounts against this list;
`plan`, `apply` and `watch` use the live server's list instead (its catalog
marks built-ins): Vault's built-in list is larger and every server upgrade can
change it. The rules that use these tables live in `reconciler.resolver`.
"""

from __future__ import annotations

from reconciler.builtin_releases import RELEASES

BuiltinKey = tuple[str, str]

# The release whose built-ins `validate` assumes: the newest one generated.
SHIPPED_RELEASE = "2.7.2"
_CATALOG: dict[str, tuple[str, ...]] = RELEASES[SHIPPED_RELEASE]

# Mountable built-ins that the catalog never lists (the server resolves them
# itself): `sys/mounts/x {"type": "database"}` works on 2.7.2 although no
# catalog entry names it. A live list must be extended with these.
UNCATALOGUED_BUILTINS: frozenset[BuiltinKey] = frozenset({("secret", "database")})

# Built-ins the server mounts itself and refuses to mount again ("not
# mountable", "cannot be instantiated"); a file can neither mount nor
# override them.
RESERVED_BUILTINS: frozenset[BuiltinKey] = frozenset(
    {("secret", "cubbyhole"), ("secret", "identity"), ("secret", "system"), ("auth", "token")}
)

# Aliases the server accepts on enable but stores under another name; naming
# the stored one keeps the file and the live mount table comparable.
BUILTIN_ALIASES: dict[BuiltinKey, str] = {
    ("secret", "kv-v1"): 'plugin: kv with options: {version: "1"}',
    ("secret", "kv-v2"): 'plugin: kv with options: {version: "2"}',
    ("secret", "generic"): "plugin: kv",
}

OPENBAO_BUILTINS: frozenset[BuiltinKey] = (
    frozenset((plugin_type, name) for plugin_type, names in _CATALOG.items() for name in names)
    | UNCATALOGUED_BUILTINS
)
