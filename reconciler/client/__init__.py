"""A small client for the `sys/` endpoints of OpenBao (and HashiCorp Vault).

- `Client` (`_client`): one method per endpoint; mount calls carry the namespace,
  catalog calls go to the root namespace.
- `_settings`: arguments and BAO_*/VAULT_* variables → checked connection settings.
- `_transport`: sending with retries (`RetryPolicy`), and the one place where an HTTP
  status or a transport failure becomes an `ApiError` whose message names the fix.
- `_flavour`: what differs between OpenBao and Vault (`Flavour`, `detect_flavour`).
- `_redact`: the token never appears in a message or a log record (`redact`).
"""

from reconciler.client._client import Client
from reconciler.client._flavour import OPENBAO, VAULT, Flavour, detect_flavour
from reconciler.client._redact import redact
from reconciler.client._settings import DEFAULT_ADDRESS, DEFAULT_TIMEOUT
from reconciler.client._transport import EventHooks, RetryPolicy

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "OPENBAO",
    "VAULT",
    "Client",
    "EventHooks",
    "Flavour",
    "RetryPolicy",
    "detect_flavour",
    "redact",
]
