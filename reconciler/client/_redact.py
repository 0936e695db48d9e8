"""Keep tokens out of messages and log records.

Every token (and plugin `env` value) the client sends is remembered with the forms
it takes inside JSON or a URL; `redact` blanks them out of any text, and a filter
on the `httpx`/`httpcore` loggers does the same to their records, DEBUG included.
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import quote, quote_plus

REDACTED = "<redacted>"
# Shorter values would blank out ordinary words in log lines; a secret that short is
# guessable anyway.
_MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact(text: str) -> str:
    """`text` with every token known to this process replaced by `<redacted>`."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def remember_secret(value: str) -> None:
    """Redact `value` (in every encoded form) from now on, in messages and HTTP logs."""
    if len(value) >= _MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.update(_encoded_forms(value))
    _install_log_filter()


class _RedactSecrets(logging.Filter):
    """Rewrites a record whose formatted message holds a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_log_filter = _RedactSecrets()


def _install_log_filter() -> None:
    # A logger's filters see only the records logged on that very logger, not its
    # children's, so every httpx/httpcore logger gets the filter.
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in {"httpx", "httpcore"}
    ]
    for name in {"httpx", "httpcore", *names}:
        logger = logging.getLogger(name)
        if _log_filter not in logger.filters:
            logger.addFilter(_log_filter)


def _encoded_forms(value: str) -> set[str]:
    """The secret as it reads inside JSON (Python's or Go's escaping) or a URL.

    A server or proxy that echoes a request in its error message quotes the body or
    the headers in one of these forms.
    """
    escaped = json.dumps(value)[1:-1]
    go_escaped = escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {
        value,
        escaped,
        json.dumps(value, ensure_ascii=False)[1:-1],
        go_escaped,
        quote(value, safe=""),
        quote_plus(value),
    }
