"""Many clusters from one repository: a small targets file names each cluster's address.

    # targets.yaml
    targets:
      prod-eu:
        address: https://bao.prod-eu.example:8200
        ca_cert: certs/prod-eu-ca.pem      # relative to this file
      staging:
        address: https://bao.staging.example:8200

`--target prod-eu` takes the address (and CA) from it; the token still comes
from the environment, one secret per cluster in CI.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.errors import ReconcilerError

DEFAULT_TARGETS_FILE = Path("targets.yaml")


class TargetError(ReconcilerError):
    """The targets file is missing, unreadable, or does not name the target."""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    ca_cert: str | None = None


class TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: dict[str, Target]


def load_target(name: str, path: Path = DEFAULT_TARGETS_FILE) -> Target:
    """The named target; a relative `ca_cert` is resolved against the file's directory."""
    try:
        document = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TargetError(
            f"cannot read the targets file {path}: {error.strerror or error}: "
            "create it or pass --targets FILE"
        ) from None
    except YAMLError as error:
        raise TargetError(f"{path}: not YAML: {error}") from None
    try:
        targets = TargetsFile.model_validate(document)
    except ValidationError as error:
        raise TargetError(f"{path}: {error}") from None
    target = targets.targets.get(name)
    if target is None:
        known = ", ".join(sorted(targets.targets)) or "none"
        raise TargetError(f"{path} has no target {name!r} (it has: {known})")
    if target.ca_cert and not Path(target.ca_cert).is_absolute():
        target = target.model_copy(update={"ca_cert": str(path.parent / target.ca_cert)})
    return target
