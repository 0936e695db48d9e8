"""Reading the live state: normalised values and a request count independent of the mounts."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.model import LiveMount
from reconciler.state import normalise_config, read_live_state
from tests.helpers import api


def enable_examples(server: DevServer) -> None:
    http = api(server)
    for path, body in {
        "sys/mounts/apps": {
            "type": "kv",
            "description": "app secrets",
            "options": {"version": "2"},
        },
        "sys/mounts/crypto": {
            "type": "transit",
            "description": "encryption as a service",
            "config": {
                "default_lease_ttl": "1h",
                "max_lease_ttl": "24h",
                "listing_visibility": "hidden",
                "passthrough_request_headers": ["X-Request-Id"],
            },
        },
        "sys/auth/robots": {
            "type": "approle",
            "description": "machine logins",
            "config": {"default_lease_ttl": "30m", "token_type": "batch"},
            "local": True,
        },
    }.items():
        http.post(f"/v1/{path}", json=body).raise_for_status()


def by_path(mounts: list[LiveMount]) -> dict[tuple[str, str], LiveMount]:
    return {(m.kind, m.path): m for m in mounts}


def test_mounts_are_read_back_field_by_field(server: DevServer, client: Client) -> None:
    enable_examples(server)
    live = read_live_state(client)
    mounts = by_path(live.mounts)

    apps = mounts["secret", "apps/"]
    assert apps.plugin == "kv"
    assert apps.description == "app secrets"
    assert apps.options == {"version": "2"}
    assert apps.plugin_version == ""
    assert apps.running_plugin_version.endswith("+builtin.bao")
    assert apps.running_sha256 == ""
    assert apps.config == {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False}
    assert apps.accessor.startswith("kv_")
    assert (apps.local, apps.seal_wrap, apps.reserved) == (False, False, False)

    crypto = mounts["secret", "crypto/"]
    assert crypto.plugin == "transit"
    assert crypto.description == "encryption as a service"
    assert crypto.config == {
        "default_lease_ttl": 3600,
        "max_lease_ttl": 86400,
        "force_no_cache": False,
        "listing_visibility": "hidden",
        "passthrough_request_headers": ["X-Request-Id"],
    }
    assert crypto.options == {}

    robots = mounts["auth", "robots/"]
    assert robots.plugin == "approle"
    assert robots.api_path == "auth/robots/"
    assert robots.description == "machine logins"
    assert robots.config["default_lease_ttl"] == 1800
    assert robots.config["token_type"] == "batch"
    assert robots.local is True


def test_reserved_mounts_are_included_and_marked(client: Client) -> None:
    mounts = by_path(read_live_state(client).mounts)
    assert set(mounts) == {
        ("secret", "sys/"),
        ("secret", "identity/"),
        ("secret", "cubbyhole/"),
        ("auth", "token/"),
    }
    assert all(m.reserved for m in mounts.values())
    assert mounts["secret", "cubbyhole/"].options == {}  # null on the server
    assert mounts["auth", "token/"].config["token_type"] == "default-service"


def test_catalog_holds_builtins_and_external_entries_with_their_hash(
    server: DevServer, client: Client
) -> None:
    plugin = next(p for p in build_plugins(server.plugin_directory) if p.name == "demo-kv")
    client.register_plugin(
        "secret", plugin.name, plugin.version, plugin.command, plugin.sha256, ["-a=1"], {}
    )
    live = read_live_state(client)
    external = [e for e in live.catalog if not e.builtin]
    assert [(e.type, e.name, e.version, e.command, e.sha256, e.args) for e in external] == [
        ("secret", "demo-kv", plugin.version, plugin.command, plugin.sha256, ["-a=1"])
    ]
    transit = [e for e in live.catalog if e.builtin and e.name == "transit"]
    assert len(transit) == 1 and transit[0].sha256 == "" and transit[0].command == ""
    assert live.builtin_version("secret", "transit") == transit[0].version
    assert live.server.address == server.address
    assert live.server.cluster_id


class Counting:
    """Request counter for the event hooks (the reader sends from several threads)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> None:
        with self.lock:
            self.count += 1


def count_requests(server: DevServer) -> int:
    counter = Counting()
    hooks: dict[str, list[Any]] = {"request": [counter]}
    with Client(server.address, server.token, event_hooks=hooks) as client:
        read_live_state(client)
    return counter.count


def test_request_count_does_not_grow_with_the_number_of_mounts(server: DevServer) -> None:
    http = api(server)
    for index in range(3):
        http.post(f"/v1/sys/mounts/few-{index}", json={"type": "kv"}).raise_for_status()
    few = count_requests(server)
    for index in range(27):
        kind, plugin = ("auth", "approle") if index % 3 == 0 else ("mounts", "transit")
        http.post(f"/v1/sys/{kind}/many-{index}", json={"type": plugin}).raise_for_status()
    many = count_requests(server)
    # catalog, sys/mounts, sys/auth, seal-status and the namespace walk (LIST sys/namespaces)
    assert few == many == 5


def test_each_external_entry_costs_one_read(server: DevServer, client: Client) -> None:
    for plugin in build_plugins(server.plugin_directory)[:2]:
        client.register_plugin(
            plugin.type, plugin.name, plugin.version, plugin.command, plugin.sha256, [], {}
        )
    externals = [e for e in client.list_catalog() if not e["builtin"]]
    assert len(externals) == 2
    assert count_requests(server) == 5 + len(externals)


def test_config_is_normalised_to_the_desired_sides_shape() -> None:
    assert normalise_config(
        {
            "default_lease_ttl": "1h",
            "max_lease_ttl": 7200,
            "force_no_cache": False,
            "listing_visibility": "unauth",
            "audit_non_hmac_request_keys": ["a"],
            "plugin_version": "v1.0.0",
            "user_lockout_config": {"lockout_threshold": 3},
            "token_type": None,
        }
    ) == {
        "default_lease_ttl": 3600,
        "max_lease_ttl": 7200,
        "force_no_cache": False,
        "listing_visibility": "unauth",
        "audit_non_hmac_request_keys": ["a"],
    }
