"""`demo-auth`: an external auth method with one static secret (version v1.0.0).

Paths, relative to the mount (`auth/<path>/...` on the server):
- `config` (write): `secret` (required the first time), `policies` (list or
  comma-separated, default `["demo"]`), `ttl` (seconds or `30m`/`1h`, default 1h).
  (read): `policies`, `ttl` in seconds and `secret_configured`; never the secret.
- `login` (write, no token needed): `secret`; the right one gets a token with
  the configured policies and TTL (renewable), a wrong one 403, before any
  config 400.
- `info` (read): name, version, pid, start time of the process that answers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from reconciler.demo.examples.plugins.framework import (
    READ,
    RENEW,
    UPDATE,
    Auth,
    Backend,
    PermissionDenied,
    PluginError,
    Request,
    Response,
    Route,
    get_json,
    parse_seconds,
    put_json,
    string_list,
)

NAME = "demo-auth"
VERSIONS = ("v1.0.0",)
_CONFIG = "config"
_DEFAULT_POLICIES = ["demo"]
_DEFAULT_TTL = 3600


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def backend(version: str) -> Backend:
    """The demo-auth backend as it behaves in `version`."""
    if version not in VERSIONS:
        raise ValueError(f"{NAME} has no version {version!r}; known: {', '.join(VERSIONS)}")

    def write_config(request: Request) -> None:
        current = get_json(request.storage, _CONFIG) or {}
        config = {
            "secret_sha256": current.get("secret_sha256"),
            "policies": current.get("policies", _DEFAULT_POLICIES),
            "ttl": current.get("ttl", _DEFAULT_TTL),
        }
        if "secret" in request.data:
            secret = request.data["secret"]
            if not isinstance(secret, str) or not secret:
                raise PluginError("secret: must be a non-empty string")
            config["secret_sha256"] = _digest(secret)
        if config["secret_sha256"] is None:
            raise PluginError("missing required field 'secret'")
        if "policies" in request.data:
            config["policies"] = string_list(request.data["policies"], "policies")
        if "ttl" in request.data:
            config["ttl"] = parse_seconds(request.data["ttl"], "ttl")
        put_json(request.storage, _CONFIG, config)

    def read_config(request: Request) -> Response | None:
        config = get_json(request.storage, _CONFIG)
        if config is None:
            return None
        return Response(
            data={
                "policies": config["policies"],
                "ttl": config["ttl"],
                "secret_configured": bool(config.get("secret_sha256")),
            }
        )

    def login(request: Request) -> Response:
        config = get_json(request.storage, _CONFIG)
        if config is None:
            raise PluginError(
                f"{NAME} is not configured: write a secret to {request.mount_point}config first"
            )
        given = request.require("secret")
        if not isinstance(given, str) or not hmac.compare_digest(
            _digest(given), config["secret_sha256"]
        ):
            raise PermissionDenied()
        return Response(
            auth=Auth(
                policies=list(config["policies"]),
                ttl=int(config["ttl"]),
                renewable=True,
                display_name="demo",
                metadata={"plugin": NAME, "plugin_version": version},
            )
        )

    def renew(request: Request) -> Response:
        if request.auth is None:
            raise PluginError("renew without an auth")
        config = get_json(request.storage, _CONFIG) or {}
        ttl = int(config.get("ttl", request.auth.ttl))
        return Response(auth=replace(request.auth, ttl=ttl))

    def info(request: Request) -> Response:
        return Response(data=auth_backend.process_info())

    auth_backend = Backend(
        name=NAME,
        version=version,
        kind="auth",
        description="example auth method with a static secret",
        routes=[
            Route("config", {READ: read_config, UPDATE: write_config}),
            Route("login", {UPDATE: login, RENEW: renew}),
            Route("info", {READ: info}),
        ],
        unauthenticated=["login"],
    )
    return auth_backend
